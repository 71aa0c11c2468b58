//! A string that never prints: client secrets and access tokens.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A credential (client secret, access token). `Debug`, `Display` and `Serialize` print `[redacted]`;
/// only [`Secret::expose`] gives the value, and only code that must send it calls that. Clones share the
/// value (the machine keeps a token both to send and to scrub from what it prints).
///
/// ```
/// use genesys_keepalive::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The credential itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the credential is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::from)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(Arc::from(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(Arc::from(s))
    }
}
