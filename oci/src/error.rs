//! Why a registry operation failed, sorted into the kinds a caller acts on differently
//! (see [`OciError::kind`]).

use std::fmt;

/// What went wrong, coarsely: the exit code of `dynplug-pack` and the error name of
/// the daemon's methods follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference, tag, version or digest does not exist there.
    NotFound,
    /// The artifact is unsigned (while signatures are required) or badly signed.
    SignatureRefused,
    /// The registry could not be reached, or stopped answering in time.
    Unreachable,
    /// The registry answered, but not what it should: wrong digest, too large, not
    /// JSON, a redirect elsewhere, a refused login.
    Refused,
    /// A local problem: the reference or an option is malformed, a file cannot be written.
    Local,
}

impl ErrorKind {
    /// The process exit code `dynplug-pack` (and `dynplugctl`) uses for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::NotFound => 3,
            ErrorKind::SignatureRefused => 4,
            ErrorKind::Unreachable => 5,
            ErrorKind::Refused => 6,
            ErrorKind::Local => 1,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::SignatureRefused => "signature refused",
            ErrorKind::Unreachable => "registry unreachable",
            ErrorKind::Refused => "registry answer refused",
            ErrorKind::Local => "local error",
        })
    }
}

/// A failed registry operation. Messages never contain credentials: only the host,
/// the repository and the path are named.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A reference that cannot be parsed.
    #[error("bad reference {reference:?}: {why}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// The registry has no such manifest, blob or tag.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// No tag matches a version range.
    #[error("no tag of {repository} matches {range} (tags: {tags})")]
    NoMatchingTag {
        /// The repository.
        repository: String,
        /// The range asked for.
        range: String,
        /// The tags there are (cut short).
        tags: String,
    },
    /// A connection could not be made or broke.
    #[error("cannot reach {host}: {why}")]
    Unreachable {
        /// The registry's host and port.
        host: String,
        /// Why.
        why: String,
    },
    /// The registry did not answer (or did not go on answering) within the deadline.
    #[error("{host} did not answer {what} within {secs} s")]
    Timeout {
        /// The registry's host and port.
        host: String,
        /// What was being waited for.
        what: String,
        /// The deadline in seconds.
        secs: u64,
    },
    /// An answer larger than allowed (a manifest, a tag list, a layer).
    #[error("{what} is larger than the {limit} bytes allowed")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// Content whose digest is not the one asked for.
    #[error("{what}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A redirect to a host that is not allowed.
    #[error("{host} redirected to another host ({to}); refused (not in allow_redirect_hosts)")]
    RedirectRefused {
        /// The registry's host.
        host: String,
        /// The host redirected to.
        to: String,
    },
    /// The registry refused the credentials (or asked for some).
    #[error("{host} refused access ({status}): check the credentials")]
    AuthRefused {
        /// The registry's host.
        host: String,
        /// The HTTP status.
        status: u16,
    },
    /// An answer that is not what the protocol or the artifact format says.
    #[error("bad answer from {host}: {why}")]
    Protocol {
        /// The registry's host (or the archive's path).
        host: String,
        /// What was wrong.
        why: String,
    },
    /// The signature is missing (while required) or does not verify.
    #[error("signature refused: {0}")]
    Signature(String),
    /// The plugin's metadata does not agree with the artifact or the request.
    #[error("metadata refused: {0}")]
    Metadata(String),
    /// A local file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// A bad option.
    #[error("{0}")]
    Usage(String),
}

impl OciError {
    /// The kind of failure, for exit codes and error names.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OciError::NotFound { .. } | OciError::NoMatchingTag { .. } => ErrorKind::NotFound,
            OciError::Signature(_) => ErrorKind::SignatureRefused,
            OciError::Unreachable { .. } | OciError::Timeout { .. } => ErrorKind::Unreachable,
            OciError::TooLarge { .. }
            | OciError::DigestMismatch { .. }
            | OciError::RedirectRefused { .. }
            | OciError::AuthRefused { .. }
            | OciError::Protocol { .. }
            | OciError::Metadata(_) => ErrorKind::Refused,
            OciError::BadReference { .. } | OciError::Io { .. } | OciError::Usage(_) => {
                ErrorKind::Local
            }
        }
    }

    pub(crate) fn io(path: &std::path::Path, e: impl fmt::Display) -> OciError {
        OciError::Io {
            path: path.display().to_string(),
            why: e.to_string(),
        }
    }

    pub(crate) fn protocol(host: &str, why: impl Into<String>) -> OciError {
        OciError::Protocol {
            host: host.to_owned(),
            why: why.into(),
        }
    }
}
