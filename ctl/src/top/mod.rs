//! `dynplugctl top`: a live, sortable table of plugins from `GetStats`, sampled every
//! `--interval`; or, with `--once`, one sample (two `GetStats` calls an interval apart,
//! so rates are real) printed as a table or, with `--json`, as JSON.

mod rates;
mod view;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynplug_dbus::Stats;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::client::{Client, CtlError, Kind};
use crate::output::{Colour, Output};
use rates::Screen;
use view::{Action, Key, View};

/// One `GetStats` sample.
async fn sample(client: &Client) -> Result<Stats, CtlError> {
    Ok(client.call(client.manager.get_stats()).await?.into())
}

/// Runs `top`: interactive on a terminal, or one sample with `once`.
pub(crate) async fn run(
    client: &Client,
    out: Output,
    interval: Duration,
    once: bool,
) -> Result<(), CtlError> {
    if once || out.json {
        let first = sample(client).await?;
        tokio::time::sleep(interval).await;
        let now = sample(client).await?;
        print_once(out, &rates::screen(&now, Some(&first)));
        return Ok(());
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CtlError::new(Kind::InvalidArgument, "top needs a terminal")
            .hint("for scripts use `dynplugctl top --once --json`"));
    }
    interactive(client, interval).await
}

/// Prints one screen as JSON or as a table, busiest first.
fn print_once(out: Output, screen: &Screen) {
    if out.json {
        out.json_value(&serde_json::to_value(screen).unwrap_or_default());
        return;
    }
    let dash =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "-".into(), |v| format!("{v:.1}{unit}"));
    let rows: Vec<Vec<(String, Colour)>> = View::default()
        .rows(screen)
        .into_iter()
        .map(|r| {
            let state_colour = match (r.enabled, r.state.as_str()) {
                (false, _) => Colour::Yellow,
                (true, "failed") => Colour::Red,
                _ => Colour::None,
            };
            vec![
                (r.name.clone(), Colour::None),
                (
                    if r.enabled {
                        r.state.clone()
                    } else {
                        "disabled".into()
                    },
                    state_colour,
                ),
                (r.isolation.clone(), Colour::None),
                (dash(r.calls_per_s, ""), Colour::None),
                (dash(r.errors_per_s, ""), Colour::None),
                (r.timeouts.to_string(), Colour::None),
                (
                    r.p50_ms.map_or_else(|| "-".into(), |v| format!("{v:.3}ms")),
                    Colour::None,
                ),
                (
                    r.p99_ms.map_or_else(|| "-".into(), |v| format!("{v:.3}ms")),
                    Colour::None,
                ),
                (dash(r.cpu_percent, "%"), Colour::None),
                (
                    r.rss_bytes.map_or_else(|| "-".into(), |b| b.to_string()),
                    Colour::None,
                ),
                (r.running_jobs.to_string(), Colour::None),
            ]
        })
        .collect();
    out.table(
        &[
            "NAME",
            "STATE",
            "ISOLATION",
            "CALLS/S",
            "ERR/S",
            "TIMEOUTS",
            "P50",
            "P99",
            "CPU",
            "RSS",
            "JOBS",
        ],
        &rows,
    );
}

/// Reads keys on a thread of its own (crossterm reads are blocking) while `paused` is
/// clear; while it is set (a polkit agent may be reading the terminal) it reads nothing.
fn read_keys(paused: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<Key> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        if paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let Ok(Event::Key(k)) = event::read() else {
            continue;
        };
        if k.kind == KeyEventKind::Release {
            continue;
        }
        let key = match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Backspace => Key::Backspace,
            _ => continue,
        };
        if tx.send(key).is_err() {
            return;
        }
    });
    rx
}

/// The live table, until `q`.
async fn interactive(client: &Client, interval: Duration) -> Result<(), CtlError> {
    let mut before = sample(client).await?;
    let mut screen = rates::screen(&before, None);
    let mut view = View::default();
    let terminal_error = |e: std::io::Error| CtlError::new(Kind::Failure, format!("terminal: {e}"));
    let mut terminal = ratatui::try_init().map_err(terminal_error)?;
    let paused = Arc::new(AtomicBool::new(false));
    let mut keys = read_keys(Arc::clone(&paused));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let result = loop {
        if let Err(e) = terminal.draw(|f| view.draw(f, &screen)) {
            break Err(terminal_error(e));
        }
        tokio::select! {
            _ = tick.tick() => match sample(client).await {
                Ok(now) => {
                    screen = rates::screen(&now, Some(&before));
                    before = now;
                }
                Err(e) => break Err(e),
            },
            key = keys.recv() => match key.map(|k| view.key(k, &screen)) {
                None | Some(Action::Quit) => break Ok(()),
                Some(Action::None) => {}
                Some(Action::Toggle(name, on)) => {
                    // A polkit agent may ask for a password on the terminal: give it back
                    // meanwhile (only when one can run), and stop reading keys.
                    let asks = client.may_ask_password();
                    paused.store(true, Ordering::Release);
                    if asks {
                        ratatui::restore();
                    }
                    let method = if on { "EnablePlugin" } else { "DisablePlugin" };
                    let done: Result<bool, CtlError> =
                        client.act(client.manager.inner(), method, &(name.as_str(),)).await;
                    if asks {
                        terminal = match ratatui::try_init() {
                            Ok(t) => t,
                            Err(e) => break Err(terminal_error(e)),
                        };
                    }
                    paused.store(false, Ordering::Release);
                    let verb = if on { "enabled" } else { "disabled" };
                    view.message = match done {
                        Ok(true) => format!("{name}: {verb}"),
                        Ok(false) => format!("{name}: already {verb}"),
                        Err(e) => format!("{name}: {}", e.message),
                    };
                    tick.reset_immediately();
                }
            },
        }
    };
    ratatui::restore();
    result
}
