//! End-to-end tests: one test binary, one module per area.

mod ctl;
mod daemon;
mod extras;
mod isolation;
mod manager;
mod rest;
