//! REST load: wrk against dynplugd's API (echo plugin) and a minimal axum server with
//! the same two routes, side by side in one run. Needs `wrk` (Debian package `wrk`).
//!
//! Run: `cargo bench -p dynplug-tests --bench http`. The bare server is this binary
//! re-executed with `DYNPLUG_BENCH_BARE_HTTP=1`; it prints its address on stdout.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use axum::routing::{get, post};
use axum::{Json, Router};
use dynplug_tests::{rust_plugin, Daemon, PluginDir, PrivateBus};
use serde_json::{json, Value};

fn serve_bare() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = Router::new()
            .route("/health", get(|| async { Json(json!({"success": true, "data": {"status": "ok"}, "error": null})) }))
            .route(
                "/plugins/{name}/execute",
                post(|Json(body): Json<Value>| async move {
                    Json(json!({"success": true, "data": {"plugin": "echo", "output": body["input"], "duration_ms": 0, "duration_us": 0}, "error": null}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        std::io::stdout().flush().expect("flush");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Runs wrk; returns (requests/s, p50, p99) as printed by wrk.
/// How long each wrk run lasts.
const WRK_SECONDS: f64 = 5.0;

fn wrk(url: &str, script: Option<&std::path::Path>, connections: u32) -> (String, String, String) {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{WRK_SECONDS}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(non2xx.is_none(), "errors during the run: {text}");
    (field("Requests/sec:"), field("50%"), field("99%"))
}

fn main() {
    if std::env::var_os("DYNPLUG_BENCH_BARE_HTTP").is_some() {
        serve_bare();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let daemon = Daemon::start(
        &bus,
        plugins.path(),
        "log_level: warn\nserver:\n  enabled: true\n  port: 0\n",
    );
    let daemon_addr = bus.manager_property("ApiAddress");

    let mut bare = Command::new(std::env::current_exe().expect("exe"))
        .env("DYNPLUG_BENCH_BARE_HTTP", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("bare server");
    let mut line = String::new();
    std::io::BufReader::new(bare.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bare address");
    let bare_addr = line.trim().to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"input\":\"hello\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .expect("script");

    let cpu_us = |pid: u32| {
        dynplug_core::resources::of(&pid.to_string())
            .expect("the server's /proc entry")
            .cpu_usec
    };
    let servers = [
        ("bare axum", bare_addr.as_str(), bare.id()),
        ("dynplugd", daemon_addr.as_str(), daemon.pid()),
    ];
    println!(
        "| round | server | route | connections | requests/s | p50 | p99 | server CPU/request |\n|---|---|---|---|---|---|---|---|"
    );
    let mut ratios = Vec::new();
    for round in 1..=3 {
        for connections in [1, 16] {
            for (route, url, script) in [
                ("GET /health", "/health", None),
                (
                    "POST execute",
                    "/plugins/echo/execute",
                    Some(script.as_path()),
                ),
            ] {
                let mut rows = Vec::new();
                for (label, addr, pid) in servers {
                    let before = cpu_us(pid);
                    let (rps, p50, p99) = wrk(&format!("http://{addr}{url}"), script, connections);
                    let requests = rps.parse::<f64>().unwrap_or(f64::NAN) * WRK_SECONDS;
                    let cpu = (cpu_us(pid) - before) as f64 / requests;
                    println!(
                        "| {round} | {label} | {route} | {connections} | {rps} | {p50} | {p99} | {cpu:.1} µs |"
                    );
                    rows.push((rps.parse::<f64>().unwrap_or(f64::NAN), cpu));
                }
                ratios.push((round, route, connections, rows));
            }
        }
    }
    println!("\ndynplugd / bare axum:\n\n| round | route | connections | requests/s | CPU/request |\n|---|---|---|---|---|");
    for (round, route, connections, rows) in ratios {
        println!(
            "| {round} | {route} | {connections} | {:.2}× | {:.2}× |",
            rows[1].0 / rows[0].0,
            rows[1].1 / rows[0].1
        );
    }
    let _ = bare.kill();
    let _ = bare.wait();
}
