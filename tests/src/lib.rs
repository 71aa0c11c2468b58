//! Test kit for `genesys-keepalive`: a local Genesys Cloud gateway over real loopback sockets
//! ([`gateway::Gateway`]) and a fault-injecting TCP proxy ([`proxy::Proxy`]).
//!
//! Both run on a dedicated OS thread with their own tokio runtime and are driven through
//! synchronous, thread-safe methods, so they serve tests written for tokio, async-std, smol or
//! plain threads. The gateway speaks the real Genesys paths and shapes (see `PROTOCOL.md`):
//! `POST /oauth/token`, `POST /api/v2/notifications/channels`,
//! `PUT|POST /api/v2/notifications/channels/<id>/subscriptions`, `HEAD` of a channel, the
//! notification WebSocket `/channels/<id>`, plus the seed's `KEEP_ALIVE` WebSocket `/keepalive`,
//! and `/testkit/*` control endpoints so another process can drive faults over HTTP.
//!
//! No credential (client secret, access token) is ever written to a log line.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod gap_scenarios;
pub mod gateway;
pub mod proxy;
pub mod scenarios;
mod tls;
mod util;

pub use gateway::{Endpoint, Fault, Gateway, GatewayConfig, GatewayStats, RequestRecord, Scripted};
pub use proxy::{Proxy, ProxyMode, ProxyStats};
