//! The OAuth access token: cached, refreshed before expiry (the early margin shrinks for short-lived
//! tokens), never used once expired.

use std::time::{Duration, Instant};

use crate::secret::Secret;

/// The cached token and when it stops being good.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenCache {
    token: Option<Secret>,
    expires_at: Option<Instant>,
}

impl TokenCache {
    /// Stores a fresh token that lives `lifetime` from `now`, and returns when to refresh it:
    /// `margin` early, but never more than half the lifetime early.
    pub fn store(
        &mut self,
        token: Secret,
        lifetime: Duration,
        margin: Duration,
        now: Instant,
    ) -> Instant {
        let margin = margin.min(lifetime / 2);
        let expires = now + lifetime;
        let refresh = expires - margin;
        self.token = Some(token);
        self.expires_at = Some(expires);
        refresh
    }

    /// The token, if it is still good at `now`.
    pub fn valid_at(&self, now: Instant) -> Option<&Secret> {
        match (&self.token, self.expires_at) {
            (Some(t), Some(e)) if now < e => Some(t),
            _ => None,
        }
    }

    /// Forgets the token (it was refused, or the app said it expired).
    pub fn invalidate(&mut self) {
        *self = TokenCache::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_token_is_refreshed_at_half_its_life_and_never_used_expired() {
        let now = Instant::now();
        let mut t = TokenCache::default();
        // a 10 s token with a 30 s margin is refreshed at 5 s, not immediately and forever
        let at = t.store(
            Secret::new("t"),
            Duration::from_secs(10),
            Duration::from_secs(30),
            now,
        );
        assert_eq!(at, now + Duration::from_secs(5));
        assert!(t.valid_at(now + Duration::from_secs(9)).is_some());
        assert!(t.valid_at(now + Duration::from_secs(10)).is_none());
    }
}
