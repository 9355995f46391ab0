//! The DynPlug plugin SDK: everything a plugin needs and nothing of the host.
//!
//! - [`Plugin`] and [`register_plugin!`]: the safe Rust API a plugin implements;
//! - [`abi`]: the versioned C ABI (mirrored by `include/dynplug.h`, for plugins in C
//!   and other languages);
//! - [`export`]: the `extern "C"` shims [`register_plugin!`] instantiates (panics
//!   caught at the boundary, memory freed by its owner).
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
pub mod export;

/// The directory holding `dynplug.h`, the C header of the ABI (for `cc -I`).
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
mod plugin;

pub use plugin::{Plugin, PluginResult};
