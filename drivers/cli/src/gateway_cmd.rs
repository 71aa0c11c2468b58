//! `genesys-keepalive gateway`: the testkit's local gateway as a process of its own.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use genesys_keepalive_testkit::{Gateway, GatewayConfig};
use serde::Serialize;

use crate::failure::Failure;
use crate::output;
use crate::signals::Shutdown;

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Port on 127.0.0.1 (0: an ephemeral port, printed on the first line)
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub port: u16,
    /// The OAuth client id the token endpoint accepts [default: test-client]
    #[arg(long, value_name = "ID", env = "GENESYS_CLIENT_ID")]
    pub client_id: Option<String>,
    /// The OAuth client secret the token endpoint accepts [default: test-secret]
    #[arg(
        long,
        value_name = "S",
        env = "GENESYS_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<String>,
    /// Lifetime of the access tokens it issues, in seconds
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub token_lifetime_s: u64,
    /// Server heartbeat interval on notification sockets (0: off)
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    pub server_heartbeat_ms: u64,
    /// Close a socket with 1001 "idle timeout" after this long without a client frame (0: off)
    #[arg(long, value_name = "N", default_value_t = 45_000)]
    pub idle_timeout_ms: u64,
    /// After socket-closing, how long before the gateway closes those sockets (1001)
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    pub socket_closing_grace_ms: u64,
    /// Serve HTTPS/WSS with a freshly made CA (its PEM is in the first line as `ca_pem`)
    #[arg(long)]
    pub tls: bool,
    /// With --tls, also write the CA's PEM to this file (for `run --ca-cert FILE`)
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca_out: Option<PathBuf>,
    /// More OAuth clients to accept (e.g. one per organisation of a `fleet`): one `ID SECRET` pair per
    /// line, blank lines and `#` comments ignored. Secrets stay off the command line
    #[arg(long, value_name = "FILE")]
    pub clients_file: Option<PathBuf>,
}

/// The `ID SECRET` pairs of a `--clients-file`.
pub fn read_clients(path: &std::path::Path) -> Result<Vec<(String, String)>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::config(format!(
            "cannot read the clients file {}: {e}",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(secret), None) => out.push((id.to_string(), secret.to_string())),
            _ => {
                return Err(Failure::config(format!(
                    "{} line {}: expected `ID SECRET`",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Started<'a> {
    base_url: String,
    keepalive_url: String,
    token_url: String,
    channels_url: String,
    control_url: String,
    tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_pem: Option<&'a str>,
}

pub fn gateway_config(args: &GatewayArgs) -> GatewayConfig {
    let d = GatewayConfig::default();
    GatewayConfig {
        port: args.port,
        client_id: args
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or(d.client_id.clone()),
        client_secret: args
            .client_secret
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or(d.client_secret.clone()),
        token_lifetime: Duration::from_secs(args.token_lifetime_s),
        server_heartbeat: Duration::from_millis(args.server_heartbeat_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        tls: args.tls,
        socket_closing_grace: Duration::from_millis(args.socket_closing_grace_ms),
        ..d
    }
}

/// The first line of `gateway`.
pub fn started_line(gw: &Gateway) -> String {
    let base = gw.base_url();
    output::json_line(
        "gateway",
        &Started {
            keepalive_url: gw.ws_url("/keepalive"),
            token_url: format!("{base}/oauth/token"),
            channels_url: format!("{base}/api/v2/notifications/channels"),
            control_url: format!("{base}/testkit"),
            base_url: base,
            tls: gw.is_tls(),
            ca_pem: gw.ca_cert_pem(),
        },
    )
}

/// The gateway's counters without the request log.
pub fn stats_value(gw: &Gateway) -> serde_json::Value {
    let mut v = serde_json::to_value(gw.stats()).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("requests");
    }
    v
}

pub fn main(args: GatewayArgs) -> Result<u8, Failure> {
    if args.token_lifetime_s == 0 {
        return Err(Failure::config("--token-lifetime-s must be at least 1"));
    }
    let clients = match &args.clients_file {
        Some(path) => read_clients(path)?,
        None => Vec::new(),
    };
    let gw = Gateway::start(gateway_config(&args)).map_err(|e| {
        Failure::config(format!(
            "cannot start the gateway on 127.0.0.1:{}: {e}; pick another --port (0 for any)",
            args.port
        ))
    })?;
    if let (Some(path), Some(pem)) = (&args.ca_out, gw.ca_cert_pem()) {
        std::fs::write(path, pem).map_err(|e| {
            Failure::config(format!("cannot write the CA to {}: {e}", path.display()))
        })?;
    }
    for (id, secret) in &clients {
        gw.add_client(id, secret);
    }
    output::emit_raw(&started_line(&gw));
    tracing::info!(base_url = %gw.base_url(), "gateway running; SIGINT or SIGTERM stops it");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
    let sig = rt.block_on(async {
        let mut signals = Shutdown::install()
            .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))?;
        Ok::<_, Failure>(signals.recv().await)
    })?;
    tracing::info!("{sig}: stopping the gateway");
    let stats = stats_value(&gw);
    gw.shutdown();
    output::emit("gateway_stats", &stats);
    Ok(0)
}
