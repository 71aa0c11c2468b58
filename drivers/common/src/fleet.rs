//! Many connections in one runtime: a [`Fleet`] of named members, one per organisation, on one runtime,
//! the process-wide reqwest client and the process-wide rustls configuration (both shared by every
//! connection [`start`](crate::start) makes with the same settings).
//!
//! A member costs what one connection costs (its task, its [`Shared`](crate::handle::Shared) state, its
//! [`Handle`]) and nothing more: no extra task, no channel. The merged streams ([`FleetNotifications`],
//! [`FleetReports`]) read each member's own [`Notifications`] and [`Reports`] through a shared ready-queue:
//! every member stream gets a waker of its own which, when the connection wakes it, puts that member (once)
//! at the back of the queue. A poll of the merged stream only polls the members in the queue, so its cost is
//! that of the members that have something, not of the fleet's size (unlike polling all of them per wake).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use genesys_keepalive::rng::{fnv1a64, FNV_OFFSET};
use genesys_keepalive::{Config, Notification, State, Stats, StopReason};

use crate::{Error, Handle, Notifications, Options, Report, Reports, Runtime, Spawner};

/// Why [`Fleet::add`] refused a member.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// A member with this name is already in the fleet.
    #[error("a connection named `{0}` is already in the fleet")]
    Duplicate(String),
    /// The connection could not be started (its configuration was refused, or TLS setup failed).
    #[error("connection `{name}`: {error}")]
    Start {
        /// The member's name.
        name: String,
        /// Why it could not start.
        error: Error,
    },
}

/// Many named connections on one runtime `R`. Each member is started with [`crate::start`] (so it shares
/// the process's reqwest client and rustls configuration with every other member) and spawned with the
/// fleet's [`Spawner`]. Dropping the fleet drops every member's [`Handle`], which shuts each down
/// gracefully.
pub struct Fleet<R: Runtime + Clone> {
    rt: R,
    spawner: Spawner,
    user_agent: &'static str,
    options: Options,
    members: Mutex<HashMap<Arc<str>, Handle>>,
    notes: Merge<Notifications>,
    reports: Merge<Reports>,
    notes_taken: AtomicBool,
    reports_taken: AtomicBool,
}

impl<R: Runtime + Clone> std::fmt::Debug for Fleet<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("members", &self.len())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + Clone> Fleet<R> {
    /// An empty fleet whose members run on `rt`, are spawned with `spawner` and send `user_agent`.
    /// `options` apply to every member; with a `seed`, each member's seed is that seed mixed with the
    /// 64-bit FNV-1a hash of its name (so that members do not share a PRNG sequence). `options.spawner`
    /// is ignored (the fleet's `spawner` is used); `options.resume_after` applies to the members added with
    /// [`Fleet::add`] (give each its own with [`Fleet::add_resuming`]).
    pub fn new(rt: R, spawner: Spawner, user_agent: &'static str, options: Options) -> Self {
        Fleet {
            rt,
            spawner,
            user_agent,
            options,
            members: Mutex::new(HashMap::new()),
            notes: Merge::new(),
            reports: Merge::new(),
            notes_taken: AtomicBool::new(false),
            reports_taken: AtomicBool::new(false),
        }
    }

    fn members(&self) -> MutexGuard<'_, HashMap<Arc<str>, Handle>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a connection named `name` with `config` and returns its handle (a clone of the one the fleet
    /// keeps). Refuses a name already in the fleet ([`AddError::Duplicate`]) and a configuration the core
    /// refuses. Returns at once, before anything is connected; [`Handle::opened`] tells when the first socket
    /// is open. Its notifications and reports appear on the merged streams from the first one on.
    pub fn add(&self, name: &str, config: Config) -> Result<Handle, AddError> {
        let resume = self.options.resume_after;
        self.add_resuming(name, config, resume)
    }

    /// [`Fleet::add`] for a member that continues one of an earlier process: with `Some(since)` (what
    /// that process's [`Handle::receiving_since`] was for it), its restart is reported as a gap from then
    /// (see [`Options::resume_after`], which this replaces for the member); `None` is a fresh start.
    pub fn add_resuming(
        &self,
        name: &str,
        config: Config,
        resume_after: Option<std::time::SystemTime>,
    ) -> Result<Handle, AddError> {
        let mut members = self.members();
        if members.contains_key(name) {
            return Err(AddError::Duplicate(name.to_string()));
        }
        let mut options = self.options.clone();
        options.spawner = None;
        options.seed = options
            .seed
            .map(|s| s ^ fnv1a64(FNV_OFFSET, name.as_bytes()));
        // The member's name is its metrics' `connection` label.
        options.name = name.to_string();
        options.resume_after = resume_after;
        let (task, handle, notifications) =
            crate::start(config, &options, self.rt.clone(), self.user_agent).map_err(|error| {
                AddError::Start {
                    name: name.to_string(),
                    error,
                }
            })?;
        let name: Arc<str> = Arc::from(name);
        let reports = handle.reports();
        self.notes.insert(name.clone(), notifications);
        self.reports.insert(name.clone(), reports);
        self.spawner.spawn(task);
        members.insert(name, handle.clone());
        Ok(handle)
    }

    /// Takes `name` out of the fleet and shuts it down gracefully (close 1000, see [`Handle::shutdown`]);
    /// returns its final stats, or `None` if there is no such member. Once this has returned, the name can
    /// be added again.
    pub async fn remove(&self, name: &str) -> Option<Stats> {
        let handle = self.members().remove(name)?;
        Some(handle.shutdown().await)
    }

    /// Shuts `name` down gracefully but keeps it in the fleet (its `stats` and `state` stay readable);
    /// `None` if there is no such member.
    pub async fn shutdown(&self, name: &str) -> Option<Stats> {
        let handle = self.handle(name)?;
        Some(handle.shutdown().await)
    }

    /// Shuts every member down gracefully, all at once, and returns each one's final stats, sorted by name.
    /// The members stay in the fleet.
    pub async fn shutdown_all(&self) -> Vec<(Arc<str>, Stats)> {
        let handles: Vec<(Arc<str>, Handle)> = self
            .members()
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        let all = handles.into_iter().map(|(name, handle)| async move {
            let stats = handle.shutdown().await;
            (name, stats)
        });
        let mut out = futures_util::future::join_all(all).await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A clone of `name`'s handle.
    pub fn handle(&self, name: &str) -> Option<Handle> {
        self.members().get(name).cloned()
    }

    /// `name`'s counters and gauges now.
    pub fn stats(&self, name: &str) -> Option<Stats> {
        self.handle(name).map(|h| h.stats())
    }

    /// `name`'s connection state now.
    pub fn state(&self, name: &str) -> Option<State> {
        self.handle(name).map(|h| h.state())
    }

    /// Why `name` stopped, if it has (`None` also when there is no such member).
    pub fn stop_reason(&self, name: &str) -> Option<StopReason> {
        self.handle(name).and_then(|h| h.stop_reason())
    }

    /// The members' names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.members().keys().cloned().collect();
        names.sort();
        names
    }

    /// How many members the fleet has.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// The fleet has no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The merged stream of every member's notifications, as `(name, notification)`, each member's in its
    /// order. There is one: the first call returns it, later calls `None`. It ends once the fleet has been
    /// dropped and every member's stream has ended. Unread notifications queue in their member (as with
    /// one connection's [`Notifications`]): read it.
    pub fn notifications(&self) -> Option<FleetNotifications> {
        (!self.notes_taken.swap(true, Ordering::AcqRel)).then(|| FleetNotifications {
            merged: Merged(self.notes.clone()),
        })
    }

    /// The merged stream of every member's [`Report`]s, as `(name, report)`, lost ones (see
    /// [`Options::reports_capacity`]) skipped. There is one: the first call returns it, later calls `None`.
    /// A member's last report is [`Report::Stopped`]. Ends like [`Fleet::notifications`].
    pub fn reports(&self) -> Option<FleetReports> {
        (!self.reports_taken.swap(true, Ordering::AcqRel)).then(|| FleetReports {
            merged: Merged(self.reports.clone()),
        })
    }
}

impl<R: Runtime + Clone> Drop for Fleet<R> {
    fn drop(&mut self) {
        self.notes.close();
        self.reports.close();
    }
}

/// The merged notifications of a [`Fleet`]: a [`Stream`] of `(name, notification)`.
pub struct FleetNotifications {
    merged: Merged<Notifications>,
}

impl FleetNotifications {
    /// The next `(name, notification)`, or `None` once the fleet is gone and every member has ended.
    pub async fn recv(&mut self) -> Option<(Arc<str>, Notification)> {
        std::future::poll_fn(|cx| Pin::new(&mut self.merged).poll_next(cx)).await
    }
}

impl Stream for FleetNotifications {
    type Item = (Arc<str>, Notification);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.merged).poll_next(cx)
    }
}

impl std::fmt::Debug for FleetNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetNotifications").finish_non_exhaustive()
    }
}

/// The merged reports of a [`Fleet`]: a [`Stream`] of `(name, report)`.
pub struct FleetReports {
    merged: Merged<Reports>,
}

impl FleetReports {
    /// The next `(name, report)`, or `None` once the fleet is gone and every member has ended.
    pub async fn recv(&mut self) -> Option<(Arc<str>, Report)> {
        std::future::poll_fn(|cx| Pin::new(&mut self.merged).poll_next(cx)).await
    }
}

impl Stream for FleetReports {
    type Item = (Arc<str>, Report);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.merged).poll_next(cx)
    }
}

impl std::fmt::Debug for FleetReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetReports").finish_non_exhaustive()
    }
}

/// Members polled per `poll_next` without an item before the merged stream yields to its executor.
const BUDGET: usize = 128;

/// The ready-queue of one merged stream: the members whose stream was woken, each at most once, and the
/// consumer's waker, under one lock (so that a wake between "queue empty" and "waker stored" is not lost).
struct Queue<S> {
    ready: Mutex<ReadyState<S>>,
    /// Members whose stream has not ended.
    live: AtomicUsize,
    /// The fleet still exists (members may still be added).
    open: AtomicBool,
}

struct ReadyState<S> {
    queue: VecDeque<Arc<Entry<S>>>,
    consumer: Option<Waker>,
}

/// One member's stream in a merged stream. It is its own waker: waking it queues it.
struct Entry<S> {
    name: Arc<str>,
    stream: Mutex<Option<S>>,
    queued: AtomicBool,
    queue: std::sync::Weak<Queue<S>>,
    /// Its place in [`Members`].
    index: usize,
}

/// Every member's entry, held only by the fleet and its merged stream (never by a waker): when both are
/// gone, its drop drops every member's stream. Otherwise the last owner of an entry could be a waker, and a
/// member's stream would be dropped inside the wake, under whatever lock the waking code holds: a
/// connection's state (which `Notifications` takes on drop) or an event listener's list (which `Reports`
/// takes on drop). That deadlocked.
struct Members<S> {
    slots: Mutex<Slots<S>>,
}

struct Slots<S> {
    entries: Vec<Option<Arc<Entry<S>>>>,
    /// Indices of `None` entries, for reuse.
    free: Vec<usize>,
}

impl<S> Members<S> {
    fn lock(&self) -> MutexGuard<'_, Slots<S>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets an entry whose stream has ended.
    fn release(&self, index: usize) {
        let mut slots = self.lock();
        slots.entries[index] = None;
        slots.free.push(index);
    }
}

impl<S> Drop for Members<S> {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
        for entry in slots.entries.drain(..).flatten() {
            let stream = entry
                .stream
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            drop(stream);
        }
    }
}

/// What a fleet and its merged stream share for one kind of member stream: the ready-queue (which the
/// members' wakers reach through a `Weak`) and the members' entries.
struct Merge<S> {
    queue: Arc<Queue<S>>,
    members: Arc<Members<S>>,
}

impl<S> Clone for Merge<S> {
    fn clone(&self) -> Self {
        Merge {
            queue: self.queue.clone(),
            members: self.members.clone(),
        }
    }
}

impl<S: Send + 'static> Merge<S> {
    fn new() -> Self {
        Merge {
            queue: Arc::new(Queue {
                ready: Mutex::new(ReadyState {
                    queue: VecDeque::new(),
                    consumer: None,
                }),
                live: AtomicUsize::new(0),
                open: AtomicBool::new(true),
            }),
            members: Arc::new(Members {
                slots: Mutex::new(Slots {
                    entries: Vec::new(),
                    free: Vec::new(),
                }),
            }),
        }
    }

    /// Adds a member's stream, queued so that the first poll registers its waker.
    fn insert(&self, name: Arc<str>, stream: S) {
        self.queue.live.fetch_add(1, Ordering::AcqRel);
        let entry = {
            let mut slots = self.members.lock();
            let index = slots.free.pop().unwrap_or(slots.entries.len());
            let entry = Arc::new(Entry {
                name,
                stream: Mutex::new(Some(stream)),
                queued: AtomicBool::new(false),
                queue: Arc::downgrade(&self.queue),
                index,
            });
            if index == slots.entries.len() {
                slots.entries.push(Some(entry.clone()));
            } else {
                slots.entries[index] = Some(entry.clone());
            }
            entry
        };
        self.queue.push(entry);
    }

    /// The fleet is gone: once every member's stream has ended, the merged stream ends.
    fn close(&self) {
        self.queue.close();
    }
}

impl<S: Send + 'static> Queue<S> {
    fn lock(&self) -> MutexGuard<'_, ReadyState<S>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `entry` unless it already is, and wakes the consumer.
    fn push(&self, entry: Arc<Entry<S>>) {
        if entry.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let waker = {
            let mut ready = self.lock();
            ready.queue.push_back(entry);
            ready.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::Release);
        let waker = self.lock().consumer.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<S: Send + 'static> Wake for Entry<S> {
    fn wake(self: Arc<Self>) {
        if let Some(queue) = self.queue.upgrade() {
            queue.push(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.clone().wake();
    }
}

/// A merged stream over a [`Merge`].
struct Merged<S>(Merge<S>);

impl<S, T> Merged<S>
where
    S: Stream<Item = T> + Unpin + Send + 'static,
{
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Arc<str>, T)>> {
        let queue = &self.0.queue;
        for _ in 0..BUDGET {
            let entry = {
                let mut ready = queue.lock();
                match ready.queue.pop_front() {
                    Some(e) => e,
                    None => {
                        if !queue.open.load(Ordering::Acquire)
                            && queue.live.load(Ordering::Acquire) == 0
                        {
                            return Poll::Ready(None);
                        }
                        if !ready
                            .consumer
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            ready.consumer = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                }
            };
            entry.queued.store(false, Ordering::Release);
            let waker = Waker::from(entry.clone());
            let mut member_cx = Context::from_waker(&waker);
            let mut slot = entry.stream.lock().unwrap_or_else(|p| p.into_inner());
            let Some(stream) = slot.as_mut() else {
                continue;
            };
            match Pin::new(stream).poll_next(&mut member_cx) {
                Poll::Ready(Some(item)) => {
                    drop(slot);
                    let name = entry.name.clone();
                    // It may have more: back of the queue, so that every member gets its turn.
                    queue.push(entry);
                    return Poll::Ready(Some((name, item)));
                }
                Poll::Ready(None) => {
                    *slot = None;
                    drop(slot);
                    self.0.members.release(entry.index);
                    queue.live.fetch_sub(1, Ordering::AcqRel);
                }
                Poll::Pending => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member stream that yields what is pushed into it and counts its polls.
    #[derive(Default)]
    struct Probe {
        items: VecDeque<u32>,
        ended: bool,
        waker: Option<Waker>,
        polls: usize,
    }

    #[derive(Clone, Default)]
    struct ProbeStream(Arc<Mutex<Probe>>);

    impl ProbeStream {
        fn push(&self, v: u32) {
            let mut p = self.0.lock().unwrap();
            p.items.push_back(v);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
        fn end(&self) {
            let mut p = self.0.lock().unwrap();
            p.ended = true;
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
        fn polls(&self) -> usize {
            self.0.lock().unwrap().polls
        }
    }

    impl Stream for ProbeStream {
        type Item = u32;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            let mut p = self.0.lock().unwrap();
            p.polls += 1;
            if let Some(v) = p.items.pop_front() {
                return Poll::Ready(Some(v));
            }
            if p.ended {
                return Poll::Ready(None);
            }
            p.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll<S: Stream<Item = u32> + Unpin + Send + 'static>(
        m: &mut Merged<S>,
    ) -> Poll<Option<(Arc<str>, u32)>> {
        let waker = Waker::noop();
        m.poll_next(&mut Context::from_waker(waker))
    }

    /// A member stream whose drop takes the lock under which it is woken, as `Notifications` (a
    /// connection's state) and `Reports` (an event listener's list) do.
    struct LocksOnDrop(Arc<Mutex<Option<Waker>>>);

    impl Stream for LocksOnDrop {
        type Item = u32;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            *self.0.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    impl Drop for LocksOnDrop {
        fn drop(&mut self) {
            drop(self.0.lock());
        }
    }

    #[test]
    fn a_wake_once_the_fleet_is_gone_drops_no_member_stream() {
        let cell = Arc::new(Mutex::new(None));
        let merge = Merge::new();
        merge.insert(Arc::from("m"), LocksOnDrop(cell.clone()));
        let mut merged = Merged(merge.clone());
        assert!(poll(&mut merged).is_pending());
        assert!(cell.lock().unwrap().is_some(), "the member holds its waker");
        merge.close();
        drop(merge);
        drop(merged);
        // Woken under the lock its drop takes, as a connection wakes its consumer: on a thread of its own,
        // since a deadlock would never return.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut waker = cell.lock().unwrap();
            if let Some(w) = waker.take() {
                w.wake();
            }
            drop(waker);
            let _ = done.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok(),
            "the wake dropped the member's stream under the lock its drop takes"
        );
    }

    #[test]
    fn only_woken_members_are_polled() {
        let queue = Merge::new();
        let probes: Vec<ProbeStream> = (0..1000).map(|_| ProbeStream::default()).collect();
        for (i, p) in probes.iter().enumerate() {
            queue.insert(Arc::from(format!("m{i}")), p.clone());
        }
        let mut merged = Merged(queue.clone());
        // The first polls register every member's waker (1000 members, BUDGET per poll).
        while poll(&mut merged).is_ready() {}
        for _ in 0..20 {
            if poll(&mut merged).is_ready() {
                panic!("nothing was pushed");
            }
        }
        let before: usize = probes.iter().map(ProbeStream::polls).sum();
        assert_eq!(
            before, 1000,
            "each member polled once to register its waker"
        );
        probes[417].push(7);
        assert_eq!(
            poll(&mut merged).map(|o| o.map(|(n, v)| (n.to_string(), v))),
            Poll::Ready(Some(("m417".to_string(), 7)))
        );
        assert!(poll(&mut merged).is_pending());
        let after: usize = probes.iter().map(ProbeStream::polls).sum();
        assert_eq!(
            after - before,
            2,
            "only the woken member was polled (item, then pending)"
        );
    }

    #[test]
    fn members_take_turns_and_the_stream_ends_after_close() {
        let queue = Merge::new();
        let (a, b) = (ProbeStream::default(), ProbeStream::default());
        queue.insert(Arc::from("a"), a.clone());
        queue.insert(Arc::from("b"), b.clone());
        let mut merged = Merged(queue.clone());
        assert!(poll(&mut merged).is_pending());
        for v in 0..3 {
            a.push(v);
            b.push(10 + v);
        }
        let mut got = Vec::new();
        while let Poll::Ready(Some((n, v))) = poll(&mut merged) {
            got.push((n.to_string(), v));
        }
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "a", "b", "a", "b"], "round robin");
        let a_vals: Vec<u32> = got
            .iter()
            .filter(|(n, _)| n == "a")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(a_vals, [0, 1, 2], "a member's items in order");
        a.end();
        b.end();
        assert!(poll(&mut merged).is_pending(), "the fleet is still open");
        queue.close();
        assert_eq!(poll(&mut merged), Poll::Ready(None));
    }
}
