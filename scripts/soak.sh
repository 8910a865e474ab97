#!/usr/bin/env bash
# Soak run (not part of CI): mixed load on a queue and a topic for a while, with every role
# SIGKILLed at random and restarted, and one instance of each role that is never killed.
# Every minute it samples the resident memory and open descriptors of those long-lived
# processes and the size of every file, and prints them as a table; at the end it stops the
# producers, lets the consumers drain, and checks that every group caught up.
#
# Usage: scripts/soak.sh [SECONDS]   (default 1800; needs target/release/shmq:
#        cargo build --release -p shmq-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-1800}
SHMQ=${SHMQ:-$PWD/target/release/shmq}
DIR=$(mktemp -d /dev/shm/shmq-soak.XXXXXX)
Q=$DIR/orders.q
T=$DIR/events.topic
LOG=$DIR/log
mkdir "$LOG"
# The files and logs are kept when the run fails, for a post-mortem.
trap 'kill -9 $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ "$ok" = yes ] && rm -rf "$DIR"' EXIT
ok=no

"$SHMQ" create "$Q" --capacity 4MiB >/dev/null
"$SHMQ" create "$T" --partitions 4 --capacity 1MiB >/dev/null
"$SHMQ" group create "$T" billing >/dev/null

# Each role: the command line that runs it (INSTANCE: the instance's name, so the long-lived
# and the churning consumer of a queue each have a group of their own).
declare -A ROLE=(
    [qprod]="$SHMQ publish $Q --count 1000000000000000 --size 200"
    [qcons]="$SHMQ consume $Q -g audit-INSTANCE --create --follow --commit --session-timeout 2s"
    [qtap]="$SHMQ consume $Q -g tap-INSTANCE --create --non-gating --follow"
    [tprod]="$SHMQ publish $T --count 1000000000000000 --size 100"
    [tmember]="$SHMQ consume $T -g billing --follow --commit"
)
declare -A STABLE=() CHURN=()
KILLS=0
start() { # start ROLE INSTANCE: runs the role as a child of this shell (so `wait` reports
    # how it ended), its output discarded; its pid is left in STARTED
    ${ROLE[$1]//INSTANCE/$2} >/dev/null 2>>"$LOG/$1.$2.err" &
    STARTED=$!
}
for r in "${!ROLE[@]}"; do
    start "$r" stable
    STABLE[$r]=$STARTED
    start "$r" churn
    CHURN[$r]=$STARTED
done
"$SHMQ" stat "$Q" --interval 1s >/dev/null 2>>"$LOG/stat.err" &
STAT=$!

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo dead; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
sample() {
    local line
    line=$(printf '%5ds kills %5d' "$SECONDS" "$KILLS")
    for r in qprod qcons qtap tprod tmember; do
        line+=$(printf ' | %s rss %6s fds %3s' "$r" "$(rss_kb "${STABLE[$r]}")" "$(fds "${STABLE[$r]}")")
    done
    line+=$(printf ' | stat rss %6s fds %3s' "$(rss_kb $STAT)" "$(fds $STAT)")
    line+=" | bytes $(du -sb "$DIR" --exclude=log | cut -f1) files $(find "$DIR" -path "$LOG" -prune -o -type f -print | wc -l)"
    echo "$line"
}

SECONDS=0
next_sample=0
while (( SECONDS < SECONDS_TOTAL )); do
    if (( SECONDS >= next_sample )); then
        sample
        next_sample=$((next_sample + 60))
    fi
    # Kill one churning role at random, at a random moment, and restart it.
    sleep "0.$((RANDOM % 9 + 1))"
    roles=("${!ROLE[@]}")
    r=${roles[RANDOM % ${#roles[@]}]}
    kill -9 "${CHURN[$r]}" 2>/dev/null || true
    wait "${CHURN[$r]}" 2>/dev/null || true
    KILLS=$((KILLS + 1))
    start "$r" churn
    CHURN[$r]=$STARTED
    for s in "${!STABLE[@]}"; do
        if ! kill -0 "${STABLE[$s]}" 2>/dev/null; then
            status=0
            wait "${STABLE[$s]}" || status=$?
            echo "long-lived $s ended with status $status (>128: signal $((status - 128))):"
            cat "$LOG/$s.stable.err"
            echo "files and logs kept in $DIR"
            exit 1
        fi
    done
done
sample

# Stop the producers, let the consumers drain, then every gating group must have caught up.
# A producer killed mid-publish can leave an aborted record at a partition's tail, which a
# consumer skips but cannot commit (commits name records it read): one last record per
# partition from a healthy producer lets every group commit past it.
for r in qprod tprod; do kill -9 "${STABLE[$r]}" "${CHURN[$r]}" 2>/dev/null || true; done
echo end | "$SHMQ" publish "$Q" >/dev/null
for p in 0 1 2 3; do echo end | "$SHMQ" publish "$T" --partition $p >/dev/null; done
sleep 10
"$SHMQ" info "$Q" --json > "$DIR/q.json"
"$SHMQ" info "$T" --json > "$DIR/t.json"
python3 - "$DIR/q.json" "$DIR/t.json" <<'PY'
import json, sys
q = json.load(open(sys.argv[1]))
lag = {g["name"]: g["lag"] for g in q["groups"]}
print("queue groups lag:", lag)
assert lag["audit-stable"] == 0 and lag["audit-churn"] == 0, "a gating group did not drain"
t = json.load(open(sys.argv[2]))
lags = [g["lag"] for p in t["partition_info"] for g in p["groups"] if g["name"] == "billing"]
print("topic billing lag per partition:", lags)
assert all(l == 0 for l in lags), "billing did not drain"
PY
echo "errors logged by killed processes (first 5 distinct):"
{ cat "$LOG"/*.err | sort | uniq -c | sort -rn | head -5; } || true  # head closes the pipe early
echo "soak: $KILLS kills in $SECONDS s, no long-lived process died, every group drained"
ok=yes
