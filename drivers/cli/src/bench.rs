//! `genesys-keepalive bench`: N keepalive-frame connections in this process, measured like
//! shared/baseline/seed-node/client.js (connections open, heartbeats sent/acked, RSS per connection, CPU).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use genesys_keepalive::{Config, ProfileKind, State};
use genesys_keepalive_testkit::{Gateway, GatewayConfig};
use genesys_keepalive_tokio::{Handle, Options};
use serde::Serialize;

use crate::failure::Failure;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Connections to open
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub connections: usize,
    /// Run time, counted from the start of connecting (as client.js does)
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub seconds: u64,
    /// Heartbeat interval while STABLE
    #[arg(long, value_name = "I", default_value_t = 1000)]
    pub interval_ms: u64,
    /// A gateway's keep-alive WebSocket (answers KEEP_ALIVE with KEEP_ALIVE_ACK), e.g. the seed-node
    /// server.js; by default a `genesys-keepalive gateway` child process is started
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Run the testkit gateway in this process instead of a child (its memory and CPU are then counted too)
    #[arg(long, conflicts_with = "url")]
    pub in_process_gateway: bool,
    /// Connection attempts in flight at once while connecting
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub connect_concurrency: usize,
}

/// One JSON line, with client.js's field names first.
#[derive(Serialize)]
struct BenchLine {
    #[serde(rename = "N")]
    n: usize,
    open: usize,
    sent: u64,
    acks: u64,
    rss_mb: f64,
    rss_per_conn_kb: f64,
    cpu_s: f64,
    secs: u64,
    interval_ms: u64,
    connect_failures: usize,
    connect_s: f64,
    cpu_us_per_heartbeat: f64,
    heartbeats_lost: u64,
    gateway: &'static str,
    url: String,
}

/// VmRSS of this process, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// User + system CPU time of this process (all threads), from /proc/self/stat (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall; `rest` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Where the clients connect, and what to stop at the end.
enum Target {
    External,
    InProcess(Gateway),
    Child(Child),
}

fn start_child_gateway() -> Result<(Child, String), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::internal(format!("cannot find this executable: {e}")))?;
    let mut child = Command::new(exe)
        .args([
            "gateway",
            "--port",
            "0",
            "--idle-timeout-ms",
            "0",
            "--server-heartbeat-ms",
            "0",
        ])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the gateway child: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::internal("the gateway child has no stdout"))?;
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .map_err(|e| Failure::internal(format!("cannot read the gateway's first line: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&first).map_err(|e| {
        Failure::internal(format!(
            "the gateway's first line is not JSON ({e}): {first}"
        ))
    })?;
    let url = v["keepalive_url"]
        .as_str()
        .ok_or_else(|| Failure::internal(format!("no keepalive_url in: {first}")))?
        .to_string();
    Ok((child, url))
}

fn client_config(url: &str, interval: Duration) -> Result<Config, Failure> {
    let idle = (interval * 3).max(interval + Duration::from_secs(2));
    Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(url)
        .allow_insecure(url.starts_with("ws://"))
        .heartbeat_interval(interval)
        .max_idle(idle)
        .ack_timeout(idle)
        .connect_timeout(Duration::from_secs(30))
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(5))
        .build()
        .map_err(|e| Failure::config(format!("{e}. Check --url and --interval-ms")))
}

pub fn main(args: BenchArgs) -> Result<u8, Failure> {
    if args.connections == 0 || args.seconds == 0 || args.interval_ms < 4 {
        return Err(Failure::config(
            "--connections and --seconds must be at least 1 and --interval-ms at least 4",
        ));
    }
    let interval = Duration::from_millis(args.interval_ms);
    let (target, url, kind) = match (&args.url, args.in_process_gateway) {
        (Some(u), _) => (Target::External, u.clone(), "external"),
        (None, true) => {
            let gw = Gateway::start(GatewayConfig {
                idle_timeout: Duration::ZERO,
                server_heartbeat: Duration::ZERO,
                ..GatewayConfig::default()
            })
            .map_err(|e| Failure::internal(format!("cannot start the gateway: {e}")))?;
            let url = gw.ws_url("/keepalive");
            (Target::InProcess(gw), url, "in-process")
        }
        (None, false) => {
            let (child, url) = start_child_gateway()?;
            (Target::Child(child), url, "child process")
        }
    };
    let config = client_config(&url, interval);
    let result = config.and_then(|config| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
        let line = rt.block_on(measure(config, &args, &url, kind));
        rt.shutdown_timeout(Duration::from_secs(2));
        line
    });
    match target {
        Target::Child(mut c) => {
            let _ = c.kill();
            let _ = c.wait();
        }
        Target::InProcess(gw) => gw.shutdown(),
        Target::External => {}
    }
    let line = result?;
    crate::output::emit("bench", &line);
    Ok(if line.open == line.n { 0 } else { 1 })
}

async fn measure(
    config: Config,
    args: &BenchArgs,
    url: &str,
    gateway: &'static str,
) -> Result<BenchLine, Failure> {
    let n = args.connections;
    let rss0 = rss_bytes();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);

    let limit = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let config = config.clone();
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.ok();
            // A one-slot report channel: the bench reads no reports, so none should be kept.
            let options = Options::default().seed(i as u64).reports_capacity(1);
            genesys_keepalive_tokio::connect_with(config, options).await
        });
    }
    let mut handles: Vec<Handle> = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    let mut failures = 0usize;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((h, s))) => {
                handles.push(h);
                streams.push(s);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        tracing::warn!(failures, "some connections failed; the first: {e}");
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;

    let rss = rss_bytes();
    let cpu = cpu_seconds() - cpu0;
    let mut sent = 0;
    let mut acks = 0;
    let mut lost = 0;
    let mut open = 0;
    for h in &handles {
        let s = h.stats();
        sent += s.heartbeats_sent;
        acks += s.heartbeats_acked;
        lost += s.heartbeats_lost;
        if matches!(h.state(), State::Stable | State::Degraded) {
            open += 1;
        }
    }
    let shutdowns = handles.iter().map(|h| {
        let h = h.clone();
        async move { h.shutdown().await }
    });
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures_join_all(shutdowns.collect()),
    )
    .await;
    drop(streams);

    Ok(BenchLine {
        n,
        open,
        sent,
        acks,
        rss_mb: rss as f64 / 1_048_576.0,
        rss_per_conn_kb: rss.saturating_sub(rss0) as f64 / 1024.0 / n as f64,
        cpu_s: cpu,
        secs: args.seconds,
        interval_ms: args.interval_ms,
        connect_failures: failures,
        connect_s,
        cpu_us_per_heartbeat: if acks > 0 {
            cpu * 1e6 / acks as f64
        } else {
            0.0
        },
        heartbeats_lost: lost,
        gateway,
        url: url.to_string(),
    })
}

/// Runs every future to completion concurrently (a JoinSet, to avoid another dependency).
async fn futures_join_all<F>(futures: Vec<F>)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        assert!(rss_bytes() > 0);
        let _ = cpu_seconds();
        // Burn a little CPU; the counter must not go backwards.
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds() >= before);
    }

    #[test]
    fn config_is_coherent_for_fast_and_slow_intervals() {
        for ms in [4, 100, 1000, 20_000] {
            client_config("ws://127.0.0.1:1/keepalive", Duration::from_millis(ms)).unwrap();
        }
    }
}
