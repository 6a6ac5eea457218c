// A WebSocket stand-in for unit tests of the client's own logic (timers, retries, dedupe).
// The integration tests use the real server.
import type { WebSocketLike } from "../../src/index.js";

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  static last(): FakeSocket {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  /** The server side: accept and greet. */
  accept(user = "alice"): void {
    this.readyState = 1;
    this.onopen?.({});
    this.push({
      type: "hello",
      connection_id: `con_${FakeSocket.all.length}`,
      user_id: user,
      app_id: "app_1",
      heartbeat_ms: 25000,
      max_frame_bytes: 65536,
    });
  }
  push(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  ack(req: Record<string, unknown>, result: unknown): void {
    this.push({ type: "ack", id: req.id, result });
  }
  drop(code = 1006): void {
    this.close(code, "dropped");
  }
  of(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

export function msg(conv: string, seq: number, extra: Record<string, unknown> = {}) {
  return {
    id: `msg_${conv}_${seq}`,
    conversation_id: conv,
    seq,
    sender_id: "bob",
    client_msg_id: null,
    kind: "text",
    text: `m${seq}`,
    custom: null,
    attachments: [],
    mentions: [],
    parent_id: null,
    reply_count: 0,
    reactions: {},
    created_at: "2026-11-27T15:15:31.921008Z",
    edited_at: null,
    deleted: false,
    ...extra,
  };
}
