//! Jobs: plugin calls that run in the background, report progress, can be cancelled,
//! and are kept for a while after they end so their callers can collect the result.
//!
//! The table is bounded: at most `max_running` jobs run at once (one more is refused
//! with [`ManagerError::TooManyJobs`]), and at most `max_finished` ended jobs are kept,
//! each for `keep_finished`; the oldest ended job makes room first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::error::ManagerError;
use crate::events::Event;
use dynplug_isolation::cancel::Cancel;
use dynplug_loader::locks::lock;

/// Progress changes are published at most this often per job (state changes at once).
pub const JOB_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// The plugin is working on it.
    Running,
    /// The plugin answered; the output is in [`JobView::output`].
    Succeeded,
    /// The call failed; the reason is in [`JobView::error`].
    Failed,
    /// Someone cancelled it before it ended.
    Cancelled,
}

impl JobState {
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Who started a job: only they (or an administrator) may cancel it or read what it
/// answered, and each owner has its share of the running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobOwner {
    /// A D-Bus caller, by user id.
    Uid(u32),
    /// A REST API client, by the identity of the token it presented (a digest of the
    /// token, never the token); `None` when the API has no tokens.
    Rest(Option<u64>),
}

impl JobOwner {
    /// Whether this owner is root, who has a reserve of its own.
    pub fn is_root(self) -> bool {
        self == JobOwner::Uid(0)
    }
}

/// The running jobs kept for root alone: an eighth of `max_running`, at least one
/// (none when `max_running` is 1).
pub fn root_reserve(max_running: usize) -> usize {
    (max_running / 8).max(1).min(max_running.saturating_sub(1))
}

/// Bounds of the job table (config `jobs:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Jobs running at once.
    pub max_running: usize,
    /// Jobs one owner (a D-Bus user, a REST token) may have running at once; root is
    /// not held to it.
    pub max_running_per_user: usize,
    /// Ended jobs kept.
    pub max_finished: usize,
    /// How long an ended job is kept.
    pub keep_finished: Duration,
}

/// A snapshot of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job's number.
    pub id: u64,
    /// The plugin it calls.
    pub plugin: String,
    /// Where it is.
    pub state: JobState,
    /// 0..=1, or -1 when the plugin has not said.
    pub progress: f64,
    /// The plugin's last status text.
    pub status_text: String,
    /// The output, once it succeeded.
    pub output: String,
    /// Why it failed or was cancelled, once it did.
    pub error: Option<ManagerError>,
    /// When it started, microseconds since the epoch.
    pub started_usec: u64,
    /// When it ended, microseconds since the epoch (0 while running).
    pub finished_usec: u64,
    /// Who started it.
    pub owner: JobOwner,
}

#[derive(Debug)]
struct Data {
    view: JobView,
    published: Option<Instant>,
    ended: Option<Instant>,
}

/// One job.
#[derive(Debug)]
pub struct Job {
    id: u64,
    /// Raised when the caller gives up: a cancellation, or the call's timeout.
    cancel: Arc<Cancel>,
    /// Whether someone asked to cancel the job (the timeout raises only `cancel`).
    requested: std::sync::atomic::AtomicBool,
    /// Whether its owner asked to forget it: no longer shown to anyone, dropped from
    /// the table as soon as it has ended (until then it keeps its place in the limits).
    forgotten: std::sync::atomic::AtomicBool,
    data: Mutex<Data>,
    events: broadcast::Sender<Event>,
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Job {
    /// The job's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its cancellation flag, shared with the call.
    pub fn cancel_flag(&self) -> &Arc<Cancel> {
        &self.cancel
    }

    /// A snapshot.
    pub fn view(&self) -> JobView {
        lock(&self.data).view.clone()
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        lock(&self.data).view.state == JobState::Running
    }

    /// Records progress (clamped to 0..=1; negative means unknown) and publishes it if
    /// the last publication is older than [`JOB_PROGRESS_INTERVAL`].
    pub fn set_progress(&self, fraction: f64, text: &str) {
        let mut d = lock(&self.data);
        if d.view.state != JobState::Running {
            return;
        }
        d.view.progress = if fraction.is_nan() || fraction < 0.0 {
            -1.0
        } else {
            fraction.min(1.0)
        };
        if d.view.status_text != text {
            d.view.status_text = text.to_owned();
        }
        let now = Instant::now();
        if d.published
            .is_none_or(|at| now - at >= JOB_PROGRESS_INTERVAL)
        {
            d.published = Some(now);
            drop(d);
            let _ = self.events.send(Event::JobChanged {
                id: self.id,
                finished: false,
            });
        }
    }

    /// Asks the job to stop; returns whether this is the first request.
    fn request_cancel(&self) -> bool {
        let first = !self.requested.swap(true, Ordering::AcqRel);
        self.cancel.cancel();
        first
    }

    /// Records the end of the call; a job whose cancellation was asked for ends
    /// cancelled whatever the call returned.
    fn finish(&self, result: Result<String, ManagerError>) {
        let mut d = lock(&self.data);
        let v = &mut d.view;
        match result {
            _ if self.requested.load(Ordering::Acquire) => {
                v.state = JobState::Cancelled;
                v.error = Some(ManagerError::Cancelled(v.plugin.clone()));
            }
            Ok(output) => {
                v.state = JobState::Succeeded;
                v.progress = 1.0;
                v.output = output;
            }
            Err(e) => {
                v.state = JobState::Failed;
                v.error = Some(e);
            }
        }
        v.finished_usec = now_usec();
        d.ended = Some(Instant::now());
        drop(d);
        let _ = self.events.send(Event::JobChanged {
            id: self.id,
            finished: true,
        });
    }
}

/// The table of jobs.
#[derive(Debug)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next: AtomicU64,
    limits: Mutex<JobLimits>,
    events: broadcast::Sender<Event>,
}

impl Jobs {
    /// An empty table publishing on `events`.
    pub fn new(limits: JobLimits, events: broadcast::Sender<Event>) -> Jobs {
        Jobs {
            jobs: Mutex::default(),
            next: AtomicU64::new(1),
            limits: Mutex::new(limits),
            events,
        }
    }

    /// Applies new bounds (on reload); running jobs are never cut short.
    pub fn set_limits(&self, limits: JobLimits) {
        *lock(&self.limits) = limits;
        self.prune();
    }

    /// Registers a new running job for `owner`, within the shares: no owner but root
    /// beyond `max_running_per_user`, all owners but root together within
    /// `max_running` less root's reserve ([`root_reserve`]), and root within
    /// `max_running`. So no one caller, nor all callers but root together, can keep
    /// root (or, by the per-user share, each other) from starting a job.
    pub fn start(&self, plugin: &str, owner: JobOwner) -> Result<Arc<Job>, ManagerError> {
        self.prune();
        let limits = *lock(&self.limits);
        let mut jobs = lock(&self.jobs);
        let running: Vec<JobOwner> = jobs
            .values()
            .filter(|j| j.is_running())
            .map(|j| lock(&j.data).view.owner)
            .collect();
        if running.len() >= limits.max_running {
            return Err(ManagerError::TooManyJobs(limits.max_running));
        }
        if !owner.is_root() {
            let own = running.iter().filter(|o| **o == owner).count();
            if own >= limits.max_running_per_user {
                return Err(ManagerError::TooManyJobsForCaller(
                    limits.max_running_per_user,
                ));
            }
            let others = running.iter().filter(|o| !o.is_root()).count();
            let shared = limits.max_running - root_reserve(limits.max_running);
            if others >= shared {
                return Err(ManagerError::TooManyJobs(shared));
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id,
            cancel: Cancel::new(),
            requested: std::sync::atomic::AtomicBool::new(false),
            forgotten: std::sync::atomic::AtomicBool::new(false),
            data: Mutex::new(Data {
                view: JobView {
                    id,
                    plugin: plugin.to_owned(),
                    state: JobState::Running,
                    progress: -1.0,
                    status_text: String::new(),
                    output: String::new(),
                    error: None,
                    started_usec: now_usec(),
                    finished_usec: 0,
                    owner,
                },
                published: None,
                ended: None,
            }),
            events: self.events.clone(),
        });
        jobs.insert(id, Arc::clone(&job));
        drop(jobs);
        let _ = self.events.send(Event::JobAdded { id });
        Ok(job)
    }

    /// Ends `job` with `result`, then drops ended jobs past their retention.
    pub fn finish(&self, job: &Job, result: Result<String, ManagerError>) {
        job.finish(result);
        self.prune();
    }

    /// The job with number `id` (a forgotten one is not found).
    pub fn get(&self, id: u64) -> Result<Arc<Job>, ManagerError> {
        self.prune();
        lock(&self.jobs)
            .get(&id)
            .filter(|j| !j.forgotten.load(Ordering::Acquire))
            .cloned()
            .ok_or(ManagerError::JobNotFound(id))
    }

    /// The number the next job will get: every job ever started has a smaller one, and
    /// numbers are never used twice.
    pub fn next_id(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Every job, oldest first (forgotten ones aside).
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.prune();
        lock(&self.jobs)
            .values()
            .filter(|j| !j.forgotten.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// How many jobs run now, by plugin (only plugins with a running job).
    pub fn running_by_plugin(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for job in lock(&self.jobs).values() {
            let data = lock(&job.data);
            if data.view.state == JobState::Running {
                *counts.entry(data.view.plugin.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Asks job `id` to stop, on behalf of `by`: its owner, or an administrator
    /// (`admin`). Returns the job; cancelling an ended job changes nothing.
    pub fn cancel(&self, id: u64, by: JobOwner, admin: bool) -> Result<Arc<Job>, ManagerError> {
        let job = self.get(id)?;
        let owner = lock(&job.data).view.owner;
        if !admin && owner != by {
            return Err(ManagerError::AccessDenied(format!(
                "job {id} was started by someone else; only they or root may cancel it"
            )));
        }
        if job.is_running() && job.request_cancel() {
            tracing::info!(job = id, "job cancellation requested");
        }
        Ok(job)
    }

    /// Cancels job `id` as [`Jobs::cancel`] does, on the same authority, and forgets it:
    /// from now on it is not found, and it leaves the table as soon as it has ended —
    /// a running one keeps its place in the limits until then, so forgetting a job
    /// frees no share early. Returns the job as it was.
    pub fn forget(&self, id: u64, by: JobOwner, admin: bool) -> Result<Arc<Job>, ManagerError> {
        let job = self.cancel(id, by, admin)?;
        job.forgotten.store(true, Ordering::Release);
        self.prune();
        Ok(job)
    }

    /// Asks every running job to stop (at shutdown).
    pub fn cancel_all(&self) {
        for job in lock(&self.jobs).values() {
            job.request_cancel();
        }
    }

    /// Forgets ended jobs past `keep_finished`, and the oldest beyond `max_finished`.
    pub fn prune(&self) {
        let limits = *lock(&self.limits);
        let now = Instant::now();
        let mut removed = Vec::new();
        {
            let mut jobs = lock(&self.jobs);
            let mut ended: Vec<(Instant, u64, bool)> = jobs
                .values()
                .filter_map(|j| {
                    let forgotten = j.forgotten.load(Ordering::Acquire);
                    lock(&j.data).ended.map(|at| (at, j.id, forgotten))
                })
                .collect();
            ended.sort();
            let over = ended.len().saturating_sub(limits.max_finished);
            for (i, (at, id, forgotten)) in ended.into_iter().enumerate() {
                if forgotten || i < over || now - at >= limits.keep_finished {
                    jobs.remove(&id);
                    removed.push(id);
                }
            }
        }
        for id in removed {
            let _ = self.events.send(Event::JobRemoved { id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_running: usize, max_finished: usize, keep: Duration) -> Jobs {
        let (events, _) = broadcast::channel(64);
        Jobs::new(
            JobLimits {
                max_running,
                max_running_per_user: max_running,
                max_finished,
                keep_finished: keep,
            },
            events,
        )
    }

    #[test]
    fn a_forgotten_job_is_gone_at_once_but_keeps_its_share_until_it_ends() {
        let jobs = table(1, 8, Duration::from_secs(60));
        let me = JobOwner::Uid(1000);
        let running = jobs.start("p", me).unwrap();
        // Only its owner (or an administrator) may forget it.
        assert!(matches!(
            jobs.forget(running.id(), JobOwner::Uid(1001), false),
            Err(ManagerError::AccessDenied(_))
        ));
        jobs.forget(running.id(), me, false).unwrap();
        assert!(running.cancel_flag().is_cancelled());
        assert!(matches!(
            jobs.get(running.id()),
            Err(ManagerError::JobNotFound(_))
        ));
        assert!(jobs.list().is_empty());
        // Still running: its place is not free for another job.
        assert!(jobs.start("p", me).is_err());
        jobs.finish(&running, Err(ManagerError::Cancelled("p".into())));
        let next = jobs.start("p", me).unwrap();
        // An ended job forgotten leaves the table at once.
        jobs.finish(&next, Ok("done".into()));
        jobs.forget(next.id(), me, false).unwrap();
        assert!(jobs.list().is_empty());
        assert!(matches!(
            jobs.forget(next.id(), me, false),
            Err(ManagerError::JobNotFound(_))
        ));
    }

    #[test]
    fn running_jobs_are_bounded_and_ended_ones_kept_within_limits() {
        let jobs = table(2, 1, Duration::from_secs(60));
        let root = JobOwner::Uid(0);
        let a = jobs.start("p", root).unwrap();
        let b = jobs.start("p", root).unwrap();
        assert_eq!(
            jobs.start("p", root).unwrap_err(),
            ManagerError::TooManyJobs(2)
        );
        jobs.finish(&a, Ok("out".into()));
        let v = a.view();
        assert_eq!(
            (v.state, v.output.as_str(), v.progress),
            (JobState::Succeeded, "out", 1.0)
        );
        assert!(v.finished_usec >= v.started_usec);
        let c = jobs.start("p", root).unwrap();
        jobs.finish(&b, Err(ManagerError::NotFound("p".into())));
        // Only one ended job is kept: the oldest (a) made room for b.
        assert_eq!(
            jobs.get(a.id()).unwrap_err(),
            ManagerError::JobNotFound(a.id())
        );
        assert_eq!(jobs.get(b.id()).unwrap().view().state, JobState::Failed);
        assert_eq!(jobs.list().len(), 2);
        jobs.finish(&c, Ok(String::new()));
    }

    #[test]
    fn no_caller_takes_the_others_share_nor_root_s_reserve() {
        let (events, _) = broadcast::channel(64);
        let jobs = Jobs::new(
            JobLimits {
                max_running: 16,
                max_running_per_user: 4,
                max_finished: 100,
                keep_finished: Duration::from_secs(60),
            },
            events,
        );
        let nobody = JobOwner::Uid(65534);
        for _ in 0..4 {
            jobs.start("p", nobody).unwrap();
        }
        // nobody's share is full; everyone else still starts jobs.
        assert_eq!(
            jobs.start("p", nobody).unwrap_err(),
            ManagerError::TooManyJobsForCaller(4)
        );
        jobs.start("p", JobOwner::Uid(1000)).unwrap();
        jobs.start("p", JobOwner::Rest(Some(7))).unwrap();
        jobs.start("p", JobOwner::Rest(None)).unwrap();
        // Every caller but root together: up to 16 less root's reserve of 2.
        for uid in 2000..2007 {
            jobs.start("p", JobOwner::Uid(uid)).unwrap();
        }
        assert_eq!(root_reserve(16), 2);
        assert_eq!(
            jobs.start("p", JobOwner::Uid(3000)).unwrap_err(),
            ManagerError::TooManyJobs(14)
        );
        // Root's reserve holds; root is not held to the per-user share.
        jobs.start("p", JobOwner::Uid(0)).unwrap();
        jobs.start("p", JobOwner::Uid(0)).unwrap();
        assert_eq!(
            jobs.start("p", JobOwner::Uid(0)).unwrap_err(),
            ManagerError::TooManyJobs(16)
        );
        assert_eq!(
            (root_reserve(1), root_reserve(2), root_reserve(64)),
            (0, 1, 8)
        );
    }

    #[test]
    fn ended_jobs_expire() {
        let jobs = table(4, 10, Duration::ZERO);
        let a = jobs.start("p", JobOwner::Rest(None)).unwrap();
        jobs.finish(&a, Ok(String::new()));
        assert!(jobs.list().is_empty());
    }

    #[test]
    fn only_the_owner_or_an_admin_cancels_and_the_job_ends_cancelled() {
        let jobs = table(4, 10, Duration::from_secs(60));
        let a = jobs.start("p", JobOwner::Uid(1000)).unwrap();
        assert!(matches!(
            jobs.cancel(a.id(), JobOwner::Uid(1001), false),
            Err(ManagerError::AccessDenied(_))
        ));
        assert!(matches!(
            jobs.cancel(a.id(), JobOwner::Rest(None), false),
            Err(ManagerError::AccessDenied(_))
        ));
        assert!(!a.cancel_flag().is_cancelled());
        jobs.cancel(a.id(), JobOwner::Uid(1000), false).unwrap();
        assert!(a.cancel_flag().is_cancelled());
        jobs.finish(&a, Ok("late".into()));
        let v = a.view();
        assert_eq!(v.state, JobState::Cancelled);
        assert_eq!(v.error, Some(ManagerError::Cancelled("p".into())));
        let b = jobs.start("p", JobOwner::Uid(1000)).unwrap();
        jobs.cancel(b.id(), JobOwner::Uid(0), true).unwrap();
        assert!(b.cancel_flag().is_cancelled());
        // A call that timed out raised only the call's flag: the job failed, with the
        // timeout's error, and was not cancelled.
        let c = jobs.start("p", JobOwner::Uid(1000)).unwrap();
        c.cancel_flag().cancel();
        jobs.finish(&c, Err(ManagerError::ShuttingDown));
        assert_eq!(c.view().state, JobState::Failed);
    }

    #[test]
    fn progress_is_clamped_and_published_at_a_bounded_rate() {
        let (events, mut rx) = broadcast::channel(64);
        let jobs = Jobs::new(
            JobLimits {
                max_running: 4,
                max_running_per_user: 4,
                max_finished: 4,
                keep_finished: Duration::from_secs(60),
            },
            events,
        );
        let a = jobs.start("p", JobOwner::Rest(None)).unwrap();
        for i in 0..100 {
            a.set_progress(f64::from(i) / 50.0, "working");
        }
        let v = a.view();
        assert_eq!((v.progress, v.status_text.as_str()), (1.0, "working"));
        a.set_progress(f64::NAN, "");
        assert_eq!(a.view().progress, -1.0);
        let mut changes = 0;
        while let Ok(e) = rx.try_recv() {
            changes += usize::from(matches!(
                e,
                Event::JobChanged {
                    finished: false,
                    ..
                }
            ));
        }
        assert_eq!(changes, 1, "101 updates within 100 ms publish once");
    }
}
