#!/usr/bin/env bash
# `genesys-keepalive fleet` with N organisations (each its own OAuth client id) against the testkit gateway,
# next to `genesys-keepalive bench` at the same N, one after the other in one sitting, each against a fresh
# `genesys-keepalive gateway`. Both are measured from outside the same way: VmRSS and user+system CPU of the
# client process, sampled WARM_S seconds after it started (every connection open) and again at SECS − 3 s, at
# N and at 1 connection; per connection is (figure at N − figure at 1) / (N − 1), so that what a process costs
# with no connection (runtime, TLS roots, HTTP client) cancels out. RSS is the second sample; CPU is the
# steady state between the two samples, and also the total from the start. See BENCHMARKS.md, "Fleet".
#
#   scripts/fleet_compare.sh                 # N = 1000, tokio, 30 s per run
#   N=200 SECS=15 scripts/fleet_compare.sh   # a quick check
#
# Environment (defaults in brackets):
#   N            organisations / connections [1000]
#   SECS         how long each client runs [40]; sampled at WARM_S and at SECS − 3 s
#   WARM_S       the first sample [10]
#   INTERVAL_MS  heartbeat interval [1000] (bench's `--interval-ms`; the fleet file's interval_matrix)
#   DRIVER       tokio or async-std [tokio]
#   BENCH_RUNTIME  bench's --runtime [current-thread for tokio, multi-thread for async-std: the executors
#                the fleet uses]
#   AUDIT_SEND_SUCCESS  the fleet file's `audit_send_success` [false: bench prints no audit line either;
#                true: the default `run` and `fleet` output, a SEND_SUCCESS line per heartbeat per connection]
#   PORT         first gateway port; every run takes the next one [9401]
#   OUT          raw output [target/fleet-compare]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

N=${N:-1000}
SECS=${SECS:-40}
WARM_S=${WARM_S:-10}
INTERVAL_MS=${INTERVAL_MS:-1000}
DRIVER=${DRIVER:-tokio}
if [[ -z "${BENCH_RUNTIME:-}" ]]; then
    if [[ $DRIVER == tokio ]]; then BENCH_RUNTIME=current-thread; else BENCH_RUNTIME=multi-thread; fi
fi
PORT=${PORT:-9401}
AUDIT_SEND_SUCCESS=${AUDIT_SEND_SUCCESS:-false}
[[ $AUDIT_SEND_SUCCESS == true || $AUDIT_SEND_SUCCESS == false ]] || { echo "fleet_compare.sh: AUDIT_SEND_SUCCESS is true or false" >&2; exit 1; }
OUT=${OUT:-target/fleet-compare}
SAMPLE_S=$((SECS - 3))
((SAMPLE_S > WARM_S)) || { echo "fleet_compare.sh: SECS must exceed WARM_S + 3" >&2; exit 1; }

die() { echo "fleet_compare.sh: $*" >&2; exit 1; }
say() { echo "fleet_compare.sh: $*" >&2; }
for n in "$N" "$SECS" "$INTERVAL_MS" "$PORT"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "not a positive whole number: '$n'"
done
((N >= 2)) || die "N must be at least 2"
((SECS >= 6)) || die "SECS must be at least 6"
command -v python3 >/dev/null || die "python3 is needed"

PIDS=()
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NOFILE=$(ulimit -n)
if [[ $NOFILE != unlimited ]] && ((NOFILE < 3 * N + 100)); then
    ulimit -n $((3 * N + 100)) 2>/dev/null || die "cannot raise the open-file limit to $((3 * N + 100))"
fi

say "building genesys-keepalive (release)"
cargo build --release -p genesys-keepalive-cli
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/genesys-keepalive
[[ -x $BIN ]] || die "no binary at $BIN"
mkdir -p "$OUT"

# The clients file, the environment and the fleet file for K organisations (org-0 … org-K-1).
make_fleet() {
    local k=$1 base=$2 ka=$3
    python3 - "$k" "$base" "$ka" "$INTERVAL_MS" "$OUT" "$AUDIT_SEND_SUCCESS" <<'PY'
import sys
k, base, ka, interval, out, audit = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
idle = max(3 * interval, interval + 2000)
with open(f"{out}/clients-{k}.txt", "w") as f:
    for i in range(k):
        f.write(f"client-org-{i} secret-org-{i}\n")
with open(f"{out}/env-{k}.sh", "w") as f:
    for i in range(k):
        f.write(f"export ORG_{i}_ID=client-org-{i} ORG_{i}_SECRET=secret-org-{i}\n")
with open(f"{out}/fleet-{k}.toml", "w") as f:
    # bench's client_config, as fleet-file fields.
    f.write(f'[defaults]\nprofile = "keepalive-frame"\nurl = "{ka}"\nlogin_base = "{base}"\n'
            f'allow_insecure = true\nmin_interval_ms = {min(5000, interval // 4)}\n'
            f'idle_timeout_ms = {idle}\nack_timeout_ms = {idle}\nconnect_timeout_ms = 30000\n'
            f'backoff_base_ms = 1000\nbackoff_max_ms = 5000\naudit_send_success = {audit}\n'
            f'[defaults.interval_matrix]\nstable_ms = {interval}\ndegraded_ms = {interval // 2}\n'
            f'reconnecting_ms = {interval // 4}\n')
    for i in range(k):
        f.write(f'[[connection]]\nname = "org-{i}"\nclient_id_env = "ORG_{i}_ID"\n'
                f'client_secret_env = "ORG_{i}_SECRET"\n')
PY
}

# VmRSS (KiB) and user+system CPU (s) of a process.
sample() {
    local pid=$1 rss ticks hz
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    hz=$(getconf CLK_TCK)
    echo "$rss $(python3 -c "print($ticks / $hz)")"
}

# One run: a fresh gateway, the client, a sample at SAMPLE_S into OUT/WHAT-K.sample ("rss_kib cpu_s").
one() {
    local what=$1 k=$2 port=$PORT
    PORT=$((PORT + 1))
    make_fleet "$k" "http://127.0.0.1:$port" "ws://127.0.0.1:$port/keepalive"
    "$BIN" gateway --port "$port" --clients-file "$OUT/clients-$k.txt" \
        >"$OUT/$what-$k.gateway.log" 2>&1 &
    local gw=$!
    PIDS+=("$gw")
    for _ in $(seq 100); do
        grep -q '"kind":"gateway"' "$OUT/$what-$k.gateway.log" 2>/dev/null && break
        sleep 0.1
    done
    local pid
    if [[ $what == bench ]]; then
        "$BIN" bench --url "ws://127.0.0.1:$port/keepalive" --connections "$k" --seconds "$SECS" \
            --interval-ms "$INTERVAL_MS" --driver "$DRIVER" --runtime "$BENCH_RUNTIME" \
            >"$OUT/bench-$k.jsonl" 2>"$OUT/bench-$k.err" &
        pid=$!
    else
        (
            # shellcheck disable=SC1090
            source "$OUT/env-$k.sh"
            exec "$BIN" fleet --config "$OUT/fleet-$k.toml" --driver "$DRIVER" \
                >"$OUT/fleet-$k.jsonl" 2>"$OUT/fleet-$k.err"
        ) &
        pid=$!
    fi
    PIDS+=("$pid")
    sleep "$WARM_S"
    local w s
    w=$(sample "$pid")
    sleep $((SAMPLE_S - WARM_S))
    s=$(sample "$pid")
    if [[ $what == fleet ]]; then
        sleep 3
        kill -TERM "$pid"
    fi
    local status=0
    wait "$pid" || status=$?
    echo "$status" >"$OUT/$what-$k.status"
    kill -TERM "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    echo "$w $s" >"$OUT/$what-$k.sample"
    say "$what at $k: exit $status, VmRSS KiB and CPU s at ${WARM_S} s and ${SAMPLE_S} s: $w $s"
}

say "N=$N SECS=$SECS INTERVAL_MS=$INTERVAL_MS DRIVER=$DRIVER AUDIT_SEND_SUCCESS=$AUDIT_SEND_SUCCESS bench --runtime $BENCH_RUNTIME; output in $OUT"
one bench "$N"
one fleet "$N"
one bench 1
one fleet 1
python3 - "$N" "$WARM_S" "$SAMPLE_S" "$OUT" "$DRIVER" "$BENCH_RUNTIME" <<'PY'
import json, sys
n, t0, t, out, driver, brt = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
def load(w, k):
    # rss and cpu at WARM_S, rss and cpu at SAMPLE_S
    return list(map(float, open(f"{out}/{w}-{k}.sample").read().split()))
bn, b1, fn, f1 = load("bench", n), load("bench", 1), load("fleet", n), load("fleet", 1)
def per(a, b): return (a - b) / (n - 1)
b_rss_n, b_cpu_n, b_rss_1, b_cpu_1 = bn[2], bn[3], b1[2], b1[3]
f_rss_n, f_cpu_n, f_rss_1, f_cpu_1 = fn[2], fn[3], f1[2], f1[3]
b_rss, f_rss = per(b_rss_n, b_rss_1), per(f_rss_n, f_rss_1)
# Total CPU from the start, per connection-second, and the steady state between the samples.
b_cpu, f_cpu = per(b_cpu_n, b_cpu_1) * 1e6 / t, per(f_cpu_n, f_cpu_1) * 1e6 / t
b_st = per(bn[3] - bn[1], b1[3] - b1[1]) * 1e6 / (t - t0)
f_st = per(fn[3] - fn[1], f1[3] - f1[1]) * 1e6 / (t - t0)
bench = json.loads(open(f"{out}/bench-{n}.jsonl").read().splitlines()[-1])
lines = open(f"{out}/fleet-{n}.jsonl").read().splitlines()
kinds = {}
for l in lines:
    k = json.loads(l)["kind"]
    kinds[k] = kinds.get(k, 0) + 1
stable = {json.loads(l)["connection"] for l in lines if '"state":"STABLE"' in l}
statuses = {w: open(f"{out}/{w}-{n}.status").read().strip() for w in ("bench", "fleet")}
print(f"| | N | open | VmRSS at N (KiB) | VmRSS at 1 (KiB) | RSS KiB/conn | CPU at N (s) | CPU at 1 (s) | CPU µs/conn/s, total | CPU µs/conn/s, {t0}–{t} s | exit |")
print(f"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| bench --driver {driver} --runtime {brt} | {n:,} | {bench['open']:,} | {b_rss_n:,.0f} | {b_rss_1:,.0f} | {b_rss:.1f} | {b_cpu_n:.2f} | {b_cpu_1:.2f} | {b_cpu:.1f} | {b_st:.1f} | {statuses['bench']} |")
print(f"| fleet --driver {driver} | {n:,} | {len(stable):,} STABLE | {f_rss_n:,.0f} | {f_rss_1:,.0f} | {f_rss:.1f} | {f_cpu_n:.2f} | {f_cpu_1:.2f} | {f_cpu:.1f} | {f_st:.1f} | {statuses['fleet']} |")
print()
print(f"fleet ÷ bench: RSS/conn {f_rss / b_rss:.2f}×, CPU/conn total {f_cpu / b_cpu:.2f}×, steady {f_st / b_st:.2f}× (RSS at {t} s)")
print(f"bench's own line: rss_per_conn_kb {bench['rss_per_conn_kb']:.1f}, cpu_s {bench['cpu_s']:.2f}, acks {bench['acks']:,}")
print(f"fleet stdout lines at N: " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
PY
