//! The runtime-independent half of a WebSocket: what every socket needs ([`SocketContext`]), building the
//! handshake request and its configuration, and turning a refused handshake into status / `Retry-After` /
//! error. TCP, TLS and the handshake itself are the runtime crates'; reading and writing are
//! [`crate::conn`]'s.

use std::sync::Arc;
use std::time::Duration;

use genesys_keepalive::Headers;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Error as WsError;

/// Read buffer per socket, and the most read in one call: a heartbeat or an ack is 20-400 bytes; a larger
/// message makes tungstenite reserve its whole length, so it still arrives in two reads. (Measured per
/// connection in BENCHMARKS.md: tungstenite zero-fills the whole buffer, so every byte here is RSS.)
pub const READ_BUFFER_BYTES: usize = 512;

/// What every socket of a connection needs: the shared TLS configuration and the WebSocket settings.
#[derive(Clone)]
pub struct SocketContext {
    /// The process-wide rustls configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// Buffer sizes and the inbound size limit.
    pub ws: WebSocketConfig,
}

impl SocketContext {
    /// The context for sockets on `tls` with the configuration's inbound size limit.
    pub fn new(tls: Arc<rustls::ClientConfig>, max_inbound_bytes: usize) -> Self {
        SocketContext {
            tls,
            ws: ws_config(max_inbound_bytes),
        }
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub struct HandshakeFailure {
    /// The HTTP status, when the server answered the upgrade with one.
    pub status: Option<u16>,
    /// The server's `Retry-After`, if it sent a usable one.
    pub retry_after: Option<Duration>,
    /// What went wrong (never a header value).
    pub error: String,
}

impl HandshakeFailure {
    /// A failure without an HTTP answer.
    pub fn new(error: String) -> Self {
        HandshakeFailure {
            status: None,
            retry_after: None,
            error,
        }
    }
}

/// Where a handshake `request` for `url` connects: host, port, and whether it needs TLS (`wss://`).
/// (Whether a URL may be connected to at all is the core's decision, made before it asks for the connect.)
pub fn target(url: &str, request: &Request) -> Result<(String, u16, bool), HandshakeFailure> {
    let tls = url.starts_with("wss://");
    let uri = request.uri();
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .ok_or_else(|| HandshakeFailure::new(format!("bad WebSocket URL `{url}`: no host")))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// The TLS server name for `host`.
pub fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, HandshakeFailure> {
    rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| HandshakeFailure::new(format!("bad TLS server name `{host}`: {e}")))
}

/// The client handshake request for `url` with the core's `headers` (an invalid one is named, its value is
/// never echoed: it may be a bearer token).
pub fn client_request(url: &str, headers: &Headers) -> Result<Request, HandshakeFailure> {
    let fail = HandshakeFailure::new;
    let mut request = url
        .into_client_request()
        .map_err(|e| fail(format!("bad WebSocket URL `{url}`: {e}")))?;
    for (name, value) in headers.iter() {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(format!("invalid handshake header name `{name}`")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| fail(format!("invalid value for handshake header `{name}`")))?;
        request.headers_mut().append(n, v);
    }
    Ok(request)
}

/// The socket's configuration: a small initial read buffer, no write buffering (each frame is written at
/// once: the core has at most one in flight) and the configured inbound size limit.
pub fn ws_config(max_inbound_bytes: usize) -> WebSocketConfig {
    // tungstenite's default 128 KiB read buffer is zero-filled up front: 128 KiB of RSS per socket.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(max_inbound_bytes))
        .max_frame_size(Some(max_inbound_bytes))
}

/// The failure a handshake error stands for: an HTTP refusal keeps its status, `Retry-After` and the start
/// of its body.
pub fn handshake_error(e: WsError) -> HandshakeFailure {
    match e {
        WsError::Http(response) => refusal(&response),
        e => HandshakeFailure::new(ws_error(&e)),
    }
}

fn refusal(response: &Response) -> HandshakeFailure {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(genesys_keepalive::http::parse_retry_after);
    let mut error = format!("handshake answered HTTP {status}");
    if let Some(body) = response.body().as_deref().filter(|b| !b.is_empty()) {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(200).collect();
        error.push_str(": ");
        error.push_str(text.trim());
    }
    HandshakeFailure {
        status: Some(status),
        retry_after,
        error,
    }
}

/// A WebSocket error and its sources.
pub fn ws_error(e: &WsError) -> String {
    crate::http::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_header_value_is_reported_without_the_value() {
        let mut h = Headers::new();
        h.push("Authorization", "Bearer abc\ndef-SECRET");
        let f = client_request("ws://127.0.0.1:9/x", &h).expect_err("refused");
        assert!(f.error.contains("Authorization"), "{}", f.error);
        assert!(!f.error.contains("SECRET"), "{}", f.error);
    }

    #[test]
    fn a_refusal_keeps_status_retry_after_and_body() {
        let response = tungstenite::http::Response::builder()
            .status(429)
            .header("Retry-After", "3")
            .body(Some(b"  slow down  ".to_vec()))
            .expect("response");
        let f = handshake_error(WsError::Http(Box::new(response)));
        assert_eq!(f.status, Some(429));
        assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(f.error, "handshake answered HTTP 429: slow down");
    }
}
