//! The one `Engine` every wasm plugin shares, its linker, and the epoch ticker that
//! makes timeouts and cancellation stop running guest code.
//!
//! The ticker is one thread that advances the engine's epoch every [`TICK`] while any
//! call runs and sleeps (parked) while none does, so an idle daemon pays nothing.
//! Every store's deadline is one tick ahead; at each tick the store's callback checks
//! the call's deadline and cancellation and either interrupts the guest or lets it go
//! on for another tick.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use crate::state::CallState;

/// How often the epoch advances while calls run: the precision of timeouts.
pub const TICK: Duration = Duration::from_millis(2);

/// The deepest guest stack allowed, in bytes: past it the guest traps
/// `stack overflow` (the host's own thread stack is never at risk).
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// The shared engine and what goes with it.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    /// Identifies the engine's settings and wasmtime's version: part of every
    /// precompiled artifact's key.
    pub(crate) fingerprint: String,
    active: AtomicUsize,
    ticker: Mutex<Option<Thread>>,
}

/// The shared engine, made on first use.
pub(crate) fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).expect("the engine configuration is valid");
        let linker = crate::state::linker(&engine).expect("the host functions link");
        let fingerprint = fingerprint(&engine);
        Shared {
            engine,
            linker,
            fingerprint,
            active: AtomicUsize::new(0),
            ticker: Mutex::new(None),
        }
    })
}

/// Whether this process may make memory executable: wasmtime writes compiled code
/// (fresh or from an artifact) and then maps it executable, which systemd's
/// `MemoryDenyWriteExecute=yes` (seccomp, or the kernel's PR_SET_MDWE) forbids.
pub fn executable_memory_allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        // SAFETY: a fresh anonymous private page, changed only in its protection and
        // unmapped before returning; no pointer to it escapes.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return false;
            }
            let allowed = libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC) == 0;
            libc::munmap(page, 4096);
            allowed
        }
    })
}

/// Feeds `Hash` into SHA-256, so the engine's compatibility hash is stable across
/// runs (std's default hasher is not).
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn fingerprint(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = ShaHasher(Sha256::new());
    wasmtime_version().hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex(&hasher.0.finalize()[..16])
}

/// The version of wasmtime this host is built with.
pub fn wasmtime_version() -> &'static str {
    "48.0.0"
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts a call as running while it lives; the first wakes the ticker.
pub(crate) struct Running;

impl Running {
    pub(crate) fn enter() -> Running {
        let shared = shared();
        if shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            wake_ticker(shared);
        }
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        shared().active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn wake_ticker(shared: &'static Shared) {
    let mut ticker = shared.ticker.lock().unwrap_or_else(|p| p.into_inner());
    match &*ticker {
        Some(thread) => thread.unpark(),
        None => {
            let spawned = std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || loop {
                    if shared.active.load(Ordering::Acquire) == 0 {
                        // Woken by the next call's `Running::enter` (an unpark before
                        // this park makes it return at once: no call is missed).
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    shared.engine.increment_epoch();
                });
            // Without a ticker (no thread could be made) the next call tries again;
            // until then a deadline is only seen when the guest returns.
            if let Ok(handle) = spawned {
                *ticker = Some(handle.thread().clone());
            }
        }
    }
}
