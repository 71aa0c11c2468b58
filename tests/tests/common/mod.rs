//! Helpers shared by the integration tests: real HTTP and WebSocket clients against the gateway.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use genesys_keepalive_testkit::{Gateway, GatewayConfig, GatewayStats};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Installs the aws-lc-rs provider as the process default (ignores "already installed").
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A gateway with test-friendly defaults: heartbeat and idle timeout off unless set.
pub fn gateway(edit: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    init();
    let mut cfg = GatewayConfig {
        server_heartbeat: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        ..GatewayConfig::default()
    };
    edit(&mut cfg);
    Gateway::start(cfg).expect("gateway starts")
}

/// A plain HTTP client.
pub fn http() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Requests a token with the given credentials; returns (status, JSON body).
pub async fn token_with(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = client
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// A valid access token from the gateway's default credentials.
pub async fn token(client: &reqwest::Client, base: &str) -> String {
    let (status, body, _) = token_with(client, base, "test-client", "test-secret").await;
    assert_eq!(status, 200, "token: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// Creates a channel; returns (status, body).
pub async fn create_channel(client: &reqwest::Client, base: &str, token: &str) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/api/v2/notifications/channels"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("create channel");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// Creates a channel and returns (id, connectUri).
pub async fn channel(client: &reqwest::Client, base: &str, token: &str) -> (String, String) {
    let (status, body) = create_channel(client, base, token).await;
    assert_eq!(status, 200, "create channel: {body}");
    (
        body["id"].as_str().unwrap().to_string(),
        body["connectUri"].as_str().unwrap().to_string(),
    )
}

/// PUT (replace) or POST (add) subscriptions; returns (status, headers, body).
pub async fn subscribe(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    channel_id: &str,
    topics: &[&str],
    replace: bool,
) -> (u16, Value) {
    let url = format!("{base}/api/v2/notifications/channels/{channel_id}/subscriptions");
    let body: Vec<Value> = topics.iter().map(|t| json!({ "id": t })).collect();
    let req = if replace {
        client.put(url)
    } else {
        client.post(url)
    };
    let resp = req
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("subscribe");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// Connects a WebSocket (plain).
pub async fn connect(url: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next message of any kind, or `None` on timeout. Panics on a stream error.
pub async fn next_msg(ws: &mut Ws, within: Duration) -> Option<Message> {
    match tokio::time::timeout(within, ws.next()).await {
        Err(_) => None,
        Ok(None) => panic!("socket ended"),
        Ok(Some(Err(e))) => panic!("socket error: {e}"),
        Ok(Some(Ok(m))) => Some(m),
    }
}

/// The next text frame parsed as JSON (control frames skipped), or `None` on timeout.
pub async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_msg(ws, left).await? {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("JSON frame")),
            Message::Close(f) => panic!("unexpected close: {f:?}"),
            _ => continue,
        }
    }
}

/// Sends `{"message":"ping"}`.
pub async fn ping(ws: &mut Ws) {
    ws.send(Message::text(r#"{"message":"ping"}"#))
        .await
        .expect("send ping");
}

/// True if `v` is the Genesys pong.
pub fn is_pong(v: &Value) -> bool {
    v["topicName"] == "channel.metadata" && v["eventBody"]["message"] == "pong"
}

/// Waits (at most 5 s) until `pred` holds for the gateway's counters.
pub async fn wait_stats(gw: &Gateway, pred: impl FnMut(&GatewayStats) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), gw.wait_until(pred))
        .await
        .unwrap_or_else(|_| panic!("condition not reached; stats: {:?}", gw.stats()));
}

/// A token, a channel subscribed to `topics`, and a connected socket on it.
pub async fn connected_channel(gw: &Gateway, topics: &[&str]) -> (reqwest::Client, String, Ws) {
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (id, uri) = channel(&client, &base, &tok).await;
    if !topics.is_empty() {
        let (status, body) = subscribe(&client, &base, &tok, &id, topics, true).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = gw.stats().sockets_opened;
    let ws = connect(&uri).await;
    wait_stats(gw, |s| s.sockets_opened > before).await;
    (client, id, ws)
}

/// A rustls client config trusting exactly `ca_der`.
pub fn tls_client_config(ca_der: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = ca_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .expect("CA accepted");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}
