#!/usr/bin/env bash
#
# scripts/sdk-test.sh — tests of the TypeScript SDK (sdk-typescript/) and the demo page.
# scripts/test runs it as its `sdk` step; it also runs alone.
#
# What it does (installing what is missing):
#   1. Node.js and npm (Debian's), and Debian's Chromium (/usr/bin/chromium; CHROMIUM_PATH
#      overrides) for the browser tests;
#   2. `npm ci` in sdk-typescript/ from the committed package-lock.json, with npm's cache in
#      ${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}/npm-cache;
#   3. builds the starling binary with cargo (the tests start `starling standalone` from it);
#   4. drift checks: the generated protocol types against sdk-specs/asyncapi/schemas, the
#      committed demo bundle (src/demo/) against a build of sdk-typescript/demo;
#      then tsc (type check, and the package build into dist/);
#   5. vitest: unit tests, integration tests against a real standalone, and the browser tests
#      (playwright-core driving headless Chromium; screenshots in
#      ${STARLING_ARTIFACTS_DIR:-target/sdk-artifacts});
#   6. prints the SDK's bundle size (minified and gzipped).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd -P)
# shellcheck source=scripts/services.sh
source "$REPO_ROOT/scripts/services.sh"

TOOLS_DIR=${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}
export STARLING_ARTIFACTS_DIR=${STARLING_ARTIFACTS_DIR:-$REPO_ROOT/target/sdk-artifacts}
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}

if ! command -v npm >/dev/null 2>&1; then
    echo "==> [sdk] node/npm not found, installing them with apt"
    _svc_apt_install nodejs npm
fi
if [ ! -x "$CHROMIUM_PATH" ]; then
    echo "==> [sdk] $CHROMIUM_PATH not found, installing Debian's chromium with apt"
    _svc_apt_install chromium
fi
echo "==> [sdk] node $(node --version), npm $(npm --version), $("$CHROMIUM_PATH" --version 2>/dev/null || echo chromium)"

cd "$REPO_ROOT/sdk-typescript"
echo "==> [sdk] npm ci"
npm ci --cache "$TOOLS_DIR/npm-cache" --prefer-offline --no-audit --no-fund --loglevel=error

echo "==> [sdk] building the starling binary"
STARLING_BIN=$(cd "$REPO_ROOT" && cargo build -q --locked -p starling --bin starling --message-format=json \
    | node -e '
        let exe = "";
        require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
            try {
                const v = JSON.parse(l);
                if (v.reason === "compiler-artifact" && v.target && v.target.name === "starling" && v.executable) exe = v.executable;
            } catch {}
        }).on("close", () => { if (!exe) process.exit(1); console.log(exe); });')
export STARLING_BIN
echo "==> [sdk] STARLING_BIN=$STARLING_BIN"

echo "==> [sdk] drift: generated types and the committed demo bundle"
npm run -s check:types
npm run -s build:demo -- --check
echo "==> [sdk] tsc"
npm run -s typecheck
npm run -s build

echo "==> [sdk] vitest: unit, integration, browser"
npx vitest run --project unit --project integration --project browser

node scripts/build-demo.mjs --size
echo "==> [sdk] screenshots in $STARLING_ARTIFACTS_DIR"
