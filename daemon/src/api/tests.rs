//! `router(state)` in process, without a socket (tower's `oneshot`): every route and
//! the statuses it answers, against a real manager with a real C plugin. (A plugin that
//! hangs would keep the test's runtime from shutting down, so 504 is left to the
//! end-to-end tests in tests/e2e/rest.rs.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use dynplug_core::config::{Config, ServerConfig};
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, Settings};
use crate::logging::{self, LogTarget};
use crate::state::{Overrides, Shared};

/// A manager with the hostile fixture plugin (as `hostile`, in process), wrapped in the
/// shared state.
async fn shared(dir: &Path) -> Arc<Shared> {
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/c/hostile.c");
    dynplug_core::testkit::compile_c(&source, &plugins.join("hostile.so"), &[]).unwrap();
    let mut config = Config::parse(
        "plugins:\n  hostile:\n    timeout_ms: 300\n    max_output_bytes: 1000\n",
        Path::new("test.yaml"),
    )
    .unwrap();
    config.plugins_dir = plugins;
    let policy = TrustPolicy {
        required_owner: None,
        check_modes: false,
    };
    let (manager, _) = Manager::start(config, &dir.join("state"), policy)
        .await
        .unwrap();
    let log = logging::init("warn", LogTarget::Stderr);
    Arc::new(Shared::new(
        manager,
        dir.join("config.yaml"),
        false,
        Overrides::default(),
        log,
    ))
}

fn settings(dir: &Path, extra: &str) -> Settings {
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let indented: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "server:\n  enabled: true\n  token_file: {}\n  max_body_bytes: 64\n{indented}",
        token.display()
    );
    let config: ServerConfig = Config::parse(&yaml, Path::new("test.yaml")).unwrap().server;
    Settings::from_config(&config).unwrap()
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let mut request = request;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn execute(name: &str, content_type: &str, body: &str, token: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post(format!("/plugins/{name}/execute")).header("content-type", content_type);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn every_route_and_status_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path()).await;
    let app = router(Arc::clone(&shared), &settings(dir.path(), ""));
    let ok = Some("s3cret");

    let (status, v) = send(&app, get("/plugins")).await;
    assert_eq!(
        (status, v["data"][0]["name"].as_str()),
        (StatusCode::OK, Some("hostile"))
    );
    let (status, v) = send(&app, get("/plugins/hostile")).await;
    assert_eq!(
        (status, v["data"]["state"].as_str()),
        (StatusCode::OK, Some("loaded"))
    );
    let (status, v) = send(&app, get("/plugins/nope")).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert!(v["error"].is_string() && v["data"].is_null());

    let (status, v) = send(&app, execute("hostile", "text/plain", "echo hi", ok)).await;
    assert_eq!(
        (status, v["data"]["output"].as_str()),
        (StatusCode::OK, Some("hi"))
    );
    assert!(v["data"]["duration_ms"].is_u64());
    let (status, v) = send(
        &app,
        execute("hostile", "application/json", r#"{"input":"echo j"}"#, ok),
    )
    .await;
    assert_eq!(
        (status, v["data"]["output"].as_str()),
        (StatusCode::OK, Some("j"))
    );
    let cases = [
        (
            execute("hostile", "application/json", "{nope", ok),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            execute("hostile", "text/plain", "echo x", None),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            execute("hostile", "text/plain", "echo x", Some("wrong")),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            execute("nope", "text/plain", "x", ok),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            execute("hostile", "text/plain", &"x".repeat(100), ok),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            execute("hostile", "image/png", "x", ok),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            execute("hostile", "text/plain", "big 5000", ok),
            StatusCode::BAD_GATEWAY,
            "output_too_large",
        ),
        (
            Request::delete("/plugins").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (get("/no/such/route"), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (request, want, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, v) = send(&app, request).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (want, Some(code)),
            "{what}: {v}"
        );
        assert_eq!(v["success"], false, "{what}");
    }

    let toggle = |verb: &str, token: Option<&str>| {
        let mut request = Request::put(format!("/plugins/hostile/{verb}"));
        if let Some(t) = token {
            request = request.header("authorization", format!("bearer {t}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let (status, v) = send(&app, toggle("disable", ok)).await;
    assert_eq!(
        (status, v["data"]["changed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, v) = send(&app, execute("hostile", "text/plain", "echo x", ok)).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("disabled"))
    );
    let (status, _) = send(&app, toggle("enable", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = send(&app, toggle("enable", ok)).await;
    assert_eq!(
        (status, v["data"]["enabled"].as_bool()),
        (StatusCode::OK, Some(true))
    );

    let (status, v) = send(&app, get("/health")).await;
    assert_eq!(
        (status, v["data"]["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let response = app.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, v) = send(&app, get("/openapi.json")).await;
    assert_eq!(
        (status, v["openapi"].as_str().map(|s| &s[..2])),
        (StatusCode::OK, Some("3."))
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path()).await;
    let app = router(
        shared,
        &settings(dir.path(), "rate_limit:\n  per_second: 1\n  burst: 2\n"),
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(&app, get("/health")).await);
    }
    let limited = statuses
        .iter()
        .find(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("a request over the limit");
    assert_eq!(limited.1["code"], "rate_limited");
}

/// Waits (on the manager's events, subscribed before the job started) for job `id` to
/// end.
async fn job_ended(
    events: &mut tokio::sync::broadcast::Receiver<dynplug_core::events::Event>,
    id: u64,
) {
    use dynplug_core::events::Event;
    loop {
        if let Ok(Event::JobChanged {
            id: i,
            finished: true,
        }) = events.recv().await
        {
            if i == id {
                return;
            }
        }
    }
}

#[tokio::test]
async fn job_routes_start_show_list_and_cancel() {
    use dynplug_core::jobs::JobOwner;
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path()).await;
    let app = router(Arc::clone(&shared), &settings(dir.path(), ""));
    let mut events = shared.manager.subscribe();
    let start = |body: &str, token: Option<&str>| {
        let mut request =
            Request::post("/plugins/hostile/jobs").header("content-type", "text/plain");
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        request.body(Body::from(body.to_owned())).unwrap()
    };
    let authorized = |request: axum::http::request::Builder| {
        request
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .unwrap()
    };

    // 202, the job, and where to find it.
    let mut request = start("echo job", Some("s3cret"));
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id: u64 = location.trim_start_matches("/jobs/").parse().unwrap();
    job_ended(&mut events, id).await;
    let (status, v) = send(&app, authorized(Request::get(&location))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (v["data"]["state"].as_str(), v["data"]["output"].as_str()),
        (Some("succeeded"), Some("job"))
    );
    assert!(v["data"]["finished_usec"].as_u64() >= v["data"]["started_usec"].as_u64());

    // A failed job carries the code execute would have answered.
    let (status, v) = send(&app, start("big 5000", Some("s3cret"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let failed = v["data"]["id"].as_u64().unwrap();
    job_ended(&mut events, failed).await;
    let (_, v) = send(&app, authorized(Request::get(format!("/jobs/{failed}")))).await;
    assert_eq!(
        (v["data"]["state"].as_str(), v["data"]["code"].as_str()),
        (Some("failed"), Some("output_too_large"))
    );
    assert!(v["data"]["output"].is_null());

    let (status, v) = send(&app, authorized(Request::get("/jobs"))).await;
    assert_eq!(
        (status, v["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(2))
    );

    // A job started over D-Bus belongs to its user: REST neither sees nor cancels it.
    let theirs = shared
        .manager
        .start_job("hostile", "echo theirs".into(), JobOwner::Uid(1000))
        .unwrap();
    for request in [
        Request::delete(format!("/jobs/{}", theirs.id())),
        Request::get(format!("/jobs/{}", theirs.id())),
    ] {
        let (status, v) = send(&app, authorized(request)).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }
    let (_, v) = send(&app, authorized(Request::get("/jobs"))).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    // Cancelling an ended REST job is accepted and changes nothing.
    let (status, v) = send(&app, authorized(Request::delete(&location))).await;
    assert_eq!(
        (status, v["data"]["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded"))
    );
    let cases = [
        (start("echo x", None), StatusCode::UNAUTHORIZED),
        (get("/jobs"), StatusCode::UNAUTHORIZED),
        (get("/events"), StatusCode::UNAUTHORIZED),
        (authorized(Request::get("/jobs/999")), StatusCode::NOT_FOUND),
        (authorized(Request::get("/jobs/abc")), StatusCode::NOT_FOUND),
        (
            {
                let mut r = start("x", Some("s3cret"));
                *r.uri_mut() = "/plugins/nope/jobs".parse().unwrap();
                r
            },
            StatusCode::NOT_FOUND,
        ),
    ];
    for (request, want) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, v) = send(&app, request).await;
        assert_eq!(status, want, "{what}: {v}");
    }
}

#[tokio::test]
async fn scoped_tokens_allow_what_their_scope_and_plugins_allow() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path()).await;
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let extra = format!(
        "tokens:\n  - {{file: {}, scope: read}}\n  - {{file: {}, scope: execute, plugins: [hostile]}}\n  - {{file: {}, scope: execute, plugins: [other]}}\nmetrics_token_file: {}\n",
        file("ro", "r3ad"),
        file("ex", "ex3c"),
        file("ex2", "0ther"),
        file("m", "m3trics"),
    );
    let app = router(Arc::clone(&shared), &settings(dir.path(), &extra));
    let with = |request: axum::http::request::Builder, token: Option<&str>| {
        let request = match token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        request
            .header("content-type", "text/plain")
            .body(Body::from("echo hi"))
            .unwrap()
    };
    let run = || Request::post("/plugins/hostile/execute");
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (with(Request::get("/plugins"), None), StatusCode::OK, ""),
        (with(run(), None), StatusCode::UNAUTHORIZED, ""),
        (
            with(run(), Some("r3ad")),
            StatusCode::FORBIDDEN,
            "the `execute` scope; this one has `read`",
        ),
        (with(run(), Some("ex3c")), StatusCode::OK, ""),
        (
            with(run(), Some("0ther")),
            StatusCode::FORBIDDEN,
            "may not run plugin `hostile`",
        ),
        (with(run(), Some("s3cret")), StatusCode::OK, ""),
        (
            with(Request::put("/plugins/hostile/disable"), Some("ex3c")),
            StatusCode::FORBIDDEN,
            "the `manage` scope",
        ),
        (
            with(Request::get("/jobs"), None),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            with(Request::get("/jobs"), Some("r3ad")),
            StatusCode::OK,
            "",
        ),
        (
            with(Request::get("/metrics"), None),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            with(Request::get("/metrics"), Some("r3ad")),
            StatusCode::FORBIDDEN,
            "metrics token",
        ),
        (
            with(Request::get("/metrics"), Some("m3trics")),
            StatusCode::OK,
            "",
        ),
        (
            with(Request::get("/metrics"), Some("s3cret")),
            StatusCode::OK,
            "",
        ),
        (
            with(Request::get("/metrics"), Some("wrong")),
            StatusCode::FORBIDDEN,
            "",
        ),
    ];
    for (request, want, says) in cases {
        let what = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.headers().get("authorization")
        );
        let response = {
            let mut request = request;
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
            app.clone().oneshot(request).await.unwrap()
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
    }
    // Cancelling a job is running its plugin: the plugin list applies, and the job is
    // the token's own.
    let (status, v) = send(
        &app,
        Request::post("/plugins/hostile/jobs")
            .header("authorization", "Bearer ex3c")
            .header("content-type", "text/plain")
            .body(Body::from("sleep 50"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["data"]["id"].as_u64().unwrap();
    let cancel = |token: &str| with(Request::delete(format!("/jobs/{id}")), Some(token));
    // Another token neither cancels it nor learns which plugin it runs: 404, as for a
    // job that does not exist.
    let (status, v) = send(&app, cancel("0ther")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(!v.to_string().contains("hostile"), "{v}");
    let (status, _) = send(&app, cancel("ex3c")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

/// Every status a route that runs a plugin on a body can answer is in the document,
/// from one shared list (execute and jobs alike).
#[test]
fn run_routes_document_every_refusal() {
    let doc = serde_json::to_value(super::openapi::document()).unwrap();
    for (path, method) in [
        ("/plugins/{name}/execute", "post"),
        ("/plugins/{name}/jobs", "post"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in [
            "400", "401", "403", "404", "409", "413", "415", "429", "503",
        ] {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} does not document {status}: {responses}"
            );
        }
    }
}
