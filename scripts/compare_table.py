#!/usr/bin/env python3
"""The Markdown tables of scripts/compare.sh, from the raw lines it kept.

    python3 scripts/compare_table.py OUT "NS" "TLS_NS"

OUT holds ROUND-N-CLIENT.jsonl (each client's stdout: one JSON line) and ROUND-N-CLIENT.status (its exit
status). Every figure is recomputed the same way for every client from the fields all of them print
(N, open, sent, acks, rss_per_conn_kb, cpu_s); connect time, lateness and RTT only where a client reports them.
"""

import json
import os
import sys

# Every round's rows; floor-rust's is n/a in the wss:// rounds (it has no TLS).
CLIENTS = ["client.js", "floor-rust", "bench-tokio", "bench-async-std"]
NA = "n/a"


def load(out, rnd, n, client):
    """The client's JSON line (a dict), or a dict with only 'failed' when it printed none."""
    base = os.path.join(out, f"{rnd}-{n}-{client}")
    status = None
    try:
        with open(base + ".status") as f:
            status = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    line = None
    try:
        with open(base + ".jsonl") as f:
            for raw in f:
                raw = raw.strip()
                if raw.startswith("{"):
                    try:
                        line = json.loads(raw)
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    if line is None:
        return {"failed": "not run" if status is None else f"no line (exit {status})"}
    line["_status"] = status
    return line


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cpu_us(line):
    """CPU per acknowledged heartbeat round trip, µs, the same way for every client."""
    cpu, acks = num(line.get("cpu_s")), num(line.get("acks"))
    return cpu * 1e6 / acks if cpu is not None and acks else None


def fmt(v, digits=1):
    if v is None:
        return NA
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else NA


def table(out, rnd, n, clients):
    lines = {c: load(out, rnd, n, c) for c in clients}
    node = lines.get("client.js", {})
    floor = lines.get("floor-rust", {}) if rnd == "ws" else {}
    node_rss, node_cpu = num(node.get("rss_per_conn_kb")), cpu_us(node)
    floor_rss, floor_cpu = num(floor.get("rss_per_conn_kb")), cpu_us(floor)
    scheme = "wss://" if rnd == "wss" else "ws://"
    head = [
        "client", "N", "open", "sent", "acked", "sent−acked %", "RSS KiB/conn", "CPU µs/heartbeat",
        "connect s", "lateness p99 ms", "RTT p99 ms", "RSS ÷ client.js", "CPU ÷ client.js",
        "RSS ÷ floor-rust", "CPU ÷ floor-rust",
    ]
    rows = []
    for c in clients:
        line = lines[c]
        name = c
        if c.startswith("bench-"):
            name = f"bench --driver {c[len('bench-'):]} ({line.get('runtime', '?')})"
        if rnd == "wss" and c == "floor-rust":
            rows.append([name, fmt(n)] + [NA] * (len(head) - 2))
            continue
        if "failed" in line:
            rows.append([name, fmt(n), line["failed"]] + [NA] * (len(head) - 3))
            continue
        sent, acks = num(line.get("sent")), num(line.get("acks"))
        loss = (sent - acks) * 100.0 / sent if sent and acks is not None else None
        rss, cpu = num(line.get("rss_per_conn_kb")), cpu_us(line)
        open_ = num(line.get("open"))
        open_s = fmt(open_)
        if open_ is not None and open_ != line.get("N", n):
            open_s += " ⚠"
        rows.append([
            name, fmt(line.get("N", n)), open_s, fmt(sent), fmt(acks), fmt(loss, 2), fmt(rss), fmt(cpu),
            fmt(num(line.get("connect_s")), 2), fmt(num(line.get("lateness_p99_ms")), 2),
            fmt(num(line.get("rtt_p99_ms")), 2),
            ratio(rss, node_rss), ratio(cpu, node_cpu),
            ratio(rss, floor_rss), ratio(cpu, floor_cpu),
        ])
    md = [f"### {scheme} N = {n:,}", "", "| " + " | ".join(head) + " |",
          "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md), lines


def main():
    out, ns, tls_ns = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
    try:
        with open(os.path.join(out, "env.txt")) as f:
            print(f.read().rstrip())
            print()
    except OSError:
        pass
    ws = {}
    for n in ns:
        md, ws[int(n)] = table(out, "ws", int(n), CLIENTS)
        print(md)
        print()
    for n in tls_ns:
        md, wss = table(out, "wss", int(n), CLIENTS)
        print(md)
        print()
        for drv in ("tokio", "async-std"):
            c = f"bench-{drv}"
            tls_rss = num(wss.get(c, {}).get("rss_per_conn_kb"))
            plain = ws.get(int(n))
            plain_rss = num(plain.get(c, {}).get("rss_per_conn_kb")) if plain else None
            if tls_rss is None or plain_rss is None:
                why = f"no ws:// round at N = {int(n):,}" if plain is None else "a run printed no figures"
                print(f"rustls per connection, {drv} driver, N = {int(n):,}: {NA} ({why})")
            else:
                print(f"rustls per connection, {drv} driver, N = {int(n):,}: {tls_rss - plain_rss:,.1f} KiB "
                      f"(bench wss:// {tls_rss:,.1f} − ws:// {plain_rss:,.1f} KiB/conn)")
        print()
    print("CPU µs/heartbeat = cpu_s × 10⁶ / acked for every client; lateness and RTT are p99 bucket bounds "
          "over every connection (bench only); ⚠ = not every connection open at the end.")
    print(f"Raw lines: {out}/*.jsonl")


if __name__ == "__main__":
    main()
