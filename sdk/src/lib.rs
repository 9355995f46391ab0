//! The DynPlug plugin SDK: everything a plugin needs and nothing of the host.
//!
//! - [`Plugin`] and [`plugin`](macro@plugin): the safe Rust API a plugin implements, and the attribute
//!   that declares its name, version and description once (feature `macros`, on by
//!   default); [`register_plugin!`] is what the attribute expands to, and still works
//!   on its own;
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
//! use dynplug_sdk::{plugin, Plugin, PluginResult};
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
//! #[plugin(name = "shout", description = "upper-cases its input")]
//! impl Plugin for Shout {
//!     fn execute(&self, input: &str) -> PluginResult<String> {
//!         Ok(input.to_uppercase())
//!     }
//! }
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
#[cfg(feature = "macros")]
pub use dynplug_sdk_macros::plugin;
/// [`plugin`](macro@plugin) with paths through `dynplug_core`, re-exported there as `plugin`.
#[cfg(feature = "macros")]
#[doc(hidden)]
pub use dynplug_sdk_macros::plugin_via_core;
pub use plugin::{Plugin, PluginResult};
pub use testhost::{Recorder, TestHost};

/// The Rust examples of docs/plugin-abi.md, compiled and run as doc-tests.
#[cfg(all(doctest, feature = "macros"))]
#[doc = include_str!("../../docs/plugin-abi.md")]
struct PluginAbiDoc;
