// Builds the demo page's script into ../src/demo/demo.js, which the starling binary embeds:
// running standalone needs no npm, and the built file is committed. The page's HTML is not built:
// the binary embeds sdk-typescript/demo/index.html itself.
//
//   node scripts/build-demo.mjs          build and write
//   node scripts/build-demo.mjs --check  exit 1 when the committed files differ from a build
//   node scripts/build-demo.mjs --size   print the sizes of the SDK alone and of the demo bundle
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, "..");
export const OUT_DIR = join(pkg, "..", "src", "demo");

const common = {
  bundle: true,
  minify: true,
  write: false,
  target: "es2020",
  legalComments: "none",
  charset: "utf8",
  logLevel: "silent",
};

/** The demo page's files, as the build makes them. */
export async function buildDemo() {
  const r = await esbuild.build({
    ...common,
    entryPoints: [join(pkg, "demo", "main.ts")],
    format: "iife",
  });
  return { "demo.js": r.outputFiles[0].text };
}

/** Minified and gzipped sizes (bytes) of the SDK alone, as an app would bundle it. */
export async function sdkSize() {
  const r = await esbuild.build({
    ...common,
    entryPoints: [join(pkg, "src", "index.ts")],
    format: "esm",
  });
  const bytes = r.outputFiles[0].contents;
  return { minified: bytes.length, gzipped: gzipSync(bytes, { level: 9 }).length };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = await buildDemo();
  if (process.argv.includes("--size")) {
    const s = await sdkSize();
    const demo = Buffer.from(files["demo.js"]);
    console.log(`SDK (src/index.ts, esm, minified): ${s.minified} bytes, gzipped: ${s.gzipped} bytes`);
    console.log(`demo.js (SDK + page, minified): ${demo.length} bytes, gzipped: ${gzipSync(demo, { level: 9 }).length} bytes`);
  } else if (process.argv.includes("--check")) {
    let drift = false;
    for (const [name, text] of Object.entries(files)) {
      let old = "";
      try { old = readFileSync(join(OUT_DIR, name), "utf8"); } catch {}
      if (old !== text) { console.error(`drift: src/demo/${name} differs from a build of sdk-typescript/demo; run npm run build:demo`); drift = true; }
    }
    process.exit(drift ? 1 : 0);
  } else {
    mkdirSync(OUT_DIR, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(OUT_DIR, name), text);
  }
}
