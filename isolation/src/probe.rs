//! Probing a new plugin file in a throw-away process: the daemon learns the plugin's
//! metadata (and whether it loads at all) without running any of its code in process.
//! A library whose initialisers or constructor crash only kills the probe.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::child;
use super::child::ResourceLimits;
use super::fds::MAX_PROBE_BATCH;
use super::pool::describe_exit;
use super::protocol::{read_frame, Hello, Kind};
use super::sandbox::Spec;
use dynplug_loader::error::LoadError;
use dynplug_loader::sealed::SealedImage;

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes one file's sealed image (a batch of one) in the sandbox `spec` describes and
/// returns what the plugin said about itself.
pub fn probe(
    program: &Path,
    library: &Path,
    image: &SealedImage,
    spec: &Spec,
) -> Result<Hello, LoadError> {
    let dir = library.parent().unwrap_or(Path::new("/"));
    probe_batch(program, dir, &[(library, image)], spec)
        .pop()
        .unwrap_or_else(|| {
            Err(LoadError::Probe {
                path: library.to_owned(),
                reason: "the probe answered nothing".into(),
                remember: false,
            })
        })
}

/// Probes `files` (all below `dir`; each with its sealed image, which is what the probe
/// loads) in as few processes as it takes: one `program --probe-batch DIR FILE...`
/// (at most [`MAX_PROBE_BATCH`] files, their images on the descriptors from
/// `LIBRARY_FD` on) answers a frame per file in order; when one crashes or hangs it,
/// that file is the one after the last answer, and a new process goes on with the rest.
/// One result per file, in order.
pub fn probe_batch(
    program: &Path,
    dir: &Path,
    files: &[(&Path, &SealedImage)],
    spec: &Spec,
) -> Vec<Result<Hello, LoadError>> {
    let mut results = Vec::with_capacity(files.len());
    while results.len() < files.len() {
        let rest = &files[results.len()..];
        let rest = &rest[..rest.len().min(MAX_PROBE_BATCH)];
        run_batch(program, dir, rest, spec, &mut results);
    }
    results
}

/// One probe process over `files`: pushes a result for each file it answered, and one
/// for the file that ended it early (if one did).
fn run_batch(
    program: &Path,
    dir: &Path,
    files: &[(&Path, &SealedImage)],
    spec: &Spec,
    results: &mut Vec<Result<Hello, LoadError>>,
) {
    let first = files[0].0;
    // The file's own failure: the same file would fail again.
    let fail = |path: &Path, reason: String| LoadError::Probe {
        path: path.to_owned(),
        reason,
        remember: true,
    };
    // The probe's circumstances: try again next time.
    let unlucky = |path: &Path, reason: String| LoadError::Probe {
        path: path.to_owned(),
        reason,
        remember: false,
    };
    let (mut ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return results.push(Err(unlucky(first, e.to_string()))),
    };
    // CPU time: a probe's allowance per file, plus one.
    let budget = PROBE_TIMEOUT.as_secs() + u64::try_from(files.len()).unwrap_or(u64::MAX) / 10;
    let limits = ResourceLimits {
        address_space: None,
        cpu_seconds: Some(budget),
        // Its images, the channel, the standard streams and what loading them needs.
        open_files: 64 + MAX_PROBE_BATCH as u64,
    };
    let mut paths: Vec<&Path> = vec![dir];
    paths.extend(files.iter().map(|(path, _)| *path));
    let images: Vec<_> = files.iter().map(|(_, i)| i.fd().as_raw_fd()).collect();
    let mut process = match child::command(
        program,
        "--probe-batch",
        &paths,
        theirs.as_raw_fd(),
        limits,
        spec,
        None,
        &images,
    )
    .spawn()
    {
        Ok(process) => process,
        Err(e) => {
            return results.push(Err(unlucky(
                first,
                format!("cannot start {}: {e}", program.display()),
            )))
        }
    };
    drop(theirs);
    let _ = ours.set_read_timeout(Some(PROBE_TIMEOUT));
    for &(file, _) in files {
        match read_frame(&mut ours, 64 * 1024) {
            Ok((Kind::Hello, body)) => {
                results.push(Hello::decode(&body).map_err(|e| fail(file, e)))
            }
            // The plugin's own refusal (bad ABI, no entry symbol, ...), passed on verbatim.
            Ok((Kind::Failed, body)) => {
                results.push(Err(fail(file, String::from_utf8_lossy(&body).into_owned())))
            }
            Ok(_) => {
                let _ = process.kill();
                let _ = process.wait();
                return results.push(Err(fail(file, "unexpected answer from the probe".into())));
            }
            Err(e) => {
                // A closed channel means the probe is ending: let it end by itself, so
                // its status names the signal that killed it. Anything else (a hang)
                // ends it now.
                let hung = e.kind() != std::io::ErrorKind::UnexpectedEof;
                if hung {
                    let _ = process.kill();
                }
                let ended = wait_briefly(&mut process);
                // SIGKILL: the deadline's (ours, or RLIMIT_CPU's), not the file's doing.
                let killed = hung
                    || ended.as_ref().is_ok_and(|s| {
                        std::os::unix::process::ExitStatusExt::signal(s) == Some(libc::SIGKILL)
                    });
                let reason = match ended {
                    Ok(status) => format!("{} while loading the plugin", describe_exit(status)),
                    Err(e) => e.to_string(),
                };
                let error = if killed {
                    unlucky(file, reason)
                } else {
                    fail(file, reason)
                };
                return results.push(Err(error));
            }
        }
    }
    let _ = wait_briefly(&mut process);
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
