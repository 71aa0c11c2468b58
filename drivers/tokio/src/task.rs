//! The one task that owns the [`KeepAliveMachine`]: it waits for an input, the machine's next deadline or the
//! last handle's drop, and hands each to the shared [`Core`], which feeds the machine and performs its
//! actions. This file is only the tokio side: the loop, the channels and the spawned tasks. It makes no
//! keep-alive decision of its own.

use std::sync::Arc;

use genesys_keepalive::{
    Headers, HttpRequest, KeepAliveMachine, Notification, SocketId, State, Stats, StopReason,
};
use genesys_keepalive_driver_common::http::{self, LazyClient};
use genesys_keepalive_driver_common::socket::WriterCmd;
use genesys_keepalive_driver_common::task::{Core, Outlets as CoreOutlets, Runtime};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::socket::{self, SocketContext};
use crate::Report;

pub(crate) use genesys_keepalive_driver_common::Input;

/// Where the task publishes what the [`Handle`](crate::Handle) reads. The senders used once
/// (`notifications`, `ready`) are taken when used.
pub(crate) struct Outlets {
    pub notifications: Option<mpsc::UnboundedSender<Notification>>,
    pub reports: broadcast::Sender<Report>,
    pub stats: watch::Sender<Stats>,
    pub state: watch::Sender<State>,
    pub stopped: watch::Sender<Option<StopReason>>,
    pub finished: watch::Sender<bool>,
    pub ready: Option<oneshot::Sender<Result<(), StopReason>>>,
}

impl CoreOutlets for Outlets {
    fn publish(&mut self, stats: Stats) {
        self.state.send_if_modified(|s| {
            let changed = *s != stats.state;
            *s = stats.state;
            changed
        });
        self.stats.send_replace(stats);
    }

    fn deliver(&mut self, notification: Notification) {
        if let Some(tx) = &self.notifications {
            let _ = tx.send(notification);
        }
    }

    fn end_notifications(&mut self) {
        self.notifications = None;
    }

    fn report(&mut self, report: Report) {
        let _ = self.reports.send(report);
    }

    fn ready(&mut self, result: Result<(), StopReason>) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(result);
        }
    }

    fn stopped(&mut self, reason: StopReason) {
        self.stopped.send_replace(Some(reason));
    }

    fn finished(&mut self) {
        self.finished.send_replace(true);
    }
}

/// Spawns the socket, HTTP and linger tasks on tokio; they report on the input channel.
struct Tokio {
    input_tx: mpsc::Sender<Input>,
    ctx: Arc<SocketContext>,
}

impl Runtime for Tokio {
    type Task = AbortHandle;
    type Writer = mpsc::UnboundedSender<WriterCmd>;

    fn spawn_socket(
        &self,
        socket: SocketId,
        url: String,
        headers: Headers,
    ) -> (Self::Writer, Self::Task) {
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(socket::run(
            socket,
            url,
            headers,
            self.ctx.clone(),
            writes_rx,
            self.input_tx.clone(),
        ));
        (writes, task.abort_handle())
    }

    fn spawn_http(
        &self,
        client: reqwest::Client,
        allow_insecure: bool,
        request: HttpRequest,
    ) -> Self::Task {
        let id = request.id;
        let tx = self.input_tx.clone();
        tokio::spawn(async move {
            let event = http::perform(&client, allow_insecure, request).await;
            let _ = tx.send(Input::Http(id, event)).await;
        })
        .abort_handle()
    }

    fn write(&self, writer: &Self::Writer, cmd: WriterCmd) -> bool {
        writer.send(cmd).is_ok()
    }

    fn abort(&self, task: &Self::Task) {
        task.abort();
    }
}

pub(crate) struct Driver {
    core: Core<Tokio, Outlets>,
    inputs: mpsc::Receiver<Input>,
}

impl Driver {
    pub(crate) fn new(
        machine: KeepAliveMachine,
        inputs: mpsc::Receiver<Input>,
        input_tx: mpsc::Sender<Input>,
        ctx: Arc<SocketContext>,
        client: LazyClient,
        out: Outlets,
    ) -> Self {
        Driver {
            core: Core::new(machine, client, Tokio { input_tx, ctx }, out),
            inputs,
        }
    }

    /// Runs until the machine has stopped and every socket it asked to close is closed. `handles_gone`
    /// resolves when the last [`Handle`](crate::Handle) is dropped: that is a graceful shutdown.
    pub(crate) async fn run(mut self, mut handles_gone: oneshot::Receiver<()>) {
        let mut handles_alive = true;
        loop {
            self.core.drain();
            if self.core.is_done() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = self.inputs.recv() => {
                    // The task holds a sender itself, so the channel never closes under it.
                    if let Some(input) = input {
                        self.core.on_input(input);
                    }
                }
                () = sleep => self.core.on_timer(deadline),
                _ = &mut handles_gone, if handles_alive => {
                    handles_alive = false;
                    self.core.on_handles_gone();
                }
            }
        }
        self.core.finish();
    }
}
