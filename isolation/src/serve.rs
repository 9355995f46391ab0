//! The worker side: runs in its own process, loads one plugin through the same checks
//! as the daemon, and serves calls on the socket it was given as fd 3.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::protocol::{
    read_frame, result_body, split_emit_ack, split_request, write_frame, Hello, HostCall, Kind,
    REQUEST_HEAD, RESULT_ERROR, RESULT_INVALID_OUTPUT, RESULT_OK, RESULT_PANIC,
};
use super::sandbox::{self, SandboxReport, Spec, SPEC_ENV};
use super::shared::{self, Region};
use dynplug_loader::call_rules::{event_acceptable, MAX_LOG_BYTES, MAX_STATUS_BYTES};
use dynplug_loader::error::{CallError, LoadError};
use dynplug_loader::library::PluginLibrary;
use dynplug_loader::locks::lock;
use dynplug_loader::sealed::SealedImage;
use dynplug_sdk::host::Host;
use dynplug_sdk::Level;

pub use super::fds::{LIBRARY_FD, MAX_PROBE_BATCH, WORKER_FD};

/// The result frame for an answer: the text in the frame, or, when it is large and the
/// shared region holds it, in the region with only its length in the frame.
fn answer_frame(
    call: u64,
    status: u8,
    text: &[u8],
    region: Option<&mut Region>,
) -> (Kind, Vec<u8>) {
    let in_region = text.len() > shared::THRESHOLD && region.is_some_and(|r| r.put(text));
    if in_region {
        (
            Kind::ResultShared,
            result_body(call, status, &(text.len() as u64).to_le_bytes()),
        )
    } else {
        (Kind::Result, result_body(call, status, text))
    }
}

/// An answer as the plugin's buffer left it: framed already, or to be written to the
/// shared region after the call.
enum Answer {
    Frame((Kind, Vec<u8>)),
    Later(Vec<u8>),
}

/// The result frame for a failed call.
fn error_frame(call: u64, error: CallError, region: Option<&mut Region>) -> (Kind, Vec<u8>) {
    let (status, text) = match error {
        CallError::Panicked { message, .. } => (RESULT_PANIC, message),
        CallError::InvalidOutput { .. } => (RESULT_INVALID_OUTPUT, String::new()),
        CallError::Failed { message, .. } | CallError::Crashed { message, .. } => {
            (RESULT_ERROR, message)
        }
        other => (RESULT_ERROR, other.to_string()),
    };
    answer_frame(call, status, text.as_bytes(), region)
}

/// The host services of a worker: each becomes a frame to the daemon, which applies
/// the same limits as to an in-process plugin; `emit` waits for the daemon's answer
/// (its budget is the plugin's, shared by every worker), so the plugin gets the answer
/// it would get in process; `cancelled` looks for the daemon's [`Kind::Cancel`]
/// without blocking. A context kept past its call never reaches this host (the
/// context is closed when the call returns), so every frame it sends carries the call
/// in flight.
struct ChannelHost<'a> {
    channel: &'a UnixStream,
    call: u64,
    cancelled: AtomicBool,
    /// One exchange at a time (a frame, or an event and its answer), whichever plugin
    /// thread makes it.
    channel_lock: Mutex<()>,
}

/// Largest frame the daemon sends during a call (a cancel or an event's answer).
const DURING_CALL_FRAME: usize = 64;

impl ChannelHost<'_> {
    fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.channel_lock)
    }

    fn send(&self, call: HostCall<'_>) -> bool {
        let frame = call.frame(self.call);
        let _one = self.exclusive();
        (&*self.channel).write_all(&frame).is_ok()
    }

    /// Reads the daemon's answer to the event just sent, noting a cancel that comes
    /// first. Anything else (or a closed channel) reads as dropped.
    fn emit_answer(&self) -> bool {
        loop {
            let Ok((kind, body)) = read_frame(&mut &*self.channel, DURING_CALL_FRAME) else {
                return false;
            };
            match kind {
                Kind::Cancel if body == self.call.to_le_bytes() => {
                    self.cancelled.store(true, Ordering::Release);
                }
                Kind::EmitAck => {
                    return split_emit_ack(&body)
                        .is_some_and(|(call, published)| call == self.call && published)
                }
                _ => return false,
            }
        }
    }
}

/// Bytes of a cancel frame: header and call id.
const CANCEL_FRAME: usize = 5 + REQUEST_HEAD;

impl Host for ChannelHost<'_> {
    fn log(&self, level: Level, message: &str) {
        let end = message.len().min(MAX_LOG_BYTES);
        self.send(HostCall::Log(level as u32, &message.as_bytes()[..end]));
    }

    fn progress(&self, fraction: f64, text: &str) {
        let end = text.len().min(MAX_STATUS_BYTES);
        self.send(HostCall::Progress(fraction, &text.as_bytes()[..end]));
    }

    fn cancelled(&self) -> bool {
        if self.cancelled.load(Ordering::Acquire) {
            return true;
        }
        let _one = self.exclusive();
        let mut frame = [0u8; CANCEL_FRAME];
        let fd = self.channel.as_raw_fd();
        // SAFETY: a non-blocking peek into a buffer of the given size.
        let n = unsafe {
            libc::recv(
                fd,
                frame.as_mut_ptr().cast(),
                frame.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let expected = super::protocol::encode(Kind::Cancel, &self.call.to_le_bytes());
        if usize::try_from(n) == Ok(CANCEL_FRAME) && frame[..] == expected[..] {
            // SAFETY: consumes the frame just peeked, into the same buffer.
            unsafe {
                libc::recv(
                    fd,
                    frame.as_mut_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            self.cancelled.store(true, Ordering::Release);
        }
        self.cancelled.load(Ordering::Acquire)
    }

    fn emit(&self, event: &str, payload: &str) -> bool {
        // What the daemon would refuse by its name or size is refused here, by the
        // same rule, without a round trip.
        if !event_acceptable(event, payload) {
            return false;
        }
        let frame = HostCall::Emit(event.as_bytes(), payload.as_bytes()).frame(self.call);
        let _one = self.exclusive();
        (&*self.channel).write_all(&frame).is_ok() && self.emit_answer()
    }
}

/// Loads the plugin from the sealed image the daemon handed over on `fd` (`path` names
/// it in messages) and creates its instance. The daemon judged the file (owner, mode,
/// signature) when it made the image; the image cannot have changed since, whatever
/// happened to the path.
fn load(
    fd: i32,
    path: &Path,
) -> Result<(Arc<PluginLibrary>, dynplug_loader::library::Instance), LoadError> {
    // SAFETY: the daemon starts workers and probes with one image on each descriptor
    // from LIBRARY_FD on, and nothing else in this process owns them.
    let image = unsafe { SealedImage::inherited(fd, path) }?;
    PluginLibrary::load(path, &image)
        .map(Arc::new)
        .and_then(|lib| lib.instantiate().map(|i| (lib, i)))
}

/// What a worker or probe says about the plugin it loaded.
fn hello_of(library: &PluginLibrary, sandbox: Option<SandboxReport>, shared: bool) -> Hello {
    Hello {
        name: library.name().to_owned(),
        version: library.version().to_owned(),
        description: library.description().to_owned(),
        abi_version: library.abi_version(),
        service: library.is_service(),
        sandbox,
        shared,
    }
}

/// The exit code of a worker or probe started without a sandbox description it can
/// read: it loads nothing.
pub const NO_SANDBOX_EXIT: i32 = 4;

/// Reads the sandbox description the daemon put in the environment and confines this
/// process by it (reading allowed of `target`). Fails closed: without a description
/// that parses, nothing is confined and nothing may be loaded.
fn confine_from_env(target: &Path) -> Result<SandboxReport, String> {
    let spec = std::env::var(SPEC_ENV);
    std::env::remove_var(SPEC_ENV);
    let spec: Spec = spec
        .map_err(|_| format!("no sandbox description ({SPEC_ENV} is not set)"))
        .and_then(|json| {
            serde_json::from_str(&json)
                .map_err(|e| format!("the sandbox description ({SPEC_ENV}) does not parse: {e}"))
        })
        .map_err(|why| format!("{why}: refusing to load anything"))?;
    Ok(sandbox::confine(&spec, target))
}

/// Probe mode for many files, `dynplug-worker --probe-batch DIR FILE...`: confined once
/// (reading allowed below DIR), then loads each file in turn and answers a Hello or
/// Failed frame for each, in order. A file that crashes the process ends the batch; the
/// daemon names it (the one after the last answer) and starts another for the rest.
pub fn probe_batch(dir: &Path, files: &[PathBuf]) -> i32 {
    let confined = confine_from_env(dir);
    dynplug_loader::fatal::install();
    // SAFETY: the daemon starts probes with the channel on WORKER_FD and nothing else
    // in this process owns that descriptor.
    let mut channel = unsafe { UnixStream::from_raw_fd(WORKER_FD) };
    let report = match confined {
        Ok(report) => Some(report),
        Err(why) => {
            let _ = write_frame(&mut channel, Kind::Failed, why.as_bytes());
            return NO_SANDBOX_EXIT;
        }
    };
    if files.len() > MAX_PROBE_BATCH {
        return 2;
    }
    for (fd, file) in (LIBRARY_FD..).zip(files) {
        let written = match load(fd, file) {
            Ok((library, _instance)) => {
                let hello = hello_of(&library, report.clone(), false);
                write_frame(&mut channel, Kind::Hello, &hello.encode())
            }
            Err(e) => write_frame(&mut channel, Kind::Failed, e.to_string().as_bytes()),
        };
        if written.is_err() {
            return 3;
        }
    }
    0
}

/// Confines this process as the daemon asked (the sandbox spec in the environment),
/// then loads the plugin from its image and greets the daemon with its metadata and what
/// it runs under (or says why it could not). Returns the channel and the instance, or
/// the exit code to end with.
#[allow(clippy::type_complexity)]
fn load_and_greet(
    path: &Path,
) -> Result<
    (
        UnixStream,
        Hello,
        dynplug_loader::library::Instance,
        Option<Region>,
    ),
    i32,
> {
    let confined = confine_from_env(path);
    dynplug_loader::fatal::install();
    let region = Region::inherited();
    // SAFETY: the daemon starts workers with the channel on WORKER_FD and nothing else
    // in this process owns that descriptor.
    let mut channel = unsafe { UnixStream::from_raw_fd(WORKER_FD) };
    let report = match confined {
        Ok(report) => Some(report),
        Err(why) => {
            let _ = write_frame(&mut channel, Kind::Failed, why.as_bytes());
            return Err(NO_SANDBOX_EXIT);
        }
    };
    let (library, instance) = match load(LIBRARY_FD, path) {
        Ok(pair) => pair,
        Err(e) => {
            let _ = write_frame(&mut channel, Kind::Failed, e.to_string().as_bytes());
            return Err(2);
        }
    };
    let hello = hello_of(&library, report, region.is_some());
    if write_frame(&mut channel, Kind::Hello, &hello.encode()).is_err() {
        return Err(3);
    }
    Ok((channel, hello, instance, region))
}

/// Keeps large blocks the allocator frees for the next call instead of handing them
/// back to the kernel: a worker serving 1 MiB calls otherwise maps and faults in fresh
/// pages for every buffer of every call (a quarter of its time in page faults, by
/// perf). The worker's address space stays bounded by its `memory_limit_mb`.
fn keep_freed_memory() {
    // SAFETY: mallopt only sets tunables of the C allocator; any value is safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Runs a worker for the plugin at `path` until the daemon closes the channel.
/// Returns the process exit code.
pub fn serve(path: &Path) -> i32 {
    let (mut channel, hello, instance, mut region) = match load_and_greet(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    keep_freed_memory();
    let mut reports = super::usage::Throttle::default();
    loop {
        let (kind, body) = match read_frame(&mut channel, super::protocol::MAX_FRAME) {
            Ok(frame) => frame,
            // The daemon closed the channel: a normal end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return 0,
            Err(_) => return 3,
        };
        let Some((call, payload)) = split_request(&body) else {
            return 3;
        };
        // A shared request carries only the length; the input is read in the region.
        let shared = kind == Kind::ExecuteShared;
        let (kind, payload) = if shared {
            let Some(input) =
                shared::shared_len_checked(payload).and_then(|len| region.as_ref()?.borrow(len))
            else {
                return 3;
            };
            (Kind::Execute, input)
        } else {
            (kind, payload)
        };
        let region_room = region.as_ref().map_or(0, Region::len);
        let text = if shared {
            // SAFETY: the region's input was written by the daemon from a Rust `String`
            // (valid UTF-8), and the daemon is the only writer besides this process; it
            // is only handed on to the plugin as bytes. Checking 1 MiB again here cost
            // a tenth of an isolated 1 MiB call (perf).
            Ok(unsafe { std::str::from_utf8_unchecked(payload) })
        } else {
            std::str::from_utf8(payload)
        };
        let outcome = match (kind, text) {
            (_, Err(_)) => Err(CallError::Failed {
                plugin: hello.name.clone(),
                message: "input is not valid UTF-8".into(),
            }),
            (Kind::Execute, Ok(input)) => {
                let host = ChannelHost {
                    channel: &channel,
                    call,
                    cancelled: AtomicBool::new(false),
                    channel_lock: Mutex::new(()),
                };
                // A small answer goes from the plugin's buffer into its frame. A large
                // one is copied out and written to the region once the call is over:
                // the input may still be borrowed from the region until then, and the
                // region is never written while a reference into it lives. The daemon
                // checks the answer is UTF-8 (it must, whatever a worker says).
                instance
                    .execute_borrowed(input, usize::MAX, Some(&host), |out| {
                        Ok(
                            if out.len() > shared::THRESHOLD && out.len() <= region_room {
                                Answer::Later(out.to_vec())
                            } else {
                                Answer::Frame(answer_frame(call, RESULT_OK, out, None))
                            },
                        )
                    })
                    .map(|answer| match answer {
                        Answer::Frame(frame) => frame,
                        Answer::Later(out) => answer_frame(call, RESULT_OK, &out, region.as_mut()),
                    })
            }
            // A cancel that crossed the result of its call: nothing left to cancel.
            (Kind::Cancel, _) => continue,
            (Kind::Configure, Ok(settings)) => instance
                .configure(settings)
                .map(|()| answer_frame(call, RESULT_OK, b"", None)),
            _ => return 3,
        };
        let (kind, frame) = outcome.unwrap_or_else(|e| error_frame(call, e, region.as_mut()));
        // The worker's own figures, for a daemon that cannot read its /proc entry.
        if reports.due() {
            let usage = super::usage::encode(call, super::usage::own());
            if write_frame(&mut channel, Kind::Usage, &usage).is_err() {
                return 3;
            }
        }
        if write_frame(&mut channel, kind, &frame).is_err() {
            return 3;
        }
        let _ = std::io::stdout().flush();
    }
}
