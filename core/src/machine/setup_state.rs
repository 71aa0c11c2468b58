//! The setup's states and inputs (token → create channel → subscribe → opening → open), shared by
//! the setup (`setup.rs`, which holds every transition), the reconnects and the REST side.

use std::time::Duration;

use crate::ids::SocketId;

/// A notification channel (notifications profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Channel {
    pub(super) id: String,
    pub(super) connect_uri: String,
    /// How long it lives from its creation (its `expires`, at most 24 h).
    pub(super) lifetime: Duration,
}

/// Why a connection setup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetupKind {
    /// First connection or a reconnect: there is no active socket.
    Connect,
    /// Make-before-break: the active socket stays until the new one is open.
    Rollover,
}

/// Where the setup is. `Idle` with an active socket is "open".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SetupState {
    /// No setup runs: the socket is open, a reconnect is scheduled, or the machine stopped.
    Idle,
    /// Waiting for an OAuth token. `refreshed`: it replaces one the handshake was refused with (a second
    /// refusal stops).
    Token {
        kind: SetupKind,
        channel: Option<Channel>,
        refreshed: bool,
    },
    /// Waiting for a new notification channel.
    CreateChannel { kind: SetupKind },
    /// Waiting for the channel's subscriptions.
    Subscribe { kind: SetupKind, channel: Channel },
    /// Waiting for the socket to open.
    Opening {
        kind: SetupKind,
        socket: SocketId,
        channel: Option<Channel>,
        refreshed: bool,
    },
}

impl SetupState {
    pub(super) fn kind(&self) -> Option<SetupKind> {
        match self {
            SetupState::Idle => None,
            SetupState::Token { kind, .. }
            | SetupState::CreateChannel { kind }
            | SetupState::Subscribe { kind, .. }
            | SetupState::Opening { kind, .. } => Some(*kind),
        }
    }

    /// The socket being opened, in `Opening`.
    pub(super) fn opening_socket(&self) -> Option<SocketId> {
        match self {
            SetupState::Opening { socket, .. } => Some(*socket),
            _ => None,
        }
    }

    /// `Token` without a channel: the one it had is gone, a new one is created after the token.
    pub(super) fn without_channel(self) -> Self {
        match self {
            SetupState::Token {
                kind, refreshed, ..
            } => SetupState::Token {
                kind,
                channel: None,
                refreshed,
            },
            other => other,
        }
    }

    /// The same step, as a plain connect (a rollover whose old socket is gone).
    pub(super) fn demoted(mut self) -> Self {
        match &mut self {
            SetupState::Idle => {}
            SetupState::Token { kind, .. }
            | SetupState::CreateChannel { kind }
            | SetupState::Subscribe { kind, .. }
            | SetupState::Opening { kind, .. } => *kind = SetupKind::Connect,
        }
        self
    }
}

/// What moves a setup on.
#[derive(Debug)]
pub(super) enum SetupInput {
    /// Begin a setup (from `Idle` only).
    Start(SetupKind),
    /// A token is at hand.
    TokenReady,
    /// The channel was created.
    ChannelCreated(Channel),
    /// The setup's subscriptions are in place.
    Subscribed,
    /// A subscription call found no channel: take a new one.
    ChannelGone,
    /// The handshake was refused with 404: the channel is gone.
    HandshakeChannelGone,
    /// The handshake was refused with 401 (with credentials).
    HandshakeUnauthorized { detail: String },
    /// The socket being opened has opened.
    Opened(SocketId),
    /// The old socket is gone: a rollover goes on as a plain connect.
    OldSocketGone,
    /// The attempt failed: one reconnect, after a backoff delay.
    Failed { error: String },
    /// The handshake was refused or the connect failed: the attempt is over on the driver's side
    /// (nothing to close); one reconnect, after a backoff delay of at least `retry_after`.
    Refused {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// The setup's own fields.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) state: SetupState,
    /// The channel of the open socket (notifications profile).
    pub(super) channel: Option<Channel>,
    /// Consecutive failed connection attempts (reset after `min_uptime` of health).
    pub(super) attempts: u32,
    pub(super) last_error: String,
    pub(super) ever_opened: bool,
    /// The id of the connection being set up or open.
    pub(super) connection_id: String,
    next_socket: u64,
}

impl Setup {
    pub(super) fn new(connection_id: String) -> Self {
        Setup {
            state: SetupState::Idle,
            channel: None,
            attempts: 0,
            last_error: String::new(),
            ever_opened: false,
            connection_id,
            next_socket: 0,
        }
    }

    /// Why the running setup runs.
    pub(super) fn kind(&self) -> Option<SetupKind> {
        self.state.kind()
    }

    pub(super) fn is_running(&self) -> bool {
        self.state != SetupState::Idle
    }

    /// The socket being opened, if the setup is there.
    pub(super) fn opening_socket(&self) -> Option<SocketId> {
        self.state.opening_socket()
    }

    /// A fresh socket id.
    pub(super) fn next_socket_id(&mut self) -> SocketId {
        self.next_socket += 1;
        SocketId(self.next_socket)
    }

    /// The machine stopped: no setup runs any more.
    pub(super) fn abandon(&mut self) {
        self.state = SetupState::Idle;
    }
}
