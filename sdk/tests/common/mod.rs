//! What the section tests share: how to read this test binary's own `.dynplug.meta`
//! section and plugin table, and the bytes both ways of declaring a plugin must write.

use std::ffi::CStr;

use dynplug_sdk::abi::{self, PluginTable};
use object::{Object, ObjectSection};

/// The section a plugin declared as `same` (see the two test files) must carry, byte
/// for byte: the layout `abi::META_MAGIC` describes, as `register_plugin!` wrote it
/// before the attribute existed.
pub(crate) const SECTION: &[u8] = b"DYNPLUG\0meta=1\0name=same\0version=2.0.1\0\
description=declared once\0abi=2\0service=true\0\
settings_schema={\"type\": \"object\"}\0sandbox=network\0\0";

/// The `.dynplug.meta` section of the running test binary, as a host reads a plugin's.
pub(crate) fn own_section() -> Vec<u8> {
    let exe = std::fs::read("/proc/self/exe").expect("read the test binary");
    let elf = object::File::parse(&*exe).expect("the test binary is an ELF file");
    let section = elf
        .section_by_name(abi::META_SECTION)
        .expect("the test binary has a .dynplug.meta section");
    section.data().expect("section data").to_vec()
}

/// What the plugin table returned by `entry` says: name, version, description, flags.
pub(crate) fn table(entry: extern "C" fn() -> *const PluginTable) -> (String, String, String, u32) {
    let table = entry();
    assert!(!table.is_null(), "the entry point returned no table");
    // SAFETY: a non-null table from `register_plugin!`'s entry point is a static that
    // lives as long as the program.
    let table = unsafe { &*table };
    let text = |p: *const std::ffi::c_char| {
        assert!(!p.is_null());
        // SAFETY: the table's strings are NUL-terminated and live as long as it does.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
    };
    (
        text(table.name),
        text(table.version),
        text(table.description),
        table.flags,
    )
}
