# shellcheck shell=bash
#
# scripts/services.sh — helpers to bring up throw-away PostgreSQL and Redis
# instances for the test suite.
#
# This file is meant to be *sourced*, not executed:
#
#     source scripts/services.sh
#     ensure_postgres; ensure_redis
#     start_postgres "$tmpdir"; start_redis "$tmpdir"
#     ...                      # TEST_DATABASE_URL / TEST_REDIS_URL are exported
#     stop_services
#
# Design notes:
#   * Every instance lives entirely inside the directory passed to start_*,
#     listens on 127.0.0.1 only, on a free port picked at start-up, so several
#     test runs (and any system-wide PostgreSQL/Redis) can coexist.
#   * PostgreSQL refuses to run as root. When we are root, initdb/pg_ctl are run
#     as the `postgres` system user via `runuser`, and the data dir is chown'ed.
#   * Durability is switched off (fsync, synchronous_commit, full_page_writes):
#     the data is thrown away after the run anyway, and it makes tests faster.
#   * stop_services is idempotent and never fails, so it is safe in a trap.
#
# Variables set by these functions:
#   PG_BIN              directory holding initdb/pg_ctl/pg_isready (ensure_postgres)
#   TEST_DATABASE_URL   postgres://postgres@127.0.0.1:PORT/postgres (start_postgres)
#   TEST_REDIS_URL      redis://127.0.0.1:PORT/                       (start_redis)

set -euo pipefail

# Internal state used by stop_services (empty = nothing running).
_STARLING_PG_DATA="${_STARLING_PG_DATA:-}"
_STARLING_REDIS_PIDFILE="${_STARLING_REDIS_PIDFILE:-}"
_STARLING_APT_UPDATED="${_STARLING_APT_UPDATED:-}"

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

# Progress output. Everything user-visible starts with "==>".
_svc_log() { echo "==> $*"; }
_svc_err() { echo "==> ERROR: $*" >&2; }

# Are we root? (PostgreSQL needs to be run as another user in that case.)
_svc_is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly if we are root, via sudo otherwise.
_svc_as_root() {
    if _svc_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        _svc_err "need root (or sudo) to run: $*"
        return 1
    fi
}

# Install Debian packages with apt-get. `apt-get update` is only run once per
# shell, even if several ensure_* functions need to install something.
_svc_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        _svc_err "apt-get not found; please install manually: $*"
        return 1
    fi
    local started=$SECONDS log
    # apt/dpkg are chatty even with -qq: keep their output in a log file and
    # only show it if something goes wrong.
    log=$(mktemp "${TMPDIR:-/tmp}/starling-apt.XXXXXX") || return 1
    if [ -z "$_STARLING_APT_UPDATED" ]; then
        _svc_log "apt-get update"
        if ! _svc_as_root apt-get update -qq >"$log" 2>&1; then
            _svc_err "apt-get update failed"
            _svc_log_tail "$log"; rm -f "$log"
            return 1
        fi
        _STARLING_APT_UPDATED=1
    fi
    _svc_log "apt-get install $* (takes a little while)"
    # Note: on a host with a working init system, Debian's postinst scripts
    # also start a system-wide service (postgresql@NN-main on 5432,
    # redis-server on 6379). We never use those; our instances use free ports.
    # (In containers, /usr/sbin/policy-rc.d usually prevents that start.)
    if ! _svc_as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq "$@" >"$log" 2>&1; then
        _svc_err "apt-get install $* failed"
        _svc_log_tail "$log"; rm -f "$log"
        return 1
    fi
    rm -f "$log"
    _svc_log "installed $* in $((SECONDS - started))s"
}

# Run a command as the PostgreSQL user: `postgres` via runuser when we are
# root (postgres refuses to run as root), unchanged otherwise. The command runs
# from / so the postgres user never trips over an unreadable working directory.
_svc_as_pg() {
    if _svc_is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Print a free TCP port on 127.0.0.1. Uses python3 (bind to port 0 and let the
# kernel choose); falls back to probing random ports with bash's /dev/tcp.
# There is an inherent small race between picking and binding; we start each
# service right after picking its port, which keeps it negligible.
_svc_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'PY' && return 0
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
    fi
    local port i
    for i in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        # If connecting fails, nobody is listening there: take it.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    _svc_err "could not find a free TCP port"
    return 1
}

# Print the last lines of a log file to stderr (used on start-up failures).
_svc_log_tail() {
    local file=$1
    if [ -f "$file" ]; then
        echo "==> last lines of $file:" >&2
        tail -n 40 "$file" >&2 || true
    else
        echo "==> (no log file at $file)" >&2
    fi
}

# ---------------------------------------------------------------------------
# Installation checks
# ---------------------------------------------------------------------------

# Find the PostgreSQL server binaries, installing them with apt if missing.
# Sets and exports PG_BIN. Search order:
#   1. $PG_BIN if it is already set and contains initdb,
#   2. `initdb` on PATH (symlinks are resolved, so PG_BIN is the real bin dir),
#   3. the newest /usr/lib/postgresql/<version>/bin (Debian's layout; note
#      Debian does NOT put initdb/pg_ctl on PATH by default).
_svc_find_pg_bin() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        echo "$PG_BIN"
        return 0
    fi
    local initdb
    if initdb=$(command -v initdb 2>/dev/null); then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    local dir
    # sort -V so that e.g. 16 sorts after 9.6.
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin \
              2>/dev/null | sort -V | while read -r d; do
                  [ -x "$d/initdb" ] && echo "$d"
              done | tail -n 1) || true
    if [ -n "$dir" ]; then
        echo "$dir"
        return 0
    fi
    return 1
}

ensure_postgres() {
    local bin
    if ! bin=$(_svc_find_pg_bin); then
        _svc_log "PostgreSQL (initdb) not found, installing it with apt"
        _svc_apt_install postgresql || return 1
        if ! bin=$(_svc_find_pg_bin); then
            _svc_err "postgresql installed but initdb still not found"
            return 1
        fi
    fi
    export PG_BIN=$bin
    _svc_log "using PostgreSQL from $PG_BIN ($("$PG_BIN/postgres" --version 2>/dev/null || echo '?'))"
    if _svc_is_root && ! id postgres >/dev/null 2>&1; then
        # Only possible with a non-Debian PostgreSQL install: we need an
        # unprivileged account to run the server as.
        _svc_log "creating system user 'postgres' (needed to run postgres as root)"
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres || return 1
    fi
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        _svc_log "redis-server not found, installing it with apt"
        # redis-server depends on redis-tools, which provides redis-cli.
        _svc_apt_install redis-server || return 1
    fi
    _svc_log "using $(redis-server --version 2>/dev/null | head -n 1)"
}

ensure_rust_tools() {
    if ! command -v cargo >/dev/null 2>&1; then
        # rustup installs into ~/.cargo but only edits shell rc files, which
        # non-interactive shells (CI, hooks) do not read.
        local env_file="${CARGO_HOME:-$HOME/.cargo}/env"
        if [ -f "$env_file" ]; then
            # shellcheck disable=SC1090
            . "$env_file"
        fi
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        _svc_err "cargo not found on PATH (nor in ${CARGO_HOME:-$HOME/.cargo}/bin)."
        cat >&2 <<'EOF'
==> Install the Rust toolchain with rustup, then re-run:
==>     curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
==>     . "$HOME/.cargo/env"
==> (the "default" profile includes rustfmt and clippy)
EOF
        return 1
    fi
    _svc_log "using $(cargo --version)"
}

# ---------------------------------------------------------------------------
# Start / stop
# ---------------------------------------------------------------------------

# start_postgres DIR — create a fresh cluster in DIR/pg and start it.
# Exports TEST_DATABASE_URL. Requires ensure_postgres to have run (PG_BIN).
start_postgres() {
    local dir=${1:?usage: start_postgres DIR}
    : "${PG_BIN:?PG_BIN not set; call ensure_postgres first}"
    local data="$dir/pg" log="$dir/pg.log" port

    mkdir -p "$data" || return 1
    : >"$log" || return 1
    if _svc_is_root; then
        # The postgres user must own the data dir + log and be able to reach
        # them: mktemp -d creates 0700 dirs, so open DIR for traversal.
        chmod a+x "$dir" || return 1
        chown postgres: "$data" "$log" || return 1
        if ! _svc_as_pg test -w "$data"; then
            _svc_err "user postgres cannot write to $data (is a parent directory of $dir private? use a dir under /tmp)"
            return 1
        fi
    fi
    chmod 0700 "$data" || return 1

    # The Unix socket lives in the data dir; its path is limited to ~107 bytes.
    port=$(_svc_free_port) || return 1
    if [ $(( ${#data} + 20 )) -gt 107 ]; then
        _svc_err "socket path under $data is too long for a Unix socket; use a shorter temp dir (TMPDIR)"
        return 1
    fi

    _svc_log "initdb $data"
    # --no-sync: no need to fsync a throw-away cluster. Locale C keeps the
    # result independent of the caller's LANG (which may not be installed).
    if ! _svc_as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        _svc_err "initdb failed"
        _svc_log_tail "$dir/initdb.log"
        return 1
    fi

    _svc_log "starting PostgreSQL on 127.0.0.1:$port"
    # Remember the data dir *before* starting, so stop_services can clean up
    # even if the start is only half successful.
    _STARLING_PG_DATA=$data
    if ! _svc_as_pg "$PG_BIN/pg_ctl" -D "$data" \
            -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c synchronous_commit=off -c full_page_writes=off" \
            -l "$log" -w -t 30 start >/dev/null; then
        _svc_err "pg_ctl start failed"
        _svc_log_tail "$log"
        return 1
    fi

    # pg_ctl -w already waits, but double-check over TCP (what tests use),
    # for at most ~30s.
    local i
    for i in $(seq 1 60); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            break
        fi
        if [ "$i" -eq 60 ]; then
            _svc_err "PostgreSQL did not become ready on port $port within 30s"
            _svc_log_tail "$log"
            return 1
        fi
        sleep 0.5
    done
    # And make sure we can actually log in and run a query.
    if ! "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'select 1' >/dev/null; then
        _svc_err "PostgreSQL is up but 'select 1' failed"
        _svc_log_tail "$log"
        return 1
    fi

    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    _svc_log "PostgreSQL ready: $TEST_DATABASE_URL"
}

# start_redis DIR — start a non-persistent redis-server with its files in DIR.
# Exports TEST_REDIS_URL.
start_redis() {
    local dir=${1:?usage: start_redis DIR}
    local port pidfile="$dir/redis.pid" log="$dir/redis.log"
    mkdir -p "$dir" || return 1
    port=$(_svc_free_port) || return 1

    _svc_log "starting Redis on 127.0.0.1:$port"
    _STARLING_REDIS_PIDFILE=$pidfile
    # --save "" / --appendonly no: no persistence at all.
    if ! redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --daemonize yes --pidfile "$pidfile" --logfile "$log" --dir "$dir"; then
        _svc_err "redis-server failed to start"
        _svc_log_tail "$log"
        return 1
    fi

    # Wait (max ~30s) until it answers PING.
    local i reply
    for i in $(seq 1 60); do
        reply=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)
        if [ "$reply" = "PONG" ]; then
            break
        fi
        if [ "$i" -eq 60 ]; then
            _svc_err "Redis did not answer PING on port $port within 30s"
            _svc_log_tail "$log"
            return 1
        fi
        sleep 0.5
    done

    export TEST_REDIS_URL="redis://127.0.0.1:$port/"
    _svc_log "Redis ready: $TEST_REDIS_URL"
}

# Is PID alive? (kill -0 works for processes owned by other users when root.)
_svc_alive() { kill -0 "$1" 2>/dev/null; }

# stop_services — stop whatever start_postgres/start_redis started.
# Idempotent and never fails (safe to call from an EXIT trap, more than once).
stop_services() {
    local data=${_STARLING_PG_DATA:-} pidfile=${_STARLING_REDIS_PIDFILE:-} pid i

    if [ -n "$data" ] && [ -f "$data/postmaster.pid" ]; then
        _svc_log "stopping PostgreSQL"
        # Immediate mode: no checkpoint, we are throwing the data away.
        _svc_as_pg "${PG_BIN:-}/pg_ctl" -D "$data" -m immediate -w -t 15 stop \
            >/dev/null 2>&1 || true
        # If pg_ctl could not do it (e.g. PG_BIN unset), kill the postmaster.
        if [ -f "$data/postmaster.pid" ]; then
            pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
            if [ -n "$pid" ] && _svc_alive "$pid"; then
                kill -QUIT "$pid" 2>/dev/null || true   # QUIT = immediate shutdown
                for i in $(seq 1 20); do _svc_alive "$pid" || break; sleep 0.25; done
                if _svc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
            fi
        fi
    fi
    _STARLING_PG_DATA=

    if [ -n "$pidfile" ] && [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
        # Guard against PID reuse: only kill it if it still is a redis-server.
        if [ -n "$pid" ] && _svc_alive "$pid" \
                && grep -q redis "/proc/$pid/comm" 2>/dev/null; then
            _svc_log "stopping Redis"
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 20); do _svc_alive "$pid" || break; sleep 0.25; done
            if _svc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    _STARLING_REDIS_PIDFILE=

    return 0
}
