//! The gateway never writes a credential (client secret, access token) to a log line, even at
//! TRACE level. A separate test binary, because it installs a global tracing subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use genesys_keepalive_testkit::{Fault, Gateway, GatewayConfig, Proxy, ProxyMode};
use tokio_tungstenite::tungstenite;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_or_token_in_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    init();

    let secret = "s3cr3t-VALUE-9f2c";
    let cfg = GatewayConfig {
        client_secret: secret.to_string(),
        server_heartbeat: Duration::from_millis(50),
        ..GatewayConfig::default()
    };
    tracing::info!(config = ?cfg, "starting");
    let gw = Gateway::start(cfg).unwrap();
    let proxy = Proxy::start(gw.addr()).unwrap();
    let client = http();
    let base = gw.base_url();

    let (status, body, _) = token_with(&client, &base, "test-client", secret).await;
    assert_eq!(status, 200);
    let tok = body["access_token"].as_str().unwrap().to_string();
    let (status, _, _) = token_with(&client, &base, "test-client", "wrong-secret-77").await;
    assert_eq!(status, 401);
    let (id, uri) = channel(&client, &base, &tok).await;
    subscribe(&client, &base, &tok, &id, &["v2.t"], true).await;
    let mut ws = connect(&uri).await;
    ping(&mut ws).await;
    assert!(is_pong(
        &next_json(&mut ws, Duration::from_secs(3)).await.unwrap()
    ));
    gw.publish("v2.t", serde_json::json!({"a": 1}));
    gw.set_fault(Fault::Latency(Duration::from_millis(10)));
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(1)));
    gw.expire_tokens();
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(
        gw.ws_url("/keepalive").as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {tok}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    assert_eq!(create_channel(&client, &base, &tok).await.0, 401);
    drop(ws);
    drop(proxy);
    drop(gw);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("testkit gateway request"),
        "no request was logged:\n{logs}"
    );
    assert!(logs.contains("[redacted]"));
    assert!(!logs.contains(secret), "the secret leaked:\n{logs}");
    assert!(
        !logs.contains("wrong-secret-77"),
        "a secret leaked:\n{logs}"
    );
    assert!(!logs.contains(&tok), "the token leaked:\n{logs}");
}
