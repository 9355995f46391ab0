//! Shared helpers for the end-to-end tests: build the workspace's real artifacts once,
//! compile C plugins with the system compiler, and lay out plugin directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod outside;
pub use outside::{CargoRun, OutsideCrate, CARGO_TIMEOUT};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The directory cargo puts this profile's artifacts in (e.g. `target/debug`).
pub fn artifact_dir() -> PathBuf {
    // The test binary lives in <artifact_dir>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary is in <target>/<profile>/deps")
        .to_owned()
}

/// Builds every plugin library and binary of the workspace (once per test process),
/// with the same cargo, profile and target directory as the tests themselves.
pub fn build_workspace() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = artifact_dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "debug".into());
        let profile = if profile == "debug" {
            "dev".to_owned()
        } else {
            profile
        };
        let target_dir = artifact_dir().parent().expect("target dir").to_owned();
        let status = Command::new(cargo)
            .args([
                "build",
                "--workspace",
                "--lib",
                "--bins",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
}

/// Path of a built Rust plugin library, e.g. `rust_plugin("echo")`.
pub fn rust_plugin(lib_name: &str) -> PathBuf {
    build_workspace();
    let p = artifact_dir().join(format!("libdynplug_{lib_name}.so"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Path of a built binary of the workspace (`dynplugd`, `dynplugctl`).
pub fn binary(name: &str) -> PathBuf {
    build_workspace();
    let p = artifact_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Compiles the C file `source` (relative to the workspace root) into `out` with the
/// system C compiler against the SDK's header, with extra `-D` definitions.
pub fn compile_c(source: &str, out: &Path, defines: &[&str]) {
    if let Err(e) = dynplug_core::testkit::compile_c(&workspace_root().join(source), out, defines) {
        panic!("cc {source} {defines:?} failed:\n{e}");
    }
}

/// The configuration `yaml` (validated as `test.yaml`) with `plugins_dir` set to `dir`.
pub fn test_config(dir: &Path, yaml: &str) -> dynplug_core::config::Config {
    let yaml = with_worker_user(yaml);
    let mut c = dynplug_core::config::Config::parse(&yaml, Path::new("test.yaml"))
        .expect("test config parses");
    c.plugins_dir = dir.to_owned();
    c.validate(Path::new("test.yaml"))
        .expect("test config is valid");
    c
}

/// A manager on `plugins` with `yaml`, probing new files with the real `dynplug-worker`
/// (and running isolated plugins in it), as the daemon does.
pub async fn manager_with_probe(plugins: &Path, state: &Path, yaml: &str) -> dynplug_core::Manager {
    dynplug_core::Manager::start_with(
        test_config(plugins, yaml),
        state,
        dynplug_core::trust::TrustPolicy::for_current_process(),
        Some(binary("dynplug-worker")),
    )
    .await
    .expect("manager starts")
    .0
}

/// `yaml` with `worker_user: nobody` unless it names a worker user: isolated plugins
/// of a root daemon fail closed when the worker user does not exist, and the package's
/// `dynplug-worker` is not on a test machine.
pub fn with_worker_user(yaml: &str) -> String {
    if yaml.contains("worker_user:") {
        yaml.to_owned()
    } else {
        format!("worker_user: nobody\n{yaml}")
    }
}

/// A temporary plugins directory with safe permissions.
#[derive(Debug)]
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl Default for PluginDir {
    fn default() -> Self {
        PluginDir::new()
    }
}

impl PluginDir {
    /// An empty directory (mode 0755).
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("dynplug-plugins")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        PluginDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `src` in as `file_name` with mode 0644 and returns the new path.
    pub fn add(&self, src: &Path, file_name: &str) -> PathBuf {
        let dst = self.path().join(file_name);
        // Copy to a temporary name and rename, as an admin's `install` would: replacing a
        // mapped library in place would corrupt it.
        let tmp = self.path().join(format!(".{file_name}.tmp"));
        std::fs::copy(src, &tmp).expect("copy plugin");
        set_mode(&tmp, 0o644);
        std::fs::rename(&tmp, &dst).expect("rename plugin");
        dst
    }

    /// Adds the example Rust plugins and the C plugin (rot13).
    pub fn with_examples() -> Self {
        let d = PluginDir::new();
        for name in ["echo", "text", "json", "hash", "heartbeat"] {
            d.add(&rust_plugin(name), &format!("{name}.so"));
        }
        d.add_c("plugins/c-rot13/rot13.c", "rot13.so", &[]);
        d
    }

    /// Adds `count` copies of `template`, a plugin named `p0000` (table and metadata),
    /// each renamed in place to `p{first}`, `p{first+1}`, ... (same length, four digits)
    /// and installed as `p{N}.so`: many distinct plugins without compiling each.
    pub fn add_renamed_copies(&self, template: &Path, first: usize, count: usize) {
        let bytes = std::fs::read(template).expect("read template");
        let needle = b"p0000";
        for i in first..first + count {
            let name = format!("p{i:04}");
            let mut copy = bytes.clone();
            let mut at = 0;
            while let Some(pos) = copy[at..].windows(needle.len()).position(|w| w == needle) {
                copy[at + pos..at + pos + needle.len()].copy_from_slice(name.as_bytes());
                at += pos + needle.len();
            }
            let tmp = self.path().join(format!(".{name}.tmp"));
            std::fs::write(&tmp, copy).expect("write plugin");
            set_mode(&tmp, 0o644);
            std::fs::rename(&tmp, self.path().join(format!("{name}.so"))).expect("rename");
        }
    }

    /// Compiles a C plugin straight into the directory.
    pub fn add_c(&self, source: &str, file_name: &str, defines: &[&str]) -> PathBuf {
        let tmp = self.path().join(format!(".{file_name}.tmp"));
        compile_c(source, &tmp, defines);
        set_mode(&tmp, 0o644);
        let dst = self.path().join(file_name);
        std::fs::rename(&tmp, &dst).expect("rename plugin");
        dst
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A private `dbus-daemon` for one test, killed on drop.
#[derive(Debug)]
pub struct PrivateBus {
    address: String,
    pid: i32,
}

impl PrivateBus {
    /// Starts a session-type bus on a private socket.
    pub fn start() -> Self {
        Self::start_with(&["--session"])
    }

    /// Starts a session-type bus that every user may connect to (a session bus admits
    /// only its owner), for tests of what one user may do to another's work.
    pub fn start_open() -> Self {
        // A file of its own for each bus: tests start open buses concurrently.
        let file = tempfile::Builder::new()
            .prefix("dynplug-open-bus")
            .suffix(".conf")
            .tempfile()
            .expect("bus config file");
        let config = file.path().to_owned();
        std::fs::write(
            &config,
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        )
        .expect("write bus config");
        let bus = Self::start_with(&[&format!("--config-file={}", config.display())]);
        drop(file);
        bus
    }

    fn start_with(args: &[&str]) -> Self {
        let out = Command::new("dbus-daemon")
            .args(args)
            .args(["--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon runs (install the `dbus` package)");
        assert!(
            out.status.success(),
            "dbus-daemon failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let address = lines.next().expect("address line").trim().to_owned();
        let pid = lines.next().expect("pid line").trim().parse().expect("pid");
        PrivateBus { address, pid }
    }

    /// The bus address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client of the daemon on this bus, through the contract crate's proxy; its
    /// properties are read fresh on every access (no cache lagging behind signals).
    pub async fn manager_proxy(&self) -> dynplug_dbus::ManagerProxy<'static> {
        let conn = zbus::connection::Builder::address(self.address())
            .build()
            .await
            .expect("connect to the private bus");
        dynplug_dbus::ManagerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("manager proxy")
    }

    /// Calls a method of `org.dynplug.Manager` with busctl; returns what busctl printed
    /// (the reply, or the error on stderr appended).
    pub fn manager_call(&self, method: &str, signature: &str, args: &[&str]) -> String {
        let call = [
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            method,
            signature,
        ];
        let (_, out, err) = busctl_call(self.command("busctl"), call, args);
        out + &err
    }

    /// GETs `path` from the daemon's REST API (at its `ApiAddress`) with curl; the body.
    pub fn api_get(&self, path: &str) -> String {
        let address = self.manager_property("ApiAddress");
        let mut cmd = Command::new("curl");
        cmd.args(["-s", &format!("http://{address}{path}")]);
        run(cmd).1
    }

    /// A property of `org.dynplug.Manager` as busctl prints its value (strings unquoted).
    pub fn manager_property(&self, name: &str) -> String {
        let mut cmd = self.command("busctl");
        cmd.args([
            "--user",
            "get-property",
            "org.dynplug.Manager",
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            name,
        ]);
        let (_, out, _) = run(cmd);
        let value = out.trim();
        let value = value.split_once(' ').map_or(value, |(_, v)| v);
        value.trim_matches('"').to_owned()
    }

    /// Runs `dynplugd` on this bus with the YAML `config` until it exits (for start-up
    /// failures); returns (exit code, stderr).
    pub fn run_daemon_once(&self, plugins: &Path, config: &str, extra: &[&str]) -> (i32, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("c.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = dynplugd_command(self, &config_path, plugins, &dir.path().join("state"));
        cmd.args(extra);
        let (code, _, err) = run(cmd);
        (code, err)
    }

    /// A command (`busctl`, `gdbus`, `dynplugctl`, ...) pointed at this bus through
    /// `DBUS_SESSION_BUS_ADDRESS`.
    /// The environment is the test's, less everything that would steer a daemon from
    /// outside the test: `DYNPLUG_*` overrides and systemd's directory and notify
    /// variables.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        hermetic(&mut cmd);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        cmd
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        send_signal(self.pid as u32, libc::SIGTERM);
    }
}

/// A command running one of the workspace's binaries (`dynplugd`, `dynplugctl`) with a
/// [`hermetic`] environment.
pub fn tool(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    hermetic(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment every variable that configures a daemon from outside
/// a test (`DYNPLUG_*`, and what systemd sets for a service), so that what the test
/// exports on its machine cannot change what it checks.
pub fn hermetic(cmd: &mut Command) {
    const SYSTEMD: [&str; 6] = [
        "NOTIFY_SOCKET",
        "STATE_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "RUNTIME_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
        "WATCHDOG_USEC",
    ];
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("DYNPLUG_") || SYSTEMD.contains(&name.as_ref()) {
            cmd.env_remove(&key);
        }
    }
}

/// Runs `busctl` (`cmd`, which may be wrapped, e.g. in setpriv) to call a method of the
/// daemon on the user bus: `[path, interface, method, signature]` and the arguments.
/// Returns (exit code, stdout, stderr).
pub fn busctl_call(mut cmd: Command, call: [&str; 4], args: &[&str]) -> (i32, String, String) {
    let [path, interface, method, signature] = call;
    cmd.args([
        "--user",
        "call",
        "org.dynplug.Manager",
        path,
        interface,
        method,
    ]);
    if !signature.is_empty() {
        cmd.arg(signature).args(args);
    }
    run(cmd)
}

/// Sends signal `sig` to `pid`.
pub fn send_signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// A datagram socket standing in for systemd's notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    received: Vec<String>,
}

impl Default for NotifySocket {
    fn default() -> Self {
        NotifySocket::new()
    }
}

impl NotifySocket {
    /// Binds a fresh socket.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
            received: Vec::new(),
        }
    }

    /// Its path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next message (up to `timeout`).
    pub fn recv(&mut self, timeout: std::time::Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let mut buf = vec![0u8; 65536];
        let n = self.socket.recv(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.received.push(msg.clone());
        Some(msg)
    }

    /// Waits until a message contains `needle`; panics with what was seen on timeout.
    pub fn wait_for(&mut self, needle: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} within {timeout:?}; got {:?}",
                self.received
            );
            if let Some(msg) = self.recv(left) {
                if msg.lines().any(|l| l == needle || l.starts_with(needle)) {
                    return msg;
                }
            }
        }
    }

    /// Reads and keeps every message already queued, without waiting.
    pub fn drain(&mut self) {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.received
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).expect("blocking");
    }

    /// Every message received so far.
    pub fn received(&self) -> &[String] {
        &self.received
    }
}

/// A real `dynplugd` on a private bus, with its own config and state directories.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    /// The notify socket the daemon reports to.
    pub notify: NotifySocket,
    dir: tempfile::TempDir,
}

/// How long to wait for a daemon to become ready.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Daemon {
    /// Starts `dynplugd` on `bus` with `plugins` and the YAML `config`; returns once it
    /// sent READY=1.
    pub fn start(bus: &PrivateBus, plugins: &Path, config: &str) -> Daemon {
        Daemon::start_with(bus, plugins, config, &[])
    }

    /// Like [`Daemon::start`], with extra command-line arguments.
    pub fn start_with(bus: &PrivateBus, plugins: &Path, config: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, with_worker_user(config)).expect("write config");
        set_mode(&config_path, 0o644);
        let notify = NotifySocket::new();
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = dynplugd_command(bus, &config_path, plugins, &dir.path().join("state"))
            .args(["--log-target", "stderr"])
            .args(extra)
            .env("NOTIFY_SOCKET", notify.path())
            .stderr(log)
            .env_remove("DYNPLUG_CONFIG")
            .spawn()
            .expect("spawn dynplugd");
        let mut daemon = Daemon { child, notify, dir };
        daemon.notify.wait_for("READY=1", READY_TIMEOUT);
        daemon
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The configuration file (rewrite it, then [`Daemon::reload`]).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Sends SIGHUP and waits for the reload to finish (RELOADING=1 then READY=1).
    pub fn reload(&mut self) {
        self.notify.drain();
        send_signal(self.pid(), libc::SIGHUP);
        self.notify.wait_for("RELOADING=1", READY_TIMEOUT);
        self.notify.wait_for("READY=1", READY_TIMEOUT);
    }

    /// Sends `sig` and waits for the process to exit; returns its exit code.
    pub fn stop_with(&mut self, sig: i32) -> Option<i32> {
        send_signal(self.pid(), sig);
        self.wait_exit(std::time::Duration::from_secs(30))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.notify.drain();
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dynplugd did not exit within {timeout:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dynplugd` on `bus` with a config file, a plugins directory and a state directory.
pub fn dynplugd_command(bus: &PrivateBus, config: &Path, plugins: &Path, state: &Path) -> Command {
    let mut cmd = bus.command(binary("dynplugd"));
    cmd.arg("--address")
        .arg(bus.address())
        .arg("--config")
        .arg(config)
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// Waits up to thirty seconds for `child` to end and returns its output; kills it and
/// fails naming `what` if it does not.
pub fn wait_with_deadline(mut child: std::process::Child, what: &str) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: did not end within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Runs a command to completion and returns (exit code, stdout, stderr).
pub fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// PIDs of live processes for which `keep(comm, cmdline)` holds. A zombie waiting for
/// this machine's init to reap it (which happens late here) counts as gone.
pub fn live_processes(keep: impl Fn(&str, &str) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((comm, rest)) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')'))
            else {
                return false;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !rest.trim_start().starts_with('Z') && keep(comm, &String::from_utf8_lossy(&cmdline))
        })
        .collect()
}

/// Waits up to ten seconds for `pids()` to come back empty; fails naming `what`.
pub fn wait_until_gone(what: &str, pids: impl Fn() -> Vec<u32>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = pids();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
