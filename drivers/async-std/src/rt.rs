//! The little the driver needs from a runtime, written against runtime-neutral crates: spawning (a
//! [`Spawner`]), sleeping (`async-io` timers, which run under async-std and smol alike), and a `watch`-style
//! shared value ([`Watch`]) built on `event-listener`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use event_listener::Event;
use futures_util::future::{AbortHandle, Abortable};

/// A boxed, `Send`, `'static` future of `()`: what a [`Spawner`] runs.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How the driver starts its background tasks (the machine task, one per socket, one per HTTP request,
/// linger timers). The driver never joins a task: it detaches them and cancels them itself.
///
/// The default, [`Spawner::global`], is the executor behind `async_std::task::spawn`
/// (`async-global-executor`), so under async-std the driver's tasks run on async-std's own threads. Under
/// smol, hand it smol's executor instead:
///
/// ```
/// use genesys_keepalive_async_std::{Options, Spawner};
/// let options = Options::default().spawner(Spawner::new(|task| smol::spawn(task).detach()));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    /// A spawner that runs each task with `spawn` (which must not block: it should hand the task to an
    /// executor and return).
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Spawner(Arc::new(spawn))
    }

    /// The global executor async-std uses for `async_std::task::spawn` (`async-global-executor`), which also
    /// works from smol or from a plain `futures_lite::future::block_on`.
    pub fn global() -> Self {
        Spawner::new(|task| async_global_executor::spawn(task).detach())
    }

    /// Runs `fut` in the background.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(fut))
    }

    /// Runs `fut` in the background; the returned handle cancels it (drops it at its next poll).
    pub(crate) fn spawn_abortable(
        &self,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        self.spawn(async move {
            let _ = Abortable::new(fut, registration).await;
        });
        handle
    }
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner::global()
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

/// Sleeps until `deadline` (an `async-io` timer: no runtime of its own needed).
pub(crate) async fn sleep_until(deadline: Instant) {
    async_io::Timer::at(deadline).await;
}

/// The value behind a [`Watch`] and its [`Publisher`].
struct Cell<T> {
    slot: Mutex<Slot<T>>,
    changed: Event,
}

struct Slot<T> {
    value: T,
    version: u64,
    /// The publisher is gone: no newer value will come.
    closed: bool,
}

impl<T> Cell<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writing side of a [`Watch`]; dropping it tells every watcher that nothing newer will come.
pub(crate) struct Publisher<T> {
    cell: Arc<Cell<T>>,
}

/// Creates a publisher and its first watcher, holding `value`.
pub(crate) fn watch<T>(value: T) -> (Publisher<T>, Watch<T>) {
    let cell = Arc::new(Cell {
        slot: Mutex::new(Slot {
            value,
            version: 0,
            closed: false,
        }),
        changed: Event::new(),
    });
    (Publisher { cell: cell.clone() }, Watch { cell, seen: 0 })
}

impl<T> Publisher<T> {
    /// Replaces the value if `update` says it changed it; wakes the watchers then.
    pub(crate) fn update(&self, update: impl FnOnce(&mut T) -> bool) {
        let mut slot = self.cell.lock();
        if update(&mut slot.value) {
            slot.version += 1;
            drop(slot);
            self.cell.changed.notify(usize::MAX);
        }
    }

    /// Replaces the value and wakes the watchers.
    pub(crate) fn set(&self, value: T) {
        self.update(|v| {
            *v = value;
            true
        });
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.cell.lock().closed = true;
        self.cell.changed.notify(usize::MAX);
    }
}

/// A `watch`-style view of a value the keep-alive task publishes (its state or its stats): read the latest
/// with [`get`](Watch::get), or wait for the next change with [`changed`](Watch::changed). Runtime-neutral;
/// cheap to clone (a clone has seen what the original has seen).
pub struct Watch<T> {
    cell: Arc<Cell<T>>,
    seen: u64,
}

impl<T> Clone for Watch<T> {
    fn clone(&self) -> Self {
        Watch {
            cell: self.cell.clone(),
            seen: self.seen,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Watch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Watch")
            .field(&self.cell.lock().value)
            .finish()
    }
}

impl<T: Clone> Watch<T> {
    /// The latest value (marks it seen).
    pub fn get(&mut self) -> T {
        let slot = self.cell.lock();
        self.seen = slot.version;
        slot.value.clone()
    }

    /// The latest value, without marking it seen.
    pub fn peek(&self) -> T {
        self.cell.lock().value.clone()
    }

    /// Waits for a value newer than the last one seen and returns it, or `None` once the keep-alive task
    /// has ended and nothing newer will come.
    pub async fn changed(&mut self) -> Option<T> {
        loop {
            let listener = self.cell.changed.listen();
            {
                let slot = self.cell.lock();
                if slot.version != self.seen {
                    self.seen = slot.version;
                    return Some(slot.value.clone());
                }
                if slot.closed {
                    return None;
                }
            }
            listener.await;
        }
    }

    /// Waits until `pred` holds for the value and returns it (checking the current value first), or `None`
    /// once the keep-alive task has ended without it holding.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        loop {
            let listener = self.cell.changed.listen();
            {
                let slot = self.cell.lock();
                self.seen = slot.version;
                if pred(&slot.value) {
                    return Some(slot.value.clone());
                }
                if slot.closed {
                    return None;
                }
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_see_changes_and_the_end() {
        futures_lite::future::block_on(async {
            let (tx, mut rx) = watch(1);
            assert_eq!(rx.get(), 1);
            tx.set(2);
            assert_eq!(rx.changed().await, Some(2));
            tx.update(|_| false); // unchanged: no new version
            let mut other = rx.clone();
            tx.set(3);
            assert_eq!(other.wait_for(|v| *v == 3).await, Some(3));
            drop(tx);
            assert_eq!(rx.changed().await, Some(3));
            assert_eq!(rx.changed().await, None);
            assert_eq!(rx.wait_for(|v| *v == 4).await, None);
        });
    }

    #[test]
    fn an_aborted_task_stops_running() {
        let (tx, rx) = async_channel::unbounded::<u32>();
        let abort = Spawner::global().spawn_abortable(async move {
            let _ = tx.send(1).await;
            futures_lite::future::pending::<()>().await;
        });
        futures_lite::future::block_on(async {
            assert_eq!(rx.recv().await, Ok(1));
            abort.abort();
            // The sender is dropped with the task.
            assert!(rx.recv().await.is_err());
        });
    }
}
