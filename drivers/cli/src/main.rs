//! `genesys-keepalive`: keeps a Genesys Cloud notification WebSocket (or any keep-alive-frame gateway) alive
//! and reports everything as JSON lines; runs a local test gateway; demonstrates recovery from scripted faults;
//! benchmarks many connections.
//!
//! Exit codes: 0 success (or a graceful shutdown on SIGINT/SIGTERM), 1 an internal failure (and, for `demo`,
//! a lost or duplicated notification), 2 bad configuration or input, 3 authentication or authorization refused,
//! 4 every reconnect attempt failed, 5 (`fleet`) a signal ended a fleet in which some connection had stopped.
#![forbid(unsafe_code)]

mod bench;
mod checkpoint;
mod demo;
mod failure;
mod fleet;
mod gateway_cmd;
mod metrics_export;
mod output;
mod plot;
mod run;
mod settings;
mod shard;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const RUN_ABOUT: &str =
    "Connect and keep the connection alive; print one JSON object per line on stdout";

const RUN_LONG: &str = "\
Connect and keep the connection alive until SIGINT/SIGTERM; print one JSON object per line on stdout.

Credentials come from the environment only: GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET (never from flags or \
files). Settings are applied in this order, each overriding the one before: the defaults, the --config file \
(TOML with any Config field, durations as `*_ms`; unknown fields are an error), the environment \
(GENESYS_REGION, GENESYS_API_BASE, GENESYS_LOGIN_BASE), then the flags.

Output lines on stdout (each has a `kind`):
  {\"kind\":\"state\",\"state\":\"STABLE\",\"from\":\"CONNECTING\",\"timestamp\":\"…\"}
  {\"kind\":\"audit\",\"timestamp\":…,\"connectionId\":…,\"event\":\"CONNECTED\",\"payloadSize\":…,\"state\":…,\"error\":…}
  {\"kind\":\"alert\",\"event\":\"DEAD_PEER\",\"metrics\":{…},\"timestamp\":\"…\"}
  {\"kind\":\"notification\",\"topicName\":…,\"eventBody\":{…},\"metadata\":{…},…}   (the notification as received)
  {\"kind\":\"stats\",\"timestamp\":\"…\",\"final\":false,\"state\":…,\"heartbeats_sent\":…,…}   (every \
--stats-interval-ms, and a last one with \"final\":true)
  {\"kind\":\"gap\",\"from\":\"…\",\"to\":\"…\",\"duration_ms\":…,\"reason\":\"dead_peer\",\"topics\":[…]}   \
(notifications may have been missed: re-read state for that window; reasons in the README)
Human-readable logs go to stderr (filter with RUST_LOG, default `warn`).

--state-dir DIR keeps a checkpoint in DIR/default.json: the time up to which the connection was known to \
be receiving, {\"version\":1,\"connection\":\"default\",\"receiving_since\":\"<ISO-8601>\",…} (nothing \
secret), rewritten atomically every 2 s when it changed and at exit. A later start with the same DIR \
reads it and prints the restart as a gap with \"reason\":\"restart\" from that time to the first \
confirmed subscription. No file: a fresh start, no gap. A file that cannot be read or parsed, or a DIR \
that cannot be created or written: exit 2 before anything connects.

Exit codes: 0 after SIGINT/SIGTERM (graceful close 1000), 2 bad configuration or input, 3 authentication or \
authorization refused (bad credentials, a forbidden topic), 4 every reconnect attempt failed. A terminal \
failure prints one `error: …` line on stderr.";

const GATEWAY_LONG: &str = "\
Run the testkit's local Genesys Cloud gateway on 127.0.0.1 until SIGINT/SIGTERM.

It serves the real paths: POST /oauth/token, POST /api/v2/notifications/channels, PUT|POST \
/api/v2/notifications/channels/<id>/subscriptions, the notification WebSocket /channels/<id> and the seed's \
KEEP_ALIVE WebSocket /keepalive. The first stdout line is JSON:
  {\"kind\":\"gateway\",\"base_url\":\"http://127.0.0.1:PORT\",\"keepalive_url\":\"ws://127.0.0.1:PORT/keepalive\",\"tls\":false}
(with --tls also \"ca_pem\"). On SIGINT/SIGTERM it prints {\"kind\":\"gateway_stats\",…} and exits 0.

Point a client at it with:
  GENESYS_CLIENT_ID=test-client GENESYS_CLIENT_SECRET=test-secret \\
  genesys-keepalive run --api-base http://127.0.0.1:PORT --login-base http://127.0.0.1:PORT --allow-insecure --topic v2.t

Control API (JSON bodies):
  POST /testkit/fault          {\"kind\":\"blackhole\"|\"reset\"|\"garbage\"|\"none\"} or {\"kind\":\"latency\",\"ms\":400}
                               blackhole: open sockets go silent (half-open TCP); reset: TCP RST; garbage: a burst \
of malformed frames; latency: delay every outbound frame until the next fault call; none: clear latency
  POST /testkit/publish        {\"topic\":\"v2.t\",\"body\":{…}}  -> {\"seq\":N}  (numbered notification to every subscribed socket)
  POST /testkit/socket-closing -> {\"sockets\":N}  (v2.system.socket_closing, then close 1001 after the grace period)
  POST /testkit/expire-tokens  every token issued so far expires now
  POST /testkit/forbid-topic   {\"topic\":\"v2.x\"}  (subscriptions including it answer 403)
  POST /testkit/script         {\"endpoint\":\"token\"|\"create_channel\"|\"subscriptions\"|\"web_socket\",\
\"responses\":[{\"status\":429,\"retry_after\":2,\"body\":\"…\"}]}
  GET  /testkit/stats          the gateway's counters (GatewayStats)";

const DEMO_LONG: &str = "\
Start the local gateway in-process, connect the tokio driver to it with compressed timings (heartbeat 500 ms, \
idle timeout 2 s, ack timeout 1 s, backoff base 200 ms, tokens living 6 s) and run a scripted fault schedule \
while publishing a numbered notification every 100 ms: a latency spike, an early token expiry, a planned close \
(v2.system.socket_closing rollover) and a blackhole (half-open peer).

A status line goes to stderr (live when stderr is a terminal, every 2 s otherwise); the summary table goes to \
stdout. Exit 0 when no notification was lost or duplicated, 1 otherwise.";

const BENCH_LONG: &str = "\
Open N keepalive-frame connections in this process with the tokio driver (--driver tokio) or the async-std \
driver (--driver async-std), on one thread (tokio's current-thread runtime, or one async-executor) unless \
--runtime multi-thread (tokio's work-stealing runtime, or async-std's global executor), \
against a gateway's keep-alive WebSocket (by default a `genesys-keepalive gateway` child process, so only the \
clients are measured; or --url, ws:// or wss://, with --ca-cert for a test CA), for S seconds with a heartbeat \
every I ms. Prints one JSON line: connections open, heartbeats sent/acked, RSS per connection (VmRSS \
before/after), CPU seconds — the same figures as shared/baseline/seed-node/client.js — plus the driver, the \
runtime, the connect time and the p50/p99 of heartbeat schedule lateness and of RTT over every connection \
(lateness_p50_ms, lateness_p99_ms, rtt_p50_ms, rtt_p99_ms). A progress line goes to stderr while connecting \
when stderr is a terminal. Exit 0 when every connection is open at the end, 1 otherwise, 2 for bad flags or an \
unreadable --ca-cert.";

const FLEET_LONG: &str = "\
Run one keep-alive connection per organisation of a fleet file, in this process (one runtime, one HTTP \
client, one TLS configuration), until SIGINT/SIGTERM.

The file (TOML) has an optional [defaults] table with any field of the `run` configuration file, applied to \
every connection, and one [[connection]] table per organisation: `name` (unique), `client_id_env` and \
`client_secret_env` (the names of the environment variables holding its credentials; secrets never live in \
the file) and any `run` field (region, api_base, login_base, topics, allow_insecure, timings as `*_ms`), which \
overrides the defaults. A bad file (unknown field, duplicate name, missing variable) is refused before \
anything connects (exit 2), naming the connection and the field.

Output: the same JSON lines as `run`, each with \"connection\":\"<name>\" right after `kind`. A connection \
that stops on its own prints {\"kind\":\"stopped\",\"connection\":…,\"reason\":…,\"exit_code\":N} (the \
code `run` would exit with) and the others go on.

--state-dir DIR keeps one checkpoint per connection, DIR/<name>.json (the name %-escaped outside \
[A-Za-z0-9._-]), as `run --state-dir` does: after a restart each connection prints the time it was down \
as a gap with \"reason\":\"restart\". With --shard, give every replica its own DIR (a StatefulSet \
volumeClaimTemplate).

--shard K/N takes only the connections whose name falls to shard K (0 to N-1) under rendezvous hashing \
(FNV-1a-64 of the name and the shard index, SplitMix64 finalizer; stable across builds), so that N \
replicas can share one file.

Exit codes: after SIGINT/SIGTERM (every socket closed with 1000, a final stats line per running connection) \
0 if every connection was still running, 5 if one or more had stopped on their own; if every connection stops \
on its own, the first one's code (3 refused credentials or topic, 4 reconnect attempts exhausted); 2 a bad \
fleet file or flag.";

#[derive(Parser)]
#[command(
    name = "genesys-keepalive",
    version,
    about = "Keep a Genesys Cloud notification WebSocket alive: heartbeats, dead-peer detection, token refresh, reconnects, rollover",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(about = RUN_ABOUT, long_about = RUN_LONG)]
    Run(Box<settings::RunArgs>),
    /// Run the local test gateway (OAuth, channels, WebSockets, fault injection over HTTP)
    #[command(long_about = GATEWAY_LONG)]
    Gateway(gateway_cmd::GatewayArgs),
    /// Show recovery from scripted faults against an in-process gateway, with zero lost notifications
    #[command(long_about = DEMO_LONG)]
    Demo(demo::DemoArgs),
    /// Many keepalive-frame connections in one process: memory and CPU per connection
    #[command(long_about = BENCH_LONG)]
    Bench(bench::BenchArgs),
    /// Many organisations in one process: one connection per [[connection]] of a fleet file
    #[command(long_about = FLEET_LONG)]
    Fleet(Box<fleet::FleetArgs>),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            init_tracing("warn");
            run::main(*args)
        }
        Command::Gateway(args) => {
            init_tracing("info");
            gateway_cmd::main(args)
        }
        Command::Demo(args) => {
            init_tracing("error");
            demo::main(args)
        }
        Command::Bench(args) => {
            init_tracing("error");
            bench::main(args)
        }
        Command::Fleet(args) => {
            init_tracing("warn");
            fleet::main(*args)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            failure.print();
            ExitCode::from(failure.code)
        }
    }
}
