//! End-to-end scenarios for gap reports (re-exported by [`crate::scenarios`], run on every driver by
//! `e2e_suite!`): under a blackhole, a kill, a dropped channel and a failed rollover, every notification
//! the gateway published and the client did not deliver lies inside a reported gap (by its publish time,
//! within 100 ms); planned rollovers and token refreshes report none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use genesys_keepalive::{Gap, GapReason, State};

use crate::gateway::{Endpoint, Fault, Gateway, Scripted};
use crate::scenarios::{
    config, connect, connect_ok, gateway, shutdown_and_check, wait_stable, within, Client,
    ClientOptions, ClientReport, DriverUnderTest, TOPIC,
};

/// How far a publish time may lie outside a reported window (clocks of one process, two threads).
const SLACK: Duration = Duration::from_millis(100);

/// Publishes a numbered notification every 20 ms on its own thread, noting when.
struct Publisher {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(u64, SystemTime)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(gw: &Arc<Gateway>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (gw, stop, log) = (gw.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = SystemTime::now();
                    let seq = gw.publish(TOPIC, serde_json::json!({ "gap_test": true }));
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((seq, at));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Publisher {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u64, SystemTime)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the publisher thread");
        }
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Stops the publisher, reads what is still coming (up to its last notification, at most 2 s), and
/// returns what was published, the gaps reported and the trace.
async fn finish<D: DriverUnderTest + ?Sized>(
    d: &D,
    c: &mut Client,
    publisher: Publisher,
    seen: &mut BTreeMap<u64, u32>,
) -> (Vec<(u64, SystemTime)>, Vec<Gap>, String) {
    let published = publisher.finish();
    let last = published.last().map(|(s, _)| *s).unwrap_or(0);
    c.collect_seqs(d, Duration::from_secs(2), |s| s.contains_key(&last), seen)
        .await;
    (published, gaps_of(c), c.trace())
}

/// The gaps the client reported so far.
pub(crate) fn gaps_of(c: &mut Client) -> Vec<Gap> {
    c.reports()
        .iter()
        .filter_map(|r| match r {
            ClientReport::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// Reads notifications until the client has reported `gaps` gaps and is STABLE again (or 8 s pass).
async fn until_gap<D: DriverUnderTest + ?Sized>(
    d: &D,
    c: &mut Client,
    gaps: u64,
    seen: &mut BTreeMap<u64, u32>,
    what: &str,
) {
    let start = Instant::now();
    loop {
        c.collect_seqs(d, Duration::from_millis(100), |_| false, seen)
            .await;
        let s = c.handle.stats();
        if s.gaps >= gaps && s.state == State::Stable {
            return;
        }
        if start.elapsed() > Duration::from_secs(8) {
            panic!(
                "[{}] {what}: no gap #{gaps} and STABLE within 8 s: {s:?}\ntrace:\n{}",
                d.name(),
                c.trace()
            );
        }
    }
}

/// Every notification not delivered lies in a reported gap (within [`SLACK`]).
fn assert_undelivered_inside_gaps(
    d: &str,
    published: &[(u64, SystemTime)],
    seen: &BTreeMap<u64, u32>,
    gaps: &[Gap],
    trace: &str,
) -> usize {
    let inside = |t: SystemTime| {
        gaps.iter()
            .any(|g| g.from <= t + SLACK && t <= g.to + SLACK)
    };
    let undelivered: Vec<&(u64, SystemTime)> = published
        .iter()
        .filter(|(seq, _)| !seen.contains_key(seq))
        .collect();
    let outside: Vec<u64> = undelivered
        .iter()
        .filter(|(_, at)| !inside(*at))
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        outside.is_empty(),
        "[{d}] {} of {} undelivered notifications lie outside every gap: {outside:?}\ngaps: {gaps:?}\n\
         trace:\n{trace}",
        outside.len(),
        undelivered.len()
    );
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "[{d}] duplicated: {dup:?}");
    undelivered.len()
}

/// Gaps: a blackhole, a kill (TCP reset), a dropped channel and a rollover whose new channel could not be
/// created before the old socket closed, in turn, under a steady stream of notifications. Each is one gap
/// with its reason; every notification not delivered lies inside one.
pub async fn gap_reports<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = Arc::new(gateway(|g| {
        g.socket_closing_grace = Duration::from_millis(300);
    }));
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;
    let publisher = Publisher::start(&gw);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;

    gw.set_fault(Fault::Blackhole);
    until_gap(d, &mut c, 1, &mut seen, "blackhole").await;
    c.collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;
    gw.set_fault(Fault::Reset);
    until_gap(d, &mut c, 2, &mut seen, "kill").await;
    c.collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;
    assert_eq!(
        gw.drop_channels(),
        1,
        "one socket is told its channel is gone"
    );
    until_gap(d, &mut c, 3, &mut seen, "channel dropped").await;
    c.collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;
    // The rollover's channel creation is refused (503, retried) for longer than the grace.
    let refusals = (0..4).map(|_| Scripted::new(503, "{}")).collect();
    gw.script_http(Endpoint::CreateChannel, refusals);
    assert_eq!(gw.socket_closing(), 1);
    until_gap(d, &mut c, 4, &mut seen, "failed rollover").await;
    c.collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;

    let (published, gaps, trace) = finish(d, &mut c, publisher, &mut seen).await;
    let reasons: Vec<GapReason> = gaps.iter().map(|g| g.reason).collect();
    assert_eq!(
        reasons,
        [
            GapReason::DeadPeer,
            GapReason::UnplannedClose,
            GapReason::ChannelGone,
            GapReason::FailedRollover
        ],
        "[{}] gaps {gaps:?}\ntrace:\n{trace}",
        d.name()
    );
    for g in &gaps {
        assert_eq!(g.topics, [TOPIC], "[{}] {g:?}", d.name());
        assert!(g.from < g.to, "[{}] {g:?}", d.name());
    }
    let undelivered = assert_undelivered_inside_gaps(d.name(), &published, &seen, &gaps, &trace);
    // The blackhole alone costs notifications (published into a silent socket): something was checked.
    assert!(undelivered > 0, "[{}] nothing was lost: {trace}", d.name());
    let lengths: Vec<String> = gaps
        .iter()
        .map(|g| format!("{} {} ms", g.reason, g.duration().as_millis()))
        .collect();
    eprintln!(
        "[{}] gap reports: {}; {undelivered} of {} published not delivered, all inside them",
        d.name(),
        lengths.join(", "),
        published.len()
    );
    let s = shutdown_and_check(d, c).await;
    assert_eq!(s.gaps, 4, "{s:?}");
    assert!(s.gap_ms > 0, "{s:?}");
}

/// No gap: two planned rollovers and several token refreshes under a steady stream; every notification is
/// delivered and no gap is reported.
pub async fn no_gap_without_loss<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = Arc::new(gateway(|g| {
        g.socket_closing_grace = Duration::from_millis(1500);
        g.token_lifetime = Duration::from_secs(2);
    }));
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;
    let publisher = Publisher::start(&gw);
    let mut seen = BTreeMap::new();
    for _ in 0..2 {
        c.collect_seqs(d, Duration::from_millis(1500), |_| false, &mut seen)
            .await;
        assert_eq!(gw.socket_closing(), 1);
        c.collect_seqs(d, Duration::from_millis(2000), |_| false, &mut seen)
            .await;
    }
    let (published, gaps, trace) = finish(d, &mut c, publisher, &mut seen).await;
    assert!(
        gaps.is_empty(),
        "[{}] gaps {gaps:?}\ntrace:\n{trace}",
        d.name()
    );
    let undelivered = assert_undelivered_inside_gaps(d.name(), &published, &seen, &gaps, &trace);
    assert_eq!(undelivered, 0, "[{}]", d.name());
    let s = c.handle.stats();
    assert_eq!(s.rollovers, 2, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert!(s.token_refreshes >= 3, "[{}] {s:?}", d.name());
    assert_eq!(s.reconnects, 0, "[{}] {s:?}", d.name());
    let s = shutdown_and_check(d, c).await;
    assert_eq!(s.gaps, 0, "{s:?}");
}

/// A restart: a first client, receiving a steady stream, is "killed" right after a checkpoint is read
/// (`receiving_since`; nothing it delivers afterwards counts); a second one, started a second later with
/// `resume_after` set to the checkpoint, reports exactly one `restart` gap from the checkpoint to its
/// first confirmed socket, and every notification neither delivered lies inside it.
pub async fn restart_from_a_checkpoint<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = Arc::new(gateway(|_| {}));
    let mut first = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut first, 1).await;
    let publisher = Publisher::start(&gw);
    let mut seen = BTreeMap::new();
    first
        .collect_seqs(d, Duration::from_millis(800), |_| false, &mut seen)
        .await;
    let checkpoint = first
        .handle
        .receiving_since()
        .expect("a STABLE connection has a checkpoint");
    // What was delivered before the value was read is the application's; then the process dies.
    first
        .collect_seqs(d, Duration::from_millis(1), |_| false, &mut seen)
        .await;
    let first_gaps = gaps_of(&mut first);
    assert!(first_gaps.is_empty(), "[{}] {first_gaps:?}", d.name());
    let owed_from = *seen.keys().next().expect("the first client delivered");
    drop(first.notifications);
    let _ = within(d, Duration::from_secs(5), first.handle.shutdown()).await;
    d.sleep(Duration::from_secs(1)).await;

    let options = ClientOptions {
        resume_after: Some(checkpoint),
        ..Default::default()
    };
    let mut second = match within(
        d,
        Duration::from_secs(10),
        connect(d, config(&gw).build_unchecked(), options),
    )
    .await
    {
        Some(Ok(c)) => c,
        other => panic!(
            "[{}] the second client did not connect: {:?}",
            d.name(),
            other.map(|r| r.err())
        ),
    };
    until_gap(d, &mut second, 1, &mut seen, "restart").await;
    second
        .collect_seqs(d, Duration::from_millis(500), |_| false, &mut seen)
        .await;
    let (published, gaps, trace) = finish(d, &mut second, publisher, &mut seen).await;
    assert_eq!(gaps.len(), 1, "[{}] {gaps:?}\ntrace:\n{trace}", d.name());
    assert_eq!(
        gaps[0].reason,
        GapReason::Restart,
        "[{}] {gaps:?}",
        d.name()
    );
    assert_eq!(gaps[0].from, checkpoint, "[{}] {gaps:?}", d.name());
    assert!(gaps[0].from < gaps[0].to, "[{}] {gaps:?}", d.name());
    let owed: Vec<(u64, SystemTime)> = published
        .into_iter()
        .filter(|(seq, _)| *seq > owed_from)
        .collect();
    let undelivered = assert_undelivered_inside_gaps(d.name(), &owed, &seen, &gaps, &trace);
    assert!(undelivered > 0, "[{}] nothing was lost: {trace}", d.name());
    assert_eq!(second.handle.stats().gaps, 1);
    let s = shutdown_and_check(d, second).await;
    assert_eq!(s.gaps, 1, "{s:?}");
}
