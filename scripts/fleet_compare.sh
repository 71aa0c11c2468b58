#!/usr/bin/env bash
# `genesys-keepalive fleet` with N organisations (each its own OAuth client id) against the testkit gateway,
# next to `genesys-keepalive bench` at the same N, one after the other in one sitting, each against a fresh
# `genesys-keepalive gateway`. Both are measured from outside the same way: VmRSS and user+system CPU of the
# client process, sampled WARM_S seconds after it started (every connection open) and again at SECS − 3 s, at
# N and at 1 connection; per connection is (figure at N − figure at 1) / (N − 1), so that what a process costs
# with no connection (runtime, TLS roots, HTTP client) cancels out. RSS is the second sample; CPU is the
# steady state between the two samples, and also the total from the start. With ROUNDS > 1, the runs at N
# alternate (bench, fleet, bench, fleet, …) so that both see the same drift of a shared machine, each round
# gives its own ratios, and the verdict is the median round. See BENCHMARKS.md, "Fleet".
#
#   scripts/fleet_compare.sh                 # N = 1000, tokio, 30 s per run
#   N=200 SECS=15 scripts/fleet_compare.sh   # a quick check
#
# Environment (defaults in brackets):
#   N            organisations / connections [1000]
#   ROUNDS       alternating bench/fleet pairs at N [1]; the runs at 1 connection are made once
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
ROUNDS=${ROUNDS:-1}
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
for n in "$N" "$SECS" "$INTERVAL_MS" "$PORT" "$ROUNDS"; do
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

# One run: a fresh gateway, the client, samples at WARM_S and SAMPLE_S into OUT/WHAT-K[TAG].sample
# ("rss_kib cpu_s rss_kib cpu_s"); its output in OUT/WHAT-K[TAG].jsonl.
one() {
    local what=$1 k=$2 tag=${3:-} port=$PORT
    PORT=$((PORT + 1))
    make_fleet "$k" "http://127.0.0.1:$port" "ws://127.0.0.1:$port/keepalive"
    "$BIN" gateway --port "$port" --clients-file "$OUT/clients-$k.txt" \
        >"$OUT/$what-$k$tag.gateway.log" 2>&1 &
    local gw=$!
    PIDS+=("$gw")
    for _ in $(seq 100); do
        grep -q '"kind":"gateway"' "$OUT/$what-$k$tag.gateway.log" 2>/dev/null && break
        sleep 0.1
    done
    local pid
    if [[ $what == bench ]]; then
        "$BIN" bench --url "ws://127.0.0.1:$port/keepalive" --connections "$k" --seconds "$SECS" \
            --interval-ms "$INTERVAL_MS" --driver "$DRIVER" --runtime "$BENCH_RUNTIME" \
            >"$OUT/bench-$k$tag.jsonl" 2>"$OUT/bench-$k$tag.err" &
        pid=$!
    else
        (
            # shellcheck disable=SC1090
            source "$OUT/env-$k.sh"
            exec "$BIN" fleet --config "$OUT/fleet-$k.toml" --driver "$DRIVER" \
                >"$OUT/fleet-$k$tag.jsonl" 2>"$OUT/fleet-$k$tag.err"
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
    echo "$status" >"$OUT/$what-$k$tag.status"
    kill -TERM "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    echo "$w $s" >"$OUT/$what-$k$tag.sample"
    say "$what at $k$tag: exit $status, VmRSS KiB and CPU s at ${WARM_S} s and ${SAMPLE_S} s: $w $s"
}

say "N=$N ROUNDS=$ROUNDS SECS=$SECS INTERVAL_MS=$INTERVAL_MS DRIVER=$DRIVER AUDIT_SEND_SUCCESS=$AUDIT_SEND_SUCCESS bench --runtime $BENCH_RUNTIME; output in $OUT"
for ((r = 1; r <= ROUNDS; r++)); do
    one bench "$N" ".r$r"
    one fleet "$N" ".r$r"
done
one bench 1
one fleet 1
python3 - "$N" "$WARM_S" "$SAMPLE_S" "$OUT" "$DRIVER" "$BENCH_RUNTIME" "$ROUNDS" <<'PY'
import json, statistics, sys
n, t0, t, out, driver, brt, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
def load(name):
    # rss and cpu at WARM_S, rss and cpu at SAMPLE_S
    return list(map(float, open(f"{out}/{name}.sample").read().split()))
b1, f1 = load("bench-1"), load("fleet-1")
def per(a, b): return (a - b) / (n - 1)
print(f"| round | | N | open | VmRSS at N (KiB) | RSS KiB/conn | CPU at N (s) | CPU µs/conn/s, total | CPU µs/conn/s, {t0}–{t} s | exit |")
print(f"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
ratios = {"rss": [], "total": [], "steady": []}
for r in range(1, rounds + 1):
    row = {}
    for w, one in (("bench", b1), ("fleet", f1)):
        s = load(f"{w}-{n}.r{r}")
        rss = per(s[2], one[2])
        # Total CPU from the start, per connection-second, and the steady state between the samples.
        total = per(s[3], one[3]) * 1e6 / t
        steady = per(s[3] - s[1], one[3] - one[1]) * 1e6 / (t - t0)
        status = open(f"{out}/{w}-{n}.r{r}.status").read().strip()
        lines = open(f"{out}/{w}-{n}.r{r}.jsonl").read().splitlines()
        if w == "bench":
            opened = f"{json.loads(lines[-1])['open']:,}"
            label = f"bench --driver {driver} --runtime {brt}"
        else:
            stable = {json.loads(l)["connection"] for l in lines if '"state":"STABLE"' in l}
            opened = f"{len(stable):,} STABLE"
            label = f"fleet --driver {driver}"
        row[w] = (rss, total, steady)
        print(f"| {r} | {label} | {n:,} | {opened} | {s[2]:,.0f} | {rss:.1f} | {s[3]:.2f} | {total:.1f} | {steady:.1f} | {status} |")
    for i, k in enumerate(("rss", "total", "steady")):
        ratios[k].append(row["fleet"][i] / row["bench"][i] if row["bench"][i] else float("nan"))
print()
print(f"at 1 connection: bench VmRSS {b1[2]:,.0f} KiB, CPU {b1[3]:.2f} s; fleet VmRSS {f1[2]:,.0f} KiB, CPU {f1[3]:.2f} s")
for r in range(rounds):
    print(f"round {r + 1}, fleet ÷ bench: RSS/conn {ratios['rss'][r]:.2f}×, CPU/conn total {ratios['total'][r]:.2f}×, steady {ratios['steady'][r]:.2f}×")
med = {k: statistics.median(v) for k, v in ratios.items()}
print(f"median of {rounds} round(s), fleet ÷ bench: RSS/conn {med['rss']:.2f}×, CPU/conn total {med['total']:.2f}×, steady {med['steady']:.2f}× (RSS at {t} s)")
PY
