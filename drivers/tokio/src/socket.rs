//! One WebSocket: the handshake, a reader that polls the read half all the time (so tungstenite flushes its
//! automatic pongs and close replies), and exactly one writer fed by a channel.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use genesys_keepalive::{FrameId, Headers, SocketId};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::task::Input;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every socket needs: TLS, size limits, whether `ws://` is allowed.
/// Initial read buffer per socket.
const READ_BUFFER_BYTES: usize = 4096;

pub(crate) struct SocketContext {
    pub tls: Arc<rustls::ClientConfig>,
    pub max_inbound_bytes: usize,
    pub allow_insecure: bool,
}

/// A command for the socket's single writer.
pub(crate) enum WriterCmd {
    /// Write this text frame, then report it.
    Frame { frame: FrameId, text: String },
    /// Write a close frame.
    Close { code: u16, reason: String },
}

/// Why a handshake failed.
struct HandshakeFailure {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: String,
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one socket from handshake to end, reporting everything on `tx`:
/// `Opened` or `ConnectFailed`, then every text/binary frame, every write, and finally `ReaderEnded`.
pub(crate) async fn run(
    socket: SocketId,
    url: String,
    headers: Headers,
    ctx: Arc<SocketContext>,
    writes: mpsc::UnboundedReceiver<WriterCmd>,
    tx: mpsc::Sender<Input>,
) {
    let ws = match handshake(&ctx, &url, &headers).await {
        Ok(ws) => ws,
        Err(f) => {
            let _ = tx
                .send(Input::ConnectFailed {
                    socket,
                    status: f.status,
                    retry_after: f.retry_after,
                    error: f.error,
                })
                .await;
            return;
        }
    };
    if tx.send(Input::Opened(socket)).await.is_err() {
        return;
    }
    let (sink, mut stream) = ws.split();
    let _writer = AbortOnDrop(tokio::spawn(write_loop(socket, sink, writes, tx.clone())));
    let mut close: Option<(u16, String)> = None;
    let (code, reason) = loop {
        let input = match stream.next().await {
            Some(Ok(Message::Text(text))) => Input::Text(socket, text.as_str().to_owned()),
            Some(Ok(Message::Binary(data))) => Input::Binary(socket, data.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                // Keep reading: tungstenite answers the close and then ends the stream.
                close = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (1005, String::new()),
                });
                continue;
            }
            Some(Ok(_)) => continue, // ping (answered by tungstenite), pong, raw frame
            Some(Err(e)) => match close.take() {
                Some((code, reason)) => break (Some(code), reason),
                None => break (None, ws_error(&e)),
            },
            None => match close.take() {
                Some((code, reason)) => break (Some(code), reason),
                None => {
                    break (
                        None,
                        "the connection ended without a close frame".to_owned(),
                    )
                }
            },
        };
        if tx.send(input).await.is_err() {
            return;
        }
    };
    let _ = tx
        .send(Input::ReaderEnded {
            socket,
            code,
            reason,
        })
        .await;
}

/// The socket's only writer: one frame at a time, each reported once written (or failed).
async fn write_loop(
    socket: SocketId,
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut writes: mpsc::UnboundedReceiver<WriterCmd>,
    tx: mpsc::Sender<Input>,
) {
    while let Some(cmd) = writes.recv().await {
        match cmd {
            WriterCmd::Frame { frame, text } => {
                let result = sink
                    .send(Message::text(text))
                    .await
                    .map_err(|e| ws_error(&e));
                if tx
                    .send(Input::Sent {
                        socket,
                        frame,
                        result,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            WriterCmd::Close { code, reason } => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                // A failure here shows up on the read side (the stream ends); nothing to report.
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
        }
    }
}

async fn handshake(
    ctx: &SocketContext,
    url: &str,
    headers: &Headers,
) -> Result<Ws, HandshakeFailure> {
    let fail = |error: String| HandshakeFailure {
        status: None,
        retry_after: None,
        error,
    };
    let allowed = url.starts_with("wss://") || (ctx.allow_insecure && url.starts_with("ws://"));
    if !allowed {
        return Err(fail(format!(
            "refusing to connect to `{url}`: not wss:// (set allow_insecure for a local gateway)"
        )));
    }
    let mut request = url
        .into_client_request()
        .map_err(|e| fail(format!("bad WebSocket URL `{url}`: {e}")))?;
    for (name, value) in headers.iter() {
        // Never echo the value: it may be a bearer token.
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(format!("invalid handshake header name `{name}`")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| fail(format!("invalid value for handshake header `{name}`")))?;
        request.headers_mut().append(n, v);
    }
    // tungstenite's default 128 KiB read buffer is zero-filled up front: 128 KiB of RSS per socket.
    // 4 KiB holds any keep-alive frame; larger messages grow it on demand.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(ctx.max_inbound_bytes))
        .max_frame_size(Some(ctx.max_inbound_bytes));
    let connector = Connector::Rustls(ctx.tls.clone());
    match tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    )
    .await
    {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
            let mut error = format!("handshake answered HTTP {status}");
            if let Some(body) = response.body().as_deref().filter(|b| !b.is_empty()) {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(200).collect();
                error.push_str(": ");
                error.push_str(text.trim());
            }
            Err(HandshakeFailure {
                status: Some(status),
                retry_after,
                error,
            })
        }
        Err(e) => Err(fail(ws_error(&e))),
    }
}

fn ws_error(e: &WsError) -> String {
    crate::http::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(allow_insecure: bool) -> SocketContext {
        crate::tls::install_provider();
        SocketContext {
            tls: Arc::new(crate::tls::client_config(&[]).expect("TLS config")),
            max_inbound_bytes: 1 << 20,
            allow_insecure,
        }
    }

    #[tokio::test]
    async fn ws_is_refused_unless_insecure_is_allowed() {
        let f = handshake(&ctx(false), "ws://127.0.0.1:9/x", &Headers::new())
            .await
            .expect_err("refused");
        assert_eq!(f.status, None);
        assert!(f.error.contains("refusing"), "{}", f.error);
        let f = handshake(&ctx(false), "http://127.0.0.1:9/x", &Headers::new())
            .await
            .expect_err("refused");
        assert!(f.error.contains("refusing"), "{}", f.error);
    }

    #[tokio::test]
    async fn a_bad_header_value_is_reported_without_the_value() {
        let mut h = Headers::new();
        h.push("Authorization", "Bearer abc\ndef-SECRET");
        let f = handshake(&ctx(true), "ws://127.0.0.1:9/x", &h)
            .await
            .expect_err("refused");
        assert!(f.error.contains("Authorization"), "{}", f.error);
        assert!(!f.error.contains("SECRET"), "{}", f.error);
    }
}
