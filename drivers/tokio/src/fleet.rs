//! [`Fleet`] on tokio: many named connections (one per organisation) in one runtime.

use genesys_keepalive_driver_common::{self as common, Options, Spawner};

use crate::{Tokio, USER_AGENT};

/// Many named connections on tokio, sharing one reqwest client and one rustls configuration: see
/// [`genesys_keepalive_driver_common::Fleet`] (this derefs to it) for `add`, `remove`, the merged
/// `notifications()` and `reports()` streams, the per-name `stats`/`state`/`shutdown` and `shutdown_all`.
/// `add` must be called within a tokio runtime (any flavour) unless the options carry a spawner.
///
/// ```
/// use genesys_keepalive::{Config, ProfileKind};
/// use genesys_keepalive_tokio::{Fleet, Report};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Real organisations: `.credentials(id, Secret::new(secret)).region(…)?.topic(…)` per organisation;
/// // here keepalive-frame gateways on a port nobody listens on, so each one stops on its own.
/// let config = || {
///     Config::builder()
///         .profile(ProfileKind::KeepaliveFrame)
///         .url("ws://127.0.0.1:9/keepalive")
///         .allow_insecure(true)
///         .backoff_base(std::time::Duration::from_millis(10))
///         .max_reconnect_attempts(1)
///         .build()
/// };
/// let fleet = Fleet::new();
/// let mut reports = fleet.reports().expect("the first call returns the merged stream");
/// fleet.add("org-a", config()?)?;
/// fleet.add("org-b", config()?)?;
/// assert!(fleet.add("org-a", config()?).is_err(), "names are unique");
/// let mut stopped = 0;
/// while let Some((name, report)) = reports.recv().await {
///     if let Report::Stopped(reason) = report {
///         println!("{name} stopped: {reason}");
///         stopped += 1;
///         if stopped == 2 {
///             break;
///         }
///     }
/// }
/// for (name, stats) in fleet.shutdown_all().await {
///     println!("{name}: {} reconnects", stats.reconnects);
/// }
/// # Ok(()) }
/// ```
pub struct Fleet(common::Fleet<Tokio>);

impl Fleet {
    /// An empty fleet with default [`Options`].
    pub fn new() -> Self {
        Fleet::with_options(Options::default())
    }

    /// An empty fleet whose members all use `options` (see [`common::Fleet::new`] for the seed); members
    /// are spawned with `options.spawner`, or `tokio::spawn`.
    pub fn with_options(options: Options) -> Self {
        let spawner = options
            .spawner
            .clone()
            .unwrap_or_else(|| Spawner::new(|task| drop(tokio::spawn(task))));
        Fleet(common::Fleet::new(Tokio, spawner, USER_AGENT, options))
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl std::ops::Deref for Fleet {
    type Target = common::Fleet<Tokio>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
