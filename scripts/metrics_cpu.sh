#!/usr/bin/env bash
# CPU of `genesys-keepalive bench` with and without metrics, in one sitting: each round runs the same bench
# (--url to a fresh seed-node server.js) three ways, in turn: no --metrics-addr (the facade has no recorder),
# --metrics-addr with nobody scraping, and --metrics-addr scraped once a second by curl. Prints one Markdown
# table (BENCHMARKS.md, "Metrics: what they cost").
#
#   scripts/metrics_cpu.sh                       # N=5000, SECS=20, ROUNDS=3
#   N=1000 SECS=10 ROUNDS=1 scripts/metrics_cpu.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-5000}
SECS=${SECS:-20}
ROUNDS=${ROUNDS:-3}
INTERVAL_MS=${INTERVAL_MS:-1000}
PORT=${PORT:-9401}
METRICS_PORT=${METRICS_PORT:-9464}
OUT=${OUT:-target/metrics-cpu}
SEED=${SEED_NODE_DIR:-}
if [[ -z "$SEED" ]]; then
    for d in "$ROOT/target/seed-node" "$ROOT/../shared/baseline/seed-node" /work/shared/baseline/seed-node; do
        if [[ -d "$d/node_modules/ws" ]]; then SEED=$d; break; fi
    done
fi
[[ -n "$SEED" ]] || { echo "metrics_cpu.sh: no seed-node with node_modules (run scripts/compare.sh once)" >&2; exit 1; }
ulimit -n 20000
cargo build --release -p genesys-keepalive-cli >&2
BENCH="$ROOT/target/release/genesys-keepalive"
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl

PIDS=()
cleanup() { for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "metrics_cpu.sh: nothing listens on $1" >&2; return 1
}

for round in $(seq 1 "$ROUNDS"); do
    for variant in off unscraped scraped; do
        port=$PORT; PORT=$((PORT + 1))
        PORT="$port" node "$SEED/server.js" >"$OUT/server-$round-$variant.log" 2>&1 &
        server=$!; PIDS+=("$server")
        wait_port "$port"
        cmd=("$BENCH" bench --url "ws://127.0.0.1:$port/" --connections "$N" --seconds "$SECS" --interval-ms "$INTERVAL_MS")
        [[ $variant != off ]] && cmd+=(--metrics-addr "127.0.0.1:$METRICS_PORT")
        echo "metrics_cpu.sh: round $round, $variant" >&2
        "${cmd[@]}" >"$OUT/$round-$variant.jsonl" 2>"$OUT/$round-$variant.err" &
        bench=$!
        scraper=""
        if [[ $variant == scraped ]]; then
            ( scrapes=0
              while kill -0 "$bench" 2>/dev/null; do
                  curl -s -o "$OUT/last-scrape.txt" "http://127.0.0.1:$METRICS_PORT/metrics" && scrapes=$((scrapes + 1))
                  sleep 1
              done
              echo "$scrapes" >"$OUT/$round-scrapes" ) &
            scraper=$!
        fi
        wait "$bench" || true
        [[ -n $scraper ]] && wait "$scraper"
        kill "$server"; wait "$server" 2>/dev/null || true
    done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, statistics, os
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for v in ["off", "unscraped", "scraped"]:
    rows[v] = []
    for r in range(1, rounds + 1):
        with open(f"{out}/{r}-{v}.jsonl") as f:
            line = json.loads(f.read().strip().splitlines()[-1])
        rows[v].append(line)
print("| variant | runs | open / N | acks (mean) | CPU s (each run) | CPU s (mean) | µs per heartbeat (mean) | vs off |")
print("|---|---:|---:|---:|---|---:|---:|---:|")
base = statistics.mean(l["cpu_s"] for l in rows["off"])
names = {"off": "no `--metrics-addr`", "unscraped": "`--metrics-addr`, not scraped", "scraped": "`--metrics-addr`, curl every 1 s"}
for v, ls in rows.items():
    cpu = [l["cpu_s"] for l in ls]
    m = statistics.mean(cpu)
    us = statistics.mean(l["cpu_us_per_heartbeat"] for l in ls)
    acks = statistics.mean(l["acks"] for l in ls)
    opened = "/".join(str(l["open"]) for l in ls)
    print(f"| {names[v]} | {len(ls)} | {opened} / {ls[0]['N']} | {acks:,.0f} | {', '.join(f'{c:.2f}' for c in cpu)} | {m:.2f} | {us:.1f} | {100 * (m - base) / base:+.1f} % |")
scr = [open(f"{out}/{r}-scrapes").read().strip() for r in range(1, rounds + 1) if os.path.exists(f"{out}/{r}-scrapes")]
print()
print(f"scrapes per scraped run: {', '.join(scr)}")
PY
