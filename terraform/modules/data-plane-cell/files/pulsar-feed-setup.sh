#!/bin/sh
# Prepares the app-config feed topic on a cell's Pulsar, through the admin REST API:
#   - creates it (non-partitioned) before any node reads it;
#   - keeps it forever (topic-level retention -1/-1): the compacted view is what every node
#     starts from, and nothing else holds a durable cursor on it before the first compaction;
#   - compacts it automatically once its backlog passes COMPACTION_THRESHOLD bytes.
# Idempotent: run it again and it changes nothing. POSIX sh and curl only (the Kubernetes Job
# runs it in a curl image; tests/e2e/image.rs runs it against the test Pulsar).
#
# Env: PULSAR_ADMIN_URL (http://host:8080), FEED_TOPIC (persistent://tenant/ns/<prefix>app-config),
#      COMPACTION_THRESHOLD (bytes, default 1048576), WAIT_SECONDS (default 600).
set -eu

: "${PULSAR_ADMIN_URL:?PULSAR_ADMIN_URL is not set}"
: "${FEED_TOPIC:?FEED_TOPIC is not set}"
threshold=${COMPACTION_THRESHOLD:-1048576}
wait_seconds=${WAIT_SECONDS:-600}

path=$(printf '%s\n' "$FEED_TOPIC" | sed -n 's#^persistent://\([^/][^/]*\)/\([^/][^/]*\)/\([^/][^/]*\)$#persistent/\1/\2/\3#p')
if [ -z "$path" ]; then
    echo "FEED_TOPIC must look like persistent://tenant/namespace/topic, not $FEED_TOPIC" >&2
    exit 2
fi
base="${PULSAR_ADMIN_URL%/}/admin/v2/$path"

# status METHOD URL [BODY]: prints the HTTP status (000 when nothing answered).
status() {
    if [ $# -ge 3 ]; then
        curl -s -o /dev/null -w '%{http_code}' -X "$1" -H 'content-type: application/json' --data "$3" "$2" || true
    else
        curl -s -o /dev/null -w '%{http_code}' -X "$1" "$2" || true
    fi
}

waited=0
until [ "$(status GET "${PULSAR_ADMIN_URL%/}/admin/v2/brokers/health")" = 200 ]; do
    if [ "$waited" -ge "$wait_seconds" ]; then
        echo "Pulsar at $PULSAR_ADMIN_URL is not healthy after ${wait_seconds}s" >&2
        exit 1
    fi
    sleep 5
    waited=$((waited + 5))
done

st=$(status PUT "$base")
case $st in
    204 | 409) echo "feed topic $FEED_TOPIC: present" ;;
    *) echo "creating $FEED_TOPIC: HTTP $st" >&2; exit 1 ;;
esac

# Topic-level policies are applied asynchronously (system topic): retry briefly.
apply() {
    what=$1 url=$2 body=$3 tries=0
    while :; do
        st=$(status POST "$url" "$body")
        case $st in
            204 | 200) echo "feed topic $FEED_TOPIC: $what set"; return 0 ;;
        esac
        tries=$((tries + 1))
        if [ "$tries" -ge 12 ]; then
            echo "setting $what on $FEED_TOPIC: HTTP $st" >&2
            return 1
        fi
        sleep 5
    done
}
apply retention "$base/retention" '{"retentionTimeInMinutes":-1,"retentionSizeInMB":-1}'
apply "compaction threshold" "$base/compactionThreshold" "$threshold"
