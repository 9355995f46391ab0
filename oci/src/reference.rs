//! Plugin references: `[oci://]HOST[:PORT]/REPOSITORY` followed by `:TAG`, `@sha256:...`
//! (a digest: pinned) or `@RANGE` (a semver requirement such as `^1.2`, matched against
//! the repository's tags), or nothing (the tag `latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::OciError;

/// Which version of the repository a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A tag.
    Tag(String),
    /// A manifest (or index) digest.
    Digest(Digest),
    /// The highest tag that is a semver version matching this requirement.
    Range(semver::VersionReq),
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`.
    pub registry: String,
    /// The repository path (`dynplug/echo`).
    pub repository: String,
    /// Which version.
    pub selector: Selector,
}

/// The scheme prefix a reference may carry (as in `plugins.NAME.source`).
pub const SCHEME: &str = "oci://";

impl Reference {
    /// Parses a reference.
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad = |why: &str| OciError::BadReference {
            reference: text.to_owned(),
            why: why.to_owned(),
        };
        let rest = text.strip_prefix(SCHEME).unwrap_or(text);
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected HOST[:PORT]/REPOSITORY"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(bad(
                "the registry must be a host name or address with an optional port",
            ));
        }
        let (repository, selector) = if let Some((repo, sel)) = path.split_once('@') {
            let selector = if sel.starts_with("sha256:") {
                Selector::Digest(Digest::parse(sel).map_err(|e| bad(&e))?)
            } else {
                Selector::Range(
                    semver::VersionReq::parse(sel)
                        .map_err(|e| bad(&format!("{sel:?} is not a version range: {e}")))?,
                )
            };
            (repo, selector)
        } else {
            // A colon after the last slash is the tag's.
            let last = path.rfind('/').map_or(0, |i| i + 1);
            match path[last..].split_once(':') {
                Some((name, tag)) => (&path[..last + name.len()], Selector::Tag(tag.to_owned())),
                None => (path, Selector::Tag("latest".to_owned())),
            }
        };
        validate_repository(repository).map_err(|e| bad(&e))?;
        if let Selector::Tag(tag) = &selector {
            validate_tag(tag).map_err(|e| bad(&e))?;
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            selector,
        })
    }

    /// The same repository at another selector.
    pub fn with(&self, selector: Selector) -> Reference {
        Reference {
            selector,
            ..self.clone()
        }
    }

    /// The last path component of the repository (the plugin's usual name).
    pub fn short_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match &self.selector {
            Selector::Tag(t) => write!(f, ":{t}"),
            Selector::Digest(d) => write!(f, "@{d}"),
            Selector::Range(r) => write!(f, "@{r}"),
        }
    }
}

/// The distribution spec's repository grammar: lowercase path components of
/// `[a-z0-9]` separated by `.`, `_`, `__` or `-`, joined by `/`.
fn validate_repository(repo: &str) -> Result<(), String> {
    let ok = !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric()
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{repo:?} is not a repository name (lowercase a-z 0-9 . _ - and /)"
        ))
    }
}

/// The spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn validate_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{tag:?} is not a tag"))
    }
}

/// The highest tag (read as a version, an optional leading `v` allowed) that `range`
/// matches. Pre-releases match only if the range names one, as semver says.
pub fn best_tag<'a>(tags: &'a [String], range: &semver::VersionReq) -> Option<&'a str> {
    tags.iter()
        .filter_map(|t| {
            let v = semver::Version::parse(t.strip_prefix('v').unwrap_or(t)).ok()?;
            range.matches(&v).then_some((v, t.as_str()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_ranges_and_defaults() {
        let r = Reference::parse("oci://127.0.0.1:5000/dynplug/echo:1.0.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "dynplug/echo");
        assert_eq!(r.selector, Selector::Tag("1.0.0".into()));
        assert_eq!(r.short_name(), "echo");
        assert_eq!(r.to_string(), "127.0.0.1:5000/dynplug/echo:1.0.0");

        let r = Reference::parse("localhost:5000/echo").unwrap();
        assert_eq!(r.selector, Selector::Tag("latest".into()));

        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("reg.example/a/b@{d}")).unwrap();
        assert_eq!(r.selector, Selector::Digest(d));

        let r = Reference::parse("reg.example/hash@^1.2").unwrap();
        assert!(matches!(r.selector, Selector::Range(_)));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "echo",
            "/echo",
            "reg/Echo:1",
            "reg/../etc:1",
            "reg/echo:",
            "reg/echo:-x",
            "reg/echo@sha256:00",
            "reg/echo@not a range",
            "us er@reg/echo",
            "reg/echo:1/../../x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_highest_matching_version_tag_wins() {
        let tags: Vec<String> = [
            "1.0.0",
            "v1.2.0",
            "1.10.1",
            "2.0.0",
            "latest",
            "1.11.0-rc.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let req = |s: &str| semver::VersionReq::parse(s).unwrap();
        assert_eq!(best_tag(&tags, &req("^1.2")), Some("1.10.1"));
        assert_eq!(best_tag(&tags, &req("~1.2")), Some("v1.2.0"));
        assert_eq!(best_tag(&tags, &req(">=2")), Some("2.0.0"));
        assert_eq!(best_tag(&tags, &req("^3")), None);
    }
}
