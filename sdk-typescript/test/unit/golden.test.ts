// Drift between the SDK and the server's protocol:
// 1. src/generated/*.ts must be what scripts/gen-types.mjs makes of sdk-specs/asyncapi/schemas/;
// 2. every golden frame in sdk-specs/asyncapi/examples/ must type-check against the SDK's types
//    (an excess or missing field, or a wrong type, is a compile error), and the check must
//    catch a frame that is wrong.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without types
import { generate } from "../../scripts/gen-types.mjs";

const root = resolve(__dirname, "..", "..");
const examples = resolve(root, "..", "sdk-specs", "asyncapi", "examples");

function typeFor(file: string): string {
  const name = file.replace(/\.json$/, "");
  if (name.startsWith("client-")) return "ClientFrame";
  if (name.startsWith("event-")) return "Event";
  if (name === "server-hello") return "HelloFrame";
  if (name.startsWith("server-error")) return "ErrorFrame";
  if (name === "server-resync") return "ResyncFrame";
  const ack = name.match(/^server-ack-(\w+)$/);
  if (ack) return `TypedAck<"${ack[1]}">`;
  throw new Error(`no SDK type known for golden frame ${file}`);
}

/** Type-checks `const x: T = <frame>` for each frame; returns the diagnostics' text. */
function typecheck(frames: [string, string, unknown][]): string[] {
  const dir = mkdtempSync(join(root, "test", ".golden-"));
  try {
    const lines = [`import type { ClientFrame, Event, HelloFrame, ErrorFrame, ResyncFrame, TypedAck } from "../../src/index.js";`];
    frames.forEach(([file, type, frame], i) => {
      lines.push(`// ${file}`, `export const f${i}: ${type} = ${JSON.stringify(frame, null, 2)};`);
    });
    const path = join(dir, "golden.ts");
    writeFileSync(path, lines.join("\n"));
    const program = ts.createProgram([path], {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      skipLibCheck: true,
      types: [],
    });
    return ts
      .getPreEmitDiagnostics(program)
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("protocol types", () => {
  it("src/generated matches the JSON Schemas (run `npm run gen:types` if not)", async () => {
    const files: Record<string, string> = await generate();
    expect(Object.keys(files).length).toBe(3);
    for (const [name, text] of Object.entries(files)) {
      expect(readFileSync(join(root, "src", "generated", name), "utf8"), name).toBe(text);
    }
  });

  it("every golden frame type-checks against the SDK's types", () => {
    const files = readdirSync(examples).filter((f) => f.endsWith(".json")).sort();
    expect(files.length).toBeGreaterThan(30);
    const frames = files.map(
      (f) => [f, typeFor(f), JSON.parse(readFileSync(join(examples, f), "utf8"))] as [string, string, unknown],
    );
    // Every request type has an ack example, and the SDK types its result.
    for (const t of ["send", "edit", "react", "read", "subscribe", "unsubscribe", "sync", "ping"]) {
      expect(files, t).toContain(`server-ack-${t}.json`);
    }
    expect(typecheck(frames)).toEqual([]);
  });

  it("a frame that differs from the types is caught", () => {
    const event = JSON.parse(readFileSync(join(examples, "event-read.json"), "utf8"));
    const ack = JSON.parse(readFileSync(join(examples, "server-ack-sync.json"), "utf8"));
    const errors = typecheck([
      ["extra field", "Event", { ...event, unknown_field: 1 }],
      ["wrong type", "Event", { ...event, seq: "3" }],
      ["ack result", 'TypedAck<"sync">', { ...ack, result: { messages: [] } }],
    ]);
    expect(errors.length).toBe(3);
  });
});
