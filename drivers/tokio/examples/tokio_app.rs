//! Embedding the tokio driver: connect, read notifications, shut down on Ctrl-C.
//!
//! ```text
//! GENESYS_CLIENT_ID=… GENESYS_CLIENT_SECRET=… GENESYS_REGION=eu-west-1 \
//!     cargo run -p genesys-keepalive-tokio --example tokio_app -- v2.users.<userId>.presence
//! ```

use futures_util::StreamExt;
use genesys_keepalive::Config;
use genesys_keepalive_tokio::Report;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config {
        topics: std::env::args().skip(1).collect(),
        ..Config::default()
    };
    config.apply_env(|k| std::env::var(k).ok())?;

    let (handle, mut notifications) = genesys_keepalive_tokio::connect(config).await?;
    println!("connected, state {}", handle.state());

    // Audit entries and alerts as values (they are tracing events too).
    let mut reports = handle.reports();
    tokio::spawn(async move {
        while let Ok(report) = reports.recv().await {
            if let Report::Alert(alert) = report {
                eprintln!("alert: {:?} {:?}", alert.event, alert.metrics.detail);
            }
        }
    });

    loop {
        tokio::select! {
            n = notifications.next() => match n {
                Some(n) => println!("{} {}", n.topic_name, n.raw),
                None => {
                    println!("stopped: {}", handle.stopped().await);
                    return Ok(());
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let stats = handle.shutdown().await;
    println!(
        "shut down: {} heartbeats sent, {} acked, {} notifications",
        stats.heartbeats_sent, stats.heartbeats_acked, stats.notifications_delivered
    );
    Ok(())
}
