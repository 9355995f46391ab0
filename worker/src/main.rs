//! `dynplug-worker`: the process an isolated plugin runs in, and the probe that looks
//! at new plugin files, started by `dynplugd` — a small program of its own, so that a
//! worker maps only the loader and the worker code before it confines itself, not the
//! daemon (D-Bus, HTTP, JSON Schema...).
//!
//! - `dynplug-worker --worker LIBRARY`: the channel on fd 3, the sealed image of the
//!   library on fd 5; serves calls until the daemon closes the channel.
//! - `dynplug-worker --probe-batch DIR FILE...`: the images on fds 5, 6, ...; answers
//!   each file's metadata in turn on fd 3, then exits.

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("--worker") if args.len() == 3 => dynplug_isolation::serve::serve(Path::new(&args[2])),
        Some("--probe-batch") if args.len() >= 4 => {
            let files: Vec<PathBuf> = args[3..].iter().map(Into::into).collect();
            dynplug_isolation::serve::probe_batch(Path::new(&args[2]), &files)
        }
        _ => {
            eprintln!(
                "dynplug-worker is started by dynplugd for isolated plugins \
                 (--worker LIBRARY, --probe-batch DIR FILE...); it is not run by hand"
            );
            2
        }
    };
    std::process::exit(code);
}
