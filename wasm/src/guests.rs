//! Components for tests, made at run time from WebAssembly text and the SDK's WIT
//! (`wit-component`, as `wasm-tools component new` does): well-behaved and hostile
//! plugins without any external tool.
//!
//! A guest is a core module following the canonical ABI: it exports `memory`, a bump
//! allocator `cabi_realloc`, and `execute(ptr, len) -> ret` whose return area holds
//! the `result<string, string>` (tag byte at `ret`, pointer at `ret+4`, length at
//! `ret+8`). Host functions are imported from `dynplug:plugin/host@1.0.0`.

/// The SDK's WIT file.
pub const WIT: &str = include_str!("../../sdk/wit/dynplug.wit");

/// The imports a guest body may call, by the names used in the bodies below.
const IMPORTS: &str = r#"
  (import "dynplug:plugin/host@1.0.0" "log" (func $log (param i32 i32 i32)))
  (import "dynplug:plugin/host@1.0.0" "progress" (func $progress (param f32 i32 i32)))
  (import "dynplug:plugin/host@1.0.0" "cancelled" (func $cancelled (result i32)))
  (import "dynplug:plugin/host@1.0.0" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
"#;

/// Memory, the allocator and the helpers `$ok(ptr, len)` and `$err(ptr, len)` that
/// fill the return area at 16 and return its address. Data may be placed from 64.
const RUNTIME: &str = r#"
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 65536))
  (func $alloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (block $fits
      (br_if $fits (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
                 (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
                 (i32.const -1))
        (then unreachable)))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func $ok (param i32 i32) (result i32)
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (local.get 0))
    (i32.store (i32.const 24) (local.get 1))
    (i32.const 16))
  (func $err (param i32 i32) (result i32)
    (i32.store8 (i32.const 16) (i32.const 1))
    (i32.store (i32.const 20) (local.get 0))
    (i32.store (i32.const 24) (local.get 1))
    (i32.const 16))
"#;

/// The body of `execute` (params `$in` and `$len`, result the return area) and any
/// data segments and functions it needs.
pub struct Guest<'a> {
    /// Extra module fields: `(data (i32.const 64) "...")`, functions.
    pub fields: &'a str,
    /// The instructions of `execute`.
    pub body: &'a str,
}

/// An echo: answers its input.
pub const ECHO: Guest<'static> = Guest {
    fields: "",
    body: "(call $ok (local.get $in) (local.get $len))",
};

/// Loops until stopped.
pub const LOOP: Guest<'static> = Guest {
    fields: "",
    body: "(loop $l (br $l)) (unreachable)",
};

/// Asks for 2 GiB more memory and traps if it is refused.
pub const ALLOC_2GIB: Guest<'static> = Guest {
    fields: "",
    body: "(if (i32.eq (memory.grow (i32.const 32768)) (i32.const -1)) (then unreachable)) (call $ok (i32.const 0) (i32.const 0))",
};

/// Recurses without end.
pub const STACK_OVERFLOW: Guest<'static> = Guest {
    fields: "(func $deeper (param i32) (result i32) (call $deeper (i32.add (local.get 0) (i32.const 1))))",
    body: "(drop (call $deeper (i32.const 0))) (call $ok (i32.const 0) (i32.const 0))",
};

/// Executes `unreachable`.
pub const UNREACHABLE: Guest<'static> = Guest {
    fields: "",
    body: "unreachable",
};

/// Reads past the end of its memory.
pub const OUT_OF_BOUNDS: Guest<'static> = Guest {
    fields: "",
    body: "(drop (i32.load (i32.const -4))) (call $ok (i32.const 0) (i32.const 0))",
};

/// Answers with an error of its own: `no`.
pub const REFUSE: Guest<'static> = Guest {
    fields: r#"(data (i32.const 64) "no")"#,
    body: "(call $err (i32.const 64) (i32.const 2))",
};

/// Logs `hello`, reports progress 0.5 `half`, emits `done` `{}`, then spins until
/// cancelled when its input is `wait`, else echoes.
pub const CONTEXT: Guest<'static> = Guest {
    fields: r#"(data (i32.const 64) "hello") (data (i32.const 72) "half") (data (i32.const 80) "done{}") (data (i32.const 96) "wait") (data (i32.const 104) "cancelled")"#,
    body: r#"
      (call $log (i32.const 2) (i32.const 64) (i32.const 5))
      (call $progress (f32.const 0.5) (i32.const 72) (i32.const 4))
      (drop (call $emit (i32.const 80) (i32.const 4) (i32.const 84) (i32.const 2)))
      (if (i32.and (i32.eq (local.get $len) (i32.const 4))
                   (i32.eq (i32.load (local.get $in)) (i32.load (i32.const 96))))
        (then
          (loop $l (br_if $l (i32.eqz (call $cancelled))))
          (return (call $err (i32.const 104) (i32.const 9)))))
      (call $ok (local.get $in) (local.get $len))"#,
};

/// The core module of `guest`, in WebAssembly text, importing the host functions.
pub fn module_text(guest: &Guest<'_>) -> String {
    module_text_with(IMPORTS, guest)
}

/// The core module of `guest` with `imports` (module fields) instead of the host's.
pub fn module_text_with(imports: &str, guest: &Guest<'_>) -> String {
    format!(
        "(module {imports} {RUNTIME} {fields}\n  (func (export \"execute\") (param $in i32) (param $len i32) (result i32)\n {body}))",
        fields = guest.fields,
        body = guest.body
    )
}

/// A component from the core module text `wat` targeting `world` of `wit` (a WIT
/// source whose main package holds the world; `deps` are WIT sources of the packages
/// it uses besides its own), with a `dynplug.meta` custom section of `meta`'s records
/// if given.
pub fn component_from(
    deps: &[&str],
    wit: &str,
    world: &str,
    wat: &str,
    meta: Option<&[(&str, &str)]>,
) -> Result<Vec<u8>, String> {
    let mut module = wat::parse_str(wat).map_err(|e| e.to_string())?;
    let mut resolve = wit_parser::Resolve::default();
    for (i, dep) in deps.iter().enumerate() {
        resolve
            .push_str(format!("dep{i}.wit"), dep)
            .map_err(|e| format!("{e:#}"))?;
    }
    let package = resolve
        .push_str("dynplug.wit", wit)
        .map_err(|e| format!("{e:#}"))?;
    let world = resolve
        .select_world(&[package], Some(world))
        .map_err(|e| format!("{e:#}"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| format!("{e:#}"))?;
    let mut component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))?;
    if let Some(records) = meta {
        append_custom_section(&mut component, crate::META_SECTION, &meta_bytes(records));
    }
    Ok(component)
}

/// A plugin component of world `dynplug:plugin/plugin` running `guest`, named `name`.
pub fn component(name: &str, guest: &Guest<'_>) -> Vec<u8> {
    component_from(
        &[],
        WIT,
        "plugin",
        &module_text(guest),
        Some(&[
            ("meta", "1"),
            ("name", name),
            ("version", "1.0.0"),
            ("description", "a test guest"),
            ("abi", "2"),
        ]),
    )
    .expect("the test guest builds")
}

/// The bytes of a metadata section holding `records`.
pub fn meta_bytes(records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = b"DYNPLUG\0".to_vec();
    for (key, value) in records {
        data.extend_from_slice(format!("{key}={value}\0").as_bytes());
    }
    data.push(0);
    data
}

/// Appends a custom section named `name` to a component or module.
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut body = Vec::new();
    leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    wasm.push(0);
    leb(wasm, body.len());
    wasm.extend_from_slice(&body);
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
