//! End-to-end tests: one test binary, one module per area.

mod contexts;
mod ctl;
mod daemon;
mod edges;
mod extras;
mod fail_closed;
mod fastpath;
mod hostile;
mod install;
mod isolation;
mod jobs;
mod judged_bytes;
mod limits;
mod manager;
mod metadata;
mod oci;
mod redteam;
mod registry;
mod rest;
mod signatures;
mod structure;
mod top;
mod visibility;
mod wasm;
