//! DynPlug plugins as signed OCI artifacts.
//!
//! - [`artifact`]: the format (config media type, layers per platform, signatures).
//! - [`reference`]: `HOST/REPO:TAG`, `@sha256:...`, `@RANGE`.
//! - [`client`] over [`http`]: a registry client with bounds on time, size and
//!   redirects, checking every digest while content streams.
//! - [`pull`]: a verified pull into a staging directory, then an atomic install.
//! - [`publish`]: building and pushing artifacts (or writing image-layout archives).
//! - [`layout`]: reading image-layout archives for offline installs.

pub mod artifact;
pub mod client;
pub mod digest;
pub mod error;
pub mod http;
pub mod layout;
pub mod publish;
pub mod pull;
pub mod reference;
pub mod store;

pub use error::{ErrorKind, OciError};
