//! The DynPlug plugin SDK: everything a plugin needs and nothing of the host.
//!
//! - [`Plugin`] and [`register_plugin!`]: the safe Rust API a plugin implements;
//! - [`abi`]: the versioned C ABI (mirrored by `include/dynplug.h`, for plugins in C
//!   and other languages);
//! - [`Context`]: the host's services during a call (ABI version 2): log lines for the
//!   journal, progress, cancellation, events;
//! - [`export`]: the `extern "C"` shims [`register_plugin!`] instantiates (panics
//!   caught at the boundary, memory freed by its owner);
//! - [`host`]: the host's side of that context ([`host::Host`], [`host::with_context`]),
//!   shared by the daemon and the test host;
//! - [`TestHost`]: the daemon's side of the ABI for a plugin's own tests.
//!
//! ```
//! use dynplug_sdk::{register_plugin, Plugin, PluginResult};
//!
//! #[derive(Default)]
//! pub struct Shout;
//!
//! impl Shout {
//!     pub fn new() -> Self {
//!         Shout
//!     }
//! }
//!
//! impl Plugin for Shout {
//!     fn name(&self) -> &str {
//!         "shout"
//!     }
//!     fn version(&self) -> &str {
//!         "1.0.0"
//!     }
//!     fn description(&self) -> &str {
//!         "upper-cases its input"
//!     }
//!     fn execute(&self, input: &str) -> PluginResult<String> {
//!         Ok(input.to_uppercase())
//!     }
//! }
//!
//! register_plugin!(Shout);
//! ```
//!
//! The host side (loader, manager, workers) is `dynplug-core`, which re-exports this
//! crate, so plugins written against `dynplug-core` with `default-features = false`
//! keep building.

pub mod abi;
mod context;
pub mod export;
pub mod host;
pub mod printable;
mod testhost;

/// The directory holding `dynplug.h`, the C header of the ABI (for `cc -I`).
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
mod plugin;

pub use context::{Context, Level};
pub use plugin::{Plugin, PluginResult};
pub use testhost::{Recorder, TestHost};
