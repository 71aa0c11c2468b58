//! The HTTP side: the shared reqwest code (see [`genesys_keepalive_driver_common::http`]), which runs on
//! tokio as is; only the user agent is this crate's.

/// The user agent of this driver's reqwest client.
pub(crate) const USER_AGENT: &str = concat!("genesys-keepalive-tokio/", env!("CARGO_PKG_VERSION"));
