//! Signed plugins: ed25519 detached signatures beside the file (`NAME.so.sig`) over the
//! file's bytes, checked against the public keys in `trust.keys_dir`, as
//! `trust.signatures` says (`off`, `permissive`, `enforcing`).
//!
//! Key and signature files are text: the hex of the 32-byte public key (`*.pub`), of
//! the 32-byte secret key (`*.key`, kept by whoever signs), and of the 64-byte
//! signature (`*.sig`). The ed25519 arithmetic is the `ed25519-dalek` crate's, with
//! strict verification (no malleable or small-order signatures).

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::trust::{self, TrustPolicy};

/// The suffix of a detached signature: `echo.so` is signed by `echo.so.sig`.
pub const SIG_SUFFIX: &str = ".sig";

/// The largest key or signature file read (hex text with a line end fits many times).
pub const MAX_TEXT_BYTES: u64 = 4096;

/// What a missing or bad signature does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// Signatures are not checked.
    #[default]
    Off,
    /// Checked; an unsigned or badly signed plugin loads, marked as not verified.
    Permissive,
    /// Checked; an unsigned or badly signed plugin is refused with the reason.
    Enforcing,
}

impl SignatureMode {
    /// The mode's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Off => "off",
            SignatureMode::Permissive => "permissive",
            SignatureMode::Enforcing => "enforcing",
        }
    }
}

/// What checking a file's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not checked (`trust.signatures: off`).
    NotChecked,
    /// Signed by this key (its file name without `.pub`).
    Verified(String),
    /// No signature file.
    Unsigned,
    /// A signature that does not verify with any trusted key, or cannot be read.
    Bad(String),
}

impl Verdict {
    /// Whether the file may be loaded under `mode`.
    pub fn allows(&self, mode: SignatureMode) -> bool {
        mode != SignatureMode::Enforcing || matches!(self, Verdict::Verified(_))
    }

    /// Whether a permissive daemon loads it marked as not verified.
    pub fn is_unverified(&self) -> bool {
        matches!(self, Verdict::Unsigned | Verdict::Bad(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NotChecked => f.write_str("not checked (trust.signatures is off)"),
            Verdict::Verified(key) => write!(f, "verified (key {key})"),
            Verdict::Unsigned => f.write_str("unsigned (no .sig file beside it)"),
            Verdict::Bad(why) => write!(f, "bad signature: {why}"),
        }
    }
}

/// The trusted public keys, by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Keyring {
    /// Reads every `*.pub` file of `dir` (which must pass the loader's trust checks,
    /// as must each key file). A missing directory is an empty keyring.
    pub fn load(dir: &Path, policy: TrustPolicy) -> Result<Keyring, String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keyring::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        trust::check_dir(dir, policy).map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            let text = trust::read_side_file(&path, policy, MAX_TEXT_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| format!("{}: not text", path.display()))
                })?;
            let bytes: [u8; 32] = from_hex(text.trim())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "{}: not the hex of a 32-byte ed25519 public key",
                        path.display()
                    )
                })?;
            VerifyingKey::from_bytes(&bytes)
                .map_err(|e| format!("{}: not an ed25519 public key: {e}", path.display()))?;
            keys.push((name.to_owned(), bytes));
        }
        keys.sort();
        Ok(Keyring { keys })
    }

    /// The names of the keys.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Checks the signature beside `file` (`FILE.sig`, read as a side file under
    /// `policy`) over `data`, the bytes that will be loaded (a sealed image of the file,
    /// never the path read again).
    pub fn check(&self, file: &Path, data: &[u8], policy: TrustPolicy) -> Verdict {
        let sig_path = signature_path(file);
        let text = match trust::read_side_file(&sig_path, policy, MAX_TEXT_BYTES) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.is_missing() => return Verdict::Unsigned,
            Err(e) => return Verdict::Bad(e.to_string()),
        };
        self.verify(&text, data, &sig_path.display().to_string())
    }

    /// Checks `text`, a signature in the `.sig` file format (named `origin` in the
    /// verdict), over `data`: for signatures that come from elsewhere than a file beside
    /// the plugin (a registry).
    pub fn verify(&self, text: &str, data: &[u8], origin: &str) -> Verdict {
        let Some(bytes) = from_hex(text.trim()).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return Verdict::Bad(format!("{origin} is not the hex of a 64-byte signature"));
        };
        let signature = Signature::from_bytes(&bytes);
        for (name, key) in &self.keys {
            let Ok(key) = VerifyingKey::from_bytes(key) else {
                continue;
            };
            if key.verify_strict(data, &signature).is_ok() {
                return Verdict::Verified(name.clone());
            }
        }
        if self.keys.is_empty() {
            Verdict::Bad("no trusted keys (trust.keys_dir holds no *.pub)".into())
        } else {
            Verdict::Bad(format!(
                "does not verify with any trusted key ({}): modified, or signed by another key",
                self.names().join(", ")
            ))
        }
    }
}

/// Where the detached signature of `file` lives.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIG_SUFFIX);
    PathBuf::from(name)
}

/// Makes a key pair from 32 random bytes: returns (secret hex, public hex).
pub fn keygen() -> Result<(String, String), String> {
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    Ok((to_hex(&secret), to_hex(key.verifying_key().as_bytes())))
}

/// Signs `file` with the secret key in hex `secret_hex`; returns the signature's hex.
pub fn sign(file: &Path, secret_hex: &str) -> Result<String, String> {
    let secret: [u8; 32] = from_hex(secret_hex.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or("the key is not the hex of a 32-byte ed25519 secret key")?;
    let data = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(to_hex(
        &SigningKey::from_bytes(&secret).sign(&data).to_bytes(),
    ))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_fixtures::ANYONE;

    fn write(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn dir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn signed_unsigned_tampered_and_foreign_files() {
        let keys = dir();
        let files = dir();
        let (secret, public) = keygen().unwrap();
        let (other_secret, _) = keygen().unwrap();
        write(&keys.path().join("build.pub"), &format!("{public}\n"));
        let ring = Keyring::load(keys.path(), ANYONE).unwrap();
        assert_eq!(ring.names(), ["build"]);

        let plugin = files.path().join("p.so");
        write(&plugin, "plugin bytes");
        let check = |data: &str| ring.check(&plugin, data.as_bytes(), ANYONE);
        assert_eq!(check("plugin bytes"), Verdict::Unsigned);
        write(&signature_path(&plugin), &sign(&plugin, &secret).unwrap());
        assert_eq!(check("plugin bytes"), Verdict::Verified("build".into()));
        // One byte more: the signature no longer verifies.
        assert!(matches!(check("plugin bytes!"), Verdict::Bad(m) if m.contains("does not verify")));
        // Signed by a key nobody trusts.
        write(
            &signature_path(&plugin),
            &sign(&plugin, &other_secret).unwrap(),
        );
        assert!(matches!(check("plugin bytes"), Verdict::Bad(_)));
        write(&signature_path(&plugin), "zz");
        assert!(matches!(check("plugin bytes"), Verdict::Bad(m) if m.contains("not the hex")));
        // A signature that is a FIFO or a link to /dev/zero: a bad signature, at once.
        std::fs::remove_file(signature_path(&plugin)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", signature_path(&plugin)).unwrap();
        assert!(matches!(check("plugin bytes"), Verdict::Bad(m) if m.contains("character device")));
    }

    #[test]
    fn modes_decide_what_loads() {
        let verified = Verdict::Verified("k".into());
        for mode in [SignatureMode::Off, SignatureMode::Permissive] {
            assert!(Verdict::Unsigned.allows(mode) && Verdict::Bad("x".into()).allows(mode));
        }
        assert!(verified.allows(SignatureMode::Enforcing));
        assert!(!Verdict::Unsigned.allows(SignatureMode::Enforcing));
        assert!(!Verdict::Bad("x".into()).allows(SignatureMode::Enforcing));
    }

    #[test]
    fn bad_key_files_and_a_missing_directory() {
        let keys = dir();
        assert_eq!(
            Keyring::load(&keys.path().join("absent"), ANYONE).unwrap(),
            Keyring::default()
        );
        write(&keys.path().join("junk.pub"), "not hex");
        assert!(Keyring::load(keys.path(), ANYONE)
            .unwrap_err()
            .contains("junk.pub"));
        assert!(sign(Path::new("/nonexistent"), "00").is_err());
        assert_eq!(from_hex("0aff"), Some(vec![10, 255]));
        assert_eq!(from_hex("0"), None);
    }
}
