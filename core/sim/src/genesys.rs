//! The Genesys Cloud service, as the simulator and the fuzz harness answer the machine: which endpoint a
//! request is for, and the bodies of the answers (token, channel, subscriptions, errors). One place, so
//! that the simulated gateway and the checker's harness speak the same API (see PROTOCOL.md).

/// What a request is for, from its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `POST {login}/oauth/token`.
    Token,
    /// `POST {api}/api/v2/notifications/channels`.
    CreateChannel,
    /// `PUT`/`POST {api}/api/v2/notifications/channels/{id}/subscriptions`.
    Subscriptions {
        /// The channel named in the path.
        channel_id: &'a str,
    },
    /// Anything else.
    Unknown,
}

impl<'a> Endpoint<'a> {
    /// Routes a request URL (scheme and host are ignored).
    pub fn of(url: &'a str) -> Self {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        match path {
            "/oauth/token" => Endpoint::Token,
            "/api/v2/notifications/channels" => Endpoint::CreateChannel,
            p => p
                .strip_prefix("/api/v2/notifications/channels/")
                .and_then(|r| r.strip_suffix("/subscriptions"))
                .map_or(Endpoint::Unknown, |channel_id| Endpoint::Subscriptions {
                    channel_id,
                }),
        }
    }
}

/// The token endpoint's answer (`expires_in` in seconds; `None` leaves it out).
pub fn token_body(access_token: &str, expires_in: Option<u64>) -> String {
    let mut v = serde_json::json!({ "access_token": access_token, "token_type": "bearer" });
    if let Some(e) = expires_in {
        v["expires_in"] = e.into();
    }
    v.to_string()
}

/// A created channel: its id, the socket URL and its expiry (ISO 8601).
pub fn channel_body(id: &str, connect_uri: &str, expires: &str) -> String {
    serde_json::json!({ "connectUri": connect_uri, "id": id, "expires": expires }).to_string()
}

/// The topic ids a subscriptions request asks for (`[{"id": …}, …]`).
pub fn requested_topics(body: Option<&str>) -> Vec<String> {
    serde_json::from_str::<Vec<serde_json::Value>>(body.unwrap_or("[]"))
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// The subscriptions answer: every topic `Permitted`, except those `rejected` says (by position).
pub fn subscriptions_body(topics: &[String], rejected: impl Fn(usize) -> bool) -> String {
    let entities: Vec<serde_json::Value> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let state = if rejected(i) { "Rejected" } else { "Permitted" };
            serde_json::json!({ "id": t, "state": state })
        })
        .collect();
    serde_json::json!({ "entities": entities }).to_string()
}

/// An error answer, as Genesys shapes them.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_three_endpoints() {
        assert_eq!(Endpoint::of("https://login.x/oauth/token"), Endpoint::Token);
        assert_eq!(
            Endpoint::of("https://api.x/api/v2/notifications/channels"),
            Endpoint::CreateChannel
        );
        assert_eq!(
            Endpoint::of("https://api.x/api/v2/notifications/channels/ch1/subscriptions"),
            Endpoint::Subscriptions { channel_id: "ch1" }
        );
        assert_eq!(Endpoint::of("https://api.x/"), Endpoint::Unknown);
    }

    #[test]
    fn subscriptions_echo_the_requested_topics() {
        let topics = requested_topics(Some(r#"[{"id":"a"},{"id":"b"}]"#));
        assert_eq!(topics, ["a", "b"]);
        let body = subscriptions_body(&topics, |i| i == 1);
        assert!(body.contains(r#""state":"Rejected""#), "{body}");
        assert!(body.contains(r#""state":"Permitted""#), "{body}");
    }
}
