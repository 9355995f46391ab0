//! The wasm tier against hostile and well-behaved components made from WAT: limits,
//! named traps, refused imports, the artifact cache, the host services.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynplug_sdk::host::Host;
use dynplug_sdk::Level;
use dynplug_wasm::guests::{self, Guest};
use dynplug_wasm::{Artifact, CallError, CallLimits, LoadError, Options, WasmPlugin};

const MIB: usize = 1024 * 1024;

/// A host that records what the guest asked of it.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    cancelled: std::sync::atomic::AtomicBool,
}

impl Host for Recorder {
    fn log(&self, level: Level, message: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("log {level:?} {message}"));
    }
    fn progress(&self, fraction: f64, text: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("progress {fraction} {text}"));
    }
    fn cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn emit(&self, event: &str, payload: &str) -> bool {
        self.calls
            .lock()
            .unwrap()
            .push(format!("emit {event} {payload}"));
        true
    }
}

fn options() -> Options {
    Options {
        memory_limit: 64 * MIB,
        ..Options::default()
    }
}

fn load(guest: &Guest<'_>) -> WasmPlugin {
    WasmPlugin::load(&guests::component("t", guest), options()).expect("the guest loads")
}

fn limits(timeout_ms: u64) -> CallLimits {
    CallLimits {
        timeout: Duration::from_millis(timeout_ms),
        ..CallLimits::default()
    }
}

fn call(plugin: &WasmPlugin, input: &str) -> Result<String, CallError> {
    plugin
        .call(input, "{}", Arc::new(Recorder::default()), &limits(5_000))
        .map(|a| a.output)
}

#[test]
fn an_echo_answers_and_declares_its_metadata() {
    let plugin = load(&guests::ECHO);
    assert_eq!(call(&plugin, "héllo").unwrap(), "héllo");
    let d = plugin.description();
    let meta = String::from_utf8(d.metadata.clone().unwrap()).unwrap();
    assert!(meta.contains("name=t\0"), "{meta:?}");
    assert_eq!(d.wit_version.as_deref(), Some("1.0.0"));
    assert!(d.exports.iter().any(|e| e == "execute"));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_timeout() {
    let plugin = load(&guests::LOOP);
    let began = Instant::now();
    let err = plugin
        .call("", "{}", Arc::new(Recorder::default()), &limits(200))
        .unwrap_err();
    let took = began.elapsed();
    assert_eq!(err, CallError::Timeout(Duration::from_millis(200)));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1_000),
        "stopped after {took:?}"
    );
}

#[test]
fn a_2_gib_allocation_is_refused_at_the_memory_limit() {
    let plugin = load(&guests::ALLOC_2GIB);
    let err = call(&plugin, "").unwrap_err();
    match &err {
        CallError::Trap {
            trap,
            memory_refused: Some(asked),
            memory_limit,
        } => {
            assert_eq!(trap, "unreachable");
            assert!(*asked > 2 * 1024 * MIB, "{asked}");
            assert_eq!(*memory_limit, 64 * MIB);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("memory limit of 64 MiB"), "{err}");
}

#[test]
fn traps_are_named() {
    for (guest, name) in [
        (&guests::STACK_OVERFLOW, "stack overflow"),
        (&guests::UNREACHABLE, "unreachable"),
        (&guests::OUT_OF_BOUNDS, "out-of-bounds memory access"),
    ] {
        let err = call(&load(guest), "x").unwrap_err();
        assert!(
            matches!(&err, CallError::Trap { trap, memory_refused: None, .. } if trap == name),
            "{name}: {err:?}"
        );
        assert!(err.is_fault());
    }
}

#[test]
fn a_plugin_error_is_its_own_words_and_no_fault() {
    let err = call(&load(&guests::REFUSE), "").unwrap_err();
    assert_eq!(err, CallError::Plugin("no".into()));
    assert!(!err.is_fault());
}

#[test]
fn each_call_gets_a_fresh_instance() {
    // The echo's allocator only moves forward: in a shared instance, memory would
    // grow with every call. A fresh instance starts from its initial memory.
    let plugin = load(&guests::ECHO);
    let big = "x".repeat(2 * MIB);
    let host: Arc<dyn Host + Send + Sync> = Arc::new(Recorder::default());
    let peaks: Vec<usize> = (0..5)
        .map(|_| {
            plugin
                .call(&big, "{}", Arc::clone(&host), &limits(5_000))
                .unwrap()
                .peak_memory
        })
        .collect();
    assert!(peaks.windows(2).all(|w| w[0] == w[1]), "{peaks:?}");
}

#[test]
fn the_host_services_reach_the_host_and_cancellation_stops_the_guest() {
    let plugin = load(&guests::CONTEXT);
    let host = Arc::new(Recorder::default());
    assert_eq!(
        plugin
            .call("hi", "{}", host.clone(), &limits(5_000))
            .unwrap()
            .output,
        "hi"
    );
    assert_eq!(
        *host.calls.lock().unwrap(),
        ["log Info hello", "progress 0.5 half", "emit done {}"]
    );
    // A guest that waits for cancellation returns its own error once told.
    let host = Arc::new(Recorder::default());
    let waiting = {
        let host = host.clone();
        std::thread::spawn(move || {
            let plugin = load(&guests::CONTEXT);
            plugin.call("wait", "{}", host, &limits(10_000))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.calls.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the guest never reached its wait"
        );
        std::thread::yield_now();
    }
    host.cancelled
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        waiting.join().unwrap().unwrap_err(),
        CallError::Plugin("cancelled".into())
    );
}

#[test]
fn a_guest_that_ignores_cancellation_is_stopped_after_the_grace() {
    let plugin = load(&guests::LOOP);
    let host = Arc::new(Recorder::default());
    host.cancelled
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let limits = CallLimits {
        timeout: Duration::from_secs(10),
        cancel_grace: Duration::from_millis(100),
        ..CallLimits::default()
    };
    let began = Instant::now();
    assert_eq!(
        plugin.call("", "{}", host, &limits).unwrap_err(),
        CallError::Cancelled
    );
    assert!(began.elapsed() < Duration::from_secs(2));
}

const EVIL_WIT: &str = r#"
package evil:steal@1.0.0;
interface grab { take: func() -> u32; }
world plugin {
  import grab;
  export execute: func(input: string) -> result<string, string>;
}
"#;

const SOCKETS_DEP: &str = r#"
package wasi:sockets@0.2.0;
interface instance-network { instance-network: func() -> u32; }
"#;

const SOCKETS_WIT: &str = r#"
package test:net;
world plugin {
  import wasi:sockets/instance-network@0.2.0;
  export execute: func(input: string) -> result<string, string>;
}
"#;

const DYNPLUG_2: &str = r#"
package dynplug:plugin@2.0.0;
interface host { cancelled: func() -> bool; }
world plugin {
  import host;
  export execute: func(input: string) -> result<string, string>;
}
"#;

fn with_import(deps: &[&str], wit: &str, import: &str) -> Vec<u8> {
    let guest = Guest {
        fields: "",
        body: "(drop (call $it)) (call $ok (i32.const 0) (i32.const 0))",
    };
    let text = guests::module_text_with(import, &guest);
    guests::component_from(deps, wit, "plugin", &text, None).unwrap()
}

#[test]
fn imports_the_host_does_not_provide_are_refused_at_load_by_name() {
    let evil = with_import(
        &[],
        EVIL_WIT,
        r#"(import "evil:steal/grab@1.0.0" "take" (func $it (result i32)))"#,
    );
    let err = WasmPlugin::load(&evil, options()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Import { import, .. } if import == "evil:steal/grab@1.0.0"),
        "{err}"
    );
    let net = with_import(
        &[SOCKETS_DEP],
        SOCKETS_WIT,
        r#"(import "wasi:sockets/instance-network@0.2.0" "instance-network" (func $it (result i32)))"#,
    );
    let err = WasmPlugin::load(&net, options()).unwrap_err();
    assert!(
        err.to_string()
            .contains("wasi:sockets/instance-network@0.2.0"),
        "{err}"
    );
    assert!(err.to_string().contains("no network"), "{err}");
    let future = with_import(
        &[],
        DYNPLUG_2,
        r#"(import "dynplug:plugin/host@2.0.0" "cancelled" (func $it (result i32)))"#,
    );
    let err = WasmPlugin::load(&future, options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "built for dynplug:plugin@2.0.0; this host speaks dynplug:plugin@1.0.0"
    );
}

#[test]
fn a_core_module_is_refused() {
    let module = wat::parse_str(guests::module_text(&guests::ECHO)).unwrap();
    assert!(matches!(
        WasmPlugin::load(&module, options()),
        Err(LoadError::NotAComponent(_))
    ));
}

#[test]
fn artifacts_are_stored_reused_and_a_corrupt_one_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wasm");
    let opts = Options {
        cache_dir: Some(cache.clone()),
        ..options()
    };
    let wasm = guests::component("t", &guests::ECHO);
    let first = WasmPlugin::load(&wasm, opts.clone()).unwrap();
    assert_eq!(first.artifact(), &Artifact::Stored);
    let stored = dynplug_wasm::artifacts(&cache);
    assert_eq!(stored.len(), 1, "{stored:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let second = WasmPlugin::load(&wasm, opts.clone()).unwrap();
    assert_eq!(second.artifact(), &Artifact::Cached);
    assert_eq!(call(&second, "again").unwrap(), "again");

    // One flipped byte in the code: refused by its digest, recompiled, never loaded.
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&stored[0], &bytes).unwrap();
    let third = WasmPlugin::load(&wasm, opts.clone()).unwrap();
    assert!(
        matches!(third.artifact(), Artifact::Recompiled(reason) if reason.contains("digest")),
        "{:?}",
        third.artifact()
    );
    assert_eq!(call(&third, "fixed").unwrap(), "fixed");
    assert_eq!(
        WasmPlugin::load(&wasm, opts.clone()).unwrap().artifact(),
        &Artifact::Cached
    );

    // A file with a good digest that is not an artifact: wasmtime refuses it.
    let junk = b"not native code at all".to_vec();
    let mut forged = sha2_digest(&junk);
    forged.extend_from_slice(&junk);
    std::fs::write(&stored[0], &forged).unwrap();
    let fourth = WasmPlugin::load(&wasm, opts.clone()).unwrap();
    assert!(
        matches!(fourth.artifact(), Artifact::Recompiled(reason) if reason.contains("wasmtime refused")),
        "{:?}",
        fourth.artifact()
    );

    // Group-writable: not trusted.
    std::fs::set_permissions(&stored[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    let fifth = WasmPlugin::load(&wasm, opts.clone()).unwrap();
    assert!(
        matches!(fifth.artifact(), Artifact::Recompiled(reason) if reason.contains("private")),
        "{:?}",
        fifth.artifact()
    );

    // A cache directory others can enter is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        WasmPlugin::load(&wasm, opts).unwrap().artifact(),
        &Artifact::Compiled
    );
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

#[test]
fn many_calls_at_once_each_get_their_own_answer() {
    let echo = Arc::new(load(&guests::ECHO));
    let trap = Arc::new(load(&guests::UNREACHABLE));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (echo, trap) = (echo.clone(), trap.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let input = format!("{t}-{i}");
                    assert_eq!(call(&echo, &input).unwrap(), input);
                    assert!(call(&trap, &input).unwrap_err().is_fault());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Set in the child process of the test below.
const MDWE_CHILD: &str = "DYNPLUG_TEST_UNDER_MDWE";

#[test]
fn under_memory_deny_write_execute_loading_fails_naming_it() {
    if std::env::var_os(MDWE_CHILD).is_some() {
        // PR_SET_MDWE (65) with PR_MDWE_REFUSE_EXEC_GAIN (1): what systemd's
        // MemoryDenyWriteExecute=yes sets where the kernel has it (Linux 6.3).
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(65, 1, 0, 0, 0) } != 0 {
            println!("SKIP: this kernel has no PR_SET_MDWE");
            return;
        }
        assert!(!dynplug_wasm::executable_memory_allowed());
        let err = WasmPlugin::load(&guests::component("t", &guests::ECHO), options()).unwrap_err();
        assert!(matches!(err, LoadError::NoExecutableMemory), "{err}");
        assert!(err.to_string().contains("MemoryDenyWriteExecute"), "{err}");
        return;
    }
    assert!(dynplug_wasm::executable_memory_allowed());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "under_memory_deny_write_execute_loading_fails_naming_it",
            "--exact",
            "--nocapture",
        ])
        .env(MDWE_CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
    if text.contains("SKIP") {
        println!("SKIP: this kernel has no PR_SET_MDWE");
    }
}
