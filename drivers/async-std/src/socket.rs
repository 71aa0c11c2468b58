//! One WebSocket: TCP (`async-net`), TLS (`futures-rustls` on the shared rustls configuration), the
//! handshake (`async-tungstenite` over those futures-io streams), then a reader that polls the read half
//! all the time (so tungstenite flushes its automatic pongs and close replies) and exactly one writer fed by
//! a channel. Reader and writer are two futures polled side by side in the socket's task, so neither ever
//! waits for the other.

use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_rustls::client::TlsStream;
use futures_util::future::Either;
use futures_util::StreamExt;
use genesys_keepalive::{FrameId, Headers, SocketId};
use rustls_pki_types::ServerName;

use crate::task::Input;

/// Plain TCP (`ws://`, only with `allow_insecure`) or TLS over TCP (`wss://`).
type Stream = Either<TcpStream, TlsStream<TcpStream>>;
type Ws = WebSocketStream<Stream>;

/// Initial read buffer per socket.
const READ_BUFFER_BYTES: usize = 4096;

/// What every socket needs: TLS, size limits, whether `ws://` is allowed.
pub(crate) struct SocketContext {
    pub tls: futures_rustls::TlsConnector,
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

/// Runs one socket from handshake to end, reporting everything on `tx`:
/// `Opened` or `ConnectFailed`, then every text/binary frame, every write, and finally `ReaderEnded`.
pub(crate) async fn run(
    socket: SocketId,
    url: String,
    headers: Headers,
    ctx: Arc<SocketContext>,
    writes: Receiver<WriterCmd>,
    tx: Sender<Input>,
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
    let (sink, stream) = ws.split();
    // The writer never ends the socket: once its channel closes it waits, and the reader decides.
    let writer = async {
        write_loop(socket, sink, writes, tx.clone()).await;
        futures_lite::future::pending::<()>().await;
    };
    futures_lite::future::or(read_loop(socket, stream, tx.clone()), writer).await;
}

/// Reads until the stream ends, reporting every data frame and finally `ReaderEnded`.
async fn read_loop(socket: SocketId, mut stream: WebSocketReceiver<Stream>, tx: Sender<Input>) {
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
    mut sink: WebSocketSender<Stream>,
    writes: Receiver<WriterCmd>,
    tx: Sender<Input>,
) {
    while let Ok(cmd) = writes.recv().await {
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
                let _ = sink.close(Some(frame)).await;
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
    let secure = url.starts_with("wss://");
    let allowed = secure || (ctx.allow_insecure && url.starts_with("ws://"));
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
    let uri = request.uri();
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .ok_or_else(|| fail(format!("bad WebSocket URL `{url}`: no host")))?;
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });

    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(format!("TCP connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = if secure {
        let name = ServerName::try_from(host.clone())
            .map_err(|e| fail(format!("bad TLS server name `{host}`: {e}")))?;
        let tls = ctx.tls.connect(name, tcp).await.map_err(|e| {
            fail(format!(
                "TLS handshake with {host}:{port} failed: {}",
                crate::http::error_chain(&e)
            ))
        })?;
        Either::Right(tls)
    } else {
        Either::Left(tcp)
    };

    // tungstenite's default 128 KiB read buffer is zero-filled up front: 128 KiB of RSS per socket.
    // 4 KiB holds any keep-alive frame; larger messages grow it on demand.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(ctx.max_inbound_bytes))
        .max_frame_size(Some(ctx.max_inbound_bytes));
    match async_tungstenite::client_async_with_config(request, stream, Some(config)).await {
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
        let tls = crate::tls::client_config(&[]).expect("TLS config");
        SocketContext {
            tls: futures_rustls::TlsConnector::from(Arc::new(tls)),
            max_inbound_bytes: 1 << 20,
            allow_insecure,
        }
    }

    fn refused(allow_insecure: bool, url: &str, headers: &Headers) -> HandshakeFailure {
        match smol::block_on(handshake(&ctx(allow_insecure), url, headers)) {
            Ok(_) => panic!("{url}: connected"),
            Err(f) => f,
        }
    }

    #[test]
    fn ws_is_refused_unless_insecure_is_allowed() {
        let f = refused(false, "ws://127.0.0.1:9/x", &Headers::new());
        assert_eq!(f.status, None);
        assert!(f.error.contains("refusing"), "{}", f.error);
        let f = refused(false, "http://127.0.0.1:9/x", &Headers::new());
        assert!(f.error.contains("refusing"), "{}", f.error);
    }

    #[test]
    fn a_bad_header_value_is_reported_without_the_value() {
        let mut h = Headers::new();
        h.push("Authorization", "Bearer abc\ndef-SECRET");
        let f = refused(true, "ws://127.0.0.1:9/x", &h);
        assert!(f.error.contains("Authorization"), "{}", f.error);
        assert!(!f.error.contains("SECRET"), "{}", f.error);
    }

    #[test]
    fn a_refused_port_is_a_connect_failure() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let f = refused(true, &format!("ws://127.0.0.1:{port}/x"), &Headers::new());
        assert_eq!(f.status, None);
        assert!(f.error.contains("TCP connect"), "{}", f.error);
    }
}
