//! Plugins from OCI registries, through `dynplug-pack`: a real registry (Debian's
//! `docker-registry`, the CNCF distribution registry) on a free loopback port, with and
//! without basic authentication, and small hostile servers written here. Where
//! `docker-registry` is not installed the registry tests print SKIP (`.ci/run`
//! installs it, so in CI they run).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynplug_core::signature::keygen;
use dynplug_tests::{compile_c, set_mode, tool, wait_with_deadline, Daemon, PluginDir, PrivateBus};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The test registry's user and password; `HTPASSWD` is its bcrypt line.
const USER: &str = "tester";
const PASSWORD: &str = "test-registry-password-7Qx";
const HTPASSWD: &str = "tester:$2b$05$3hWV3y.LmXx2qiuFeYXO8uWuxUOD2vuNr9OxZN/skZzWkoW.gsnqa";
pub(crate) const PLUGIN: &str = "ocidemo";
/// The test token service's token, and the basic credentials it takes (base64 of
/// `USER:PASSWORD`).
const TOKEN: &str = "tok-7c1e55";
const BASIC: &str = "dGVzdGVyOnRlc3QtcmVnaXN0cnktcGFzc3dvcmQtN1F4";

/// Exit codes of dynplug-pack.
const NOT_FOUND: i32 = 3;
const SIGNATURE_REFUSED: i32 = 4;
const UNREACHABLE: i32 = 5;
const REFUSED: i32 = 6;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `docker-registry serve` on a free loopback port, its storage in a temporary directory.
pub(crate) struct Registry {
    child: std::process::Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    /// Starts one (with htpasswd basic authentication if `auth`), or None after printing
    /// SKIP where the registry is not installed.
    pub(crate) fn start(auth: bool) -> Option<Registry> {
        Registry::start_with(auth, None)
    }

    /// Like [`Registry::start`], serving TLS with `tls` (certificate, key) if given.
    fn start_with(auth: bool, tls: Option<(&Path, &Path)>) -> Option<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            eprintln!("SKIP: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if auth {
            std::fs::write(dir.path().join("htpasswd"), format!("{HTPASSWD}\n")).unwrap();
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, dir, addr };
        registry.wait_ready();
        Some(registry)
    }

    /// The registry has no readiness signal: poll `GET /v2/` until it answers.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 8];
                if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry at {} did not answer GET /v2/ within 20 s:\n{}",
                self.addr,
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// Where the filesystem storage driver keeps a blob's bytes.
    fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two versions of one plugin, keys to sign them, and a directory of trusted keys.
pub(crate) struct Plugins {
    dir: tempfile::TempDir,
    pub(crate) v1: PathBuf,
    pub(crate) v2: PathBuf,
    pub(crate) key: PathBuf,
    untrusted_key: PathBuf,
    pub(crate) keys: PathBuf,
}

impl Plugins {
    pub(crate) fn build() -> Plugins {
        let dir = tempfile::tempdir().unwrap();
        let build = |version: &str, tag: &str| {
            let out = dir.path().join(format!("{PLUGIN}-{version}.so"));
            compile_c(
                "tests/fixtures/c/marked.c",
                &out,
                &[
                    &format!("PLUGIN_NAME=\"{PLUGIN}\""),
                    &format!("PLUGIN_VERSION=\"{version}\""),
                    &format!("REPLY_TAG=\"{tag}:\""),
                ],
            );
            out
        };
        let v1 = build("1.0.0", "v1");
        let v2 = build("1.2.0", "v2");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        set_mode(&keys, 0o755);
        let (secret, public) = keygen().unwrap();
        std::fs::write(keys.join("build.pub"), public).unwrap();
        set_mode(&keys.join("build.pub"), 0o644);
        let key = dir.path().join("build.key");
        std::fs::write(&key, secret).unwrap();
        let untrusted_key = dir.path().join("other.key");
        std::fs::write(&untrusted_key, keygen().unwrap().0).unwrap();
        Plugins {
            dir,
            v1,
            v2,
            key,
            untrusted_key,
            keys,
        }
    }

    fn credentials(&self, password: &str) -> PathBuf {
        let path = self.dir.path().join(format!("cred-{}", password.len()));
        std::fs::write(&path, format!("{USER}:{password}\n")).unwrap();
        path
    }
}

/// Runs dynplug-pack with `args` (within 30 s); (exit code, stdout, stderr).
fn pack(args: &[&str]) -> (i32, String, String) {
    let child = tool("dynplug-pack")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dynplug-pack");
    let out = wait_with_deadline(child, &format!("dynplug-pack {args:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn push(file: &Path, key: Option<&Path>, reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["push".to_owned(), "--insecure-http".to_owned()];
    if let Some(k) = key {
        args.extend(["--key".to_owned(), k.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([file.display().to_string(), reference.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = pack(&args);
    assert_eq!(code, 0, "push {reference}: {out}{err}");
    out.rsplit("published: ")
        .next()
        .map(|d| d.trim().to_owned())
        .expect("the digest published")
}

/// Pulls `reference` into `into` with the trusted keys; (exit code, stdout+stderr).
fn pull(p: &Plugins, into: &Path, reference: &str, extra: &[&str]) -> (i32, String) {
    let into = into.display().to_string();
    let keys = p.keys.display().to_string();
    let mut args = vec![
        "pull",
        "--insecure-http",
        "--json",
        "--into",
        &into,
        "--keys",
        &keys,
    ];
    args.extend(extra);
    args.push(reference);
    let (code, out, err) = pack(&args);
    (code, out + &err)
}

/// The names in `dir` (sorted).
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Where `needle` (the fixture's description, in its metadata section) is in `bytes`.
fn position(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the description is in the bytes")
}

fn execute(bus: &PrivateBus, input: &str) -> String {
    bus.manager_call("Execute", "ss", &[PLUGIN, input])
}

#[test]
fn registry_install_by_tag_range_and_digest_then_the_daemon_serves_each() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    let arm = format!("linux/arm64={}", p.v1.display());
    let d1 = push(
        &p.v1,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.0.0"),
        &["--file", &arm],
    );
    push(
        &p.v2,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.2.0"),
        &["--tag", "latest"],
    );

    let plugins = PluginDir::new();
    let (code, out) = pull(
        &p,
        plugins.path(),
        &reg.reference("dynplug/ocidemo:1.0.0"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#""version":"1.0.0""#) && out.contains("verified (key build)"),
        "{out}"
    );
    let installed = plugins.path().join("ocidemo.so");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&p.v1).unwrap()
    );
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);

    // The installed file and signature load in a daemon that enforces signatures.
    let bus = PrivateBus::start();
    let mut daemon = Daemon::start(
        &bus,
        plugins.path(),
        &format!(
            "trust:\n  signatures: enforcing\n  keys_dir: {}\n",
            p.keys.display()
        ),
    );
    assert!(
        execute(&bus, "hello").contains("v1:hello"),
        "{}",
        daemon.log()
    );

    // A range picks the highest matching tag; a reload serves it. Calls go on all the
    // while, and every one is answered, by one version or the other.
    let stop = AtomicBool::new(false);
    let answers = std::thread::scope(|s| {
        let caller = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) && answers.len() < 2000 {
                answers.push(execute(&bus, "inflight"));
            }
            answers
        });
        let (code, out) = pull(
            &p,
            plugins.path(),
            &reg.reference("dynplug/ocidemo@^1"),
            &[],
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(r#""version":"1.2.0""#) && out.contains(r#""tag":"1.2.0""#),
            "{out}"
        );
        daemon.reload();
        assert!(
            execute(&bus, "hello").contains("v2:hello"),
            "{}",
            daemon.log()
        );
        stop.store(true, Ordering::SeqCst);
        caller.join().unwrap()
    });
    assert!(answers.len() > 1, "{answers:?}");
    eprintln!("{} calls during the pull and the reload", answers.len());
    for a in &answers {
        assert!(
            a.contains("v1:inflight") || a.contains("v2:inflight"),
            "unanswered: {a}"
        );
    }

    // A digest pins version 1.0.0 again (rollback by digest).
    let (code, out) = pull(
        &p,
        plugins.path(),
        &reg.reference(&format!("dynplug/ocidemo@{d1}")),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""version":"1.0.0""#), "{out}");
    daemon.reload();
    assert!(
        execute(&bus, "hello").contains("v1:hello"),
        "{}",
        daemon.log()
    );

    // A version requirement the artifact does not meet, a range nothing matches, a tag
    // and a repository that do not exist: refused, the installed file untouched.
    let (code, out) = pull(
        &p,
        plugins.path(),
        &reg.reference("dynplug/ocidemo:1.2.0"),
        &["--version", ">=2"],
    );
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("does not meet the required version"), "{out}");
    for missing in [
        "dynplug/ocidemo@^3",
        "dynplug/ocidemo:9.9.9",
        "dynplug/nothing:1",
    ] {
        let (code, out) = pull(&p, plugins.path(), &reg.reference(missing), &[]);
        assert_eq!(code, NOT_FOUND, "{missing}: {out}");
    }
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&p.v1).unwrap()
    );
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    assert!(execute(&bus, "still").contains("v1:still"));
}

#[test]
fn registry_tampered_layer_untrusted_key_and_unsigned_artifact_are_refused() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    let into = PluginDir::new();

    // The registry's storage is changed under it (same length, another reply tag).
    push(&p.v1, Some(&p.key), &reg.reference("t/tampered:1.0.0"), &[]);
    let bytes = std::fs::read(&p.v1).unwrap();
    let hex = dynplug_oci::digest::Digest::of(&bytes).hex().to_owned();
    let stored = reg.blob_file(&hex);
    let at = position(&bytes, b"leaves a mark");
    let mut evil = bytes.clone();
    evil[at] = b'x';
    std::fs::write(&stored, &evil).unwrap();
    let (code, out) = pull(&p, into.path(), &reg.reference("t/tampered:1.0.0"), &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("digest mismatch"), "{out}");
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );
    // Blobs are shared between repositories: put the real bytes back.
    std::fs::write(&stored, &bytes).unwrap();

    // Signed by a key the host does not trust.
    push(
        &p.v1,
        Some(&p.untrusted_key),
        &reg.reference("t/foreign:1.0.0"),
        &[],
    );
    let (code, out) = pull(&p, into.path(), &reg.reference("t/foreign:1.0.0"), &[]);
    assert_eq!(code, SIGNATURE_REFUSED, "{out}");
    assert!(
        out.contains("does not verify with any trusted key"),
        "{out}"
    );
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );

    // Unsigned: refused under enforcing; pulled and said to be unsigned under permissive.
    push(&p.v1, None, &reg.reference("t/unsigned:1.0.0"), &[]);
    let (code, out) = pull(&p, into.path(), &reg.reference("t/unsigned:1.0.0"), &[]);
    assert_eq!(code, SIGNATURE_REFUSED, "{out}");
    assert!(out.contains("is unsigned"), "{out}");
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );
    let (code, out) = pull(
        &p,
        into.path(),
        &reg.reference("t/unsigned:1.0.0"),
        &["--signatures", "permissive"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unsigned"), "{out}");
    assert_eq!(listing(into.path()), ["ocidemo.so"]);
}

#[test]
fn registry_with_basic_auth_takes_credentials_and_never_shows_them() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let p = Plugins::build();
    let good = p.credentials(PASSWORD);
    let bad = p.credentials("wrong-password-that-is-long-enough");
    let reference = reg.reference("auth/ocidemo:1.0.0");
    let into = PluginDir::new();
    let mut everything = String::new();

    let (code, out, err) = pack(&[
        "push",
        "--insecure-http",
        &p.v1.display().to_string(),
        &reference,
    ]);
    assert_eq!(code, REFUSED, "{out}{err}");
    assert!(err.contains("refused access (401)"), "{err}");
    everything += &(out + &err);
    let cred = good.display().to_string();
    push(
        &p.v1,
        Some(&p.key),
        &reference,
        &["--credentials-file", &cred],
    );

    let (code, out) = pull(&p, into.path(), &reference, &[]);
    assert_eq!(code, REFUSED, "{out}");
    everything += &out;
    let bad_cred = bad.display().to_string();
    let (code, out) = pull(
        &p,
        into.path(),
        &reference,
        &["--credentials-file", &bad_cred],
    );
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("check the credentials"), "{out}");
    everything += &out;
    let (code, out) = pull(&p, into.path(), &reference, &["--credentials-file", &cred]);
    assert_eq!(code, 0, "{out}");
    everything += &out;
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);

    // A malformed credentials file: its content is not echoed.
    let odd = p.dir.path().join("odd");
    std::fs::write(&odd, format!("{PASSWORD}\n")).unwrap();
    let (code, out) = pull(
        &p,
        into.path(),
        &reference,
        &["--credentials-file", &odd.display().to_string()],
    );
    assert_ne!(code, 0, "{out}");
    everything += &out;
    assert!(
        !everything.contains(PASSWORD),
        "the password was printed:\n{everything}"
    );
    assert!(
        !everything.contains("wrong-password"),
        "a password was printed:\n{everything}"
    );
}

/// A server on loopback that answers every connection with `answer` (given the
/// request's head), counting the bytes it managed to send and the connections it took.
pub(crate) struct Hostile {
    pub(crate) addr: String,
    sent: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    pub(crate) fn start(
        ip: &str,
        answer: impl Fn(&str, &mut TcpStream, &AtomicU64) + Send + Sync + 'static,
    ) -> Hostile {
        // Build the binaries first: the server's lifetime below is counted from here.
        dynplug_tests::binary("dynplug-pack");
        let listener = TcpListener::bind(format!("{ip}:0")).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (sent.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: it ends when told to, and after 60 s regardless.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                r.lock().unwrap().push(head.clone());
                answer(&head, &mut conn, &s);
            }
        });
        Hostile {
            addr,
            sent,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `total` bytes of `{` to `conn` in 64 KiB pieces, counting them, until the
/// peer goes away.
fn flood(conn: &mut TcpStream, sent: &AtomicU64, total: u64, chunked: bool) {
    let piece = vec![b'{'; 64 * 1024];
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut done = 0;
    while done < total {
        let ok = if chunked {
            conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| conn.write_all(&piece))
                .and_then(|()| conn.write_all(b"\r\n"))
        } else {
            conn.write_all(&piece)
        };
        if ok.is_err() {
            return;
        }
        done += piece.len() as u64;
        sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
}

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

fn pull_from(addr: &str, extra: &[&str]) -> (i32, String, Duration) {
    let into = tempfile::tempdir().unwrap();
    let into_s = into.path().display().to_string();
    let reference = format!("{addr}/h/ocidemo:1.0.0");
    let mut args = vec![
        "pull",
        "--insecure-http",
        "--into",
        &into_s,
        "--signatures",
        "off",
        "--timeout-secs",
        "2",
    ];
    args.extend(extra);
    args.push(&reference);
    let started = Instant::now();
    let (code, out, err) = pack(&args);
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );
    (code, out + &err, started.elapsed())
}

#[test]
fn a_100_mb_manifest_is_refused_before_or_while_reading_it() {
    let announced = Hostile::start("127.0.0.1", |_, conn, sent| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {HUNDRED_MB}\r\n\r\n"
        );
        let _ = conn.write_all(head.as_bytes());
        flood(conn, sent, HUNDRED_MB, false);
    });
    let (code, out, took) = pull_from(&announced.addr, &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(
        out.contains("larger than the 4194304 bytes allowed"),
        "{out}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let chunked = Hostile::start("127.0.0.1", |_, conn, sent| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = conn.write_all(head.as_bytes());
        flood(conn, sent, HUNDRED_MB, true);
    });
    let (code, out, _) = pull_from(&chunked.addr, &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(
        out.contains("larger than the 4194304 bytes allowed"),
        "{out}"
    );
    // The reader stopped: far less than 100 MB left the server (socket buffers aside).
    let sent = chunked.sent.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "{sent} bytes were sent");
}

#[test]
fn a_stalling_registry_times_out_and_garbage_is_refused() {
    let stall = Hostile::start("127.0.0.1", |_, conn, _| {
        // Holds the connection without a word until the client gives up.
        let mut buf = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = conn.read(&mut buf);
    });
    let (code, out, took) = pull_from(&stall.addr, &[]);
    assert_eq!(code, UNREACHABLE, "{out}");
    assert!(
        out.contains("did not answer the answer's head within 2 s"),
        "{out}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let trickle = Hostile::start("127.0.0.1", |_, conn, _| {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{");
        let mut buf = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = conn.read(&mut buf);
    });
    let (code, out, _) = pull_from(&trickle.addr, &[]);
    assert_eq!(code, UNREACHABLE, "{out}");

    let not_http = Hostile::start("127.0.0.1", |_, conn, _| {
        let _ = conn.write_all(b"\x00\xffSSH-2.0-garbage\r\n\r\n\x07\x08");
    });
    let (code, out, _) = pull_from(&not_http.addr, &[]);
    assert!(code == UNREACHABLE || code == REFUSED, "{code}: {out}");

    let not_json = Hostile::start("127.0.0.1", |_, conn, _| {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!");
    });
    let (code, out, _) = pull_from(&not_json.addr, &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("not manifest JSON"), "{out}");
}

#[test]
fn a_redirect_to_another_host_is_refused_unless_allowed_and_then_gets_no_credentials() {
    let elsewhere = Hostile::start("127.0.0.2", |_, conn, _| {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    });
    let target = elsewhere.addr.clone();
    let registry = Hostile::start("127.0.0.1", move |head, conn, _| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target}{path}\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = conn.write_all(answer.as_bytes());
    });
    let creds = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(creds.path(), format!("{USER}:{PASSWORD}\n")).unwrap();
    let cred = creds.path().display().to_string();

    let (code, out, _) = pull_from(&registry.addr, &["--credentials-file", &cred]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("redirected to another host"), "{out}");
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    let sent_auth = registry.requests();
    assert!(
        sent_auth
            .iter()
            .all(|h| h.to_ascii_lowercase().contains("authorization: basic")),
        "{sent_auth:?}"
    );

    let (code, out, _) = pull_from(
        &registry.addr,
        &[
            "--credentials-file",
            &cred,
            "--allow-redirect-host",
            &elsewhere.addr,
        ],
    );
    assert_eq!(code, NOT_FOUND, "{out}");
    let there = elsewhere.requests();
    assert_eq!(there.len(), 1, "{there:?}");
    assert!(
        !there[0].to_ascii_lowercase().contains("authorization"),
        "{there:?}"
    );
}

#[test]
fn an_image_layout_archive_installs_offline_and_a_tampered_one_is_refused() {
    let p = Plugins::build();
    let archive = p.dir.path().join("ocidemo.oci.tar");
    push(
        &p.v2,
        Some(&p.key),
        &format!("{}:1.2.0", archive.display()),
        &[],
    );
    let into = PluginDir::new();
    let (code, out) = pull(&p, into.path(), &archive.display().to_string(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#""version":"1.2.0""#) && out.contains("verified"),
        "{out}"
    );
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);

    // The layer's bytes changed inside the archive (same length).
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = position(&bytes, b"leaves a mark");
    bytes[at] = b'x';
    let tampered = p.dir.path().join("tampered.oci.tar");
    std::fs::write(&tampered, bytes).unwrap();
    let other = PluginDir::new();
    let (code, out) = pull(&p, other.path(), &tampered.display().to_string(), &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("digest mismatch"), "{out}");
    assert!(
        listing(other.path()).is_empty(),
        "{:?}",
        listing(other.path())
    );
}

/// Serves an unpacked image layout (`dir`) as a registry would, except that the blob
/// `stall_on` is sent only half, then the connection is held. With `referrers`, it has
/// the OCI 1.1 referrers API and no signature tags; without, the reverse. With
/// `bearer_realm`, a request without the token `TOKEN` is answered 401 with a Bearer
/// challenge naming that realm.
fn layout_server(
    dir: PathBuf,
    stall_on: String,
    referrers: bool,
    bearer_realm: Option<String>,
) -> Hostile {
    Hostile::start("127.0.0.1", move |head, conn, sent| {
        if let Some(realm) = &bearer_realm {
            if !head
                .to_ascii_lowercase()
                .contains(&format!("bearer {TOKEN}"))
            {
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:b/ocidemo:pull\"\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = conn.write_all(answer.as_bytes());
                return;
            }
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let last = path.rsplit('/').next().unwrap_or("").to_owned();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        if path.contains("/referrers/") {
            let found: Vec<&serde_json::Value> = entries
                .iter()
                .filter(|m| referrers && m["artifactType"].is_string())
                .filter(|m| {
                    let hex = &m["digest"].as_str().unwrap()["sha256:".len()..];
                    let blob = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
                    let sig: serde_json::Value = serde_json::from_slice(&blob).unwrap();
                    sig["subject"]["digest"] == last.as_str()
                })
                .collect();
            let body = serde_json::json!({"schemaVersion": 2, "manifests": found}).to_string();
            let status = if referrers { "200 OK" } else { "404 Not Found" };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
            return;
        }
        let digest = if last.starts_with("sha256:") {
            Some(last.clone())
        } else {
            entries.iter().find_map(|m| {
                (m["annotations"]["org.opencontainers.image.ref.name"] == last.as_str())
                    .then(|| m["digest"].as_str().unwrap().to_owned())
            })
        };
        let digest = digest.filter(|_| !(referrers && last.ends_with(".sig")));
        let file = digest.map(|d| dir.join("blobs/sha256").join(&d["sha256:".len()..]));
        let Some(data) = file.and_then(|f| std::fs::read(f).ok()) else {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len());
        let _ = conn.write_all(head.as_bytes());
        if last == stall_on {
            let _ = conn.write_all(&data[..data.len() / 2]);
            sent.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read(&mut buf);
        } else {
            let _ = conn.write_all(&data);
        }
    })
}

/// Publishes `file` signed as an image-layout archive and unpacks it: (archive, layout).
fn unpacked_layout(p: &Plugins, file: &Path) -> (PathBuf, PathBuf) {
    let archive = p.dir.path().join("ocidemo.oci.tar");
    push(
        file,
        Some(&p.key),
        &format!("{}:1.0.0", archive.display()),
        &[],
    );
    let layout = p.dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    (archive, layout)
}

#[test]
fn a_signature_is_found_through_the_referrers_api() {
    let p = Plugins::build();
    let (_, layout) = unpacked_layout(&p, &p.v1);
    let server = layout_server(layout, String::new(), true, None);
    let into = PluginDir::new();
    let (code, out) = pull(
        &p,
        into.path(),
        &format!("{}/r/ocidemo:1.0.0", server.addr),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified (key build)"), "{out}");
    let asked = server.requests();
    assert!(
        asked.iter().any(|h| h.contains("/referrers/sha256:")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|h| h.contains(".sig ")), "{asked:?}");
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);
}

#[test]
fn a_pull_killed_mid_download_leaves_no_plugin_file_and_the_next_pull_cleans_up() {
    let p = Plugins::build();
    let (archive, layout) = unpacked_layout(&p, &p.v1);
    let layer = format!(
        "{}",
        dynplug_oci::digest::Digest::of(&std::fs::read(&p.v1).unwrap())
    );
    let server = layout_server(layout, layer, false, None);

    let into = PluginDir::new();
    let (into_s, keys) = (
        into.path().display().to_string(),
        p.keys.display().to_string(),
    );
    let reference = format!("{}/k/ocidemo:1.0.0", server.addr);
    let mut child = tool("dynplug-pack")
        .args([
            "pull",
            "--insecure-http",
            "--into",
            &into_s,
            "--keys",
            &keys,
        ])
        .arg(&reference)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready to kill: the server sent half the file and a staged file holds bytes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let staged = loop {
        let partial = listing(into.path()).into_iter().find(|n| {
            n.starts_with(".dynplug-pull-")
                && std::fs::metadata(into.path().join(n)).is_ok_and(|m| m.len() > 0)
        });
        if let (Some(name), 1) = (partial, server.sent.load(Ordering::SeqCst)) {
            break name;
        }
        assert!(
            Instant::now() < deadline,
            "no staged bytes within 20 s: {:?}",
            listing(into.path())
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // What the kill left is the staged file only: no plugin (*.so) and no signature.
    assert_eq!(listing(into.path()), std::slice::from_ref(&staged));
    assert!(!staged.ends_with(".so"));

    // The next pull (here from the archive) removes it and installs whole.
    let (code, out) = pull(&p, into.path(), &archive.display().to_string(), &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    assert_eq!(
        std::fs::read(into.path().join("ocidemo.so")).unwrap(),
        std::fs::read(&p.v1).unwrap()
    );
}

/// Makes a test CA and a certificate for 127.0.0.1 it signed, with openssl, in `dir`:
/// (CA certificate, server certificate, server key), or None after printing SKIP.
fn test_ca(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP: no openssl to make a test CA (apt-get install openssl)");
        return None;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dynplug test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    Some((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

#[test]
fn a_tls_registry_is_trusted_through_its_ca_file_and_refused_without_it() {
    let p = Plugins::build();
    let Some((ca, cert, key)) = test_ca(p.dir.path()) else {
        return;
    };
    let Some(reg) = Registry::start_with(true, Some((&cert, &key))) else {
        return;
    };
    let reference = reg.reference("tls/ocidemo:1.0.0");
    let (ca_s, cred) = (
        ca.display().to_string(),
        p.credentials(PASSWORD).display().to_string(),
    );
    let (v1, key_s) = (p.v1.display().to_string(), p.key.display().to_string());
    let (code, out, err) = pack(&[
        "push",
        "--ca-file",
        &ca_s,
        "--credentials-file",
        &cred,
        "--key",
        &key_s,
        &v1,
        &reference,
    ]);
    assert_eq!(code, 0, "{out}{err}");

    let into = PluginDir::new();
    let (into_s, keys) = (
        into.path().display().to_string(),
        p.keys.display().to_string(),
    );
    let pull_tls = |extra: &[&str]| {
        let mut args = vec![
            "pull",
            "--into",
            &into_s,
            "--keys",
            &keys,
            "--credentials-file",
            &cred,
        ];
        args.extend(extra);
        args.push(&reference);
        pack(&args)
    };
    // Without the CA (the system's roots): the certificate is not trusted; nothing is
    // sent, the credentials included.
    let (code, out, err) = pull_tls(&[]);
    assert_eq!(code, REFUSED, "{out}{err}");
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
    // Plain HTTP to a TLS port is no way around it: the answer is not a registry's.
    let (code, out, err) = pull_tls(&["--insecure-http"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );

    let (code, out, err) = pull_tls(&["--ca-file", &ca_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    assert!(!(out + &err).contains(PASSWORD));
}

#[test]
fn a_bearer_token_registry_is_logged_into_through_its_token_service() {
    let p = Plugins::build();
    let (_, layout) = unpacked_layout(&p, &p.v1);
    let tokens = Hostile::start("127.0.0.1", |head, conn, _| {
        let answer = if head.contains(&format!("Basic {BASIC}"))
            || head.contains(&format!("basic {BASIC}"))
        {
            let body = format!(r#"{{"token":"{TOKEN}"}}"#);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_owned()
        };
        let _ = conn.write_all(answer.as_bytes());
    });
    let realm = format!("http://{}/token", tokens.addr);
    let server = layout_server(layout, String::new(), false, Some(realm));
    let reference = format!("{}/b/ocidemo:1.0.0", server.addr);
    let into = PluginDir::new();

    // No credentials: the token service refuses, and so does the pull.
    let (code, out) = pull(&p, into.path(), &reference, &[]);
    assert_eq!(code, REFUSED, "{out}");
    assert!(out.contains("refused access (401)"), "{out}");
    assert!(listing(into.path()).is_empty());

    let cred = p.credentials(PASSWORD).display().to_string();
    let (code, out) = pull(&p, into.path(), &reference, &["--credentials-file", &cred]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified (key build)"), "{out}");
    assert_eq!(listing(into.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    let asked = tokens.requests();
    assert!(
        asked
            .iter()
            .any(|h| h.contains("service=test") && h.contains("scope=repository:b/ocidemo:pull")),
        "{asked:?}"
    );
    // Once it has the token, the registry sees the token on every request.
    let seen = server.requests();
    let with_token = seen
        .iter()
        .skip_while(|h| !h.to_ascii_lowercase().contains(&format!("bearer {TOKEN}")))
        .count();
    assert!(with_token >= 4, "{seen:?}");
    assert!(!out.contains(TOKEN) && !out.contains(PASSWORD), "{out}");
}

/// Rewrites the blob of `digest` in `layout` with `edit` applied to its JSON; returns
/// the new (digest, size).
fn rewrite_json(
    layout: &Path,
    digest: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (String, u64) {
    let blobs = layout.join("blobs/sha256");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&digest["sha256:".len()..])).unwrap())
            .unwrap();
    edit(&mut value);
    let data = serde_json::to_vec(&value).unwrap();
    let new = dynplug_oci::digest::Digest::of(&data);
    std::fs::write(blobs.join(new.hex()), &data).unwrap();
    (new.to_string(), data.len() as u64)
}

#[test]
fn a_config_that_lies_about_the_signed_file_is_refused() {
    let p = Plugins::build();
    let (_, layout) = unpacked_layout(&p, &p.v1);
    // The registry rewrites the config (version 9.9.9) and everything above it, and
    // re-attaches the file's real signature: the file and its signature are untouched.
    let index_path = layout.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entries = top["manifests"].as_array_mut().unwrap();
    let at = |tag_sig: bool| {
        entries
            .iter()
            .position(|m| m["artifactType"].is_string() == tag_sig)
            .unwrap()
    };
    let (plugin_at, sig_at) = (at(false), at(true));
    let index_digest = entries[plugin_at]["digest"].as_str().unwrap().to_owned();
    let sig_digest = entries[sig_at]["digest"].as_str().unwrap().to_owned();
    let mut new_manifest = (String::new(), 0);
    let new_index = rewrite_json(&layout, &index_digest, |index| {
        let entry = &mut index["manifests"][0];
        let manifest = entry["digest"].as_str().unwrap().to_owned();
        new_manifest = rewrite_json(&layout, &manifest, |m| {
            let config = m["config"]["digest"].as_str().unwrap().to_owned();
            let (d, n) = rewrite_json(&layout, &config, |c| c["version"] = "9.9.9".into());
            m["config"]["digest"] = d.into();
            m["config"]["size"] = n.into();
        });
        entry["digest"] = new_manifest.0.clone().into();
        entry["size"] = new_manifest.1.into();
    });
    let new_sig = rewrite_json(&layout, &sig_digest, |s| {
        s["subject"]["digest"] = new_manifest.0.clone().into();
        s["subject"]["size"] = new_manifest.1.into();
    });
    let sig_tag = format!("sha256-{}.sig", &new_manifest.0["sha256:".len()..]);
    entries[plugin_at]["digest"] = new_index.0.into();
    entries[plugin_at]["size"] = new_index.1.into();
    entries[sig_at]["digest"] = new_sig.0.into();
    entries[sig_at]["size"] = new_sig.1.into();
    entries[sig_at]["annotations"]["org.opencontainers.image.ref.name"] = sig_tag.into();
    std::fs::write(&index_path, serde_json::to_vec(&top).unwrap()).unwrap();

    let server = layout_server(layout, String::new(), false, None);
    let into = PluginDir::new();
    let (code, out) = pull(
        &p,
        into.path(),
        &format!("{}/l/ocidemo:1.0.0", server.addr),
        &["--version", ">=9"],
    );
    assert_eq!(code, REFUSED, "{out}");
    assert!(
        out.contains("the file says ocidemo 1.0.0") && out.contains("config says ocidemo 9.9.9"),
        "{out}"
    );
    assert!(
        listing(into.path()).is_empty(),
        "{:?}",
        listing(into.path())
    );
}
