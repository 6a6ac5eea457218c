// The demo page the starling binary embeds (src/demo/) must be a build of sdk-typescript/demo.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without types
import { buildDemo, OUT_DIR } from "../../scripts/build-demo.mjs";

describe("demo bundle", () => {
  it("the committed src/demo files are what the build makes (run `npm run build:demo` if not)", async () => {
    const files: Record<string, string> = await buildDemo();
    expect(Object.keys(files).sort()).toEqual(["demo.js"]);
    for (const [name, text] of Object.entries(files)) {
      expect(readFileSync(join(OUT_DIR, name), "utf8") === text, `src/demo/${name} is stale`).toBe(true);
    }
    expect(files["demo.js"]).toContain("/v1/connect?token=");
  });
});
