//! One function per command. Each talks to the daemon only through [`Client`].

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dynplug_dbus::{PluginDetails, PluginRow};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::client::{Client, CtlError, IntoCtlError, Kind};
use crate::output::{esc, print_stdout, Colour, Output};

fn row_json(r: &PluginRow) -> Value {
    json!({"name": r.name, "version": r.version, "description": r.description, "enabled": r.enabled, "loaded": r.loaded, "path": r.path})
}

/// `list`. Files that failed to load are listed with the reason.
pub(crate) async fn list(client: &Client, out: Output) -> Result<(), CtlError> {
    let rows = client.call(client.manager.list_plugins()).await?;
    // Why each row that is not loaded is not (one GetPlugin each; loaded rows need none).
    let mut reasons = Vec::with_capacity(rows.len());
    for r in &rows {
        reasons.push(if r.loaded {
            None
        } else {
            Some(client.call(client.manager.get_plugin(&r.name)).await?)
        });
    }
    if out.json {
        let rows = rows
            .iter()
            .zip(&reasons)
            .map(|(r, d)| {
                let mut row = row_json(r);
                let error = d
                    .as_ref()
                    .and_then(|d| d.error.clone())
                    .filter(|e| !e.is_empty());
                row["error"] = json!(error);
                row
            })
            .collect();
        out.json_value(&Value::Array(rows));
        return Ok(());
    }
    let mut table = Vec::with_capacity(rows.len());
    for (r, details) in rows.iter().zip(reasons) {
        let (state, colour, note) = match details {
            None => ("loaded".to_owned(), Colour::Green, r.description.clone()),
            Some(d) => {
                let state = d.state.unwrap_or_default();
                let colour = if state == "failed" {
                    Colour::Red
                } else {
                    Colour::Yellow
                };
                let error = d.error.unwrap_or_default();
                let note = if error.is_empty() {
                    r.description.clone()
                } else {
                    error
                };
                (state, colour, note)
            }
        };
        let enabled = if r.enabled {
            ("yes", Colour::None)
        } else {
            ("no", Colour::Yellow)
        };
        let note_colour = if state == "failed" {
            Colour::Red
        } else {
            Colour::None
        };
        table.push(vec![
            (r.name.clone(), Colour::None),
            (r.version.clone(), Colour::None),
            (enabled.0.to_owned(), enabled.1),
            (state, colour),
            (note, note_colour),
        ]);
    }
    out.table(
        &[
            "NAME",
            "VERSION",
            "ENABLED",
            "STATE",
            "DESCRIPTION / REASON",
        ],
        &table,
    );
    Ok(())
}

/// The details in display order, as (D-Bus key, value); keys the daemon did not send
/// are left out.
fn detail_fields(d: &PluginDetails) -> Vec<(&'static str, Value)> {
    let fields = [
        ("Name", json!(d.name)),
        ("Version", json!(d.version)),
        ("Description", json!(d.description)),
        ("Path", json!(d.path)),
        ("Enabled", json!(d.enabled)),
        ("Loaded", json!(d.loaded)),
        ("State", json!(d.state)),
        ("Error", json!(d.error)),
        ("AbiVersion", json!(d.abi_version)),
        ("Service", json!(d.service)),
        ("ServiceState", json!(d.service_state)),
        ("TimeoutMs", json!(d.timeout_ms)),
        ("MaxConcurrency", json!(d.max_concurrency)),
        ("Calls", json!(d.calls)),
        ("Errors", json!(d.errors)),
        ("Timeouts", json!(d.timeouts)),
        ("TotalUs", json!(d.total_us)),
        ("LastUs", json!(d.last_us)),
        ("LastError", json!(d.last_error)),
        ("Isolation", json!(d.isolation)),
        ("CallPath", json!(d.call_path)),
        ("Workers", json!(d.workers)),
        ("WorkerRestarts", json!(d.worker_restarts)),
        ("WorkerCrashes", json!(d.worker_crashes)),
        ("Quarantined", json!(d.quarantined)),
        ("WorkerCpuUsec", json!(d.worker_cpu_usec)),
        ("WorkerRssBytes", json!(d.worker_rss_bytes)),
        ("VersionRequirement", json!(d.version_requirement)),
        ("Sandbox", json!(d.sandbox)),
        ("Signature", json!(d.signature)),
        ("SettingsSchema", json!(d.settings_schema)),
        ("WasmTraps", json!(d.wasm_traps)),
        ("WasmPeakMemoryBytes", json!(d.wasm_peak_memory_bytes)),
        ("WasmMemoryLimitBytes", json!(d.wasm_memory_limit_bytes)),
        ("WasmCompileUs", json!(d.wasm_compile_us)),
        ("WasmArtifact", json!(d.wasm_artifact)),
    ];
    fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// `PascalCase` to `snake_case`, for JSON keys.
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The closest plugin names to `name`, for "did you mean".
async fn suggestions(client: &Client, name: &str) -> Vec<String> {
    let Ok(rows) = client.call(client.manager.list_plugins()).await else {
        return Vec::new();
    };
    let mut scored: Vec<(f64, String)> = rows
        .into_iter()
        .map(|r| (strsim::jaro_winkler(name, &r.name), r.name))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

async fn with_suggestions(client: &Client, name: &str, e: CtlError) -> CtlError {
    if e.kind != Kind::NotFound {
        return e;
    }
    let close = suggestions(client, name).await;
    if close.is_empty() {
        e.hint("`dynplugctl list` shows the plugins")
    } else {
        e.hint(format!("did you mean: {}?", close.join(", ")))
    }
}

/// `info NAME`.
pub(crate) async fn info(client: &Client, out: Output, name: &str) -> Result<(), CtlError> {
    let info = match client.call(client.manager.get_plugin(name)).await {
        Ok(info) => info,
        Err(e) => return Err(with_suggestions(client, name, e).await),
    };
    let fields = detail_fields(&info);
    if out.json {
        let map: serde_json::Map<String, Value> =
            fields.into_iter().map(|(k, v)| (snake(k), v)).collect();
        out.json_value(&Value::Object(map));
        return Ok(());
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in fields {
        let value = match value {
            Value::String(s) => s,
            Value::Object(layers) => layers
                .iter()
                .map(|(layer, state)| {
                    let state = state.as_str().unwrap_or_default();
                    format!("\n{:>width$}  {layer}: {state}", "")
                })
                .collect(),
            other => other.to_string(),
        };
        if value.is_empty() && matches!(key, "Error" | "LastError" | "ServiceState") {
            continue;
        }
        let colour = match (key, value.as_str()) {
            ("State", "loaded") => Colour::Green,
            ("State", "failed") | ("Error", _) | ("LastError", _) => Colour::Red,
            _ => Colour::None,
        };
        text.push_str(&format!("{key:>width$}: {}\n", out.paint(&value, colour)));
    }
    print_stdout(&text);
    Ok(())
}

/// `enable` / `disable`.
pub(crate) async fn toggle(
    client: &Client,
    out: Output,
    names: Vec<String>,
    all: bool,
    on: bool,
) -> Result<(), CtlError> {
    let names = if all {
        let rows = client.call(client.manager.list_plugins()).await?;
        rows.into_iter()
            .filter(|r| !r.version.is_empty())
            .map(|r| r.name)
            .collect()
    } else {
        names
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let method = if on {
        "EnablePlugins"
    } else {
        "DisablePlugins"
    };
    let results: Vec<dynplug_dbus::BulkResult> =
        client.act(client.manager.inner(), method, &(refs,)).await?;
    let verb = if on { "enabled" } else { "disabled" };
    let mut first_error: Option<CtlError> = None;
    let mut json_rows = Vec::new();
    let mut text = String::new();
    for dynplug_dbus::BulkResult { name, ok, message } in results {
        if out.json {
            json_rows.push(json!({"name": name, "ok": ok, "changed": ok && message == "changed", "error": (!ok).then_some(&message)}));
        } else if ok && message == "changed" {
            text.push_str(&format!(
                "{name}: {}\n",
                out.paint(verb, if on { Colour::Green } else { Colour::Yellow })
            ));
        } else if ok {
            text.push_str(&format!("{name}: already {verb}\n"));
        } else {
            text.push_str(&format!("{name}: {}\n", out.paint(&message, Colour::Red)));
        }
        if !ok && first_error.is_none() {
            // The daemon's refusals start so ("not authorized: org.dynplug.manage ...").
            let error = if message.starts_with("not authorized") {
                dynplug_dbus::DynplugError::AccessDenied(message).into_ctl(client.bus())
            } else if message.starts_with("no plugin named") {
                CtlError::new(Kind::NotFound, message)
            } else {
                CtlError::new(Kind::Failure, message)
            };
            first_error = Some(with_suggestions(client, &name, error).await);
        }
    }
    if out.json {
        out.json_value(&Value::Array(json_rows));
    } else {
        print_stdout(&text);
    }
    match first_error {
        // The per-name lines already said it; the exit code tells scripts.
        Some(e) if out.json => Err(CtlError {
            message: String::new(),
            ..e
        }),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads the input of `execute`: the argument, a file, or stdin.
pub(crate) fn read_input(input: Option<String>, file: Option<&Path>) -> Result<String, CtlError> {
    let bytes = match (input, file) {
        (Some(text), None) if text != "-" => return Ok(text),
        (_, Some(path)) => std::fs::read(path).map_err(|e| {
            CtlError::new(
                Kind::InvalidArgument,
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| {
                CtlError::new(
                    Kind::InvalidArgument,
                    format!("cannot read standard input: {e}"),
                )
            })?;
            buf
        }
    };
    String::from_utf8(bytes).map_err(|e| {
        CtlError::new(
            Kind::InvalidArgument,
            format!(
                "input is not valid UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// `execute NAME [INPUT] [--detach]`: starts a job and follows it to the end.
pub(crate) async fn execute(
    client: &Client,
    out: Output,
    name: &str,
    input: String,
    detach: bool,
) -> Result<(), CtlError> {
    let began = Instant::now();
    // Listen for Ctrl-C before the job exists, so no interrupt can fall in between.
    let interrupts = crate::jobs::interrupts()?;
    let args = (name, &input);
    let started = client.act::<_, zbus::OwnedObjectPath>(client.manager.inner(), "StartJob", &args);
    let path = match started.await {
        Ok(path) => path,
        Err(e) => return Err(with_suggestions(client, name, e).await),
    };
    if detach {
        if out.json {
            out.json_value(
                &json!({"job": path.as_str(), "id": dynplug_dbus::job_id(path.as_str())}),
            );
        } else {
            print_stdout(&format!("{}\n", path.as_str()));
        }
        return Ok(());
    }
    let output = crate::jobs::follow(client, out, path.as_str(), Some(interrupts)).await?;
    if out.json {
        let elapsed = began.elapsed();
        out.json_value(&json!({
            "plugin": name,
            "output": output,
            "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "duration_us": u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        }));
    } else {
        crate::jobs::print_output(&output);
    }
    Ok(())
}

/// `reload`.
pub(crate) async fn reload(client: &Client, out: Output) -> Result<(), CtlError> {
    let summary: String = client.act(client.manager.inner(), "Reload", &()).await?;
    if out.json {
        out.json_value(&json!({"reloaded": true, "changes": summary}));
    } else {
        print_stdout(&format!("configuration reloaded: {}\n", esc(&summary)));
    }
    Ok(())
}

fn uptime(start_usec: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(Duration::from_micros(start_usec))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `status`.
pub(crate) async fn status(client: &Client, out: Output) -> Result<(), CtlError> {
    let m = client.manager.clone();
    let version = client.call(m.version()).await?;
    let state = client.call(m.state()).await?;
    let plugins = client.call(m.plugin_count()).await?;
    let enabled = client.call(m.enabled_count()).await?;
    let failed = client.call(m.failed_count()).await?;
    let config = client.call(m.config_path()).await?;
    let reload_error = client.call(m.last_reload_error()).await?;
    let started = client.call(m.start_time_usec()).await?;
    let in_flight = client.call(m.calls_in_flight()).await?;
    let api = client.call(m.api_address()).await?;
    let up = uptime(started);
    if out.json {
        out.json_value(&json!({
            "version": version, "state": state, "plugins": plugins, "enabled": enabled,
            "failed": failed, "config": config, "last_reload_error": reload_error,
            "uptime_seconds": up.as_secs(), "calls_in_flight": in_flight,
            "api": if api.is_empty() { Value::Null } else { json!(format!("http://{api}")) },
        }));
        return Ok(());
    }
    let state_colour = if state == "running" {
        Colour::Green
    } else {
        Colour::Yellow
    };
    let mut text = format!(
        "dynplugd {version}: {}\n  plugins: {plugins} ({enabled} enabled, {} failed)\n  uptime:  {}\n  config:  {config}\n  in flight: {in_flight}\n  REST API: {}\n",
        out.paint(&state, state_colour),
        if failed > 0 { out.paint(&failed.to_string(), Colour::Red) } else { failed.to_string() },
        human(up),
        if api.is_empty() { "disabled".to_owned() } else { format!("http://{api}") },
    );
    if !reload_error.is_empty() {
        text.push_str(&format!(
            "  last reload failed: {}\n",
            out.paint(&reload_error, Colour::Red)
        ));
    }
    print_stdout(&text);
    Ok(())
}

/// `watch`: prints events until interrupted (exit 0) or until the daemon or the bus goes
/// away (exit 5, like any call to a daemon that is not there).
pub(crate) async fn watch(client: &mut Client, out: Output) -> Result<(), CtlError> {
    let m = client.manager.clone();
    let bus = client.bus().clone();
    let classify = |e| crate::client::classify(e, &bus);
    let mut state = m.receive_plugin_state_changed().await.map_err(classify)?;
    let mut failed = m.receive_plugin_failed().await.map_err(classify)?;
    let mut service = m.receive_service_state_changed().await.map_err(classify)?;
    let mut reloaded = m.receive_config_reloaded().await.map_err(classify)?;
    let mut plugin_events = m.receive_plugin_event().await.map_err(classify)?;
    let mut jobs = crate::jobs::changes(client.connection())
        .await
        .map_err(classify)?;
    let mut job_plugins: std::collections::HashMap<u64, Option<String>> = Default::default();
    let mut last_lines: std::collections::HashMap<u64, String> = Default::default();
    let emit = |kind: &str, fields: Value, text: String| {
        if out.json {
            let mut obj = json!({"event": kind});
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            out.json_value(&obj);
        } else {
            print_stdout(&format!("{text}\n"));
        }
    };
    loop {
        tokio::select! {
            Some(s) = state.next() => if let Ok(a) = s.args() {
                emit("plugin_state_changed", json!({"name": a.name(), "enabled": a.enabled(), "loaded": a.loaded()}),
                    format!("{}: {}{}", esc(a.name()), if *a.enabled() { "enabled" } else { "disabled" }, if *a.loaded() { "" } else { " (not loaded)" }));
            },
            Some(s) = failed.next() => if let Ok(a) = s.args() {
                emit("plugin_failed", json!({"name": a.name(), "error": a.error()}),
                    format!("{}: {} {}", esc(a.name()), out.paint("failed:", Colour::Red), esc(a.error())));
            },
            Some(s) = service.next() => if let Ok(a) = s.args() {
                emit("service_state_changed", json!({"name": a.name(), "state": a.state(), "detail": a.detail()}),
                    format!("{}: service {}{}", esc(a.name()), esc(a.state()), if a.detail().is_empty() { String::new() } else { format!(" ({})", esc(a.detail())) }));
            },
            Some(s) = reloaded.next() => if let Ok(a) = s.args() {
                emit("config_reloaded", json!({"success": a.success(), "message": a.message()}),
                    if *a.success() { format!("configuration reloaded: {}", esc(a.message())) }
                    else { format!("{} {}", out.paint("reload refused:", Colour::Red), esc(a.message())) });
            },
            Some(s) = plugin_events.next() => if let Ok(a) = s.args() {
                emit("plugin_event", json!({"plugin": a.plugin(), "name": a.event(), "payload": a.payload()}),
                    format!("{}: event {} {}", esc(a.plugin()), esc(a.event()), esc(a.payload())));
            },
            Some(change) = jobs.next() => if let Some(mut c) = change {
                c.plugin = match job_plugins.get(&c.id()) {
                    Some(known) => known.clone(),
                    None => {
                        let plugin = crate::jobs::plugin_of(client, c.id()).await;
                        job_plugins.insert(c.id(), plugin.clone());
                        plugin
                    }
                };
                let line = esc(&c.text()).into_owned();
                // The same line again (a progress that did not move) is not news.
                if last_lines.insert(c.id(), line.clone()).as_deref() != Some(&line) {
                    emit("job", c.json(), line);
                }
                if c.is_finished() {
                    job_plugins.remove(&c.id());
                    last_lines.remove(&c.id());
                }
            },
            change = client.owner_changes().next() => match change {
                Some(c) => if let Ok(a) = c.args() {
                    let up = a.new_owner().is_some();
                    emit("daemon", json!({"running": up}), if up { "dynplugd started".into() } else { "dynplugd stopped".into() });
                    if !up {
                        return Err(CtlError::unavailable("dynplugd stopped", &bus));
                    }
                },
                // The connection is gone: the bus itself went away.
                None => return Err(CtlError::unavailable("the bus went away", &bus)),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
