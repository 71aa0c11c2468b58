//! One WebSocket: TCP (`async-net`), TLS (`futures-rustls` on the shared rustls configuration), the
//! handshake (`async-tungstenite` over those futures-io streams), then a reader that polls the read half
//! all the time (so tungstenite flushes its automatic pongs and close replies) and exactly one writer fed by
//! a channel. Reader and writer are two futures polled side by side in the socket's task, so neither ever
//! waits for the other.

use std::sync::Arc;

use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketSender, WebSocketStream};
use futures_rustls::client::TlsStream;
use futures_util::future::Either;
use genesys_keepalive::{Headers, SocketId};
use genesys_keepalive_driver_common::http::error_chain;
use genesys_keepalive_driver_common::socket::{
    check_url, client_request, handshake_error, read_loop, write_loop, ws_config, FrameSink,
    HandshakeFailure, WriterCmd,
};
use genesys_keepalive_driver_common::Input;
use rustls_pki_types::ServerName;

/// Plain TCP (`ws://`, only with `allow_insecure`) or TLS over TCP (`wss://`).
type Stream = Either<TcpStream, TlsStream<TcpStream>>;
type Ws = WebSocketStream<Stream>;

/// What every socket needs: TLS, size limits, whether `ws://` is allowed.
pub(crate) struct SocketContext {
    pub tls: futures_rustls::TlsConnector,
    pub max_inbound_bytes: usize,
    pub allow_insecure: bool,
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
            let _ = tx.send(f.into_input(socket)).await;
            return;
        }
    };
    if tx.send(Input::Opened(socket)).await.is_err() {
        return;
    }
    let (sink, stream) = ws.split();
    // The writer never ends the socket: once its channel closes it waits, and the reader decides.
    let writer = async {
        let tx = &tx;
        write_loop(socket, Sink(sink), writes, |input| async move {
            tx.send(input).await.is_ok()
        })
        .await;
        futures_lite::future::pending::<()>().await;
    };
    let reader = read_loop(socket, stream, |input| async {
        tx.send(input).await.is_ok()
    });
    futures_lite::future::or(reader, writer).await;
}

/// The write half, for the shared [`write_loop`].
struct Sink(WebSocketSender<Stream>);

impl FrameSink for Sink {
    async fn send_message(&mut self, message: Message) -> Result<(), WsError> {
        self.0.send(message).await
    }
}

async fn handshake(
    ctx: &SocketContext,
    url: &str,
    headers: &Headers,
) -> Result<Ws, HandshakeFailure> {
    let fail = HandshakeFailure::new;
    let secure = check_url(url, ctx.allow_insecure)?;
    let request = client_request(url, headers)?;
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
                error_chain(&e)
            ))
        })?;
        Either::Right(tls)
    } else {
        Either::Left(tcp)
    };

    async_tungstenite::client_async_with_config(
        request,
        stream,
        Some(ws_config(ctx.max_inbound_bytes)),
    )
    .await
    .map(|(ws, _response)| ws)
    .map_err(handshake_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_keepalive_driver_common::tls;

    fn ctx(allow_insecure: bool) -> SocketContext {
        tls::install_provider();
        let tls = tls::client_config(&[]).expect("TLS config");
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
