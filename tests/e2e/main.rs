//! End-to-end tests: one test binary, one module per area.

mod ctl;
mod daemon;
mod manager;
mod rest;
