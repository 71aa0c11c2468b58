//! The connection state, as the machine reports it (in [`Stats`](crate::Stats), audit entries and
//! [`Action::StateChanged`](crate::Action::StateChanged)).

use serde::Serialize;

/// The connection state (the seed's names, plus CONNECTING and STOPPED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// First connection: setting up, or open and waiting for the first ack.
    #[default]
    Connecting,
    /// Healthy.
    Stable,
    /// Average RTT above the threshold: heartbeats come faster.
    Degraded,
    /// The connection was lost: waiting to retry, setting up, or open and waiting for the first ack.
    Reconnecting,
    /// Stopped for good (shutdown, or a terminal failure).
    Stopped,
}

impl State {
    /// The seed's name, e.g. `STABLE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Connecting => "CONNECTING",
            State::Stable => "STABLE",
            State::Degraded => "DEGRADED",
            State::Reconnecting => "RECONNECTING",
            State::Stopped => "STOPPED",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
