//! [`ConfigBuilder`]: a [`Config`] built by setters named after its fields.

use std::time::Duration;

use super::{Config, ConfigError, IntervalMatrix, ProfileKind};
use crate::region::UnknownRegion;
use crate::secret::Secret;

/// Builds a [`Config`]; every setter has the field's name.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub(super) config: Config,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$name = value; self } )*
    };
}

impl ConfigBuilder {
    setters! {
        /// Sets [`Config::profile`].
        profile: ProfileKind,
        /// Sets [`Config::allow_insecure`].
        allow_insecure: bool,
        /// Sets [`Config::interval_matrix`].
        interval_matrix: IntervalMatrix,
        /// Sets [`Config::min_interval`].
        min_interval: Duration,
        /// Sets [`Config::max_idle`].
        max_idle: Duration,
        /// Sets [`Config::ack_timeout`].
        ack_timeout: Duration,
        /// Sets [`Config::max_missed_acks`].
        max_missed_acks: u32,
        /// Sets [`Config::max_payload_bytes`].
        max_payload_bytes: usize,
        /// Sets [`Config::max_inbound_bytes`].
        max_inbound_bytes: usize,
        /// Sets [`Config::rtt_window`].
        rtt_window: usize,
        /// Sets [`Config::latency_threshold`].
        latency_threshold: Duration,
        /// Sets [`Config::recovery_samples`].
        recovery_samples: u32,
        /// Sets [`Config::max_packet_loss`].
        max_packet_loss: f64,
        /// Sets [`Config::backoff_base`].
        backoff_base: Duration,
        /// Sets [`Config::backoff_factor`].
        backoff_factor: u32,
        /// Sets [`Config::backoff_max`].
        backoff_max: Duration,
        /// Sets [`Config::max_reconnect_attempts`].
        max_reconnect_attempts: u32,
        /// Sets [`Config::min_uptime`].
        min_uptime: Duration,
        /// Sets [`Config::connect_timeout`].
        connect_timeout: Duration,
        /// Sets [`Config::token_refresh_margin`].
        token_refresh_margin: Duration,
        /// Sets [`Config::request_timeout`].
        request_timeout: Duration,
        /// Sets [`Config::retry_after_default`].
        retry_after_default: Duration,
        /// Sets [`Config::retry_budget`].
        retry_budget: Duration,
        /// Sets [`Config::resubscribe_margin`].
        resubscribe_margin: Duration,
        /// Sets [`Config::rollover_deadline`].
        rollover_deadline: Duration,
        /// Sets [`Config::dedup_window`].
        dedup_window: usize,
        /// Sets [`Config::audit_send_success`].
        audit_send_success: bool,
        /// Sets [`Config::timer_slack`].
        timer_slack: Duration,
        /// Sets [`Config::heartbeat_phases`].
        heartbeat_phases: u32,
    }

    /// Sets the OAuth client id and secret.
    pub fn credentials(mut self, client_id: impl Into<String>, secret: Secret) -> Self {
        self.config.client_id = Some(client_id.into());
        self.config.client_secret = Some(secret);
        self
    }

    /// Sets the region from a name or a domain.
    pub fn region(mut self, region: &str) -> Result<Self, UnknownRegion> {
        self.config.region = region.parse()?;
        Ok(self)
    }

    /// Overrides the API base URL.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.config.api_base = Some(url.into());
        self
    }

    /// Overrides the login base URL.
    pub fn login_base(mut self, url: impl Into<String>) -> Self {
        self.config.login_base = Some(url.into());
        self
    }

    /// Sets the socket URL (keepalive-frame profile).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(url.into());
        self
    }

    /// Adds one topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.config.topics.push(topic.into());
        self
    }

    /// Sets the heartbeat interval in the seed's proportions (`d`, `d/2`, `d/4`) and lowers `min_interval`
    /// to `d/4` if it was higher: one call for compressed test timings.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.config.interval_matrix = IntervalMatrix::scaled(d);
        self.config.min_interval = self.config.min_interval.min(d / 4);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }

    /// Returns the configuration without validating it (the machine validates it anyway).
    pub fn build_unchecked(self) -> Config {
        self.config
    }
}
