//! What a store holds during one call: the call's host services, its WASI context
//! (only the directories granted, output captured), its memory limiter, and why it
//! was stopped if it was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynplug_sdk::host::Host;
use dynplug_sdk::Level;
use wasmtime::component::{ComponentType, Lift, Linker, Lower, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The `level` enum of the host interface.
#[expect(
    dead_code,
    reason = "the variants are made by lifting guest values, never in Rust"
)]
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitLevel {
    #[component(name = "error")]
    Error,
    #[component(name = "warn")]
    Warn,
    #[component(name = "info")]
    Info,
    #[component(name = "debug")]
    Debug,
    #[component(name = "trace")]
    Trace,
}

impl From<WitLevel> for Level {
    fn from(level: WitLevel) -> Level {
        match level {
            WitLevel::Error => Level::Error,
            WitLevel::Warn => Level::Warn,
            WitLevel::Info => Level::Info,
            WitLevel::Debug => Level::Debug,
            WitLevel::Trace => Level::Trace,
        }
    }
}

/// Why a call was stopped by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Timeout,
    Cancelled,
}

/// The memory limit of one store, summed over its memories.
pub(crate) struct MemoryLimit {
    pub(crate) limit: usize,
    pub(crate) used: usize,
    pub(crate) peak: usize,
    /// The size a refused growth asked for (the last one refused).
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused = Some(total);
            return Ok(false);
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer: a table is held to 1/8 of the memory limit.
        Ok(desired.saturating_mul(8) <= self.limit / 8)
    }
}

/// The data of a call's store.
pub(crate) struct CallState {
    pub(crate) host: Option<Arc<dyn Host + Send + Sync>>,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryLimit,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) cancelled_at: Option<Instant>,
    pub(crate) stopped: Option<Stop>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CallState {
    /// Called at each epoch tick: whether the guest may go on.
    pub(crate) fn tick(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            self.stopped = Some(Stop::Timeout);
            return false;
        }
        if self.host.as_ref().is_some_and(|h| h.cancelled()) {
            let since = *self.cancelled_at.get_or_insert(now);
            if now.duration_since(since) >= self.cancel_grace {
                self.stopped = Some(Stop::Cancelled);
                return false;
            }
        }
        true
    }
}

/// The interface name the host functions are linked under. Wasmtime matches imports
/// of any 1.x version up to this one against it (semver), so a component built for
/// 1.0.0 links against a 1.1 host.
pub(crate) const HOST_INTERFACE: &str = "dynplug:plugin/host@1.0.0";

/// The linker every plugin is instantiated with: the host interface and the WASI
/// interfaces (filesystem limited to what each call's context preopens; sockets are
/// linked but refused at load, see `crate::plugin::check_imports`).
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::<CallState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap("log", |store, (level, message): (WitLevel, String)| {
        if let Some(h) = &store.data().host {
            h.log(level.into(), &message);
        }
        Ok(())
    })?;
    host.func_wrap("progress", |store, (fraction, text): (f32, String)| {
        if let Some(h) = &store.data().host {
            let fraction = if fraction.is_finite() {
                f64::from(fraction).clamp(0.0, 1.0)
            } else {
                0.0
            };
            h.progress(fraction, &text);
        }
        Ok(())
    })?;
    host.func_wrap("cancelled", |store, (): ()| {
        Ok((store.data().host.as_ref().is_some_and(|h| h.cancelled()),))
    })?;
    host.func_wrap("emit", |store, (event, payload): (String, String)| {
        Ok((store
            .data()
            .host
            .as_ref()
            .is_some_and(|h| h.emit(&event, &payload)),))
    })?;
    Ok(linker)
}
