//! `cargo xtask wasm`: builds the WebAssembly example plugins (plugins/wasm-*) into
//! target/wasm-plugins, and `cargo xtask wasm-component`: makes a plugin component
//! out of a core module (or a component) and a `plugin.meta` file.
//!
//! No `wasm-tools` or `wit-bindgen` binaries: the component is made with the
//! `wit-component` library (what `wasm-tools component new` runs), and the C example
//! needs no bindings generator (sdk/include/dynplug_wasm.h). What a language needs:
//! - C: `clang-14` and `lld-14` (Debian), targeting freestanding wasm32: no WASI;
//! - Python: `componentize-py` (PyPI);
//! - JavaScript: `componentize-js` (npm, `@bytecodealliance/componentize-js`).
//!
//! A toolchain that is missing is named with the command that installs it, and that
//! language is skipped; the task fails only when an example that could be built fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{check, root, target_dir};

/// The records of a `plugin.meta` file (`key=value` lines) as the bytes of a
/// `dynplug.meta` section.
fn meta_section(meta: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(meta).map_err(|e| format!("{}: {e}", meta.display()))?;
    let mut data = b"DYNPLUG\0meta=1\0".to_vec();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if !line.contains('=') {
            return Err(format!("{}: `{line}` is not key=value", meta.display()));
        }
        data.extend_from_slice(line.as_bytes());
        data.push(0);
    }
    data.push(0);
    Ok(data)
}

fn leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends the custom section `name` to a module or component.
fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut body = Vec::new();
    leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    wasm.push(0);
    leb(wasm, body.len());
    wasm.extend_from_slice(&body);
}

/// A plugin component from `input` (a core module following the canonical ABI of world
/// `dynplug:plugin/plugin`, or an already made component) with the metadata of `meta`.
pub(crate) fn component(input: &Path, meta: &Path, out: &Path) -> Result<(), String> {
    let bytes = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let is_component = bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00]);
    let mut wasm = if is_component {
        bytes
    } else {
        let mut module = bytes;
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve
            .push_path(root().join("sdk/wit"))
            .map_err(|e| format!("sdk/wit: {e:#}"))?
            .0;
        let world = resolve
            .select_world(&[package], Some("plugin"))
            .map_err(|e| format!("{e:#}"))?;
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .map_err(|e| format!("{e:#}"))?;
        wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .map_err(|e| format!("{}: {e:#}", input.display()))?
    };
    append_custom_section(&mut wasm, "dynplug.meta", &meta_section(meta)?);
    std::fs::write(out, wasm).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("  {}", out.display());
    Ok(())
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first of `candidates` that runs.
fn first_found(candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| found(p))
}

fn build_c(dir: &Path, source: &Path, work: &Path) -> Result<PathBuf, String> {
    let clang = first_found(&["clang-14", "clang"])
        .ok_or("C: clang is missing (apt-get install clang-14 lld-14)")?;
    if first_found(&["wasm-ld-14", "wasm-ld"]).is_none() {
        return Err("C: wasm-ld is missing (apt-get install lld-14)".into());
    }
    let core = work.join("core.wasm");
    check(
        Command::new(clang)
            .args(["--target=wasm32", "-nostdlib", "-O2", "-fuse-ld=lld"])
            .arg("-I")
            .arg(root().join("sdk/include"))
            .args(["-Wl,--no-entry", "-o"])
            .arg(&core)
            .arg(source)
            .current_dir(dir)
            .status(),
        "clang",
    )?;
    Ok(core)
}

fn build_python(dir: &Path, work: &Path) -> Result<PathBuf, String> {
    if !found("componentize-py") {
        return Err(
            "Python: componentize-py is missing (pip install componentize-py==0.25.1)".into(),
        );
    }
    let out = work.join("app.wasm");
    check(
        Command::new("componentize-py")
            .arg("-d")
            .arg(root().join("sdk/wit"))
            .args(["-w", "plugin", "componentize", "app", "-o"])
            .arg(&out)
            .current_dir(dir)
            .status(),
        "componentize-py",
    )?;
    Ok(out)
}

fn build_js(dir: &Path, work: &Path) -> Result<PathBuf, String> {
    if !dir.join("node_modules/.bin/componentize-js").exists() {
        if !found("npm") {
            return Err("JavaScript: npm is missing (apt-get install npm)".into());
        }
        check(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir)
                .status(),
            "npm ci",
        )?;
    }
    let out = work.join("app.wasm");
    check(
        Command::new(dir.join("node_modules/.bin/componentize-js"))
            .arg("app.js")
            .arg("--wit")
            .arg(root().join("sdk/wit"))
            .args([
                "--world-name",
                "plugin",
                "--disable",
                "http",
                "--disable",
                "fetch-event",
                "-o",
            ])
            .arg(&out)
            .current_dir(dir)
            .status(),
        "componentize-js",
    )?;
    Ok(out)
}

/// Builds every plugins/wasm-* example into `out` (default target/wasm-plugins).
pub(crate) fn build_examples(out: Option<PathBuf>) -> Result<(), String> {
    let out = out.unwrap_or_else(|| target_dir().join("wasm-plugins"));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("plugins"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("wasm-"))
        })
        .collect();
    examples.sort();
    let (mut built, mut missing, mut failed) = (0, Vec::new(), Vec::new());
    for dir in examples {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let work = target_dir().join("wasm-build").join(&name);
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let c_source = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "c"));
        let made = if let Some(source) = c_source {
            build_c(&dir, &source, &work)
        } else if dir.join("app.py").exists() {
            build_python(&dir, &work)
        } else if dir.join("app.js").exists() {
            build_js(&dir, &work)
        } else {
            continue;
        };
        let result = made.map_err(|e| (true, e)).and_then(|module| {
            component(
                &module,
                &dir.join("plugin.meta"),
                &out.join(format!("{name}.wasm")),
            )
            .map_err(|e| (false, e))
        });
        match result {
            Ok(()) => built += 1,
            Err((true, e)) if e.contains("is missing") => missing.push(format!("{name}: {e}")),
            Err((_, e)) => failed.push(format!("{name}: {e}")),
        }
    }
    for m in &missing {
        println!("SKIP {m}");
    }
    println!("{built} WebAssembly plugins built into {}", out.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}
