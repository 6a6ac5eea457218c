// Runs a real `starling standalone` for the integration and browser tests: a temp data dir,
// a free loopback port, the demo enabled. The binary is STARLING_BIN, or built with cargo
// (scripts/sdk-test.sh builds it and sets STARLING_BIN).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(__dirname, "..", "..", "..");

export function starlingBin(): string {
  if (process.env.STARLING_BIN) return process.env.STARLING_BIN;
  const out = execFileSync("cargo", ["build", "-q", "-p", "starling", "--bin", "starling", "--message-format=json"], {
    cwd: repo,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 * 1024 * 1024,
  });
  const exe = out
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((v) => v.reason === "compiler-artifact" && v.target?.name === "starling" && v.executable)
    .map((v) => v.executable as string)
    .pop();
  if (!exe) throw new Error("cargo did not report the starling executable");
  process.env.STARLING_BIN = exe;
  return exe;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? res(a.port) : rej(new Error("no port"))));
    });
  });
}

export class Standalone {
  proc: ChildProcess | null = null;
  log: string[] = [];
  readonly dataDir = mkdtempSync(join(tmpdir(), "starling-sdk-"));
  port = 0;

  /** `demo`: serve the demo page (`[demo] enabled`). */
  constructor(readonly opts: { demo: boolean } = { demo: true }) {}

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts (or restarts, on the same port and data) and waits until it answers. */
  async start(): Promise<void> {
    if (!this.port) this.port = await freePort();
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("STARLING_")) env[k] = v;
    env.STARLING_DEMO__ENABLED = String(this.opts.demo);
    env.RUST_LOG = "warn";
    const p = spawn(starlingBin(), ["standalone", "--data-dir", this.dataDir, "--listen", `127.0.0.1:${this.port}`], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = p;
    p.stdout!.on("data", (d) => this.log.push(String(d)));
    p.stderr!.on("data", (d) => this.log.push(String(d)));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`starling exited (${p.exitCode}):\n${this.log.join("")}`);
      try {
        const r = await fetch(`${this.base}/readyz`);
        if (r.ok) return;
      } catch {
        /* not yet */
      }
      if (Date.now() > deadline) throw new Error(`starling not ready in 60 s:\n${this.log.join("")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Ctrl-C, and wait for the exit. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGINT");
    const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(t);
    this.proc = null;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  operatorToken(): string {
    const m = readFileSync(join(this.dataDir, "secrets.toml"), "utf8").match(/operator_token = "([^"]+)"/);
    if (!m) throw new Error("no operator token in secrets.toml");
    return m[1];
  }

  /** JSON request; throws with the body on an unexpected status. */
  async call<T = any>(method: string, path: string, token: string, body?: unknown, expect = [200, 201]): Promise<T> {
    const r = await fetch(`${this.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!expect.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : (undefined as T);
  }
}

/** A tenant, an app and a server API key, made through the admin API as the README does. */
export async function newApp(s: Standalone): Promise<{ key: string; appId: string }> {
  const op = s.operatorToken();
  const t = await s.call("POST", "/admin/v1/tenants", op, { name: `sdk-${Date.now()}` });
  const a = await s.call("POST", `/admin/v1/tenants/${t.id}/apps`, op, { name: "SDK tests" });
  const k = await s.call("POST", `/admin/v1/tenants/${t.id}/apps/${a.id}/api-keys`, op, {
    name: "backend",
    scopes: ["server_full"],
  });
  return { key: k.secret, appId: a.id };
}

/** Creates a user of the app and mints a user token (server API, as a customer's backend). */
export async function userToken(s: Standalone, key: string, user: string): Promise<string> {
  await s.call("PUT", `/v1/users/${user}`, key, { name: user });
  return (await s.call("POST", `/v1/users/${user}/tokens`, key, {})).token;
}
