//! `dynplugd`: wires `dynplug-core` to the world.
//!
//! - [`cli`]: the command line;
//! - [`run`]: the daemon's life (start, serve, reload on SIGHUP, graceful stop);
//! - [`state`]: the shared state below the front ends (manager, lifecycle, reload);
//!   it knows nothing of D-Bus or HTTP, which follow its events;
//! - [`dbus`]: `org.dynplug.Manager` and the per-plugin objects, serving the contract
//!   of `dynplug-dbus` (whose proxies `dynplugctl` uses);
//! - [`api`]: the optional REST API (axum);
//! - [`notify`]: the systemd notify protocol; [`logging`]: journald or stderr.

pub mod api;
pub mod cli;
pub mod dbus;
pub mod install;
pub mod limits;
pub mod logging;
pub mod notify;
pub mod run;
pub mod state;
