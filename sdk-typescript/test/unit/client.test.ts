import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { StarlingClient, StarlingError, connectUrl, type WebSocketConstructor } from "../../src/index.js";
import { FakeSocket, msg } from "./fake-ws.js";

function client(extra: Record<string, unknown> = {}) {
  return new StarlingClient({
    url: "http://chat.example:7400/",
    token: "tok en",
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    random: () => 0.5,
    requestTimeoutMs: 1000,
    ...extra,
  });
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("connecting", () => {
  it("builds the ws URL with the token escaped", () => {
    expect(connectUrl("https://a.example/", "x y")).toBe("wss://a.example/v1/connect?token=x%20y");
    expect(connectUrl("http://127.0.0.1:7400", "t")).toBe("ws://127.0.0.1:7400/v1/connect?token=t");
    expect(connectUrl("ws://h:1", "t")).toBe("ws://h:1/v1/connect?token=t");
  });

  it("refuses to start without a WebSocket implementation", () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      expect(() => new StarlingClient({ url: "http://x", token: "t" })).toThrow(/ws/);
    } finally {
      if (saved) g.WebSocket = saved;
    }
  });

  it("resolves connect() at hello and reports the user", async () => {
    const c = client();
    const p = c.connect();
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeSocket.last().url).toBe("ws://chat.example:7400/v1/connect?token=tok%20en");
    FakeSocket.last().accept("alice");
    const hello = await p;
    expect(hello.user_id).toBe("alice");
    expect(c.state).toBe("connected");
    expect(c.userId).toBe("alice");
    c.close();
    expect(c.state).toBe("closed");
  });

  it("reconnects with exponential backoff, capped, and resets after hello", async () => {
    const c = client({ backoff: { initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0 } });
    expect([0, 1, 2, 3, 4, 5].map((n) => c.backoffDelay(n))).toEqual([100, 200, 400, 800, 1000, 1000]);
    const delays: (number | null)[] = [];
    c.on("disconnected", (e) => delays.push(e.reconnectInMs));
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    for (let i = 0; i < 3; i++) {
      FakeSocket.last().drop();
      await vi.advanceTimersByTimeAsync(delays[delays.length - 1]! - 1);
      expect(FakeSocket.all.length).toBe(i + 1);
      await vi.advanceTimersByTimeAsync(1);
      expect(FakeSocket.all.length).toBe(i + 2);
    }
    expect(delays).toEqual([100, 200, 400]);
    FakeSocket.last().accept();
    FakeSocket.last().drop();
    expect(delays[3]).toBe(100);
    c.close();
  });

  it("jitters the delay within the configured share", () => {
    const lo = client({ random: () => 0, backoff: { initialDelayMs: 1000, jitter: 0.2 } });
    const hi = client({ random: () => 1, backoff: { initialDelayMs: 1000, jitter: 0.2 } });
    expect(lo.backoffDelay(0)).toBe(800);
    expect(hi.backoffDelay(0)).toBe(1200);
  });

  it("asks the token provider again on every reconnect", async () => {
    let n = 0;
    const c = client({ token: async () => `t${++n}` });
    void c.connect().catch(() => {});
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().drop();
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeSocket.all.map((s) => s.url.split("token=")[1])).toEqual(["t1", "t2"]);
    c.close();
  });

  it("does not reconnect after 4003 (suspended app or banned user)", async () => {
    const c = client();
    void c.connect().catch(() => {});
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().accept();
    FakeSocket.last().drop(4003);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all.length).toBe(1);
    expect(c.state).toBe("closed");
  });
});

describe("sending", () => {
  it("queues while offline, retries with the same client_msg_id after a drop", async () => {
    const c = client();
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    const sent = c.send("cnv_1", "hi");
    expect(FakeSocket.last().sent).toEqual([]);
    FakeSocket.last().accept();
    const first = FakeSocket.last().of("send")[0];
    expect(first).toMatchObject({ type: "send", conversation_id: "cnv_1", text: "hi" });
    expect(typeof first.client_msg_id).toBe("string");
    FakeSocket.last().drop();
    await vi.advanceTimersByTimeAsync(1000);
    FakeSocket.last().accept();
    const again = FakeSocket.last().of("send")[0];
    expect(again.client_msg_id).toBe(first.client_msg_id);
    FakeSocket.last().ack(again, { message: msg("cnv_1", 1, { sender_id: "alice" }), duplicate: true });
    expect((await sent).seq).toBe(1);
    c.close();
  });

  it("retries on a timeout by reconnecting, and gives up after maxAttempts", async () => {
    const c = client({ maxAttempts: 2, backoff: { initialDelayMs: 10, jitter: 0 } });
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().accept();
    const sent = c.send("cnv_1", "hi");
    const failed = expect(sent).rejects.toMatchObject({ code: "timeout" });
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeSocket.all.length).toBe(1);
    await vi.advanceTimersByTimeAsync(10);
    expect(FakeSocket.all.length).toBe(2);
    FakeSocket.last().accept();
    expect(FakeSocket.last().of("send").length).toBe(1);
    await vi.advanceTimersByTimeAsync(1000);
    await failed;
    c.close();
  });

  it("rejects a refused request with the server's code, without retrying", async () => {
    const c = client();
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().accept();
    const p = c.edit("cnv_1", "msg_1", { text: "x" });
    const req = FakeSocket.last().of("edit")[0];
    FakeSocket.last().push({ type: "error", id: req.id, code: "forbidden", message: "only the sender may edit a message" });
    const e = await p.catch((e) => e);
    expect(e).toBeInstanceOf(StarlingError);
    expect(e.code).toBe("forbidden");
    expect(FakeSocket.last().of("edit").length).toBe(1);
    c.close();
  });

  it("retries after a retryable error code", async () => {
    const c = client({ backoff: { initialDelayMs: 50, jitter: 0 } });
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().accept();
    const p = c.react("cnv_1", "msg_1", "👍");
    const s = FakeSocket.last();
    s.push({ type: "error", id: s.of("react")[0].id, code: "rate_limited", message: "slow down" });
    await vi.advanceTimersByTimeAsync(50);
    expect(s.of("react").length).toBe(2);
    s.ack(s.of("react")[1], { reactions: { "👍": 1 } });
    expect(await p).toEqual({ "👍": 1 });
    c.close();
  });

  it("drops typing while offline instead of queueing it", async () => {
    const c = client();
    await expect(c.typing("cnv_1")).rejects.toMatchObject({ code: "disconnected" });
  });

  it("fails pending requests when closed", async () => {
    const c = client();
    void c.connect().catch(() => {});
    const p = c.read("cnv_1", 3);
    c.close();
    await expect(p).rejects.toMatchObject({ code: "closed" });
  });
});

describe("resuming", () => {
  it("delivers each message once, and syncs what was missed after a reconnect", async () => {
    const c = client();
    const seen: number[] = [];
    c.on("message.new", (e) => seen.push(e.message.seq));
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    let s = FakeSocket.last();
    s.accept();
    s.push({ type: "message.new", message: msg("cnv_1", 1) });
    s.push({ type: "message.new", message: msg("cnv_1", 2) });
    s.push({ type: "message.new", message: msg("cnv_1", 2) });
    expect(seen).toEqual([1, 2]);
    s.drop();
    await vi.advanceTimersByTimeAsync(1000);
    s = FakeSocket.last();
    s.accept();
    const sync = s.of("sync")[0];
    expect(sync).toMatchObject({ conversation_id: "cnv_1", after_seq: 2 });
    // A live message arrives while the sync is out: held, then delivered in order.
    s.push({ type: "message.new", message: msg("cnv_1", 5) });
    s.ack(sync, { messages: [msg("cnv_1", 2), msg("cnv_1", 3), msg("cnv_1", 4)], has_more: true });
    await vi.advanceTimersByTimeAsync(0);
    const sync2 = s.of("sync")[1];
    expect(sync2).toMatchObject({ after_seq: 4 });
    s.ack(sync2, { messages: [msg("cnv_1", 5)], has_more: false });
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(c.lastSeq("cnv_1")).toBe(5);
    c.close();
  });

  it("catches up every conversation when the server says resync", async () => {
    const c = client();
    const seen: number[] = [];
    const told: { reason: string; inMs: number }[] = [];
    c.on("message.new", (e) => seen.push(e.message.seq));
    c.on("resync", (e) => told.push(e));
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    const s = FakeSocket.last();
    s.accept();
    c.track("cnv_1", 3);
    c.track("cnv_2", 7);
    // No gap is ever seen (nothing more is pushed): only the resync tells what was missed.
    s.push({ type: "resync", reason: "registry_lost_state", spread_ms: 1000 });
    expect(told).toHaveLength(1);
    expect(told[0].reason).toBe("registry_lost_state");
    expect(told[0].inMs).toBeGreaterThanOrEqual(0);
    expect(told[0].inMs).toBeLessThanOrEqual(1000);
    expect(s.of("sync")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1000);
    const syncs = s.of("sync");
    expect(syncs.map((f) => [f.conversation_id, f.after_seq]).sort()).toEqual([
      ["cnv_1", 3],
      ["cnv_2", 7],
    ]);
    s.ack(syncs.find((f) => f.conversation_id === "cnv_1")!, {
      messages: [msg("cnv_1", 4)],
      has_more: false,
    });
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual([4]);
    expect(c.lastSeq("cnv_1")).toBe(4);
    c.close();
  });

  it("fills a gap seen live before delivering the newer message", async () => {
    const c = client();
    const seen: number[] = [];
    c.on("message.new", (e) => seen.push(e.message.seq));
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    const s = FakeSocket.last();
    s.accept();
    c.track("cnv_1", 3);
    s.push({ type: "message.new", message: msg("cnv_1", 6) });
    expect(seen).toEqual([]);
    const sync = s.of("sync")[0];
    expect(sync).toMatchObject({ after_seq: 3 });
    s.ack(sync, { messages: [msg("cnv_1", 4), msg("cnv_1", 5), msg("cnv_1", 6)], has_more: false });
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual([4, 5, 6]);
    c.close();
  });

  it("keeps presence and passes typed events on", async () => {
    const c = client();
    const typing: string[] = [];
    const all: string[] = [];
    c.on("typing", (e) => typing.push(`${e.user_id}:${e.state}`));
    c.onEvent((e) => all.push(e.type));
    void c.connect();
    await vi.advanceTimersByTimeAsync(0);
    const s = FakeSocket.last();
    s.accept();
    s.push({ type: "presence", user_id: "bob", online: true, last_seen_at: null });
    s.push({ type: "typing", conversation_id: "cnv_1", user_id: "bob", state: "start" });
    s.push({ type: "read", conversation_id: "cnv_1", user_id: "bob", seq: 2 });
    expect(c.presenceOf("bob")).toEqual({ online: true, last_seen_at: null });
    expect(typing).toEqual(["bob:start"]);
    expect(all).toEqual(["presence", "typing", "read"]);
    c.close();
  });
});
