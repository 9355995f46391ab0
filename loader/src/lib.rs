//! DynPlug's loader: a plugin file is judged once and what was judged is what runs.
//!
//! No async runtime and nothing of the host's bookkeeping: the daemon, the worker
//! process and `dynplugd --inspect` all load through this crate.
//!
//! - [`trust`]: owner and mode checks on plugin files, and side files (signatures, keys,
//!   configuration, state) read without following links into untrusted places;
//! - [`sealed`]: a plugin file opened once, checked with `fstat` and copied into a sealed
//!   memfd — the image that is verified, read and loaded;
//! - [`signature`] and [`trust_config`]: detached ed25519 signatures and the `trust:`
//!   settings that require them;
//! - [`metadata`]: the `dynplug.meta` ELF section, read without running plugin code;
//!   [`settings_schema`]: the JSON schema a plugin declares for its settings;
//! - [`library`]: `dlopen` of a sealed image, ABI and table checks, calls that catch
//!   panics;
//! - [`call_rules`]: the limits every host of a call applies (log line, status text,
//!   event sizes and budgets, the cancellation grace);
//! - [`name`]: plugin name rules; [`fatal`]: fatal signals raised by plugin code end the
//!   process instead of vanishing; [`locks`]: the one poisoned-lock policy;
//! - [`testkit`]: load a built plugin through the real ABI in a plugin's own tests;
//! - [`error`]: [`LoadError`](error::LoadError) and [`CallError`](error::CallError).

pub mod call_rules;
pub mod error;
pub mod fatal;
pub mod library;
pub mod locks;
pub mod metadata;
pub mod name;
pub mod sealed;
pub mod settings_schema;
pub mod signature;
#[cfg(test)]
mod test_fixtures;
pub mod testkit;
pub mod trust;
pub mod trust_config;
