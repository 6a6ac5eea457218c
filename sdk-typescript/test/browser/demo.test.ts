// The demo page in a real browser: Debian's Chromium driven by playwright-core, headless.
// Two users in two isolated browser contexts chat; the test checks order, unread counts,
// typing, read receipts, and that both pages recover after the server restarts.
// Screenshots go to $STARLING_ARTIFACTS_DIR (default <repo>/target/sdk-artifacts).
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Standalone } from "../helpers/starling.js";

const artifacts = process.env.STARLING_ARTIFACTS_DIR ?? resolve(__dirname, "..", "..", "..", "target", "sdk-artifacts");
const s = new Standalone();
let browser: Browser;
const pages: [string, Page][] = [];

// What this machine needs for Chromium as root with no network but loopback.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

beforeAll(async () => {
  mkdirSync(artifacts, { recursive: true });
  await s.start();
  // Playwright gives each launch a fresh --user-data-dir of its own.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
  });
});

afterEach(async (ctx) => {
  // On failure: what each page showed, and the server's log.
  if (ctx.task.result?.state === "fail") {
    for (const [user, page] of pages) {
      await page.screenshot({ path: join(artifacts, `failure-${user}.png`) }).catch(() => {});
      console.error(`[${user}] #status=${await page.textContent("#status").catch(() => "?")}`);
    }
    console.error(`starling log:\n${s.log.join("").slice(-5000)}`);
  }
});

afterAll(async () => {
  await browser?.close();
  await s.dispose();
});

async function open(user: string, name: string): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error:`, e));
  pages.push([user, page]);
  await page.goto(`${s.base}/demo`);
  await page.fill("#login-user", user);
  await page.fill("#login-name", name);
  await page.click("#login-go");
  await expect.poll(() => page.textContent("#status")).toBe("connected");
  await page.locator("#me", { hasText: user }).waitFor();
  return page;
}

const texts = (p: Page) => p.locator("#messages .msg .text").allTextContents();

async function send(p: Page, text: string) {
  await p.fill("#text", text);
  await p.press("#text", "Enter");
}

describe("demo page in Chromium", () => {
  it("two users chat in real time, with unread counts, typing and read receipts, across a server restart", async () => {
    const alice = await open("alice", "Alice");
    const bob = await open("bob", "Bob");

    // Alice opens a direct chat with Bob and writes before Bob looks.
    await alice.locator('#people .person[data-id="bob"]').click();
    await alice.locator("#chat-title", { hasText: "alice & bob" }).waitFor();
    await send(alice, "Hi Bob!");
    await send(alice, "Are you there?");
    await expect.poll(() => texts(alice)).toEqual(["Hi Bob!", "Are you there?"]);

    // Bob sees the conversation with 2 unread.
    const row = bob.locator("#convs .conv", { hasText: "alice & bob" });
    await row.locator(".unread", { hasText: "2" }).waitFor({ timeout: 10_000 });
    await bob.screenshot({ path: join(artifacts, "demo-bob-unread.png") });
    await row.click();
    await expect.poll(() => texts(bob)).toEqual(["Hi Bob!", "Are you there?"]);
    await expect(row.locator(".unread").count()).resolves.toBe(0);

    // Alice gets Bob's read receipt on her messages.
    await alice.locator(".msg.mine .receipt", { hasText: "read by bob" }).last().waitFor({ timeout: 10_000 });

    // Bob types: Alice sees it; Bob answers.
    await bob.locator("#text").pressSequentially("Yes, ", { delay: 20 });
    await alice.locator("#typing", { hasText: "bob is typing" }).waitFor({ timeout: 10_000 });
    await alice.screenshot({ path: join(artifacts, "demo-alice-typing.png") });
    await bob.fill("#text", "Yes, here!");
    await bob.press("#text", "Enter");
    for (let i = 1; i <= 3; i++) {
      await send(alice, `ping ${i}`);
      // Bob answers what he saw: without this wait, under load his pong could commit first.
      await expect.poll(() => texts(bob)).toHaveLength(2 + 2 * i);
      await send(bob, `pong ${i}`);
      await expect.poll(() => texts(alice)).toHaveLength(3 + 2 * i);
    }
    const expected = ["Hi Bob!", "Are you there?", "Yes, here!", "ping 1", "pong 1", "ping 2", "pong 2", "ping 3", "pong 3"];
    await expect.poll(() => texts(alice)).toEqual(expected);
    await expect.poll(() => texts(bob)).toEqual(expected);
    // Seq order on the page is the server's order.
    const seqs = await alice.locator("#messages .msg").evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.seq)));
    expect(seqs).toEqual(expected.map((_, i) => i + 1));
    // The README's picture: history with receipts, Bob typing, an unread room message.
    await send(bob, "See you at the standup");
    await expect.poll(() => texts(alice)).toHaveLength(expected.length + 1);
    expected.push("See you at the standup");
    await bob.locator("#convs .conv", { hasText: "Lobby" }).click();
    await send(bob, "Morning, everyone!");
    await bob.locator("#convs .conv", { hasText: "alice & bob" }).click();
    await alice.locator("#convs .conv", { hasText: "Lobby" }).locator(".unread", { hasText: "1" }).waitFor();
    await bob.locator("#text").pressSequentially("On my way", { delay: 20 });
    await alice.locator("#typing", { hasText: "bob is typing" }).waitFor({ timeout: 10_000 });
    await alice.locator(".msg.mine .receipt", { hasText: "read by bob" }).last().waitFor({ timeout: 10_000 });
    await alice.screenshot({ path: join(artifacts, "demo.png") });
    await bob.fill("#text", "");

    // The server restarts: both pages notice, reconnect by themselves and carry on.
    await s.stop();
    await expect.poll(() => alice.textContent("#status"), { timeout: 15_000 }).not.toBe("connected");
    await expect.poll(() => bob.textContent("#status"), { timeout: 15_000 }).not.toBe("connected");
    await send(alice, "sent while the server was down");
    await s.start();
    await expect.poll(() => alice.textContent("#status"), { timeout: 30_000 }).toBe("connected");
    await expect.poll(() => bob.textContent("#status"), { timeout: 30_000 }).toBe("connected");
    await send(bob, "back again");
    const after = [...expected, "sent while the server was down", "back again"];
    await expect.poll(() => texts(bob), { timeout: 20_000 }).toEqual(after);
    await expect.poll(() => texts(alice), { timeout: 20_000 }).toEqual(after);
    await alice.locator(".msg.mine .receipt", { hasText: "read by bob" }).last().waitFor({ timeout: 10_000 });
    await alice.screenshot({ path: join(artifacts, "demo-alice-after-restart.png") });
    await bob.screenshot({ path: join(artifacts, "demo-bob-after-restart.png") });
  });
});
