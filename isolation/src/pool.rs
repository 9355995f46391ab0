//! The daemon side: a small pool of worker processes for one isolated plugin.
//!
//! Each worker serves one call at a time, so a crash fails only the call it was
//! serving. A dead worker is replaced on demand after an exponential backoff; too many
//! crashes in a short window quarantine the plugin. A call past its timeout kills its
//! worker (the whole process group). Workers die with the daemon (PR_SET_PDEATHSIG),
//! also when it is killed with SIGKILL.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::time::Instant;

mod idle;

use self::idle::IdleWorkers;
use super::child;
pub use super::child::ResourceLimits;
use super::protocol::{
    emit_ack, encode, header, new_call_id, request_head, split_result, Hello, HostCall, Kind,
    RESULT_ERROR, RESULT_HEAD, RESULT_INVALID_OUTPUT, RESULT_OK, RESULT_PANIC,
};
use super::sandbox::{SandboxReport, Spec};
use super::shared;
use crate::CallServices;
use dynplug_loader::call_rules::{CANCEL_GRACE, MAX_EVENT_NAME, MAX_EVENT_PAYLOAD};
use dynplug_loader::error::CallError;
use dynplug_loader::locks::lock;
use dynplug_loader::sealed::SealedImage;
use dynplug_sdk::Level;

/// How a pool runs its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The program to start (dynplugd, run as `dynplug-worker --worker PATH`).
    pub program: PathBuf,
    /// The plugin library's path (for messages and the sandbox).
    pub library: PathBuf,
    /// The sealed image of the library that every worker loads: the bytes judged when
    /// the file was scanned, whatever its path holds later.
    pub image: Option<Arc<SealedImage>>,
    /// Expected plugin name (the worker must report the same).
    pub name: String,
    /// Number of worker processes (concurrent calls).
    pub workers: usize,
    /// Limits per worker.
    pub limits: ResourceLimits,
    /// Crashes within [`CRASH_WINDOW`] that quarantine the plugin.
    pub crash_limit: u32,
    /// Largest answer accepted, in bytes; a larger one is refused before it is read.
    pub max_output: usize,
    /// Size of the shared region for large payloads (0: none; payloads then travel in
    /// frames).
    pub shared_bytes: usize,
    /// The sandbox each worker enters.
    pub sandbox: Spec,
}

/// The window over which crashes are counted.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests up to this size are sent in one write.
const COPY_BELOW: usize = 64 * 1024;

/// Why an isolated call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The call itself failed (plugin error, panic, invalid output).
    #[error(transparent)]
    Call(CallError),
    /// The worker died during the call; the message names the signal or exit code.
    #[error("{0}")]
    Crashed(String),
    /// The call exceeded its timeout; the worker was killed.
    #[error("the call timed out; its worker was killed")]
    Timeout,
    /// The plugin is quarantined after repeated crashes.
    #[error("{0}")]
    Quarantined(String),
    /// The answer exceeded the output limit (in bytes); the worker was killed.
    #[error("the answer exceeded max_output_bytes ({0} bytes)")]
    OutputTooLarge(usize),
    /// The worker sent a frame it should not have; it was killed.
    #[error("the worker broke the protocol: {0}")]
    Protocol(String),
    /// A worker could not be started (or the plugin failed to load in it).
    #[error("cannot start a worker: {0}")]
    Start(String),
    /// The caller cancelled and the plugin did not return within the grace period;
    /// the worker was killed.
    #[error("the call was cancelled; its worker was killed")]
    Cancelled,
}

/// A pool call that failed: why, and whether this failure put the plugin in
/// quarantine (the reason, once, when it did).
#[derive(Debug)]
pub struct PoolFailure {
    /// Why the call failed.
    pub error: PoolError,
    /// The quarantine this failure began, if it began one.
    pub quarantined: Option<String>,
}

impl From<PoolError> for PoolFailure {
    fn from(error: PoolError) -> Self {
        PoolFailure {
            error,
            quarantined: None,
        }
    }
}

/// Largest host-call frame body (log, progress, event) accepted from a worker.
const HOST_FRAME_LIMIT: usize = MAX_EVENT_PAYLOAD + MAX_EVENT_NAME + 64;

/// Counters of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Worker processes alive now.
    pub running: usize,
    /// Workers started after the first (restarts after crashes, timeouts, reconfigure).
    pub restarts: u64,
    /// Worker crashes so far.
    pub crashes: u64,
    /// The last crash, described.
    pub last_crash: Option<String>,
    /// Why the plugin is quarantined, if it is.
    pub quarantined: Option<String>,
    /// PIDs of live workers.
    pub pids: Vec<u32>,
    /// CPU time and memory of the live workers, summed.
    pub usage: crate::resources::Usage,
    /// What the most recently started worker runs under.
    pub sandbox: Option<SandboxReport>,
}

struct Worker {
    child: Child,
    stream: UnixStream,
    generation: u64,
    /// The shared payload region, if one could be made.
    region: Option<shared::Region>,
    /// Whether the worker mapped it (said in its hello).
    shared: bool,
    /// Its latest report of its own CPU time and memory (see `super::usage`).
    reported: Option<crate::resources::Usage>,
}

impl Worker {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the worker's process group; dropping the worker reaps it.
    fn kill_group(&self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group the worker leads (setpgid in pre_exec).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }

    /// Kills the worker's process group and reaps it.
    async fn kill(mut self) {
        self.kill_group();
        let _ = self.child.kill().await;
    }

    /// Describes how the worker ended (it is dead or dying: its channel closed).
    async fn reap(mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        match status {
            Ok(Ok(s)) => describe_exit(s),
            _ => {
                self.kill().await;
                "worker stopped answering and was killed".into()
            }
        }
    }

    /// Reads one frame a worker may send, refusing (before reading the body) a result
    /// longer than `limit`, a host call longer than its own limit, and kinds only the
    /// daemon sends.
    async fn recv(&mut self, limit: usize) -> Result<(Kind, Vec<u8>), Failure> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).await?;
        let (kind, len) = header(head)?;
        match kind {
            Kind::Usage if len != super::usage::BODY => {
                return Err(Failure::Protocol(format!("a usage frame of {len} bytes")))
            }
            Kind::Usage => {}
            Kind::Log | Kind::Progress | Kind::Emit if len > HOST_FRAME_LIMIT => {
                return Err(Failure::Protocol(format!(
                    "a {kind:?} frame of {len} bytes"
                )))
            }
            Kind::Log | Kind::Progress | Kind::Emit => {}
            Kind::Execute
            | Kind::ExecuteShared
            | Kind::Configure
            | Kind::Cancel
            | Kind::EmitAck => return Err(Failure::Protocol(format!("unexpected {kind:?} frame"))),
            _ if len > limit.saturating_add(RESULT_HEAD) => return Err(Failure::TooLarge),
            _ => {}
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        Ok((kind, body))
    }

    /// Peeks one byte without blocking: what `recv` returns.
    fn peek(&self) -> isize {
        let mut byte = 0u8;
        // SAFETY: a non-blocking peek of one byte into a valid buffer.
        unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        }
    }

    /// Whether the worker sent anything nobody asked for (checked after a result).
    fn has_unasked_bytes(&self) -> bool {
        self.peek() > 0
    }

    /// Whether a read would not block: data, the end of the channel, or an error —
    /// all breaches for a worker that waits for a call.
    fn readable_now(&self) -> bool {
        self.peek() >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
    }

    /// Sends a request under a fresh call id and reads its result, which must carry the
    /// same id and be the only thing the worker sent.
    async fn request(
        &mut self,
        kind: Kind,
        payload: &[u8],
        plugin: &str,
        limit: usize,
        host: Option<&dyn CallServices>,
    ) -> Result<Result<String, CallError>, Failure> {
        let call = new_call_id();
        let use_region = self.shared && payload.len() > shared::THRESHOLD;
        let shared = use_region && self.region.as_mut().is_some_and(|r| r.put(payload));
        if shared {
            // The input is in the shared region: the frame carries only its length.
            let mut head = request_head(Kind::ExecuteShared, call, 8);
            head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            self.stream.write_all(&head).await?;
        } else if payload.len() <= COPY_BELOW {
            // One write for a small request (one wake-up of the worker).
            let mut head = request_head(kind, call, payload.len());
            head.extend_from_slice(payload);
            self.stream.write_all(&head).await?;
        } else {
            // A large payload is written as it is after the header, without a copy.
            self.stream
                .write_all(&request_head(kind, call, payload.len()))
                .await?;
            self.stream.write_all(payload).await?;
        }
        let (kind, mut body) = self.result_of(call, limit, host).await?;
        let Some((id, status, rest)) =
            split_result(&body).filter(|_| matches!(kind, Kind::Result | Kind::ResultShared))
        else {
            return Err(Failure::Protocol(format!("unexpected {kind:?} frame")));
        };
        if id != call {
            return Err(Failure::Protocol(
                "a result for another call (forged or stale)".into(),
            ));
        }
        if self.has_unasked_bytes() {
            return Err(Failure::Protocol("data after the result".into()));
        }
        let bytes = if kind == Kind::ResultShared {
            let region = self
                .region
                .as_ref()
                .filter(|_| self.shared)
                .ok_or_else(|| Failure::Protocol("a shared result without a region".into()))?;
            let len = shared::shared_len_checked(rest)
                .ok_or_else(|| Failure::Protocol("a malformed shared result".into()))?;
            if len > limit {
                return Err(Failure::TooLarge);
            }
            region
                .take(len)
                .ok_or_else(|| Failure::Protocol("a shared result beyond the region".into()))?
        } else {
            // Reuse the frame's buffer for the text: a large answer is held once.
            body.drain(..RESULT_HEAD);
            body
        };
        let plugin = plugin.to_owned();
        // An answer must be UTF-8 (checked here, once: the worker does not); a message
        // is shown as best it can be.
        let text = match (status, String::from_utf8(bytes)) {
            (_, Ok(text)) => text,
            (RESULT_OK, Err(_)) => return Ok(Err(CallError::InvalidOutput { plugin })),
            (_, Err(e)) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(match status {
            RESULT_OK => Ok(text),
            RESULT_PANIC => Err(CallError::Panicked {
                plugin,
                message: text,
            }),
            RESULT_INVALID_OUTPUT => Err(CallError::InvalidOutput { plugin }),
            RESULT_ERROR => Err(CallError::Failed {
                plugin,
                message: text,
            }),
            other => return Err(Failure::Protocol(format!("unknown result status {other}"))),
        })
    }
}

impl Worker {
    /// Reads frames until the result of `call`, handing the plugin's host calls to
    /// `host` (without one, a host call breaks the protocol). When the caller cancels,
    /// the worker is told; if it has not answered [`CANCEL_GRACE`] later, the call ends
    /// in [`Failure::Cancelled`].
    async fn result_of(
        &mut self,
        call: u64,
        limit: usize,
        host: Option<&dyn CallServices>,
    ) -> Result<(Kind, Vec<u8>), Failure> {
        let fd = self.stream.as_raw_fd();
        let cancel = host.map(|h| Arc::clone(h.cancel_flag()));
        let mut grace_at: Option<Instant> = None;
        loop {
            let (kind, body) = {
                let recv = self.recv(limit);
                tokio::pin!(recv);
                loop {
                    tokio::select! {
                        frame = &mut recv => break frame?,
                        () = async { cancel.as_ref().expect("checked").cancelled().await },
                            if cancel.is_some() && grace_at.is_none() => {
                            if !send_cancel(fd, call) {
                                // Not written whole: the channel would carry a torn
                                // frame, so the worker is given up on now.
                                return Err(Failure::Cancelled);
                            }
                            grace_at = Some(Instant::now() + CANCEL_GRACE);
                        }
                        () = tokio::time::sleep_until(grace_at.unwrap_or_else(Instant::now)),
                            if grace_at.is_some() => return Err(Failure::Cancelled),
                    }
                }
            };
            if kind == Kind::Usage {
                match super::usage::decode(&body) {
                    Some((id, usage)) if id == call => {
                        self.reported = Some(usage);
                        continue;
                    }
                    _ => return Err(Failure::Protocol("a usage frame for another call".into())),
                }
            }
            if !matches!(kind, Kind::Log | Kind::Progress | Kind::Emit) {
                return Ok((kind, body));
            }
            let (Some(host), Some((id, request))) = (host, HostCall::decode(kind, &body)) else {
                return Err(Failure::Protocol(format!("unexpected {kind:?} frame")));
            };
            if id != call {
                return Err(Failure::Protocol(format!(
                    "a {kind:?} frame for another call"
                )));
            }
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            match request {
                HostCall::Log(level, line) => host.log(Level::from_abi(level), &text(line)),
                HostCall::Progress(fraction, status) => host.progress(fraction, &text(status)),
                HostCall::Emit(event, payload) => {
                    // The worker waits for the answer: the one its plugin gets.
                    let published = host.emit(&text(event), &text(payload));
                    self.stream.write_all(&emit_ack(call, published)).await?;
                }
            }
        }
    }
}

/// Tells a worker its caller gave up on `call`, without blocking. True when the frame
/// was written whole; false when it was not written at all or only in part (a worker
/// whose socket buffer is full is not reading: it is not waited for, and a torn frame
/// must never be followed by another).
fn send_cancel(fd: i32, call: u64) -> bool {
    let frame = encode(Kind::Cancel, &call.to_le_bytes());
    // SAFETY: a non-blocking send of a buffer we own on the worker's socket.
    let sent = unsafe {
        libc::send(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).is_ok_and(|n| n == frame.len())
}

/// Why an exchange with a worker broke off.
#[derive(Debug)]
enum Failure {
    /// The channel failed or closed: the worker died (or is dying).
    Io(std::io::Error),
    /// The worker sent a frame it should not have.
    Protocol(String),
    /// The answer is longer than the limit.
    TooLarge,
    /// The caller cancelled and the grace period passed.
    Cancelled,
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::InvalidData {
            Failure::Protocol(e.to_string())
        } else {
            Failure::Io(e)
        }
    }
}

/// A signal's name, for messages.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU (CPU time limit)",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({sig})")
}

/// How a worker or probe process ended, in words.
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("worker killed by {}", signal_name(sig)),
        (Some(code), None) => format!("worker exited with status {code}"),
        (None, None) => "worker ended".into(),
    }
}

#[derive(Default)]
struct Health {
    crashes: VecDeque<Instant>,
    total_crashes: u64,
    last_crash: Option<String>,
    backoff: Duration,
    not_before: Option<Instant>,
    quarantined: Option<String>,
    started: u64,
}

/// The worker pool of one isolated plugin.
pub struct WorkerPool {
    config: PoolConfig,
    settings: Mutex<String>,
    generation: AtomicU64,
    idle: IdleWorkers,
    slots: Arc<Semaphore>,
    health: Mutex<Health>,
    busy_pids: Mutex<Vec<u32>>,
    sandbox: Mutex<Option<SandboxReport>>,
    /// What each worker last said of its own CPU time and memory.
    reports: super::usage::Reports,
}

/// A worker's pid listed among a pool's busy ones while this value lives.
struct BusyPid<'a> {
    pids: &'a Mutex<Vec<u32>>,
    pid: u32,
}

impl<'a> BusyPid<'a> {
    fn new(pids: &'a Mutex<Vec<u32>>, pid: u32) -> Self {
        lock(pids).push(pid);
        BusyPid { pids, pid }
    }
}

impl Drop for BusyPid<'_> {
    fn drop(&mut self) {
        lock(self.pids).retain(|p| *p != self.pid);
    }
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A pool; workers start on first use.
    pub fn new(config: PoolConfig, settings_json: String) -> Self {
        let workers = config.workers.max(1);
        let idle = IdleWorkers::new(&config.name);
        WorkerPool {
            config,
            settings: Mutex::new(settings_json),
            generation: AtomicU64::new(0),
            idle,
            slots: Arc::new(Semaphore::new(workers)),
            health: Mutex::new(Health::default()),
            busy_pids: Mutex::new(Vec::new()),
            sandbox: Mutex::new(None),
            reports: super::usage::Reports::default(),
        }
    }

    /// How this pool runs its workers.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Counters and state.
    pub fn status(&self) -> PoolStatus {
        let idle = self.idle.pids();
        let busy = lock(&self.busy_pids).clone();
        let h = lock(&self.health);
        let mut pids = idle;
        pids.extend(busy);
        PoolStatus {
            running: pids.len(),
            restarts: h
                .started
                .saturating_sub(self.config.workers.max(1) as u64)
                .min(h.started),
            crashes: h.total_crashes,
            last_crash: h.last_crash.clone(),
            quarantined: h.quarantined.clone(),
            usage: self.reports.usage_of(&pids),
            pids,
            sandbox: lock(&self.sandbox).clone(),
        }
    }

    /// Quarantines the plugin (e.g. restored from the state file).
    pub fn quarantine(&self, reason: String) {
        lock(&self.health).quarantined = Some(reason);
    }

    /// Lifts a quarantine and forgets past crashes.
    pub fn release(&self) {
        let mut h = lock(&self.health);
        h.quarantined = None;
        h.crashes.clear();
        h.backoff = Duration::ZERO;
        h.not_before = None;
    }

    /// New settings: idle workers are retired, new ones get the new settings; calls in
    /// flight finish on their worker.
    pub async fn reconfigure(&self, settings_json: String) {
        *lock(&self.settings) = settings_json;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stop_idle().await;
    }

    /// Kills the idle workers (disable, shutdown).
    pub async fn stop_idle(&self) {
        for w in self.idle.drain() {
            w.kill().await;
        }
    }

    async fn spawn(&self) -> Result<Worker, PoolError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| PoolError::Start(e.to_string()))?;
        // Large socket buffers: a 1 MiB input or output then crosses in a few system
        // calls instead of dozens of wake-ups of both processes.
        for sock in [ours.as_raw_fd(), theirs.as_raw_fd()] {
            for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                let size: libc::c_int = 4 * 1024 * 1024;
                // SAFETY: setsockopt on a socket we own, with a properly sized int.
                unsafe {
                    libc::setsockopt(
                        sock,
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
            }
        }
        // A region for large payloads; without one (no memfd here), frames carry them.
        let region = (self.config.shared_bytes > shared::THRESHOLD)
            .then(|| shared::Region::create(self.config.shared_bytes))
            .and_then(|r| {
                r.map_err(|e| tracing::debug!(error = %e, "no shared payload region"))
                    .ok()
            });
        let mut cmd = Command::from(child::command(
            &self.config.program,
            "--worker",
            &[self.config.library.as_path()],
            theirs.as_raw_fd(),
            self.config.limits,
            &self.config.sandbox,
            region.as_ref().map(shared::Region::fd),
            &self
                .config
                .image
                .iter()
                .map(|i| i.fd().as_raw_fd())
                .collect::<Vec<_>>(),
        ));
        cmd.kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            PoolError::Start(format!(
                "cannot start worker {}: {e}",
                self.config.program.display()
            ))
        })?;
        drop(theirs);
        ours.set_nonblocking(true)
            .map_err(|e| PoolError::Start(e.to_string()))?;
        let stream = UnixStream::from_std(ours).map_err(|e| PoolError::Start(e.to_string()))?;
        let mut worker = Worker {
            child,
            stream,
            generation: self.generation.load(Ordering::Acquire),
            region,
            shared: false,
            reported: None,
        };
        lock(&self.health).started += 1;
        match tokio::time::timeout(START_TIMEOUT, self.handshake(&mut worker)).await {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => {
                worker.kill().await;
                Err(e)
            }
            Err(_) => {
                worker.kill().await;
                Err(PoolError::Start("worker did not start in time".into()))
            }
        }
    }

    async fn handshake(&self, worker: &mut Worker) -> Result<(), PoolError> {
        const HELLO_LIMIT: usize = 64 * 1024;
        let (kind, body) = match worker.recv(HELLO_LIMIT).await {
            Ok(frame) => frame,
            Err(Failure::Io(_)) => {
                let mut status = String::from("worker ended during start");
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await
                {
                    status = describe_exit(s);
                }
                return Err(PoolError::Crashed(format!(
                    "{status} while loading the plugin"
                )));
            }
            Err(_) => return Err(PoolError::Start("worker sent a malformed hello".into())),
        };
        let hello = match kind {
            Kind::Failed => {
                return Err(PoolError::Start(
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            }
            Kind::Hello => Hello::decode(&body).map_err(PoolError::Start)?,
            _ => return Err(PoolError::Start("worker sent no hello".into())),
        };
        if hello.name != self.config.name {
            return Err(PoolError::Start(format!(
                "worker loaded plugin `{}`, expected `{}` (was the file replaced?)",
                hello.name, self.config.name
            )));
        }
        // Fail closed: a worker that does not run under every layer asked for is not
        // given any call (the caller and the plugin's status say which layer, and how
        // to relax it).
        super::sandbox::check_report(&self.config.sandbox.policy, hello.sandbox.as_ref())
            .map_err(|why| PoolError::Start(why.replace("NAME", &self.config.name)))?;
        worker.shared = hello.shared && worker.region.is_some();
        *lock(&self.sandbox) = hello.sandbox;
        let settings = lock(&self.settings).clone();
        match worker
            .request(
                Kind::Configure,
                settings.as_bytes(),
                &self.config.name,
                HELLO_LIMIT,
                None,
            )
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(PoolError::Start(format!("configure: {e}"))),
            Err(Failure::Io(e)) => {
                Err(PoolError::Crashed(format!("worker died in configure: {e}")))
            }
            Err(Failure::Protocol(why)) => Err(PoolError::Protocol(why)),
            Err(Failure::TooLarge) => Err(PoolError::OutputTooLarge(HELLO_LIMIT)),
            Err(Failure::Cancelled) => Err(PoolError::Cancelled),
        }
    }

    /// Records a crash; returns the quarantine reason if this crash tipped it over.
    fn record_crash(&self, why: &str) -> Option<String> {
        let mut h = lock(&self.health);
        let now = Instant::now();
        h.total_crashes += 1;
        h.last_crash = Some(why.to_owned());
        h.crashes.push_back(now);
        while h
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            h.crashes.pop_front();
        }
        h.backoff = if h.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (h.backoff * 2).min(MAX_BACKOFF)
        };
        h.not_before = Some(now + h.backoff);
        if h.quarantined.is_none() && h.crashes.len() as u32 >= self.config.crash_limit {
            let reason = format!(
                "quarantined after {} crashes within {}s (last: {why})",
                h.crashes.len(),
                CRASH_WINDOW.as_secs()
            );
            h.quarantined = Some(reason.clone());
            return Some(reason);
        }
        None
    }

    fn take_idle(&self) -> Option<Worker> {
        self.idle.take(self.generation.load(Ordering::Acquire))
    }

    /// Runs one call in a worker, within `timeout` (waiting for a free worker and for a
    /// restart backoff included). `Ok((result, quarantined_now))`.
    pub async fn call(
        &self,
        input: &str,
        timeout: Duration,
        host: &dyn CallServices,
    ) -> Result<String, PoolFailure> {
        if let Some(reason) = lock(&self.health).quarantined.clone() {
            return Err(PoolError::Quarantined(reason).into());
        }
        let deadline = Instant::now() + timeout;
        let _slot = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| PoolFailure::from(PoolError::Timeout))?
            .map_err(|_| PoolFailure::from(PoolError::Start("pool closed".into())))?;
        let mut worker = match self.take_idle() {
            Some(w) => w,
            None => {
                let not_before = lock(&self.health).not_before;
                if let Some(at) = not_before {
                    if at > deadline {
                        return Err(PoolError::Crashed(
                            "worker is restarting after a crash".into(),
                        )
                        .into());
                    }
                    tokio::time::sleep_until(at).await;
                }
                match tokio::time::timeout_at(deadline, self.spawn()).await {
                    Ok(Ok(w)) => w,
                    Ok(Err(PoolError::Crashed(why))) => {
                        let q = self.record_crash(&why);
                        return Err(PoolFailure {
                            error: PoolError::Crashed(why),
                            quarantined: q,
                        });
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(PoolError::Timeout.into()),
                }
            }
        };
        // Listed as busy for as long as this call holds the worker, however it ends
        // (a dropped call included: its worker dies with it and the pid may be reused).
        let pid = worker.pid();
        let busy = pid.map(|pid| BusyPid::new(&self.busy_pids, pid));
        let outcome = tokio::time::timeout_at(
            deadline,
            worker.request(
                Kind::Execute,
                input.as_bytes(),
                &self.config.name,
                self.config.max_output,
                Some(host),
            ),
        )
        .await;
        drop(busy);
        match outcome {
            Ok(Ok(result)) => {
                if let (Some(p), Some(usage)) = (pid, worker.reported.take()) {
                    self.reports.set(p, usage);
                }
                {
                    let mut h = lock(&self.health);
                    h.backoff = Duration::ZERO;
                    h.not_before = None;
                }
                self.idle.park(worker);
                result.map_err(|e| PoolError::Call(e).into())
            }
            Ok(Err(Failure::Io(_))) => {
                let why = worker.reap().await;
                let q = self.record_crash(&why);
                Err(PoolFailure {
                    error: PoolError::Crashed(why),
                    quarantined: q,
                })
            }
            Ok(Err(Failure::Protocol(why))) => {
                worker.kill().await;
                tracing::warn!(plugin = %self.config.name, error = %why, "worker broke the protocol and was killed");
                Err(PoolError::Protocol(why).into())
            }
            Ok(Err(Failure::TooLarge)) => {
                worker.kill().await;
                Err(PoolError::OutputTooLarge(self.config.max_output).into())
            }
            Ok(Err(Failure::Cancelled)) => {
                worker.kill().await;
                Err(PoolError::Cancelled.into())
            }
            Err(_) => {
                worker.kill().await;
                Err(PoolError::Timeout.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a fake worker (a Python script speaking the protocol on fd 3),
    //! so each way a worker can misbehave is produced on demand. The script's
    //! "library" argument picks its behaviour.

    use super::*;
    use crate::cancel::Cancel;
    use crate::sandbox::{SandboxPolicy, Spec};

    const FAKE_WORKER: &str = r#"#!/usr/bin/python3
import json, os, signal, struct, sys, time
mode = os.path.basename(sys.argv[2])
def read_exact(n):
    b = b""
    while len(b) < n:
        c = os.read(3, n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b
def send(kind, body):
    os.write(3, struct.pack("<IB", len(body) + 1, kind) + body)
region = None
try:
    import mmap
    region = mmap.mmap(4, 0)
except Exception:
    pass
hello = {"name": "fake", "version": "1.0.0", "description": "", "abi_version": 1,
         "service": False, "shared": region is not None}
send(1, struct.pack("<I", 4) + json.dumps(hello).encode())
while True:
    n, kind = struct.unpack("<IB", read_exact(5))
    body = read_exact(n - 1)
    call, payload = body[:8], body[8:]
    if kind == 6:
        (n,) = struct.unpack("<Q", payload)
        payload = bytes(region[:n])
        if payload.startswith(b"bogus"):
            send(7, call + b"\0" + struct.pack("<Q", len(region) + 1))
            continue
        payload = payload.upper()
        region[:len(payload)] = payload
        send(7, call + b"\0" + struct.pack("<Q", len(payload)))
        continue
    if kind == 3 and payload == b"forge":
        call = b"\0" * 8
    if kind == 3 and payload == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == 3 and payload == b"hang":
        time.sleep(60)
    if kind == 11:
        continue
    if kind == 3 and payload == b"chatty":
        send(8, call + b"\3" + b"a line")
        send(9, call + struct.pack("<d", 0.5) + b"half")
        send(10, call + struct.pack("<H", 4) + b"tick" + b"{}")
        n, k = struct.unpack("<IB", read_exact(5))
        ack = read_exact(n - 1)
        answer = b"published" if (k, ack) == (12, call + b"\0") else b"dropped"
        payload = b"chatty " + answer
    if kind == 3 and payload == b"idlewrite":
        send(4, call + b"\0" + payload)
        time.sleep(0.05)
        send(8, call + b"\3" + b"late")
        continue
    if kind == 3 and payload == b"hugelog":
        send(8, call + b"\3" + b"x" * (200 * 1024))
    if kind == 3 and payload == b"stray":
        send(8, b"\1" * 8 + b"\3" + b"not yours")
    if kind == 3 and payload == b"cancelable":
        n, k = struct.unpack("<IB", read_exact(5))
        if k == 11 and read_exact(n - 1) == call:
            send(4, call + b"\1" + b"stopped")
            continue
    if kind == 3 and payload == b"usage":
        send(13, call + struct.pack("<QQ", 1234, 5678))
    if kind == 3 and payload == b"forgeusage":
        send(13, b"\1" * 8 + struct.pack("<QQ", 0, 0))
    if kind == 3 and payload == b"badutf8":
        payload = b"\xff\xfe"
    if kind == 3 and payload == b"big":
        payload = b"x" * 5000
    send(4, call + b"\0" + payload)
"#;

    fn pool(dir: &std::path::Path, crash_limit: u32) -> WorkerPool {
        pool_with(dir, crash_limit, 1000, 0)
    }

    fn pool_with(
        dir: &std::path::Path,
        crash_limit: u32,
        max_output: usize,
        shared_bytes: usize,
    ) -> WorkerPool {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("fake-worker");
        std::fs::write(&program, FAKE_WORKER).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let off = SandboxPolicy {
            identity: false,
            pid_namespace: false,
            landlock: false,
            seccomp: false,
            ..SandboxPolicy::default()
        };
        let config = PoolConfig {
            program,
            library: dir.join("fake.so"),
            image: None,
            name: "fake".into(),
            workers: 1,
            limits: ResourceLimits {
                address_space: None,
                cpu_seconds: None,
                open_files: 64,
            },
            crash_limit,
            max_output,
            shared_bytes,
            sandbox: Spec {
                policy: off,
                identity: Err("not switching".into()),
                daemon_pid: std::process::id(),
            },
        };
        WorkerPool::new(config, "{}".into())
    }

    const T: Duration = Duration::from_secs(10);

    /// The services of one call, recorded; events are accepted when `publishes`.
    #[derive(Default)]
    struct FakeHost {
        cancel: Arc<Cancel>,
        record: dynplug_sdk::Recorder,
        publishes: bool,
    }

    impl dynplug_sdk::host::Host for FakeHost {
        fn log(&self, level: Level, message: &str) {
            self.record.log(level, message)
        }
        fn progress(&self, fraction: f64, text: &str) {
            self.record.report_progress(fraction, text)
        }
        fn cancelled(&self) -> bool {
            self.cancel.is_cancelled()
        }
        fn emit(&self, event: &str, payload: &str) -> bool {
            self.record.emit(event, payload);
            self.publishes
        }
    }

    impl CallServices for FakeHost {
        fn cancel_flag(&self) -> &Arc<Cancel> {
            &self.cancel
        }
    }

    fn host() -> FakeHost {
        FakeHost::default()
    }

    fn cancelled_by(cancel: Arc<Cancel>) -> FakeHost {
        FakeHost {
            cancel,
            ..FakeHost::default()
        }
    }

    #[tokio::test]
    async fn host_calls_reach_the_host_and_cancellation_reaches_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        let chatty = FakeHost {
            publishes: true,
            ..FakeHost::default()
        };
        assert_eq!(
            pool.call("chatty", T, &chatty).await.unwrap(),
            "chatty published"
        );
        assert_eq!(
            chatty.record.progress().last(),
            Some(&(0.5, "half".to_owned()))
        );
        assert!(chatty
            .record
            .events()
            .contains(&("tick".to_owned(), "{}".to_owned())));
        // The worker gets the host's answer to its event: without an outlet, dropped.
        assert_eq!(
            pool.call("chatty", T, &host()).await.unwrap(),
            "chatty dropped"
        );
        // A host call larger than any the daemon takes breaks the protocol, refused from
        // its header.
        match pool.call("hugelog", T, &host()).await {
            Err(PoolFailure {
                error: PoolError::Protocol(why),
                quarantined: None,
            }) => assert!(why.contains("Log frame"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A host call for another call id breaks the protocol.
        assert!(matches!(
            pool.call("stray", T, &host()).await,
            Err(PoolFailure {
                error: PoolError::Protocol(_),
                quarantined: None
            })
        ));
        // Cancelled: the worker is told and answers.
        let cancel = Cancel::new();
        let cancelled = cancelled_by(Arc::clone(&cancel));
        let call = pool.call("cancelable", T, &cancelled);
        tokio::pin!(call);
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut call)
            .await
            .is_err());
        cancel.cancel();
        match call.await {
            Err(PoolFailure {
                error: PoolError::Call(CallError::Failed { message, .. }),
                quarantined: None,
            }) => {
                assert_eq!(message, "stopped")
            }
            other => panic!("{other:?}"),
        }
        // A worker that ignores the cancellation is killed after the grace period.
        let cancel = Cancel::new();
        cancel.cancel();
        let ignored = cancelled_by(cancel);
        let began = Instant::now();
        assert!(matches!(
            pool.call("hang", T, &ignored).await,
            Err(PoolFailure {
                error: PoolError::Cancelled,
                quarantined: None
            })
        ));
        assert!(began.elapsed() < T);
        assert_eq!(pool.call("after", T, &host()).await.unwrap(), "after");
    }

    #[test]
    fn a_cancel_frame_is_written_whole_or_reported_unsent() {
        use std::io::Read;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(send_cancel(ours.as_raw_fd(), 7));
        let mut got = vec![0u8; encode(Kind::Cancel, &7u64.to_le_bytes()).len()];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(got, encode(Kind::Cancel, &7u64.to_le_bytes()));
        // A peer that does not read: fill the buffer until nothing more fits.
        ours.set_nonblocking(true).unwrap();
        let chunk = [0u8; 4096];
        while std::io::Write::write(&mut &ours, &chunk).is_ok() {}
        while std::io::Write::write(&mut &ours, &[0u8]).is_ok() {}
        assert!(!send_cancel(ours.as_raw_fd(), 8));
    }

    #[tokio::test]
    async fn a_dropped_call_leaves_no_busy_pid_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        let h = host();
        let mut call = Box::pin(pool.call("hang", T, &h));
        // Poll the call until its worker is running it.
        let deadline = Instant::now() + T;
        while pool.status().pids.is_empty() {
            assert!(
                Instant::now() < deadline,
                "no worker took the call within {T:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(10), &mut call).await;
        }
        let pid = pool.status().pids[0];
        drop(call);
        assert!(
            !pool.status().pids.contains(&pid),
            "the pid of a dropped call's worker is still listed"
        );
    }

    #[tokio::test]
    async fn answers_and_refuses_what_a_worker_must_not_send() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        assert_eq!(pool.call("hi", T, &host()).await.unwrap(), "hi");
        assert_eq!(pool.status().running, 1);
        // A result for another call: the worker is killed and only this call fails.
        match pool.call("forge", T, &host()).await {
            Err(PoolFailure {
                error: PoolError::Protocol(why),
                quarantined: None,
            }) => assert!(why.contains("another call"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An answer over the limit is refused from its header.
        assert!(matches!(
            pool.call("big", T, &host()).await,
            Err(PoolFailure {
                error: PoolError::OutputTooLarge(1000),
                quarantined: None
            })
        ));
        // An answer that is not UTF-8 is refused here (the worker does not check).
        assert!(matches!(
            pool.call("badutf8", T, &host()).await,
            Err(PoolFailure {
                error: PoolError::Call(CallError::InvalidOutput { .. }),
                quarantined: None
            })
        ));
        // Neither counts as a crash, and the next call gets a fresh worker.
        assert_eq!(pool.call("again", T, &host()).await.unwrap(), "again");
        assert_eq!(pool.status().crashes, 0);
        assert_eq!(
            PoolError::OutputTooLarge(1000).to_string(),
            "the answer exceeded max_output_bytes (1000 bytes)"
        );
    }

    #[tokio::test]
    async fn workers_report_their_usage_and_a_forged_report_kills_only_its_worker() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        assert_eq!(pool.call("usage", T, &host()).await.unwrap(), "usage");
        let pid = pool.status().pids[0];
        let reported = crate::resources::Usage {
            cpu_usec: 1234,
            rss_bytes: 5678,
        };
        assert_eq!(pool.reports.get(pid), Some(reported));
        // What the pool shows is the report, also where /proc could be read.
        assert_eq!(pool.status().usage, reported);
        // A report for another call is a forged frame: the worker is killed, only its
        // call fails, and the next caller is served by a new worker.
        match pool.call("forgeusage", T, &host()).await {
            Err(PoolFailure {
                error: PoolError::Protocol(why),
                quarantined: None,
            }) => assert!(why.contains("usage"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.call("next", T, &host()).await.unwrap(), "next");
        let status = pool.status();
        assert_ne!(status.pids, vec![pid]);
        assert_eq!(
            pool.reports.get(pid),
            None,
            "the dead worker's report is gone"
        );
        assert_eq!(status.crashes, 0);
    }

    #[tokio::test]
    async fn a_worker_that_writes_while_idle_is_killed_then() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        assert_eq!(
            pool.call("idlewrite", T, &host()).await.unwrap(),
            "idlewrite"
        );
        let pid = pool.status().pids[0];
        // It writes 50 ms after its answer; the watch kills it while it is idle.
        let deadline = Instant::now() + T;
        while !pool.status().pids.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the idle worker that wrote was not killed within {T:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next caller is unaffected and gets a fresh worker; no crash is counted.
        assert_eq!(pool.call("next", T, &host()).await.unwrap(), "next");
        let status = pool.status();
        assert_ne!(status.pids, vec![pid]);
        assert_eq!(status.crashes, 0);
    }

    #[tokio::test]
    async fn crashes_are_named_and_quarantine_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 2);
        match pool.call("crash", T, &host()).await {
            Err(PoolFailure {
                error: PoolError::Crashed(why),
                quarantined: None,
            }) => assert!(why.contains("SIGSEGV"), "{why}"),
            other => panic!("{other:?}"),
        }
        match pool.call("crash", T, &host()).await {
            Err(PoolFailure {
                error: PoolError::Crashed(_),
                quarantined: Some(quarantine),
            }) => {
                assert!(quarantine.contains("2 crashes"), "{quarantine}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pool.call("hi", T, &host()).await,
            Err(PoolFailure {
                error: PoolError::Quarantined(_),
                quarantined: None
            })
        ));
        let status = pool.status();
        assert_eq!((status.crashes, status.quarantined.is_some()), (2, true));
        pool.release();
        assert_eq!(pool.call("hi", T, &host()).await.unwrap(), "hi");
    }

    #[tokio::test]
    async fn large_payloads_go_through_the_shared_region_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_with(dir.path(), 100, 1 << 20, 1 << 20);
        let input = "a".repeat(200_000);
        // The fake worker upper-cases what it finds in the region.
        assert_eq!(
            pool.call(&input, T, &host()).await.unwrap(),
            "A".repeat(200_000)
        );
        // A shared result claiming more than the region holds: refused, worker killed.
        let bogus = format!("bogus{}", "x".repeat(100_000));
        assert!(matches!(
            pool.call(&bogus, T, &host()).await,
            Err(PoolFailure {
                error: PoolError::OutputTooLarge(_) | PoolError::Protocol(_),
                quarantined: None
            })
        ));
        assert_eq!(pool.call("small", T, &host()).await.unwrap(), "small");
    }

    #[tokio::test]
    async fn a_call_past_its_timeout_kills_its_worker() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 100);
        assert_eq!(pool.call("warm", T, &host()).await.unwrap(), "warm");
        let pid = pool.status().pids[0];
        assert!(matches!(
            pool.call("hang", Duration::from_millis(300), &host()).await,
            Err(PoolFailure {
                error: PoolError::Timeout,
                quarantined: None
            })
        ));
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "the hung worker was killed"
        );
        assert_eq!(pool.call("after", T, &host()).await.unwrap(), "after");
    }
}
