//! The attribute macro of the DynPlug plugin SDK: `#[plugin(...)]` declares a Rust
//! plugin's name, version and description once. Use it through `dynplug_sdk::plugin`
//! (or `dynplug_core::plugin`); this crate has no other public API.
//!
//! - `args`: the attribute's arguments, with the checks a value known at compile time
//!   can get (NUL bytes, lengths, an empty version);
//! - `name`: the plugin name rule, the same as the host's;
//! - `expand`: the generated trait methods and the `register_plugin!` call that writes
//!   the `.dynplug.meta` section from the same values.

use proc_macro::TokenStream;

mod args;
mod expand;
mod name;

/// Declares a Rust plugin once: its name, version and description (and, optionally, a
/// settings schema, the service flag and sandbox needs), on its `impl Plugin` block.
///
/// ```
/// use dynplug_sdk::{plugin, Plugin, PluginResult};
///
/// pub struct Upper;
/// impl Upper { pub fn new() -> Self { Upper } }
///
/// #[plugin(name = "upper", description = "upper-cases its input")]
/// impl Plugin for Upper {
///     fn execute(&self, input: &str) -> PluginResult<String> { Ok(input.to_uppercase()) }
/// }
/// # assert_eq!(Upper::new().name(), "upper");
/// # assert_eq!(Upper::new().version(), env!("CARGO_PKG_VERSION"));
/// ```
///
/// From that one declaration the attribute writes the trait's `name`, `version` and
/// `description` (and `is_service`), and registers the type as
/// `register_plugin!(Type, metadata { ... })` does with the same values: the library
/// exports its plugin table and carries its metadata in the `.dynplug.meta` ELF section,
/// so that `dynplugd --inspect` and the host know it without running any of its code.
///
/// Keys:
/// - `name`: a string literal, checked while compiling against the plugin name rule
///   `[a-z0-9][a-z0-9_-]{0,63}`. Default: the package name (`CARGO_PKG_NAME`), which
///   must then pass the same rule; a compile error says so when it does not.
/// - `version`: default `env!("CARGO_PKG_VERSION")`.
/// - `description`: default the package's `description`; a compile error when neither
///   is there.
/// - `settings_schema`: a JSON Schema the plugin's `settings` are checked against.
/// - `service = true`: the plugin runs a service (`start`/`stop`).
/// - `sandbox`: what an isolated worker of it needs, free text.
/// - `crate = path`: the SDK's path, when the crate depends on it under another name.
///
/// Values other than `name` and `service` are string literals, `env!(..)`,
/// `concat!(..)` or `include_str!(..)`: they are written into the library when it is
/// compiled. The type needs an inherent `fn new() -> Self`, as for `register_plugin!`.
/// The impl block must not write `name`, `version`, `description` or `is_service`
/// itself: the attribute refuses it, so the table and the section cannot disagree.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_with_root(syn::parse_quote!(::dynplug_sdk), args, item)
}

/// [`plugin`] for plugin crates that reach the SDK through `dynplug-core` (re-exported
/// there as `dynplug_core::plugin`).
#[doc(hidden)]
#[proc_macro_attribute]
pub fn plugin_via_core(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_with_root(syn::parse_quote!(::dynplug_core), args, item)
}

fn expand_with_root(root: syn::Path, args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(root, args.into(), item.into(), &expand::Package::from_env())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
