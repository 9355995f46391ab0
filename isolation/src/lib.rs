//! DynPlug's process isolation: plugins run in worker processes (`isolation: process`),
//! so a segfault, abort or runaway allocation kills only the worker. Built on the
//! loader (`dynplug-loader`); knows nothing of the manager, jobs or events: a call's
//! host services reach it as a [`CallServices`].
//!
//! - [`sandbox`]: the layers a worker confines itself in before it loads a plugin;
//! - [`shared`]: a sealed memfd per worker for payloads above 64 KiB;
//! - [`protocol`]: length-prefixed, versioned frames on a private socketpair;
//! - [`serve`]: the worker process (`dynplug-worker --worker PATH`) and the probe
//!   (`dynplug-worker --probe-batch DIR PATH...`);
//! - [`probe`]: learning new files' metadata in throw-away processes, in batches;
//! - [`pool`]: the daemon side: spawning with limits, calls, crash handling, restart
//!   backoff, quarantine;
//! - [`cancel`]: the flag a caller raises when it gives up on a call;
//! - [`resources`]: CPU time and memory of processes, from /proc.

pub mod cancel;
mod child;
pub mod fds;
pub mod pool;
pub mod probe;
pub mod protocol;
pub mod resources;
pub mod sandbox;
pub mod serve;
pub mod shared;
mod usage;

pub use pool::{PoolConfig, PoolError, PoolFailure, PoolStatus, ResourceLimits, WorkerPool};
pub use probe::probe;
pub use sandbox::{SandboxPolicy, SandboxReport};

use std::sync::Arc;

/// The host's services for one isolated call: where the plugin's log lines, progress
/// and events go (the SDK's [`Host`](dynplug_sdk::host::Host)), and the caller's
/// cancellation flag, which the pool watches to tell the worker.
pub trait CallServices: dynplug_sdk::host::Host + Send {
    /// The call's cancellation flag.
    fn cancel_flag(&self) -> &Arc<cancel::Cancel>;
}
