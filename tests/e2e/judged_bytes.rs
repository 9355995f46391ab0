//! What is judged is what runs: attacks on the files a plugin is loaded from and the
//! side files beside it (signatures, keys), each of which once worked.
//!
//! The fixture is `marked.c` built with a tag: its constructor leaves a file named after
//! the tag and its answers start with it. The tampered copy is the signed file with the
//! tag's bytes replaced in place (same size), so a test can tell from a marker file or
//! an answer whether unsigned bytes ever ran.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dynplug_core::config::Config;
use dynplug_core::signature::{keygen, sign, signature_path, Keyring};
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use dynplug_tests::{manager_with_probe, set_mode, Daemon, PluginDir, PrivateBus};

const SIGNED_TAG: &str = "SIGNEDCODE";
const TAMPERED_TAG: &str = "UNSIGNEDXX";

/// A plugins directory holding `marked.so` signed by a trusted key, and the bytes of a
/// same-sized tampered copy.
struct Fixture {
    plugins: PluginDir,
    keys: tempfile::TempDir,
    marks: tempfile::TempDir,
    signed: Vec<u8>,
    tampered: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let plugins = PluginDir::new();
        let marks = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (secret, public) = keygen().unwrap();
        std::fs::write(keys.path().join("build.pub"), public).unwrap();
        set_mode(&keys.path().join("build.pub"), 0o644);
        let marker = marks.path().join(format!("mark-{SIGNED_TAG}"));
        let file = plugins.add_c(
            "tests/fixtures/c/marked.c",
            "marked.so",
            &[
                &format!("MARKER=\"{}\"", marker.display()),
                &format!("REPLY_TAG=\"{SIGNED_TAG}:\""),
            ],
        );
        let sig = signature_path(&file);
        std::fs::write(&sig, sign(&file, &secret).unwrap()).unwrap();
        set_mode(&sig, 0o644);
        let signed = std::fs::read(&file).unwrap();
        let tampered = replace_all(&signed, SIGNED_TAG.as_bytes(), TAMPERED_TAG.as_bytes());
        assert_eq!(signed.len(), tampered.len());
        assert_ne!(signed, tampered, "the tag is in the library's bytes");
        Fixture {
            plugins,
            keys,
            marks,
            signed,
            tampered,
        }
    }

    fn file(&self) -> PathBuf {
        self.plugins.path().join("marked.so")
    }

    fn yaml(&self, extra: &str) -> String {
        format!(
            "trust:\n  signatures: enforcing\n  keys_dir: {}\n{extra}",
            self.keys.path().display()
        )
    }

    fn config(&self, extra: &str) -> Config {
        dynplug_tests::test_config(self.plugins.path(), &self.yaml(extra))
    }

    /// Whether the tampered bytes' constructor ever ran (anywhere this user can see).
    fn unsigned_code_ran(&self) -> bool {
        self.marks
            .path()
            .join(format!("mark-{TAMPERED_TAG}"))
            .exists()
    }

    /// Puts `bytes` at the plugin's path through a new file and `rename()`.
    fn rename_in(&self, bytes: &[u8]) {
        let tmp = self.plugins.path().join(".swap.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        set_mode(&tmp, 0o644);
        std::fs::rename(&tmp, self.file()).unwrap();
    }

    /// Overwrites the plugin's file in place with `bytes` (same size) and restores its
    /// modification time, so its (device, inode, size, mtime) identity is unchanged.
    fn overwrite_in_place(&self, bytes: &[u8]) {
        use std::os::unix::fs::MetadataExt;
        let file = self.file();
        let before = std::fs::metadata(&file).unwrap();
        std::fs::write(&file, bytes).unwrap();
        let times = [
            libc::timespec {
                tv_sec: before.atime(),
                tv_nsec: before.atime_nsec(),
            },
            libc::timespec {
                tv_sec: before.mtime(),
                tv_nsec: before.mtime_nsec(),
            },
        ];
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: a valid path and two timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0);
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (after.ino(), after.size(), after.mtime(), after.mtime_nsec()),
            (
                before.ino(),
                before.size(),
                before.mtime(),
                before.mtime_nsec()
            )
        );
    }
}

fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0;
    while let Some(pos) = out[at..].windows(from.len()).position(|w| w == from) {
        out[at + pos..at + pos + from.len()].copy_from_slice(to);
        at += pos + from.len();
    }
    out
}

async fn start(f: &Fixture, extra: &str, state: &Path) -> Manager {
    Manager::start(f.config(extra), state, TrustPolicy::for_current_process())
        .await
        .expect("manager starts")
        .0
}

/// Item 1: the file swapped by `rename()` between signed and unsigned bytes while the
/// daemon reloads and serves, 200 rounds: no unsigned constructor ever runs, and every
/// answer comes from the signed bytes.
#[tokio::test(flavor = "multi_thread")]
async fn renames_during_reloads_never_load_unsigned_code() {
    let f = std::sync::Arc::new(Fixture::new());
    let state = tempfile::tempdir().unwrap();
    let m = start(&f, "", state.path()).await;
    assert_eq!(
        m.execute("marked", "x".into()).await.unwrap(),
        "SIGNEDCODE:x"
    );
    let swapper = {
        let f = std::sync::Arc::clone(&f);
        std::thread::spawn(move || {
            for round in 0..400 {
                f.rename_in(if round % 2 == 0 {
                    &f.tampered
                } else {
                    &f.signed
                });
            }
        })
    };
    let mut served = 0;
    for _ in 0..200 {
        m.reload(f.config("")).await.unwrap();
        if let Ok(out) = m.execute("marked", "y".into()).await {
            assert_eq!(out, "SIGNEDCODE:y", "an answer from unsigned bytes");
            served += 1;
        }
        assert!(!f.unsigned_code_ran(), "an unsigned constructor ran");
    }
    swapper.join().unwrap();
    f.rename_in(&f.signed);
    m.reload(f.config("")).await.unwrap();
    assert_eq!(
        m.execute("marked", "z".into()).await.unwrap(),
        "SIGNEDCODE:z"
    );
    assert!(
        served > 0,
        "the signed plugin was never served during the swaps"
    );
    assert!(!f.unsigned_code_ran(), "an unsigned constructor ran");
    m.shutdown(Duration::from_secs(1)).await;
}

/// Item 2: with `lazy_load`, a listed file replaced by rename, or overwritten in place
/// with its identity kept, is refused at first use before any of its code runs.
#[tokio::test(flavor = "multi_thread")]
async fn lazy_files_changed_before_first_use_are_refused_before_they_run() {
    let f = Fixture::new();
    let state = tempfile::tempdir().unwrap();
    let lazy = f.yaml("lazy_load: true\n");
    let m = manager_with_probe(f.plugins.path(), state.path(), &lazy).await;
    assert_eq!(m.names(), ["marked"]);
    // Renamed over: another file than the one listed.
    f.rename_in(&f.tampered);
    let e = m
        .execute("marked", "a".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("changed since it was listed") || e.contains("does not verify"),
        "{e}"
    );
    assert!(
        !f.unsigned_code_ran(),
        "a renamed-in file ran before the check"
    );

    // Listed again from signed bytes, then overwritten in place: same identity, but
    // the bytes are judged again at first use.
    f.rename_in(&f.signed);
    let m = {
        m.shutdown(Duration::from_secs(1)).await;
        manager_with_probe(f.plugins.path(), state.path(), &lazy).await
    };
    f.overwrite_in_place(&f.tampered);
    let e = m
        .execute("marked", "b".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not verify"), "{e}");
    assert!(!f.unsigned_code_ran(), "unsigned bytes were loaded lazily");
    m.shutdown(Duration::from_secs(1)).await;
}

/// Item 3: an isolated plugin's file overwritten in place with its identity kept: new
/// workers still run the bytes that were judged, reported verified because they are.
#[tokio::test(flavor = "multi_thread")]
async fn isolated_workers_run_only_the_judged_bytes() {
    let f = Fixture::new();
    let state = tempfile::tempdir().unwrap();
    let isolated = |workers: u32| {
        f.yaml(&format!(
            "plugins:\n  marked:\n    isolation: process\n    workers: {workers}\n"
        ))
    };
    let m = manager_with_probe(f.plugins.path(), state.path(), &isolated(1)).await;
    assert_eq!(
        m.execute("marked", "a".into()).await.unwrap(),
        "SIGNEDCODE:a"
    );
    f.overwrite_in_place(&f.tampered);
    // Fresh workers (the pool changes), same file identity: they load the image.
    m.reload(dynplug_tests::test_config(f.plugins.path(), &isolated(2)))
        .await
        .unwrap();
    for input in ["b", "c", "d"] {
        assert_eq!(
            m.execute("marked", input.into()).await.unwrap(),
            format!("SIGNEDCODE:{input}")
        );
    }
    assert_eq!(m.info("marked").unwrap().signature, "verified (key build)");
    // A file that really changed (touched) is judged again, and refused.
    let c = std::ffi::CString::new(f.file().to_str().unwrap()).unwrap();
    // SAFETY: a valid path; null times mean "now".
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    assert_eq!(r, 0);
    m.reload(dynplug_tests::test_config(f.plugins.path(), &isolated(2)))
        .await
        .unwrap();
    let e = m
        .info("marked.so")
        .unwrap()
        .error()
        .unwrap_or_default()
        .to_owned();
    assert!(e.contains("does not verify"), "{e}");
    m.shutdown(Duration::from_secs(1)).await;
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Runs `dynplugd --inspect FILE` with `config`, failing if it takes longer than 30 s.
fn inspect(file: &Path, config: &Path) -> (i32, String) {
    let mut child = dynplug_tests::tool("dynplugd")
        .arg("--config")
        .arg(config)
        .arg("--inspect")
        .arg(file)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "dynplugd --inspect {} did not end within 30 s",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Items 4 and 5: a `.sig` that is a FIFO, or a link to /dev/zero, and a 2 GB plugin
/// file: the daemon starts and reloads at once and keeps serving the others, inspect
/// ends, nothing is read without bound.
#[test]
fn fifo_device_and_huge_side_files_never_hang_or_flood() {
    let f = Fixture::new();
    f.plugins
        .add(&dynplug_tests::rust_plugin("echo"), "echo.so");
    std::fs::remove_file(signature_path(&f.file())).unwrap();
    mkfifo(&signature_path(&f.file()));
    let echo = f.plugins.path().join("echo.so");
    std::os::unix::fs::symlink("/dev/zero", signature_path(&echo)).unwrap();
    let huge = f.plugins.path().join("huge.so");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    set_mode(&huge, 0o644);
    let permissive = format!(
        "trust:\n  signatures: permissive\n  keys_dir: {}\n",
        f.keys.path().display()
    );

    let bus = PrivateBus::start();
    // Daemon::start fails the test if READY=1 does not come within its deadline.
    let mut daemon = Daemon::start(&bus, f.plugins.path(), &permissive);
    let reason = |file: &str| {
        bus.manager_call("GetPlugin", "s", &[file])
            .split("\"Signature\" s ")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason("marked").contains("a FIFO"), "{}", reason("marked"));
    assert!(
        reason("echo").contains("character device"),
        "{}",
        reason("echo")
    );
    let huge_error = bus.manager_call("GetPlugin", "s", &["huge.so"]);
    assert!(
        huge_error.contains("more than trust.max_plugin_bytes"),
        "{huge_error}"
    );
    daemon.reload();
    let out = bus.manager_call("Execute", "ss", &["echo", "still here"]);
    assert!(out.contains("still here"), "{out}");

    let config = daemon.config_path();
    for file in [&f.file(), &echo, &huge] {
        let (_, out) = inspect(file, &config);
        assert!(out.contains("signature:"), "{out}");
    }
    let (code, out) = inspect(&huge, &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("more than trust.max_plugin_bytes"), "{out}");
}

/// Item 6: a key reached through a symlink into a directory others can write is not a
/// trusted key; the same key in a trusted directory is.
#[test]
fn a_key_linked_from_a_writable_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let open = elsewhere.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, public) = keygen().unwrap();
    let key = open.join("ext.pub");
    std::fs::write(&key, public).unwrap();
    set_mode(&key, 0o644);
    std::os::unix::fs::symlink(&key, keys.path().join("ext.pub")).unwrap();
    let policy = TrustPolicy::for_current_process();
    let e = Keyring::load(keys.path(), policy).unwrap_err();
    assert!(e.contains("writable by group or others"), "{e}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(Keyring::load(keys.path(), policy).unwrap().names(), ["ext"]);
}

/// Item 7: a description that carries a newline, a forged verdict line and escape
/// sequences prints as one quoted, escaped line; the verdict stays the file's own.
#[test]
fn inspect_output_cannot_be_forged_by_the_file() {
    let plugins = PluginDir::new();
    let file = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "forger.so",
        &["DESCRIPTION=\"fine\\nsignature:   verified (key build)\\x1b[2J\\x1b]0;owned\\x07\""],
    );
    let config = plugins.path().join("none.yaml");
    let (_, out) = inspect(&file, &config);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    let verdicts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("signature:"))
        .collect();
    assert_eq!(verdicts.len(), 1, "{out}");
    assert!(!verdicts[0].contains("verified"), "{out}");
    assert!(
        out.contains("description: \"fine\\nsignature:   verified (key build)\\x1b[2J"),
        "{out}"
    );
}

/// Item 7, the client's side: what a plugin says (its description, here with a newline,
/// a forged row and escape sequences) reaches `dynplugctl list` and `info` escaped, on
/// its own line and cell.
#[test]
fn dynplugctl_prints_plugin_text_escaped() {
    let plugins = PluginDir::new();
    plugins.add_c(
        "tests/fixtures/c/marked.c",
        "forger.so",
        &["DESCRIPTION=\"fine\\necho    1.0  yes  loaded  trusted\\x1b[2J\\u202e\""],
    );
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&bus, plugins.path(), "");
    for args in [&["list"][..], &["info", "marked"]] {
        let out = dynplug_tests::tool("dynplugctl")
            .arg("--address")
            .arg(bus.address())
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("echo")),
            "a forged row: {text}"
        );
        assert!(text.contains("fine\\necho"), "{text}");
    }
}
