//! The REST side: one call in flight at a time, a queue behind it, the OAuth token (refreshed before
//! expiry, never sent expired), and what each answer means. A refused or throttled call is retried
//! through one retry state: the call carries its own history ([`Attempt`]), and at most one attempt
//! waits for `Timer::HttpRetry`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::rest_call::RestCall;
use super::setup_state::{Channel, SetupInput, SetupState};
use super::{KeepAliveMachine, CHANNEL_LIFETIME};
use crate::event::{Action, AuditEvent, StopReason};
use crate::gap::GapReason;
use crate::http::{self, Headers, HttpRequest, HttpResponse, Method};
use crate::ids::RequestId;
use crate::timers::Timer;
use crate::token::TokenCache;

/// A call and its retry history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attempt {
    call: RestCall,
    /// When its chain of attempts began (the retry budget counts from here).
    first_sent: Instant,
    /// It was refused with 401 once and the token refreshed for it: a second 401 stops.
    refreshed: bool,
}

impl Attempt {
    fn new(call: RestCall, now: Instant) -> Self {
        Attempt {
            call,
            first_sent: now,
            refreshed: false,
        }
    }
}

#[derive(Debug)]
struct Pending {
    id: RequestId,
    attempt: Attempt,
}

/// The REST side's own fields.
#[derive(Debug)]
pub(super) struct Rest {
    pending: Option<Pending>,
    queue: VecDeque<Attempt>,
    /// The one retry state: a throttled attempt, sent again when `Timer::HttpRetry` fires. Nothing else
    /// is sent meanwhile.
    retry: Option<Attempt>,
    pub(super) next_request: u64,
    pub(super) token: TokenCache,
    token_fail_streak: u32,
    /// The topics subscribed (or to be), in order, and as a set.
    pub(super) topics: Vec<String>,
    pub(super) topic_set: HashSet<String>,
}

impl Rest {
    pub(super) fn new(topics: &[String]) -> Self {
        let topics = dedup_topics(topics);
        Rest {
            pending: None,
            queue: VecDeque::new(),
            retry: None,
            next_request: 0,
            token: TokenCache::default(),
            token_fail_streak: 0,
            topic_set: topics.iter().cloned().collect(),
            topics,
        }
    }

    /// The machine stopped: nothing more is sent.
    pub(super) fn clear(&mut self) {
        self.pending = None;
        self.queue.clear();
        self.retry = None;
    }

    /// `call` is in flight, or waiting to be retried: asking for it again adds nothing.
    fn has(&self, call: &RestCall) -> bool {
        let pending = self.pending.as_ref().map(|p| &p.attempt);
        pending
            .into_iter()
            .chain(&self.retry)
            .any(|a| a.call == *call)
    }
}

impl KeepAliveMachine {
    pub(super) fn on_token_expired(&mut self) {
        self.rest.token.invalidate();
        self.timers.clear(Timer::TokenRefresh);
        self.on_token_refresh_timer();
    }

    /// The token was refused: forget it, and fetch a fresh one before anything else.
    pub(super) fn refresh_token(&mut self) {
        self.rest.token.invalidate();
        self.enqueue_rest_front(RestCall::Token);
    }

    pub(super) fn on_token_refresh_timer(&mut self) {
        if self.config.has_credentials() {
            self.enqueue_rest_front(RestCall::Token);
        }
    }

    pub(super) fn on_resubscribe_timer(&mut self) {
        if let Some(ch) = &self.setup.channel {
            let call = RestCall::Subscribe {
                channel_id: ch.id.clone(),
                topics: self.rest.topics.clone(),
                extend: true,
            };
            self.enqueue_rest(call);
        }
    }

    pub(super) fn on_http_retry_timer(&mut self) {
        if let Some(attempt) = self.rest.retry.take() {
            self.send_rest(attempt);
        }
    }

    pub(super) fn on_http_timeout(&mut self) {
        if let Some(p) = self.rest.pending.take() {
            let ms = self.config.request_timeout.as_millis();
            self.rest_failed(p.attempt.call, format!("no answer within {ms} ms"));
        }
    }

    /// The application asks for more topics: valid new ones are added, and subscribed at once on an
    /// open channel (otherwise the next setup subscribes the whole list).
    pub(super) fn on_subscribe(&mut self, topics: Vec<String>) {
        let mut added = Vec::new();
        for t in topics {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                let why = format!("`{t}` is not a topic name");
                self.audit(AuditEvent::UnexpectedEvent, 0, Some(why));
                continue;
            }
            if self.rest.topic_set.len() >= 1000 {
                let why = "a channel takes at most 1000 topics".into();
                self.audit(AuditEvent::UnexpectedEvent, 0, Some(why));
                break;
            }
            if self.rest.topic_set.insert(t.clone()) {
                self.rest.topics.push(t.clone());
                added.push(t);
            }
        }
        if added.is_empty() || self.config.profile != crate::ProfileKind::Notifications {
            return;
        }
        if let (Some(ch), true) = (&self.setup.channel, self.active.is_some()) {
            let call = RestCall::AddTopics {
                channel_id: ch.id.clone(),
                topics: added,
            };
            self.enqueue_rest(call);
        }
    }

    pub(super) fn enqueue_rest(&mut self, call: RestCall) {
        if self.rest.has(&call) || self.rest.queue.iter().any(|a| a.call == call) {
            return;
        }
        self.rest.queue.push_back(Attempt::new(call, self.now));
        self.pump_rest();
    }

    pub(super) fn enqueue_rest_front(&mut self, call: RestCall) {
        if self.rest.has(&call) {
            return;
        }
        self.rest.queue.retain(|a| a.call != call);
        self.rest.queue.push_front(Attempt::new(call, self.now));
        self.pump_rest();
    }

    fn pump_rest(&mut self) {
        if self.rest.pending.is_some() || self.rest.retry.is_some() || self.is_stopped() {
            return;
        }
        if let Some(attempt) = self.rest.queue.pop_front() {
            if self.rest.queue.is_empty() {
                // REST calls come in bursts (connecting, a rollover); between them a connection holds
                // no queue's buffer.
                self.rest.queue = VecDeque::new();
            }
            self.send_rest(attempt);
        }
    }

    /// Builds and emits one request. A bearer call with no good token gets a token first (defect 11).
    fn send_rest(&mut self, attempt: Attempt) {
        let Some((method, url, body, mut headers)) = self.build_request(&attempt.call) else {
            return;
        };
        if attempt.call != RestCall::Token {
            match self.rest.token.valid_at(self.now) {
                Some(t) => headers.push("Authorization", format!("Bearer {}", t.expose())),
                None => {
                    // Put the call back behind a fresh token (one: a token already queued moves up).
                    self.rest.queue.push_front(attempt);
                    return self.enqueue_rest_front(RestCall::Token);
                }
            }
            headers.push("Content-Type", "application/json");
        }
        headers.push("Accept", "application/json");
        self.rest.next_request += 1;
        let id = RequestId(self.rest.next_request);
        self.stats.http_requests += 1;
        self.rest.pending = Some(Pending { id, attempt });
        let timeout = self.config.request_timeout;
        self.timers.set(Timer::HttpTimeout, self.now + timeout);
        self.push(Action::Http(HttpRequest {
            id,
            method,
            url,
            headers,
            body,
            timeout,
        }));
    }

    /// Method, URL, body and the call's own headers; `None` for a token call without credentials.
    fn build_request(&self, call: &RestCall) -> Option<(Method, String, Option<String>, Headers)> {
        let api = self.config.api_base();
        let mut headers = Headers::new();
        let subscriptions =
            |id: &str| format!("{api}/api/v2/notifications/channels/{id}/subscriptions");
        let (method, url, body) = match call {
            RestCall::Token => {
                let (Some(id), Some(secret)) = (&self.config.client_id, &self.config.client_secret)
                else {
                    return None;
                };
                headers.push("Authorization", http::basic_auth(id, secret));
                headers.push("Content-Type", "application/x-www-form-urlencoded");
                let body = "grant_type=client_credentials".to_owned();
                (Method::Post, self.config.token_url(), body)
            }
            RestCall::CreateChannel => (
                Method::Post,
                format!("{api}/api/v2/notifications/channels"),
                "{}".to_owned(),
            ),
            RestCall::Subscribe {
                channel_id, topics, ..
            } => (
                Method::Put,
                subscriptions(channel_id),
                http::topics_body(topics),
            ),
            RestCall::AddTopics { channel_id, topics } => (
                Method::Post,
                subscriptions(channel_id),
                http::topics_body(topics),
            ),
        };
        Some((method, url, Some(body), headers))
    }

    fn take_rest(&mut self, id: RequestId) -> Option<Attempt> {
        if self.rest.pending.as_ref().is_some_and(|p| p.id == id) {
            self.timers.clear(Timer::HttpTimeout);
            self.rest.pending.take().map(|p| p.attempt)
        } else {
            None
        }
    }

    pub(super) fn on_http_failed(&mut self, request: RequestId, error: String) {
        let Some(attempt) = self.take_rest(request) else {
            return self.unexpected(format!("failure report for unknown request {}", request.0));
        };
        self.rest_failed(attempt.call, error);
    }

    pub(super) fn on_http_response(&mut self, resp: HttpResponse) {
        let Some(attempt) = self.take_rest(resp.request) else {
            return self.unexpected(format!("response for unknown request {}", resp.request.0));
        };
        let status = resp.status;
        let error = http::describe_error(status, &resp.body);
        let detail = format!("{}: {error}", attempt.call.describe());
        let token = attempt.call == RestCall::Token;
        match status {
            200..=299 => self.rest_succeeded(attempt.call, &resp.body),
            400 | 401 if token => {
                let what = if status == 401 {
                    "the token endpoint refused the client credentials"
                } else {
                    "the token request was refused"
                };
                let detail = format!("{what} ({error})");
                self.audit(AuditEvent::TokenFailure, 0, Some(detail.clone()));
                self.stop(StopReason::AuthenticationFailed { detail });
            }
            401 => self.rest_unauthorized(attempt, detail),
            403 => {
                self.audit(AuditEvent::HttpFailure, 0, Some(detail.clone()));
                self.stop(StopReason::Forbidden { detail });
            }
            404 if matches!(
                attempt.call,
                RestCall::Subscribe { .. } | RestCall::AddTopics { .. }
            ) =>
            {
                self.channel_not_found(&attempt.call)
            }
            429 | 502 | 503 | 504 => {
                let wait =
                    http::retry_after(&resp.headers).unwrap_or(self.config.retry_after_default);
                self.rest_throttled(attempt, detail, wait);
            }
            _ => self.rest_failed(attempt.call, detail),
        }
    }

    /// Defect 12: a 401 on a bearer call refreshes the token once, then the same call goes again.
    fn rest_unauthorized(&mut self, attempt: Attempt, detail: String) {
        if attempt.refreshed {
            self.audit(AuditEvent::HttpFailure, 0, Some(detail.clone()));
            return self.stop(StopReason::AuthenticationFailed {
                detail: format!("still 401 after a token refresh: {detail}"),
            });
        }
        self.stats.http_retries += 1;
        self.audit(AuditEvent::HttpRetry, 0, Some(detail));
        self.rest.token.invalidate();
        self.rest.retry = None;
        // Token first, then the same call, marked as refreshed.
        let call = attempt.call.clone();
        self.rest
            .queue
            .retain(|a| a.call != call && a.call != RestCall::Token);
        self.rest.queue.push_front(Attempt {
            refreshed: true,
            ..attempt
        });
        self.send_rest(Attempt::new(RestCall::Token, self.now));
    }

    /// 429 and gateway errors: wait `Retry-After` (or the default), within the retry budget.
    fn rest_throttled(&mut self, attempt: Attempt, detail: String, wait: Duration) {
        let waited = self.now.saturating_duration_since(attempt.first_sent);
        if waited + wait > self.config.retry_budget {
            let ms = waited.as_millis();
            let error = format!("{detail}; gave up after {ms} ms of retries");
            return self.rest_failed(attempt.call, error);
        }
        self.stats.http_retries += 1;
        let why = format!("{detail}; retrying in {} ms", wait.as_millis());
        self.audit(AuditEvent::HttpRetry, 0, Some(why));
        self.rest.retry = Some(attempt);
        self.timers.set(Timer::HttpRetry, self.now + wait);
    }

    /// A subscription call found no channel: the setup takes a new one, an open socket rolls over.
    fn channel_not_found(&mut self, call: &RestCall) {
        let why = format!("{}: channel not found", call.describe());
        self.audit(AuditEvent::ChannelExpired, 0, Some(why));
        if self.setup.is_running() {
            self.setup_next(SetupInput::ChannelGone);
        } else {
            // The open socket's channel died some time after its last notification was sent.
            if let Some(c) = self.active.as_ref() {
                let sent = c.channel_alive_at.checked_sub(self.travel_margin());
                let from = sent.unwrap_or(c.channel_alive_at).min(c.receiving_since);
                self.open_gap_at(from, GapReason::ChannelGone);
            }
            self.begin_rollover();
        }
        self.pump_rest();
    }

    fn rest_succeeded(&mut self, call: RestCall, body: &[u8]) {
        match call {
            RestCall::Token => self.token_received(body),
            RestCall::CreateChannel => self.channel_created(body),
            RestCall::Subscribe {
                channel_id,
                topics,
                extend,
            } => self.subscribed(&channel_id, &topics, extend, body),
            RestCall::AddTopics { channel_id, topics } => {
                let n = topics.len();
                let what = format!("added {n} topics on channel {channel_id}");
                self.audit(AuditEvent::Subscribed, 0, Some(what));
            }
        }
        self.pump_rest();
    }

    fn token_received(&mut self, body: &[u8]) {
        let token = serde_json::from_slice::<http::TokenResponse>(body)
            .ok()
            .filter(|t| {
                !t.access_token.is_empty() && t.expires_in.is_none_or(|s| s.is_finite() && s >= 1.0)
            });
        let Some(t) = token else {
            let error = "the token response had no access_token, or an expires_in below 1 s";
            return self.rest_failed(RestCall::Token, error.into());
        };
        // Genesys tokens live 300 s to 48 h; below a second is a broken answer, refused rather than
        // refreshed in a tight loop.
        let lifetime = Duration::from_secs_f64(t.expires_in.unwrap_or(86_399.0).min(1e7));
        let token = crate::Secret::new(t.access_token);
        self.remember_token(token.clone());
        let margin = self.config.token_refresh_margin;
        let refresh_at = self.rest.token.store(token, lifetime, margin, self.now);
        self.rest.token_fail_streak = 0;
        self.stats.token_refreshes += 1;
        self.timers.set(Timer::TokenRefresh, refresh_at);
        let what = format!("token valid for {} s", lifetime.as_secs());
        self.audit(AuditEvent::TokenRefreshed, 0, Some(what));
        if matches!(self.setup.state, SetupState::Token { .. }) {
            self.setup_next(SetupInput::TokenReady);
        }
    }

    fn channel_created(&mut self, body: &[u8]) {
        let channel = serde_json::from_slice::<http::ChannelResponse>(body)
            .ok()
            .filter(|ch| !ch.connect_uri.is_empty() && !ch.id.is_empty());
        let Some(ch) = channel else {
            let error = "the channel response had no connectUri/id";
            return self.rest_failed(RestCall::CreateChannel, error.into());
        };
        let lifetime = ch
            .expires
            .as_deref()
            .and_then(crate::time::parse_iso8601)
            .and_then(|exp| exp.duration_since(self.wall.at(self.now)).ok())
            .map_or(CHANNEL_LIFETIME, |d| d.min(CHANNEL_LIFETIME));
        let what = format!("channel {}", ch.id);
        self.audit(AuditEvent::ChannelCreated, 0, Some(what));
        self.setup_next(SetupInput::ChannelCreated(Channel {
            id: ch.id,
            connect_uri: ch.connect_uri,
            lifetime,
        }));
    }

    fn subscribed(&mut self, channel_id: &str, topics: &[String], extend: bool, body: &[u8]) {
        let rejected: Vec<String> = serde_json::from_slice::<http::SubscriptionResponse>(body)
            .map(|r| {
                r.entities
                    .into_iter()
                    .filter(|e| e.state.as_deref() == Some("Rejected"))
                    .map(|e| e.id)
                    .collect()
            })
            .unwrap_or_default();
        if !rejected.is_empty() {
            return self.stop(StopReason::Forbidden {
                detail: format!("topics rejected by the server: {}", rejected.join(", ")),
            });
        }
        let what = format!("{} topics on channel {channel_id}", topics.len());
        self.audit(AuditEvent::Subscribed, 0, Some(what));
        if extend {
            // Resubscribing gives the channel a new lifetime.
            let lifetime = self
                .setup
                .channel
                .as_ref()
                .map_or(CHANNEL_LIFETIME, |c| c.lifetime);
            let at = self.now + self.resubscribe_after(lifetime);
            self.timers.set(Timer::Resubscribe, at);
        } else {
            self.setup_next(SetupInput::Subscribed);
        }
    }

    fn rest_failed(&mut self, call: RestCall, error: String) {
        self.audit(AuditEvent::HttpFailure, 0, Some(error.clone()));
        // A call waiting behind this one's token after a 401 waits no more.
        self.rest.queue.retain(|a| !a.refreshed);
        if self.setup.is_running() && call.is_setup_call() {
            // Any failure during setup: the attempt failed.
            self.rest.queue.clear();
            self.setup_failed(error);
            return self.pump_rest();
        }
        match call {
            RestCall::Token => {
                // The socket stays up; try again later, while the old token may still be good.
                self.rest.token_fail_streak += 1;
                let streak = self.rest.token_fail_streak.min(30);
                let delay = self
                    .backoff
                    .delay(streak, &mut self.rng)
                    .max(self.config.retry_after_default);
                self.timers.set(Timer::TokenRefresh, self.now + delay);
                // Calls waiting for a token wait for the refresh.
                self.rest.queue.retain(|a| a.call != RestCall::Token);
            }
            RestCall::Subscribe { extend: true, .. } => {
                let wait = self
                    .config
                    .retry_after_default
                    .max(self.config.backoff_base);
                self.timers.set(Timer::Resubscribe, self.now + wait);
            }
            _ => {}
        }
        self.pump_rest();
    }
}

fn dedup_topics(topics: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    topics
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect()
}
