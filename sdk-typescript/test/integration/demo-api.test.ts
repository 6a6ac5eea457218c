// The demo page's dev-only endpoints (src/demo.rs) on a real standalone.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Standalone, newApp, userToken } from "../helpers/starling.js";

const s = new Standalone();
const off = new Standalone({ demo: false });

async function post(path: string, body: unknown, token?: string) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`${s.base}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

beforeAll(async () => {
  await Promise.all([s.start(), off.start()]);
});
afterAll(async () => {
  await Promise.all([s.dispose(), off.dispose()]);
});

describe("demo endpoints", () => {
  it("serve the page and its script", async () => {
    const page = await fetch(`${s.base}/demo`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await page.text()).toContain('<script src="/demo/demo.js">');
    const js = await fetch(`${s.base}/demo/demo.js`);
    expect(js.headers.get("content-type")).toContain("javascript");
    expect(await js.text()).toContain("/demo/api/");
  });

  it("are not there unless enabled", async () => {
    for (const path of ["/demo", "/demo/demo.js", "/demo/api/users"]) {
      expect((await fetch(`${off.base}${path}`)).status, path).toBe(404);
    }
    const r = await fetch(`${off.base}/demo/api/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: "alice" }),
    });
    expect(r.status).toBe(404);
  });

  it("hand out demo user tokens, list conversations with unread counts, open direct chats", async () => {
    const a = await post("/demo/api/session", { user_id: "dana", name: "Dana" });
    expect(a.status).toBe(201);
    expect(a.body.user).toMatchObject({ id: "dana", name: "Dana" });
    expect(a.body.token).toMatch(/^ey/);
    const b = await post("/demo/api/session", { user_id: "eli" });
    const users = await (await fetch(`${s.base}/demo/api/users`)).json();
    expect(users.map((u: { id: string }) => u.id)).toEqual(expect.arrayContaining(["dana", "eli"]));

    const d = await post("/demo/api/direct", { with: "eli" }, a.body.token);
    expect(d.status).toBe(201);
    expect(d.body).toMatchObject({ kind: "direct", name: "dana & eli" });
    const again = await post("/demo/api/direct", { with: "dana" }, b.body.token);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(d.body.id);

    const list = await (
      await fetch(`${s.base}/demo/api/conversations`, { headers: { authorization: `Bearer ${b.body.token}` } })
    ).json();
    const row = list.find((c: { conversation: { id: string } }) => c.conversation.id === d.body.id);
    expect(row).toMatchObject({ unread_count: 0, membership: { user_id: "eli" } });
  });

  it("refuse bad input with the field named, and other apps' tokens", async () => {
    const bad = await post("/demo/api/session", { user_id: "no spaces" });
    expect(bad.status).toBe(422);
    expect(bad.body).toMatchObject({ code: "validation_failed", field: "user_id" });
    const unknown = await post("/demo/api/session", { user_id: "x", role: "admin" });
    expect(unknown.status).toBe(422);
    expect(unknown.body.message).toContain("role");
    const a = await post("/demo/api/session", { user_id: "fay" });
    const self = await post("/demo/api/direct", { with: "fay" }, a.body.token);
    expect(self.status).toBe(422);
    expect(self.body.field).toBe("with");
    const ghost = await post("/demo/api/direct", { with: "nobody-here" }, a.body.token);
    expect(ghost.body.field).toBe("with");
    const anon = await fetch(`${s.base}/demo/api/conversations`);
    expect(anon.status).toBe(401);

    // A user token of a customer's app is not the demo's business.
    const { key } = await newApp(s);
    const foreign = await userToken(s, key, "fay");
    const r = await fetch(`${s.base}/demo/api/conversations`, { headers: { authorization: `Bearer ${foreign}` } });
    expect(r.status).toBe(404);
    const r2 = await post("/demo/api/direct", { with: "fay" }, foreign);
    expect(r2.status).toBe(404);
  });
});
