//! Project tasks, run as `cargo xtask TASK`:
//!
//! - `deploy [--release] [--dir DIR]`: builds every plugin in plugins/ (Rust crates with
//!   cargo, C plugins with the system C compiler) and installs the libraries into DIR
//!   (default: the `plugins_dir` of /etc/dynplug/config.yaml, else
//!   /usr/lib/dynplug/plugins) with mode 0644, each through a temporary file and a
//!   rename, so a running daemon never sees a half-written library;
//! - `dist`: release build of everything the Debian package ships, staged in
//!   target/release/dist (plugins with their signatures, the build's public key, shell
//!   completions, man pages); then `cargo deb -p dynplugd --no-build` (dist built the
//!   binaries). Plugins are signed with the key in $DYNPLUG_SIGNING_KEY, else with a
//!   build key made once in target/release/build-key.key;
//! - `cockpit-deb`: the `cockpit-dynplug` package (the Cockpit page in packaging/cockpit,
//!   installed to /usr/share/cockpit/dynplug/), made with dpkg-deb in target/debian/;
//! - `keygen PATH`: a new ed25519 key pair, PATH.key (secret, mode 0600) and PATH.pub
//!   (for a daemon's `trust.keys_dir`);
//! - `sign --key KEY FILE...`: writes FILE.sig, the detached signature of each file;
//! - `test`: every test: `cargo test --workspace`, then the systemd end-to-end suite
//!   (tests/systemd/run.sh; it skips with a message where it cannot run: not root, no
//!   systemd-nspawn, debootstrap or cargo-deb);
//! - `wasm [--out DIR]`: builds the WebAssembly example plugins (plugins/wasm-*: C,
//!   Python, JavaScript) into DIR (default target/wasm-plugins), skipping, with the
//!   command that installs it, a language whose toolchain is missing;
//! - `wasm-component MODULE META OUT`: a plugin component from a core module (or a
//!   component) and a `plugin.meta` file (see docs/wasm.md);
//! - `demo`: builds everything, deploys the example plugins into target/demo/plugins,
//!   starts a private D-Bus bus and runs dynplugd on it in the foreground, printing the
//!   commands that talk to it. Ctrl-C stops both. Needs no root and no system bus.

mod cockpit;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod wasm;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn check(status: std::io::Result<std::process::ExitStatus>, what: &str) -> Result<(), String> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s})")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Plugin crates: every directory under plugins/ with a Cargo.toml, as (lib name, dir).
fn rust_plugins() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let manifest = entry.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let lib = text
                .lines()
                .skip_while(|l| l.trim() != "[lib]")
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name = ")
                        .map(|n| n.trim_matches('"').to_owned())
                });
            if let Some(lib) = lib {
                out.push((lib, entry.path()));
            }
        }
    }
    out.sort();
    out
}

/// C plugins: every `*.c` directly in a plugins/ subdirectory without a Cargo.toml.
fn c_plugins() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
    {
        // WebAssembly examples (plugins/wasm-*) are built by `cargo xtask wasm`.
        let wasm = entry.file_name().to_string_lossy().starts_with("wasm-");
        if wasm || entry.path().join("Cargo.toml").exists() {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "c") {
                out.push(file.path());
            }
        }
    }
    out.sort();
    out
}

fn install(src: &Path, dir: &Path, file_name: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let dst = dir.join(file_name);
    std::fs::copy(src, &tmp)
        .map_err(|e| format!("copy {} to {}: {e}", src.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &dst).map_err(|e| format!("rename into {}: {e}", dst.display()))?;
    println!("  {}", dst.display());
    Ok(())
}

fn configured_plugins_dir() -> PathBuf {
    std::fs::read_to_string("/etc/dynplug/config.yaml")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("plugins_dir:")
                    .map(|v| v.trim().trim_matches('"').to_owned())
            })
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/dynplug/plugins"))
}

/// Builds and installs all plugins into `dir`.
fn deploy(dir: &Path, release: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let plugins = rust_plugins();
    // One cargo invocation for all plugin packages.
    let mut build = cargo();
    build.arg("build").arg("--lib");
    if release {
        build.arg("--release");
    }
    for (_, path) in &plugins {
        let name = std::fs::read_to_string(path.join("Cargo.toml"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("name = ")
                        .map(|n| n.trim_matches('"').to_owned())
                })
            })
            .ok_or_else(|| format!("no package name in {}", path.display()))?;
        build.args(["-p", &name]);
    }
    check(build.status(), "cargo build of the plugins")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    println!("deploying plugins into {}", dir.display());
    let out = target_dir().join(if release { "release" } else { "debug" });
    for (lib, _) in &plugins {
        let file = format!("lib{lib}.so");
        let short = lib.strip_prefix("dynplug_").unwrap_or(lib);
        install(&out.join(&file), dir, &format!("{short}.so"))?;
    }
    let include = root().join("sdk/include");
    for source in c_plugins() {
        let stem = source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let built = out.join(format!("lib{stem}.so"));
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&built)
            .arg("-I")
            .arg(&include)
            .arg(&source)
            .status();
        check(status, &format!("cc {}", source.display()))?;
        install(&built, dir, &format!("{stem}.so"))?;
    }
    Ok(())
}

/// Stages what the Debian package ships besides the daemon binary.
fn dist() -> Result<(), String> {
    check(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "dynplugd",
                "-p",
                "dynplugctl",
                "-p",
                "dynplug-worker",
            ])
            .status(),
        "cargo build --release",
    )?;
    let dist = target_dir().join("release").join("dist");
    deploy(&dist.join("plugins"), true)?;
    sign_dist(&dist)?;
    let ctl = target_dir().join("release/dynplugctl");
    for (shell, file) in [
        ("bash", "dynplugctl"),
        ("zsh", "_dynplugctl"),
        ("fish", "dynplugctl.fish"),
    ] {
        let out = Command::new(&ctl)
            .args(["completions", shell])
            .output()
            .map_err(|e| format!("dynplugctl completions: {e}"))?;
        std::fs::create_dir_all(dist.join("completions")).map_err(|e| e.to_string())?;
        std::fs::write(dist.join("completions").join(file), out.stdout)
            .map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(dist.join("man")).map_err(|e| e.to_string())?;
    let out = Command::new(&ctl)
        .arg("man")
        .output()
        .map_err(|e| format!("dynplugctl man: {e}"))?;
    std::fs::write(dist.join("man/dynplugctl.1"), out.stdout).map_err(|e| e.to_string())?;
    let out = Command::new(target_dir().join("release/dynplugd"))
        .arg("--man-page")
        .output()
        .map_err(|e| format!("dynplugd --man-page: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err("dynplugd --man-page failed".into());
    }
    std::fs::write(dist.join("man/dynplugd.8"), out.stdout).map_err(|e| e.to_string())?;
    println!(
        "staged in {}; now: cargo deb -p dynplugd --no-build",
        dist.display()
    );
    Ok(())
}

/// Writes `text` to `path` with `mode`, through a temporary file and a rename.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp-xtask");
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

/// `keygen PATH`: PATH.key and PATH.pub.
fn keygen(path: &Path) -> Result<(), String> {
    let (secret, public) = dynplug_core::signature::keygen()?;
    let secret_path = path.with_extension("key");
    if secret_path.exists() {
        return Err(format!(
            "{} exists; not overwriting a key",
            secret_path.display()
        ));
    }
    write_file(&secret_path, &format!("{secret}\n"), 0o600)?;
    write_file(&path.with_extension("pub"), &format!("{public}\n"), 0o644)?;
    println!(
        "wrote {} (keep it secret) and {} (copy it into the daemon's trust.keys_dir)",
        secret_path.display(),
        path.with_extension("pub").display()
    );
    Ok(())
}

/// `sign --key KEY FILE...`: FILE.sig beside each file.
fn sign(key: &Path, files: &[PathBuf]) -> Result<(), String> {
    let secret =
        std::fs::read_to_string(key).map_err(|e| format!("read {}: {e}", key.display()))?;
    for file in files {
        let signature = dynplug_core::signature::sign(file, &secret)?;
        let sig = dynplug_core::signature::signature_path(file);
        write_file(&sig, &format!("{signature}\n"), 0o644)?;
        println!("signed {}", file.display());
    }
    Ok(())
}

/// Signs every plugin staged in `dist`, and stages the public key as dist/keys/build.pub.
fn sign_dist(dist: &Path) -> Result<(), String> {
    let key = match std::env::var_os("DYNPLUG_SIGNING_KEY") {
        Some(key) => PathBuf::from(key),
        None => {
            let key = target_dir().join("release/build-key.key");
            if !key.exists() {
                keygen(&key.with_extension(""))?;
            }
            key
        }
    };
    let public = key.with_extension("pub");
    std::fs::create_dir_all(dist.join("keys")).map_err(|e| e.to_string())?;
    std::fs::copy(&public, dist.join("keys/build.pub"))
        .map_err(|e| format!("copy {}: {e}", public.display()))?;
    let mut plugins: Vec<PathBuf> = std::fs::read_dir(dist.join("plugins"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    plugins.sort();
    sign(&key, &plugins)?;
    Ok(())
}

fn demo() -> Result<(), String> {
    eprintln!("building dynplugd, dynplugctl, dynplug-worker and the example plugins (the first time takes a few minutes)...");
    check(cargo().args(["build", "--bins"]).status(), "cargo build")?;
    let demo = target_dir().join("demo");
    let plugins = demo.join("plugins");
    deploy(&plugins, false)?;
    let config = demo.join("config.yaml");
    let state = demo.join("state");
    let text = format!(
        "# Demo configuration written by `cargo xtask demo`.\nplugins_dir: {}\nstate_dir: {}\nlog_level: info\nplugins:\n  text:\n    settings:\n      mode: upper\n  heartbeat:\n    settings:\n      interval_ms: 1000\n  count:\n    timeout_ms: 3600000   # the README's long job (count 600: a minute) runs to its end\n",
        plugins.display(),
        state.display()
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let bus = Command::new("dbus-daemon")
        .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
        .output()
        .map_err(|e| format!("cannot start dbus-daemon (install the `dbus` package): {e}"))?;
    let text = String::from_utf8_lossy(&bus.stdout).into_owned();
    let mut lines = text.lines();
    let address = lines
        .next()
        .ok_or("dbus-daemon printed no address")?
        .trim()
        .to_owned();
    let bus_pid = lines.next().unwrap_or_default().trim().to_owned();
    let bin = target_dir().join("debug");
    let ctl = bin.join("dynplugctl");
    println!(
        "\nA private bus is running at\n  {address}\n\nIn another terminal, talk to the daemon with:\n  {ctl} --address '{address}' list\n  {ctl} --address '{address}' execute text 'hello world'\n  echo '{{\"a\": [1, 2]}}' | {ctl} --address '{address}' execute json\n  {ctl} --address '{address}' execute count 30   # a job: progress bar, Ctrl-C cancels\n  {ctl} --address '{address}' watch\n  busctl --address='{address}' tree org.dynplug.Manager\n  busctl --address='{address}' call org.dynplug.Manager /org/dynplug/Manager org.dynplug.Manager Execute ss hash abc\n\nStarting dynplugd (Ctrl-C stops it and the bus)...\n",
        ctl = ctl.display()
    );
    let daemon = Command::new(bin.join("dynplugd"))
        .arg("--address")
        .arg(&address)
        .arg("--config")
        .arg(&config)
        .args(["--log-target", "stderr"])
        .spawn();
    // Ctrl-C reaches the whole process group: dynplugd stops gracefully on it, and this
    // process must outlive it to take the private bus down afterwards.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: setting a signal to be ignored has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let status = daemon.and_then(|mut child| child.wait());
    let _ = Command::new("kill").arg(&bus_pid).status();
    check(status, "dynplugd")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deploy") => {
            let release = args.iter().any(|a| a == "--release");
            let dir = args
                .iter()
                .position(|a| a == "--dir")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
                .unwrap_or_else(configured_plugins_dir);
            deploy(&dir, release)
        }
        Some("demo") => demo(),
        Some("wasm") => wasm::build_examples(
            args.iter()
                .position(|a| a == "--out")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from),
        ),
        Some("wasm-component") => match &args[1..] {
            [module, meta, out] => {
                wasm::component(Path::new(module), Path::new(meta), Path::new(out))
            }
            _ => Err("usage: cargo xtask wasm-component MODULE plugin.meta OUT.wasm".into()),
        },
        Some("dist") => dist(),
        Some("cockpit-deb") => cockpit::build_deb(&root(), &target_dir(), env!("CARGO_PKG_VERSION"))
            .map(|deb| println!("built {}", deb.display())),
        Some("keygen") => match args.get(1) {
            Some(path) => keygen(Path::new(path)),
            None => Err("usage: cargo xtask keygen PATH (writes PATH.key and PATH.pub)".into()),
        },
        Some("sign") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--key"), Some(key)) if args.len() > 3 => {
                let files: Vec<PathBuf> = args[3..].iter().map(PathBuf::from).collect();
                sign(Path::new(key), &files)
            }
            _ => Err("usage: cargo xtask sign --key KEY FILE...".into()),
        },
        Some("test") => check(cargo().args(["test", "--workspace"]).args(&args[1..]).status(), "cargo test")
            .and_then(|()| check(Command::new(root().join("tests/systemd/run.sh")).status(), "systemd end-to-end tests")),
        _ => Err("usage: cargo xtask deploy [--release] [--dir DIR] | dist | cockpit-deb | test | demo | wasm [--out DIR] | wasm-component MODULE META OUT | keygen PATH | sign --key KEY FILE...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
