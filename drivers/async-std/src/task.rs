//! The one task that owns the [`KeepAliveMachine`]: it waits for an input, the machine's next deadline or the
//! last handle's drop, and hands each to the shared [`Core`], which feeds the machine and performs its
//! actions. This file is only the runtime-neutral futures side: the loop, the channels and the spawned
//! tasks. It makes no keep-alive decision of its own.

use std::sync::Arc;

use async_channel::{Receiver, Sender};
use futures_lite::future;
use futures_util::future::AbortHandle;
use genesys_keepalive::{
    Headers, HttpRequest, KeepAliveMachine, Notification, SocketId, State, Stats, StopReason,
};
use genesys_keepalive_driver_common::http::LazyClient;
use genesys_keepalive_driver_common::socket::WriterCmd;
use genesys_keepalive_driver_common::task::{Core, Outlets as CoreOutlets, Runtime};

use crate::rt::{self, Publisher, Spawner};
use crate::socket::{self, SocketContext};
use crate::Report;

pub(crate) use genesys_keepalive_driver_common::Input;

/// Where the task publishes what the [`Handle`](crate::Handle) reads. The senders used once
/// (`notifications`, `ready`) are taken when used.
pub(crate) struct Outlets {
    pub notifications: Option<Sender<Notification>>,
    pub reports: async_broadcast::Sender<Report>,
    pub stats: Publisher<Stats>,
    pub state: Publisher<State>,
    pub stopped: Publisher<Option<StopReason>>,
    pub finished: Publisher<bool>,
    pub ready: Option<Sender<Result<(), StopReason>>>,
}

impl CoreOutlets for Outlets {
    fn publish(&mut self, stats: Stats) {
        self.state.update(|s| {
            let changed = *s != stats.state;
            *s = stats.state;
            changed
        });
        self.stats.set(stats);
    }

    fn deliver(&mut self, notification: Notification) {
        if let Some(tx) = &self.notifications {
            let _ = tx.try_send(notification);
        }
    }

    fn end_notifications(&mut self) {
        self.notifications = None;
    }

    fn report(&mut self, report: Report) {
        let _ = self.reports.try_broadcast(report);
    }

    fn ready(&mut self, result: Result<(), StopReason>) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.try_send(result);
        }
    }

    fn stopped(&mut self, reason: StopReason) {
        self.stopped.set(Some(reason));
    }

    fn finished(&mut self) {
        self.finished.set(true);
    }
}

/// Spawns the socket, HTTP and linger tasks on the [`Spawner`]; they report on the input channel.
struct Futures {
    input_tx: Sender<Input>,
    ctx: Arc<SocketContext>,
    spawner: Spawner,
}

impl Runtime for Futures {
    type Task = AbortHandle;
    type Writer = Sender<WriterCmd>;

    fn spawn_socket(
        &self,
        socket: SocketId,
        url: String,
        headers: Headers,
    ) -> (Self::Writer, Self::Task) {
        let (writes, writes_rx) = async_channel::unbounded();
        let task = self.spawner.spawn_abortable(socket::run(
            socket,
            url,
            headers,
            self.ctx.clone(),
            writes_rx,
            self.input_tx.clone(),
        ));
        (writes, task)
    }

    fn spawn_http(
        &self,
        client: reqwest::Client,
        allow_insecure: bool,
        request: HttpRequest,
    ) -> Self::Task {
        let id = request.id;
        let tx = self.input_tx.clone();
        self.spawner.spawn_abortable(async move {
            let event = crate::http::perform(&client, allow_insecure, request).await;
            let _ = tx.send(Input::Http(id, event)).await;
        })
    }

    fn write(&self, writer: &Self::Writer, cmd: WriterCmd) -> bool {
        writer.try_send(cmd).is_ok()
    }

    fn abort(&self, task: &Self::Task) {
        task.abort();
    }
}

/// What woke the machine task.
enum Wake {
    Input(Input),
    Timer,
    HandlesGone,
}

pub(crate) struct Driver {
    core: Core<Futures, Outlets>,
    inputs: Receiver<Input>,
}

impl Driver {
    pub(crate) fn new(
        machine: KeepAliveMachine,
        inputs: Receiver<Input>,
        input_tx: Sender<Input>,
        ctx: Arc<SocketContext>,
        client: LazyClient,
        spawner: Spawner,
        out: Outlets,
    ) -> Self {
        let rt = Futures {
            input_tx,
            ctx,
            spawner,
        };
        Driver {
            core: Core::new(machine, client, rt, out),
            inputs,
        }
    }

    /// Runs until the machine has stopped and every socket it asked to close is closed. `handles_gone`
    /// closes when the last [`Handle`](crate::Handle) is dropped: that is a graceful shutdown.
    pub(crate) async fn run(mut self, handles_gone: Receiver<()>) {
        let mut handles_alive = true;
        loop {
            self.core.drain();
            if self.core.is_done() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let inputs = &self.inputs;
            let gone = &handles_gone;
            let wake = future::or(
                async {
                    if handles_alive {
                        // Nothing is ever sent: this resolves when the last sender (handle) is dropped.
                        let _ = gone.recv().await;
                        Wake::HandlesGone
                    } else {
                        future::pending().await
                    }
                },
                future::or(
                    async {
                        match deadline {
                            Some(d) => rt::sleep_until(d).await,
                            None => future::pending().await,
                        }
                        Wake::Timer
                    },
                    async {
                        match inputs.recv().await {
                            Ok(input) => Wake::Input(input),
                            // The task holds a sender itself, so the channel never closes under it.
                            Err(_) => future::pending().await,
                        }
                    },
                ),
            )
            .await;
            match wake {
                Wake::Input(input) => self.core.on_input(input),
                Wake::Timer => self.core.on_timer(deadline),
                Wake::HandlesGone => {
                    handles_alive = false;
                    self.core.on_handles_gone();
                }
            }
        }
        self.core.finish();
    }
}
