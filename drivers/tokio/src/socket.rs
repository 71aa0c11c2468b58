//! One WebSocket: the handshake, a reader that polls the read half all the time (so tungstenite flushes its
//! automatic pongs and close replies), and exactly one writer fed by a channel. What does not depend on
//! tokio (the request, the configuration, mapping frames and failures) is in
//! [`genesys_keepalive_driver_common::socket`].

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use genesys_keepalive::{Headers, SocketId};
use genesys_keepalive_driver_common::socket::{
    check_url, client_request, handshake_error, read_loop, write_loop, ws_config, FrameSink,
    HandshakeFailure, WriterCmd,
};
use genesys_keepalive_driver_common::Input;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every socket needs: TLS, size limits, whether `ws://` is allowed.
pub(crate) struct SocketContext {
    pub tls: Arc<rustls::ClientConfig>,
    pub max_inbound_bytes: usize,
    pub allow_insecure: bool,
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
            let _ = tx.send(f.into_input(socket)).await;
            return;
        }
    };
    if tx.send(Input::Opened(socket)).await.is_err() {
        return;
    }
    let (sink, stream) = ws.split();
    let _writer = AbortOnDrop(tokio::spawn(writer(socket, Sink(sink), writes, tx.clone())));
    let tx = &tx;
    read_loop(socket, stream, |input| async move {
        tx.send(input).await.is_ok()
    })
    .await;
}

/// The write half, for the shared [`write_loop`].
struct Sink(futures_util::stream::SplitSink<Ws, Message>);

impl FrameSink for Sink {
    async fn send_message(&mut self, message: Message) -> Result<(), WsError> {
        self.0.send(message).await
    }
}

/// The socket's only writer: one frame at a time, each reported once written (or failed).
async fn writer(
    socket: SocketId,
    sink: Sink,
    mut writes: mpsc::UnboundedReceiver<WriterCmd>,
    tx: mpsc::Sender<Input>,
) {
    let cmds = futures_util::stream::poll_fn(move |cx| writes.poll_recv(cx));
    let tx = &tx;
    write_loop(socket, sink, cmds, |input| async move {
        tx.send(input).await.is_ok()
    })
    .await;
}

async fn handshake(
    ctx: &SocketContext,
    url: &str,
    headers: &Headers,
) -> Result<Ws, HandshakeFailure> {
    check_url(url, ctx.allow_insecure)?;
    let request = client_request(url, headers)?;
    let config = ws_config(ctx.max_inbound_bytes);
    let connector = Connector::Rustls(ctx.tls.clone());
    tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector))
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
        SocketContext {
            tls: Arc::new(tls::client_config(&[]).expect("TLS config")),
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
