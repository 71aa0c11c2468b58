//! The ids the machine hands out, so that a driver's reports name what they are about.

use std::fmt;

use serde::Serialize;

/// Names one WebSocket the machine asked for with [`Action::Connect`](crate::Action::Connect). During a rollover two are open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SocketId(pub u64);

/// Names one outbound frame, so the driver can report it written ([`Event::SendCompleted`](crate::Event::SendCompleted)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FrameId(pub u64);

/// Names one HTTP request, so the driver can hand back its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RequestId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket#{}", self.0)
    }
}
