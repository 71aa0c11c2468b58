//! What a REST call is for: shared by the REST side (`rest.rs`) and the setup, which asks for calls.

/// What a REST call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RestCall {
    Token,
    CreateChannel,
    /// Replace the channel's subscriptions (setup, or to extend the channel before it expires).
    Subscribe {
        channel_id: String,
        topics: Vec<String>,
        extend: bool,
    },
    /// Add topics to the current channel (the application asked).
    AddTopics {
        channel_id: String,
        topics: Vec<String>,
    },
}

impl RestCall {
    pub(super) fn describe(&self) -> String {
        match self {
            RestCall::Token => "requesting an OAuth token".into(),
            RestCall::CreateChannel => "creating a notification channel".into(),
            RestCall::Subscribe { topics, .. } | RestCall::AddTopics { topics, .. } => {
                let mut shown: Vec<&str> = topics.iter().take(5).map(|s| s.as_str()).collect();
                if topics.len() > 5 {
                    shown.push("…");
                }
                format!("subscribing to topics [{}]", shown.join(", "))
            }
        }
    }

    /// A call the connection setup waits for (its failure fails the attempt).
    pub(super) fn is_setup_call(&self) -> bool {
        matches!(
            self,
            RestCall::Token | RestCall::CreateChannel | RestCall::Subscribe { extend: false, .. }
        )
    }
}
