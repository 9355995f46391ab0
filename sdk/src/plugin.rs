//! The safe Rust API a plugin author implements, and [`register_plugin!`](crate::register_plugin),
//! which `#[plugin(...)]` expands to.

use std::error::Error;

use crate::context::Context;

/// The result type of plugin hooks: any error, reported to the caller as its message.
pub type PluginResult<T> = Result<T, Box<dyn Error>>;

/// A DynPlug plugin.
///
/// Implement this for a type with an inherent `fn new() -> Self`, on an impl block
/// marked `#[plugin(name = "...", description = "...")]`: the attribute writes
/// [`Plugin::name`], [`Plugin::version`] and [`Plugin::description`] (and
/// [`Plugin::is_service`]) from that one declaration and exports the type, metadata
/// section included (see `dynplug_sdk::plugin`). Without the attribute, write those
/// methods and export the type with [`register_plugin!`](crate::register_plugin).
/// The host may construct the type more
/// than once (once to read its metadata, once for the instance that serves calls), so
/// `new` must be cheap and start no work: long-running work belongs in [`Plugin::start`].
///
/// `execute` may be called from several threads at once; that is why the trait
/// requires `Send + Sync` and every method takes `&self`.
pub trait Plugin: Send + Sync {
    /// The plugin's name: `[a-z0-9][a-z0-9_-]{0,63}`, unique among loaded plugins.
    fn name(&self) -> &str;
    /// Semantic version of the plugin, e.g. `"1.0.0"`.
    fn version(&self) -> &str;
    /// One-line description.
    fn description(&self) -> &str;
    /// Handles one call: `input` in, output out; an error goes back to the caller.
    ///
    /// Implement this, or [`Plugin::execute_with`] for a call that logs, reports
    /// progress or notices cancellation. The default refuses the call.
    fn execute(&self, input: &str) -> PluginResult<String> {
        let _ = input;
        Err("the plugin implements neither `execute` nor `execute_with`".into())
    }

    /// Handles one call with the host's services in `ctx` (ABI version 2). The default
    /// calls [`Plugin::execute`].
    fn execute_with(&self, ctx: &Context<'_>, input: &str) -> PluginResult<String> {
        let _ = ctx;
        self.execute(input)
    }

    /// Receives the plugin's `settings` from the configuration, as JSON object text.
    /// Called after construction and again when a reload changes the settings.
    fn configure(&self, settings_json: &str) -> PluginResult<()> {
        let _ = settings_json;
        Ok(())
    }

    /// Whether this plugin runs a long-lived service ([`Plugin::start`]/[`Plugin::stop`]).
    fn is_service(&self) -> bool {
        false
    }

    /// Runs the service on a thread of its own; returns only when the service ends.
    /// Returning (or failing) before [`Plugin::stop`] was called counts as a crash, and
    /// the host restarts the service with a backoff.
    fn start(&self) -> PluginResult<()> {
        Ok(())
    }

    /// Asks a running [`Plugin::start`] to return soon.
    fn stop(&self) -> PluginResult<()> {
        Ok(())
    }
}

/// Exports a [`Plugin`] type through the DynPlug C ABI.
///
/// New plugins use `#[plugin(...)]` (`dynplug_sdk::plugin`), which declares the name,
/// version and description once and expands to this macro's `metadata` form. Both
/// forms below keep working.
///
/// ```
/// use dynplug_sdk::{register_plugin, Plugin, PluginResult};
///
/// pub struct Echo;
/// impl Echo { pub fn new() -> Self { Echo } }
/// impl Plugin for Echo {
///     fn name(&self) -> &str { "echo" }
///     fn version(&self) -> &str { "1.0.0" }
///     fn description(&self) -> &str { "returns its input" }
///     fn execute(&self, input: &str) -> PluginResult<String> { Ok(input.to_owned()) }
/// }
/// register_plugin!(Echo);
/// ```
///
/// The macro defines the `extern "C"` entry point `dynplug_plugin_entry`, which returns
/// a static, versioned table of C function pointers; every call through it is wrapped
/// so that a panic becomes an error result instead of unwinding into the host. The
/// crate must be built with the default `panic = "unwind"` for that to work.
///
/// With a `metadata { ... }` block the macro also writes the plugin's metadata into the
/// library's `.dynplug.meta` ELF section, so that hosts (and `dynplugd --inspect`) know
/// the plugin without running any of its code. Every value must be a literal (or
/// `env!`/`concat!`); the host refuses a plugin whose table disagrees with it.
///
/// ```
/// use dynplug_sdk::{register_plugin, Plugin, PluginResult};
///
/// pub struct Upper;
/// impl Upper { pub fn new() -> Self { Upper } }
/// impl Plugin for Upper {
///     fn name(&self) -> &str { "upper" }
///     fn version(&self) -> &str { "1.2.0" }
///     fn description(&self) -> &str { "upper-cases its input" }
///     fn execute(&self, input: &str) -> PluginResult<String> { Ok(input.to_uppercase()) }
/// }
/// register_plugin!(Upper, metadata {
///     name: "upper",
///     version: "1.2.0",
///     description: "upper-cases its input",
///     settings_schema: r#"{"type": "object", "additionalProperties": false}"#,
/// });
/// ```
#[macro_export]
macro_rules! register_plugin {
    ($ty:ty, metadata {
        name: $name:expr,
        version: $version:expr,
        description: $description:expr
        $(, service: $service:literal)?
        $(, settings_schema: $schema:expr)?
        $(, sandbox: $sandbox:expr)?
        $(,)?
    }) => {
        $crate::register_plugin!($ty);
        const _: () = {
            // The ABI version this SDK builds (`abi::ABI_VERSION`, checked by a test).
            const TEXT: &str = concat!(
                "DYNPLUG\0", "meta=1\0",
                "name=", $name, "\0",
                "version=", $version, "\0",
                "description=", $description, "\0",
                "abi=2\0",
                $("service=", $service, "\0",)?
                $("settings_schema=", $schema, "\0",)?
                $("sandbox=", $sandbox, "\0",)?
                "\0"
            );
            #[used]
            #[unsafe(link_section = ".dynplug.meta")]
            static DYNPLUG_METADATA: [u8; TEXT.len()] = $crate::abi::meta_bytes(TEXT);
        };
    };
    ($ty:ty) => {
        /// DynPlug entry point: returns this library's plugin table.
        #[unsafe(no_mangle)]
        pub extern "C" fn dynplug_plugin_entry() -> *const $crate::abi::PluginTable {
            static EXPORTED: ::std::sync::OnceLock<
                ::std::option::Option<$crate::export::Exported>,
            > = ::std::sync::OnceLock::new();
            unsafe extern "C" fn create() -> *mut ::std::ffi::c_void {
                $crate::export::create::<$ty>(<$ty>::new)
            }
            $crate::export::entry::<$ty>(&EXPORTED, <$ty>::new, create)
        }
    };
}
