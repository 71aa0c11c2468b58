//! The connection setup: token → create channel → subscribe → opening → open, for the first connection,
//! every reconnect and the make-before-break rollover; the one reconnect at a time with its backoff; and
//! the attempt counter that resets only after `min_uptime` of health.
//!
//! The setup is one explicit `SetupState` (in `setup_state.rs`), and every transition is in one
//! `match`: [`KeepAliveMachine::setup_next`]. The REST answers and socket events become `SetupInput`s.

use std::time::Duration;

use super::{KeepAliveMachine, CLOSE_CONNECT_TIMEOUT};
use crate::config::ProfileKind;
use crate::event::{Action, AuditEvent, StopReason};
use crate::http::Headers;
use crate::ids::SocketId;
use crate::state::State;
use crate::timers::Timer;

use super::heartbeat::Conn;
use super::rest_call::RestCall;
use super::setup_state::{Channel, SetupInput, SetupKind, SetupState};

impl KeepAliveMachine {
    /// Every setup transition: the state, the input, what is done, and the state after.
    pub(super) fn setup_next(&mut self, input: SetupInput) {
        use SetupInput as I;
        use SetupState as S;
        let state = std::mem::replace(&mut self.setup.state, S::Idle);
        let next = match (state, input) {
            (S::Idle, I::Start(kind)) => self.first_step(kind),
            (s @ S::Token { .. }, I::TokenReady) => self.token_ready(s),
            (s @ S::Token { .. }, I::ChannelGone) => s.without_channel(),
            (S::CreateChannel { kind }, I::ChannelCreated(channel)) => {
                if self.rest.topics.is_empty() {
                    // Nothing to subscribe: straight to the socket.
                    self.open_socket(kind, Some(channel), false)
                } else {
                    self.subscribe(kind, channel)
                }
            }
            (S::Subscribe { kind, channel }, I::Subscribed) => {
                self.open_socket(kind, Some(channel), false)
            }
            (S::Subscribe { kind, .. }, I::ChannelGone) => self.create_channel(kind),
            (S::Opening { kind, .. }, I::HandshakeChannelGone) => self.create_channel(kind),
            (s @ S::Opening { .. }, I::HandshakeUnauthorized { detail }) => {
                self.handshake_unauthorized(s, detail)
            }
            (s @ S::Opening { .. }, I::Opened(socket)) if s.opening_socket() == Some(socket) => {
                self.setup_done(s);
                S::Idle
            }
            (s, I::OldSocketGone) => s.demoted(),
            (S::Idle, I::Failed { .. } | I::Refused { .. }) => S::Idle,
            (S::Opening { socket, .. }, I::Failed { error }) => {
                // Make sure the driver drops a half-open attempt.
                self.timers.clear(Timer::ConnectTimeout);
                let why = "connection attempt abandoned";
                self.close_socket(socket, CLOSE_CONNECT_TIMEOUT, why, Duration::ZERO);
                self.schedule_reconnect(error, None);
                S::Idle
            }
            (_, I::Failed { error }) => {
                self.schedule_reconnect(error, None);
                S::Idle
            }
            (_, I::Refused { error, retry_after }) => {
                self.schedule_reconnect(error, retry_after);
                S::Idle
            }
            (s, _) => s, // not for this state: nothing changes
        };
        // An arm that stopped the machine leaves the setup idle.
        if !self.is_stopped() {
            self.setup.state = next;
        }
    }

    /// `Token` + a token: on to the channel (notifications, none yet) or the socket.
    fn token_ready(&mut self, state: SetupState) -> SetupState {
        let SetupState::Token {
            kind,
            channel,
            refreshed,
        } = state
        else {
            return state;
        };
        match channel {
            None if self.config.profile == ProfileKind::Notifications => self.create_channel(kind),
            channel => self.open_socket(kind, channel, refreshed),
        }
    }

    /// `Opening` + a 401 handshake: a fresh token and one more try; a second 401 stops.
    fn handshake_unauthorized(&mut self, state: SetupState, detail: String) -> SetupState {
        let SetupState::Opening {
            kind,
            channel,
            refreshed: false,
            ..
        } = state
        else {
            // Stopping closes every socket the machine knows, the refused one included.
            self.setup.state = state;
            self.stop(StopReason::AuthenticationFailed {
                detail: format!("still refused after a token refresh: {detail}"),
            });
            return SetupState::Idle;
        };
        self.refresh_token();
        SetupState::Token {
            kind,
            channel,
            refreshed: true,
        }
    }

    /// Starts a setup, unless one runs.
    pub(super) fn start_setup(&mut self, kind: SetupKind) {
        if !self.setup.is_running() && !self.is_stopped() {
            self.setup_next(SetupInput::Start(kind));
        }
    }

    /// A setup begins: a fresh connection id, an attempt counted, then the first step it needs.
    fn first_step(&mut self, kind: SetupKind) -> SetupState {
        self.timers.clear(Timer::Reconnect);
        self.setup.connection_id = self.rng.uuid_v4();
        self.stats.connect_attempts += 1;
        self.audit(AuditEvent::ConnectAttempt, 0, None);
        let needs_token =
            self.config.has_credentials() && self.rest.token.valid_at(self.now).is_none();
        if needs_token {
            self.enqueue_rest_front(RestCall::Token);
            return SetupState::Token {
                kind,
                channel: None,
                refreshed: false,
            };
        }
        match self.config.profile {
            ProfileKind::Notifications => self.create_channel(kind),
            ProfileKind::KeepaliveFrame => self.open_socket(kind, None, false),
        }
    }

    fn create_channel(&mut self, kind: SetupKind) -> SetupState {
        self.enqueue_rest(RestCall::CreateChannel);
        SetupState::CreateChannel { kind }
    }

    fn subscribe(&mut self, kind: SetupKind, channel: Channel) -> SetupState {
        self.enqueue_rest_front(RestCall::Subscribe {
            channel_id: channel.id.clone(),
            topics: self.rest.topics.clone(),
            extend: false,
        });
        SetupState::Subscribe { kind, channel }
    }

    /// Asks the driver for the socket: the channel's `connectUri`, or the configured URL with the bearer
    /// token (keepalive-frame).
    fn open_socket(
        &mut self,
        kind: SetupKind,
        channel: Option<Channel>,
        refreshed: bool,
    ) -> SetupState {
        let mut headers = Headers::new();
        let url = match &channel {
            Some(ch) => ch.connect_uri.clone(),
            None => {
                if self.config.has_credentials() {
                    let Some(t) = self.rest.token.valid_at(self.now) else {
                        // Expired on the way here: fetch one first.
                        self.enqueue_rest_front(RestCall::Token);
                        return SetupState::Token {
                            kind,
                            channel,
                            refreshed,
                        };
                    };
                    headers.push("Authorization", format!("Bearer {}", t.expose()));
                }
                self.config.url.clone().unwrap_or_default()
            }
        };
        // The configuration's URLs were checked at construction; a channel's `connectUri` comes from the
        // server and is checked here, with the same policy.
        let websocket = matches!(url.split_once("://"), Some(("ws" | "wss", _)));
        if !websocket || crate::config::check_scheme(&url, self.config.allow_insecure).is_err() {
            let error = format!(
                "refusing to connect to `{url}`: not wss:// (set allow_insecure for a local gateway)"
            );
            self.schedule_reconnect(error, None);
            return SetupState::Idle;
        }
        let socket = self.setup.next_socket_id();
        self.timers.set(
            Timer::ConnectTimeout,
            self.now + self.config.connect_timeout,
        );
        self.push(Action::Connect {
            socket,
            url,
            headers,
        });
        SetupState::Opening {
            kind,
            socket,
            channel,
            refreshed,
        }
    }

    /// The new socket is open: it becomes the active one; a rollover's old socket is closed.
    fn setup_done(&mut self, state: SetupState) {
        let SetupState::Opening {
            kind,
            socket,
            channel,
            ..
        } = state
        else {
            return;
        };
        self.timers.clear(Timer::ConnectTimeout);
        self.timers.clear(Timer::RolloverDeadline);
        self.stats.connections_opened += 1;
        if let Some(ch) = channel {
            let at = self.now + self.resubscribe_after(ch.lifetime);
            self.setup.channel = Some(ch);
            self.timers.set(Timer::Resubscribe, at);
        }
        let rollover = kind == SetupKind::Rollover && self.active.is_some();
        // A rollover's old socket is drained, then closed (drain.rs).
        let old = self.active.take();
        self.clear_conn_timers();
        let connection_id = self.setup.connection_id.clone();
        self.active = Some(Conn::opened(socket, connection_id, self.now));
        self.setup.ever_opened = true;
        if rollover {
            self.stats.rollovers += 1;
            self.audit(AuditEvent::RolloverComplete, 0, None);
            // Same network, same history: keep the latency window; the new socket starts its own pings.
            if self.state == State::Reconnecting || self.state == State::Connecting {
                self.set_state(State::Stable);
            }
        } else {
            self.heartbeat.reset_history();
            self.audit(AuditEvent::Connected, 0, None);
        }
        self.timers
            .set(Timer::Idle, self.now + self.config.max_idle);
        self.timers
            .set(Timer::MinUptime, self.now + self.config.min_uptime);
        // Open, with the subscriptions confirmed before the handshake: a window of loss ends here. The
        // old socket of a rollover must still prove it delivered up to now.
        let covered = self.close_gap();
        if let Some(old) = old {
            self.start_drain(old, covered);
        }
        // Probe the new path at once.
        self.send_heartbeat(None);
    }

    pub(super) fn setup_failed(&mut self, error: String) {
        self.setup_next(SetupInput::Failed { error });
    }

    pub(super) fn on_opened(&mut self, socket: SocketId) {
        if self.was_discarded(socket) {
            return; // it opened while we were giving up on it; the driver drops it
        }
        match self.setup.opening_socket() {
            Some(s) if s == socket => self.setup_next(SetupInput::Opened(socket)),
            Some(_) => self.unexpected(format!("{socket} opened but it is not the pending socket")),
            None => self.unexpected(format!("{socket} opened but no connection was pending")),
        }
    }

    pub(super) fn on_connect_failed(
        &mut self,
        socket: SocketId,
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    ) {
        if self.was_discarded(socket) {
            return; // the attempt failed on its own as we abandoned it (e.g. its connect timeout fired first)
        }
        if self.setup.opening_socket() != Some(socket) {
            return self.unexpected(format!("connect failure for unknown {socket}"));
        }
        self.timers.clear(Timer::ConnectTimeout);
        let detail = match status {
            Some(st) => format!("handshake refused with HTTP {st}: {error}"),
            None => format!("connect failed: {error}"),
        };
        let notifications = self.config.profile == ProfileKind::Notifications;
        let (audit, input) = match status {
            Some(401) if self.config.has_credentials() => (
                AuditEvent::ConnectFailure,
                SetupInput::HandshakeUnauthorized {
                    detail: detail.clone(),
                },
            ),
            Some(403) => {
                self.audit(AuditEvent::ConnectFailure, 0, Some(detail.clone()));
                return self.stop(StopReason::Forbidden {
                    detail: format!("opening the socket: {detail}"),
                });
            }
            // The channel is gone: take a new one.
            Some(404) if notifications => {
                (AuditEvent::ChannelExpired, SetupInput::HandshakeChannelGone)
            }
            _ => (
                AuditEvent::ConnectFailure,
                SetupInput::Refused {
                    error: detail.clone(),
                    retry_after,
                },
            ),
        };
        self.audit(audit, 0, Some(detail));
        self.setup_next(input);
    }
}
