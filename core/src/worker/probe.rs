//! Probing a new plugin file in a throw-away process: the daemon learns the plugin's
//! metadata (and whether it loads at all) without running any of its code in process.
//! A library whose initialisers or constructor crash only kills the probe.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::child;
use super::pool::{describe_exit, ResourceLimits};
use super::protocol::{read_frame, Hello, Kind};
use super::sandbox::Spec;
use crate::error::LoadError;

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program --probe library` in the sandbox `spec` describes and returns what the
/// plugin said about itself.
pub fn probe(program: &Path, library: &Path, spec: &Spec) -> Result<Hello, LoadError> {
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
    let mut process = child::command(
        program,
        "--probe",
        library,
        theirs.as_raw_fd(),
        limits,
        spec,
        None,
    )
    .spawn()
    .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
    drop(theirs);
    ours.set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    let frame = read_frame(&mut ours, 64 * 1024);
    // A closed channel means the probe is ending: let it end by itself, so its status
    // names the signal that killed the plugin's process. Anything else ends it now.
    let ending = matches!(&frame, Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof);
    if frame.is_err() && !ending {
        let _ = process.kill();
    }
    let status = wait_briefly(&mut process).map_err(|e| fail(e.to_string()))?;
    match frame {
        Ok((Kind::Hello, body)) => Hello::decode(&body).map_err(fail),
        // The plugin's own refusal (bad ABI, no entry symbol, ...), passed on verbatim.
        Ok((Kind::Failed, body)) => Err(fail(String::from_utf8_lossy(&body).into_owned())),
        Ok(_) => Err(fail("unexpected answer from the probe".into())),
        Err(_) => Err(fail(format!(
            "{} while loading the plugin",
            describe_exit(status)
        ))),
    }
}

/// Waits for the probe to end, killing it if it takes longer than a second or two.
fn wait_briefly(process: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(status) = process.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = process.kill();
            return process.wait();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
