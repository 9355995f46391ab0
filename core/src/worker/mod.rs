//! Process isolation: plugins run in worker processes (`isolation: process`), so a
//! segfault, abort or runaway allocation kills only the worker.
//!
//! - [`sandbox`]: the layers a worker confines itself in before it loads a plugin;
//! - [`shared`]: a sealed memfd per worker for payloads above 64 KiB;
//! - [`protocol`]: length-prefixed, versioned frames on a private socketpair;
//! - [`serve`]: the worker process (`dynplug-worker --worker PATH`) and the probe
//!   (`dynplug-worker --probe-batch DIR PATH...`);
//! - [`probe`]: learning new files' metadata in throw-away processes, in batches;
//! - [`pool`]: the daemon side: spawning with limits, calls, crash handling, restart
//!   backoff, quarantine.

mod child;
pub mod fds;
pub mod pool;
pub mod probe;
pub mod protocol;
pub mod sandbox;
pub mod serve;
pub mod shared;
mod usage;

pub use pool::{PoolConfig, PoolError, PoolStatus, ResourceLimits, WorkerPool};
pub use probe::probe;
pub use sandbox::{SandboxPolicy, SandboxReport};
