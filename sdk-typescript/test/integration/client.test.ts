// The SDK against a real `starling standalone` (SQLite, in-process bus): users and
// conversations made through the admin and server APIs, the way the README does it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  StarlingClient,
  StarlingError,
  type ClientEventName,
  type ClientEventOf,
  type WebSocketConstructor,
} from "../../src/index.js";
import { Standalone, newApp, userToken } from "../helpers/starling.js";

const s = new Standalone();
let key = "";
let direct = "";
let room = "";
const tokens: Record<string, string> = {};
/** The id of alice's first message in the direct conversation. */
let firstId = "";
const clients: StarlingClient[] = [];
/** Every socket opened, to cut one like a network failure would. */
const sockets: WebSocket[] = [];

class TrackedWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    sockets.push(this);
  }
}

function connectAs(user: string, extra: Partial<ConstructorParameters<typeof StarlingClient>[0]> = {}) {
  const c = new StarlingClient({
    url: s.base,
    token: () => tokens[user],
    WebSocket: TrackedWebSocket as unknown as WebSocketConstructor,
    backoff: { initialDelayMs: 200, maxDelayMs: 1000 },
    requestTimeoutMs: 5000,
    ...extra,
  });
  clients.push(c);
  return c;
}

/** Resolves with the first event of `type` that passes `pred`. */
function next<K extends ClientEventName>(
  c: StarlingClient,
  type: K,
  pred: (e: ClientEventOf<K>) => boolean = () => true,
  ms = 10_000,
): Promise<ClientEventOf<K>> {
  return new Promise((res, rej) => {
    const t = setTimeout(() => {
      off();
      rej(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = c.on(type, (e) => {
      if (pred(e)) {
        clearTimeout(t);
        off();
        res(e);
      }
    });
  });
}

function collect(c: StarlingClient, conv: string): number[] {
  const seqs: number[] = [];
  c.on("message.new", ({ message }) => {
    if (message.conversation_id === conv) seqs.push(message.seq);
  });
  return seqs;
}

async function until(cond: () => boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  await s.start();
  ({ key } = await newApp(s));
  for (const u of ["alice", "bob", "carol"]) tokens[u] = await userToken(s, key, u);
  direct = (await s.call("POST", "/v1/conversations", key, { kind: "direct", members: ["alice", "bob"] })).id;
  room = (await s.call("POST", "/v1/conversations", key, { kind: "room", name: "Town square", created_by: "alice" })).id;
});

afterAll(async () => {
  for (const c of clients) c.close();
  await s.dispose();
});

describe("SDK against starling standalone", () => {
  it("connects with a user token and exchanges messages, each delivered once", async () => {
    const alice = connectAs("alice");
    const bob = connectAs("bob");
    const hello = await alice.connect();
    expect(hello.user_id).toBe("alice");
    const online = next(alice, "presence", (e) => e.user_id === "bob" && e.online);
    await bob.connect();
    await online;
    expect(alice.presenceOf("bob")?.online).toBe(true);

    const got = collect(bob, direct);
    const m1 = await alice.send(direct, "Hi Bob!");
    expect(m1).toMatchObject({ seq: 1, sender_id: "alice", text: "Hi Bob!" });
    expect(m1.client_msg_id).toBeTruthy();
    firstId = m1.id;
    // A retry under the same client_msg_id returns the original and delivers nothing twice.
    const again = await alice.request("send", { conversation_id: direct, client_msg_id: m1.client_msg_id, text: "Hi Bob!" });
    expect(again.duplicate).toBe(true);
    expect(again.message.id).toBe(m1.id);
    const m2 = await alice.send(direct, { text: "second", custom: { mood: "happy" } });
    expect(m2.seq).toBe(2);
    await until(() => got.length >= 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual([1, 2]);
    expect(bob.lastSeq(direct)).toBe(2);
  });

  it("edits, reacts, deletes, reads and types, with events on the other side", async () => {
    const [alice, bob] = clients;
    const m = await alice.send(direct, "tpyo");
    const updated = next(bob, "message.updated", (e) => e.message.id === m.id);
    expect((await alice.edit(direct, m.id, { text: "typo" })).text).toBe("typo");
    expect((await updated).message.edited_at).toBeTruthy();

    const reacted = next(alice, "reaction.added", (e) => e.message_id === m.id);
    expect(await bob.react(direct, m.id, "👍")).toEqual({ "👍": 1 });
    expect((await reacted).user_id).toBe("bob");
    expect(await bob.react(direct, m.id, "👍", true)).toEqual({});

    const receipt = next(alice, "read", (e) => e.user_id === "bob");
    expect(await bob.read(direct)).toBe(m.seq);
    expect((await receipt).seq).toBe(m.seq);

    const typing = next(alice, "typing", (e) => e.user_id === "bob");
    await bob.typing(direct, "start");
    expect((await typing).state).toBe("start");

    const deleted = next(bob, "message.deleted", (e) => e.message.id === m.id);
    expect((await alice.delete(direct, m.id)).deleted).toBe(true);
    expect((await deleted).message.text).toBeNull();

    // Not the sender: refused with the server's code, and not retried.
    const err = await bob.edit(direct, firstId, { text: "mine now" }).catch((e) => e);
    expect(err).toBeInstanceOf(StarlingError);
    expect(err.code).toBe("forbidden");
  });

  it("joins and leaves a room", async () => {
    const [alice] = clients;
    const carol = connectAs("carol");
    await carol.connect();
    const member = await carol.subscribe(room);
    expect(member.user_id).toBe("carol");
    const got = collect(carol, room);
    await alice.subscribe(room);
    await alice.send(room, "welcome to the square");
    await until(() => got.length === 1);
    await carol.unsubscribe(room);
    await alice.send(room, "carol left");
    const err = await carol.sync(room, 0).catch((e) => e);
    expect(err.code).toBe("forbidden");
    expect(got).toEqual([1]);
  });

  it("resumes after a dropped connection: missed messages fetched by seq, in order, once", async () => {
    const [alice] = clients;
    const bob = connectAs("bob", { backoff: { initialDelayMs: 1500, maxDelayMs: 1500, jitter: 0 } });
    await bob.connect();
    bob.track(direct, (await alice.sync(direct, 0, 200)).messages.at(-1)!.seq);
    const start = bob.lastSeq(direct);
    const got = collect(bob, direct);
    const resumed = next(bob, "connected", (e) => e.resumed);
    const down = next(bob, "disconnected");
    sockets[sockets.length - 1].terminate();
    expect((await down).reconnectInMs).toBe(1500);
    const sent = [];
    for (const t of ["one", "two", "three"]) sent.push((await alice.send(direct, t)).seq);
    await resumed;
    await next(bob, "synced", (e) => e.conversation_id === direct);
    expect(got).toEqual(sent);
    expect(sent[0]).toBe(start + 1);
    const live = await alice.send(direct, "after");
    await until(() => got.length === 4);
    expect(got).toEqual([...sent, live.seq]);
    bob.close();
  });

  it("survives a server restart: a send made while it is down goes through once", async () => {
    const [alice, bob] = clients;
    const got = collect(bob, direct);
    const aliceBack = next(alice, "connected", (e) => e.resumed, 60_000);
    const bobBack = next(bob, "connected", (e) => e.resumed, 60_000);
    await s.stop();
    await until(() => alice.state === "reconnecting");
    const pending = alice.send(direct, "sent while the server was down");
    await s.start();
    await Promise.all([aliceBack, bobBack]);
    const m = await pending;
    await until(() => got.includes(m.seq), 15_000);
    expect(got.filter((x) => x === m.seq).length).toBe(1);
    const history = await alice.sync(direct, m.seq - 1);
    expect(history.messages.map((x) => x.text)).toEqual(["sent while the server was down"]);
  });

  it("keeps apps apart: another app's token cannot reach this app's conversation", async () => {
    const alice = () => clients[0];
    const other = await newApp(s);
    tokens.mallory = await userToken(s, other.key, "mallory");
    const mallory = connectAs("mallory");
    await mallory.connect();
    // The same answer as for a conversation that does not exist: nothing tells it exists.
    const err = await mallory.sync(direct, 0).catch((e) => e);
    const none = await mallory.sync("cnv_01nosuchconversation00000", 0).catch((e) => e);
    expect(err).toBeInstanceOf(StarlingError);
    expect(err.code).toBe(none.code);
    expect(err.message.replace(direct, "X")).toBe(none.message.replace("cnv_01nosuchconversation00000", "X"));
    const err2 = await mallory.send(direct, "hi").catch((e) => e);
    expect(err2).toBeInstanceOf(StarlingError);
    expect((await alice().sync(direct, 0, 200)).messages.some((m) => m.sender_id === "mallory")).toBe(false);
  });
});

