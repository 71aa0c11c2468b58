//! [`Fleet`] on async-std (and smol): many named connections (one per organisation) in one runtime.

use genesys_keepalive_driver_common::{self as common, Options, Spawner};

use crate::{AsyncStd, USER_AGENT};

/// Many named connections on async-std (or smol), sharing one reqwest client and one rustls configuration: see
/// [`genesys_keepalive_driver_common::Fleet`] (this derefs to it) for `add`, `remove`, the merged
/// `notifications()` and `reports()` streams, the per-name `stats`/`state`/`shutdown` and `shutdown_all`.
/// Members run on the executor behind `async_std::task::spawn` unless the options carry a spawner.
///
/// ```
/// use genesys_keepalive::{Config, ProfileKind};
/// use genesys_keepalive_async_std::{Fleet, Report};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # async_std::task::block_on(async {
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
/// # Ok::<(), Box<dyn std::error::Error>>(()) })?;
/// # Ok(()) }
/// ```
pub struct Fleet(common::Fleet<AsyncStd>);

impl Fleet {
    /// An empty fleet with default [`Options`].
    pub fn new() -> Self {
        Fleet::with_options(Options::default())
    }

    /// An empty fleet whose members all use `options` (see [`common::Fleet::new`] for the seed); members
    /// are spawned with `options.spawner`, or on async-std's executor.
    pub fn with_options(options: Options) -> Self {
        let spawner = options
            .spawner
            .clone()
            .unwrap_or_else(|| Spawner::new(|task| async_global_executor::spawn(task).detach()));
        Fleet(common::Fleet::new(AsyncStd, spawner, USER_AGENT, options))
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl std::ops::Deref for Fleet {
    type Target = common::Fleet<AsyncStd>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
