//! What reqwest costs outside tokio: threads and resident memory added by the first HTTP request, measured
//! from `/proc/self/status` (Linux) against the testkit gateway on loopback.
//!
//! ```text
//! cargo run --release -p genesys-keepalive-async-std --example http_cost
//! ```
//!
//! Each variant runs in a fresh child process (this example re-executes itself):
//! - `driver`: the driver as shipped: `connect_with` on a profile whose first step is the OAuth token request
//!   (reqwest through `async-compat`), against a baseline in which the same driver already ran a socket
//!   without any HTTP;
//! - `driver-dns`: the same with the token endpoint named `localhost`, so reqwest's resolver runs as well;
//! - `compat`: one bare reqwest request wrapped in `async_compat::Compat`, polled by async-std;
//! - `blocking`: one bare `reqwest::blocking` request on async-std's blocking pool (`spawn_blocking`).
//!
//! Every variant first warms up async-std (executor, reactor) so that only the HTTP side is counted.

use std::time::Duration;

use genesys_keepalive::{Config, ProfileKind, Secret};
use genesys_keepalive_async_std::Options;
use genesys_keepalive_testkit::{Gateway, GatewayConfig};

const ID: &str = "cost-client";
const SECRET: &str = "cost-secret";

/// Threads and resident memory of this process now, and the names of its threads.
#[derive(Debug, Clone)]
struct Sample {
    threads: usize,
    rss_kib: u64,
    names: Vec<String>,
}

fn sample() -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Sample {
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
        names,
    }
}

/// The names in `after` that are not in `before` (as a multiset).
fn added(before: &Sample, after: &Sample) -> Vec<String> {
    let mut left = before.names.clone();
    let mut out = Vec::new();
    for n in &after.names {
        match left.iter().position(|m| m == n) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(n.clone()),
        }
    }
    out
}

fn gateway() -> Gateway {
    Gateway::start(GatewayConfig {
        client_id: ID.into(),
        client_secret: SECRET.into(),
        server_heartbeat: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        ..GatewayConfig::default()
    })
    .expect("the gateway starts")
}

/// A keepalive-frame configuration against the gateway; with credentials its first step is an HTTP token
/// request, without them there is no HTTP at all.
fn keepalive(gw: &Gateway, credentials: bool, login_base: String) -> Config {
    let mut b = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(gw.ws_url("/keepalive"))
        .login_base(login_base)
        .allow_insecure(true);
    if credentials {
        b = b.credentials(ID, Secret::new(SECRET));
    }
    b.build().expect("a valid config")
}

/// Runs the driver once without HTTP, so async-std, the reactor and the WebSocket side are warm.
async fn warm_up(gw: &Gateway) {
    let (handle, _n) = genesys_keepalive_async_std::connect_with(
        keepalive(gw, false, gw.base_url()),
        Options::default().seed(1),
    )
    .await
    .expect("connects");
    async_std::task::sleep(Duration::from_millis(300)).await;
    handle.shutdown().await;
    // Let transient threads (e.g. an idle blocking-pool thread) wind down.
    async_std::task::sleep(Duration::from_secs(2)).await;
}

fn variant(name: &str) {
    let gw = gateway();
    let (before, during, after) = async_std::task::block_on(async {
        warm_up(&gw).await;
        let before = sample();
        let during = match name {
            "driver" | "driver-dns" => {
                // driver-dns: the token endpoint by name, so reqwest's resolver runs too.
                let base = match name {
                    "driver" => gw.base_url(),
                    _ => format!("http://localhost:{}", gw.port()),
                };
                let (handle, _n) = genesys_keepalive_async_std::connect_with(
                    keepalive(&gw, true, base),
                    Options::default().seed(1),
                )
                .await
                .expect("connects");
                assert_eq!(gw.stats().tokens_issued, 1);
                let during = sample();
                handle.shutdown().await;
                during
            }
            "compat" => {
                let client = reqwest::Client::new();
                let url = format!("{}/oauth/token", gw.base_url());
                let status = async_compat::Compat::new(async {
                    client
                        .post(url)
                        .basic_auth(ID, Some(SECRET))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("grant_type=client_credentials")
                        .send()
                        .await
                        .expect("a response")
                        .status()
                })
                .await;
                assert!(status.is_success(), "{status}");
                sample()
            }
            "blocking" => {
                let url = format!("{}/oauth/token", gw.base_url());
                let (status, client) = async_std::task::spawn_blocking(move || {
                    let client = reqwest::blocking::Client::new();
                    let status = client
                        .post(url)
                        .basic_auth(ID, Some(SECRET))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("grant_type=client_credentials")
                        .send()
                        .expect("a response")
                        .status();
                    (status, client)
                })
                .await;
                assert!(status.is_success(), "{status}");
                let during = sample();
                // A blocking client joins its runtime thread on drop: not on an async thread.
                async_std::task::spawn_blocking(move || drop(client)).await;
                during
            }
            other => panic!("unknown variant {other}"),
        };
        async_std::task::sleep(Duration::from_secs(2)).await;
        (before, during, sample())
    });
    println!(
        "{name:<10} threads {:>2} -> {:>2} (+{}) during, {:>2} two seconds later; VmRSS {:>6} -> {:>6} KiB (+{} KiB); new threads: {:?}",
        before.threads,
        during.threads,
        during.threads.saturating_sub(before.threads),
        after.threads,
        before.rss_kib,
        during.rss_kib,
        during.rss_kib.saturating_sub(before.rss_kib),
        added(&before, &during),
    );
}

fn main() {
    match std::env::args().nth(1) {
        Some(name) => variant(&name),
        None => {
            let me = std::env::current_exe().expect("the example's path");
            for name in ["driver", "driver-dns", "compat", "blocking"] {
                let status = std::process::Command::new(&me)
                    .arg(name)
                    .status()
                    .expect("the child runs");
                assert!(status.success(), "{name}: {status}");
            }
        }
    }
}
