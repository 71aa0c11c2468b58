//! The library's `Fleet` on both drivers against the testkit gateway, one OAuth client per member: the
//! merged streams carry each member's notifications and reports under its name, per-name stats, state,
//! shutdown and remove act on that member only, and `shutdown_all` closes every socket with 1000.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesys_keepalive::{Config, Secret, State};
use genesys_keepalive_driver_common::{AddError, Fleet, Report, Runtime};
use genesys_keepalive_testkit::{Gateway, GatewayConfig};

const TOPIC: &str = "v2.users.fleet-lib.presence";

fn config(gw: &Gateway, org: &str) -> Config {
    Config::builder()
        .api_base(gw.base_url())
        .login_base(gw.base_url())
        .allow_insecure(true)
        .credentials(
            format!("client-{org}"),
            Secret::new(format!("secret-{org}")),
        )
        .topic(TOPIC)
        .heartbeat_interval(Duration::from_millis(500))
        .max_idle(Duration::from_secs(3))
        .ack_timeout(Duration::from_millis(1500))
        .build()
        .expect("a valid configuration")
}

fn graceful(gw: &Gateway, org: &str) -> usize {
    gw.stats()
        .per_client
        .get(&format!("client-{org}"))
        .map_or(0, |c| {
            c.close_codes
                .iter()
                .filter(|(code, _)| *code == 1000)
                .count()
        })
}

fn open_now(gw: &Gateway, org: &str) -> u64 {
    gw.stats()
        .per_client
        .get(&format!("client-{org}"))
        .map_or(0, |c| c.sockets_open_now)
}

/// Waits (polling, runtime-neutral) until `pred` holds.
async fn until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !pred() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
}

async fn scenario<R: Runtime + Clone>(fleet: &Fleet<R>) {
    let gw = Gateway::start(GatewayConfig::default()).expect("gateway");
    let orgs = ["alpha", "beta", "gamma"];
    for org in orgs {
        gw.add_client(&format!("client-{org}"), &format!("secret-{org}"));
    }
    let mut notes = fleet.notifications().expect("the merged notifications");
    assert!(
        fleet.notifications().is_none(),
        "there is one merged stream"
    );
    let mut reports = fleet.reports().expect("the merged reports");
    for org in orgs {
        fleet.add(org, config(&gw, org)).expect("added");
    }
    match fleet.add("beta", config(&gw, "beta")) {
        Err(AddError::Duplicate(name)) => assert_eq!(name, "beta"),
        other => panic!("a duplicate name was not refused: {other:?}"),
    }
    assert_eq!(fleet.names().len(), 3);

    // Every member reaches STABLE, as its own reports say under its name.
    let mut stable = BTreeSet::new();
    while stable.len() < 3 {
        let (name, report) = reports.recv().await.expect("reports go on");
        if let Report::State {
            to: State::Stable, ..
        } = report
        {
            stable.insert(name.to_string());
        }
    }
    for org in orgs {
        assert_eq!(fleet.state(org), Some(State::Stable), "{org}");
    }
    until("every org subscribed with one socket", || {
        orgs.iter().all(|o| open_now(&gw, o) == 1)
    })
    .await;

    // One publish reaches each member once, tagged with its name.
    let seq = gw.publish(TOPIC, serde_json::json!({}));
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        let (name, n) = notes.recv().await.expect("notifications go on");
        assert!(n.raw.contains(&format!("\"seq\":{seq}")), "{}", n.raw);
        assert!(got.insert(name.to_string()), "{name} got it twice");
    }

    // remove closes that member only, gracefully, and frees the name.
    let stats = fleet.remove("beta").await.expect("beta was there");
    assert_eq!(stats.state, State::Stopped);
    assert_eq!(fleet.state("beta"), None);
    assert_eq!(graceful(&gw, "beta"), 1);
    assert_eq!((open_now(&gw, "alpha"), open_now(&gw, "gamma")), (1, 1));
    // per-name shutdown keeps the member listed, stopped.
    fleet.shutdown("gamma").await.expect("gamma was there");
    assert_eq!(fleet.state("gamma"), Some(State::Stopped));
    assert_eq!(graceful(&gw, "gamma"), 1);
    assert_eq!(open_now(&gw, "alpha"), 1);
    assert_eq!(fleet.stats("alpha").map(|s| s.state), Some(State::Stable));
    assert!(fleet.stats("beta").is_none());

    let finals = fleet.shutdown_all().await;
    let names: Vec<Arc<str>> = finals.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, [Arc::from("alpha"), Arc::from("gamma")]);
    assert_eq!((graceful(&gw, "alpha"), graceful(&gw, "gamma")), (1, 1));
    assert_eq!(gw.stats().sockets_open_now, 0);
}

/// Runs `f` to completion on a current-thread tokio runtime of its own.
fn on_tokio<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn fleet_on_tokio() {
    on_tokio(async {
        let fleet = genesys_keepalive_tokio::Fleet::new();
        scenario(&fleet).await;
    });
}

#[test]
fn fleet_on_async_std() {
    async_std::task::block_on(async {
        let fleet = genesys_keepalive_async_std::Fleet::new();
        scenario(&fleet).await;
    });
}

/// A fleet dropped with both merged streams while a member still runs: the member still shuts down when
/// asked and its task ends. The member's `Notifications` waker was its entry in the merged stream, and that
/// entry (the stream gone) owned the member's last `Notifications`: woken under the connection's lock, it
/// dropped them there, and their drop waited for that lock for ever.
async fn dropped_with_its_streams<R: Runtime + Clone>(
    fleet: impl std::ops::Deref<Target = Fleet<R>>,
) {
    let gw = Gateway::start(GatewayConfig::default()).expect("gateway");
    gw.add_client("client-solo", "secret-solo");
    let mut notes = fleet.notifications().expect("the merged notifications");
    let mut reports = fleet.reports().expect("the merged reports");
    let handle = fleet.add("solo", config(&gw, "solo")).expect("added");
    loop {
        let (_, report) = reports.recv().await.expect("reports go on");
        if let Report::State {
            to: State::Stable, ..
        } = report
        {
            break;
        }
    }
    // One poll, so that the member's stream holds its entry as its waker.
    assert!(
        futures_util::FutureExt::now_or_never(notes.recv()).is_none(),
        "nothing was published"
    );
    drop(notes);
    drop(reports);
    drop(fleet);
    let stats = handle.shutdown().await;
    assert_eq!(stats.state, State::Stopped);
    assert_eq!(graceful(&gw, "solo"), 1);
}

/// Runs `f` on a thread of its own and fails if it has not returned within 30 s (a deadlock would block the
/// test's own thread for ever).
fn without_hanging(what: &'static str, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after 30 s (deadlocked)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

#[test]
fn a_fleet_dropped_with_its_streams_lets_members_finish_on_tokio() {
    without_hanging("tokio", || {
        on_tokio(dropped_with_its_streams(
            genesys_keepalive_tokio::Fleet::new(),
        ));
    });
}

#[test]
fn a_fleet_dropped_with_its_streams_lets_members_finish_on_async_std() {
    without_hanging("async-std", || {
        async_std::task::block_on(dropped_with_its_streams(
            genesys_keepalive_async_std::Fleet::new(),
        ));
    });
}

/// A waker that drops the `Notifications` it was registered for when woken (what an entry of a merged
/// stream did once its stream was gone): the connection wakes it only after releasing its lock, which the
/// drop takes.
struct DropsOnWake(std::sync::Mutex<Option<genesys_keepalive_driver_common::Notifications>>);

impl std::task::Wake for DropsOnWake {
    fn wake(self: Arc<Self>) {
        let notes = self.0.lock().unwrap().take();
        drop(notes);
    }
}

#[test]
fn a_consumer_waker_may_drop_the_notifications_when_woken() {
    without_hanging("tokio", || {
        on_tokio(async {
            let gw = Gateway::start(GatewayConfig::default()).expect("gateway");
            gw.add_client("client-solo", "secret-solo");
            let (handle, mut notes) = genesys_keepalive_tokio::connect(config(&gw, "solo"))
                .await
                .expect("connected");
            let owner = Arc::new(DropsOnWake(std::sync::Mutex::new(None)));
            let waker = std::task::Waker::from(owner.clone());
            let polled = futures_util::Stream::poll_next(
                std::pin::Pin::new(&mut notes),
                &mut std::task::Context::from_waker(&waker),
            );
            assert!(polled.is_pending(), "nothing was published");
            *owner.0.lock().unwrap() = Some(notes);
            drop(waker);
            drop(owner);
            // The connection ends: it wakes the consumer, whose waker drops the stream.
            let stats = handle.shutdown().await;
            assert_eq!(stats.state, State::Stopped);
            assert_eq!(graceful(&gw, "solo"), 1);
        });
    });
}
