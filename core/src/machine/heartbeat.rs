//! The open socket's heartbeats: the cadence per state, one frame in flight at a time, acks matched to
//! heartbeats (by `seq`, or oldest first), RTT and loss over a window, DEGRADED with hysteresis, and the
//! dead peer (idle or unanswered).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{KeepAliveMachine, CLOSE_DEAD_PEER, CLOSE_SEND_FAILED};
use crate::config::ProfileKind;
use crate::event::{Action, AlertEvent, AlertMetrics, AuditEvent};
use crate::frames::{self, FrameError, IntervalInfo, KeepAlivePayload, SizeDirective};
use crate::gap::GapReason;
use crate::ids::{FrameId, SocketId};
use crate::latency::LatencyWindow;
use crate::state::State;
use crate::timers::Timer;

/// What a frame in the send queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Heartbeat { seq: u64 },
}

#[derive(Debug)]
struct Outstanding {
    seq: u64,
    sent_at: Instant,
}

#[derive(Debug)]
struct InFlight {
    frame: FrameId,
    kind: FrameKind,
    size: usize,
}

/// One WebSocket and its heartbeat state (cleared with it).
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) socket: SocketId,
    pub(super) connection_id: String,
    pub(super) opened_at: Option<Instant>,
    /// Written by the inbound side: any frame proves the peer is there.
    pub(super) last_inbound: Instant,
    /// Written by the inbound side: the last notification on this socket (or its opening) proves the
    /// channel was alive then.
    pub(super) channel_alive_at: Instant,
    /// When the last heartbeat answered on this socket was sent (its opening before any): everything the
    /// server sent before it handled that heartbeat came before the answer, so it has arrived.
    pub(super) receiving_since: Instant,
    last_heartbeat_at: Option<Instant>,
    outstanding: VecDeque<Outstanding>,
    queue: VecDeque<(FrameKind, String)>,
    in_flight: Option<InFlight>,
    pub(super) missed_acks: u32,
    acked: bool,
}

impl Conn {
    /// A socket that has just opened.
    pub(super) fn opened(socket: SocketId, connection_id: String, now: Instant) -> Self {
        Conn {
            socket,
            connection_id,
            opened_at: Some(now),
            last_inbound: now,
            channel_alive_at: now,
            receiving_since: now,
            last_heartbeat_at: None,
            outstanding: VecDeque::new(),
            queue: VecDeque::new(),
            in_flight: None,
            missed_acks: 0,
            acked: false,
        }
    }

    /// What a drain needs of a socket it takes over: its last heartbeat, the frame in flight, and how
    /// many heartbeats are still unanswered.
    pub(super) fn drain_view(&self) -> (Option<Instant>, Option<FrameId>, usize) {
        let in_flight = self.in_flight.as_ref().map(|f| f.frame);
        (self.last_heartbeat_at, in_flight, self.outstanding.len())
    }

    fn heartbeat_pending(&self) -> bool {
        self.queue
            .iter()
            .any(|(k, _)| matches!(k, FrameKind::Heartbeat { .. }))
            || matches!(
                self.in_flight,
                Some(InFlight {
                    kind: FrameKind::Heartbeat { .. },
                    ..
                })
            )
    }
}

/// The heartbeat side's own fields (across connections).
#[derive(Debug)]
pub(super) struct Heartbeat {
    pub(super) latency: LatencyWindow,
    pub(super) next_frame: u64,
    next_seq: u64,
    healthy_samples: u32,
    loss_alerted: bool,
}

impl Heartbeat {
    pub(super) fn new(rtt_window: usize) -> Self {
        Heartbeat {
            latency: LatencyWindow::new(rtt_window),
            next_frame: 0,
            next_seq: 0,
            healthy_samples: 0,
            loss_alerted: false,
        }
    }

    /// A new connection (not a rollover): a new network path, a new history.
    pub(super) fn reset_history(&mut self) {
        self.latency.clear();
        self.healthy_samples = 0;
    }
}

impl KeepAliveMachine {
    fn interval(&self) -> Duration {
        let m = &self.config.interval_matrix;
        match self.state {
            State::Stable => m.stable,
            State::Degraded => m.degraded,
            _ => m.reconnecting,
        }
    }

    pub(super) fn reschedule_heartbeat(&mut self) {
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        if let Some(last) = conn.last_heartbeat_at {
            let interval = self.interval();
            let next = self.on_phase(last + interval, interval).max(self.now);
            self.timers.set(Timer::Heartbeat, next);
        }
    }

    /// `at`, or the next point after it on the heartbeat phase grid (a [`Config::heartbeat_phases`]-th of
    /// `interval` on the wall clock, shared by every machine).
    ///
    /// [`Config::heartbeat_phases`]: crate::Config::heartbeat_phases
    fn on_phase(&self, at: Instant, interval: Duration) -> Instant {
        self.wall.align_up(at, self.phase_step(interval))
    }

    /// The phase grid's step for `interval` (zero, no grid, with no phases).
    fn phase_step(&self, interval: Duration) -> Duration {
        match self.config.heartbeat_phases {
            0 => Duration::ZERO,
            phases => interval / phases,
        }
    }

    /// Sends a heartbeat now: at once on a new socket (`due` is `None`), or for the timer due at `due`.
    pub(super) fn send_heartbeat(&mut self, due: Option<Instant>) {
        let interval = self.interval();
        let now = self.now;
        // The next one is an interval after the deadline when this one ran late by no more than the slack or
        // a step of the phase grid (a grouped wake-up, or the tail of a burst of many connections' heartbeats
        // sharing a phase, must not stretch the schedule), and never closer than `min_interval` to this one;
        // on the phase grid either way (a no-op once the schedule is on it).
        let tolerance = self.timer_slack().max(self.phase_step(interval));
        let next = match due {
            Some(due) if now.saturating_duration_since(due) <= tolerance => self
                .on_phase(due + interval, interval)
                .max(now + self.config.min_interval),
            _ => self.on_phase(now + interval, interval),
        };
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        if conn.heartbeat_pending() {
            // The previous one is still queued behind a slow write: don't pile up.
            self.timers.set(Timer::Heartbeat, now + interval);
            return;
        }
        if let Some(last) = conn.last_heartbeat_at {
            let earliest = last + self.config.min_interval;
            if now < earliest {
                self.timers.set(Timer::Heartbeat, earliest);
                return;
            }
        }
        self.heartbeat.next_seq += 1;
        let seq = self.heartbeat.next_seq;
        let text = self.heartbeat_frame(seq, interval);
        self.timers.set(Timer::Heartbeat, next);
        match text {
            Ok(text) if text.len() <= self.config.max_payload_bytes => {
                self.enqueue_frame(FrameKind::Heartbeat { seq }, text);
            }
            Ok(text) => {
                self.stats.validation_failures += 1;
                let err = format!(
                    "frame of {} bytes exceeds max_payload_bytes {}",
                    text.len(),
                    self.config.max_payload_bytes
                );
                self.audit(AuditEvent::ValidationFailure, text.len(), Some(err));
            }
            Err(e) => {
                self.stats.validation_failures += 1;
                self.audit(AuditEvent::ValidationFailure, 0, Some(e.to_string()));
            }
        }
    }

    /// The profile's heartbeat frame, validated.
    fn heartbeat_frame(&self, seq: u64, interval: Duration) -> Result<String, FrameError> {
        if self.config.profile == ProfileKind::Notifications {
            return Ok(frames::PING_FRAME.to_owned());
        }
        let ts = self.wall.epoch_ms(self.now);
        let conn_id = self
            .active
            .as_ref()
            .map(|c| c.connection_id.as_str())
            .unwrap_or("");
        KeepAlivePayload {
            connection_id: conn_id,
            kind: "KEEP_ALIVE",
            timestamp: ts,
            interval_matrix: IntervalInfo {
                current: interval.as_millis() as u64,
                state: self.state.as_str(),
                next_expected: ts + interval.as_millis() as u64,
            },
            size_directive: SizeDirective {
                bytes: 0,
                max_allowed: self.config.max_payload_bytes,
                compression: false,
            },
            seq,
        }
        .to_frame(self.config.min_interval.as_millis() as u64)
    }

    fn enqueue_frame(&mut self, kind: FrameKind, text: String) {
        if let Some(conn) = self.active.as_mut() {
            conn.queue.push_back((kind, text));
        }
        self.pump_sends();
    }

    /// One frame in flight; the next goes out when the driver reports the last one written.
    fn pump_sends(&mut self) {
        let now = self.now;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        if conn.in_flight.is_some() {
            return;
        }
        let Some((kind, text)) = conn.queue.pop_front() else {
            return;
        };
        self.heartbeat.next_frame += 1;
        let frame = FrameId(self.heartbeat.next_frame);
        let socket = conn.socket;
        let size = text.len();
        let FrameKind::Heartbeat { seq } = kind;
        conn.last_heartbeat_at = Some(now);
        conn.outstanding
            .push_back(Outstanding { seq, sent_at: now });
        conn.in_flight = Some(InFlight { frame, kind, size });
        self.stats.heartbeats_sent += 1;
        if !self.timers.is_set(Timer::AckTimeout) {
            self.timers
                .set(Timer::AckTimeout, now + self.config.ack_timeout);
        }
        self.push(Action::SendFrame {
            socket,
            frame,
            text,
        });
    }

    pub(super) fn on_send_completed(&mut self, socket: SocketId, frame: FrameId) {
        let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) else {
            if self.is_draining(socket) {
                return self.drain_send_completed(socket, frame);
            }
            if !self.is_closing(socket) && !self.was_discarded(socket) {
                self.unexpected(format!("send report for unknown {socket}"));
            }
            return;
        };
        match conn.in_flight.take() {
            Some(f) if f.frame == frame => {
                self.stats.frames_sent += 1;
                if self.config.audit_send_success {
                    self.audit(AuditEvent::SendSuccess, f.size, None);
                }
                self.pump_sends();
            }
            other => {
                conn.in_flight = other;
                self.unexpected(format!("send report for unknown frame {}", frame.0));
            }
        }
    }

    pub(super) fn on_send_failed(&mut self, socket: SocketId, frame: FrameId, error: String) {
        let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) else {
            if self.is_draining(socket) {
                return self.drain_failed(socket, true);
            }
            if !self.is_closing(socket) && !self.was_discarded(socket) {
                self.unexpected(format!("send failure for unknown {socket}"));
            }
            return;
        };
        let size = match conn.in_flight.take() {
            Some(f) if f.frame == frame => f.size,
            other => {
                conn.in_flight = other;
                return self.unexpected(format!("send failure for unknown frame {}", frame.0));
            }
        };
        self.stats.send_failures += 1;
        self.audit(AuditEvent::SendFailure, size, Some(error.clone()));
        self.close_socket(socket, CLOSE_SEND_FAILED, "send failed", Duration::ZERO);
        self.connection_lost(format!("send failed: {error}"), GapReason::WriteFailure);
    }

    pub(super) fn on_ack_timeout(&mut self) {
        let now = self.now;
        let ack_timeout = self.config.ack_timeout;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        let mut lost = 0u32;
        while let Some(o) = conn.outstanding.front() {
            if o.sent_at + ack_timeout <= now {
                conn.outstanding.pop_front();
                lost += 1;
            } else {
                break;
            }
        }
        conn.missed_acks += lost;
        let missed = conn.missed_acks;
        let next = conn.outstanding.front().map(|o| o.sent_at + ack_timeout);
        if let Some(at) = next {
            self.timers.set(Timer::AckTimeout, at);
        }
        for _ in 0..lost {
            self.stats.heartbeats_lost += 1;
            self.heartbeat.latency.record_lost();
        }
        self.check_loss();
        if missed >= self.config.max_missed_acks {
            self.declare_dead(format!(
                "{missed} heartbeats in a row unanswered after {} ms",
                ack_timeout.as_millis()
            ));
        }
    }

    pub(super) fn on_idle_timeout(&mut self) {
        let idle = self
            .active
            .as_ref()
            .map(|c| self.now.saturating_duration_since(c.last_inbound))
            .unwrap_or_default();
        self.declare_dead(format!(
            "no inbound frame for {} ms (idle timeout {} ms)",
            idle.as_millis(),
            self.config.max_idle.as_millis()
        ));
    }

    /// An ack or pong: `seq` names the heartbeat (it and every older one are answered), or `None` for
    /// the oldest outstanding (Genesys pongs carry no id).
    pub(super) fn on_ack(&mut self, seq: Option<u64>) {
        let now = self.now;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        let pos = match seq {
            Some(s) => conn.outstanding.iter().position(|o| o.seq == s),
            None => (!conn.outstanding.is_empty()).then_some(0),
        };
        let Some(pos) = pos else {
            self.stats.acks_unmatched += 1;
            let why = match seq {
                Some(s) => format!("ack for heartbeat {s}, which is not outstanding"),
                None => "ack with no heartbeat outstanding".into(),
            };
            return self.audit(AuditEvent::UnmatchedAck, 0, Some(why));
        };
        // Karn's rule: a pong without an id while more than one heartbeat is outstanding may answer
        // any of them, so it gives no RTT sample. Timing it from the oldest would report a lost
        // heartbeat's whole wait as latency (a lost first probe after a reconnect, then a pong for
        // the second one 200 ms after it, read as 5 s and turned the connection DEGRADED).
        let ambiguous = seq.is_none() && conn.outstanding.len() > 1;
        // The answered heartbeat gives the RTT; the older ones count as answered without a sample.
        let mut implicit = 0u64;
        let mut rtt = None;
        for i in 0..=pos {
            let Some(o) = conn.outstanding.pop_front() else {
                break;
            };
            if i == pos && !ambiguous {
                rtt = Some(now.saturating_duration_since(o.sent_at));
            } else {
                implicit += 1;
            }
            if i == pos {
                conn.receiving_since = o.sent_at;
            }
        }
        conn.missed_acks = 0;
        let first_ack = !std::mem::replace(&mut conn.acked, true);
        let next = conn
            .outstanding
            .front()
            .map(|o| o.sent_at + self.config.ack_timeout);
        match next {
            Some(at) => self.timers.set(Timer::AckTimeout, at),
            None => self.timers.clear(Timer::AckTimeout),
        }
        for _ in 0..implicit {
            self.heartbeat.latency.record_answered();
        }
        self.stats.heartbeats_acked += implicit + u64::from(rtt.is_some());
        if let Some(rtt) = rtt {
            self.heartbeat.latency.record_rtt(rtt);
            self.stats.rtt_histogram.record(rtt);
        }
        if first_ack && matches!(self.state, State::Connecting | State::Reconnecting) {
            self.set_state(State::Stable);
        }
        if let Some(rtt) = rtt {
            self.evaluate_latency(rtt);
        }
        self.check_loss();
    }

    /// Hysteresis (defect 4): DEGRADED when the average crosses the threshold on a slow sample; STABLE
    /// again after `recovery_samples` healthy samples in a row.
    fn evaluate_latency(&mut self, rtt: Duration) {
        let threshold = self.config.latency_threshold;
        let avg = self.heartbeat.latency.avg_ms();
        let slow = rtt > threshold;
        match self.state {
            State::Stable if slow && avg > threshold.as_secs_f64() * 1000.0 => {
                self.heartbeat.healthy_samples = 0;
                self.set_state(State::Degraded);
                self.alert(
                    AlertEvent::LatencyThresholdExceeded,
                    AlertMetrics {
                        avg_latency: Some(avg),
                        packet_loss: Some(self.heartbeat.latency.loss()),
                        ..Default::default()
                    },
                );
            }
            State::Degraded if slow => self.heartbeat.healthy_samples = 0,
            State::Degraded => {
                self.heartbeat.healthy_samples += 1;
                if self.heartbeat.healthy_samples >= self.config.recovery_samples {
                    self.heartbeat.healthy_samples = 0;
                    self.set_state(State::Stable);
                }
            }
            _ => {}
        }
    }

    fn check_loss(&mut self) {
        let loss = self.heartbeat.latency.loss();
        if loss <= self.config.max_packet_loss {
            self.heartbeat.loss_alerted = false;
            return;
        }
        if !std::mem::replace(&mut self.heartbeat.loss_alerted, true) {
            self.alert(
                AlertEvent::PacketLossCritical,
                AlertMetrics {
                    packet_loss: Some(loss),
                    sent: Some(self.stats.heartbeats_sent),
                    ack: Some(self.stats.heartbeats_acked),
                    ..Default::default()
                },
            );
        }
    }

    /// The peer is silent or unanswering (defect 6): alert, close, reconnect.
    fn declare_dead(&mut self, why: String) {
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        let socket = conn.socket;
        let idle_ms = self
            .now
            .saturating_duration_since(conn.last_inbound)
            .as_millis() as u64;
        self.stats.dead_peers += 1;
        self.alert(
            AlertEvent::DeadPeer,
            AlertMetrics {
                avg_latency: Some(self.heartbeat.latency.avg_ms()),
                packet_loss: Some(self.heartbeat.latency.loss()),
                sent: Some(self.stats.heartbeats_sent),
                ack: Some(self.stats.heartbeats_acked),
                idle_ms: Some(idle_ms),
                detail: Some(why.clone()),
                ..Default::default()
            },
        );
        self.audit(AuditEvent::DeadPeer, 0, Some(why.clone()));
        self.close_socket(socket, CLOSE_DEAD_PEER, "dead peer", Duration::ZERO);
        self.connection_lost(format!("dead peer: {why}"), GapReason::DeadPeer);
    }

    /// The connection's timers, cleared with it.
    pub(super) fn clear_conn_timers(&mut self) {
        for t in [
            Timer::Heartbeat,
            Timer::AckTimeout,
            Timer::Idle,
            Timer::MinUptime,
        ] {
            self.timers.clear(t);
        }
    }
}
