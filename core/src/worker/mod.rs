//! Process isolation: plugins run in worker processes (`isolation: process`), so a
//! segfault, abort or runaway allocation kills only the worker.
//!
//! - [`protocol`]: length-prefixed, versioned frames on a private socketpair;
//! - [`serve`]: the worker process (`dynplugd --worker PATH`);
//! - [`pool`]: the daemon side: spawning with limits, calls, crash handling, restart
//!   backoff, quarantine.

pub mod pool;
pub mod protocol;
pub mod serve;

pub use pool::{PoolConfig, PoolError, PoolStatus, ResourceLimits, WorkerPool};
pub use serve::serve;
