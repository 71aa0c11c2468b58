//! Embedding the async-std driver: connect, print notifications and alerts, shut down when Enter is pressed
//! (or stdin closes).
//!
//! ```text
//! GENESYS_CLIENT_ID=… GENESYS_CLIENT_SECRET=… GENESYS_REGION=eu-west-1 \
//!     cargo run -p genesys-keepalive-async-std --example async_std_app -- v2.users.<userId>.presence
//! ```
//!
//! Under smol the same code works with `smol::block_on` in place of `#[async_std::main]` and, to keep the
//! driver's tasks on smol's executor, `Options::default().spawner(Spawner::new(|t| smol::spawn(t).detach()))`
//! passed to `connect_with`.

use futures_lite::future;
use futures_util::StreamExt;
use genesys_keepalive::Config;
use genesys_keepalive_async_std::Report;

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config {
        topics: std::env::args().skip(1).collect(),
        ..Config::default()
    };
    config.apply_env(|k| std::env::var(k).ok())?;

    let (handle, mut notifications) = genesys_keepalive_async_std::connect(config).await?;
    println!("connected, state {}", handle.state());

    // Audit entries and alerts as values (they are tracing events too).
    let mut reports = handle.reports();
    async_std::task::spawn(async move {
        while let Some(report) = reports.next().await {
            if let Report::Alert(alert) = report {
                eprintln!("alert: {:?} {:?}", alert.event, alert.metrics.detail);
            }
        }
    });

    // Enter (or the end of stdin) asks for a graceful shutdown.
    let enter = async_std::task::spawn(async {
        let mut line = String::new();
        let _ = async_std::io::stdin().read_line(&mut line).await;
    });

    let printing = async {
        while let Some(n) = notifications.next().await {
            println!("{} {}", n.topic_name, n.raw);
        }
        false // the machine stopped by itself
    };
    let asked_to_stop = future::or(printing, async {
        enter.await;
        true
    })
    .await;
    if !asked_to_stop {
        println!("stopped: {}", handle.stopped().await);
        return Ok(());
    }
    let stats = handle.shutdown().await;
    println!(
        "shut down: {} heartbeats sent, {} acked, {} notifications",
        stats.heartbeats_sent, stats.heartbeats_acked, stats.notifications_delivered
    );
    Ok(())
}
