//! The runtime-independent half of a WebSocket: checking the URL, building the handshake request and its
//! configuration, turning a refused handshake into status / `Retry-After` / error, and turning what the read
//! half yields into the machine task's [`Input`]s. TCP, TLS and the tasks themselves are the drivers'.

use std::future::Future;
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;

use genesys_keepalive::{FrameId, Headers, SocketId};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message};

use crate::Input;

/// Initial read buffer per socket.
const READ_BUFFER_BYTES: usize = 4096;

/// A command for the socket's single writer.
#[derive(Debug)]
pub enum WriterCmd {
    /// Write this text frame, then report it.
    Frame {
        /// The machine's id for the frame.
        frame: FrameId,
        /// The frame's text.
        text: String,
    },
    /// Write a close frame.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
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

    /// The input that reports this failure for `socket`.
    pub fn into_input(self, socket: SocketId) -> Input {
        Input::ConnectFailed {
            socket,
            status: self.status,
            retry_after: self.retry_after,
            error: self.error,
        }
    }
}

/// Checks that `url` may be connected to: `wss://`, or `ws://` with `allow_insecure`. Returns whether it is
/// `wss://`.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<bool, HandshakeFailure> {
    let secure = url.starts_with("wss://");
    if secure || (allow_insecure && url.starts_with("ws://")) {
        Ok(secure)
    } else {
        Err(HandshakeFailure::new(format!(
            "refusing to connect to `{url}`: not wss:// (set allow_insecure for a local gateway)"
        )))
    }
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

/// The socket's configuration: a 4 KiB initial read buffer and the configured inbound size limit.
pub fn ws_config(max_inbound_bytes: usize) -> WebSocketConfig {
    // tungstenite's default 128 KiB read buffer is zero-filled up front: 128 KiB of RSS per socket.
    // 4 KiB holds any keep-alive frame; larger messages grow it on demand.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
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

/// The close frame the writer sends.
fn close_frame(code: u16, reason: String) -> CloseFrame {
    CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }
}

/// Reads `stream` (a socket's read half) until it ends, reporting every data frame with `send` and finally
/// `ReaderEnded`. Stops early if `send` returns false (the machine task is gone). Polling the read half all
/// the time is what lets tungstenite flush its automatic pongs and close replies.
pub async fn read_loop<S, F, Fut>(socket: SocketId, mut stream: S, mut send: F)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
    F: FnMut(Input) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut reader = Reader::default();
    loop {
        match reader.step(socket, stream.next().await) {
            ReadStep::Report(input) => {
                if !send(input).await {
                    return;
                }
            }
            ReadStep::Continue => {}
            ReadStep::End(input) => {
                send(input).await;
                return;
            }
        }
    }
}

/// A socket's write half, as [`write_loop`] uses it (a driver wraps its sink in a newtype).
pub trait FrameSink {
    /// Writes one message.
    fn send_message(
        &mut self,
        message: Message,
    ) -> impl Future<Output = Result<(), WsError>> + Send;
}

/// The socket's only writer: takes `cmds` one at a time until they end, writes each frame and reports it
/// with `send` (stopping if that returns false), and writes close frames without reporting them (a failure
/// there shows up on the read side, when the stream ends).
pub async fn write_loop<W, C, F, Fut>(socket: SocketId, mut sink: W, cmds: C, mut send: F)
where
    W: FrameSink,
    C: Stream<Item = WriterCmd>,
    F: FnMut(Input) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut cmds = std::pin::pin!(cmds);
    while let Some(cmd) = cmds.next().await {
        match cmd {
            WriterCmd::Frame { frame, text } => {
                let result = sink
                    .send_message(Message::text(text))
                    .await
                    .map_err(|e| ws_error(&e));
                if !send(Input::Sent {
                    socket,
                    frame,
                    result,
                })
                .await
                {
                    return;
                }
            }
            WriterCmd::Close { code, reason } => {
                let _ = sink
                    .send_message(Message::Close(Some(close_frame(code, reason))))
                    .await;
            }
        }
    }
}

/// What the reader does with one item of the read half.
enum ReadStep {
    /// Report this input and keep reading.
    Report(Input),
    /// Keep reading.
    Continue,
    /// The stream is over: report `ReaderEnded` with this input and stop.
    End(Input),
}

/// The reader's state: the close frame the peer sent, if any (tungstenite answers it and then ends the
/// stream, which is when the socket's end is reported).
#[derive(Default)]
struct Reader {
    close: Option<(u16, String)>,
}

impl Reader {
    /// What to do with `item`, the read half's next item (`None`: the stream ended).
    fn step(&mut self, socket: SocketId, item: Option<Result<Message, WsError>>) -> ReadStep {
        let (code, reason) = match item {
            Some(Ok(Message::Text(text))) => {
                return ReadStep::Report(Input::Text(socket, text.as_str().to_owned()))
            }
            Some(Ok(Message::Binary(data))) => {
                return ReadStep::Report(Input::Binary(socket, data.to_vec()))
            }
            Some(Ok(Message::Close(frame))) => {
                // Keep reading: tungstenite answers the close and then ends the stream.
                self.close = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (1005, String::new()),
                });
                return ReadStep::Continue;
            }
            Some(Ok(_)) => return ReadStep::Continue, // ping (answered by tungstenite), pong, raw frame
            Some(Err(e)) => match self.close.take() {
                Some((code, reason)) => (Some(code), reason),
                None => (None, ws_error(&e)),
            },
            None => match self.close.take() {
                Some((code, reason)) => (Some(code), reason),
                None => (
                    None,
                    "the connection ended without a close frame".to_owned(),
                ),
            },
        };
        ReadStep::End(Input::ReaderEnded {
            socket,
            code,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_is_refused_unless_insecure_is_allowed() {
        assert!(check_url("wss://x/y", false).expect("wss"));
        assert!(!check_url("ws://x/y", true).expect("ws"));
        let f = check_url("ws://127.0.0.1:9/x", false).expect_err("refused");
        assert_eq!(f.status, None);
        assert!(f.error.contains("refusing"), "{}", f.error);
        let f = check_url("http://127.0.0.1:9/x", true).expect_err("refused");
        assert!(f.error.contains("refusing"), "{}", f.error);
    }

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
