//! `dynplug-pack`: publish a plugin as a signed OCI artifact (to a registry or an
//! image-layout archive), and pull one verified into a plugin directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dynplug_loader::signature::{Keyring, SignatureMode};
use dynplug_loader::trust::TrustPolicy;
use dynplug_oci::artifact::Platform;
use dynplug_oci::http::{Credentials, HttpOptions};
use dynplug_oci::layout;
use dynplug_oci::publish::{Bundle, PlatformFile};
use dynplug_oci::pull::{self, PullOptions, Pulled};
use dynplug_oci::reference::{Reference, Selector};
use dynplug_oci::store::RegistryStore;
use dynplug_oci::{client::Client, OciError};

/// Publish and pull DynPlug plugins as signed OCI artifacts.
///
/// Exit codes: 0 done, 1 local error, 2 usage, 3 not found, 4 signature refused,
/// 5 registry unreachable (or timed out), 6 registry answer refused (digest, size,
/// redirect, credentials, format).
#[derive(Parser)]
#[command(name = "dynplug-pack", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Net {
    /// A file whose first line is USER:PASSWORD for the registry (never printed).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// A host (HOST or HOST:PORT) a redirect may lead to; credentials are not sent there.
    #[arg(long = "allow-redirect-host")]
    allow_redirect_hosts: Vec<String>,
    /// Seconds to wait for a connection, an answer's head, or each piece of a body.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Plain HTTP instead of TLS (allowed only to a loopback address).
    #[arg(long)]
    insecure_http: bool,
    /// PEM certificates to trust instead of the system's roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish FILE (a native plugin, for this platform) and any --file as REF
    /// (HOST/REPO:TAG, or ./NAME.oci.tar[:TAG] for an image-layout archive).
    Push {
        /// The secret key (hex, `cargo xtask keygen`) to sign with; unsigned without.
        #[arg(long)]
        key: Option<PathBuf>,
        /// More files, for other platforms: OS/ARCH=PATH.
        #[arg(long = "file")]
        files: Vec<String>,
        /// More tags for the same version.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        net: Net,
        /// The plugin file for this platform.
        file: PathBuf,
        /// Where to publish.
        reference: String,
    },
    /// Pull REF (HOST/REPO:TAG, HOST/REPO@sha256:..., HOST/REPO@RANGE, or
    /// ./NAME.oci.tar[:TAG]) verified, and install it into --into as NAME.so (+ .sig).
    Pull {
        /// The plugin directory to install into.
        #[arg(long)]
        into: PathBuf,
        /// The directory of trusted public keys (*.pub).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// enforcing (default), permissive or off.
        #[arg(long, default_value = "enforcing")]
        signatures: String,
        /// The plugin name the artifact must have.
        #[arg(long)]
        name: Option<String>,
        /// A version requirement the plugin must meet (e.g. ">=1.2, <2").
        #[arg(long)]
        version: Option<String>,
        /// Where to download before installing (default: --into).
        #[arg(long)]
        staging: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: Net,
        /// What to pull.
        reference: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let json = matches!(cli.command, Command::Pull { json: true, .. });
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "kind": e.kind().to_string()})
                );
            } else {
                eprintln!("dynplug-pack: {e}");
            }
            ExitCode::from(e.kind().exit_code())
        }
    }
}

/// Prints the bytes received on a terminal, at most ten times a second.
fn progress_printer() -> impl Fn(u64) + Send + Sync {
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |n: u64| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if on_terminal && last.elapsed() >= Duration::from_millis(100) {
            *last = std::time::Instant::now();
            eprint!("\rreceived {n} bytes");
        }
    }
}

fn http_options(net: &Net) -> Result<HttpOptions, OciError> {
    let credentials = match &net.credentials_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| OciError::Io {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
            Some(Credentials::parse(&text).map_err(|e| OciError::Io {
                path: path.display().to_string(),
                why: e,
            })?)
        }
    };
    let wait = Duration::from_secs(net.timeout_secs.max(1));
    Ok(HttpOptions {
        connect_timeout: wait,
        read_timeout: wait,
        allow_redirect_hosts: net.allow_redirect_hosts.clone(),
        credentials,
        insecure_http: net.insecure_http,
        ca_file: net.ca_file.clone(),
        ..HttpOptions::default()
    })
}

async fn run(command: Command) -> Result<(), OciError> {
    match command {
        Command::Push {
            key,
            files,
            tags,
            net,
            file,
            reference,
        } => {
            let mut all = vec![PlatformFile {
                platform: Platform::current(),
                path: file,
            }];
            for spec in files {
                let (platform, path) = spec
                    .split_once('=')
                    .ok_or_else(|| OciError::Usage(format!("--file {spec:?}: OS/ARCH=PATH")))?;
                all.push(PlatformFile {
                    platform: Platform::parse(platform).map_err(OciError::Usage)?,
                    path: path.into(),
                });
            }
            let secret = match &key {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| OciError::Io {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?),
                None => None,
            };
            let bundle = Bundle::build(&all, secret.as_deref())?;
            let digest = if layout::is_archive(&reference) {
                let (path, tag) = layout::split_archive(&reference);
                let mut all_tags: Vec<String> = tag.into_iter().collect();
                all_tags.extend(tags);
                bundle.write_layout(&path, &all_tags)?
            } else {
                let r = Reference::parse(&reference)?;
                let mut all_tags = match &r.selector {
                    Selector::Tag(t) => vec![t.clone()],
                    _ => {
                        return Err(OciError::Usage(
                            "publish to a tag (HOST/REPO:TAG), not a digest or range".into(),
                        ))
                    }
                };
                all_tags.extend(tags);
                let client = Client::new(&r.registry, http_options(&net)?)?;
                bundle.push(&client, &r.repository, &all_tags).await?
            };
            println!(
                "{} {} published: {digest}",
                bundle.config.name, bundle.config.version
            );
            Ok(())
        }
        Command::Pull {
            into,
            keys,
            signatures,
            name,
            version,
            staging,
            json,
            net,
            reference,
        } => {
            let signatures = match signatures.as_str() {
                "enforcing" => SignatureMode::Enforcing,
                "permissive" => SignatureMode::Permissive,
                "off" => SignatureMode::Off,
                other => return Err(OciError::Usage(format!("--signatures {other:?}"))),
            };
            let keys = match &keys {
                Some(dir) => Keyring::load(dir, TrustPolicy::for_current_process())
                    .map_err(OciError::Usage)?,
                None => Keyring::default(),
            };
            let version_req = version
                .map(|v| semver::VersionReq::parse(&v))
                .transpose()
                .map_err(|e| OciError::Usage(format!("--version: {e}")))?;
            let opts = PullOptions {
                keys,
                signatures,
                expect_name: name,
                version_req,
                ..PullOptions::default()
            };
            let staging = staging.unwrap_or_else(|| into.clone());
            pull::clean_staging(&staging);
            let progress = progress_printer();
            let pulled: Pulled = if layout::is_archive(&reference) {
                let (path, tag) = layout::split_archive(&reference);
                let unpacked = layout::unpack(&path, &staging, opts.max_plugin_bytes)?;
                let selector = layout::default_selector(&unpacked.store, tag).await?;
                pull::pull(&unpacked.store, &selector, &staging, &opts, &progress).await?
            } else {
                let r = Reference::parse(&reference)?;
                let store = RegistryStore {
                    client: Client::new(&r.registry, http_options(&net)?)?,
                    repository: r.repository.clone(),
                };
                pull::pull(&store, &r.selector, &staging, &opts, &progress).await?
            };
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!();
            }
            let (name, version, digest, verdict) = (
                pulled.config.name.clone(),
                pulled.config.version.clone(),
                pulled.digest.clone(),
                pulled.verdict.to_string(),
            );
            let (tag, file_digest) = (pulled.tag.clone(), pulled.file_digest.clone());
            let path = pulled.install_into(&into)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": name, "version": version, "digest": digest,
                        "file_digest": file_digest, "tag": tag,
                        "path": path.display().to_string(), "signature": verdict,
                    })
                );
            } else {
                println!(
                    "{name} {version} installed as {} ({digest}; signature {verdict})",
                    path.display()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
