#!/usr/bin/env bash
# Whole clients side by side: the seed's Node client (client.js), the least a tokio-tungstenite client costs
# (floor-rust) and `genesys-keepalive bench` with each driver, one after the other against a fresh Node
# gateway (server.js, or scripts/server-tls.mjs for wss://), then one Markdown table per round.
# See BENCHMARKS.md, "Whole clients side by side".
#
#   scripts/compare.sh                                   # N = 5000 and 19000 over ws://, 5000 over wss://
#   NS="1000" SECS=10 TLS_NS=1000 scripts/compare.sh     # a quick run
#
# Environment (defaults in brackets):
#   NS           connection counts of the ws:// rounds ["5000 19000"]
#   TLS_NS       connection counts of the wss:// rounds ["5000"]; empty: no TLS round
#   SECS         run time of every client, seconds [20]
#   INTERVAL_MS  heartbeat interval [1000]
#   PORT         first gateway port; every run takes the next one [9301]
#   BASELINE_DIR where seed-node/ and floor-rust/ are [../shared/baseline from the repository root]
#   OUT          where raw lines and logs go [target/compare]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NS=${NS-"5000 19000"}
TLS_NS=${TLS_NS-"5000"}
SECS=${SECS:-20}
INTERVAL_MS=${INTERVAL_MS:-1000}
PORT=${PORT:-9301}
OUT=${OUT:-target/compare}
if [[ -z "${BASELINE_DIR:-}" ]]; then
    for d in "$ROOT/../shared/baseline" /work/shared/baseline; do
        if [[ -d "$d/seed-node" ]]; then BASELINE_DIR=$d; break; fi
    done
fi

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "compare.sh: $*" >&2; }

[[ -n "${BASELINE_DIR:-}" && -f "$BASELINE_DIR/seed-node/client.js" && -f "$BASELINE_DIR/floor-rust/Cargo.toml" ]] \
    || die "no baselines: set BASELINE_DIR to the directory holding seed-node/ and floor-rust/"
for tool in cargo node npm python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"
done
for n in $NS $TLS_NS "$SECS" "$INTERVAL_MS" "$PORT"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "not a positive whole number: '$n' (check NS, TLS_NS, SECS, INTERVAL_MS, PORT)"
done

# Every process started here is killed on exit, however the script ends.
PIDS=()
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
}
# Waits for a process started here and forgets it (so that cleanup never signals a reused pid).
reap() {
    local pid=$1 status=0 p kept=()
    wait "$pid" 2>/dev/null || status=$?
    for p in ${PIDS[@]+"${PIDS[@]}"}; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=(${kept[@]+"${kept[@]}"})
    return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 19,000 sockets in one process need as many descriptors (and server.js holds as many again).
NOFILE=$(ulimit -n)
if [[ $NOFILE != unlimited ]] && ((NOFILE < 20000)); then
    ulimit -n 20000 2>/dev/null \
        || die "cannot raise the open-file limit to 20000 (ulimit -n: $NOFILE, hard: $(ulimit -Hn)); run as root or raise the hard limit"
fi

# --- builds, one at a time -------------------------------------------------------------------------------
say "building genesys-keepalive (release)"
cargo build --release -p genesys-keepalive-cli
# Wherever cargo put it (CARGO_TARGET_DIR or a config may move target/).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BENCH="$TARGET_DIR/release/genesys-keepalive"
[[ -x "$BENCH" ]] || die "no $BENCH after the build"
say "building floor-rust (release)"
cargo build --release --locked --manifest-path "$BASELINE_DIR/floor-rust/Cargo.toml" --target-dir target/floor-rust
FLOOR="$ROOT/target/floor-rust/release/floor-rust"

SEED="$ROOT/target/seed-node"
if [[ ! -d "$SEED/node_modules/ws" || ! -d "$SEED/node_modules/uuid" ]]; then
    say "installing the seed-node baseline into target/seed-node"
    mkdir -p "$SEED"
    cp -r "$BASELINE_DIR/seed-node/." "$SEED/"
    chmod -R u+w "$SEED"
    (cd "$SEED" && npm install --silent --no-audit --no-fund)
fi

# Only this script's own files: a stale line must never land in a new table.
mkdir -p "$OUT"
rm -rf "$OUT/tls"
rm -f "$OUT"/*.jsonl "$OUT"/*.status "$OUT"/*.log "$OUT/env.txt" "$OUT/tables.md"

# --- TLS material ----------------------------------------------------------------------------------------
make_certs() {
    if ! command -v openssl >/dev/null; then
        say "openssl is missing: installing it (Debian)"
        { apt-get update && apt-get install -y openssl; } >&2 || die "cannot install openssl"
    fi
    local d="$OUT/tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 2 \
        -subj "/CN=genesys-keepalive compare.sh test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -subj "/CN=localhost" -keyout "$d/leaf.key" -out "$d/leaf.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/leaf.ext"
    openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -sha256 -days 2 \
        -extfile "$d/leaf.ext" -out "$d/leaf.pem" 2>/dev/null
    openssl verify -CAfile "$d/ca.pem" "$d/leaf.pem" >/dev/null || die "the generated test certificate does not verify"
    CA="$ROOT/$d/ca.pem"
    LEAF="$ROOT/$d/leaf.pem"
    LEAF_KEY="$ROOT/$d/leaf.key"
}

# --- one client run against a fresh gateway --------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NEXT_PORT=$PORT
# run_one ROUND N CLIENT: starts a gateway on the next port, runs CLIENT against it, stops the gateway.
# The client's stdout goes to $OUT/ROUND-N-CLIENT.jsonl, the gateway's to …server.log.
run_one() {
    local round=$1 n=$2 client=$3
    local port=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1)) # a fresh port: the last run's TIME_WAIT sockets cannot collide
    local base="$OUT/$round-$n-$client" scheme=ws
    local -a server
    if [[ $round == wss ]]; then
        scheme=wss
        server=(env SEED_NODE_DIR="$SEED" TLS_CERT="$LEAF" TLS_KEY="$LEAF_KEY" PORT="$port" node "$ROOT/scripts/server-tls.mjs")
    else
        server=(env PORT="$port" node "$SEED/server.js")
    fi
    port_open "$port" && die "port $port is already in use (set PORT to a free range)"
    "${server[@]}" >"$base.server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    local waited=0
    until port_open "$port"; do
        kill -0 "$spid" 2>/dev/null || die "the gateway for $client exited: $(cat "$base.server.log")"
        ((waited++ < 100)) || die "the gateway on port $port did not listen within 10 s"
        sleep 0.1
    done

    local url="$scheme://127.0.0.1:$port/"
    local -a cmd
    case $client in
        client.js)
            cmd=(env N="$n" INTERVAL_MS="$INTERVAL_MS" SECS="$SECS" URL="$url")
            [[ $round == wss ]] && cmd+=(NODE_EXTRA_CA_CERTS="$CA")
            cmd+=(node "$SEED/client.js")
            ;;
        floor-rust)
            cmd=(env N="$n" INTERVAL_MS="$INTERVAL_MS" SECS="$SECS" URL="$url" "$FLOOR")
            ;;
        bench-tokio | bench-async-std)
            cmd=("$BENCH" bench --url "$url" --driver "${client#bench-}" --connections "$n"
                --seconds "$SECS" --interval-ms "$INTERVAL_MS")
            [[ $round == wss ]] && cmd+=(--ca-cert "$CA")
            ;;
    esac
    say "$round N=$n $client -> $url"
    # Generous: the clients stop themselves after SECS; a stuck one must not hold the whole comparison.
    timeout -s KILL $((SECS + 120)) "${cmd[@]}" >"$base.jsonl" &
    local cpid=$!
    PIDS+=("$cpid")
    local status=0
    reap "$cpid" || status=$?
    echo "$status" >"$base.status"
    ((status == 0)) || say "$client exited with $status (its line, if any, is still reported)"

    kill -TERM "$spid" 2>/dev/null || true
    reap "$spid" || true
}

CLIENTS_WS=(client.js floor-rust bench-tokio bench-async-std)
CLIENTS_WSS=(client.js bench-tokio bench-async-std) # floor-rust has no TLS

for n in $NS; do
    for c in "${CLIENTS_WS[@]}"; do run_one ws "$n" "$c"; done
done
if [[ -n "${TLS_NS// /}" ]]; then
    make_certs
    for n in $TLS_NS; do
        for c in "${CLIENTS_WSS[@]}"; do run_one wss "$n" "$c"; done
    done
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); cores: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' + uncommitted changes'); node $(node --version); SECS=$SECS INTERVAL_MS=$INTERVAL_MS"
} >"$OUT/env.txt"
python3 "$ROOT/scripts/compare_table.py" "$OUT" "$NS" "$TLS_NS" | tee "$OUT/tables.md"
