//! Jobs are their owner's, no caller starves the others, job objects follow the job
//! table, and event streams cannot take the slots short requests need: attacks over
//! real HTTP and a real bus, each of which once worked.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use dynplug_tests::{busctl_call, run, rust_plugin, Daemon, PluginDir, PrivateBus};
use serde_json::Value;

/// A daemon serving REST on a free port with `extra` under `server:`.
struct Api {
    bus: PrivateBus,
    base: String,
    _daemon: Daemon,
    _plugins: PluginDir,
}

impl Api {
    fn start(server_extra: &str, extra: &str) -> Api {
        let bus = PrivateBus::start_open();
        let plugins = PluginDir::with_examples();
        plugins.add(&rust_plugin("count"), "count.so");
        let config = format!("server:\n  enabled: true\n  port: 0\n{server_extra}{extra}");
        let daemon = Daemon::start(&bus, plugins.path(), &config);
        let address = bus.manager_property("ApiAddress");
        let address = address.trim().trim_start_matches("s ").trim_matches('"');
        Api {
            base: format!("http://{address}"),
            bus,
            _daemon: daemon,
            _plugins: plugins,
        }
    }

    /// curl with a 20 s deadline; (status, JSON body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "content-type: text/plain", "--data-binary", b]);
        }
        cmd.arg(format!("{}{path}", self.base));
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "curl {path}: {err}");
        let (body, status) = out.rsplit_once('\n').expect("status line");
        (
            status.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        )
    }

    /// `GET /events` as `token` for `secs` seconds (a deadline), what it received.
    fn events_for(&self, token: &str, secs: u32) -> std::process::Child {
        Command::new("curl")
            .args(["-s", "-N", "--max-time", &secs.to_string()])
            .args(["-H", &format!("authorization: Bearer {token}")])
            .arg(format!("{}/events", self.base))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn token_files(dir: &std::path::Path, tokens: &[(&str, &str, &str)]) -> String {
    let mut yaml = String::from("  tokens:\n");
    for (name, scope, plugins) in tokens {
        let path = dir.join(name);
        std::fs::write(&path, name).unwrap();
        yaml.push_str(&format!(
            "    - {{file: {}, scope: {scope}{plugins}}}\n",
            path.display()
        ));
    }
    yaml
}

/// Item 8: a token sees the jobs started with it and nobody else's — not another
/// token's, not a D-Bus user's — over the job routes and `/events`; without tokens,
/// jobs show no output.
#[tokio::test(flavor = "multi_thread")]
async fn rest_callers_see_only_their_own_jobs_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_files(
        dir.path(),
        &[
            ("tok-a", "execute", ", plugins: [echo]"),
            ("tok-b", "execute", ", plugins: [hash]"),
            ("tok-r", "read", ""),
        ],
    );
    let api = Api::start(&tokens, "");
    let b_events = api.events_for("tok-b", 6);
    let r_events = api.events_for("tok-r", 6);
    let a_events = api.events_for("tok-a", 6);
    // Let the three streams subscribe before anything happens.
    std::thread::sleep(Duration::from_millis(500));

    let (status, v) = api.call(
        "POST",
        "/plugins/echo/jobs",
        Some("tok-a"),
        Some("a-secret"),
    );
    assert_eq!(status, 202, "{v}");
    let a_job = v["data"]["id"].as_u64().unwrap();
    let m = api.bus.manager_proxy().await;
    let dbus_job = m.start_job("hash", "dbus-secret").await.unwrap();
    let dbus_id: u64 = dbus_job
        .as_str()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // A's own job, whole, once it ended.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = api.call("GET", &format!("/jobs/{a_job}"), Some("tok-a"), None);
        if v["data"]["state"] == "succeeded" {
            assert_eq!(v["data"]["output"], "a-secret");
            break;
        }
        assert!(Instant::now() < deadline, "job {a_job} never ended: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nobody else sees it, nor the D-Bus user's job.
    for token in ["tok-b", "tok-r"] {
        let (status, v) = api.call("GET", "/jobs", Some(token), None);
        assert_eq!(
            (status, v["data"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{token}: {v}"
        );
        for id in [a_job, dbus_id] {
            let (status, v) = api.call("GET", &format!("/jobs/{id}"), Some(token), None);
            assert!(
                matches!(status, 403 | 404),
                "{token} reads job {id}: {status} {v}"
            );
            assert!(!v.to_string().contains("secret"), "{v}");
        }
    }
    let (_, v) = api.call("GET", "/jobs", Some("tok-a"), None);
    let ids: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    assert_eq!(ids, [a_job], "{v}");
    let (status, _) = api.call("DELETE", &format!("/jobs/{dbus_id}"), Some("tok-a"), None);
    assert!(matches!(status, 403 | 404), "{status}");

    let streamed = |child: std::process::Child| {
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    let (a, b, r) = (streamed(a_events), streamed(b_events), streamed(r_events));
    assert!(
        a.contains("a-secret"),
        "the owner's stream has its job: {a}"
    );
    for (who, text) in [("tok-b", &b), ("tok-r", &r)] {
        assert!(
            !text.contains("secret") && !text.contains(&format!("\"id\":{a_job},")),
            "{who} saw someone else's job: {text}"
        );
    }
}

/// Item 8, without tokens: the API shows REST jobs' state, never what the plugin said.
#[test]
fn without_tokens_jobs_show_no_output() {
    let api = Api::start("", "");
    let (status, v) = api.call("POST", "/plugins/echo/jobs", None, Some("open-secret"));
    assert_eq!(status, 202, "{v}");
    let id = v["data"]["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = api.call("GET", &format!("/jobs/{id}"), None, None);
        if v["data"]["state"] == "succeeded" {
            assert!(v["data"]["output"].is_null(), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "never ended: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, v) = api.call("GET", "/jobs", None, None);
    assert!(!v.to_string().contains("open-secret"), "{v}");
}

fn as_user(bus: &PrivateBus, uid: u32, program: &str) -> Command {
    let mut cmd = bus.command("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        program,
    ]);
    cmd
}

fn start_job(cmd: Command) -> (i32, String, String) {
    busctl_call(
        cmd,
        [
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            "StartJob",
            "ss",
        ],
        &["count", "600"],
    )
}

/// Item 9: one unprivileged user holding their share cannot keep anyone else from
/// starting jobs — another user, root — over D-Bus or REST.
#[test]
fn one_caller_cannot_starve_the_others() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root, to act as others");
    let api = Api::start("", "jobs:\n  max_running: 8\n  max_running_per_user: 2\n");
    let nobody = 65534;
    for _ in 0..2 {
        let (code, out, err) = start_job(as_user(&api.bus, nobody, "busctl"));
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = start_job(as_user(&api.bus, nobody, "busctl"));
    assert_ne!(code, 0, "a third job for nobody: {out}");
    assert!(err.contains("jobs.max_running_per_user"), "{err}");
    // Someone else, REST, and root still start jobs.
    let (code, out, err) = start_job(as_user(&api.bus, 1, "busctl"));
    assert_eq!(code, 0, "another user refused: {out}{err}");
    let (status, v) = api.call("POST", "/plugins/count/jobs", None, Some("600"));
    assert_eq!(status, 202, "{v}");
    let (code, out, err) = start_job(api.bus.command("busctl"));
    assert_eq!(code, 0, "root refused: {out}{err}");
}

/// Item 10: after a burst of jobs, the job objects on the bus are exactly the jobs the
/// daemon still knows, whatever became of the events that announced them.
#[tokio::test(flavor = "multi_thread")]
async fn job_objects_follow_the_job_table_after_a_burst() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let config = "jobs:\n  max_running: 64\n  max_finished: 0\n  keep_finished_ms: 0\n";
    let _d = Daemon::start(&bus, plugins.path(), config);
    let m = bus.manager_proxy().await;
    let calls = (0..600).map(|i| {
        let m = m.clone();
        async move { m.start_job("echo", &i.to_string()).await }
    });
    let started = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert!(started > 0, "no job started");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut cmd = bus.command("busctl");
        cmd.args(["--user", "tree", "--list", "org.dynplug.Manager"]);
        let tree = run(cmd).1;
        let objects = tree.lines().filter(|l| l.contains("/jobs/")).count();
        let listed = m.list_jobs().await.unwrap().len();
        if objects == listed && listed == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{objects} job objects on the bus, {listed} jobs listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item 15: more `GET /events` subscribers than connections, none of them reading: the
/// extra ones are refused, and `/health` still answers.
#[test]
fn never_reading_subscribers_cannot_starve_requests() {
    let api = Api::start(
        "  max_connections: 64\n  max_event_streams: 8\n  max_event_streams_per_client: 8\n",
        "",
    );
    let address = api.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..70 {
        let mut s = std::net::TcpStream::connect(&address).unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        held.push(s);
    }
    // A request beyond the streams' share is answered (429) at once.
    let mut extra = std::net::TcpStream::connect(&address).unwrap();
    extra
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = [0u8; 12];
    extra.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 429", "{}", String::from_utf8_lossy(&head));
    drop(held.drain(8..));
    // Short requests keep their slots while the streams stay open, unread.
    let (status, v) = api.call("GET", "/health", None, None);
    assert_eq!(status, 200, "{v}");
    drop(held);
}

/// Someone else's job and a job that does not exist answer alike, word for word.
#[tokio::test(flavor = "multi_thread")]
async fn another_callers_job_reads_as_one_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_files(dir.path(), &[("tok-a", "execute", "")]);
    let api = Api::start(&tokens, "");
    let m = api.bus.manager_proxy().await;
    let theirs = m.start_job("count", "300").await.unwrap();
    let id: u64 = theirs.as_str().rsplit('/').next().unwrap().parse().unwrap();
    let missing = id + 1000;
    for method in ["GET", "DELETE"] {
        let (s1, v1) = api.call(method, &format!("/jobs/{id}"), Some("tok-a"), None);
        let (s2, v2) = api.call(method, &format!("/jobs/{missing}"), Some("tok-a"), None);
        assert_eq!((s1, s2), (404, 404), "{v1} {v2}");
        assert_eq!(
            v1["error"].as_str().unwrap().replace(&id.to_string(), "N"),
            v2["error"]
                .as_str()
                .unwrap()
                .replace(&missing.to_string(), "N"),
        );
    }
}

/// Two tokens with one value would be one caller with two grants: refused at start.
#[test]
fn a_token_value_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [("one", "same-secret"), ("two", "  same-secret\n")] {
        std::fs::write(dir.path().join(name), value).unwrap();
    }
    let config = format!(
        "server:\n  enabled: true\n  port: 0\n  tokens:\n    - {{file: {}, scope: read}}\n    - {{file: {}, scope: manage}}\n",
        dir.path().join("one").display(),
        dir.path().join("two").display()
    );
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let (code, err) = bus.run_daemon_once(plugins.path(), &config, &[]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("same value"), "{err}");
}

/// A client with a valid token that trickles its request body holds its connection no
/// longer than the head's deadline: 408, and `/health` answers meanwhile.
#[test]
fn a_trickled_body_meets_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_files(dir.path(), &[("tok-a", "execute", "")]);
    let api = Api::start(&format!("{tokens}  header_timeout_ms: 1000\n"), "");
    let address = api.base.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&address).unwrap();
    s.write_all(b"POST /plugins/echo/execute HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tok-a\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\nx")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408", "{}", String::from_utf8_lossy(&head));
    let (status, v) = api.call("GET", "/health", None, None);
    assert_eq!(status, 200, "{v}");
}

/// A call whose HTTP request gave up (here: its request timeout) is cancelled, not
/// left to hold its plugin's place for nobody: with one place, the next call gets it.
#[test]
fn an_execute_whose_request_gave_up_is_cancelled() {
    let api = Api::start(
        "  request_timeout_ms: 2000\n",
        "plugins:\n  count:\n    timeout_ms: 600000\n    max_concurrency: 1\n",
    );
    let (status, v) = api.call("POST", "/plugins/count/execute", None, Some("600"));
    assert_eq!(status, 503, "{v}");
    let (status, v) = api.call("POST", "/plugins/count/execute", None, Some("1"));
    assert_eq!(
        status, 200,
        "the abandoned call still holds the only place: {v}"
    );
}
