// The demo chat page served by `starling standalone` at /demo (when `[demo] enabled`).
// Built into src/demo/demo.js by scripts/build-demo.mjs. It plays an end user's app: the
// demo endpoints (/demo/api/…) stand in for the app's backend (user tokens, conversation list).
import { StarlingClient, type MessageOut, type UserConversation } from "../src/index.js";

interface Session {
  token: string;
  user: { id: string; name: string };
  lobby_id: string;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const api = async <T>(path: string, init: RequestInit = {}, token?: string): Promise<T> => {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`/demo/api/${path}`, { ...init, headers });
  const body = await r.json();
  if (!r.ok) throw new Error(body.message ?? r.statusText);
  return body as T;
};

let session: Session | null = null;
let client: StarlingClient | null = null;
let convs: UserConversation[] = [];
let open: string | null = null;
const messages = new Map<string, Map<number, MessageOut>>();
/** Per conversation: user → newest seq they read (from read receipts). */
const reads = new Map<string, Map<string, number>>();
const typingUsers = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();

function el(tag: string, cls = "", text = ""): HTMLElement {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

async function login(userId: string, name: string) {
  session = await api<Session>("session", {
    method: "POST",
    body: JSON.stringify(name ? { user_id: userId, name } : { user_id: userId }),
  });
  sessionStorage.setItem("starling-demo-user", JSON.stringify({ userId, name }));
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `signed in as ${session.user.name} (${session.user.id})`;
  document.title = `${session.user.id} · Starling demo`;
  client = new StarlingClient({
    url: location.origin,
    // On every reconnect, a fresh token from the "backend".
    token: async () => {
      session = await api<Session>("session", { method: "POST", body: JSON.stringify({ user_id: userId }) });
      return session.token;
    },
    backoff: { initialDelayMs: 300, maxDelayMs: 5000 },
  });
  wire(client);
  await client.connect();
  await client.subscribe(session.lobby_id).catch(() => {});
  await refresh();
  // New demo users appear without an event (presence goes to contacts only): look again now and then.
  setInterval(() => void renderPeople().catch(() => {}), 2000);
  const lobby = convs.find((c) => c.conversation.id === session!.lobby_id);
  if (!open && lobby) await select(lobby.conversation.id);
}

function wire(c: StarlingClient) {
  c.on("state", ({ state }) => {
    const s = $("status");
    s.textContent = state;
    s.className = state;
  });
  c.on("connected", ({ resumed }) => {
    if (resumed) void refresh();
  });
  c.on("message.new", ({ message }) => {
    store(message);
    if (message.conversation_id === open) {
      render();
      const conv = convs.find((x) => x.conversation.id === open);
      if (conv) conv.membership.last_read_seq = Math.max(conv.membership.last_read_seq, message.seq);
      if (document.visibilityState === "visible" && message.sender_id !== c.userId) {
        void c.read(open, message.seq).catch(() => {});
      }
    } else if (convs.some((x) => x.conversation.id === message.conversation_id)) {
      renderConvs();
    } else {
      void refresh();
    }
  });
  const update = ({ message }: { message: MessageOut }) => {
    store(message);
    if (message.conversation_id === open) render();
  };
  c.on("message.updated", update);
  c.on("message.deleted", update);
  c.on("read", (e) => {
    let r = reads.get(e.conversation_id);
    if (!r) reads.set(e.conversation_id, (r = new Map()));
    r.set(e.user_id, Math.max(r.get(e.user_id) ?? 0, e.seq));
    if (e.user_id === c.userId) {
      const conv = convs.find((x) => x.conversation.id === e.conversation_id);
      if (conv) {
        conv.membership.last_read_seq = Math.max(conv.membership.last_read_seq, e.seq);
        renderConvs();
      }
    }
    if (e.conversation_id === open) render();
  });
  c.on("typing", (e) => {
    if (e.user_id === c.userId) return;
    let t = typingUsers.get(e.conversation_id);
    if (!t) typingUsers.set(e.conversation_id, (t = new Map()));
    clearTimeout(t.get(e.user_id));
    if (e.state === "start") {
      t.set(e.user_id, setTimeout(() => { t!.delete(e.user_id); renderTyping(); }, 6000));
    } else {
      t.delete(e.user_id);
    }
    renderTyping();
  });
  c.on("presence", () => void renderPeople());
  c.on("member.added", () => void refresh());
}

function store(m: MessageOut) {
  let ms = messages.get(m.conversation_id);
  if (!ms) messages.set(m.conversation_id, (ms = new Map()));
  ms.set(m.seq, m);
  const conv = convs.find((x) => x.conversation.id === m.conversation_id);
  if (conv && m.seq > conv.conversation.last_seq) conv.conversation.last_seq = m.seq;
}

async function refresh() {
  if (!session) return;
  convs = await api<UserConversation[]>("conversations", {}, session.token);
  for (const c of convs) client?.track(c.conversation.id, messages.get(c.conversation.id) ? client.lastSeq(c.conversation.id) : c.conversation.last_seq);
  renderConvs();
  await renderPeople();
}

function title(c: UserConversation): string {
  return c.conversation.name ?? c.conversation.id;
}

function renderConvs() {
  const box = $("convs");
  box.replaceChildren();
  if (!convs.length) box.append(el("div", "empty", "No conversations yet"));
  for (const c of convs) {
    const row = el("div", "conv" + (c.conversation.id === open ? " active" : ""));
    row.dataset.id = c.conversation.id;
    row.append(el("span", "name", title(c)));
    // Unread: what came after the newest seq this user read (idempotent, whatever the order).
    const unread = Math.max(0, c.conversation.last_seq - c.membership.last_read_seq);
    if (unread > 0 && c.conversation.id !== open) row.append(el("span", "unread", String(unread)));
    row.onclick = () => void select(c.conversation.id);
    box.append(row);
  }
}

async function renderPeople() {
  if (!session) return;
  const users = await api<{ id: string; name: string; online: boolean }[]>("users");
  const box = $("people");
  box.replaceChildren();
  for (const u of users.filter((u) => u.id !== session!.user.id)) {
    const row = el("div", "person");
    row.dataset.id = u.id;
    const online = client?.presenceOf(u.id)?.online ?? u.online;
    row.append(el("span", "dot" + (online ? " online" : "")), el("span", "name", `${u.name} (${u.id})`));
    row.title = `Chat with ${u.name}`;
    row.onclick = async () => {
      const conv = await api<{ id: string }>("direct", { method: "POST", body: JSON.stringify({ with: u.id }) }, session!.token);
      await refresh();
      await select(conv.id);
    };
    box.append(row);
  }
}

async function select(id: string) {
  if (!client) return;
  open = id;
  const conv = convs.find((c) => c.conversation.id === id);
  $("chat-title").textContent = conv ? title(conv) : id;
  ($("text") as HTMLInputElement).disabled = false;
  ($("send") as HTMLButtonElement).disabled = false;
  if (!messages.has(id) && conv) {
    const from = Math.max(0, conv.conversation.last_seq - 100);
    const page = await client.sync(id, from, 100);
    page.messages.forEach(store);
    client.track(id, conv.conversation.last_seq);
  }
  if (conv) {
    const last = conv.conversation.last_seq;
    conv.membership.last_read_seq = last;
    if (last > 0) void client.read(id, last).catch(() => {});
  }
  renderConvs();
  render();
  renderTyping();
}

function render() {
  if (!open || !client) return;
  const box = $("messages");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 30;
  box.replaceChildren();
  const ms = [...(messages.get(open)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
  const r = reads.get(open) ?? new Map<string, number>();
  for (const m of ms) {
    const mine = m.sender_id === client.userId;
    const div = el("div", "msg" + (mine ? " mine" : "") + (m.deleted ? " deleted" : ""));
    div.dataset.seq = String(m.seq);
    if (!mine) div.append(el("div", "who", m.sender_id ?? "system"));
    div.append(el("div", "text", m.deleted ? "message deleted" : (m.text ?? JSON.stringify(m.custom))));
    const counts = Object.entries(m.reactions).filter(([, n]) => n > 0);
    if (counts.length) div.append(el("div", "reactions", counts.map(([e, n]) => `${e} ${n}`).join("  ")));
    const meta = el("div", "meta", `#${m.seq}${m.edited_at ? " · edited" : ""}`);
    if (mine) {
      const readers = [...r].filter(([u, s]) => u !== client!.userId && s >= m.seq).map(([u]) => u);
      if (readers.length) {
        const receipt = el("span", "receipt", ` · read by ${readers.join(", ")}`);
        meta.append(receipt);
      }
    }
    div.append(meta);
    div.ondblclick = () => void client!.react(open!, m.id, "👍").catch(() => {});
    box.append(div);
  }
  if (atBottom || ms.length) box.scrollTop = box.scrollHeight;
}

function renderTyping() {
  const who = open ? [...(typingUsers.get(open)?.keys() ?? [])] : [];
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

let typingSent = 0;
let stopTimer: ReturnType<typeof setTimeout> | undefined;
function onInput() {
  if (!open || !client) return;
  const now = Date.now();
  if (now - typingSent > 3000) {
    typingSent = now;
    void client.typing(open, "start").catch(() => {});
  }
  clearTimeout(stopTimer);
  const conv = open;
  stopTimer = setTimeout(() => {
    typingSent = 0;
    void client?.typing(conv, "stop").catch(() => {});
  }, 4000);
}

async function onSend(ev: SubmitEvent) {
  ev.preventDefault();
  const input = $("text") as HTMLInputElement;
  const text = input.value.trim();
  if (!text || !open || !client) return;
  input.value = "";
  clearTimeout(stopTimer);
  typingSent = 0;
  void client.typing(open, "stop").catch(() => {});
  try {
    await client.send(open, text);
  } catch (e) {
    $("typing").textContent = `not sent: ${(e as Error).message}`;
  }
}

async function showUsers() {
  const users = await api<{ id: string; name: string }[]>("users");
  const box = $("login-users");
  box.replaceChildren();
  $("login-users-box").hidden = users.length === 0;
  for (const u of users) {
    const b = el("button", "", `${u.name} (${u.id})`);
    b.onclick = () => void login(u.id, "").catch(showError);
    box.append(b);
  }
}

function showError(e: unknown) {
  $("login-error").textContent = (e as Error).message;
}

function start() {
  $("login-go").onclick = () => {
    const id = ($("login-user") as HTMLInputElement).value.trim();
    const name = ($("login-name") as HTMLInputElement).value.trim();
    void login(id, name).catch(showError);
  };
  ($("text") as HTMLInputElement).oninput = onInput;
  $("composer").onsubmit = (e) => void onSend(e as SubmitEvent);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && open && client) void select(open);
  });
  const saved = sessionStorage.getItem("starling-demo-user");
  if (saved) {
    const { userId, name } = JSON.parse(saved);
    void login(userId, name).catch(showError);
  } else {
    void showUsers().catch(showError);
  }
}

start();
