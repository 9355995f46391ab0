//! Fatal signals that plugin code raises end the process.
//!
//! The Rust runtime installs a SIGSEGV/SIGBUS handler to report stack overflows. For a
//! fault that is not a guard-page hit it restores the default action and returns, which
//! is right for a real fault (the instruction faults again and the process dies) but
//! swallows a signal sent with `raise(SIGSEGV)` or `kill`: the process would carry on
//! and a plugin call would look successful. [`install`] puts a handler in front that
//! turns a *sent* SIGSEGV or SIGBUS into the default action (the process dies by that
//! signal, so a worker's crash is reported with the signal named) and hands real faults
//! on to the handler that was there before.

use std::sync::OnceLock;

const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
static PREVIOUS: [OnceLock<libc::sigaction>; 2] = [OnceLock::new(), OnceLock::new()];

extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
    let index = SIGNALS.iter().position(|&s| s == sig);
    let previous = index.and_then(|i| PREVIOUS[i].get());
    // SAFETY: only async-signal-safe calls: signal(2), and the previous handler, which
    // was installed for exactly this signal.
    unsafe {
        match previous {
            Some(prev)
                if !sent
                    && prev.sa_flags & libc::SA_SIGINFO != 0
                    && prev.sa_sigaction > libc::SIG_IGN =>
            {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(prev.sa_sigaction);
                handler(sig, info, ctx);
            }
            _ => {
                // Default action: a real fault recurs on return; a sent signal, blocked
                // while this handler runs, is delivered again on return. Either way the
                // process dies by `sig`.
                libc::signal(sig, libc::SIG_DFL);
                if sent {
                    libc::raise(sig);
                }
            }
        }
    }
}

/// Installs the handler for SIGSEGV and SIGBUS (once per process).
pub fn install() {
    for (i, &sig) in SIGNALS.iter().enumerate() {
        if PREVIOUS[i].get().is_some() {
            continue;
        }
        // SAFETY: zeroed sigaction structs are valid; sigaction reads `new` and writes
        // `old`, both live for the call.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_fatal as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &new, &mut old) == 0 {
                let _ = PREVIOUS[i].set(old);
            }
        }
    }
}
