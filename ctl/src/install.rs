//! `install` and `installed`: plugins from OCI registries, installed by the daemon.

use serde_json::{json, Value};

use crate::client::{Client, CtlError};
use crate::output::{esc, print_stdout, Output};

/// `install REF`: starts the daemon's install job and follows it (progress on a
/// terminal, Ctrl-C cancels), then prints what was installed.
pub(crate) async fn install(
    client: &Client,
    out: Output,
    reference: &str,
    detach: bool,
) -> Result<(), CtlError> {
    // Listen for Ctrl-C before the job exists, so no interrupt can fall in between.
    let interrupts = crate::jobs::interrupts()?;
    let path: zbus::OwnedObjectPath = client
        .act(client.manager.inner(), "Install", &(reference,))
        .await?;
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
    let summary: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
    if out.json {
        out.json_value(&summary);
    } else {
        let field = |k: &str| summary[k].as_str().unwrap_or_default().to_owned();
        print_stdout(&format!(
            "{} {} installed as {} ({}; signature {})\n",
            esc(&field("name")),
            esc(&field("version")),
            esc(&field("path")),
            esc(&field("digest")),
            esc(&field("signature")),
        ));
    }
    Ok(())
}

/// `installed`: the plugins installed from registries.
pub(crate) async fn installed(client: &Client, out: Output) -> Result<(), CtlError> {
    let rows = client.call(client.manager.list_installed()).await?;
    if out.json {
        let rows = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "version": r.version, "reference": r.reference,
                    "digest": r.digest, "installed_usec": r.installed_usec,
                    "previous_version": (!r.previous_version.is_empty()).then_some(&r.previous_version),
                })
            })
            .collect();
        out.json_value(&Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        print_stdout("no plugins installed from registries\n");
        return Ok(());
    }
    for r in rows {
        let previous = if r.previous_version.is_empty() {
            String::new()
        } else {
            format!(" (previous: {})", esc(&r.previous_version))
        };
        print_stdout(&format!(
            "{} {} from {} {}{previous}\n",
            esc(&r.name),
            esc(&r.version),
            esc(&r.reference),
            esc(&r.digest),
        ));
    }
    Ok(())
}

/// `rollback NAME` and `remove NAME`: `method` of the manager, which answers a summary.
pub(crate) async fn undo(
    client: &Client,
    out: Output,
    method: &'static str,
    name: &str,
) -> Result<(), CtlError> {
    let summary: String = client.act(client.manager.inner(), method, &(name,)).await?;
    if out.json {
        out.json_value(&json!({"name": name, "done": method.to_lowercase(), "summary": summary}));
    } else {
        print_stdout(&format!("{}\n", esc(&summary)));
    }
    Ok(())
}
