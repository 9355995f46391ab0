//! The REST API of the real dynplugd, over real loopback HTTP, driven with curl.

use std::process::Command;

use dynplug_tests::{run, rust_plugin, send_signal, Daemon, PluginDir, PrivateBus};
use serde_json::Value;

/// A daemon with the API on an ephemeral loopback port.
struct Api {
    bus: PrivateBus,
    daemon: Daemon,
    base: String,
    _plugins: PluginDir,
}

fn api_address(bus: &PrivateBus) -> String {
    bus.manager_property("ApiAddress")
}

impl Api {
    fn start(extra_config: &str) -> Api {
        let bus = PrivateBus::start();
        let plugins = PluginDir::with_examples();
        plugins.add(&rust_plugin("fault"), "fault.so");
        let config = format!(
            "plugins:\n  fault:\n    timeout_ms: 300\nserver:\n  enabled: true\n  port: 0\n{extra_config}"
        );
        let daemon = Daemon::start(&bus, plugins.path(), &config);
        let address = api_address(&bus);
        assert!(!address.is_empty(), "ApiAddress is set once READY");
        Api {
            base: format!("http://{address}"),
            bus,
            daemon,
            _plugins: plugins,
        }
    }

    /// curl; returns (status, body as JSON or string value).
    fn curl(&self, method: &str, path: &str, args: &[&str]) -> (u16, Value) {
        let (status, body, _) = self.curl_raw(method, path, args);
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, value)
    }

    fn curl_raw(&self, method: &str, path: &str, args: &[&str]) -> (u16, String, String) {
        let headers = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", method, "-D"])
            .arg(headers.path())
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("{}{path}", self.base));
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "curl failed: {err}");
        let (body, status) = out.rsplit_once('\n').expect("status line");
        let headers = std::fs::read_to_string(headers.path())
            .unwrap()
            .to_ascii_lowercase();
        (status.parse().expect("status"), body.to_owned(), headers)
    }
}

fn json_body(input: &str) -> String {
    serde_json::json!({ "input": input }).to_string()
}

fn assert_envelope_error(value: &Value, code: &str) {
    assert_eq!(value["success"], false, "{value}");
    assert_eq!(value["data"], Value::Null, "{value}");
    // The original design's ApiResponse: `error` is a string; `code` sits beside it.
    assert_eq!(value["code"], code, "{value}");
    assert!(
        value["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{value}"
    );
}

#[test]
fn routes_and_status_codes() {
    let api = Api::start("  max_body_bytes: 4096\n");
    let ct_json = ["-H", "content-type: application/json", "--data-binary"];

    let (status, v) = api.curl("GET", "/plugins", &[]);
    assert_eq!(status, 200);
    assert_eq!(v["success"], true);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["data"].as_array().unwrap().len(), 7);
    let (status, v) = api.curl("GET", "/plugins/rot13", &[]);
    assert_eq!((status, v["data"]["state"].as_str()), (200, Some("loaded")));
    let (status, v) = api.curl("GET", "/plugins/nope", &[]);
    assert_eq!(status, 404);
    assert_envelope_error(&v, "not_found");

    let body = json_body("hello");
    let (status, v) = api.curl(
        "POST",
        "/plugins/text/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &body],
    );
    assert_eq!(status, 200);
    assert_eq!(
        (v["data"]["plugin"].as_str(), v["data"]["output"].as_str()),
        (Some("text"), Some("HELLO"))
    );
    // Whole milliseconds, as the original design's ExecutionResult has them.
    assert!(v["data"]["duration_ms"].is_u64(), "{v}");
    assert!(v["data"]["duration_us"].is_u64(), "{v}");
    let (status, v) = api.curl(
        "POST",
        "/plugins/hash/execute",
        &[
            "-H",
            "content-type: text/plain; charset=utf-8",
            "--data-binary",
            "abc",
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(
        v["data"]["output"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    let (status, v) = api.curl(
        "POST",
        "/plugins/text/execute",
        &[ct_json[0], ct_json[1], ct_json[2], "{\"input\": "],
    );
    assert_eq!(status, 400);
    assert_envelope_error(&v, "bad_request");
    let (status, v) = api.curl(
        "POST",
        "/plugins/text/execute",
        &[ct_json[0], ct_json[1], ct_json[2], "{\"inptu\": \"x\"}"],
    );
    assert_eq!(status, 400);
    assert_envelope_error(&v, "bad_request");
    let (status, v) = api.curl(
        "POST",
        "/plugins/text/execute",
        &[
            "-H",
            "content-type: application/xml",
            "--data-binary",
            "<x/>",
        ],
    );
    assert_eq!(status, 415);
    assert_envelope_error(&v, "unsupported_media_type");
    let (status, v) = api.curl(
        "POST",
        "/plugins/text/execute",
        &["-H", "content-type: text/plain", "--data-binary", "\u{ff}"],
    );
    assert_eq!(status, 200, "{v}");
    let big = json_body(&"x".repeat(8192));
    let (status, v) = api.curl(
        "POST",
        "/plugins/echo/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &big],
    );
    assert_eq!(status, 413);
    assert_envelope_error(&v, "payload_too_large");
    let (status, v) = api.curl(
        "POST",
        "/plugins/nope/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &body],
    );
    assert_eq!(status, 404);
    assert_envelope_error(&v, "not_found");
    let (status, v) = api.curl(
        "POST",
        "/plugins/fault/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &json_body("error")],
    );
    assert_eq!(status, 422, "a plugin's own error: it refused the input");
    assert_envelope_error(&v, "execution_failed");
    assert!(v["error"].as_str().unwrap().contains("requested failure"));
    let (status, v) = api.curl(
        "POST",
        "/plugins/fault/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &json_body("sleep 5000")],
    );
    assert_eq!(status, 504);
    assert_envelope_error(&v, "timeout");

    let (status, v) = api.curl("PUT", "/plugins/echo/disable", &[]);
    assert_eq!((status, v["data"]["changed"].as_bool()), (200, Some(true)));
    let (status, v) = api.curl(
        "POST",
        "/plugins/echo/execute",
        &[ct_json[0], ct_json[1], ct_json[2], &body],
    );
    assert_eq!(status, 409);
    assert_envelope_error(&v, "disabled");
    // The D-Bus side sees the same manager at once.
    let mut cmd = api.bus.command("busctl");
    cmd.args([
        "--user",
        "get-property",
        "org.dynplug.Manager",
        "/org/dynplug/Manager/plugins/echo",
        "org.dynplug.Plugin",
        "Enabled",
    ]);
    assert_eq!(run(cmd).1, "b false\n");
    let (status, v) = api.curl("PUT", "/plugins/echo/enable", &[]);
    assert_eq!((status, v["data"]["enabled"].as_bool()), (200, Some(true)));

    let (status, v) = api.curl("GET", "/no/such/route", &[]);
    assert_eq!(status, 404);
    assert_envelope_error(&v, "not_found");
    let (status, v) = api.curl("DELETE", "/plugins", &[]);
    assert_eq!(status, 405);
    assert_envelope_error(&v, "method_not_allowed");
    let (status, v) = api.curl("GET", "/health", &[]);
    assert_eq!(
        (
            status,
            v["data"]["status"].as_str(),
            v["data"]["plugins"].as_u64()
        ),
        (200, Some("ok"), Some(7))
    );
}

#[test]
fn metrics_are_prometheus_text_and_count_calls() {
    let api = Api::start("");
    for _ in 0..3 {
        api.curl(
            "POST",
            "/plugins/echo/execute",
            &["-H", "content-type: text/plain", "--data-binary", "x"],
        );
    }
    api.curl(
        "POST",
        "/plugins/fault/execute",
        &["-H", "content-type: text/plain", "--data-binary", "error"],
    );
    let (status, text, headers) = api.curl_raw("GET", "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_owned(), value);
    }
    assert_eq!(samples[r#"dynplug_plugin_calls_total{plugin="echo"}"#], 3.0);
    assert_eq!(
        samples[r#"dynplug_plugin_errors_total{plugin="fault"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"dynplug_plugin_call_duration_seconds_count{plugin="echo"}"#],
        3.0
    );
    assert_eq!(
        samples[r#"dynplug_plugin_call_duration_seconds_bucket{plugin="echo",le="+Inf"}"#],
        3.0
    );
    let le_10s = samples[r#"dynplug_plugin_call_duration_seconds_bucket{plugin="echo",le="10"}"#];
    assert!(
        le_10s <= 3.0,
        "buckets are cumulative and bounded by the count"
    );
    assert!(samples["dynplug_uptime_seconds"] >= 0.0);
    assert!(samples.contains_key(r#"dynplug_reloads_total{result="success"}"#));
}

#[test]
fn openapi_document_matches_the_server() {
    let api = Api::start("");
    let (status, doc) = api.curl("GET", "/openapi.json", &[]);
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/events",
            "/health",
            "/jobs",
            "/jobs/{id}",
            "/metrics",
            "/openapi.json",
            "/plugins",
            "/plugins/{name}",
            "/plugins/{name}/disable",
            "/plugins/{name}/enable",
            "/plugins/{name}/execute",
            "/plugins/{name}/jobs"
        ]
    );
    // Every documented operation answers with one of its documented statuses.
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            // The event stream never ends: its head is all there is to check.
            if path == "/events" {
                let (code, out, err) = run({
                    let mut c = Command::new("curl");
                    c.args(["-s", "-o", "/dev/null", "-m", "1", "-w", "%{http_code}"])
                        .arg(format!("{}{path}", api.base));
                    c
                });
                assert_eq!((code, out.as_str()), (28, "200"), "{err}");
                continue;
            }
            let concrete = path.replace("{name}", "echo").replace("{id}", "1");
            let args: &[&str] = if method == "post" {
                &[
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    "{\"input\":\"x\"}",
                ]
            } else {
                &[]
            };
            let (status, _) = api.curl(&method.to_uppercase(), &concrete, args);
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key(&status.to_string()),
                "{method} {path} answered {status}, documented {:?}",
                responses.keys()
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn bearer_token_guards_mutations_and_execute() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let api = Api::start(&format!("  token_file: {}\n", token.display()));
    let text = ["-H", "content-type: text/plain", "--data-binary", "x"];
    let (status, _) = api.curl("GET", "/plugins", &[]);
    assert_eq!(status, 200, "reading needs no token");
    let (status, v, headers) = api.curl_raw("POST", "/plugins/echo/execute", &text);
    assert_eq!(status, 401, "{v}");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    let (status, v) = api.curl(
        "PUT",
        "/plugins/echo/disable",
        &["-H", "authorization: Bearer wrong"],
    );
    assert_eq!(status, 403);
    assert_envelope_error(&v, "forbidden");
    let (status, _) = api.curl(
        "POST",
        "/plugins/echo/execute",
        &[
            "-H",
            "authorization: Bearer s3cret-token",
            text[0],
            text[1],
            text[2],
            text[3],
        ],
    );
    assert_eq!(status, 200);
    let (status, _) = api.curl(
        "PUT",
        "/plugins/echo/disable",
        &["-H", "authorization: Bearer s3cret-token"],
    );
    assert_eq!(status, 200);
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let api = Api::start("  rate_limit:\n    per_second: 1\n    burst: 2\n");
    let statuses: Vec<u16> = (0..4)
        .map(|_| api.curl_raw("GET", "/health", &[]).0)
        .collect();
    assert_eq!(&statuses[..2], [200, 200]);
    let (status, body, headers) = api.curl_raw("GET", "/health", &[]);
    assert_eq!(status, 429, "{statuses:?}");
    assert!(
        headers.contains("retry-after") || headers.contains("x-ratelimit-after"),
        "{headers}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_envelope_error(&v, "rate_limited");
}

#[test]
fn the_port_flag_enables_the_api() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let _d = Daemon::start_with(
        &bus,
        plugins.path(),
        "server:\n  enabled: false\n",
        &["--port", "0"],
    );
    let address = api_address(&bus);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
}

#[test]
fn reload_turns_the_api_on_off_and_rebinds() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    assert_eq!(api_address(&bus), "");
    std::fs::write(
        daemon.config_path(),
        "server:\n  enabled: true\n  port: 0\n",
    )
    .unwrap();
    // The summary says what changed: the API, not "no changes".
    let summary = bus.manager_call("Reload", "", &[]);
    assert!(
        summary.contains("REST API") && !summary.contains("no changes"),
        "{summary}"
    );
    let address = api_address(&bus);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let (code, out, _) = run({
        let mut c = Command::new("curl");
        c.args(["-s", &format!("http://{address}/health")]);
        c
    });
    assert!(code == 0 && out.contains("\"status\":\"ok\""), "{out}");
    // An insecure bind is refused on reload and the old server stays.
    std::fs::write(
        daemon.config_path(),
        "server:\n  enabled: true\n  host: 0.0.0.0\n  port: 0\n",
    )
    .unwrap();
    daemon.reload();
    assert_eq!(api_address(&bus), address);
    std::fs::write(daemon.config_path(), "server:\n  enabled: false\n").unwrap();
    daemon.reload();
    assert_eq!(api_address(&bus), "");
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
}

#[test]
fn concurrent_executes_survive_reloads() {
    let mut api = Api::start("");
    let base = api.base.clone();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let base = base.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let input = format!("{w}-{i}");
                    let out = Command::new("curl")
                        .args([
                            "-s",
                            "-H",
                            "content-type: text/plain",
                            "--data-binary",
                            &input,
                        ])
                        .arg(format!("{base}/plugins/echo/execute"))
                        .output()
                        .unwrap();
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    assert_eq!(v["data"]["output"], input.as_str(), "{v}");
                }
            })
        })
        .collect();
    for _ in 0..5 {
        api.daemon.reload();
    }
    for w in workers {
        w.join().expect("every HTTP call answered during reloads");
    }
    send_signal(api.daemon.pid(), libc::SIGTERM);
    assert_eq!(
        api.daemon.wait_exit(std::time::Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn non_loopback_without_token_is_refused_at_start() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let (code, err) = bus.run_daemon_once(
        plugins.path(),
        "server:\n  enabled: true\n  host: 0.0.0.0\n",
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("refusing to serve the API on non-loopback 0.0.0.0 without server.token_file"),
        "{err}"
    );
}

/// The original design's response types, as a client written from it has them.
#[derive(Debug, serde::Deserialize)]
struct ApiResponse<T> {
    success: bool,
    data: Option<T>,
    error: Option<String>,
}

/// The original design's result of an execute.
#[derive(Debug, serde::Deserialize)]
struct ExecutionResult {
    plugin: String,
    output: String,
    duration_ms: u64,
}

#[test]
fn the_original_designs_response_types_read_every_answer() {
    let api = Api::start("");
    let typed = |method: &str, path: &str, args: &[&str]| {
        let (status, body, _) = api.curl_raw(method, path, args);
        (status, body)
    };
    let (status, body) = typed(
        "POST",
        "/plugins/text/execute",
        &["-H", "content-type: text/plain", "--data-binary", "hi"],
    );
    assert_eq!(status, 200);
    let r: ApiResponse<ExecutionResult> = serde_json::from_str(&body).unwrap();
    let data = r.data.unwrap();
    assert!(r.success && r.error.is_none());
    assert_eq!((data.plugin.as_str(), data.output.as_str()), ("text", "HI"));
    assert!(data.duration_ms < 60_000);
    for (method, path) in [
        ("GET", "/plugins/nope"),
        ("POST", "/plugins/nope/execute"),
        ("GET", "/no/such/route"),
        ("DELETE", "/plugins"),
    ] {
        let (status, body) = typed(method, path, &["-H", "content-type: text/plain", "-d", "x"]);
        assert!(status >= 400, "{method} {path}: {status}");
        let r: ApiResponse<serde_json::Value> =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
        assert!(!r.success && r.data.is_none(), "{body}");
        assert!(r.error.is_some_and(|e| !e.is_empty()), "{body}");
    }
    for path in ["/plugins", "/plugins/echo", "/health"] {
        let (_, body) = typed("GET", path, &[]);
        let r: ApiResponse<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert!(
            r.success && r.data.is_some() && r.error.is_none(),
            "{path}: {body}"
        );
    }
}

/// Scoped tokens over real HTTP: each scope, a plugin list, the metrics token, and a
/// bad token file refused at start with its field named.
#[test]
fn scoped_tokens_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let extra = format!(
        "  tokens:\n    - {{file: {}, scope: read}}\n    - {{file: {}, scope: execute, plugins: [hash]}}\n    - {{file: {}, scope: manage}}\n  metrics_token_file: {}\n",
        file("ro", "r3ad"),
        file("hash", "h4sh"),
        file("admin", "adm1n"),
        file("metrics", "m3trics"),
    );
    let api = Api::start(&extra);
    let bearer = |t: &str| format!("authorization: Bearer {t}");
    let text = ["-H", "content-type: text/plain", "--data-binary", "abc"];
    let call = |route: &str, method: &str, token: Option<&str>, body: bool| {
        let header = token.map(bearer);
        let mut args: Vec<&str> = Vec::new();
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        if body {
            args.extend(text);
        }
        api.curl(method, route, &args)
    };
    let (status, v) = call("/plugins/hash/execute", "POST", Some("h4sh"), true);
    assert_eq!(status, 200, "{v}");
    let (status, v) = call("/plugins/text/execute", "POST", Some("h4sh"), true);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not run plugin `text`"),
        "{v}"
    );
    let (status, v) = call("/plugins/hash/execute", "POST", Some("r3ad"), true);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("`execute` scope"),
        "{v}"
    );
    let (status, v) = call("/plugins/hash/disable", "PUT", Some("h4sh"), false);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("`manage` scope"),
        "{v}"
    );
    assert_eq!(
        call("/plugins/hash/disable", "PUT", Some("adm1n"), false).0,
        200
    );
    assert_eq!(
        call("/plugins/hash/enable", "PUT", Some("adm1n"), false).0,
        200
    );
    assert_eq!(call("/jobs", "GET", Some("r3ad"), false).0, 200);
    assert_eq!(call("/jobs", "GET", None, false).0, 401);
    assert_eq!(
        call("/plugins", "GET", None, false).0,
        200,
        "listing stays open"
    );
    assert_eq!(call("/metrics", "GET", None, false).0, 401);
    assert_eq!(call("/metrics", "GET", Some("r3ad"), false).0, 403);
    assert_eq!(call("/metrics", "GET", Some("m3trics"), false).0, 200);
    // A scoped token whose file is missing: exit 78 at start, the field named.
    let (code, err) = api.bus.run_daemon_once(
        api._plugins.path(),
        "server:\n  enabled: true\n  port: 0\n  tokens:\n    - {file: /nonexistent/t, scope: read}\n",
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("server.tokens[0].file"), "{err}");
}

/// The OpenAPI document is the contract: schemathesis generates requests for every
/// route from it (valid ones and negative ones), sends them to the real server with a
/// token of every scope, and checks each answer (status documented, body matching its
/// schema, content type, headers, negative data refused) with `--checks all`.
#[test]
fn the_openapi_contract_holds_under_schemathesis() {
    let which = Command::new("schemathesis").arg("--version").output();
    assert!(
        which.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is needed for this test (pip install schemathesis; .ci/run installs it): {which:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "contract-token\n").unwrap();
    let api = Api::start(&format!("  token_file: {}\n", token.display()));
    let mut cmd = Command::new("schemathesis");
    cmd.args([
        "run",
        "--checks",
        "all",
        "--max-examples",
        "10",
        "--seed",
        "1",
    ])
    .args(["--workers", "1", "--request-timeout", "30", "--no-color"])
    .args(["-H", "Authorization: Bearer contract-token"])
    .args(["--url", &api.base])
    .arg(format!("{}/openapi.json", api.base))
    .env("SCHEMATHESIS_HOOKS", "")
    .current_dir(dir.path());
    let (code, out, err) = run(cmd);
    assert_eq!(
        code, 0,
        "schemathesis found contract violations:\n{out}\n{err}"
    );
    // It ran the routes (not zero operations), and the daemon still serves.
    assert!(out.contains("passed"), "{out}");
    assert_eq!(api.curl("GET", "/health", &[]).0, 200);
}
