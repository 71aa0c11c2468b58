//! The soak: many client connections in one process against the [`Gateway`] through the fault-injecting
//! [`Proxy`], for minutes, under a seeded random schedule of faults (blackholes, resets, latency spikes,
//! `socket_closing`, token revocation, 429 storms on channel creation, proxy partitions, one gateway
//! restart), written once for any driver.
//!
//! Asserted: every connection ends STABLE; no notification is delivered twice to a connection; every
//! notification published while a connection was STABLE and no fault was active (nor had been for the
//! settle time) is delivered to it exactly once; RSS at the end is within 10 % of RSS after warm-up; the
//! process's open file descriptors are back to their count before the soak once everything is shut down.
//! And every notification a connection did not get lies inside a gap that connection reported.
//!
//! Size and length: `SOAK_CONNECTIONS` (default 200), `SOAK_SECS` (default 20), `SOAK_SEED`, and the
//! clients' heartbeat `SOAK_HEARTBEAT_MS` (default 400, the e2e scenarios' compressed timing).

use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use genesys_keepalive::rng::Rng;
use genesys_keepalive::{Config, State};

use crate::gateway::{Endpoint, Fault, Gateway, GatewayConfig, Scripted};
use crate::proxy::{Proxy, ProxyMode};
use crate::scenarios::{
    self, config, connect_ok, within, ClientReport, DriverUnderTest, CLIENT_ID, SECRET, TOPIC,
};

/// After a fault ends, how long before publishing counts as "to a healthy socket" again: the idle
/// timeout plus the backoff cap (1 s) plus setup, with margin (4 s at the default 400 ms heartbeat).
fn settle(spec: &SoakSpec) -> Duration {
    spec.idle() + Duration::from_millis(2_500)
}

/// The soak's size, from the environment.
#[derive(Debug, Clone, Copy)]
pub struct SoakSpec {
    /// Client connections.
    pub connections: usize,
    /// How long the fault schedule runs.
    pub duration: Duration,
    /// Seeds the schedule.
    pub seed: u64,
    /// The clients' STABLE heartbeat interval (the e2e scenarios' 400 ms by default); the idle timeout
    /// keeps the scenarios' ratio (1.5 s per 400 ms).
    pub heartbeat: Duration,
    /// What the test binary's allocator can tell and do, if it says (see [`AllocatorHooks`]).
    pub allocator: Option<AllocatorHooks>,
}

/// The test binary's hooks into its allocator (the kit itself has no `unsafe` and no allocator of its own).
///
/// RSS counts what the allocator keeps from the system, not only what the program holds: this process also
/// runs the gateway and the proxy, whose threads free what the clients' threads allocated and the reverse,
/// and glibc keeps such freed pages in its arenas. With `release_free` (glibc's `malloc_trim(0)`) called
/// just before both RSS readings, the two readings compare what the process uses; both untrimmed readings
/// are reported too.
#[derive(Debug, Clone, Copy)]
pub struct AllocatorHooks {
    /// Bytes the process's allocations hold right now, in KiB (a counting global allocator).
    pub live_heap_kib: fn() -> u64,
    /// Gives the allocator's free pages back to the system.
    pub release_free: fn(),
}

impl SoakSpec {
    /// The clients' idle timeout: 3.75 heartbeats.
    pub fn idle(&self) -> Duration {
        self.heartbeat * 15 / 4
    }
}

impl SoakSpec {
    /// `SOAK_CONNECTIONS` (200), `SOAK_SECS` (20), `SOAK_SEED` (11), `SOAK_HEARTBEAT_MS` (400).
    pub fn from_env() -> Self {
        let var = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        SoakSpec {
            connections: var("SOAK_CONNECTIONS", 200) as usize,
            duration: Duration::from_secs(var("SOAK_SECS", 20)),
            seed: var("SOAK_SEED", 11),
            heartbeat: Duration::from_millis(var("SOAK_HEARTBEAT_MS", 400)),
            allocator: None,
        }
    }
}

/// One scheduled fault: what, and for how long (instant faults: zero).
#[derive(Debug, Clone, Copy)]
enum SoakFault {
    Blackhole,
    Reset,
    Latency,
    SocketClosing,
    ExpireTokens,
    RateLimitStorm,
    ProxyPartition,
    ProxyReset,
    GatewayRestart,
}

fn schedule(spec: &SoakSpec) -> Vec<(Duration, SoakFault)> {
    use SoakFault::*;
    let kinds = [
        Blackhole,
        Reset,
        Latency,
        SocketClosing,
        ExpireTokens,
        RateLimitStorm,
        ProxyPartition,
        ProxyReset,
    ];
    let mut rng = Rng::new(spec.seed);
    let mut out = Vec::new();
    // A fault every 6 to 10 s, after a quiet first 3 s.
    let mut at = Duration::from_secs(3);
    let end = spec.duration.saturating_sub(Duration::from_secs(2));
    while at < end {
        let k = kinds[rng.below_or_equal(kinds.len() as u64 - 1) as usize];
        out.push((at, k));
        at += Duration::from_millis(6_000 + rng.below_or_equal(4_000));
    }
    // The gateway restart comes first, inside the warm-up: its fresh runtime's first allocations are
    // part of the baseline, not growth.
    match out.first_mut() {
        Some(first) => first.1 = GatewayRestart,
        None => out.push((Duration::from_secs(3), GatewayRestart)),
    }
    out
}

fn gateway_config(port: u16) -> GatewayConfig {
    GatewayConfig {
        port,
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        server_heartbeat: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        // One client id for every connection: no channel eviction.
        max_channels: 1_000_000,
        // The gateway's own books stay small, so that the process's RSS is the clients': a channel a
        // reconnected client left expires (no soak outage comes near 20 s), and the request and close
        // logs (100,000 entries by default, about 20 MB at the soak's request rate) keep 2,000.
        channel_lifetime: Duration::from_secs(20),
        log_limit: 2_000,
        ..GatewayConfig::default()
    }
}

/// Resident set size of this process, in KiB (Linux `/proc/self/status`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// RSS as it is, RSS after the allocator gave its free pages back, and the live heap (KiB; without hooks the
/// second is the first and the third 0).
fn memory(spec: &SoakSpec) -> (u64, u64, u64) {
    let untrimmed = rss_kib();
    let Some(a) = spec.allocator else {
        return (untrimmed, untrimmed, 0);
    };
    (a.release_free)();
    (untrimmed, rss_kib(), (a.live_heap_kib)())
}

/// Open file descriptors of this process (Linux `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// What one soak run measured.
#[derive(Debug, Clone, Default)]
pub struct SoakFigures {
    /// Notifications published.
    pub published: u64,
    /// Deliveries expected (to a STABLE connection outside fault windows) and made.
    pub expected: u64,
    /// Deliveries made in total.
    pub delivered: u64,
    /// Reconnects over all connections.
    pub reconnects: u64,
    /// Dead peers detected over all connections.
    pub dead_peers: u64,
    /// Gaps reported over all connections.
    pub gaps: u64,
    /// RSS after warm-up (after the allocator gave its free pages back, with [`AllocatorHooks`]), KiB.
    pub rss_warm_kib: u64,
    /// RSS at the end, KiB.
    pub rss_end_kib: u64,
    /// Peak RSS seen, KiB.
    pub rss_peak_kib: u64,
    /// RSS after warm-up before the allocator gave its free pages back (see [`AllocatorHooks`]), KiB.
    pub rss_warm_untrimmed_kib: u64,
    /// RSS at the end before the allocator gave its free pages back, KiB.
    pub rss_end_untrimmed_kib: u64,
    /// Live heap (see [`AllocatorHooks::live_heap_kib`]) when `rss_warm_kib` was read, KiB; 0 if not
    /// counted.
    pub heap_warm_kib: u64,
    /// Live heap when `rss_end_kib` was read, KiB.
    pub heap_end_kib: u64,
    /// Open fds before and after.
    pub fds_before: usize,
    /// Open fds after shutdown.
    pub fds_after: usize,
    /// At the end (before shutdown): the proxy's open connections, the gateway's open sockets and its
    /// channels, next to the clients' count: what the process holds for the other side.
    pub proxy_open_end: u64,
    /// The gateway's open sockets at the end.
    pub gateway_sockets_end: u64,
    /// The gateway's channels at the end.
    pub gateway_channels_end: usize,
}

/// Applies a fault; returns how long its window lasts.
fn inject(gw: &mut Gateway, proxy: &Proxy, fault: SoakFault) -> Duration {
    match fault {
        SoakFault::Blackhole => gw.set_fault(Fault::Blackhole),
        SoakFault::Reset => gw.set_fault(Fault::Reset),
        SoakFault::Latency => gw.set_fault(Fault::Latency(Duration::from_millis(300))),
        SoakFault::SocketClosing => {
            gw.socket_closing();
        }
        SoakFault::ExpireTokens => gw.expire_tokens(),
        SoakFault::RateLimitStorm => {
            let storm = (0..50).map(|_| Scripted::too_many_requests(1)).collect();
            gw.script_http(Endpoint::CreateChannel, storm);
        }
        SoakFault::ProxyPartition => proxy.set_mode(ProxyMode::Blackhole),
        SoakFault::ProxyReset => proxy.set_mode(ProxyMode::Reset),
        SoakFault::GatewayRestart => {
            let port = gw.port();
            gw.shutdown();
            std::thread::sleep(Duration::from_millis(500));
            *gw = Gateway::start(gateway_config(port)).expect("the gateway restarts on its port");
        }
    }
    Duration::from_secs(2)
}

/// Ends a fault's effect (the ones that last).
fn clear(gw: &Gateway, proxy: &Proxy, fault: SoakFault) {
    match fault {
        SoakFault::Latency => gw.set_fault(Fault::None),
        // A blackholed gateway socket stays dead until reset: release it (the client left it already).
        SoakFault::Blackhole => gw.set_fault(Fault::Reset),
        SoakFault::ProxyPartition | SoakFault::ProxyReset => proxy.set_mode(ProxyMode::Pass),
        _ => {}
    }
}

fn config_via(gw: &Gateway, proxy: &Proxy, spec: &SoakSpec) -> Config {
    let base = format!("http://{}", proxy.addr());
    config(gw)
        .heartbeat_interval(spec.heartbeat)
        .max_idle(spec.idle())
        .ack_timeout(spec.heartbeat * 5 / 2)
        .api_base(base.clone())
        .login_base(base)
        .max_reconnect_attempts(100_000)
        // Filled within the warm-up (the default 1,024 would still be filling at the end: 5 notifications
        // a second), so that what grows after it is growth, not a bounded window reaching its bound.
        // A rollover's overlap repeats a handful of notifications; 64 covers it many times over.
        .dedup_window(64)
        .build_unchecked()
}

/// The soak on driver `d` (see the module docs). Returns its figures (after asserting).
pub async fn soak<D: DriverUnderTest + ?Sized>(d: &D, spec: SoakSpec) -> SoakFigures {
    let mut fig = SoakFigures::default();
    // Let the runtime (and its lazily started parts) come up before counting descriptors.
    {
        let gw = Gateway::start(gateway_config(0)).expect("gateway");
        let c = connect_ok(d, config(&gw).build_unchecked()).await;
        within(d, Duration::from_secs(5), c.handle.shutdown()).await;
        drop(c);
        gw.shutdown();
    }
    d.sleep(Duration::from_millis(300)).await;
    fig.fds_before = open_fds();

    let mut gw = Gateway::start(gateway_config(0)).expect("gateway");
    let proxy = Proxy::start(gw.addr()).expect("proxy");
    let mut clients = Vec::with_capacity(spec.connections);
    let mut opened_at = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        clients.push(connect_ok(d, config_via(&gw, &proxy, &spec)).await);
        opened_at.push(SystemTime::now());
    }
    // One merged stream of (connection, seq).
    let streams: Vec<_> = clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let s = std::mem::replace(&mut c.notifications, stream::empty().boxed());
            s.map(move |n| (i, n.json()["eventBody"]["n"].as_u64()))
                .boxed()
        })
        .collect();
    let mut merged = stream::select_all(streams);
    // Deliveries per connection, by seq: one byte per publish, so the test's own books stay small next to
    // the clients (RSS is measured for the whole process). The books are allocated (and written) here, before warm-up, for every publish the run can make (at
    // most one per 200 ms drain, plus the final batch): what RSS gains after warm-up is then not the test's.
    let books = (spec.duration.as_millis() / 200) as usize + 64;
    let mut seen: Vec<Seen> = vec![Seen::with_room(books); spec.connections];
    // Owed deliveries, one byte per publish too; of each gap only its ends.
    let mut expected: Vec<Seen> = vec![Seen::with_room(books); spec.connections];
    let mut gaps: Vec<Vec<Window>> = (0..spec.connections)
        .map(|_| Vec::with_capacity(32))
        .collect();
    let mut published_at: Vec<SystemTime> = Vec::with_capacity(books);

    let plan = schedule(&spec);
    let start = Instant::now();
    let mut next_fault = 0;
    let mut active: Option<(SoakFault, Instant)> = None;
    let mut quiet_since = Some(start);
    let mut warm = false;
    while start.elapsed() < spec.duration {
        let t = start.elapsed();
        // Warm: every connection up, and the first fault (the gateway restart) recovered from.
        if !warm && t >= (spec.duration / 4).max(Duration::from_secs(9)) {
            warm = true;
            (
                fig.rss_warm_untrimmed_kib,
                fig.rss_warm_kib,
                fig.heap_warm_kib,
            ) = memory(&spec);
        }
        if let Some((f, until)) = active {
            if Instant::now() >= until {
                clear(&gw, &proxy, f);
                active = None;
                quiet_since = Some(Instant::now());
            }
        }
        if active.is_none() && next_fault < plan.len() && t >= plan[next_fault].0 {
            let f = plan[next_fault].1;
            next_fault += 1;
            let span = inject(&mut gw, &proxy, f);
            active = Some((f, Instant::now() + span));
            quiet_since = None;
        }
        let healthy_now = quiet_since.is_some_and(|q| q.elapsed() >= settle(&spec));
        // Numbered here: a restarted gateway counts its own seqs from 1 again.
        fig.published += 1;
        let seq = fig.published;
        published_at.push(SystemTime::now());
        gw.publish(TOPIC, serde_json::json!({ "n": seq }));
        if healthy_now {
            for (i, c) in clients.iter().enumerate() {
                if c.handle.state() == State::Stable {
                    expected[i].add(seq);
                }
            }
        }
        drain(d, &mut merged, &mut seen, Duration::from_millis(200)).await;
        // Only gap reports are kept: a soak's worth of audit entries would be memory the client never holds.
        keep_gaps(&clients, &mut gaps);
        fig.rss_peak_kib = fig.rss_peak_kib.max(rss_kib());
    }
    if let Some((f, _)) = active {
        clear(&gw, &proxy, f);
    }
    // Everyone back to STABLE, then a final batch that every connection must get.
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(30)
        && clients.iter().any(|c| c.handle.state() != State::Stable)
    {
        drain(d, &mut merged, &mut seen, Duration::from_millis(200)).await;
    }
    drain(d, &mut merged, &mut seen, Duration::from_secs(1)).await;
    for _ in 0..5 {
        fig.published += 1;
        let seq = fig.published;
        published_at.push(SystemTime::now());
        gw.publish(TOPIC, serde_json::json!({ "n": seq }));
        for e in &mut expected {
            e.add(seq);
        }
    }
    let want = expected.iter().map(Seen::total).sum::<u64>() as usize;
    let limit = Instant::now();
    while limit.elapsed() < Duration::from_secs(10) {
        let got = expected
            .iter()
            .zip(&seen)
            .map(|(e, s)| e.owed_and_in(s))
            .sum::<usize>();
        if got >= want {
            break;
        }
        drain(d, &mut merged, &mut seen, Duration::from_millis(200)).await;
    }
    (fig.rss_end_untrimmed_kib, fig.rss_end_kib, fig.heap_end_kib) = memory(&spec);
    fig.proxy_open_end = proxy.stats().connections_open_now;
    fig.gateway_sockets_end = gw.stats().sockets_open_now;
    fig.gateway_channels_end = gw.channel_ids().len();
    keep_gaps(&clients, &mut gaps);

    // Assertions, per connection.
    let mut problems = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let s = c.handle.stats();
        fig.reconnects += s.reconnects;
        fig.dead_peers += s.dead_peers;
        if s.state != State::Stable {
            problems.push(format!("connection {i} ends {}: {s:?}", s.state));
        }
        let dup = seen[i].duplicated();
        if !dup.is_empty() {
            problems.push(format!("connection {i} got duplicates {dup:?}"));
        }
        let missing: Vec<u64> = (1..=fig.published)
            .filter(|q| expected[i].has(*q) && !seen[i].has(*q))
            .collect();
        // Published after the connection first opened (before that it was owed nothing).
        let outside: Vec<u64> = (1..=fig.published)
            .filter(|q| !seen[i].has(*q))
            .filter(|q| published_at[*q as usize - 1] > opened_at[i])
            .filter(|q| {
                let t = published_at[*q as usize - 1];
                !gaps[i]
                    .iter()
                    .any(|(from, to)| *from <= t + SLACK && t <= *to + SLACK)
            })
            .collect();
        if !outside.is_empty() {
            problems.push(format!(
                "connection {i}: {} undelivered outside every gap it reported: {outside:?}; gaps {:?}",
                outside.len(),
                gaps[i]
            ));
        }
        fig.gaps += gaps[i].len() as u64;
        if !missing.is_empty() {
            problems.push(format!(
                "connection {i} missed {} published while it was STABLE outside fault windows: {missing:?}",
                missing.len()
            ));
        }
    }
    fig.expected = expected.iter().map(Seen::total).sum();
    fig.delivered = seen.iter().map(Seen::total).sum();
    for c in &clients {
        within(d, Duration::from_secs(10), c.handle.shutdown()).await;
    }
    // The reports since the last discard, of the first three connections.
    let reports: String = clients
        .iter_mut()
        .take(3)
        .map(scenarios::Client::trace)
        .collect::<Vec<_>>()
        .join("\n---\n");
    drop(merged);
    drop(clients);
    proxy.shutdown();
    drop(proxy);
    gw.shutdown();
    drop(gw);
    let settle = Instant::now();
    loop {
        d.sleep(Duration::from_millis(100)).await;
        fig.fds_after = open_fds();
        if fig.fds_after <= fig.fds_before || settle.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    println!("[{}] soak {spec:?}: {fig:?}", d.name());
    problems.truncate(20);
    assert!(
        problems.is_empty(),
        "[{}] soak: {}\nfirst traces:\n{reports}",
        d.name(),
        problems.join("\n")
    );
    assert!(
        fig.rss_end_kib * 10 <= fig.rss_warm_kib * 11,
        "[{}] RSS grew from {} KiB after warm-up to {} KiB at the end",
        d.name(),
        fig.rss_warm_kib,
        fig.rss_end_kib
    );
    assert_eq!(
        fig.fds_after,
        fig.fds_before,
        "[{}] open fds before the soak vs after shutdown",
        d.name()
    );
    fig
}

/// How many times each seq arrived at one connection (index: seq).
#[derive(Debug, Clone, Default)]
struct Seen(Vec<u8>);

impl Seen {
    /// Room for seqs up to `n` without growing.
    fn with_room(n: usize) -> Seen {
        Seen(vec![0; n + 1])
    }

    fn add(&mut self, seq: u64) {
        let i = seq as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = self.0[i].saturating_add(1);
    }

    fn has(&self, seq: u64) -> bool {
        self.0.get(seq as usize).is_some_and(|n| *n > 0)
    }

    fn duplicated(&self) -> Vec<(usize, u8)> {
        let dup = self.0.iter().enumerate().filter(|(_, n)| **n > 1);
        dup.map(|(q, n)| (q, *n)).collect()
    }

    /// How many seqs marked here are also in `other`.
    fn owed_and_in(&self, other: &Seen) -> usize {
        let marked = self.0.iter().enumerate().filter(|(_, n)| **n > 0);
        marked.filter(|(q, _)| other.has(*q as u64)).count()
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|n| u64::from(*n)).sum()
    }
}

/// A reported gap's ends (its topics are the soak's one topic).
type Window = (SystemTime, SystemTime);

/// A gap's ends are stamped by the client, a publish time by the test: this much slack between them.
const SLACK: Duration = Duration::from_millis(100);

/// Takes every connection's reports, keeping the gaps.
fn keep_gaps(clients: &[scenarios::Client], gaps: &mut [Vec<Window>]) {
    for (c, g) in clients.iter().zip(gaps.iter_mut()) {
        g.extend(c.handle.take_reports().into_iter().filter_map(|r| match r {
            ClientReport::Gap(gap) => Some((gap.from, gap.to)),
            _ => None,
        }));
    }
}

async fn drain<D: DriverUnderTest + ?Sized>(
    d: &D,
    merged: &mut stream::SelectAll<futures_util::stream::BoxStream<'static, (usize, Option<u64>)>>,
    seen: &mut [Seen],
    span: Duration,
) {
    let start = Instant::now();
    while let Some(left) = span.checked_sub(start.elapsed()) {
        match within(d, left, merged.next()).await.flatten() {
            Some((i, Some(seq))) => seen[i].add(seq),
            Some((_, None)) => {}
            None => return,
        }
    }
}
