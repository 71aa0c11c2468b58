//! REST, sans-IO: the machine builds each request (method, URL, headers, body) and parses each response
//! itself. A driver's HTTP code is one function: send this request, return that response.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::ids::RequestId;
use crate::secret::Secret;

/// HTTP methods the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Method {
    /// The method's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// Header name/value pairs. `Debug` prints `[redacted]` for `Authorization`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Adds one header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Iterates over the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (n, v) in &self.0 {
            if n.eq_ignore_ascii_case("authorization") {
                m.entry(n, &"[redacted]");
            } else {
                m.entry(n, v);
            }
        }
        m.finish()
    }
}

/// A request for the driver to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Report the response with this id.
    pub id: RequestId,
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Headers, `Authorization` included. `Debug` redacts it.
    pub headers: Headers,
    /// The body, if any.
    pub body: Option<String>,
    /// Give up after this long and report [`Event::HttpFailed`](crate::Event::HttpFailed). The machine also
    /// keeps its own deadline, so a driver that forgets is still safe.
    pub timeout: Duration,
}

/// A response for the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The request it answers.
    pub request: RequestId,
    /// The status code.
    pub status: u16,
    /// Response headers (only `Retry-After` is read).
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// `Authorization: Basic base64(id:secret)` for the token request.
#[doc(hidden)] // the simulated gateway checks it
pub fn basic_auth(client_id: &str, secret: &Secret) -> String {
    let raw = format!("{client_id}:{}", secret.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// `Retry-After` in seconds (an HTTP date is not honoured; the default applies then).
pub(crate) fn retry_after(headers: &Headers) -> Option<Duration> {
    parse_retry_after(headers.get("retry-after")?)
}

/// A `Retry-After` value in seconds (fractions allowed, capped at a day); `None` for anything else (an
/// HTTP date, garbage, a negative number). Drivers use it for a refused WebSocket handshake, so that
/// REST and handshakes read the header the same way.
///
/// ```
/// use std::time::Duration;
/// use genesys_keepalive::http::parse_retry_after;
/// assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(86_400)));
/// assert_eq!(parse_retry_after("NaN"), None);
/// ```
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs.min(86_400.0)))
    } else {
        None
    }
}

/// A 200 from the token endpoint.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<f64>,
}

/// A 200/201 from channel creation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChannelResponse {
    pub connect_uri: String,
    pub id: String,
    #[serde(default)]
    pub expires: Option<String>,
}

/// One entity of a subscription response.
#[derive(Deserialize)]
pub(crate) struct SubscriptionEntity {
    pub id: String,
    #[serde(default)]
    pub state: Option<String>,
}

/// A 200 from a subscription call.
#[derive(Deserialize)]
pub(crate) struct SubscriptionResponse {
    #[serde(default)]
    pub entities: Vec<SubscriptionEntity>,
}

/// An OAuth / API error body; whichever fields are there.
#[derive(Deserialize, Default)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// A short, credential-free description of an error body.
pub(crate) fn describe_error(status: u16, body: &[u8]) -> String {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let mut parts = vec![format!("HTTP {status}")];
    for p in [
        parsed.error,
        parsed.error_description,
        parsed.description,
        parsed.message,
    ]
    .into_iter()
    .flatten()
    {
        if !parts.contains(&p) {
            parts.push(p);
        }
    }
    let mut s = parts.join(": ");
    truncate(&mut s, 300);
    s
}

/// Truncates to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Minimal `application/x-www-form-urlencoded` / JSON-string escaping of a topic id.
pub(crate) fn topics_body(topics: &[String]) -> String {
    let items: Vec<serde_json::Value> = topics
        .iter()
        .map(|t| serde_json::json!({ "id": t }))
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_id_colon_secret() {
        assert_eq!(
            basic_auth("id", &Secret::new("secret")),
            "Basic aWQ6c2VjcmV0"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_ignores_garbage() {
        let mut h = Headers::new();
        h.push("Retry-After", "7");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = Headers::new();
        h.push("retry-after", "soon");
        assert_eq!(retry_after(&h), None);
        let mut h = Headers::new();
        h.push("retry-after", "-3");
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn headers_debug_redacts_authorization() {
        let mut h = Headers::new();
        h.push("Authorization", "Bearer abc.def");
        h.push("Accept", "application/json");
        let s = format!("{h:?}");
        assert!(!s.contains("abc.def"), "{s}");
        assert!(s.contains("application/json"));
    }

    #[test]
    fn error_bodies_are_described_without_guessing() {
        let d = describe_error(
            400,
            br#"{"error":"unauthorized_client","description":"bad grant"}"#,
        );
        assert_eq!(d, "HTTP 400: unauthorized_client: bad grant");
        assert_eq!(describe_error(502, b"<html>"), "HTTP 502");
    }
}
