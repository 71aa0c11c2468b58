//! [`Gap`]: a window in which notifications may have been missed. Genesys does not replay what it
//! published while a socket was dead; the application re-reads state through the REST API for exactly
//! this window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::time::format_epoch_ms;

/// Why notifications may have been missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The peer went silent or stopped answering heartbeats.
    DeadPeer,
    /// The socket was closed or dropped without a planned rollover.
    UnplannedClose,
    /// A planned rollover did not bring the new socket up before the old one went away.
    FailedRollover,
    /// The channel expired or was deleted under an open socket.
    ChannelGone,
    /// A write on the socket failed.
    WriteFailure,
    /// The process restarted: the window runs from the moment the previous process was last known to be
    /// receiving (its checkpoint, see `KeepAliveMachine::resume_after`) to this one's first confirmed
    /// socket. Genesys does not replay what was published meanwhile.
    Restart,
}

impl GapReason {
    /// The reason's name in JSON and logs: `dead_peer`, `unplanned_close`, `failed_rollover`,
    /// `channel_gone`, `write_failure`, `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::DeadPeer => "dead_peer",
            GapReason::UnplannedClose => "unplanned_close",
            GapReason::FailedRollover => "failed_rollover",
            GapReason::ChannelGone => "channel_gone",
            GapReason::WriteFailure => "write_failure",
            GapReason::Restart => "restart",
        }
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A window in which notifications on `topics` may have been published and not delivered: from the
/// last moment the old socket was known to be receiving (its last inbound frame, less the largest recent
/// round trip, which bounds that frame's travel time) to the moment a new socket was open with its
/// subscriptions confirmed (or to the stop, if the machine stopped first). Times are wall-clock, derived
/// from the machine's clock inputs.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use genesys_keepalive::{Gap, GapReason};
/// let gap = Gap {
///     from: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
///     to: UNIX_EPOCH + Duration::from_millis(1_700_000_002_500),
///     reason: GapReason::DeadPeer,
///     topics: vec!["v2.users.u1.presence".into()],
/// };
/// assert_eq!(gap.from_iso8601(), "2023-11-14T22:13:20.000Z");
/// assert_eq!(gap.duration(), Duration::from_millis(2_500));
/// assert_eq!(gap.reason.as_str(), "dead_peer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The start of the window.
    pub from: SystemTime,
    /// The end of the window.
    pub to: SystemTime,
    /// Why.
    pub reason: GapReason,
    /// The topics subscribed when the window was reported.
    pub topics: Vec<String>,
}

impl Gap {
    /// `to - from`.
    pub fn duration(&self) -> Duration {
        self.to.duration_since(self.from).unwrap_or(Duration::ZERO)
    }

    /// `from` as ISO-8601 UTC with milliseconds.
    pub fn from_iso8601(&self) -> String {
        format_epoch_ms(epoch_ms(self.from))
    }

    /// `to` as ISO-8601 UTC with milliseconds.
    pub fn to_iso8601(&self) -> String {
        format_epoch_ms(epoch_ms(self.to))
    }

    /// Whether `t` lies inside the window (both ends included).
    pub fn contains(&self, t: SystemTime) -> bool {
        self.from <= t && t <= self.to
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
