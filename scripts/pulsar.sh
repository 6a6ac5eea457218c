# shellcheck shell=bash
#
# scripts/pulsar.sh — helpers to run a throw-away Apache Pulsar "standalone"
# (broker + one bookie + RocksDB metadata, all in one JVM) for the test suite.
#
# This file is meant to be *sourced*, not executed:
#
#     source scripts/pulsar.sh
#     ensure_pulsar                 # fetch the jars once (cached), check Java
#     start_pulsar "$tmpdir"        # TEST_PULSAR_URL / _ADMIN_URL / _CA_FILE / _ADMIN_TOKEN / _TOKEN_SECRET
#     pulsar_mint_token cell-a      # a token of role "cell-a" for this broker
#     ...
#     stop_pulsar                   # idempotent, never fails (use in a trap)
#
# scripts/pulsar/run-standalone does exactly that for developers.
#
# How Pulsar is obtained: there is no Pulsar tarball to download here, so the
# broker is assembled from Maven Central. scripts/pulsar/pom.xml lists
# pulsar-broker + pulsar-package-filesystem-storage + log4j, and
# maven-dependency-plugin copies every runtime jar into one lib dir, cached
# outside the repository:
#     ${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}/pulsar-$PULSAR_VERSION/lib
# (~320 jars, ~235 MB; ~/.m2 is reused too). Once that dir is complete, Maven is
# not even needed. The JVM is then started directly with
# org.apache.pulsar.PulsarStandaloneStarter, like Pulsar's `bin/pulsar
# standalone` does, with a generated minimal standalone.conf and log4j2 config.
#
# What was verified on Debian 12 / OpenJDK 17 / Maven 3.8.7 / 2 cores:
#   * Version: 4.0.7. The Maven Central we reach serves only part of the
#     artifacts: for 4.0.8 (newest 4.0.x listed) jetcd-core-shaded and
#     pulsar-opentelemetry are missing; 4.0.7 resolves completely.
#   * Pulsar's parent pom declares the repositories packages.confluent.io and
#     maven.restlet.talend.com (unreachable); pom.xml overrides them by id so
#     Maven asks Central only (otherwise a missing artifact ends in a confusing
#     "Unknown host packages.confluent.io").
#   * No log4j2 config ships in the jars (Pulsar's lives in its tarball's
#     conf/), so we generate one: without it log4j only prints errors.
#   * The JVM runs with its cwd and java.io.tmpdir inside DIR: RocksDB/Netty
#     unpack native libraries into the tmpdir, and PulsarStandalone picks
#     ZooKeeper mode if ./data/standalone/zookeeper exists in its cwd.
#   * Empty metadataStoreUrl + --metadata-dir → "rocksdb://DIR/…" metadata
#     store (PIP-117), so no ZooKeeper and no stream storage port is opened.
#     Ports opened: broker (binary protocol), web (admin REST), bookie — all
#     picked free and bound to 127.0.0.1 (the bookie needed extra keys, see
#     _pulsar_write_conf: it bound 0.0.0.0 and ignored --bookkeeper-port).
#   * Checked: admin REST (tenant + namespace creation), produce/consume with
#     the Python pulsar-client 3.13 over the binary port, manual compaction
#     (PUT .../compaction → SUCCESS; a read_compacted reader sees only the
#     latest value per key) and automatic compaction (>1 MiB backlog: ~25 s).
#     Java 25 (Temurin) also works, with only JDK warnings in the log.
#   * TLS + token authentication + authorization (checked with 4.0.7 on 2 cores):
#     the broker listens on brokerServicePortTls / webServicePortTls only —
#     brokerServicePort and webServicePort are empty (disabled): PulsarService
#     accepts TLS-only ports, and the standalone's own clients (the admin client
#     that creates public/default and pulsar/system, compaction, system topics)
#     use the TLS URLs because brokerClientTlsEnabled=true, with the super-user
#     token as brokerClientAuthenticationParameters. `ss -ltn` shows 3 ports:
#     broker TLS, web TLS, bookie. Anonymous admin REST calls get 401; plain
#     http:// and pulsar:// to the TLS ports get no session
#     (core/src/pulsar/authz_tests.rs). The CA and broker keys are ECDSA P-256
#     (Netty reads the PKCS#8 PEM openssl genpkey writes); the broker cert has
#     SAN IP:127.0.0.1 + DNS:localhost, so clients verify the hostname. Tokens:
#     HS256 JWTs {"sub": role} without expiry, signed with a 32-byte key that
#     tokenSecretKey=file://… reads raw (as `pulsar tokens create-secret-key`
#     writes it); Pulsar accepts the header {"alg":"HS256","typ":"JWT"}.
#     Generating the CA, cert, key and admin token: ~0.15 s. Start → healthy
#     with TLS 17–19 s on a loaded machine, the same as the plain broker
#     started right after on the same machine (17 s): TLS costs no visible time.
#     With PULSAR_KEEP_DATA=1 the secrets in DIR/pulsar/tls are kept too, so a
#     restarted broker keeps its CA and tokens.
#   * Measured: first jar resolution ~18 s with an empty ~/.m2 (~275 MB
#     downloaded), ~3 s with ~/.m2 filled, ~0.1 s when cached; start → healthy
#     5–9 s; broker JVM RSS ~420–470 MB; stop ~5 s (SIGTERM) or ~0.3 s
#     (PULSAR_STOP_TIMEOUT=0).
#
# Variables:
#   PULSAR_VERSION          Pulsar version to fetch (default 4.0.7; input)
#   PULSAR_START_TIMEOUT    seconds to wait for the broker health check (default 120; input)
#   PULSAR_JAVA_OPTS        extra JVM options appended to the defaults (input)
#   PULSAR_STOP_TIMEOUT     seconds stop_pulsar waits after SIGTERM before SIGKILL
#                           (default 30; 0 = SIGKILL right away; input)
#   PULSAR_LOG_LEVEL        log4j root level of the JVM (default info; input)
#   PULSAR_PLAIN            1: plain ports (pulsar://, http://) instead of TLS ones, token
#                           authentication and authorization still on. For the TLS-on/off
#                           comparison in docs/BENCHMARKS.md only (input; default: TLS)
#   PULSAR_LIB_DIR          the lib dir holding all jars (set by ensure_pulsar)
#   PULSAR_JAVA             java binary to run Pulsar with (set by ensure_pulsar)
#   TEST_PULSAR_URL         pulsar+ssl://127.0.0.1:PORT  (set by start_pulsar)
#   TEST_PULSAR_ADMIN_URL   https://127.0.0.1:WEBPORT    (set by start_pulsar)
#   TEST_PULSAR_CA_FILE     PEM of the per-run CA that signed the broker's certificate
#   TEST_PULSAR_ADMIN_TOKEN a token of the super-user role "admin"
#   TEST_PULSAR_TOKEN_SECRET base64 of the HS256 key: tests mint tokens of any role with it

set -euo pipefail

# Shared helpers (_svc_log, _svc_err, _svc_apt_install, _svc_free_port,
# _svc_alive) and the "apt-get update once per shell" state live there.
# shellcheck source=scripts/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

PULSAR_VERSION="${PULSAR_VERSION:-4.0.7}"
_STARLING_PULSAR_POM="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pulsar/pom.xml"
# Internal state used by stop_pulsar (empty = nothing running). The PID is
# kept in a variable too, so stop_pulsar still works if DIR was already
# deleted; the pidfile serves other shells (set _STARLING_PULSAR_PIDFILE).
_STARLING_PULSAR_PID="${_STARLING_PULSAR_PID:-}"
_STARLING_PULSAR_PIDFILE="${_STARLING_PULSAR_PIDFILE:-}"
# The token secret key of the running broker (for pulsar_mint_token).
_STARLING_PULSAR_SECRET_FILE="${_STARLING_PULSAR_SECRET_FILE:-}"

# Print the end of the Pulsar log on a failure, plus its first ERROR lines
# (the root cause is often far above the last 40 lines of a stack trace).
_pulsar_log_tail() {
    local file=$1
    if [ ! -f "$file" ]; then
        echo "==> (no log file at $file)" >&2
        return 0
    fi
    if grep -q -E ' ERROR |Exception' "$file" 2>/dev/null; then
        echo "==> first ERROR/Exception lines of $file:" >&2
        grep -n -E ' ERROR |Exception' "$file" | head -n 10 >&2 || true
    fi
    echo "==> last lines of $file:" >&2
    tail -n 60 "$file" >&2 || true
}

# Major version of a java binary (8 for "1.8.0_x", 17 for "17.0.15"), or 0.
_pulsar_java_major() {
    local v
    v=$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)
    v=${v#1.}
    v=${v%%[.+-]*}
    case $v in ''|*[!0-9]*) echo 0 ;; *) echo "$v" ;; esac
}

# Find a Java >= 17 (Pulsar 4 needs it): $JAVA_HOME, then `java` on PATH,
# then the newest JDK under /usr/lib/jvm. Installs openjdk-17 with apt if none.
_pulsar_find_java() {
    local cand
    for cand in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)" \
            /usr/lib/jvm/*/bin/java; do
        if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
        if [ "$(_pulsar_java_major "$cand")" -ge 17 ]; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

# Number of jars in a directory.
_pulsar_count_jars() { find "$1" -maxdepth 1 -name '*.jar' | wc -l; }

# ---------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------

# ensure_pulsar — make sure Java >= 17 is there and the Pulsar jars are in the
# cache dir; resolves them with Maven the first time (~20 s with an empty
# ~/.m2 on a fast link, ~3 s with a filled ~/.m2), instant afterwards. Sets and exports PULSAR_JAVA, PULSAR_LIB_DIR.
ensure_pulsar() {
    local java
    if ! java=$(_pulsar_find_java); then
        _svc_log "Java >= 17 not found, installing openjdk-17-jre-headless with apt"
        _svc_apt_install openjdk-17-jre-headless || return 1
        if ! java=$(_pulsar_find_java); then
            _svc_err "openjdk-17-jre-headless installed but no Java >= 17 found"
            return 1
        fi
    fi
    export PULSAR_JAVA=$java
    _svc_log "using Java $(_pulsar_java_major "$java") from $java"

    if ! command -v curl >/dev/null 2>&1; then
        _svc_log "curl not found (needed for the health check), installing it with apt"
        _svc_apt_install curl || return 1
    fi

    local base="${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}/pulsar-$PULSAR_VERSION"
    local lib="$base/lib" stamp pomsum
    # The cache is keyed on the version (dir name) and on pom.xml's content
    # (stamp file), so editing the pom re-resolves the jars.
    pomsum=$(sha256sum "$_STARLING_PULSAR_POM" | cut -d' ' -f1) || return 1
    stamp="$lib/.starling-complete"
    if [ -f "$stamp" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pomsum" ]; then
        export PULSAR_LIB_DIR=$lib
        _svc_log "Pulsar $PULSAR_VERSION jars already cached in $lib ($(_pulsar_count_jars "$lib") jars)"
        return 0
    fi

    if ! command -v mvn >/dev/null 2>&1; then
        _svc_log "mvn not found, installing maven with apt"
        _svc_apt_install maven || return 1
    fi

    local started=$SECONDS tmp log
    mkdir -p "$base" || return 1
    # Resolve into a private dir, then move it into place: a run that is
    # interrupted (or a concurrent run) never leaves a half-filled lib dir.
    tmp=$(mktemp -d "$base/lib.tmp.XXXXXX") || return 1
    log="$tmp.mvn.log"
    _svc_log "resolving Pulsar $PULSAR_VERSION jars with Maven into $lib (first time: up to a few minutes)"
    # JAVA_HOME for Maven itself: the same JDK/JRE we run Pulsar with is fine.
    if ! (cd "$base" && mvn -q -B -Dstyle.color=never -f "$_STARLING_PULSAR_POM" package \
            -Dpulsar.version="$PULSAR_VERSION" -Dpulsar.lib.dir="$tmp") >"$log" 2>&1; then
        _svc_err "Maven could not resolve the Pulsar $PULSAR_VERSION jars (is that version fully served by Maven Central? full log: $log)"
        # (Maven 3.8 prints colour resets even with -B: strip them.)
        sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v '^\[ERROR\] *$' | tail -n 30 >&2 || true
        rm -rf "$tmp"
        return 1
    fi
    echo "$pomsum" >"$tmp/.starling-complete"
    rm -rf "$lib" "$base/mvn-build" "$log"
    if ! mv -T "$tmp" "$lib" 2>/dev/null; then
        rm -rf "$tmp"   # somebody else finished first: theirs is as good
    fi
    export PULSAR_LIB_DIR=$lib
    _svc_log "Pulsar $PULSAR_VERSION jars ready in $((SECONDS - started))s ($(_pulsar_count_jars "$lib") jars in $lib)"
}

# ---------------------------------------------------------------------------
# Start / stop
# ---------------------------------------------------------------------------

# Write DIR/standalone.conf. It is read both as the broker config
# (ServiceConfiguration; unknown keys are ignored) and as the bookie's
# ServerConfiguration base, so it holds keys for both.
_pulsar_write_conf() {
    local file=$1 broker_port=$2 web_port=$3 sec=$4 admin_token=$5 ports
    if [ "${PULSAR_PLAIN:-}" = "1" ]; then
        ports="# PULSAR_PLAIN=1: plain ports only, for the TLS-on/off benchmark.
brokerServicePort=$broker_port
webServicePort=$web_port
brokerClientTlsEnabled=false"
    else
        ports="brokerServicePort=
webServicePort=
brokerServicePortTls=$broker_port
webServicePortTls=$web_port
brokerClientTlsEnabled=true"
    fi
    cat >"$file" <<EOF
# Generated by scripts/pulsar.sh — minimal single-node standalone for tests.
clusterName=standalone
advertisedAddress=127.0.0.1
bindAddress=127.0.0.1
# TLS only: the plain ports are disabled (empty), so nothing reaches the broker
# without TLS. The standalone's own clients (the admin client that creates
# public/default, the system-topic and compaction clients) follow
# brokerClientTlsEnabled and use the TLS ports too.
$ports
tlsCertificateFilePath=$sec/broker.crt
tlsKeyFilePath=$sec/broker.key
tlsTrustCertsFilePath=$sec/ca.crt
tlsAllowInsecureConnection=false
tlsRequireTrustedClientCertOnConnect=false

# Every client must show a token (HS256 JWT over the per-run secret key, role =
# the "sub" claim), and may only do what its role was granted.
authenticationEnabled=true
authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken
tokenSecretKey=file://$sec/token-secret.key
authorizationEnabled=true
superUserRoles=admin
# The standalone's internal clients: TLS with our CA, the super-user token.
brokerClientTrustCertsFilePath=$sec/ca.crt
brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken
brokerClientAuthenticationParameters=token:$admin_token
# Empty: PulsarStandalone uses rocksdb://<--metadata-dir> (no ZooKeeper).
metadataStoreUrl=
configurationMetadataStoreUrl=

# One bookie: every ledger has exactly one copy.
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
bookkeeperClientMinNumRacksPerWriteQuorum=1

# The bookie. PulsarStandalone hands this file to BKCluster as the bookie's
# *whole* base config (BKCluster's own loopback/disk defaults are then not
# applied), so: bind to the advertised 127.0.0.1 instead of 0.0.0.0 (any
# listeningInterface makes BookKeeper bind to advertisedAddress), and do not
# turn read-only when the disk is >95% full (BookKeeper's default threshold).
listeningInterface=lo
allowLoopback=true
# Without this BKCluster ignores --bookkeeper-port and picks a port itself.
allowEphemeralPorts=true
diskUsageThreshold=0.999
diskUsageWarnThreshold=0.99
# Bookie storage: small caches, no fsync (data is thrown away).
ledgerStorageClass=org.apache.bookkeeper.bookie.storage.ldb.DbLedgerStorage
nettyMaxFrameSizeBytes=5253120
dbStorage_writeCacheMaxSizeMb=16
dbStorage_readAheadCacheMaxSizeMb=16
dbStorage_rocksDB_blockCacheSize=16777216
journalSyncData=false
journalMaxGroupWaitMSec=1
managedLedgerCacheSizeMB=64

# Single broker, nothing to balance.
loadManagerClassName=org.apache.pulsar.broker.loadbalance.NoopLoadManager
loadBalancerEnabled=false

transactionCoordinatorEnabled=false
brokerEntryMetadataInterceptors=
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
brokerDeduplicationEnabled=false

# Topic compaction: the compactor is always available (admin REST
# PUT .../compaction triggers it); additionally compact any topic automatically
# once its backlog exceeds 1 MiB, checked every 30 s.
brokerServiceCompactionMonitorIntervalInSeconds=30
brokerServiceCompactionThresholdInBytes=1048576

# No functions worker (also -nfw), no packages management, no websocket.
functionsWorkerEnabled=false
enablePackagesManagement=false
webSocketServiceEnabled=false

# Tests create and delete tenants/namespaces/topics freely.
allowDeleteNamespace=true
brokerDeleteInactiveTopicsEnabled=false
EOF
}

# base64url without padding (JWT encoding) of stdin.
_pulsar_b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# pulsar_mint_token ROLE [SECRET_FILE] — print an HS256 JWT {"sub": ROLE} signed
# with the raw secret key in SECRET_FILE (default: the one of the running
# start_pulsar). No "exp": a test token lives as long as the broker. This is
# what Pulsar's `pulsar tokens create --secret-key` makes (no Pulsar CLI here).
pulsar_mint_token() {
    local role=${1:?usage: pulsar_mint_token ROLE [SECRET_FILE]}
    local key=${2:-${_STARLING_PULSAR_SECRET_FILE:-}} hexkey input sig
    [ -n "$key" ] && [ -f "$key" ] || { _svc_err "pulsar_mint_token: no secret key file"; return 1; }
    # Roles are plain names in tests (admin, cell-a): refuse anything needing JSON escapes.
    case $role in *[!A-Za-z0-9._:@-]*|'') _svc_err "pulsar_mint_token: bad role '$role'"; return 1 ;; esac
    hexkey=$(od -An -v -tx1 "$key" | tr -d ' \n') || return 1
    input="$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | _pulsar_b64url).$(printf '{"sub":"%s"}' "$role" | _pulsar_b64url)"
    sig=$(printf '%s' "$input" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | _pulsar_b64url) || return 1
    printf '%s.%s\n' "$input" "$sig"
}

# _pulsar_make_secrets DIR — per run, in DIR (mode 700): a CA (ca.crt), the
# broker's certificate for 127.0.0.1/localhost signed by it (broker.crt,
# broker.key in PKCS#8, as Netty wants), the 32-byte HS256 token secret key
# (token-secret.key, raw bytes as Pulsar's file:// form expects) and the admin
# (super-user) token. ECDSA P-256 keys: generating them takes milliseconds,
# where RSA-2048 would cost ~0.5 s per key on this machine.
_pulsar_make_secrets() {
    local d=$1
    if ! command -v openssl >/dev/null 2>&1; then
        _svc_log "openssl not found, installing it with apt"
        _svc_apt_install openssl || return 1
    fi
    mkdir -p "$d" && chmod 700 "$d" || return 1
    (
        set -e
        cd "$d"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
        openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=Starling test Pulsar CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out broker.key 2>/dev/null
        openssl req -new -key broker.key -subj "/CN=127.0.0.1" -out broker.csr 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >broker.ext
        openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -sha256 -extfile broker.ext -out broker.crt 2>/dev/null
        rm -f broker.csr broker.ext ca.srl
        openssl rand -out token-secret.key 32
        chmod 600 ca.key broker.key token-secret.key
    ) || { _svc_err "could not generate the Pulsar TLS certificates / token key in $d"; return 1; }
    pulsar_mint_token admin "$d/token-secret.key" >"$d/admin.token" || return 1
    # For curl -H @file (the health check): keeps the token off command lines.
    printf 'Authorization: Bearer %s\n' "$(cat "$d/admin.token")" >"$d/admin.header"
    chmod 600 "$d/admin.token" "$d/admin.header"
}

_pulsar_write_log4j() {
    cat >"$1" <<'EOF'
# Generated by scripts/pulsar.sh: everything to stdout (redirected to pulsar.log).
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} [%t] %-5level %c{1.} - %msg%n
rootLogger.level = ${sys:pulsar.log.level:-info}
rootLogger.appenderRef.stdout.ref = STDOUT
EOF
}

# Is PID our Pulsar JVM? (guards kill against PID reuse)
_pulsar_is_ours() {
    local pid=$1
    _svc_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
        | grep -q 'org.apache.pulsar.PulsarStandaloneStarter'
}

# start_pulsar DIR — start a Pulsar standalone with all its files in DIR/pulsar
# (TLS material and token key in DIR/pulsar/tls). Exports TEST_PULSAR_URL,
# TEST_PULSAR_ADMIN_URL, TEST_PULSAR_CA_FILE, TEST_PULSAR_ADMIN_TOKEN and
# TEST_PULSAR_TOKEN_SECRET. Requires ensure_pulsar.
start_pulsar() {
    local dir=${1:?usage: start_pulsar DIR}
    : "${PULSAR_LIB_DIR:?PULSAR_LIB_DIR not set; call ensure_pulsar first}"
    : "${PULSAR_JAVA:?PULSAR_JAVA not set; call ensure_pulsar first}"
    local home="$dir/pulsar" broker_port web_port bk_port pid
    local log="$dir/pulsar/pulsar.log" pidfile="$dir/pulsar/pulsar.pid"

    if [ -n "$_STARLING_PULSAR_PID" ] && _pulsar_is_ours "$_STARLING_PULSAR_PID"; then
        _svc_err "a Pulsar started by this shell is still running; call stop_pulsar first"
        return 1
    fi
    mkdir -p "$home/tmp" || return 1
    home=$(cd "$home" && pwd) || return 1   # absolute: the JVM runs from there
    log="$home/pulsar.log"; pidfile="$home/pulsar.pid"

    # Fixed ports and kept data (PULSAR_BROKER_PORT, PULSAR_WEB_PORT, PULSAR_BK_PORT,
    # PULSAR_KEEP_DATA=1) let a test restart "the same" broker.
    broker_port=${PULSAR_BROKER_PORT:-$(_svc_free_port)} || return 1
    web_port=${PULSAR_WEB_PORT:-$(_svc_free_port)} || return 1
    bk_port=${PULSAR_BK_PORT:-$(_svc_free_port)} || return 1
    local wipe=--wipe-data
    if [ "${PULSAR_KEEP_DATA:-}" = "1" ]; then
        wipe=
    fi
    # TLS material and token key: new per run, except that a restart with kept
    # data keeps them too (clients of "the same" broker keep their CA and token).
    local sec="$home/tls" t0
    t0=$(date +%s%N)
    if [ -z "$wipe" ] && [ -s "$sec/admin.token" ] && [ -s "$sec/ca.crt" ]; then
        _svc_log "reusing the TLS certificates and token key in $sec (PULSAR_KEEP_DATA=1)"
    else
        rm -rf "$sec"
        _pulsar_make_secrets "$sec" || return 1
        _svc_log "TLS CA, broker certificate and token key made in $(( ($(date +%s%N) - t0) / 1000000 )) ms ($sec)"
    fi
    _STARLING_PULSAR_SECRET_FILE="$sec/token-secret.key"
    local admin_token
    admin_token=$(cat "$sec/admin.token") || return 1
    _pulsar_write_conf "$home/standalone.conf" "$broker_port" "$web_port" "$sec" "$admin_token" || return 1
    _pulsar_write_log4j "$home/log4j2.properties" || return 1

    local -a opts=(
        -Xms256m -Xmx768m -XX:MaxDirectMemorySize=512m -XX:ParallelGCThreads=2
        -XX:+ExitOnOutOfMemoryError
        # From Pulsar's bin/pulsar (4.0): BookKeeper fadvise/CRC32C, Netty
        # direct buffers, DNS resolver and GC metrics reflection.
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.util.zip=ALL-UNNAMED
        --add-opens java.base/java.nio=ALL-UNNAMED
        --add-opens java.base/jdk.internal.misc=ALL-UNNAMED
        --add-opens java.base/sun.net=ALL-UNNAMED
        --add-opens java.management/sun.management=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        -Djava.net.preferIPv4Stack=true
        -Djute.maxbuffer=10485760
        -Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver
        -Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver
        -Dlog4j.shutdownHookEnabled=false
        -Dlog4j2.configurationFile="$home/log4j2.properties"
        -Dpulsar.log.level="${PULSAR_LOG_LEVEL:-info}"
        -Djava.io.tmpdir="$home/tmp"
    )
    # shellcheck disable=SC2206  # word splitting of user-supplied options is intended
    [ -n "${PULSAR_JAVA_OPTS:-}" ] && opts+=(${PULSAR_JAVA_OPTS})

    _svc_log "starting Pulsar $PULSAR_VERSION standalone on 127.0.0.1:$broker_port (web $web_port, bookie $bk_port)"
    local started=$SECONDS
    # cwd = $home: PulsarStandalone resolves its default relative paths there.
    # $wipe is empty or one flag: unquoted on purpose.
    # shellcheck disable=SC2086
    (cd "$home" && exec "$PULSAR_JAVA" "${opts[@]}" -cp "$PULSAR_LIB_DIR/*" \
        org.apache.pulsar.PulsarStandaloneStarter \
        --config "$home/standalone.conf" $wipe -nfw -nss \
        --metadata-dir "$home/metadata" --bookkeeper-dir "$home/bk" \
        --bookkeeper-port "$bk_port" -a 127.0.0.1 \
        </dev/null >"$log" 2>&1) &
    pid=$!
    # Not a job of this shell any more: bash still reaps it, but prints no
    # "Killed ..." notice when stop_pulsar has to SIGKILL it.
    disown "$pid" 2>/dev/null || true
    # Remember the PID *before* waiting, so stop_pulsar can clean up even if
    # the start is only half successful.
    _STARLING_PULSAR_PID=$pid
    _STARLING_PULSAR_PIDFILE=$pidfile
    echo "$pid" >"$pidfile"

    local timeout=${PULSAR_START_TIMEOUT:-120} code scheme=pulsar+ssl web=https
    if [ "${PULSAR_PLAIN:-}" = "1" ]; then scheme=pulsar; web=http; fi
    while :; do
        # The token goes in a header file, not on the command line (ps shows that).
        code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' --cacert "$sec/ca.crt" \
                 -H @"$sec/admin.header" \
                 "$web://127.0.0.1:$web_port/admin/v2/brokers/health" 2>/dev/null || true)
        [ "$code" = "000" ] && code="no answer"
        [ "$code" = "200" ] && break
        if ! _svc_alive "$pid"; then
            _svc_err "Pulsar exited during start-up"
            _pulsar_log_tail "$log"
            stop_pulsar >/dev/null
            return 1
        fi
        if [ $((SECONDS - started)) -ge "$timeout" ]; then
            _svc_err "Pulsar did not become healthy within ${timeout}s (last HTTP status: ${code:-none})"
            _pulsar_log_tail "$log"
            stop_pulsar
            return 1
        fi
        sleep 1
    done

    export TEST_PULSAR_URL="$scheme://127.0.0.1:$broker_port"
    export TEST_PULSAR_ADMIN_URL="$web://127.0.0.1:$web_port"
    export TEST_PULSAR_CA_FILE="$sec/ca.crt"
    export TEST_PULSAR_ADMIN_TOKEN=$admin_token
    TEST_PULSAR_TOKEN_SECRET=$(openssl base64 -A <"$sec/token-secret.key") || return 1
    export TEST_PULSAR_TOKEN_SECRET
    _svc_log "Pulsar ready in $((SECONDS - started))s: $TEST_PULSAR_URL (admin $TEST_PULSAR_ADMIN_URL, CA $TEST_PULSAR_CA_FILE, log $log)"
}

# stop_pulsar — stop what start_pulsar started: SIGTERM (Pulsar's shutdown
# hooks close broker and bookie; that takes ~5 s, mostly Netty's graceful
# event-loop shutdown), SIGKILL after $PULSAR_STOP_TIMEOUT s (default 30;
# 0 = SIGKILL at once, fine since the data is thrown away). Waits until the
# JVM is gone. Idempotent and never fails (safe in an EXIT trap, repeatedly).
stop_pulsar() {
    local pidfile=${_STARLING_PULSAR_PIDFILE:-} pid=${_STARLING_PULSAR_PID:-} i
    local timeout=${PULSAR_STOP_TIMEOUT:-30}
    case $timeout in ''|*[!0-9]*) timeout=30 ;; esac
    if [ -z "$pid" ] && [ -n "$pidfile" ] && [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
    fi
    if [ -n "$pid" ]; then
        # _pulsar_is_ours guards against PID reuse.
        if _pulsar_is_ours "$pid"; then
            _svc_log "stopping Pulsar"
            if [ "$timeout" -gt 0 ]; then
                kill -TERM "$pid" 2>/dev/null || true
                for i in $(seq 1 $((timeout * 4))); do _svc_alive "$pid" || break; sleep 0.25; done
            fi
            if _svc_alive "$pid"; then
                if [ "$timeout" -gt 0 ]; then
                    _svc_log "Pulsar did not stop within ${timeout}s, killing it"
                fi
                kill -KILL "$pid" 2>/dev/null || true
                for i in $(seq 1 20); do _svc_alive "$pid" || break; sleep 0.25; done
            fi
        fi
    fi
    if [ -n "$pidfile" ]; then rm -f "$pidfile" 2>/dev/null || true; fi
    _STARLING_PULSAR_PID=
    _STARLING_PULSAR_PIDFILE=
    _STARLING_PULSAR_SECRET_FILE=
    unset TEST_PULSAR_URL TEST_PULSAR_ADMIN_URL TEST_PULSAR_CA_FILE TEST_PULSAR_ADMIN_TOKEN \
        TEST_PULSAR_TOKEN_SECRET 2>/dev/null || true
    return 0
}
