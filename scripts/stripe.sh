#!/usr/bin/env bash
# shellcheck shell=bash
#
# scripts/stripe.sh — stripe-mock and Stripe's official Node library for the billing tests.
# Sourced by scripts/test (after services.sh, for _svc_* helpers). Functions:
#
#   ensure_stripe_mock       builds stripe-mock with `go install` into
#                            ${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}/go-bin if missing
#                            (Go from the PATH, /usr/local/go/bin, or Debian's golang-go)
#   start_stripe_mock DIR    starts it on a free loopback port; exports TEST_STRIPE_MOCK_URL
#   stop_stripe_mock         stops it
#   ensure_stripe_node       installs the `stripe` npm package into the tools dir's node/ (the
#                            tests sign webhook payloads with it); exports TEST_STRIPE_NODE_PATH
#
# stripe-mock is a stateless Stripe API (it validates requests against Stripe's OpenAPI spec
# and answers with fixtures); it sends no webhooks, so the tests sign their own with Stripe's
# library.

STRIPE_MOCK_VERSION=v0.197.0
STRIPE_NODE_VERSION=23.1.0
_STARLING_STRIPE_MOCK_PID=

_stripe_tools_dir() { echo "${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}"; }

ensure_stripe_mock() {
    local bin_dir version_file
    bin_dir="$(_stripe_tools_dir)/go-bin"
    version_file="$bin_dir/stripe-mock.version"
    if [ -x "$bin_dir/stripe-mock" ] && [ "$(cat "$version_file" 2>/dev/null)" = "$STRIPE_MOCK_VERSION" ]; then
        return 0
    fi
    local go=go
    if ! command -v go >/dev/null 2>&1; then
        if [ -x /usr/local/go/bin/go ]; then
            go=/usr/local/go/bin/go
        else
            _svc_log "go not found, installing golang-go with apt"
            _svc_apt_install golang-go || return 1
        fi
    fi
    _svc_log "building stripe-mock $STRIPE_MOCK_VERSION into $bin_dir (go install)"
    mkdir -p "$bin_dir" || return 1
    if ! GOBIN="$bin_dir" "$go" install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"; then
        _svc_err "go install github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION failed"
        return 1
    fi
    echo "$STRIPE_MOCK_VERSION" >"$version_file"
}

start_stripe_mock() {
    local dir=${1:?usage: start_stripe_mock DIR}
    local port https_port log="$dir/stripe-mock.log" i
    mkdir -p "$dir" || return 1
    port=$(_svc_free_port) || return 1
    https_port=$(_svc_free_port) || return 1
    _svc_log "starting stripe-mock on 127.0.0.1:$port"
    "$(_stripe_tools_dir)/go-bin/stripe-mock" -http-addr "127.0.0.1:$port" \
        -https-addr "127.0.0.1:$https_port" >"$log" 2>&1 &
    _STARLING_STRIPE_MOCK_PID=$!
    for i in $(seq 1 60); do
        if curl -s -o /dev/null -u sk_test_starling: "http://127.0.0.1:$port/v1/customers/cus_x"; then
            break
        fi
        if [ "$i" -eq 60 ] || ! kill -0 "$_STARLING_STRIPE_MOCK_PID" 2>/dev/null; then
            _svc_err "stripe-mock did not answer on port $port"
            _svc_log_tail "$log"
            return 1
        fi
        sleep 0.5
    done
    export TEST_STRIPE_MOCK_URL="http://127.0.0.1:$port"
    _svc_log "stripe-mock ready: $TEST_STRIPE_MOCK_URL"
}

stop_stripe_mock() {
    local pid=${_STARLING_STRIPE_MOCK_PID:-} i
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        _svc_log "stopping stripe-mock"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    _STARLING_STRIPE_MOCK_PID=
    return 0
}

ensure_stripe_node() {
    local dir pkg
    dir="$(_stripe_tools_dir)/node"
    pkg="$dir/node_modules/stripe/package.json"
    if ! command -v npm >/dev/null 2>&1; then
        _svc_log "node/npm not found, installing them with apt"
        _svc_apt_install nodejs npm || return 1
    fi
    if ! node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
        "$pkg" "$STRIPE_NODE_VERSION" >/dev/null 2>&1; then
        _svc_log "installing stripe@$STRIPE_NODE_VERSION (npm) into $dir"
        mkdir -p "$dir" || return 1
        npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
            "stripe@$STRIPE_NODE_VERSION" >/dev/null || return 1
    fi
    export TEST_STRIPE_NODE_PATH="$dir/node_modules"
}
