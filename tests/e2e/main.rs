//! End-to-end tests: one test binary, one module per area.

mod daemon;
mod manager;
