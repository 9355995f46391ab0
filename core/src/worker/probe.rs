//! Probing a new plugin file in a throw-away process: the daemon learns the plugin's
//! metadata (and whether it loads at all) without running any of its code in process.
//! A library whose initialisers or constructor crash only kills the probe.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::child;
use super::pool::{describe_exit, ResourceLimits};
use super::protocol::{read_frame, Hello, Kind, PROTOCOL_VERSION};
use crate::error::LoadError;

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program --probe library` and returns what the plugin said about itself.
pub fn probe(program: &Path, library: &Path) -> Result<Hello, LoadError> {
    let fail = |reason: String| LoadError::Probe {
        path: library.to_owned(),
        reason,
    };
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| fail(e.to_string()))?;
    let limits = ResourceLimits {
        address_space: None,
        cpu_seconds: Some(PROBE_TIMEOUT.as_secs()),
        open_files: 64,
    };
    let mut process = child::command(program, "--probe", library, theirs.as_raw_fd(), limits)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
    drop(theirs);
    ours.set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    let frame = read_frame(&mut ours);
    if frame.is_err() {
        let _ = process.kill();
    }
    let status = process.wait().map_err(|e| fail(e.to_string()))?;
    match frame {
        Ok((Kind::Hello, body)) if body.len() >= 4 => {
            let version = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
            if version != PROTOCOL_VERSION {
                return Err(fail(format!(
                    "probe speaks protocol {version}, expected {PROTOCOL_VERSION}"
                )));
            }
            serde_json::from_slice(&body[4..])
                .map_err(|e| fail(format!("bad metadata from the probe: {e}")))
        }
        // The plugin's own refusal (bad ABI, no entry symbol, ...), passed on verbatim.
        Ok((Kind::Failed, body)) => Err(fail(String::from_utf8_lossy(&body).into_owned())),
        Ok(_) => Err(fail("unexpected answer from the probe".into())),
        Err(_) => Err(fail(format!(
            "{} while loading the plugin",
            describe_exit(status)
        ))),
    }
}
