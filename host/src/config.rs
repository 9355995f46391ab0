//! The YAML configuration: schema, defaults, validation and `DYNPLUG_*` overrides.
//!
//! Every key has a default, so an empty file is a valid configuration. Unknown keys
//! are errors (a typo must not silently do nothing). Errors name the file, the field
//! and the problem, with line and column when the YAML parser knows them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dynplug_loader::signature::SignatureMode;
pub use dynplug_loader::trust_config::TrustConfig;
use serde::Deserialize;

use crate::error::ConfigError;
use dynplug_isolation::sandbox::{SandboxPolicy, DEFAULT_WORKER_USER};
use dynplug_loader::name::validate_plugin_name;

/// The default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dynplug/config.yaml";
/// The default plugins directory.
pub const DEFAULT_PLUGINS_DIR: &str = "/usr/lib/dynplug/plugins";
/// Where runtime state goes when neither `state_dir` nor `$STATE_DIRECTORY` is set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dynplug";
/// Largest configuration file accepted.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

const MIB: usize = 1024 * 1024;
/// Every configurable number and its range (also in config.yaml and the operations
/// guide). Values outside are configuration errors naming the key and the range.
pub mod ranges {
    use std::ops::RangeInclusive;

    /// Timeouts in milliseconds: 1 ms to a day.
    pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=86_400_000;
    /// Input, output and body sizes in bytes: 1 B to 100 MiB.
    pub const BYTES: RangeInclusive<usize> = 1..=100 * super::MIB;
    /// Concurrent calls per plugin.
    pub const CONCURRENCY: RangeInclusive<usize> = 1..=1024;
    /// Worker processes per plugin.
    pub const WORKERS: RangeInclusive<usize> = 1..=64;
    /// Address space per worker, in MiB: 16 MiB to 1 TiB.
    pub const MEMORY_MB: RangeInclusive<u64> = 16..=1_048_576;
    /// CPU time per worker, in seconds.
    pub const CPU_S: RangeInclusive<u64> = 1..=86_400;
    /// Open files per worker.
    pub const OPEN_FILES: RangeInclusive<u64> = 8..=65_536;
    /// Crashes within a minute before quarantine.
    pub const CRASH_LIMIT: RangeInclusive<u32> = 1..=1000;
    /// Retries of a failed call.
    pub const RETRIES: RangeInclusive<u32> = 0..=10;
    /// Rate-limit figures.
    pub const RATE: RangeInclusive<u32> = 1..=1_000_000;
    /// Concurrent REST connections.
    pub const CONNECTIONS: RangeInclusive<usize> = 1..=4096;
    /// Jobs running at once.
    pub const RUNNING_JOBS: RangeInclusive<usize> = 1..=10_000;
    /// Ended jobs kept.
    pub const KEPT_JOBS: RangeInclusive<usize> = 0..=100_000;
    /// How long an ended job is kept, in milliseconds: up to a week.
    pub const KEEP_MS: RangeInclusive<u64> = 0..=604_800_000;
    /// The largest plugin file loaded: 4 KiB to 4 GiB.
    pub const PLUGIN_BYTES: RangeInclusive<u64> = 4096..=4 << 30;
}

/// Checks that `value` (of `field`) lies in `range`.
fn in_range<T: PartialOrd + Display>(
    file: &Path,
    field: impl Into<String>,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::field(
        file,
        field,
        format!(
            "{value} is out of range (allowed: {} to {})",
            range.start(),
            range.end()
        ),
    ))
}

/// The YAML parser places a duplicate plugin key at the start of its mapping; this moves
/// the location to the line of the second occurrence, where the admin has to look.
fn duplicate_at_its_line(problem: String, text: &str) -> String {
    let Some(name) = problem
        .split_once("plugin `")
        .and_then(|(_, rest)| rest.split_once("` is listed twice"))
        .map(|(name, _)| name)
    else {
        return problem;
    };
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let key = line.trim_start();
            line.starts_with([' ', '\t'])
                && key
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .nth(1)
        .map(|(i, _)| i + 1);
    match (second, problem.split_once(" at line ")) {
        (Some(line), Some((head, _))) => format!("{head} at line {line}"),
        _ => problem,
    }
}

/// Deserializes the `plugins:` mapping, refusing a plugin listed twice (a plain map
/// would keep the last one silently).
fn unique_plugins<'de, D>(de: D) -> Result<BTreeMap<String, PluginConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Plugins;
    impl<'de> serde::de::Visitor<'de> for Plugins {
        type Value = BTreeMap<String, PluginConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a mapping of plugin names to their settings")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "plugin `{name}` is listed twice"
                    )));
                }
                let value = map.next_value::<Option<PluginConfig>>()?;
                out.insert(name, value.unwrap_or_default());
            }
            Ok(out)
        }
    }
    de.deserialize_map(Plugins)
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory scanned for `*.so` plugin libraries.
    pub plugins_dir: PathBuf,
    /// Log filter: `error`, `warn`, `info`, `debug`, `trace` (or a tracing directive).
    pub log_level: String,
    /// Where runtime state (enable/disable) is kept; see [`Config::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// Whether plugins not listed under `plugins:` are enabled.
    pub default_enabled: bool,
    /// Create plugin instances on first use instead of at start.
    pub lazy_load: bool,
    /// Call timeout for plugins that set none, in milliseconds.
    pub default_timeout_ms: u64,
    /// Largest input accepted by `execute`, in bytes.
    pub max_input_bytes: usize,
    /// Calls one plugin may have running at once; more wait (within the timeout).
    pub default_max_concurrency: usize,
    /// Largest answer accepted from a plugin that sets none, in bytes.
    pub max_output_bytes: usize,
    /// The user isolated plugins run as when the daemon runs as root.
    pub worker_user: String,
    /// The REST API.
    pub server: ServerConfig,
    /// Background jobs.
    pub jobs: JobsConfig,
    /// Which plugin files are trusted beyond owner and mode: signatures.
    pub trust: TrustConfig,
    /// Per-plugin settings, by plugin name.
    #[serde(deserialize_with = "unique_plugins")]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Each plugin's settings as JSON with secrets read, filled by [`Config::validate`].
    #[serde(skip)]
    resolved_settings: ResolvedSettings,
    /// The file [`Config::validate`] checked it as, for errors found later.
    #[serde(skip)]
    validated_as: ValidatedAs,
}

/// The file a configuration was validated as. Takes no part in comparisons.
#[derive(Clone, Debug, Default)]
struct ValidatedAs(std::sync::OnceLock<PathBuf>);

impl PartialEq for ValidatedAs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Plugin settings with their secrets read (by [`Config::validate`]). Derived from the
/// rest of the configuration, so it takes no part in comparisons, and its `Debug` never
/// shows a secret.
#[derive(Clone, Default)]
struct ResolvedSettings(std::sync::OnceLock<BTreeMap<String, String>>);

impl ResolvedSettings {
    fn set(&self, resolved: BTreeMap<String, String>) -> Result<(), BTreeMap<String, String>> {
        self.0.set(resolved)
    }

    fn get(&self) -> Option<&BTreeMap<String, String>> {
        self.0.get()
    }
}

impl PartialEq for ResolvedSettings {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ResolvedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResolvedSettings(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            plugins_dir: PathBuf::from(DEFAULT_PLUGINS_DIR),
            log_level: "info".into(),
            state_dir: None,
            default_enabled: true,
            lazy_load: false,
            default_timeout_ms: 30_000,
            max_input_bytes: 8 * 1024 * 1024,
            default_max_concurrency: 16,
            max_output_bytes: 16 * MIB,
            worker_user: DEFAULT_WORKER_USER.into(),
            server: ServerConfig::default(),
            jobs: JobsConfig::default(),
            trust: TrustConfig::default(),
            plugins: BTreeMap::new(),
            resolved_settings: ResolvedSettings::default(),
            validated_as: ValidatedAs::default(),
        }
    }
}

/// Background jobs (`jobs:`): how many may run, how many ended ones are kept and for
/// how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs running at once; one more is refused (`TooManyJobs`).
    pub max_running: usize,
    /// Jobs one caller (a D-Bus user, a REST token) may have running at once; one more
    /// is refused (`TooManyJobsForCaller`). Root is not held to it.
    pub max_running_per_user: usize,
    /// Ended jobs kept for their callers; the oldest goes first.
    pub max_finished: usize,
    /// How long an ended job is kept, in milliseconds.
    pub keep_finished_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_running: 64,
            max_running_per_user: 16,
            max_finished: 256,
            keep_finished_ms: 600_000,
        }
    }
}

impl JobsConfig {
    /// The bounds the job table applies.
    pub fn limits(&self) -> crate::jobs::JobLimits {
        crate::jobs::JobLimits {
            max_running: self.max_running,
            max_running_per_user: self.max_running_per_user.min(self.max_running),
            max_finished: self.max_finished,
            keep_finished: std::time::Duration::from_millis(self.keep_finished_ms),
        }
    }
}

/// The optional REST API (`server:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Serve the API.
    pub enabled: bool,
    /// Address to bind; loopback by default.
    pub host: String,
    /// TCP port; 0 picks a free one (see the `ApiAddress` D-Bus property).
    pub port: u16,
    /// File holding the bearer token, which may do everything (scope `manage`). A
    /// relative path is looked up in `$CREDENTIALS_DIRECTORY` (systemd's
    /// `LoadCredential=`).
    pub token_file: Option<PathBuf>,
    /// More tokens, each limited to a scope and optionally to some plugins.
    pub tokens: Vec<ScopedToken>,
    /// A token for `GET /metrics` (which is open without it); a `manage` token works too.
    pub metrics_token_file: Option<PathBuf>,
    /// Serve on a non-loopback address without a token anyway.
    pub allow_insecure_bind: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time a request may take in all, in milliseconds.
    pub request_timeout_ms: u64,
    /// Time a client has to send a complete request head, in milliseconds, counted
    /// from when the connection opens or the previous response was sent: slow and idle
    /// keep-alive connections are closed after it.
    pub header_timeout_ms: u64,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// `GET /events` streams open at once (at most half of `max_connections`, so short
    /// requests always keep the other half); one more is refused with 429.
    pub max_event_streams: usize,
    /// `GET /events` streams one client (a token, or an address without tokens) may
    /// have open at once.
    pub max_event_streams_per_client: usize,
    /// Per-client-address rate limit; none unless configured.
    pub rate_limit: Option<RateLimit>,
}

/// What a REST token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Read jobs and the event stream (the plugin list and details are open to all).
    Read,
    /// Run plugins: execute, start and cancel jobs.
    Execute,
    /// Everything: also enable and disable plugins.
    Manage,
}

impl Scope {
    /// `read`, `execute` or `manage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Execute => "execute",
            Scope::Manage => "manage",
        }
    }
}

/// A REST token limited to a scope (`server.tokens[]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedToken {
    /// The file holding it (relative: in `$CREDENTIALS_DIRECTORY`).
    pub file: PathBuf,
    /// What it may do.
    pub scope: Scope,
    /// The plugins it may run; absent means all.
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
}

/// A token-bucket rate limit per client address (`server.rate_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 8080,
            token_file: None,
            tokens: Vec::new(),
            metrics_token_file: None,
            allow_insecure_bind: false,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 60_000,
            header_timeout_ms: 10_000,
            max_connections: 256,
            max_event_streams: 32,
            max_event_streams_per_client: 4,
            rate_limit: None,
        }
    }
}

/// How a plugin is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In the daemon's own process (fastest; a segfault in the plugin kills the daemon).
    #[default]
    InProcess,
    /// In a separate worker process.
    Process,
    /// In a WebAssembly sandbox in the daemon's process (`*.wasm` component plugins;
    /// a `.wasm` file runs so whatever its `isolation` says).
    Wasm,
}

/// Whether calls of an in-process plugin may run on the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FastPath {
    /// Learned: once its calls prove consistently fast, they run inline, without the
    /// hand-off to a thread; one slow call sends them back to threads for good.
    #[default]
    Auto,
    /// Every call goes to a thread of its own (the hung-call guarantees for every call).
    Off,
}

/// Settings of one plugin (`plugins: NAME:`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Enabled at start; `None` means `default_enabled`.
    pub enabled: Option<bool>,
    /// Call timeout in milliseconds; `None` means `default_timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Concurrent calls allowed; `None` means `default_max_concurrency`.
    pub max_concurrency: Option<usize>,
    /// Where the plugin runs.
    pub isolation: Isolation,
    /// Whether its calls may run inline once they prove fast (in-process plugins).
    pub fast_path: FastPath,
    /// Worker processes for `isolation: process` (concurrent calls); default 2.
    pub workers: Option<usize>,
    /// Address-space limit per worker, in MiB (`isolation: process`).
    pub memory_limit_mb: Option<u64>,
    /// CPU-time limit per worker, in seconds (`isolation: process`).
    pub cpu_limit_s: Option<u64>,
    /// Open-file limit per worker (`isolation: process`); default 64.
    pub max_open_files: Option<u64>,
    /// Crashes within a minute that quarantine the plugin (`isolation: process`); default 5.
    pub crash_limit: Option<u32>,
    /// A semantic-version requirement the plugin must satisfy (e.g. `">=1.2, <2"`).
    pub version: Option<String>,
    /// Extra attempts for calls that fail transiently (a crashed worker; a timeout when
    /// `idempotent`); plain plugin errors are never retried. Default 0.
    pub retries: u32,
    /// Whether a call may safely run twice (allows retrying timeouts).
    pub idempotent: bool,
    /// Largest answer accepted, in bytes; `None` means the top-level `max_output_bytes`.
    pub max_output_bytes: Option<usize>,
    /// The confinement of its workers (`isolation: process`); every layer is on by
    /// default.
    pub sandbox: SandboxPolicy,
    /// Free-form settings handed to the plugin's `configure` hook as JSON. A value
    /// written `{secret_file: PATH}` or `{credential: NAME}` is replaced by the file's
    /// content (NAME is looked up in `$CREDENTIALS_DIRECTORY`); secrets are never logged
    /// or shown.
    pub settings: Option<serde_yaml::Value>,
}

impl Config {
    /// Reads, parses, applies `DYNPLUG_*` overrides from `env` and validates `path`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // One open: a regular file, trusted owner and mode, at most MAX_CONFIG_BYTES.
        let bytes = dynplug_loader::trust::read_side_file(
            path,
            dynplug_loader::trust::TrustPolicy::for_current_process(),
            MAX_CONFIG_BYTES,
        )
        .map_err(|e| match e {
            dynplug_loader::trust::SideFileError::Refused { reason, .. } => {
                ConfigError::file(path, format!("refusing the file: {reason}"))
            }
            other => ConfigError::file(path, format!("cannot read: {other}")),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::file(
                path,
                format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        let mut config = Config::parse(&text, path)?;
        config.apply_env(env)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses YAML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| {
            let problem = duplicate_at_its_line(e.to_string(), text);
            // serde_yaml prefixes the dotted path of the field ("plugins.echo: ...").
            match problem.split_once(": ") {
                Some((field, rest)) if !field.contains(' ') => {
                    ConfigError::field(origin, field, rest)
                }
                _ => ConfigError::file(origin, problem),
            }
        })
    }

    /// Applies `DYNPLUG_PLUGINS_DIR`, `DYNPLUG_LOG_LEVEL`, `DYNPLUG_STATE_DIR`,
    /// `DYNPLUG_SERVER_ENABLED`, `DYNPLUG_SERVER_HOST` and `DYNPLUG_SERVER_PORT`.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let origin = Path::new("<environment>");
        if let Some(v) = env("DYNPLUG_PLUGINS_DIR") {
            self.plugins_dir = v.into();
        }
        if let Some(v) = env("DYNPLUG_LOG_LEVEL") {
            self.log_level = v;
        }
        if let Some(v) = env("DYNPLUG_STATE_DIR") {
            self.state_dir = Some(v.into());
        }
        if let Some(v) = env("DYNPLUG_SERVER_ENABLED") {
            self.server.enabled = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(ConfigError::field(
                        origin,
                        "DYNPLUG_SERVER_ENABLED",
                        format!("`{v}` is not a boolean"),
                    ))
                }
            };
        }
        if let Some(v) = env("DYNPLUG_SERVER_HOST") {
            self.server.host = v;
        }
        if let Some(v) = env("DYNPLUG_SERVER_PORT") {
            self.server.port = v.parse().map_err(|_| {
                ConfigError::field(
                    origin,
                    "DYNPLUG_SERVER_PORT",
                    format!("`{v}` is not a port number"),
                )
            })?;
        }
        Ok(())
    }

    /// Checks what the schema alone cannot express.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        if self.plugins_dir.as_os_str().is_empty() {
            return Err(ConfigError::field(file, "plugins_dir", "must not be empty"));
        }
        if !self.log_level.contains('=') && !LEVELS.contains(&self.log_level.as_str()) {
            return Err(ConfigError::field(
                file,
                "log_level",
                format!("`{}` is not one of {}", self.log_level, LEVELS.join(", ")),
            ));
        }
        in_range(
            file,
            "default_timeout_ms",
            self.default_timeout_ms,
            ranges::TIMEOUT_MS,
        )?;
        in_range(file, "max_input_bytes", self.max_input_bytes, ranges::BYTES)?;
        in_range(
            file,
            "max_output_bytes",
            self.max_output_bytes,
            ranges::BYTES,
        )?;
        in_range(
            file,
            "default_max_concurrency",
            self.default_max_concurrency,
            ranges::CONCURRENCY,
        )?;
        if self.worker_user.is_empty() {
            return Err(ConfigError::field(file, "worker_user", "must not be empty"));
        }
        self.validate_server(file)?;
        in_range(
            file,
            "trust.max_plugin_bytes",
            self.trust.max_plugin_bytes,
            ranges::PLUGIN_BYTES,
        )?;
        in_range(
            file,
            "jobs.max_running",
            self.jobs.max_running,
            ranges::RUNNING_JOBS,
        )?;
        in_range(
            file,
            "jobs.max_running_per_user",
            self.jobs.max_running_per_user,
            ranges::RUNNING_JOBS,
        )?;
        in_range(
            file,
            "jobs.max_finished",
            self.jobs.max_finished,
            ranges::KEPT_JOBS,
        )?;
        in_range(
            file,
            "jobs.keep_finished_ms",
            self.jobs.keep_finished_ms,
            ranges::KEEP_MS,
        )?;
        let mut resolved = BTreeMap::new();
        for (name, plugin) in &self.plugins {
            validate_plugin_name(name)
                .map_err(|e| ConfigError::field(file, format!("plugins.{name}"), e))?;
            plugin.validate_numbers(file, name)?;
            let field = |f: &str| format!("plugins.{name}.{f}");
            if let Some(req) = &plugin.version {
                semver::VersionReq::parse(req).map_err(|e| {
                    ConfigError::field(
                        file,
                        field("version"),
                        format!("`{req}` is not a version requirement: {e}"),
                    )
                })?;
            }
            if let Some(settings) = &plugin.settings {
                if !settings.is_mapping() {
                    return Err(ConfigError::field(
                        file,
                        field("settings"),
                        "must be a mapping of keys to values",
                    ));
                }
                let json = resolve_secrets(settings, &format!("plugins.{name}.settings"))
                    .map_err(|(f, problem)| ConfigError::field(file, f, problem))?;
                resolved.insert(name.clone(), json.to_string());
            }
        }
        // Secrets are read here, once per load; plugins get exactly what was validated.
        let _ = self.resolved_settings.set(resolved);
        let _ = self.validated_as.0.set(file.to_owned());
        Ok(())
    }

    /// The file this configuration was validated as (for errors found while applying
    /// it, such as settings that break a plugin's schema).
    pub fn file(&self) -> &Path {
        self.validated_as
            .0
            .get()
            .map_or(Path::new("<configuration>"), PathBuf::as_path)
    }

    fn validate_server(&self, file: &Path) -> Result<(), ConfigError> {
        let server = &self.server;
        let host: std::net::IpAddr = server.host.parse().map_err(|_| {
            ConfigError::field(
                file,
                "server.host",
                format!("`{}` is not an IP address", server.host),
            )
        })?;
        for (i, token) in server.tokens.iter().enumerate() {
            for name in token.plugins.iter().flatten() {
                validate_plugin_name(name).map_err(|e| {
                    ConfigError::field(file, format!("server.tokens[{i}].plugins"), e)
                })?;
            }
        }
        if server.enabled
            && !host.is_loopback()
            && server.token_file.is_none()
            && server.tokens.is_empty()
            && !server.allow_insecure_bind
        {
            return Err(ConfigError::field(
                file,
                "server.host",
                format!(
                    "refusing to serve the API on non-loopback {host} without server.token_file; \
                     set a token, or allow_insecure_bind: true if something else guards it"
                ),
            ));
        }
        in_range(
            file,
            "server.max_body_bytes",
            server.max_body_bytes,
            ranges::BYTES,
        )?;
        in_range(
            file,
            "server.request_timeout_ms",
            server.request_timeout_ms,
            ranges::TIMEOUT_MS,
        )?;
        in_range(
            file,
            "server.header_timeout_ms",
            server.header_timeout_ms,
            ranges::TIMEOUT_MS,
        )?;
        in_range(
            file,
            "server.max_connections",
            server.max_connections,
            ranges::CONNECTIONS,
        )?;
        in_range(
            file,
            "server.max_event_streams",
            server.max_event_streams,
            ranges::CONNECTIONS,
        )?;
        in_range(
            file,
            "server.max_event_streams_per_client",
            server.max_event_streams_per_client,
            ranges::CONNECTIONS,
        )?;
        if let Some(limit) = server.rate_limit {
            in_range(
                file,
                "server.rate_limit.per_second",
                limit.per_second,
                ranges::RATE,
            )?;
            in_range(file, "server.rate_limit.burst", limit.burst, ranges::RATE)?;
        }
        Ok(())
    }

    /// Where runtime state lives: `state_dir`, else `$STATE_DIRECTORY` (first entry), else
    /// [`DEFAULT_STATE_DIR`].
    pub fn state_dir(&self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| env("STATE_DIRECTORY").and_then(|v| v.split(':').next().map(PathBuf::from)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// The settings of `plugin` for the config, or the defaults.
    pub fn plugin(&self, name: &str) -> PluginConfig {
        self.plugins.get(name).cloned().unwrap_or_default()
    }

    /// Whether `name` is enabled by configuration (before runtime overrides).
    pub fn enabled(&self, name: &str) -> bool {
        self.plugins
            .get(name)
            .and_then(|p| p.enabled)
            .unwrap_or(self.default_enabled)
    }

    /// The call timeout of `name`.
    pub fn timeout(&self, name: &str) -> Duration {
        let ms = self
            .plugins
            .get(name)
            .and_then(|p| p.timeout_ms)
            .unwrap_or(self.default_timeout_ms);
        Duration::from_millis(ms)
    }

    /// How many concurrent calls `name` may serve.
    pub fn max_concurrency(&self, name: &str) -> usize {
        self.plugins
            .get(name)
            .and_then(|p| p.max_concurrency)
            .unwrap_or(self.default_max_concurrency)
    }

    /// Whether `name`'s calls may run inline once they prove fast.
    pub fn fast_path(&self, name: &str) -> FastPath {
        self.plugins
            .get(name)
            .map(|p| p.fast_path)
            .unwrap_or_default()
    }

    /// The retry policy of `name`: extra attempts, and whether timeouts are retried.
    pub fn retry_policy(&self, name: &str) -> (u32, bool) {
        self.plugins
            .get(name)
            .map_or((0, false), |p| (p.retries, p.idempotent))
    }

    /// How `name` runs.
    pub fn isolation(&self, name: &str) -> Isolation {
        self.plugins
            .get(name)
            .map(|p| p.isolation)
            .unwrap_or_default()
    }

    /// The settings of `name` as JSON object text (`{}` when none).
    ///
    /// Secrets in the settings were read by [`Config::validate`], once; a configuration
    /// that was never validated has no resolved settings and gives `{}`.
    pub fn settings_json(&self, name: &str) -> String {
        self.resolved_settings
            .get()
            .and_then(|resolved| resolved.get(name).cloned())
            .unwrap_or_else(|| "{}".into())
    }

    /// The largest answer accepted from `name`, in bytes.
    pub fn max_output_bytes(&self, name: &str) -> usize {
        self.plugins
            .get(name)
            .and_then(|p| p.max_output_bytes)
            .unwrap_or(self.max_output_bytes)
    }

    /// The version requirement of `name`, if pinned.
    pub fn version_requirement(&self, name: &str) -> Option<String> {
        self.plugins.get(name).and_then(|p| p.version.clone())
    }
}

impl PluginConfig {
    /// Checks every number of `plugins.NAME` against its range.
    fn validate_numbers(&self, file: &Path, name: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("plugins.{name}.{f}");
        let optional = |f: &str, v: Option<u64>, r: RangeInclusive<u64>| match v {
            Some(v) => in_range(file, field(f), v, r),
            None => Ok(()),
        };
        let wide = |r: RangeInclusive<usize>| (*r.start() as u64)..=(*r.end() as u64);
        let narrow = |r: RangeInclusive<u32>| u64::from(*r.start())..=u64::from(*r.end());
        optional("timeout_ms", self.timeout_ms, ranges::TIMEOUT_MS)?;
        optional(
            "max_concurrency",
            self.max_concurrency.map(|v| v as u64),
            wide(ranges::CONCURRENCY),
        )?;
        optional(
            "workers",
            self.workers.map(|v| v as u64),
            wide(ranges::WORKERS),
        )?;
        optional("memory_limit_mb", self.memory_limit_mb, ranges::MEMORY_MB)?;
        optional("cpu_limit_s", self.cpu_limit_s, ranges::CPU_S)?;
        optional("max_open_files", self.max_open_files, ranges::OPEN_FILES)?;
        optional(
            "crash_limit",
            self.crash_limit.map(u64::from),
            narrow(ranges::CRASH_LIMIT),
        )?;
        optional(
            "retries",
            Some(u64::from(self.retries)),
            narrow(ranges::RETRIES),
        )?;
        optional(
            "max_output_bytes",
            self.max_output_bytes.map(|v| v as u64),
            wide(ranges::BYTES),
        )
    }
}

/// Largest secret read from a file.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a secret: `secret_file: PATH`, or `credential: NAME` in `$CREDENTIALS_DIRECTORY`.
fn read_secret(kind: &str, value: &str) -> Result<String, String> {
    let path = match kind {
        "secret_file" => PathBuf::from(value),
        _ => {
            if value.contains('/') || value.is_empty() || value.starts_with('.') {
                return Err(format!("credential name `{value}` is not a plain name"));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "credential `{value}` needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)"
                )
            })?;
            PathBuf::from(dir).join(value)
        }
    };
    let bytes = dynplug_loader::trust::read_side_file(
        &path,
        dynplug_loader::trust::TrustPolicy::for_current_process(),
        MAX_SECRET_BYTES,
    )
    .map_err(|e| format!("secret: {e}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("secret {}: not UTF-8", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Converts plugin settings to JSON, replacing `{secret_file: PATH}` and
/// `{credential: NAME}` by the secret. Errors carry the dotted field path.
fn resolve_secrets(
    value: &serde_yaml::Value,
    at: &str,
) -> Result<serde_json::Value, (String, String)> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Mapping(map) => {
            if map.len() == 1 {
                if let Some((Y::String(kind), Y::String(v))) = map.iter().next() {
                    if kind == "secret_file" || kind == "credential" {
                        return read_secret(kind, v)
                            .map(serde_json::Value::String)
                            .map_err(|e| (at.to_owned(), e));
                    }
                }
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => return Err((at.to_owned(), "keys must be strings".into())),
                };
                let child = resolve_secrets(v, &format!("{at}.{key}"))?;
                out.insert(key, child);
            }
            serde_json::Value::Object(out)
        }
        Y::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| resolve_secrets(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Tagged(t) => resolve_secrets(&t.value, at)?,
        other => serde_json::to_value(other).map_err(|e| (at.to_owned(), e.to_string()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::parse(text, Path::new("test.yaml"))?;
        c.validate(Path::new("test.yaml"))?;
        Ok(c)
    }

    #[test]
    fn shipped_config_is_valid() {
        let c = parse(include_str!("../../config.yaml")).expect("config.yaml parses");
        assert_eq!(c.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
        assert_eq!(c.settings_json("text"), r#"{"mode":"upper"}"#);
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            "plugins_dir: /opt/p\nlog_level: debug\nserver:\n  enabled: true\n  port: 9000\nplugins:\n  text:\n    enabled: false\n    timeout_ms: 50\n    settings:\n      mode: upper\n",
        )
        .unwrap();
        assert_eq!(c.plugins_dir, PathBuf::from("/opt/p"));
        assert!(!c.enabled("text"));
        assert!(c.enabled("other"));
        assert_eq!(c.timeout("text"), Duration::from_millis(50));
        assert_eq!(c.settings_json("text"), r#"{"mode":"upper"}"#);
        assert_eq!(c.settings_json("other"), "{}");
        assert!(c.server.enabled);
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = parse("plugins:\n  echo:\n    enabeld: true\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.echo"));
        assert!(e.problem.contains("enabeld"), "{e}");
        assert!(e.problem.contains("line 3"), "{e}");
        assert!(
            e.to_string().starts_with("test.yaml: plugins.echo: "),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_and_bad_values_are_named() {
        let e = parse("default_timeout_ms: soon\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("default_timeout_ms"));
        let e = parse("plugins:\n  echo:\n    timeout_ms: 0\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.echo.timeout_ms"));
        let e = parse("log_level: loud\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("log_level"));
        let e = parse("plugins:\n  ../evil:\n    enabled: true\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.../evil"));
        let e = parse("plugins:\n  echo:\n    settings: [1, 2]\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.echo.settings"));
        let e = parse("server:\n  enabled: true\n  host: 0.0.0.0\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("server.host"));
        assert!(e.problem.contains("without server.token_file"), "{e}");
        assert!(parse("server:\n  enabled: true\n  host: 0.0.0.0\n  token_file: /t\n").is_ok());
        // Scoped tokens guard a non-loopback address too; their plugin names are checked.
        let scoped = "server:\n  enabled: true\n  host: 0.0.0.0\n  tokens:\n    - {file: /t, scope: execute, plugins: [hash]}\n";
        let server = parse(scoped).unwrap().server;
        assert_eq!(
            (server.tokens[0].scope, server.tokens[0].plugins.clone()),
            (Scope::Execute, Some(vec!["hash".to_owned()]))
        );
        assert!(Scope::Read < Scope::Execute && Scope::Execute < Scope::Manage);
        let e =
            parse("server:\n  tokens:\n    - {file: /t, scope: read, plugins: [\"Bad Name\"]}\n")
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("server.tokens[0].plugins"));
        assert!(parse("server:\n  tokens:\n    - {file: /t, scope: admin}\n").is_err());
        assert!(
            parse("server:\n  enabled: true\n  host: 0.0.0.0\n  allow_insecure_bind: true\n")
                .is_ok()
        );
        let e = parse("server:\n  host: localhost\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("server.host"));
        let e = parse("server:\n  rate_limit:\n    per_second: 0\n    burst: 1\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("server.rate_limit.per_second"));
        assert!(parse("plugins:\n  echo:\n    isolation: process\n    workers: 3\n").is_ok());
        let e = parse("plugins:\n  echo:\n    isolation: thread\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.echo.isolation"));
        let e = parse("plugins:\n  echo:\n    workers: 0\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.echo.workers"));
    }

    #[test]
    fn every_number_has_a_range() {
        let cases = [
            ("default_timeout_ms: 86400001\n", "default_timeout_ms"),
            ("max_input_bytes: 0\n", "max_input_bytes"),
            ("max_output_bytes: 104857601\n", "max_output_bytes"),
            (
                "default_max_concurrency: 18446744073709551615\n",
                "default_max_concurrency",
            ),
            ("server:\n  max_connections: 0\n", "server.max_connections"),
            (
                "server:\n  header_timeout_ms: 0\n",
                "server.header_timeout_ms",
            ),
            ("server:\n  max_body_bytes: 0\n", "server.max_body_bytes"),
            (
                "plugins:\n  x:\n    max_concurrency: 18446744073709551615\n",
                "plugins.x.max_concurrency",
            ),
            (
                "plugins:\n  x:\n    workers: 18446744073709551615\n",
                "plugins.x.workers",
            ),
            (
                "plugins:\n  x:\n    memory_limit_mb: 17592186044416\n",
                "plugins.x.memory_limit_mb",
            ),
            (
                "plugins:\n  x:\n    cpu_limit_s: 0\n",
                "plugins.x.cpu_limit_s",
            ),
            (
                "plugins:\n  x:\n    max_open_files: 3\n",
                "plugins.x.max_open_files",
            ),
            ("plugins:\n  x:\n    retries: 11\n", "plugins.x.retries"),
            (
                "plugins:\n  x:\n    max_output_bytes: 0\n",
                "plugins.x.max_output_bytes",
            ),
            ("jobs:\n  max_running: 0\n", "jobs.max_running"),
            (
                "jobs:\n  max_running_per_user: 0\n",
                "jobs.max_running_per_user",
            ),
            (
                "trust:\n  max_plugin_bytes: 100\n",
                "trust.max_plugin_bytes",
            ),
            ("jobs:\n  max_finished: 100001\n", "jobs.max_finished"),
            (
                "jobs:\n  keep_finished_ms: 604800001\n",
                "jobs.keep_finished_ms",
            ),
        ];
        for (yaml, field) in cases {
            let e = parse(yaml).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{yaml}");
            assert!(e.problem.contains("out of range (allowed: "), "{e}");
        }
        assert!(parse("plugins:\n  x:\n    workers: 64\n    memory_limit_mb: 1048576\n").is_ok());
        let jobs = parse("jobs:\n  max_running: 2\n  max_finished: 0\n  keep_finished_ms: 0\n")
            .unwrap()
            .jobs
            .limits();
        assert_eq!(
            (jobs.max_running, jobs.max_finished, jobs.keep_finished),
            (2, 0, std::time::Duration::ZERO)
        );
        assert!(
            parse("jobs:\n  max_runing: 2\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn a_plugin_listed_twice_is_refused() {
        let e = parse("plugins:\n  echo:\n    enabled: true\n  echo:\n    enabled: false\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("plugin `echo` is listed twice"),
            "{e}"
        );
        assert!(parse("plugins:\n").unwrap().plugins.is_empty());
        assert!(parse("plugins:\n  echo:\n")
            .unwrap()
            .plugins
            .contains_key("echo"));
    }

    #[test]
    fn sandbox_and_worker_user() {
        let c = parse("worker_user: nobody\nplugins:\n  x:\n    sandbox:\n      network: true\n")
            .unwrap();
        assert_eq!(c.worker_user, "nobody");
        assert!(c.plugin("x").sandbox.network);
        assert!(c.plugin("y").sandbox.seccomp);
        let e = parse("plugins:\n  x:\n    sandbox:\n      seccom: false\n").unwrap_err();
        assert!(e.to_string().contains("seccom"), "{e}");
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let e = parse("plugins: [\n").unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
    }

    #[test]
    fn secrets_are_resolved_and_missing_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "hunter2\n").unwrap();
        let c = parse(&format!(
            "plugins:\n  x:\n    settings:\n      token:\n        secret_file: {}\n      plain: 1\n",
            secret.display()
        ))
        .unwrap();
        assert_eq!(c.settings_json("x"), r#"{"plain":1,"token":"hunter2"}"#);
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug shows the reference, not the secret"
        );
        let e = parse(
            "plugins:\n  x:\n    settings:\n      token:\n        secret_file: /nonexistent/s\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.x.settings.token"));
        let e = parse(
            "plugins:\n  x:\n    settings:\n      token:\n        credential: ../etc/passwd\n",
        )
        .unwrap_err();
        assert!(e.problem.contains("not a plain name"), "{e}");
    }

    #[test]
    fn version_requirements_are_checked() {
        assert!(parse("plugins:\n  x:\n    version: \">=1.2, <2\"\n").is_ok());
        let e = parse("plugins:\n  x:\n    version: banana\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("plugins.x.version"));
    }

    #[test]
    fn group_writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "log_level: info\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = Config::load(&p, &no_env).unwrap_err();
        assert!(e.problem.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&p, &no_env).is_ok());
    }

    #[test]
    fn environment_overrides() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "DYNPLUG_PLUGINS_DIR" => Some("/x".to_string()),
            "DYNPLUG_SERVER_PORT" => Some("1234".to_string()),
            "DYNPLUG_SERVER_ENABLED" => Some("yes".to_string()),
            _ => None,
        };
        c.apply_env(&env).unwrap();
        assert_eq!(c.plugins_dir, PathBuf::from("/x"));
        assert_eq!(c.server.port, 1234);
        assert!(c.server.enabled);
        let bad = |k: &str| (k == "DYNPLUG_SERVER_PORT").then(|| "http".to_string());
        let e = c.apply_env(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("DYNPLUG_SERVER_PORT"));
    }

    #[test]
    fn state_dir_precedence() {
        let c = Config::default();
        assert_eq!(c.state_dir(&no_env), PathBuf::from(DEFAULT_STATE_DIR));
        let env = |k: &str| (k == "STATE_DIRECTORY").then(|| "/var/lib/a:/var/lib/b".to_string());
        assert_eq!(c.state_dir(&env), PathBuf::from("/var/lib/a"));
        let c = Config {
            state_dir: Some("/s".into()),
            ..Config::default()
        };
        assert_eq!(c.state_dir(&env), PathBuf::from("/s"));
    }

    #[test]
    fn load_rejects_non_utf8_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, b"log_level: \xff\n").unwrap();
        let e = Config::load(&p, &no_env).unwrap_err();
        assert!(e.problem.contains("UTF-8"), "{e}");
        let e = Config::load(&dir.path().join("missing.yaml"), &no_env).unwrap_err();
        assert!(e.problem.contains("cannot read"), "{e}");
    }
}
