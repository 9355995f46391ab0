//! The flag a caller raises when it gives up on a call: plugins poll it (through the
//! host's `cancelled`), worker pools wait for it, jobs raise it. A leaf: it knows nothing
//! of calls, jobs or hosts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A flag the caller raises when it gives up on a call; plugins poll it, the pool waits
/// for it.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// A new, lowered flag.
    pub fn new() -> Arc<Cancel> {
        Arc::default()
    }

    /// Raises the flag; returns whether it was lowered before.
    pub fn cancel(&self) -> bool {
        let first = !self.flag.swap(true, Ordering::AcqRel);
        self.notify.notify_waiters();
        first
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Completes once the flag is raised.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
