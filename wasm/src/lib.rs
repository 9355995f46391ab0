//! DynPlug's WebAssembly tier: component plugins of the WIT world
//! `dynplug:plugin@1.0.0` (`sdk/wit/dynplug.wit`) run by wasmtime.
//!
//! # Map
//! - [`describe`]: what a component declares (metadata section, imports, exports,
//!   WIT version), read from its bytes without compiling or running anything;
//! - [`WasmPlugin`]: load (check imports, compile or take the precompiled artifact,
//!   link) and call (a fresh instance per call, memory limit, timeout and
//!   cancellation by epoch interruption, traps named);
//! - `cache`: the checked artifact cache; `engine`: the one shared engine and its
//!   epoch ticker; `state`: what a call's store holds and the host functions.
//!
//! This crate knows nothing of the daemon: it takes bytes, plain options and a
//! [`dynplug_sdk::host::Host`] for the call's services, so the host crate wires it in
//! without this crate depending on it.

mod cache;
mod describe;
mod engine;
mod error;
mod plugin;
mod state;

pub use cache::{artifacts, Artifact};
pub use describe::{describe, Description, MAX_META, META_SECTION, PACKAGE, WIT_VERSION};
pub use engine::{executable_memory_allowed, wasmtime_version, MAX_WASM_STACK, TICK};
pub use error::{CallError, LoadError};
pub use plugin::{check_imports, Answer, CallLimits, Options, WasmPlugin, MAX_STDIO};

#[cfg(feature = "guests")]
pub mod guests;
