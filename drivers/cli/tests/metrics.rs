//! `--metrics-addr`: what `/metrics` serves is what README.md's table lists, and a real Prometheus
//! (Debian's `prometheus` binary, run here with a temporary config and data directory on loopback) scrapes
//! `genesys-keepalive run` against the testkit gateway through two injected blackholes.
//!
//! The Prometheus test skips with a message when the binary is missing, except under `CI=true`, where it
//! fails (`.ci/run` installs the package).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use genesys_keepalive_testkit::{Fault, Gateway, GatewayConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_genesys-keepalive");
const CLIENT_ID: &str = "metrics-test-client";
const SECRET: &str = "Mx7-metrics-SECRET-91c2";
const TOPIC: &str = "v2.users.metrics-test.presence";
const HEARTBEAT_MS: u64 = 500;

fn gateway() -> Gateway {
    Gateway::start(GatewayConfig {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        token_lifetime: Duration::from_secs(600),
        server_heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    })
    .expect("gateway starts")
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `genesys-keepalive run` against `gw` with compressed timings, serving metrics on `port`.
fn run_cli(gw: &Gateway, port: u16) -> Killed {
    let base = gw.base_url();
    let hb = HEARTBEAT_MS.to_string();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "run",
        "--api-base",
        &base,
        "--login-base",
        &base,
        "--allow-insecure",
        "--topic",
        TOPIC,
        "--heartbeat-interval-ms",
        &hb,
        "--idle-timeout-ms",
        "3000",
        "--ack-timeout-ms",
        "1500",
        "--backoff-base-ms",
        "200",
        "--backoff-max-ms",
        "2000",
        "--min-uptime-ms",
        "3000",
        "--stats-interval-ms",
        "0",
        "--seed",
        "11",
        "--metrics-addr",
        &addr,
    ];
    let child = Command::new(BIN)
        .args(args)
        .env("GENESYS_CLIENT_ID", CLIENT_ID)
        .env("GENESYS_CLIENT_SECRET", SECRET)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    Killed(child)
}

/// An HTTP/1.0 GET on loopback: (status, body). HTTP/1.0 keeps the body unchunked.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `# TYPE name kind` lines of a Prometheus text page, sorted.
fn served_types(page: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect();
    v.sort();
    v
}

/// (name, type) of every row of README.md's metrics table, sorted.
fn readme_types() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- metrics-table:start -->")
        .expect("table start marker");
    let end = readme
        .find("<!-- metrics-table:end -->")
        .expect("table end marker");
    let mut v: Vec<(String, String)> = readme[start..end]
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect();
    v.sort();
    v
}

/// The value of the series of `name` whose labels contain `labels` on a text page.
fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `/metrics` until `pred` holds on the page (or panics after `timeout`).
fn wait_page(addr: SocketAddr, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some((200, page)) = get(addr, "/metrics") {
            if pred(&page) {
                return page;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "/metrics never showed what was awaited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_served_are_the_readme_table() {
    let gw = gateway();
    let port = free_port();
    let _cli = run_cli(&gw, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let page = wait_page(addr, Duration::from_secs(15), |p| {
        sample(p, "genesys_keepalive_heartbeats_acked_total", "").unwrap_or(0.0) >= 2.0
    });
    let served = served_types(&page);
    let documented = readme_types();
    assert!(!documented.is_empty(), "README's table is empty");
    assert_eq!(
        served, documented,
        "README.md's metrics table (name, type) and what /metrics serves differ"
    );
    // Every series carries the three labels.
    for l in page.lines().filter(|l| l.starts_with("genesys_keepalive_")) {
        for label in [
            "connection=\"default\"",
            "profile=\"notifications\"",
            "driver=\"tokio\"",
        ] {
            assert!(l.contains(label), "{l} lacks {label}");
        }
    }
    assert_eq!(
        sample(&page, "genesys_keepalive_state", "state=\"stable\""),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "genesys_keepalive_state", "state=\"connecting\""),
        Some(0.0)
    );
    assert_eq!(
        sample(&page, "genesys_keepalive_connections_open", ""),
        Some(1.0)
    );
    assert!(sample(&page, "genesys_keepalive_rtt_seconds_count", "").unwrap_or(0.0) >= 2.0);
}

/// The Prometheus binary, or `None` (a skip outside CI, a failure under `CI=true`).
fn prometheus_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no prometheus binary: .ci/run must `apt-get install -y prometheus`"
        );
        eprintln!("SKIPPED: prometheus is not installed (apt-get install -y prometheus); not in CI, so skipping");
    }
    found
}

/// A Prometheus scraping `target` every second, on its own loopback port, data in a temporary directory.
struct Prometheus {
    _child: Killed,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(bin: &PathBuf, target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("gk-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gk\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            _child: Killed(child),
            addr,
            dir,
        };
        let start = Instant::now();
        while !matches!(get(addr, "/-/ready"), Some((200, _))) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready; its log: {}",
                std::fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// An instant query through the HTTP API: every series' value (NaN-free numbers only).
    fn query(&self, promql: &str) -> Vec<f64> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let Some((200, body)) = get(self.addr, &path) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).expect("JSON from the query API");
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|x| x.is_finite())
            .collect()
    }

    /// The single value of `promql`, polled until `pred` holds (or panics after `timeout`).
    fn wait(&self, promql: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            if let [x] = self.query(promql)[..] {
                if pred(x) {
                    return x;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "{promql}: not as expected within {timeout:?}, last {:?}",
                self.query(promql)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_heartbeats_reconnects_and_rtt() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let gw = gateway();
    let port = free_port();
    let _cli = run_cli(&gw, port);
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let prom = Prometheus::start(&bin, target);
    let long = Duration::from_secs(30);
    prom.wait(r#"genesys_keepalive_state{state="stable"}"#, long, |x| {
        x == 1.0
    });
    let before = prom.wait("genesys_keepalive_reconnects_total", long, |_| true);
    assert_eq!(before, 0.0, "a reconnect before any fault");

    // Steady state: 12 s of scrapes, then the heartbeat rate over the last 10 s.
    std::thread::sleep(Duration::from_secs(12));
    let expected = 1000.0 / HEARTBEAT_MS as f64;
    let rate = prom.wait(
        "rate(genesys_keepalive_heartbeats_sent_total[10s])",
        long,
        |_| true,
    );
    eprintln!(
        "heartbeat rate by Prometheus: {rate:.3}/s (interval {HEARTBEAT_MS} ms: {expected}/s)"
    );
    assert!(
        (expected * 0.6..=expected * 1.4).contains(&rate),
        "rate() of heartbeats {rate}/s, expected about {expected}/s"
    );

    // Two blackholes, one after the other: each costs exactly one reconnect.
    const FAULTS: u32 = 2;
    for i in 1..=FAULTS {
        gw.set_fault(Fault::Blackhole);
        let want = before + f64::from(i);
        prom.wait("genesys_keepalive_reconnects_total", long, |x| x >= want);
        prom.wait(r#"genesys_keepalive_state{state="stable"}"#, long, |x| {
            x == 1.0
        });
        // A few heartbeats on the new socket before the next fault.
        std::thread::sleep(Duration::from_secs(3));
    }
    // Settled: a few more scrapes, and the counters rose by exactly the faults injected.
    std::thread::sleep(Duration::from_secs(3));
    let reconnects = prom.wait("genesys_keepalive_reconnects_total", long, |_| true);
    assert_eq!(
        reconnects - before,
        f64::from(FAULTS),
        "reconnects per injected fault"
    );
    let dead = prom.wait("genesys_keepalive_dead_peers_total", long, |_| true);
    assert_eq!(dead, f64::from(FAULTS), "dead peers per injected fault");
    let alerts = prom.wait(
        r#"genesys_keepalive_alerts_total{event="dead_peer"}"#,
        long,
        |_| true,
    );
    assert_eq!(
        alerts,
        f64::from(FAULTS),
        "DEAD_PEER alerts per injected fault"
    );
    let gaps = prom.wait(
        r#"genesys_keepalive_gaps_total{reason="dead_peer"}"#,
        long,
        |_| true,
    );
    assert_eq!(
        gaps,
        f64::from(FAULTS),
        "dead_peer gap reports per injected fault"
    );

    // The RTT histogram has samples, and a median Prometheus can compute from its buckets.
    let count = prom.wait("genesys_keepalive_rtt_seconds_count", long, |_| true);
    assert!(count >= 10.0, "RTT samples: {count}");
    let p50 = prom.wait(
        "histogram_quantile(0.5, sum by (le) (genesys_keepalive_rtt_seconds_bucket))",
        long,
        |_| true,
    );
    assert!(p50 > 0.0 && p50 < 1.5, "RTT p50 {p50} s");
    eprintln!(
        "prometheus: {reconnects} reconnects, {dead} dead peers for {FAULTS} blackholes; {count} RTT samples, p50 {:.2} ms",
        p50 * 1000.0
    );
}
