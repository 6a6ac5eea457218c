/**
 * `StarlingClient`: one WebSocket connection to a Starling data plane for one user, kept alive.
 *
 * - connects to `<url>/v1/connect?token=…` (the token comes from the app's backend);
 * - reconnects by itself with exponential backoff and jitter, asking the token provider again;
 * - remembers the newest `seq` of each conversation it has seen and, after a reconnect or on a
 *   gap, fetches what it missed with `sync`; every message is delivered once (dropped by id);
 * - `send` gives each message a `client_msg_id` and retries it until it is acknowledged (the
 *   server returns the original for a repeated id, so a retry never posts twice);
 * - edit, delete, react, read, typing, subscribe/unsubscribe (rooms), ping;
 * - typed events (`client.on("message.new", e => …)`).
 *
 * Runs in browsers and in Node: pass a WebSocket implementation (e.g. the `ws` package) where
 * there is no global one (Node 20).
 */
import type {
  AckResults,
  ClientFrame,
  Event,
  EventOf,
  EventType,
  HelloFrame,
  Incoming,
  MessageOut,
  RequestBody,
  RequestType,
  SendFrame,
} from "./types.js";

/** The part of the WebSocket API the client uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** A WebSocket constructor (`globalThis.WebSocket`, or `WebSocket` from `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Backoff between reconnect attempts: `min(max, initial * factor^n)`, ± `jitter` of it. */
export interface BackoffOptions {
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  /** 0..1: the share of the delay that is random. */
  jitter: number;
}

export interface ClientOptions {
  /** The data plane's base URL: `http(s)://host:port` or `ws(s)://host:port`. */
  url: string;
  /** A user token, or a function that returns a fresh one (called on every (re)connect). */
  token: string | (() => string | Promise<string>);
  /** WebSocket implementation; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect backoff (defaults: 500 ms doubling to 15 s, 20 % jitter). */
  backoff?: Partial<BackoffOptions>;
  /** How long a request waits for its reply on an open connection before it is retried. */
  requestTimeoutMs?: number;
  /** Tries per `send` (and other requests) before giving up; default 8. */
  maxAttempts?: number;
  /** Largest number of message ids remembered per conversation to drop duplicates. */
  dedupeWindow?: number;
  /** Random source for backoff jitter (tests make it fixed). */
  random?: () => number;
}

/** `idle` before `connect()`, `closed` after `close()`. */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/** Events of the client itself, besides the protocol's. */
export interface ClientEvents {
  /** A connection is open and the server said hello; `resumed` when it is not the first. */
  connected: { hello: HelloFrame; resumed: boolean };
  /** The connection ended; `reconnectInMs` is null when the client will not reconnect. */
  disconnected: { code: number; reason: string; reconnectInMs: number | null };
  /** The connection state changed. */
  state: { state: ConnectionState };
  /** An error the server sent that answers no request of this client. */
  "server.error": { code: string; message: string };
  /** Catching up a conversation after a reconnect or a gap finished. */
  synced: { conversation_id: string; last_seq: number; fetched: number };
  /** The server said pushes may have been missed (`reason`); the client catches up every
   * conversation it follows within `inMs`. */
  resync: { reason: string; inMs: number };
}

type AllEvents = { [K in EventType]: EventOf<K> } & ClientEvents;
/** Names of everything `on` accepts. */
export type ClientEventName = keyof AllEvents;
/** The payload of one event. */
export type ClientEventOf<K extends ClientEventName> = AllEvents[K];

/** A request the server refused (`error` frame), or one that could not be delivered. */
export class StarlingError extends Error {
  /** Machine-readable code: the server's (`forbidden`, `not_found`, …) or `timeout`, `closed`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "StarlingError";
    this.code = code;
  }
}

/** Error codes after which a retry may succeed; others (bad input, forbidden) are final. */
const RETRYABLE = new Set(["rate_limited", "unavailable", "internal", "timeout", "quota_exceeded"]);

interface Pending {
  frame: ClientFrame & { id: string };
  resolve: (result: unknown) => void;
  reject: (e: StarlingError) => void;
  attempts: number;
  /** Tries allowed. */
  max: number;
  /** On the current connection, waiting for a reply. */
  inFlight: boolean;
  timer: ReturnType<typeof setTimeout> | null;
  /** Dropped instead of queued while disconnected (typing). */
  ephemeral: boolean;
}

interface ConvState {
  lastSeq: number;
  seen: Set<string>;
  order: string[];
  /** A catch-up in progress; live messages wait in `held` until it is done. */
  syncing: Promise<void> | null;
  held: MessageOut[];
}

const OPEN = 1;

function randomId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/** The WebSocket URL for a base URL and a token. */
export function connectUrl(base: string, token: string): string {
  const b = base.replace(/\/+$/, "").replace(/^http(s?):\/\//, "ws$1://");
  return `${b}/v1/connect?token=${encodeURIComponent(token)}`;
}

export class StarlingClient {
  private readonly opts: Required<Omit<ClientOptions, "WebSocket" | "backoff">> & {
    backoff: BackoffOptions;
  };
  private readonly WS: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private _state: ConnectionState = "idle";
  private attempt = 0;
  private everConnected = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private resyncTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private nextId = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly queue: string[] = [];
  private readonly convs = new Map<string, ConvState>();
  private readonly listeners = new Map<string, Set<(e: unknown) => void>>();
  private readonly presence = new Map<string, { online: boolean; last_seen_at: string | null }>();
  private _hello: HelloFrame | null = null;

  constructor(options: ClientOptions) {
    const WS =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new Error(
        "no WebSocket implementation: pass one as options.WebSocket (in Node 20: the `ws` package)",
      );
    }
    this.WS = WS;
    this.opts = {
      url: options.url,
      token: options.token,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxAttempts: options.maxAttempts ?? 8,
      dedupeWindow: options.dedupeWindow ?? 2000,
      random: options.random ?? Math.random,
      backoff: {
        initialDelayMs: 500,
        maxDelayMs: 15_000,
        factor: 2,
        jitter: 0.2,
        ...options.backoff,
      },
    };
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The current connection's `hello` (null while not connected). */
  get hello(): HelloFrame | null {
    return this._state === "connected" ? this._hello : null;
  }

  /** The user this client is connected as (known after the first `hello`). */
  get userId(): string | null {
    return this._hello?.user_id ?? null;
  }

  /** Presence last heard for a user (from `presence` events). */
  presenceOf(userId: string): { online: boolean; last_seen_at: string | null } | undefined {
    return this.presence.get(userId);
  }

  /** The newest seq delivered for a conversation (0 when none). */
  lastSeq(conversationId: string): number {
    return this.convs.get(conversationId)?.lastSeq ?? 0;
  }

  /** The delay before reconnect attempt `n` (0-based), with jitter. */
  backoffDelay(n: number): number {
    const b = this.opts.backoff;
    const base = Math.min(b.maxDelayMs, b.initialDelayMs * Math.pow(b.factor, n));
    const j = base * b.jitter;
    return Math.max(0, Math.round(base - j + 2 * j * this.opts.random()));
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends ClientEventName>(type: K, handler: (e: ClientEventOf<K>) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(handler as (e: unknown) => void);
    return () => set.delete(handler as (e: unknown) => void);
  }

  /** Subscribes to every protocol event (`message.new`, `typing`, …). */
  onEvent(handler: (e: Event) => void): () => void {
    return this.on("*" as ClientEventName, handler as never);
  }

  private emit<K extends ClientEventName>(type: K, e: ClientEventOf<K>): void {
    for (const key of [type, "*"]) {
      if (key === "*" && !isProtocolEvent(type)) continue;
      for (const h of this.listeners.get(key) ?? []) {
        try {
          h(e);
        } catch (err) {
          // A listener's bug must not break the connection.
          setTimeout(() => {
            throw err;
          });
        }
      }
    }
  }

  private setState(s: ConnectionState): void {
    if (s !== this._state) {
      this._state = s;
      this.emit("state", { state: s });
    }
  }

  /**
   * Starts connecting (and keeps reconnecting). Resolves at the first `hello`; rejects only if
   * the client is closed first.
   */
  connect(): Promise<HelloFrame> {
    if (this._state === "closed") return Promise.reject(new StarlingError("closed", "client is closed"));
    const ready = new Promise<HelloFrame>((resolve, reject) => {
      if (this._state === "connected" && this._hello) return resolve(this._hello);
      const offC = this.on("connected", ({ hello }) => {
        offC();
        offS();
        resolve(hello);
      });
      const offS = this.on("state", ({ state }) => {
        if (state === "closed") {
          offC();
          offS();
          reject(new StarlingError("closed", "client closed before connecting"));
        }
      });
    });
    if (this._state === "idle") void this.open();
    return ready;
  }

  /** Closes the connection for good; pending requests fail with `closed`. */
  close(): void {
    if (this._state === "closed") return;
    this.setState("closed");
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = null;
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closed */
      }
    }
    for (const p of this.pending.values()) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new StarlingError("closed", "client closed"));
    }
    this.pending.clear();
    this.queue.length = 0;
  }

  private async open(): Promise<void> {
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    let token: string;
    try {
      token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    } catch (e) {
      this.scheduleReconnect(0, `token provider failed: ${String(e)}`);
      return;
    }
    if (this._state === "closed") return;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(connectUrl(this.opts.url, token));
    } catch (e) {
      this.scheduleReconnect(0, `cannot open a WebSocket: ${String(e)}`);
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      const text = typeof ev.data === "string" ? ev.data : String(ev.data);
      let frame: Incoming;
      try {
        frame = JSON.parse(text) as Incoming;
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onDisconnect(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private onDisconnect(code: number, reason: string): void {
    this.stopPing();
    // Requests on the dead connection go back to the queue, in their order.
    const back: string[] = [];
    for (const p of this.pending.values()) {
      if (p.timer) clearTimeout(p.timer);
      p.timer = null;
      if (p.ephemeral) {
        this.pending.delete(p.frame.id);
        p.reject(new StarlingError("disconnected", "not connected"));
      } else {
        p.inFlight = false;
        back.push(p.frame.id);
      }
    }
    // Pending requests keep their order (Map order is the order they were made).
    this.queue.splice(0, this.queue.length, ...back);
    for (const c of this.convs.values()) {
      c.syncing = null;
    }
    if (this._state === "closed") return;
    // 4003: the app is suspended or the user banned; retrying would only be refused.
    if (code === 4003) {
      this.emit("disconnected", { code, reason, reconnectInMs: null });
      this.close();
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string): void {
    if (this._state === "closed") return;
    const delay = this.backoffDelay(this.attempt++);
    this.setState("reconnecting");
    this.emit("disconnected", { code, reason, reconnectInMs: delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delay);
  }

  private handle(f: Incoming): void {
    switch (f.type) {
      case "hello":
        return this.onHello(f);
      case "ack":
      case "error": {
        const p = f.id ? this.pending.get(f.id) : undefined;
        if (!p) {
          if (f.type === "error") this.emit("server.error", { code: f.code, message: f.message });
          return;
        }
        if (p.timer) clearTimeout(p.timer);
        p.timer = null;
        if (f.type === "ack") {
          this.pending.delete(p.frame.id);
          if (p.frame.type === "send") {
            const m = (f.result as AckResults["send"]).message;
            if (m) this.deliverMessage(m, false);
          }
          p.resolve(f.result);
        } else if (RETRYABLE.has(f.code) && p.attempts < p.max) {
          p.inFlight = false;
          setTimeout(() => this.enqueue(p.frame.id), this.backoffDelay(p.attempts - 1));
        } else {
          this.pending.delete(p.frame.id);
          p.reject(new StarlingError(f.code, f.message));
        }
        return;
      }
      case "resync": {
        // Pushes may have been missed on this open connection: catch up as after a reconnect,
        // at a random moment within the spread the server asks for.
        const inMs = Math.round(this.opts.random() * Math.max(0, f.spread_ms));
        this.emit("resync", { reason: f.reason, inMs });
        if (this.resyncTimer) return;
        this.resyncTimer = setTimeout(() => {
          this.resyncTimer = null;
          if (this._state !== "connected") return; // the reconnect catches up anyway
          for (const id of this.convs.keys()) void this.catchUp(id);
        }, inMs);
        return;
      }
      case "message.new":
        return this.deliverMessage(f.message, true);
      case "presence":
        this.presence.set(f.user_id, { online: f.online, last_seen_at: f.last_seen_at ?? null });
        return this.emit(f.type, f);
      default:
        // Unknown future event types still reach `onEvent` listeners.
        return this.emit(f.type as EventType, f as never);
    }
  }

  private onHello(h: HelloFrame): void {
    const resumed = this.everConnected;
    this._hello = h;
    this.everConnected = true;
    this.attempt = 0;
    this.setState("connected");
    this.startPing(h.heartbeat_ms);
    this.emit("connected", { hello: h, resumed });
    this.flush();
    if (resumed) {
      for (const id of this.convs.keys()) void this.catchUp(id);
    }
  }

  private startPing(heartbeatMs: number): void {
    this.stopPing();
    // The server pings us; we ping it to notice a dead connection from our side.
    const every = Math.max(1000, heartbeatMs || 25_000);
    this.pingTimer = setInterval(() => {
      if (this._state === "connected") {
        this.request("ping", {}, { maxAttempts: 1, ephemeral: true }).catch(() => {
          /* the timeout already closed the socket */
        });
      }
    }, every);
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  private conv(id: string): ConvState {
    let c = this.convs.get(id);
    if (!c) {
      c = { lastSeq: 0, seen: new Set(), order: [], syncing: null, held: [] };
      this.convs.set(id, c);
    }
    return c;
  }

  /**
   * Follows a conversation from `lastSeq` (what the app already shows; 0 for everything): its
   * missed messages are fetched on every reconnect and whenever a gap shows. Conversations
   * the client gets messages of are followed by themselves.
   */
  track(conversationId: string, lastSeq = 0): void {
    const c = this.conv(conversationId);
    c.lastSeq = Math.max(c.lastSeq, lastSeq);
  }

  /** Fetches what was missed in a conversation since the last seq seen, now. */
  catchUp(conversationId: string): Promise<void> {
    const c = this.conv(conversationId);
    if (c.syncing) return c.syncing;
    const run = async () => {
      let fetched = 0;
      try {
        for (;;) {
          const r = await this.request("sync", {
            conversation_id: conversationId,
            after_seq: c.lastSeq,
            limit: 200,
          });
          for (const m of r.messages) {
            if (this.accept(c, m)) fetched++;
          }
          if (!r.has_more || r.messages.length === 0) break;
        }
      } finally {
        c.syncing = null;
        const held = c.held.sort((a, b) => a.seq - b.seq);
        c.held = [];
        for (const m of held) this.accept(c, m);
      }
      this.emit("synced", { conversation_id: conversationId, last_seq: c.lastSeq, fetched });
    };
    c.syncing = run();
    c.syncing.catch(() => {
      /* retried on the next reconnect */
    });
    return c.syncing;
  }

  /** Delivers a message once; returns whether it was new. */
  private accept(c: ConvState, m: MessageOut): boolean {
    if (c.seen.has(m.id)) return false;
    c.seen.add(m.id);
    c.order.push(m.id);
    if (c.order.length > this.opts.dedupeWindow) c.seen.delete(c.order.shift()!);
    c.lastSeq = Math.max(c.lastSeq, m.seq);
    this.emit("message.new", { type: "message.new", message: m });
    return true;
  }

  private deliverMessage(m: MessageOut, live: boolean): void {
    const fresh = !this.convs.has(m.conversation_id);
    const c = this.conv(m.conversation_id);
    if (c.syncing) {
      c.held.push(m);
      return;
    }
    // A gap: fetch what is missing first, then deliver this one in order.
    if (live && !fresh && m.seq > c.lastSeq + 1 && !c.seen.has(m.id)) {
      c.held.push(m);
      void this.catchUp(m.conversation_id);
      return;
    }
    this.accept(c, m);
  }

  private enqueue(id: string): void {
    if (!this.pending.has(id)) return;
    if (!this.queue.includes(id)) this.queue.push(id);
    this.flush();
  }

  private flush(): void {
    const ws = this.ws;
    if (this._state !== "connected" || !ws || ws.readyState !== OPEN) return;
    while (this.queue.length) {
      const id = this.queue.shift()!;
      const p = this.pending.get(id);
      if (!p || p.inFlight) continue;
      p.attempts++;
      p.inFlight = true;
      try {
        ws.send(JSON.stringify(p.frame));
      } catch {
        p.inFlight = false;
        this.queue.unshift(id);
        return;
      }
      p.timer = setTimeout(() => this.onTimeout(p, ws), this.opts.requestTimeoutMs);
    }
  }

  private onTimeout(p: Pending, ws: WebSocketLike): void {
    p.timer = null;
    if (!this.pending.has(p.frame.id)) return;
    p.inFlight = false;
    if (p.attempts >= p.max) {
      this.pending.delete(p.frame.id);
      p.reject(new StarlingError("timeout", `no reply to ${p.frame.type} in ${this.opts.requestTimeoutMs} ms`));
    }
    // Replies come in order: a missing one means the connection is stuck. Start over.
    if (this.ws === ws) {
      try {
        ws.close(4000, "request timed out");
      } catch {
        /* ignore */
      }
      this.ws = null;
      this.onDisconnect(4000, "request timed out");
    }
  }

  /**
   * Sends a request and resolves with its `ack.result`; while disconnected it waits for the
   * connection, and it is retried after a reconnect or a retryable error.
   */
  request<T extends RequestType>(
    type: T,
    body: RequestBody<T>,
    opts: { maxAttempts?: number; ephemeral?: boolean } = {},
  ): Promise<AckResults[T]> {
    if (this._state === "closed") return Promise.reject(new StarlingError("closed", "client is closed"));
    if (opts.ephemeral && this._state !== "connected") {
      return Promise.reject(new StarlingError("disconnected", "not connected"));
    }
    const id = `r${++this.nextId}`;
    const frame = { ...body, type, id } as unknown as ClientFrame & { id: string };
    return new Promise<AckResults[T]>((resolve, reject) => {
      this.pending.set(id, {
        frame,
        resolve: resolve as (r: unknown) => void,
        reject,
        attempts: 0,
        max: opts.maxAttempts ?? this.opts.maxAttempts,
        inFlight: false,
        timer: null,
        ephemeral: opts.ephemeral ?? false,
      });
      this.enqueue(id);
    });
  }

  /**
   * Sends a message. It gets a `client_msg_id` (unless given) and is retried until the server
   * acknowledges it, across reconnects: it is posted once.
   */
  async send(
    conversationId: string,
    content: string | Omit<SendFrame, "type" | "id" | "conversation_id">,
  ): Promise<MessageOut> {
    const c = typeof content === "string" ? { text: content } : content;
    const r = await this.request("send", {
      ...c,
      conversation_id: conversationId,
      client_msg_id: c.client_msg_id ?? randomId(),
    });
    return r.message;
  }

  /** Edits one's own message. */
  async edit(
    conversationId: string,
    messageId: string,
    edit: { text?: string | null; custom?: Record<string, unknown> },
  ): Promise<MessageOut> {
    return (await this.request("edit", { conversation_id: conversationId, message_id: messageId, ...edit }))
      .message;
  }

  /** Deletes a message for everyone. */
  async delete(conversationId: string, messageId: string): Promise<MessageOut> {
    return (await this.request("delete", { conversation_id: conversationId, message_id: messageId })).message;
  }

  /** Adds (or with `remove`, removes) a reaction; resolves with the counts per emoji. */
  async react(
    conversationId: string,
    messageId: string,
    emoji: string,
    remove = false,
  ): Promise<Record<string, number>> {
    return (
      await this.request("react", { conversation_id: conversationId, message_id: messageId, emoji, remove })
    ).reactions;
  }

  /** Marks the conversation read up to `seq` (default: the newest seen); sends a read receipt. */
  async read(conversationId: string, seq?: number): Promise<number> {
    const upTo = seq ?? this.lastSeq(conversationId);
    return (await this.request("read", { conversation_id: conversationId, seq: upTo })).last_read_seq;
  }

  /** Typing indicator; dropped (rejected with `disconnected`) while not connected. */
  async typing(conversationId: string, state: "start" | "stop" = "start"): Promise<void> {
    await this.request("typing", { conversation_id: conversationId, state }, { ephemeral: true });
  }

  /** Joins a broadcast room and follows it. */
  async subscribe(roomId: string): Promise<AckResults["subscribe"]["member"]> {
    const r = await this.request("subscribe", { conversation_id: roomId });
    this.track(roomId);
    return r.member;
  }

  /** Leaves a broadcast room and stops following it. */
  async unsubscribe(roomId: string): Promise<void> {
    await this.request("unsubscribe", { conversation_id: roomId });
    this.convs.delete(roomId);
  }

  /** Messages after a seq (one page, oldest first), without delivering them as events. */
  sync(conversationId: string, afterSeq: number, limit = 100): Promise<AckResults["sync"]> {
    return this.request("sync", { conversation_id: conversationId, after_seq: afterSeq, limit });
  }

  /** A round trip to the server. */
  async ping(): Promise<void> {
    await this.request("ping", {});
  }
}

const PROTOCOL_EVENTS = new Set<string>([
  "message.new",
  "message.updated",
  "message.deleted",
  "reaction.added",
  "reaction.removed",
  "read",
  "typing",
  "presence",
  "member.added",
  "member.updated",
  "member.removed",
  "conversation.updated",
  "conversation.deleted",
]);

function isProtocolEvent(type: string): boolean {
  return PROTOCOL_EVENTS.has(type) || (type.includes(".") && !type.startsWith("server."));
}
