//! Who may do what over D-Bus. On the system bus the daemon asks polkit for every
//! mutating call (`org.dynplug.execute`, `org.dynplug.manage`, `org.dynplug.jobs.cancel-any`)
//! with the caller's bus name as subject, and caches nothing. Where polkit is not running it
//! applies the rule the bus policy used to: root and the `dynplug` group. On a session bus
//! (or a bus given by address) whoever reaches the bus may act, as the bus policy decides.
//! Read-only calls are never checked.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dynplug_dbus::DynplugError;
use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{
    AuthorityProxy, AuthorizationResult, CheckAuthorizationFlags, Subject,
};

use crate::cli::Bus;
use dynplug_core::locks::lock;

/// The group whose members may do everything when polkit is not there (and, through
/// the packaged rules file, when it is).
pub const ADMIN_GROUP: &str = "dynplug";

/// polkit's well-known name on the system bus.
const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";

/// A polkit action of the daemon (declared in packaging/org.dynplug.policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Running a plugin: Execute, StartJob.
    Execute,
    /// Changing things: enable, disable, reload.
    Manage,
    /// Cancelling a job another user started.
    CancelAny,
    /// Installing, removing or rolling back plugins from registries (writes
    /// plugins_dir, so code the daemon runs): root alone when polkit is not asked.
    Install,
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        match self {
            Action::Execute => "org.dynplug.execute",
            Action::Manage => "org.dynplug.manage",
            Action::CancelAny => "org.dynplug.jobs.cancel-any",
            Action::Install => "org.dynplug.install",
        }
    }
}

/// One thing a caller wants to do: the action, and the details polkit rules can read
/// (`action.lookup("plugin")`, `action.lookup("verb")`).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The action.
    pub action: Action,
    /// What exactly: execute, start-job, enable, disable, reload, cancel.
    pub verb: &'a str,
    /// The plugin concerned, if one is.
    pub plugin: Option<&'a str>,
}

impl Request<'_> {
    /// "org.dynplug.execute (plugin `hash`)", for messages.
    fn describe(&self) -> String {
        match self.plugin {
            Some(p) => format!("{} ({} of plugin `{p}`)", self.action.id(), self.verb),
            None => format!("{} ({})", self.action.id(), self.verb),
        }
    }

    fn details(&self) -> HashMap<&str, &str> {
        let mut details = HashMap::from([("verb", self.verb)]);
        if let Some(plugin) = self.plugin {
            details.insert("plugin", plugin);
        }
        details
    }
}

/// Who sent a method call: its connection and header, and the sender's user id, asked
/// of the bus at most once however many checks the call makes.
pub struct Caller<'a, 'h> {
    conn: &'a Connection,
    header: &'a Header<'h>,
    uid: tokio::sync::OnceCell<u32>,
}

impl<'a, 'h> Caller<'a, 'h> {
    /// The sender of the message with `header`, received on `conn`.
    pub fn new(conn: &'a Connection, header: &'a Header<'h>) -> Self {
        Caller {
            conn,
            header,
            uid: tokio::sync::OnceCell::new(),
        }
    }

    /// The sender's user id, from the bus.
    pub async fn uid(&self) -> Result<u32, DynplugError> {
        self.uid
            .get_or_try_init(|| async {
                let sender = self
                    .header
                    .sender()
                    .ok_or_else(|| DynplugError::AccessDenied("the call has no sender".into()))?;
                let dbus = zbus::fdo::DBusProxy::new(self.conn).await?;
                dbus.get_connection_unix_user(sender.clone().into())
                    .await
                    .map_err(|e| {
                        DynplugError::AccessDenied(format!("cannot tell who is calling: {e}"))
                    })
            })
            .await
            .copied()
    }
}

/// How decisions are made on this bus, settled once connected.
enum Mode {
    /// Ask polkit, every time.
    Polkit(AuthorityProxy<'static>),
    /// The bus policy's rule, applied by the daemon: root and members of this group
    /// (None: no such group, so root alone).
    Group(Option<u32>),
    /// Whoever reaches the bus.
    Open,
}

/// How long a group membership looked up in the user database is trusted.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(5);

/// The daemon's authorization of mutating D-Bus calls.
#[derive(Default)]
pub struct Authority {
    mode: OnceLock<Mode>,
    /// Group memberships looked up for the group rule, by (uid, gid), with when: the
    /// user database (NSS: files, LDAP, sssd...) is asked off the async workers and at
    /// most once per user every [`MEMBERSHIP_TTL`].
    memberships: Mutex<HashMap<(u32, u32), (bool, Instant)>>,
}

impl Authority {
    /// Decides how to authorize on `bus`, reached through `conn`, and says so in the log.
    /// Calls made before this are refused.
    pub async fn settle(&self, conn: &Connection, bus: &Bus) {
        let mode = match bus {
            Bus::System => match polkit_present(conn).await {
                Ok(true) => match AuthorityProxy::new(conn).await {
                    Ok(proxy) => Mode::Polkit(proxy),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach polkit; only root and the `dynplug` group may change things or run plugins");
                        Mode::Group(group_id(ADMIN_GROUP))
                    }
                },
                Ok(false) | Err(_) => Mode::Group(group_id(ADMIN_GROUP)),
            },
            Bus::Session | Bus::Address(_) => Mode::Open,
        };
        match &mode {
            Mode::Polkit(_) => tracing::info!("authorizing mutating calls with polkit"),
            Mode::Group(gid) => tracing::warn!(
                group = ADMIN_GROUP,
                group_exists = gid.is_some(),
                "polkit is not running: only root and the `dynplug` group may change things or run plugins"
            ),
            Mode::Open => tracing::info!(
                "not on the system bus: no polkit checks, the bus policy decides who may call"
            ),
        }
        let _ = self.mode.set(mode);
    }

    /// Allows or refuses `request` from the sender of the message with `header`. Root is
    /// always allowed; an `org.dynplug.Error.AccessDenied` names the action. Without
    /// polkit, cancelling another user's job is for root alone, as it always was.
    pub async fn check(
        &self,
        caller: &Caller<'_, '_>,
        request: Request<'_>,
    ) -> Result<(), DynplugError> {
        let header = caller.header;
        let mode = match self.mode.get() {
            Some(Mode::Open) if !matches!(request.action, Action::CancelAny | Action::Install) => {
                return Ok(())
            }
            Some(mode) => mode,
            None => {
                return Err(DynplugError::AccessDenied(
                    "the daemon is still starting; try again".into(),
                ))
            }
        };
        let uid = caller.uid().await?;
        if uid == 0 {
            return Ok(());
        }
        match mode {
            Mode::Open | Mode::Group(_) if request.action == Action::CancelAny => {
                Err(DynplugError::AccessDenied(format!(
                    "not authorized: {}; only the user who started the job, or root, may cancel it",
                    request.describe()
                )))
            }
            Mode::Open if request.action == Action::Install => {
                Err(DynplugError::AccessDenied(format!(
                    "not authorized: {}; without polkit only root may install plugins",
                    request.describe()
                )))
            }
            Mode::Open => Ok(()),
            Mode::Group(gid) => {
                let member = match gid {
                    Some(gid) => self.is_member(uid, *gid).await,
                    None => false,
                };
                group_verdict(member, &request)
            }
            Mode::Polkit(proxy) => {
                let interactive = header
                    .primary()
                    .flags()
                    .contains(Flags::ALLOW_INTERACTIVE_AUTH);
                let subject = Subject::new_for_message_header(header).map_err(|e| {
                    DynplugError::AccessDenied(format!("cannot tell who is calling: {e}"))
                })?;
                let flags = if interactive {
                    CheckAuthorizationFlags::ALLOW_USER_INTERACTION
                } else {
                    CheckAuthorizationFlags::empty()
                };
                let result = proxy
                    .check_authorization(
                        &subject,
                        request.action.id(),
                        &request.details(),
                        flags,
                        "",
                    )
                    .await
                    .map_err(|e| {
                        DynplugError::AccessDenied(format!(
                            "cannot ask polkit about {}: {e}",
                            request.describe()
                        ))
                    })?;
                polkit_verdict(&result, interactive, &request)
            }
        }
    }
}

impl Authority {
    /// Whether `uid` is in group `gid`: remembered for [`MEMBERSHIP_TTL`], else asked of
    /// the user database on a blocking thread (an NSS lookup can take the network).
    async fn is_member(&self, uid: u32, gid: u32) -> bool {
        let key = (uid, gid);
        let fresh = |at: Instant| at.elapsed() < MEMBERSHIP_TTL;
        if let Some(&(member, at)) = lock(&self.memberships).get(&key) {
            if fresh(at) {
                return member;
            }
        }
        let member = tokio::task::spawn_blocking(move || user_in_group(uid, gid))
            .await
            .unwrap_or(false);
        let mut cache = lock(&self.memberships);
        cache.retain(|_, (_, at)| fresh(*at));
        cache.insert(key, (member, Instant::now()));
        member
    }
}

/// What polkit's answer means for the caller.
fn polkit_verdict(
    result: &AuthorizationResult,
    interactive: bool,
    request: &Request<'_>,
) -> Result<(), DynplugError> {
    if result.is_authorized {
        return Ok(());
    }
    let what = request.describe();
    let message = if result.details.contains_key("polkit.dismissed") {
        format!("not authorized: {what}; the authentication was dismissed")
    } else if result.is_challenge && !interactive {
        format!(
            "not authorized: {what} needs authentication; call with interactive authorization allowed \
             (dynplugctl does on a terminal) or have a polkit rule grant it"
        )
    } else if result.is_challenge {
        format!("not authorized: {what} needs authentication, and no authentication agent answered")
    } else {
        format!("not authorized: {what}; polkit refused it (a rule under /etc/polkit-1/rules.d/ can grant it)")
    };
    Err(DynplugError::AccessDenied(message))
}

/// The bus policy's old rule: members of the group (root was let through before).
fn group_verdict(member: bool, request: &Request<'_>) -> Result<(), DynplugError> {
    if member {
        return Ok(());
    }
    Err(DynplugError::AccessDenied(format!(
        "not authorized: {}; without polkit only root and members of the `{ADMIN_GROUP}` group may",
        request.describe()
    )))
}

/// Whether polkit owns its name or can be started by the bus.
async fn polkit_present(conn: &Connection) -> zbus::Result<bool> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let name = zbus::names::BusName::try_from(POLKIT_NAME)?;
    if dbus.name_has_owner(name).await? {
        return Ok(true);
    }
    Ok(dbus
        .list_activatable_names()
        .await?
        .iter()
        .any(|n| n.as_str() == POLKIT_NAME))
}

/// The id of group `name` in the user database.
fn group_id(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: an all-zero group is a valid value of a plain C struct (null pointers, 0);
    // it is only written by getgrnam_r below.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `group` and
    // `found` are ours, and `buf` is as long as the length passed.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(group.gr_gid)
}

/// Whether user `uid` is in group `gid` in the user database (primary or supplementary),
/// as dbus-daemon's `group=` policies and polkit's `isInGroup` read it.
fn user_in_group(uid: u32, gid: u32) -> bool {
    // SAFETY: an all-zero passwd is a valid value of a plain C struct; it is only
    // written by getpwuid_r below.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: `pw`, `buf` (with its length) and `found` are valid for the call.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return false;
    }
    if pw.pw_gid == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    loop {
        let mut count = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pw.pw_name` points into `buf`, still alive and NUL-terminated;
        // `groups` holds `count` entries.
        let rc =
            unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            return groups[..count.min(groups.len())].contains(&gid);
        }
        if count <= groups.len() || groups.len() >= 65_536 {
            return false;
        }
        groups.resize(count, 0);
    }
}

/// The name of user `uid`, for tests and messages.
#[cfg(test)]
fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns null or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and its pw_name a NUL-terminated string.
    Some(
        unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            action: Action::Execute,
            verb: "execute",
            plugin: Some("hash"),
        }
    }

    fn result(authorized: bool, challenge: bool, details: &[(&str, &str)]) -> AuthorizationResult {
        AuthorizationResult {
            is_authorized: authorized,
            is_challenge: challenge,
            details: details
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn denial(r: Result<(), DynplugError>) -> String {
        match r {
            Err(DynplugError::AccessDenied(m)) => m,
            other => panic!("expected AccessDenied, got {other:?}"),
        }
    }

    #[test]
    fn details_carry_the_plugin_and_verb() {
        let request = request();
        let d = request.details();
        assert_eq!(d.get("plugin"), Some(&"hash"));
        assert_eq!(d.get("verb"), Some(&"execute"));
        let reload = Request {
            action: Action::Manage,
            verb: "reload",
            plugin: None,
        };
        assert!(!reload.details().contains_key("plugin"));
    }

    #[test]
    fn polkit_answers_become_allow_or_named_denials() {
        assert!(polkit_verdict(&result(true, false, &[]), false, &request()).is_ok());
        let no = denial(polkit_verdict(
            &result(false, false, &[]),
            false,
            &request(),
        ));
        assert!(
            no.contains("org.dynplug.execute") && no.contains("`hash`"),
            "{no}"
        );
        assert!(no.contains("rules.d"), "{no}");
        let ask = denial(polkit_verdict(&result(false, true, &[]), false, &request()));
        assert!(ask.contains("interactive authorization"), "{ask}");
        let no_agent = denial(polkit_verdict(&result(false, true, &[]), true, &request()));
        assert!(no_agent.contains("no authentication agent"), "{no_agent}");
        let dismissed = denial(polkit_verdict(
            &result(false, true, &[("polkit.dismissed", "true")]),
            true,
            &request(),
        ));
        assert!(dismissed.contains("dismissed"), "{dismissed}");
    }

    #[tokio::test]
    async fn without_polkit_only_the_group_passes() {
        let authority = Authority::default();
        // root's primary group is 0 in every user database these tests run with.
        assert!(group_verdict(authority.is_member(0, 0).await, &request()).is_ok());
        let m = denial(group_verdict(false, &request()));
        assert!(
            m.contains("`dynplug` group") && m.contains("org.dynplug.execute"),
            "{m}"
        );
        // nobody is not in root's group.
        let nobody = 65_534;
        assert!(
            user_name(nobody).is_some(),
            "the user database has no `nobody`"
        );
        assert!(group_verdict(authority.is_member(nobody, 0).await, &request()).is_err());
    }

    #[tokio::test]
    async fn memberships_are_remembered_for_a_short_while() {
        let authority = Authority::default();
        assert!(authority.is_member(0, 0).await);
        // Remembered: the same answer without a lookup, even for a user the database
        // would now say otherwise about.
        lock(&authority.memberships).insert((0, 0), (false, Instant::now()));
        assert!(!authority.is_member(0, 0).await);
        // Expired: asked again.
        lock(&authority.memberships).insert(
            (0, 0),
            (
                false,
                Instant::now() - MEMBERSHIP_TTL - Duration::from_secs(1),
            ),
        );
        assert!(authority.is_member(0, 0).await);
    }

    #[test]
    fn group_lookups_read_the_user_database() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
        assert!(user_in_group(0, 0));
        assert!(!user_in_group(u32::MAX - 1, 0));
    }
}
