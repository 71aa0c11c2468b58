//! `--metrics-addr`: serves the drivers' metrics (the `metrics` facade) in the Prometheus text format at
//! `http://ADDR/metrics` (any path answers), with `metrics-exporter-prometheus`'s HTTP listener on a thread
//! of its own, so that the connections' runtime never runs it.

use std::net::SocketAddr;

use genesys_keepalive_driver_common::metrics::{describe, histogram_bounds};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::failure::Failure;

/// Installs the Prometheus recorder and starts its listener on `addr`; exit 2 if it cannot bind.
pub fn serve(addr: SocketAddr) -> Result<(), Failure> {
    let bounds = histogram_bounds();
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        // The core's half-octave bounds: the exporter's bucket counts are then exactly the core's.
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &bounds)
        .map_err(|e| Failure::internal(format!("metrics buckets: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("cannot start the metrics runtime: {e}")))?;
    let (recorder, exporter) = {
        let _guard = rt.enter();
        builder.build().map_err(|e| {
            Failure::config(format!("--metrics-addr {addr}: cannot serve metrics: {e}"))
        })?
    };
    metrics::set_global_recorder(recorder)
        .map_err(|e| Failure::internal(format!("cannot install the metrics recorder: {e}")))?;
    describe();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            if let Err(e) = rt.block_on(exporter) {
                tracing::error!("the metrics listener stopped: {e:?}");
            }
        })
        .map_err(|e| Failure::internal(format!("cannot start the metrics thread: {e}")))?;
    tracing::info!("metrics at http://{addr}/metrics");
    Ok(())
}
