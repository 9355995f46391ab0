//! The D-Bus side of `dynplugctl`: connecting, calling through the generated proxy,
//! noticing when the daemon goes away mid-call, and mapping D-Bus errors (once) to
//! messages a person can act on and to exit codes.

use std::future::Future;
use std::time::Duration;

use dynplug_dbus::{DynplugError, ManagerProxy, BUS_NAME};
use futures_util::StreamExt;
use zbus::fdo::NameOwnerChangedStream;

use crate::exit;

/// Which bus to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bus {
    /// The system bus.
    System,
    /// The session bus.
    Session,
    /// An explicit address.
    Address(String),
}

/// What kind of failure, for the exit code and the JSON `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything else.
    Failure,
    /// Unknown plugin.
    NotFound,
    /// Refused by policy.
    AccessDenied,
    /// Daemon not reachable.
    Unavailable,
    /// Plugin disabled.
    Disabled,
    /// Timed out.
    Timeout,
    /// Rejected argument or input.
    InvalidArgument,
    /// Configuration refused.
    Config,
    /// The call or job was cancelled.
    Cancelled,
    /// Too many jobs running.
    TooManyJobs,
    /// An artifact's signature was refused.
    SignatureRefused,
    /// A registry could not be reached.
    RegistryUnreachable,
    /// A registry's answer was refused.
    RegistryRefused,
}

impl Kind {
    /// The exit code for this kind.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Kind::Failure => exit::FAILURE,
            Kind::NotFound => exit::NOT_FOUND,
            Kind::AccessDenied => exit::ACCESS_DENIED,
            Kind::Unavailable => exit::UNAVAILABLE,
            Kind::Disabled => exit::DISABLED,
            Kind::Timeout => exit::TIMEOUT,
            Kind::InvalidArgument => exit::INVALID_ARGUMENT,
            Kind::Config => exit::CONFIG,
            Kind::Cancelled => exit::CANCELLED,
            Kind::TooManyJobs => exit::TOO_MANY_JOBS,
            Kind::SignatureRefused => exit::SIGNATURE_REFUSED,
            Kind::RegistryUnreachable => exit::REGISTRY_UNREACHABLE,
            Kind::RegistryRefused => exit::REGISTRY_REFUSED,
        }
    }

    /// The stable name used in JSON output.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::NotFound => "not_found",
            Kind::AccessDenied => "access_denied",
            Kind::Unavailable => "unavailable",
            Kind::Disabled => "disabled",
            Kind::Timeout => "timeout",
            Kind::InvalidArgument => "invalid_argument",
            Kind::Config => "config",
            Kind::Cancelled => "cancelled",
            Kind::TooManyJobs => "too_many_jobs",
            Kind::SignatureRefused => "signature_refused",
            Kind::RegistryUnreachable => "registry_unreachable",
            Kind::RegistryRefused => "registry_refused",
        }
    }
}

/// A failure as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CtlError {
    /// Its kind.
    pub(crate) kind: Kind,
    /// What went wrong.
    pub(crate) message: String,
    /// What to do about it.
    pub(crate) hint: Option<String>,
}

impl CtlError {
    /// An error without a hint.
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        CtlError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The daemon (or the bus) is not there: exit 5, with a hint for this bus.
    pub(crate) fn unavailable(message: impl Into<String>, bus: &Bus) -> Self {
        let hint = match bus {
            Bus::System => "is dynplugd running? try: systemctl status dynplugd",
            Bus::Session => "is dynplugd running on the session bus (dynplugd --session)?",
            Bus::Address(_) => "is dynplugd running on that bus (dynplugd --address ...)?",
        };
        CtlError::new(Kind::Unavailable, message).hint(hint)
    }
}

/// Maps a transport or bus-daemon error to what the user sees. The daemon's own
/// `org.dynplug.Error.*` errors arrive typed and are mapped in [`IntoCtlError`].
pub(crate) fn classify(e: zbus::Error, bus: &Bus) -> CtlError {
    use zbus::fdo::Error as Fdo;
    match e {
        zbus::Error::FDO(fdo) => match *fdo {
            Fdo::ServiceUnknown(_)
            | Fdo::NameHasNoOwner(_)
            | Fdo::NoReply(_)
            | Fdo::Disconnected(_) => CtlError::unavailable("dynplugd is not running", bus),
            Fdo::AccessDenied(m) | Fdo::AuthFailed(m) => {
                CtlError::new(Kind::AccessDenied, format!("access denied: {m}"))
                    .hint("this needs root or membership in the `dynplug` group (try sudo)")
            }
            Fdo::Timeout(m) | Fdo::TimedOut(m) => {
                CtlError::new(Kind::Timeout, format!("no answer in time: {m}"))
                    .hint("raise --timeout")
            }
            other => CtlError::new(Kind::Failure, other.to_string()),
        },
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            CtlError::new(Kind::Timeout, "no answer in time").hint("raise --timeout")
        }
        zbus::Error::InputOutput(io) => {
            CtlError::unavailable(format!("cannot reach the bus: {io}"), bus)
        }
        e @ zbus::Error::Connection(..) => {
            CtlError::unavailable(format!("cannot reach the bus: {e}"), bus)
        }
        zbus::Error::Address(a) if matches!(bus, Bus::Address(_)) => {
            CtlError::new(Kind::InvalidArgument, format!("bad bus address: {a}"))
        }
        // No address for the session or system bus: there is no bus to reach.
        zbus::Error::Address(a) => CtlError::unavailable(format!("no bus to connect to: {a}"), bus),
        zbus::Error::MethodError(name, detail, _) => {
            CtlError::new(Kind::Failure, detail.unwrap_or_else(|| name.to_string()))
        }
        other => CtlError::new(Kind::Failure, other.to_string()),
    }
}

/// Errors a proxy call can return: plain zbus errors, or the daemon's typed errors.
pub(crate) trait IntoCtlError {
    /// Converts into what the user sees.
    fn into_ctl(self, bus: &Bus) -> CtlError;
}

impl IntoCtlError for zbus::Error {
    fn into_ctl(self, bus: &Bus) -> CtlError {
        classify(self, bus)
    }
}

impl IntoCtlError for DynplugError {
    fn into_ctl(self, bus: &Bus) -> CtlError {
        match self {
            DynplugError::ZBus(e) => classify(e, bus),
            DynplugError::NotFound(m) => CtlError::new(Kind::NotFound, m),
            DynplugError::Disabled(m) => {
                CtlError::new(Kind::Disabled, m).hint("enable it with `dynplugctl enable NAME`")
            }
            DynplugError::Timeout(m) => CtlError::new(Kind::Timeout, m).hint("raise the plugin's timeout_ms if it needs longer"),
            DynplugError::InvalidArgument(m) => CtlError::new(Kind::InvalidArgument, m),
            DynplugError::Config(m) => CtlError::new(Kind::Config, m)
                .hint("fix the file, then run `dynplugctl reload` again; the previous configuration stays in force"),
            DynplugError::AccessDenied(m) => {
                let hint = denial_hint(&m);
                CtlError::new(Kind::AccessDenied, m).hint(hint)
            }
            DynplugError::ShuttingDown(m) => CtlError::unavailable(m, bus),
            DynplugError::Unavailable(m) => {
                CtlError::new(Kind::Failure, m).hint("see `dynplugctl info NAME` and the journal for the reason")
            }
            DynplugError::ExecutionFailed(m) | DynplugError::Failed(m) => CtlError::new(Kind::Failure, m),
            DynplugError::Cancelled(m) => CtlError::new(Kind::Cancelled, m),
            DynplugError::TooManyJobs(m) => CtlError::new(Kind::TooManyJobs, m)
                .hint("wait for running jobs to end, or raise jobs.max_running"),
            DynplugError::SignatureRefused(m) => CtlError::new(Kind::SignatureRefused, m)
                .hint("publish it signed with a key in trust.keys_dir (dynplug-pack push --key)"),
            DynplugError::RegistryUnreachable(m) => CtlError::new(Kind::RegistryUnreachable, m),
            DynplugError::RegistryRefused(m) => CtlError::new(Kind::RegistryRefused, m),
        }
    }
}

/// What to do about a denial the daemon explained: a polkit rule for the action it
/// names, or root.
fn denial_hint(message: &str) -> String {
    let action = [
        "org.dynplug.execute",
        "org.dynplug.manage",
        "org.dynplug.jobs.cancel-any",
        "org.dynplug.install",
    ]
    .into_iter()
    .find(|a| message.contains(a));
    match action {
        Some(action) => format!(
            "an administrator can grant {action} with a polkit rule in /etc/polkit-1/rules.d/ \
             (examples in /usr/share/doc/dynplugd/operations.md), or add you to the `dynplug` group; \
             root is always allowed"
        ),
        None => "this needs root or membership in the `dynplug` group (try sudo)".to_owned(),
    }
}

/// A connection to dynplugd.
pub(crate) struct Client {
    /// The manager proxy (properties are read fresh, never from a cache).
    pub(crate) manager: ManagerProxy<'static>,
    bus: Bus,
    ask_password: bool,
    owner_lost: tokio::sync::Mutex<NameOwnerChangedStream>,
}

impl Client {
    /// Connects to `bus` with a method-call timeout. With `ask_password`, calls the
    /// daemon authorizes may ask for authentication (see [`Client::act`]).
    pub(crate) async fn connect(
        bus: Bus,
        timeout: Duration,
        ask_password: bool,
    ) -> Result<Client, CtlError> {
        let builder = match &bus {
            Bus::System => zbus::connection::Builder::system(),
            Bus::Session => zbus::connection::Builder::session(),
            Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        };
        let conn = builder
            .method_timeout(timeout)
            .build()
            .await
            .map_err(|e| classify(e, &bus))?;
        let dbus = zbus::fdo::DBusProxy::new(&conn)
            .await
            .map_err(|e| classify(e, &bus))?;
        let owner_lost = dbus
            .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
            .await
            .map_err(|e| classify(e, &bus))?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| classify(e, &bus))?;
        Ok(Client {
            manager,
            bus,
            ask_password,
            owner_lost: tokio::sync::Mutex::new(owner_lost),
        })
    }

    /// The bus in use.
    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs a call, failing at once if the daemon drops off the bus meanwhile.
    pub(crate) async fn call<T, E: IntoCtlError>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CtlError> {
        let lost = async {
            let mut owner_lost = self.owner_lost.lock().await;
            while let Some(change) = owner_lost.next().await {
                if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = call => result.map_err(|e| e.into_ctl(&self.bus)),
            () = lost => Err(CtlError::unavailable("dynplugd went away during the call", &self.bus)),
        }
    }

    /// Calls `method` of `proxy` with `body`: a call the daemon authorizes (through
    /// polkit on the system bus). Unless `--no-ask-password` was given it allows
    /// interactive authorization and, on a terminal, runs a text agent meanwhile.
    pub(crate) async fn act<B, R>(
        &self,
        proxy: &zbus::Proxy<'_>,
        method: &'static str,
        body: &B,
    ) -> Result<R, CtlError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let flags = if self.ask_password {
            zbus::proxy::MethodFlags::ALLOW_INTERACTIVE_AUTH
        } else {
            zbus::proxy::MethodFlags::empty()
        };
        let _agent = (self.ask_password && self.bus == Bus::System)
            .then(crate::agent::Agent::start)
            .flatten();
        let call = async {
            match proxy.call_with_flags::<_, B, R>(method, flags, body).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(DynplugError::Failed(format!("{method} sent no reply"))),
                Err(e) => Err(DynplugError::from(e)),
            }
        };
        self.call(call).await
    }

    /// Whether [`Client::act`] may run a text agent that asks for a password on the
    /// terminal (on the system bus, unless `--no-ask-password`, for anyone but root).
    pub(crate) fn may_ask_password(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        self.ask_password && self.bus == Bus::System && unsafe { libc::geteuid() } != 0
    }

    /// The connection.
    pub(crate) fn connection(&self) -> &zbus::Connection {
        self.manager.inner().connection()
    }

    /// The stream of owner changes of the daemon's name (for `watch`).
    pub(crate) fn owner_changes(&mut self) -> &mut NameOwnerChangedStream {
        self.owner_lost.get_mut()
    }
}
