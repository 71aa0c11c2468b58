//! When a connection ends or must move: exactly one reconnect at a time with a full-jitter backoff and a
//! stop after the last attempt, the attempt counter reset after `min_uptime` of health, and the
//! make-before-break rollover with its deadline.

use std::time::Duration;

use super::setup_state::{SetupInput, SetupKind};
use super::{KeepAliveMachine, CLOSE_ROLLOVER, ROLLOVER_LINGER};
use crate::config::ProfileKind;
use crate::event::{Action, AuditEvent, StopReason};
use crate::gap::GapReason;
use crate::state::State;
use crate::timers::Timer;

impl KeepAliveMachine {
    /// Exactly one reconnect at a time (defect 7), with full jitter (defect 9), and a stop after the last
    /// attempt (defect 10).
    pub(super) fn schedule_reconnect(&mut self, error: String, min_delay: Option<Duration>) {
        if self.setup.is_running() || self.timers.is_set(Timer::Reconnect) || self.is_stopped() {
            return;
        }
        self.setup.last_error = error;
        if self.active.is_none() {
            self.set_state(if self.setup.ever_opened {
                State::Reconnecting
            } else {
                State::Connecting
            });
        }
        let attempts = self.setup.attempts;
        if attempts >= self.config.max_reconnect_attempts {
            let last_error = self.setup.last_error.clone();
            return self.stop(StopReason::ReconnectAttemptsExhausted {
                attempts,
                last_error,
            });
        }
        self.setup.attempts += 1;
        let mut delay = self.backoff.delay(self.setup.attempts, &mut self.rng);
        if let Some(min) = min_delay {
            delay = delay.max(min.min(self.config.retry_budget.max(self.config.backoff_max)));
        }
        self.stats.reconnects += 1;
        self.timers.set(Timer::Reconnect, self.now + delay);
        let why = format!(
            "attempt {} of {} in {} ms after: {}",
            self.setup.attempts,
            self.config.max_reconnect_attempts,
            delay.as_millis(),
            self.setup.last_error
        );
        self.audit(AuditEvent::ReconnectScheduled, 0, Some(why));
        self.push(Action::ReconnectAfter(delay));
    }

    pub(super) fn on_reconnect_timer(&mut self) {
        let kind = if self.active.is_some() {
            SetupKind::Rollover
        } else {
            SetupKind::Connect
        };
        self.start_setup(kind);
    }

    pub(super) fn on_connect_timeout(&mut self) {
        if self.setup.opening_socket().is_some() {
            let error = format!(
                "the socket did not open within {} ms",
                self.config.connect_timeout.as_millis()
            );
            self.setup_failed(error);
        }
    }

    /// Healthy for `min_uptime`: the attempt counter starts again (defect 8); otherwise look again later.
    pub(super) fn on_min_uptime(&mut self) {
        match &self.active {
            Some(c) if c.missed_acks == 0 => self.setup.attempts = 0,
            Some(_) => {
                let at = self.now + self.config.min_uptime;
                self.timers.set(Timer::MinUptime, at);
            }
            None => {}
        }
    }

    /// The active socket is gone (for `reason`): a gap opens, forget the socket and reconnect. A running
    /// rollover that loses its old socket first has failed to make before break.
    pub(super) fn connection_lost(&mut self, error: String, reason: GapReason) {
        let rollover = self.setup.kind() == Some(SetupKind::Rollover);
        self.open_gap(if rollover {
            GapReason::FailedRollover
        } else {
            reason
        });
        if self.active.take().is_none() {
            return;
        }
        self.clear_conn_timers();
        self.set_state(State::Reconnecting);
        if self.setup.kind() == Some(SetupKind::Rollover) {
            // A rollover is already bringing up the next socket.
            self.setup_next(SetupInput::OldSocketGone);
            self.setup.last_error = error;
            return;
        }
        self.schedule_reconnect(error, None);
    }

    /// When to extend a channel that lives `lifetime`: `resubscribe_margin` before it expires, or halfway
    /// for a channel shorter than the margin.
    pub(super) fn resubscribe_after(&self, lifetime: Duration) -> Duration {
        match lifetime.checked_sub(self.config.resubscribe_margin) {
            Some(d) if !d.is_zero() => d,
            _ => (lifetime / 2).max(Duration::from_secs(1)),
        }
    }

    /// Make before break: a new channel and socket, then close the old one.
    pub(super) fn begin_rollover(&mut self) {
        // Only a live socket rolls over; with none, the scheduled reconnect (and its backoff) stands.
        if self.config.profile != ProfileKind::Notifications
            || self.setup.is_running()
            || self.active.is_none()
            || self.timers.is_set(Timer::Reconnect)
        {
            return;
        }
        self.audit(AuditEvent::RolloverStarted, 0, None);
        self.timers.set(
            Timer::RolloverDeadline,
            self.now + self.config.rollover_deadline,
        );
        self.timers.clear(Timer::Reconnect);
        self.start_setup(SetupKind::Rollover);
    }

    /// The rollover took too long: close the old socket now; the setup goes on as a plain connect.
    pub(super) fn on_rollover_deadline(&mut self) {
        if self.setup.kind() != Some(SetupKind::Rollover) {
            return;
        }
        self.setup_next(SetupInput::OldSocketGone);
        self.open_gap(GapReason::FailedRollover);
        if let Some(old) = self.active.take() {
            let why = "planned close: rollover did not finish in time";
            self.close_socket(old.socket, CLOSE_ROLLOVER, why, ROLLOVER_LINGER);
            self.clear_conn_timers();
            self.set_state(State::Reconnecting);
        }
    }
}
