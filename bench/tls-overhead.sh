#!/usr/bin/env bash
# What TLS costs: the same 3-node cluster (RF=3, acks=all, fsync before the
# ack) measured plain and with mutual TLS on both ports plus authorization
# (tls.*, authorization.*), in interleaved rounds, with `strata perf
# produce` at full speed and at a fixed rate. Prints one line per run and
# the medians; the last line is one JSON object.
#
#   bench/tls-overhead.sh [RUNS]     # default 3 rounds of each; ~2 min a round
#
# Needs target/release/strata (cargo build --release -p strata-cli) and
# openssl. Uses ports 7170-7192 and a temporary directory, removed after.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
strata=target/release/strata
[ -x "$strata" ] || { echo "build it first: cargo build --release -p strata-cli" >&2; exit 1; }
work=$(mktemp -d /tmp/strata-tls-bench.XXXXXX)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop; rm -rf "$work"' EXIT
deploy/tls/make-certs.sh "$work/tls" 127.0.0.1 localhost >/dev/null

peers="1=127.0.0.1:7171,2=127.0.0.1:7181,3=127.0.0.1:7191"
client_flags=()

# start MODE: three servers, plain or tls, on fresh data directories.
start() {
    local mode=$1
    rm -rf "$work/data"
    for n in 1 2 3; do
        local base=$((7160 + 10 * n)) settings=()
        if [ "$mode" = tls ]; then
            settings=(--set "tls.cert_file=$work/tls/node.crt" --set "tls.key_file=$work/tls/node.key"
                --set "tls.client_ca_file=$work/tls/client-ca.crt" --set "tls.peer_ca_file=$work/tls/ca.crt"
                --set authorization.enabled=true --set authorization.super_users=User:strata-client)
        fi
        "$strata" server --node-id "$n" --peers "$peers" --data-dir "$work/data/n$n" \
            --listen-client "127.0.0.1:$base" --listen-peer "127.0.0.1:$((base + 1))" \
            --listen-http "127.0.0.1:$((base + 2))" --set runtime.worker_threads=1 "${settings[@]}" \
            >"$work/n$n.log" 2>&1 &
        pids+=($!)
    done
    client_flags=(--bootstrap-server 127.0.0.1:7170,127.0.0.1:7180,127.0.0.1:7190)
    if [ "$mode" = tls ]; then
        client_flags+=(--tls-ca "$work/tls/ca.crt" --tls-cert "$work/tls/client.crt" --tls-key "$work/tls/client.key")
    fi
    for _ in $(seq 100); do
        if RUST_BACKTRACE=0 "$strata" topic create perf --partitions 12 --replication-factor 3 --if-not-exists \
            "${client_flags[@]}" >/dev/null 2>&1; then
            return
        fi
        sleep 0.3
    done
    echo "the $mode cluster did not take a topic; logs in $work" >&2
    exit 1
}

# measure: full speed, then 50k records/s, each 1 KB; prints "rps mbps p99 | p50 p99".
measure() {
    local props=(--producer-props acks=all linger.ms=5 batch.size=1048576)
    local full fixed
    "$strata" perf produce --topic perf --num-records 1000000 --record-size 1024 --throughput -1 \
        "${props[@]}" --json "${client_flags[@]}" >"$work/full.out" 2>&1
    "$strata" perf produce --topic perf --num-records 500000 --record-size 1024 --throughput 50000 \
        --producer-props acks=all linger.ms=0 batch.size=1048576 max.in.flight.requests.per.connection=1 \
        --json "${client_flags[@]}" >"$work/fixed.out" 2>&1
    full=$(grep '^{' "$work/full.out" | tail -1)
    fixed=$(grep '^{' "$work/fixed.out" | tail -1)
    if [ -z "$full" ] || [ -z "$fixed" ]; then
        echo "perf produce printed no summary:" >&2
        cat "$work/full.out" "$work/fixed.out" >&2
        exit 1
    fi
    python3 -c '
import json, sys
full, fixed = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(round(full["records_per_sec"]), round(full["mb_per_sec"], 1), full["latency_ms"]["p99"],
      fixed["latency_ms"]["p50"], fixed["latency_ms"]["p99"])' "$full" "$fixed"
}

results=()
for round in $(seq "$runs"); do
    for mode in plain tls; do
        start "$mode"
        line=$(measure)
        stop
        echo "round $round $mode: records/s MiB/s p99(full) | p50 p99 at 50k/s: $line"
        results+=("$mode $line")
    done
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
out = {}
for mode in ("plain", "tls"):
    r = [list(map(float, x[1:])) for x in rows if x[0] == mode]
    med = [statistics.median(c) for c in zip(*r)]
    out[mode] = dict(zip(["records_per_s", "mib_per_s", "p99_ms_full_speed", "p50_ms_50k", "p99_ms_50k"], med))
    print(f"{mode:5} median: {med[0]:.0f} records/s, {med[1]:.1f} MiB/s, p99 {med[2]:.2f} ms at full speed; "
          f"p50 {med[3]:.2f} / p99 {med[4]:.2f} ms at 50k/s")
out["tls_over_plain_records_per_s"] = round(out["tls"]["records_per_s"] / out["plain"]["records_per_s"], 3)
out["runs"] = len(rows) // 2
print(json.dumps({"scenario": "tls-overhead", **out}))'
