//! The workspace's structure, read from its own source: no module of a crate depends on
//! another that depends back on it, directly or around a circle. A dependency is a path
//! through `crate::`, `super::` or `self::` in code (comments, test modules and macro
//! bodies' `$crate::` aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate whose sources are in `src`, with its source text (tests
/// left out), by path (`worker::pool`).
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    out
}

/// The module a path used in module `from` lands in (the longest known prefix).
fn target(from: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if from.is_empty() {
        vec![]
    } else {
        from.split("::").collect()
    };
    match segs.first().copied() {
        Some("crate") => base.clear(),
        Some("self") => {}
        Some("super") => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
            segs.insert(0, "super");
        }
        _ => return None,
    }
    segs.remove(0);
    (1..=segs.len())
        .rev()
        .map(|n| {
            let mut p = base.clone();
            p.extend(&segs[..n]);
            p.join("::")
        })
        .find(|p| known.contains_key(p))
        .or_else(|| Some(base.join("::")))
}

/// The module dependency edges of the crate in `src`, parent/child links aside.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, code) in &mods {
        let deps = out.entry(name.clone()).or_default();
        for (i, _) in code.match_indices("::") {
            // The whole path this `::` belongs to, if it starts at crate/super/self.
            let start = code[..i]
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |p| p + 1);
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |p| i + p);
            if code[..start].ends_with('$') {
                // `$crate::...` in a macro expands in the crate that uses the macro.
                continue;
            }
            let path = code[start..end].trim_end_matches(':');
            let Some(to) = target(name, path, &mods) else {
                continue;
            };
            let related = to == *name
                || to.is_empty()
                || name.is_empty()
                || to.starts_with(&format!("{name}::"))
                || name.starts_with(&format!("{to}::"));
            if !related {
                deps.insert(to);
            }
        }
    }
    out
}

/// The circles among `edges`: strongly connected groups of more than one module.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Modules that reach each other are in one circle.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for d in edges.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (m, r) in &reached {
        let group: Vec<String> = r
            .iter()
            .filter(|o| *o != *m && reached.get(o).is_some_and(|back| back.contains(*m)))
            .cloned()
            .chain(std::iter::once((*m).clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if group.len() > 1 && !out.contains(&group) {
            out.push(group);
        }
    }
    out
}

#[test]
fn no_crate_has_a_module_circle() {
    let root = dynplug_tests::workspace_root();
    let mut found = Vec::new();
    for krate in [
        "sdk",
        "sdk/macros",
        "loader",
        "isolation",
        "host",
        "core",
        "dbus",
        "daemon",
        "ctl",
        "worker",
        "oci",
        "wasm",
    ] {
        for circle in circles(&edges(&root.join(krate).join("src"))) {
            found.push(format!("{krate}: {}", circle.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "module circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_finder_finds_circles() {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    e.entry("c".into()).or_default().insert("a".into());
    e.entry("d".into()).or_default().insert("a".into());
    assert_eq!(circles(&e), vec![vec!["a", "b", "c"]]);
}

/// The names of the packages `crate_dir`'s manifest depends on (normal dependencies).
fn dependencies(crate_dir: &Path) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| !n.is_empty()) {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn the_host_crates_depend_one_way() {
    let root = dynplug_tests::workspace_root();
    let ours = |krate: &str| -> BTreeSet<String> {
        dependencies(&root.join(krate))
            .into_iter()
            .filter(|d| d.starts_with("dynplug-"))
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    // loader <- isolation <- host; the worker binary links no host; ctl links none.
    assert_eq!(ours("loader"), set(&["dynplug-sdk"]));
    assert_eq!(ours("isolation"), set(&["dynplug-sdk", "dynplug-loader"]));
    assert_eq!(
        ours("host"),
        set(&[
            "dynplug-sdk",
            "dynplug-loader",
            "dynplug-isolation",
            "dynplug-wasm"
        ])
    );
    // The WebAssembly runtime knows the SDK's interface and nothing of the host.
    assert_eq!(ours("wasm"), set(&["dynplug-sdk"]));
    assert_eq!(ours("worker"), set(&["dynplug-isolation"]));
    // Registry pulls judge files with the loader's rules, never the host.
    assert_eq!(ours("oci"), set(&["dynplug-sdk", "dynplug-loader"]));
    assert!(ours("ctl")
        .iter()
        .all(|d| d == "dynplug-dbus" || d == "dynplug-sdk"));
    // The loader runs in workers and in `--inspect` before any runtime exists.
    assert!(!dependencies(&root.join("loader")).contains("tokio"));
}

#[test]
fn poisoned_locks_are_handled_one_way() {
    // Every std lock of the host and the daemon is taken through `locks` (a poisoned
    // lock is taken as it is): no unwrap, expect, skip or other policy of its own. The
    // SDK, which depends on nothing, applies the same policy in its own helper.
    let root = dynplug_tests::workspace_root();
    let mut found = Vec::new();
    for krate in [
        "loader",
        "isolation",
        "host",
        "core",
        "daemon",
        "ctl",
        "worker",
    ] {
        for (module, code) in modules(&root.join(krate).join("src")) {
            if krate == "loader" && module == "locks" {
                continue;
            }
            for (i, _) in code.match_indices(".lock()") {
                let after = &code[i + ".lock()".len()..];
                let on_stdio = code[..i].ends_with("stdout()") || code[..i].ends_with("stderr()");
                if !after.starts_with(".await") && !on_stdio {
                    found.push(format!("{krate}: {module}: {}", code[..i].lines().count()));
                }
            }
            if code.contains("PoisonError") {
                found.push(format!("{krate}: {module}: PoisonError"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "locks taken other than through locks::lock:\n{}",
        found.join("\n")
    );
}
