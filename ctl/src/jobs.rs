//! Jobs from the command line: following one to its end (a progress bar on a terminal,
//! Ctrl-C to cancel), listing, showing and cancelling them.

use std::io::{IsTerminal, Write};

use dynplug_dbus::{job_id, job_path, DynplugError, JobProxy};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::client::{Client, CtlError, IntoCtlError, Kind};
use crate::output::{esc, print_stdout, Colour, Output};

/// The path of the job the user named by number or path.
fn resolve(id: &str) -> Result<String, CtlError> {
    job_id(id).map(job_path).ok_or_else(|| {
        CtlError::new(
            Kind::InvalidArgument,
            format!("`{id}` is not a job number or path"),
        )
        .hint("see `dynplugctl jobs`")
    })
}

/// A job proxy; `cached` ones follow PropertiesChanged (for change streams), the
/// others read every property fresh.
async fn proxy(client: &Client, path: &str, cached: bool) -> Result<JobProxy<'static>, CtlError> {
    let cache = if cached {
        zbus::proxy::CacheProperties::Yes
    } else {
        zbus::proxy::CacheProperties::No
    };
    let builder = JobProxy::builder(client.connection())
        .path(path.to_owned())
        .cache_properties(cache);
    client.call(builder.build()).await
}

/// Turns "no such object" into "no such job".
fn no_job(path: &str, e: CtlError) -> CtlError {
    if e.message.contains("Unknown object") || e.message.contains("UnknownObject") {
        let n = job_id(path).unwrap_or_default();
        return CtlError::new(
            Kind::NotFound,
            format!("no job {n} (it never existed, or ended and was forgotten)"),
        )
        .hint("see `dynplugctl jobs`");
    }
    e
}

/// Everything a job shows.
struct Snapshot {
    id: u64,
    plugin: String,
    state: String,
    progress: f64,
    status_text: String,
    output: String,
    error: String,
    error_name: String,
    started_usec: u64,
    finished_usec: u64,
}

async fn snapshot(client: &Client, path: &str) -> Result<Snapshot, CtlError> {
    let job = proxy(client, path, false).await?;
    let read = async {
        Ok::<_, zbus::Error>(Snapshot {
            id: job_id(path).unwrap_or_default(),
            plugin: job.plugin().await?,
            state: job.state().await?,
            progress: job.progress().await?,
            status_text: job.status_text().await?,
            // Readable by the job's owner and root only: others see them empty.
            output: job.output().await.unwrap_or_default(),
            error: job.error().await.unwrap_or_default(),
            error_name: job.error_name().await?,
            started_usec: job.started_usec().await?,
            finished_usec: job.finished_usec().await?,
        })
    };
    client.call(read).await.map_err(|e| no_job(path, e))
}

impl Snapshot {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "plugin": self.plugin, "state": self.state,
            "progress": self.progress, "status_text": self.status_text,
            "output": (self.state == "succeeded").then_some(&self.output),
            "error": (!self.error.is_empty()).then_some(&self.error),
            "error_name": (!self.error_name.is_empty()).then_some(&self.error_name),
            "started_usec": self.started_usec,
            "finished_usec": (self.finished_usec != 0).then_some(self.finished_usec),
        })
    }

    fn progress_text(&self) -> String {
        if self.progress < 0.0 {
            "-".into()
        } else {
            format!("{:.0}%", self.progress * 100.0)
        }
    }

    fn state_colour(&self) -> Colour {
        match self.state.as_str() {
            "succeeded" => Colour::Green,
            "running" => Colour::Yellow,
            _ => Colour::Red,
        }
    }

    /// The job's result: its output, or the error its call would have returned.
    fn result(self, client: &Client) -> Result<String, CtlError> {
        if self.state == "succeeded" {
            return Ok(self.output);
        }
        Err(DynplugError::from_name(&self.error_name, self.error).into_ctl(client.bus()))
    }
}

/// A progress bar on stderr, drawn only on a terminal and never with `--json`.
struct Bar {
    on: bool,
    drawn: bool,
}

impl Bar {
    fn new(out: Output) -> Bar {
        Bar {
            on: !out.json && std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn draw(&mut self, fraction: f64, text: &str) {
        if !self.on || fraction < 0.0 {
            return;
        }
        const WIDTH: usize = 30;
        let filled = ((fraction.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
        let text: String = text.chars().filter(|c| !c.is_control()).take(60).collect();
        let line = format!(
            "\r\x1b[2K[{}{}] {:>3.0}% {text}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            fraction * 100.0
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        self.drawn = true;
    }

    fn note(&mut self, text: &str) {
        if !self.on {
            return;
        }
        let _ = write!(std::io::stderr(), "\r\x1b[2K{text}\n");
        self.drawn = false;
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// What woke the follower.
enum Wake {
    Changed,
    Interrupted,
}

/// Ctrl-C (SIGINT), a closed terminal (SIGHUP) and SIGTERM, listened for from now on:
/// each is an interrupt, and one that comes while nothing waits is kept for the next
/// wait. `--detach` is how to leave a job running.
pub(crate) struct Interrupts {
    signals: [tokio::signal::unix::Signal; 3],
}

impl Interrupts {
    /// Waits for the next interrupt, whichever signal it is.
    async fn recv(&mut self) -> Option<()> {
        let [int, hup, term] = &mut self.signals;
        tokio::select! {
            r = int.recv() => r,
            r = hup.recv() => r,
            r = term.recv() => r,
        }
    }
}

/// Starts listening for interrupts (see [`Interrupts`]).
pub(crate) fn interrupts() -> Result<Interrupts, CtlError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| {
        signal(kind)
            .map_err(|e| CtlError::new(Kind::Failure, format!("cannot listen for interrupts: {e}")))
    };
    Ok(Interrupts {
        signals: [
            listen(SignalKind::interrupt())?,
            listen(SignalKind::hangup())?,
            listen(SignalKind::terminate())?,
        ],
    })
}

/// Follows the job at `path` to its end and returns its output (or the error its call
/// would have returned). Given `cancel_on` (the interrupts of the client that started
/// the job), the first Ctrl-C cancels the job and the second stops waiting; without,
/// Ctrl-C stops following (the job goes on).
pub(crate) async fn follow(
    client: &Client,
    out: Output,
    path: &str,
    cancel_on: Option<Interrupts>,
) -> Result<String, CtlError> {
    let cancel_on_interrupt = cancel_on.is_some();
    let mut interrupts = match cancel_on {
        Some(signal) => signal,
        None => interrupts()?,
    };
    // Subscribe first, then read: no change can fall between the two.
    let watched = proxy(client, path, true).await?;
    let fresh = proxy(client, path, false).await?;
    let (mut finished, mut states, mut progress) = client
        .call(async {
            Ok::<_, zbus::Error>((
                watched.receive_finished().await?,
                watched.receive_state_changed().await,
                watched.receive_progress_changed().await,
            ))
        })
        .await?;
    let mut bar = Bar::new(out);
    let mut interrupted = false;
    loop {
        let state = client
            .call(fresh.state())
            .await
            .map_err(|e| no_job(path, e))?;
        if state != "running" {
            break;
        }
        let wait = async {
            tokio::select! {
                _ = finished.next() => Ok::<_, zbus::Error>(Wake::Changed),
                _ = states.next() => Ok(Wake::Changed),
                Some(_) = progress.next() => Ok(Wake::Changed),
                _ = interrupts.recv() => Ok(Wake::Interrupted),
            }
        };
        match client.call(wait).await? {
            Wake::Changed => {
                let fraction = client.call(fresh.progress()).await?;
                let text = client.call(fresh.status_text()).await?;
                bar.draw(fraction, &esc(&text));
            }
            Wake::Interrupted if cancel_on_interrupt && !interrupted => {
                interrupted = true;
                bar.note("cancelling the job (Ctrl-C again to stop waiting)");
                client.call(fresh.cancel()).await?;
            }
            Wake::Interrupted => {
                bar.clear();
                let message = if cancel_on_interrupt {
                    format!("stopped waiting; {path} is being cancelled")
                } else {
                    format!("stopped following; {path} goes on")
                };
                return Err(CtlError::new(Kind::Cancelled, message));
            }
        }
    }
    bar.clear();
    snapshot(client, path).await?.result(client)
}

/// Prints a job's output as `execute` does: as it is, with a newline added on a
/// terminal.
pub(crate) fn print_output(output: &str) {
    print_stdout(output);
    if !output.ends_with('\n') && std::io::stdout().is_terminal() {
        print_stdout("\n");
    }
}

/// `jobs`.
pub(crate) async fn list(client: &Client, out: Output) -> Result<(), CtlError> {
    let paths = client.call(client.manager.list_jobs()).await?;
    let mut jobs = Vec::with_capacity(paths.len());
    for path in &paths {
        // A job can be forgotten between the listing and the read: skip it.
        match snapshot(client, path.as_str()).await {
            Ok(s) => jobs.push(s),
            Err(e) if e.kind == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if out.json {
        out.json_value(&Value::Array(jobs.iter().map(Snapshot::json).collect()));
        return Ok(());
    }
    if jobs.is_empty() {
        print_stdout("no jobs\n");
        return Ok(());
    }
    let rows: Vec<Vec<(String, Colour)>> = jobs
        .iter()
        .map(|j| {
            let detail = if j.error.is_empty() {
                j.status_text.clone()
            } else {
                j.error.clone()
            };
            vec![
                (j.id.to_string(), Colour::None),
                (j.plugin.clone(), Colour::None),
                (j.state.clone(), j.state_colour()),
                (j.progress_text(), Colour::None),
                (detail, Colour::None),
            ]
        })
        .collect();
    out.table(&["ID", "PLUGIN", "STATE", "PROGRESS", "STATUS"], &rows);
    Ok(())
}

/// `job ID [--wait]`.
pub(crate) async fn show(
    client: &Client,
    out: Output,
    id: &str,
    wait: bool,
) -> Result<(), CtlError> {
    let path = resolve(id)?;
    if wait {
        let output = follow(client, out, &path, None).await?;
        if out.json {
            out.json_value(&snapshot(client, &path).await?.json());
        } else {
            print_output(&output);
        }
        return Ok(());
    }
    let s = snapshot(client, &path).await?;
    if out.json {
        out.json_value(&s.json());
        return Ok(());
    }
    let mut text = format!(
        "job {} ({path})\n  plugin:   {}\n  state:    {}\n  progress: {}\n",
        s.id,
        esc(&s.plugin),
        out.paint(&s.state, s.state_colour()),
        s.progress_text()
    );
    if !s.status_text.is_empty() {
        text.push_str(&format!("  status:   {}\n", esc(&s.status_text)));
    }
    if !s.error.is_empty() {
        text.push_str(&format!(
            "  error:    {}\n",
            out.paint(&s.error, Colour::Red)
        ));
    }
    if s.state == "succeeded" {
        // The output as it is, as `execute` prints it, but on the one line it was given.
        text.push_str(&format!("  output:   {}\n", esc(&s.output)));
    }
    print_stdout(&text);
    Ok(())
}

/// `cancel ID`.
pub(crate) async fn cancel(client: &Client, out: Output, id: &str) -> Result<(), CtlError> {
    let path = resolve(id)?;
    let job = proxy(client, &path, false).await?;
    // Perhaps another user's job: the daemon may ask polkit (jobs.cancel-any).
    client
        .act::<_, ()>(job.inner(), "Cancel", &())
        .await
        .map_err(|e| no_job(&path, e))?;
    if out.json {
        out.json_value(&json!({"job": path, "cancel_requested": true}));
    } else {
        print_stdout(&format!("cancellation requested for {path}\n"));
    }
    Ok(())
}

/// The plugin job `id` runs, if the job is still known.
pub(crate) async fn plugin_of(client: &Client, id: u64) -> Option<String> {
    let path = dynplug_dbus::job_path(id);
    let job = proxy(client, &path, false).await.ok()?;
    job.plugin().await.ok()
}

/// A change of some job, as `watch` shows it.
pub(crate) struct JobChange {
    id: u64,
    /// The job's plugin (looked up once per job by `watch`).
    pub(crate) plugin: Option<String>,
    state: Option<String>,
    progress: Option<f64>,
    status_text: Option<String>,
    finished: bool,
}

impl JobChange {
    /// The job's number.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether this is the job's end.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The JSON fields of a `job` event: only what changed (no nulls).
    pub(crate) fn json(&self) -> Value {
        let mut fields = serde_json::Map::new();
        fields.insert("id".into(), json!(self.id));
        if let Some(p) = &self.plugin {
            fields.insert("plugin".into(), json!(p));
        }
        if let Some(s) = &self.state {
            fields.insert("state".into(), json!(s));
        }
        if let Some(p) = self.progress {
            fields.insert("progress".into(), json!(p));
        }
        if let Some(t) = &self.status_text {
            fields.insert("status_text".into(), json!(t));
        }
        fields.insert("finished".into(), json!(self.finished));
        Value::Object(fields)
    }

    /// One line for a person.
    pub(crate) fn text(&self) -> String {
        let mut parts = vec![match &self.plugin {
            Some(plugin) => format!("job {} ({plugin}):", self.id),
            None => format!("job {}:", self.id),
        }];
        if let Some(state) = &self.state {
            parts.push(if self.finished {
                format!("finished {state}")
            } else {
                state.clone()
            });
        }
        if let Some(p) = self.progress.filter(|p| *p >= 0.0) {
            parts.push(format!("{:.0}%", p * 100.0));
        }
        if let Some(t) = self.status_text.as_ref().filter(|t| !t.is_empty()) {
            parts.push(t.clone());
        }
        parts.join(" ")
    }
}

/// Every job's property changes and `Finished` signals, as they happen.
pub(crate) async fn changes(
    conn: &zbus::Connection,
) -> zbus::Result<impl futures_util::Stream<Item = Option<JobChange>>> {
    use std::collections::HashMap;
    use zbus::OwnedVariant as OwnedValue;
    let properties = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace(dynplug_dbus::JOBS_PATH)
        .build()?;
    let finished = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.dynplug.Job")
        .member("Finished")
        .path_namespace(dynplug_dbus::JOBS_PATH)
        .build()?;
    let properties = zbus::MessageStream::for_match_rule(properties, conn, None).await?;
    let finished = zbus::MessageStream::for_match_rule(finished, conn, None).await?;
    let parse = |message: zbus::Result<zbus::Message>| {
        let message = message.ok()?;
        let header = message.header();
        let id = job_id(header.path()?.as_str())?;
        if header.member()?.as_str() == "Finished" {
            let state: String = message.body().deserialize().ok()?;
            return Some(JobChange {
                id,
                plugin: None,
                state: Some(state),
                progress: None,
                status_text: None,
                finished: true,
            });
        }
        let (_, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
            message.body().deserialize().ok()?;
        let text = |key: &str| {
            changed
                .get(key)
                .and_then(|v| String::try_from(v.clone()).ok())
        };
        // An ended state is said by `Finished`, once; other properties (Output, Error,
        // FinishedUsec...) are not shown here.
        let state = text("State").filter(|s| s == "running");
        let progress = changed
            .get("Progress")
            .and_then(|v| f64::try_from(v.clone()).ok());
        let status_text = text("StatusText");
        if state.is_none() && progress.is_none() && status_text.is_none() {
            return None;
        }
        Some(JobChange {
            id,
            plugin: None,
            state,
            progress,
            status_text,
            finished: false,
        })
    };
    Ok(futures_util::stream::select(properties, finished).map(parse))
}
