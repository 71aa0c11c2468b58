//! Inbound frames: liveness (any frame), then what the profile says the frame is: an ack, a server
//! heartbeat, a planned close, a gone channel, or a notification (delivered once, even when a rollover
//! brings it on both sockets).

use std::collections::{HashSet, VecDeque};

use super::KeepAliveMachine;
use crate::config::ProfileKind;
use crate::event::{Action, AlertEvent, AlertMetrics, AuditEvent, Notification};
use crate::frames::{self, Inbound as Frame};
use crate::gap::GapReason;
use crate::ids::SocketId;
use crate::rng::{fnv1a64, FNV_OFFSET};
use crate::timers::Timer;

/// The inbound side's own fields: the deduplication window.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    dedup_order: VecDeque<u64>,
    dedup_set: HashSet<u64>,
}

impl KeepAliveMachine {
    /// Liveness: any frame on the active socket proves the peer is there (defect 3: it is not an ack).
    fn touch(&mut self, socket: SocketId, len: usize) -> bool {
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) else {
            return false;
        };
        conn.last_inbound = self.now;
        self.timers
            .set(Timer::Idle, self.now + self.config.max_idle);
        true
    }

    pub(super) fn on_binary(&mut self, socket: SocketId, len: usize) {
        let active = self.touch(socket, len);
        if !active && self.was_discarded(socket) {
            return;
        }
        if !active && !self.is_closing(socket) {
            return self.unexpected(format!("frame on unknown {socket}"));
        }
        self.stats.invalid_utf8 += 1;
        self.audit(
            AuditEvent::InvalidFrame,
            len,
            Some("binary frame or invalid UTF-8".into()),
        );
    }

    pub(super) fn on_text(&mut self, socket: SocketId, text: &str) {
        let active = self.touch(socket, text.len());
        let closing = self.is_closing(socket);
        if !active && !closing {
            if !self.was_discarded(socket) {
                self.unexpected(format!("frame on unknown {socket}"));
            }
            return;
        }
        if text.len() > self.config.max_inbound_bytes {
            self.stats.oversized_frames += 1;
            let why = format!(
                "frame of {} bytes over max_inbound_bytes {}",
                text.len(),
                self.config.max_inbound_bytes
            );
            return self.audit(AuditEvent::OversizedFrame, text.len(), Some(why));
        }
        self.on_frame(
            frames::classify(self.config.profile, text),
            text,
            socket,
            active,
        );
    }

    /// A classified frame; `active` when it came on the active socket (not a closing one).
    fn on_frame(&mut self, frame: Frame<'_>, text: &str, socket: SocketId, active: bool) {
        match frame {
            Frame::KeepAliveAck { seq } if active => self.on_ack(seq),
            Frame::Pong if active => self.on_ack(None),
            Frame::Pong => self.drain_answered(socket),
            Frame::KeepAliveAck { .. } => {}
            Frame::ServerHeartbeat => self.stats.server_heartbeats += 1,
            Frame::SocketClosing if active => self.on_socket_closing(),
            Frame::SocketClosing => {}
            Frame::ChannelGone { message } if active => {
                let message = message.into_owned();
                self.audit(AuditEvent::ChannelExpired, text.len(), Some(message));
                // What the channel carried before this frame has arrived; after it, nothing will.
                self.open_gap(GapReason::ChannelGone);
                self.begin_rollover();
            }
            Frame::ChannelGone { .. } => {}
            Frame::Notification {
                topic,
                correlation_id,
            } => {
                let topic = topic.into_owned();
                let correlation_id = correlation_id.map(|c| c.into_owned());
                if let Some(conn) = self.active.as_mut().filter(|_| active) {
                    conn.channel_alive_at = self.now;
                }
                self.on_notification(topic, correlation_id, text);
            }
            Frame::WrongShape(why) => {
                self.stats.wrong_shape += 1;
                self.audit(AuditEvent::InvalidFrame, text.len(), Some(why.into()));
            }
            Frame::NotJson => {
                self.stats.non_json += 1;
                let why = Some("not JSON".into());
                self.audit(AuditEvent::InvalidFrame, text.len(), why);
            }
        }
    }

    fn on_notification(&mut self, topic: String, correlation_id: Option<String>, raw: &str) {
        let notifications = self.config.profile == ProfileKind::Notifications;
        if notifications && !self.rest.topic_set.contains(&topic) {
            self.stats.unknown_topics += 1;
            return self.audit(
                AuditEvent::UnknownTopic,
                raw.len(),
                Some(format!("notification for unsubscribed topic `{topic}`")),
            );
        }
        if notifications && !self.first_sighting(&correlation_id, raw) {
            self.stats.duplicates_dropped += 1;
            return;
        }
        self.stats.notifications_delivered += 1;
        self.push(Action::Deliver(Notification {
            topic_name: topic,
            raw: raw.to_owned(),
            correlation_id,
        }));
    }

    /// Rollover overlap: the same notification may come on the old and the new socket. Its key is
    /// `metadata.CorrelationId`, or the whole frame when there is none.
    fn first_sighting(&mut self, correlation_id: &Option<String>, raw: &str) -> bool {
        let key = fnv1a64(
            FNV_OFFSET,
            correlation_id.as_deref().unwrap_or(raw).as_bytes(),
        );
        let d = &mut self.inbound;
        if d.dedup_set.contains(&key) {
            return false;
        }
        // Make room first, so that neither collection ever grows past the window.
        if d.dedup_order.len() >= self.config.dedup_window {
            if let Some(old) = d.dedup_order.pop_front() {
                d.dedup_set.remove(&old);
            }
        }
        d.dedup_set.insert(key);
        d.dedup_order.push_back(key);
        true
    }

    fn on_socket_closing(&mut self) {
        self.alert(
            AlertEvent::SocketClosing,
            AlertMetrics {
                detail: Some("server announced a planned close; rolling over".into()),
                ..Default::default()
            },
        );
        self.begin_rollover();
    }
}
