//! A plugin's context used past its call, a worker writing while idle, plugin text on
//! the daemon's stderr, and `emit`'s answers, against the real daemon with
//! tests/fixtures/c/kept.c: in process (`kept`) and isolated (`kept_iso`), beside the
//! in-process echo plugin.

use std::time::Duration;

use dynplug_dbus::JobProxy;
use dynplug_tests::*;
use futures_util::StreamExt;

const CONFIG: &str = "worker_user: nobody\nplugins:\n  kept_iso:\n    isolation: process\n    workers: 1\n    timeout_ms: 10000\n  kept:\n    timeout_ms: 10000\n";

fn plugins() -> PluginDir {
    let d = PluginDir::new();
    d.add(&rust_plugin("echo"), "echo.so");
    d.add_c("tests/fixtures/c/kept.c", "kept.so", &[]);
    d.add_c(
        "tests/fixtures/c/kept.c",
        "kept_iso.so",
        &["KEPT_NAME=\"kept_iso\""],
    );
    d
}

/// Rounds of calls whose context a thread keeps using after the call returned.
const ROUNDS: usize = 12;

/// Waits for the job at `path` to end and returns it.
async fn finished_job(bus: &PrivateBus, path: &str) -> JobProxy<'static> {
    let conn = zbus::connection::Builder::address(bus.address())
        .build()
        .await
        .unwrap();
    let job = JobProxy::builder(&conn)
        .path(path.to_owned())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let mut ended = job.receive_finished().await.unwrap();
    let wait = async {
        while job.state().await.unwrap() == "running" {
            ended.next().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("job {path} did not end within 60 s"));
    job
}

/// Keeps contexts of `plugin` for [`ROUNDS`] calls, then runs a job while those
/// threads go on using them, and checks that nothing of theirs reached anyone.
async fn kept_contexts_reach_nothing(bus: &PrivateBus, daemon: &Daemon, plugin: &str) {
    let m = bus.manager_proxy().await;
    for round in 0..ROUNDS {
        assert_eq!(
            m.execute(plugin, "keep").await.unwrap(),
            "kept",
            "round {round}"
        );
        let hello = format!("round {round}");
        assert_eq!(m.execute("echo", &hello).await.unwrap(), hello);
    }
    // The next job of the same plugin runs while the kept contexts are used: 200
    // calls through them happen during it; its progress is its own.
    let path = m
        .start_job(plugin, "wait-stale 200")
        .await
        .unwrap()
        .to_string();
    let job = finished_job(bus, &path).await;
    assert_eq!(job.state().await.unwrap(), "succeeded");
    assert_eq!(job.output().await.unwrap(), "saw 200");
    assert_eq!(job.status_text().await.unwrap(), "own");
    let stats = m.execute(plugin, "stats").await.unwrap();
    assert!(stats.ends_with(" reopened=0"), "{plugin}: {stats}");
    assert!(!stats.starts_with("stale=0 "), "{plugin}: {stats}");
    assert!(
        !daemon.log().contains("stale log line"),
        "a closed context's log line was filed"
    );
    assert_eq!(m.execute("echo", "after").await.unwrap(), "after");
    assert!(
        live_processes(|_, _| true).contains(&daemon.pid()),
        "the daemon died"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_kept_past_its_call_is_inert_in_process() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    kept_contexts_reach_nothing(&bus, &daemon, "kept").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_kept_past_its_call_is_inert_in_a_worker() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    kept_contexts_reach_nothing(&bus, &daemon, "kept_iso").await;
}

/// Worker processes (`--worker`) descended from `daemon`.
fn workers_of(daemon: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    live_processes(|_, cmdline| cmdline.contains("--worker"))
        .into_iter()
        .filter(|&pid| {
            let mut at = pid;
            while let Some(up) = parent(at).filter(|&p| p > 1) {
                if up == daemon {
                    return true;
                }
                at = up;
            }
            false
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_writes_while_idle_is_killed_then_and_the_next_caller_is_served() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    for round in 0..3 {
        assert_eq!(
            m.execute("kept_iso", "write-idle").await.unwrap(),
            "written later"
        );
        // The worker writes 50 ms after its answer, while idle: it is killed then,
        // without any call to notice.
        wait_until_gone("the idle worker that wrote", || workers_of(daemon.pid()));
        let text = format!("next {round}");
        assert_eq!(
            m.execute("kept_iso", &format!("echo {text}"))
                .await
                .unwrap(),
            text
        );
    }
    assert_eq!(
        daemon
            .log()
            .matches("an idle worker wrote to its channel")
            .count(),
        3
    );
    let info = m.get_plugin("kept_iso").await.unwrap();
    assert_eq!(info.state.as_deref(), Some("loaded"), "{info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newline_in_a_plugin_log_message_stays_on_one_escaped_line() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    for plugin in ["kept", "kept_iso"] {
        let forged = format!(
            "log first\n2026-01-01T00:00:00.000000Z  INFO dynplugd: FORGED-{plugin} \x1b[2J\r"
        );
        assert_eq!(m.execute(plugin, &forged).await.unwrap(), "logged");
        let log = daemon.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("FORGED-{plugin}")))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains(&format!(
                "first\\n2026-01-01T00:00:00.000000Z  INFO dynplugd: FORGED-{plugin} "
            )),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(&format!("plugin=\"{plugin}\"")),
            "{}",
            lines[0]
        );
        assert!(!log.contains('\x1b') && !log.contains('\r'), "{log:?}");
    }
}

/// `bad_accepted=B accepted=A dropped=D` as numbers.
fn emit_counts(answer: &str) -> [u64; 3] {
    let numbers: Vec<u64> = answer
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    numbers.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_answers_the_same_in_a_worker_as_in_process() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let _daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    let in_process = emit_counts(&m.execute("kept", "emits").await.unwrap());
    let isolated = emit_counts(&m.execute("kept_iso", "emits").await.unwrap());
    for (mode, [bad, accepted, dropped]) in [("in process", in_process), ("isolated", isolated)] {
        // No bad name or oversized payload is ever "published"; of 200 events at once,
        // the burst of 50 is (one or two more if the 200 took over 50 ms to send).
        assert_eq!(bad, 0, "{mode}");
        assert!((50..=52).contains(&accepted), "{mode}: {accepted} accepted");
        assert_eq!(accepted + dropped, 200, "{mode}");
    }
    assert!(
        in_process[1].abs_diff(isolated[1]) <= 2,
        "{in_process:?} vs {isolated:?}"
    );
}
