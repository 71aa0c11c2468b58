//! What leaves the machine besides its decisions' effects: the action queue, audit entries, alerts, the
//! state, and the stop. Every text bound outward is scrubbed of credentials here.

use std::collections::VecDeque;
use std::time::Duration;

use super::KeepAliveMachine;
use crate::event::{Action, Alert, AlertEvent, AlertMetrics, AuditEntry, AuditEvent, StopReason};
use crate::http;
use crate::secret::Secret;
use crate::state::State;

/// How many recent access tokens are remembered for scrubbing.
const ISSUED_TOKENS_KEPT: usize = 64;
/// How long a graceful shutdown waits for the peer's close frame.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// The records' own fields.
#[derive(Debug, Default)]
pub(super) struct Records {
    /// Decided, not yet polled.
    pub(super) actions: VecDeque<Action>,
    /// Recent access tokens (expired ones too), scrubbed from any text that leaves the machine.
    issued_tokens: VecDeque<Secret>,
}

impl KeepAliveMachine {
    pub(super) fn push(&mut self, action: Action) {
        self.records.actions.push_back(action);
    }

    /// Remembers an access token, so that it is scrubbed from whatever text leaves the machine.
    pub(super) fn remember_token(&mut self, token: Secret) {
        let issued = &mut self.records.issued_tokens;
        if issued.len() >= ISSUED_TOKENS_KEPT {
            issued.pop_front();
        }
        issued.push_back(token);
    }

    pub(super) fn timestamp(&self) -> String {
        self.wall.iso8601(self.now)
    }

    pub(super) fn audit(&mut self, event: AuditEvent, payload_size: usize, error: Option<String>) {
        let connection_id = self
            .active
            .as_ref()
            .map(|c| c.connection_id.clone())
            .unwrap_or_else(|| self.setup.connection_id.clone());
        let error = error.map(|e| self.scrub(e));
        let entry = AuditEntry {
            timestamp: self.timestamp(),
            connection_id,
            event,
            payload_size,
            state: self.state,
            error,
        };
        self.push(Action::Audit(entry));
    }

    pub(super) fn alert(&mut self, event: AlertEvent, metrics: AlertMetrics) {
        self.stats.alerts += 1;
        let mut metrics = metrics;
        metrics.detail = metrics.detail.map(|d| self.scrub(d));
        let alert = Alert {
            event,
            metrics,
            timestamp: self.timestamp(),
        };
        self.push(Action::Alert(alert));
    }

    pub(super) fn unexpected(&mut self, what: String) {
        self.stats.unexpected_events += 1;
        self.audit(AuditEvent::UnexpectedEvent, 0, Some(what));
    }

    /// Removes any credential from a text bound for an audit entry, alert or stop reason.
    fn scrub(&self, mut text: String) -> String {
        let secrets = self
            .config
            .client_secret
            .iter()
            .chain(self.records.issued_tokens.iter());
        for s in secrets {
            let s = s.expose();
            if s.len() >= 4 && text.contains(s) {
                text = text.replace(s, "[redacted]");
            }
        }
        http::truncate(&mut text, 500);
        text
    }

    pub(super) fn set_state(&mut self, to: State) {
        let from = self.state;
        if from == to || from == State::Stopped {
            return;
        }
        self.state = to;
        self.push(Action::StateChanged { from, to });
        // Defect 2: the cadence follows the state.
        self.reschedule_heartbeat();
    }

    pub(super) fn shutdown(&mut self) {
        self.audit(AuditEvent::Shutdown, 0, None);
        self.stop(StopReason::Shutdown);
    }

    /// Stops for good: an alert for a failure, every socket closed, every timer but the linger cleared.
    pub(super) fn stop(&mut self, reason: StopReason) {
        if self.is_stopped() {
            return;
        }
        let reason = self.scrub_reason(reason);
        let alert = match &reason {
            StopReason::Shutdown => None,
            StopReason::AuthenticationFailed { .. } | StopReason::Forbidden { .. } => {
                Some(AlertEvent::AuthFailure)
            }
            StopReason::ReconnectAttemptsExhausted { .. } => Some(AlertEvent::ReconnectExhausted),
        };
        if let Some(event) = alert {
            self.alert(
                event,
                AlertMetrics {
                    attempts: Some(self.setup.attempts),
                    detail: Some(reason.to_string()),
                    ..Default::default()
                },
            );
        }
        let (why, linger) = if reason == StopReason::Shutdown {
            ("Graceful shutdown", SHUTDOWN_LINGER)
        } else {
            ("Stopping", Duration::ZERO)
        };
        // What a checkpoint must hold from now on (before the windows below are reported).
        self.note_stop();
        // A window of loss still open (or a rollover not yet proved) ends with the machine.
        self.close_gap();
        let draining = self.end_drains();
        for socket in self.open_sockets().into_iter().chain(draining) {
            self.close_socket(socket, 1000, why, linger);
        }
        self.audit(AuditEvent::Stopped, 0, Some(reason.to_string()));
        self.active = None;
        self.setup.abandon();
        self.rest.clear();
        self.timers.clear_all();
        // A stop inside the timers may come before a linger that is already due: discard those now.
        self.expire_lingers();
        let from = self.state;
        self.state = State::Stopped;
        self.push(Action::StateChanged {
            from,
            to: State::Stopped,
        });
        self.push(Action::Stopped(reason));
    }

    fn scrub_reason(&self, reason: StopReason) -> StopReason {
        match reason {
            StopReason::AuthenticationFailed { detail } => StopReason::AuthenticationFailed {
                detail: self.scrub(detail),
            },
            StopReason::Forbidden { detail } => StopReason::Forbidden {
                detail: self.scrub(detail),
            },
            StopReason::ReconnectAttemptsExhausted {
                attempts,
                last_error,
            } => StopReason::ReconnectAttemptsExhausted {
                attempts,
                last_error: self.scrub(last_error),
            },
            r => r,
        }
    }
}
