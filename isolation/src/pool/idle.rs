//! Idle workers, watched. A worker sends nothing between calls, so one whose channel
//! becomes readable while it waits — a frame written after its result (by a thread or
//! child the plugin left behind), or the worker's end — broke the protocol: it is
//! killed then, not handed to the next caller to fail its call.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;

use super::Worker;
use dynplug_loader::locks::lock;

/// A worker waiting for a call, and the task that watches its channel.
struct Parked {
    /// Unique per parking: a watcher only ever removes the worker it was started for.
    id: u64,
    worker: Worker,
    watch: Option<AbortHandle>,
}

impl Parked {
    fn unwatch(self) -> Worker {
        if let Some(watch) = self.watch {
            watch.abort();
        }
        self.worker
    }
}

/// The idle workers of one pool.
pub(super) struct IdleWorkers {
    plugin: Arc<str>,
    parked: Arc<Mutex<Vec<Parked>>>,
    next_id: AtomicU64,
}

impl IdleWorkers {
    /// No idle workers yet, for the pool of `plugin`.
    pub(super) fn new(plugin: &str) -> Self {
        IdleWorkers {
            plugin: plugin.into(),
            parked: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Parks `worker` until a call takes it, watching its channel meanwhile (when a
    /// watch cannot be set up, [`IdleWorkers::take`] still checks the channel).
    pub(super) fn park(&self, worker: Worker) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watch = watch_fd(&worker).map(|fd| {
            tokio::spawn(watch(
                Arc::downgrade(&self.parked),
                id,
                fd,
                Arc::clone(&self.plugin),
            ))
            .abort_handle()
        });
        lock(&self.parked).push(Parked { id, worker, watch });
    }

    /// An idle worker of settings `generation`, if there is one. Workers of older
    /// settings are dropped (and killed); a worker whose channel is readable broke the
    /// protocol while idle and is killed, even if its watcher has not run yet.
    pub(super) fn take(&self, generation: u64) -> Option<Worker> {
        let mut parked = lock(&self.parked);
        while let Some(p) = parked.pop() {
            let worker = p.unwatch();
            if worker.generation != generation {
                // Stale settings: dropped, and killed by kill_on_drop.
                continue;
            }
            if worker.readable_now() {
                breach(&self.plugin);
                worker.kill_group();
                continue;
            }
            return Some(worker);
        }
        None
    }

    /// Every idle worker, no longer watched.
    pub(super) fn drain(&self) -> Vec<Worker> {
        std::mem::take(&mut *lock(&self.parked))
            .into_iter()
            .map(Parked::unwatch)
            .collect()
    }

    /// PIDs of the idle workers.
    pub(super) fn pids(&self) -> Vec<u32> {
        lock(&self.parked)
            .iter()
            .filter_map(|p| p.worker.pid())
            .collect()
    }
}

/// A descriptor of `worker`'s channel for the watcher to wait on (its own, so the
/// worker's stream stays untouched and usable by the next call).
fn watch_fd(worker: &Worker) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the worker owns returns a new one or -1.
    let fd = unsafe { libc::fcntl(worker.stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just made for us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped,
    // which the AsyncFd that owns it does last.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
}

fn breach(plugin: &str) {
    tracing::warn!(
        plugin,
        "an idle worker wrote to its channel (or ended) and was killed"
    );
}

/// Waits until the channel of parked worker `id` becomes readable, then kills it if it
/// is still parked. Aborted when a call takes the worker.
async fn watch(parked: Weak<Mutex<Vec<Parked>>>, id: u64, fd: AsyncFd<OwnedFd>, plugin: Arc<str>) {
    if fd.readable().await.is_err() {
        return;
    }
    let Some(parked) = parked.upgrade() else {
        return;
    };
    let found = {
        let mut list = lock(&parked);
        let at = list.iter().position(|p| p.id == id);
        at.map(|i| list.swap_remove(i))
    };
    if let Some(p) = found {
        breach(&plugin);
        p.worker.kill().await;
    }
}
