//! A small HTTP/1.1 client for registry calls, with every bound a registry client needs
//! and general clients leave open: a deadline on connecting, on each wait for bytes and
//! on the whole request; a size limit checked before and while reading a body;
//! redirects followed only to the same host (or a host explicitly allowed, and then
//! without credentials); TLS (rustls, with the system's roots or a `ca_file`) unless
//! plain HTTP is asked for, which is allowed only to a loopback address.
//!
//! One connection per request: registry calls are few and large, and a fresh
//! connection cannot carry a stalled earlier answer into the next call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, HOST, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::OciError;

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 4;

/// A user name and password for HTTP basic authentication. Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Parses the text of a credentials file: its first line, `USER:PASSWORD`.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            // The message names the format, never the content.
            _ => Err("a credentials file's first line must be USER:PASSWORD".into()),
        }
    }

    fn header(&self) -> HeaderValue {
        let token = base64(format!("{}:{}", self.user, self.password).as_bytes());
        let mut value =
            HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a header value");
        value.set_sensitive(true);
        value
    }
}

/// The bounds and permissions of registry requests.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The deadline for a TCP connection.
    pub connect_timeout: Duration,
    /// The deadline for the answer's head and for each piece of its body.
    pub read_timeout: Duration,
    /// The deadline for one whole request, body included.
    pub total_timeout: Duration,
    /// Hosts (`host` or `host:port`) a redirect may lead to, besides the registry's own.
    pub allow_redirect_hosts: Vec<String>,
    /// Sent to the registry's own host only.
    pub credentials: Option<Credentials>,
    /// Plain HTTP instead of TLS: allowed only to a loopback address.
    pub insecure_http: bool,
    /// PEM certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The system's trusted roots (Debian's `ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(600),
            allow_redirect_hosts: Vec::new(),
            credentials: None,
            insecure_http: false,
            ca_file: None,
        }
    }
}

/// An answer whose head has arrived; its body is read with a bound.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    body: Incoming,
    host: String,
    deadline: Instant,
    read_timeout: Duration,
}

/// A client for one registry host.
#[derive(Clone)]
pub(crate) struct Http {
    /// `host:port` of the registry.
    pub(crate) authority: String,
    opts: HttpOptions,
    /// None for plain HTTP.
    tls: Option<tokio_rustls::TlsConnector>,
    /// The bearer token the registry's token service gave, once asked for one.
    token: Arc<std::sync::Mutex<Option<HeaderValue>>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The TLS client configuration: roots from `ca_file`, else the system's.
struct Tls;

impl Tls {
    fn connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, OciError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let path = ca_file.unwrap_or(Path::new(SYSTEM_ROOTS));
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| OciError::io(path, e))?;
        for cert in certs {
            let cert = cert.map_err(|e| OciError::io(path, e))?;
            roots
                .add(cert)
                .map_err(|e| OciError::io(path, format!("a certificate it holds: {e}")))?;
        }
        if roots.is_empty() {
            return Err(OciError::io(path, "no certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OciError::Usage(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

impl Http {
    /// A client of `authority` (`host` or `host:port`; port 443, or 80 for plain HTTP,
    /// if none). Plain HTTP (`insecure_http`) is refused unless the host is a loopback
    /// name or address (checked again on the connected socket).
    pub(crate) fn new(authority: &str, opts: HttpOptions) -> Result<Http, OciError> {
        let host = host_of(authority);
        let loopback_name = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if opts.insecure_http && !loopback_name {
            return Err(OciError::Usage(format!(
                "{authority}: plain HTTP (insecure_http) is allowed only to a loopback address"
            )));
        }
        let tls = match opts.insecure_http {
            true => None,
            false => Some(Tls::connector(opts.ca_file.as_deref())?),
        };
        let default_port = if tls.is_some() { 443 } else { 80 };
        let authority = with_port(authority, default_port);
        Ok(Http {
            authority,
            opts,
            tls,
            token: Arc::default(),
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Sends a request for `target` (a path with query) with a body; follows redirects
    /// as the options allow (only for GET and HEAD). A registry that answers 401 with a
    /// `Bearer` challenge gets one token request to its token service (with the
    /// credentials, if any), and the request is sent again with the token.
    pub(crate) async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, OciError> {
        let deadline = Instant::now() + self.opts.total_timeout;
        let resp = self
            .send_following(&method, target, headers, body.clone(), deadline)
            .await?;
        if resp.status != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = resp.header("www-authenticate").and_then(parse_bearer) else {
            return Ok(resp);
        };
        self.fetch_token(&challenge, deadline).await?;
        self.send_following(&method, target, headers, body, deadline)
            .await
    }

    /// Asks the token service named by a `Bearer` challenge for a token, with the
    /// credentials if there are any; keeps it for the next requests.
    async fn fetch_token(
        &self,
        challenge: &[(String, String)],
        deadline: Instant,
    ) -> Result<(), OciError> {
        let get = |key: &str| {
            challenge
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or_else(|| {
            OciError::protocol(&self.authority, "a Bearer challenge without realm")
        })?;
        let (authority, path) =
            split_location(realm, &self.authority, self.scheme()).ok_or_else(|| {
                OciError::protocol(&self.authority, "a token realm of another scheme, refused")
            })?;
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(v) = get(key) {
                query.push(format!("{key}={}", query_escape(v)));
            }
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let target = format!("{path}{sep}{}", query.join("&"));
        let auth = self.opts.credentials.as_ref().map(Credentials::header);
        let what = "a token from the registry's token service";
        let data = self
            .once(
                &authority,
                auth,
                &Method::GET,
                &target,
                &[],
                Bytes::new(),
                deadline,
            )
            .await?
            .check(what)?
            .bytes(64 * 1024, what)
            .await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&data)
            .map_err(|e| OciError::protocol(&authority, format!("{what}: {e}")))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| OciError::protocol(&authority, format!("{what}: no token in it")))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| OciError::protocol(&authority, format!("{what}: not a header value")))?;
        value.set_sensitive(true);
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    /// What to send in `Authorization` to the registry's own host: the bearer token if
    /// there is one, else the basic credentials if any.
    fn registry_auth(&self) -> Option<HeaderValue> {
        let token = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        token.or_else(|| self.opts.credentials.as_ref().map(Credentials::header))
    }

    async fn send_following(
        &self,
        method: &Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response, OciError> {
        let mut authority = self.authority.clone();
        let mut target = target.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let auth = (authority == self.authority)
                .then(|| self.registry_auth())
                .flatten();
            let resp = self
                .once(
                    &authority,
                    auth,
                    method,
                    &target,
                    headers,
                    body.clone(),
                    deadline,
                )
                .await?;
            if !resp.status.is_redirection() || !(method == Method::GET || method == Method::HEAD) {
                return Ok(resp);
            }
            let location = resp
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| OciError::protocol(&authority, "a redirect without Location"))?;
            let (to, path) =
                split_location(location, &authority, self.scheme()).ok_or_else(|| {
                    OciError::protocol(&authority, "a redirect to a URL it cannot follow")
                })?;
            if to != self.authority && !self.allowed(&to) {
                return Err(OciError::RedirectRefused {
                    host: self.authority.clone(),
                    to,
                });
            }
            authority = to;
            target = path;
        }
        Err(OciError::protocol(&self.authority, "too many redirects"))
    }

    fn allowed(&self, authority: &str) -> bool {
        self.opts
            .allow_redirect_hosts
            .iter()
            .any(|h| h == authority || h == host_of(authority))
    }

    #[allow(clippy::too_many_arguments)]
    async fn once(
        &self,
        authority: &str,
        auth: Option<HeaderValue>,
        method: &Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response, OciError> {
        let unreachable = |why: String| OciError::Unreachable {
            host: authority.to_owned(),
            why,
        };
        let stream = within(
            authority,
            "the connection",
            self.opts.connect_timeout,
            deadline,
            TcpStream::connect(authority),
        )
        .await?
        .map_err(|e| unreachable(e.to_string()))?;
        let peer: SocketAddr = stream.peer_addr().map_err(|e| unreachable(e.to_string()))?;
        let mut sender = match &self.tls {
            None if !peer.ip().is_loopback() => {
                return Err(OciError::Usage(format!(
                "{authority} resolved to {peer}, not a loopback address: refused over plain HTTP"
            )))
            }
            None => open(stream).await,
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(
                    host_of(authority)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )
                .map_err(|e| OciError::Usage(format!("{authority}: {e}")))?;
                let stream = within(
                    authority,
                    "the TLS handshake",
                    self.opts.connect_timeout,
                    deadline,
                    tls.connect(name, stream),
                )
                .await?
                .map_err(|e| OciError::protocol(authority, format!("TLS: {e}")))?;
                open(stream).await
            }
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(HOST, authority)
            .header(CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(value) = auth {
            req = req.header(AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| OciError::Usage(format!("cannot build a request for {target:?}: {e}")))?;
        let resp = within(
            authority,
            "the answer's head",
            self.opts.read_timeout,
            deadline,
            sender.send_request(req),
        )
        .await?
        .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            host: authority.to_owned(),
            deadline,
            read_timeout: self.opts.read_timeout,
        })
    }
}

impl Response {
    /// Fails unless the status is a success: 404 is [`OciError::NotFound`] (of `what`),
    /// 401 and 403 [`OciError::AuthRefused`], anything else a protocol error.
    pub(crate) fn check(self, what: &str) -> Result<Response, OciError> {
        match self.status.as_u16() {
            200..=299 => Ok(self),
            404 => Err(OciError::NotFound {
                what: what.to_owned(),
            }),
            s @ (401 | 403) => Err(OciError::AuthRefused {
                host: self.host,
                status: s,
            }),
            s => Err(OciError::protocol(
                &self.host,
                format!("{what}: HTTP status {s}"),
            )),
        }
    }

    /// The `Content-Length` the answer announced, if any.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// A header's value as text, if present and text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads the whole body, refusing more than `limit` bytes (by its announced length
    /// before reading anything, and while reading).
    pub(crate) async fn bytes(self, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
        let mut out = Vec::new();
        self.stream(limit, what, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Hands the body to `sink` piece by piece, refusing more than `limit` bytes.
    pub(crate) async fn stream(
        mut self,
        limit: u64,
        what: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), OciError>,
    ) -> Result<u64, OciError> {
        let too_large = || OciError::TooLarge {
            what: what.to_owned(),
            limit,
        };
        if self.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut read = 0u64;
        loop {
            let frame = within(
                &self.host,
                what,
                self.read_timeout,
                self.deadline,
                self.body.frame(),
            )
            .await?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| OciError::Unreachable {
                host: self.host.clone(),
                why: format!("{what}: {e}"),
            })?;
            if let Ok(data) = frame.into_data() {
                read += data.len() as u64;
                if read > limit {
                    return Err(too_large());
                }
                sink(&data)?;
            }
        }
        Ok(read)
    }
}

/// Starts an HTTP/1.1 connection over `io`; the connection runs in a task of its own
/// until the answer's body is read or dropped.
async fn open<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `authority` with `port` added if it has none.
fn with_port(authority: &str, port: u16) -> String {
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{port}")
    }
}

/// Waits for `fut` until the shorter of `wait` and what is left before `deadline`.
async fn within<T>(
    host: &str,
    what: &str,
    wait: Duration,
    deadline: Instant,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, OciError> {
    let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::timeout(wait, fut)
        .await
        .map_err(|_| OciError::Timeout {
            host: host.to_owned(),
            what: what.to_owned(),
            secs: wait.as_secs().max(1),
        })
}

/// The host of `host:port` (IPv6 brackets kept).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split(']')
            .next()
            .map_or(authority, |h| &authority[..h.len() + 1]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Splits a Location into (authority, path): an absolute URL of `scheme` (the scheme
/// of the connection: a redirect never goes from TLS to plain HTTP), or a path on the
/// current host. Anything else is None.
fn split_location(location: &str, current: &str, scheme: &str) -> Option<(String, String)> {
    if location.starts_with('/') {
        return Some((current.to_owned(), location.to_owned()));
    }
    let rest = location.strip_prefix(scheme)?.strip_prefix("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let port = if scheme == "https" { 443 } else { 80 };
    Some((with_port(authority, port), path.to_owned()))
}

/// The parameters of a `Bearer` challenge (`Bearer realm="...",service="...",...`).
fn parse_bearer(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let rest = rest
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map(|_| &rest[7..])?;
    let mut out = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        out.push((key.trim().to_ascii_lowercase(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches([',', ' ']);
    }
    Some(out)
}

/// Percent-encodes a query value (unreserved characters and `:/` kept).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_bearer(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            [
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        assert_eq!(parse_bearer(r#"Basic realm="x""#), None);
        assert_eq!(
            query_escape("repository:a/b:pull,push x"),
            "repository:a/b:pull%2Cpush%20x"
        );
    }

    #[test]
    fn credentials_parse_and_never_print() {
        let c = Credentials::parse("alice:s3cret\n").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::parse("nocolon").is_err());
        assert!(!Credentials::parse("x:").unwrap_err().contains("x:"));
    }

    #[test]
    fn locations_and_hosts() {
        assert_eq!(
            split_location("/v2/x", "127.0.0.1:5000", "http"),
            Some(("127.0.0.1:5000".into(), "/v2/x".into()))
        );
        assert_eq!(
            split_location("http://127.0.0.2:81/b?x=1", "127.0.0.1:5000", "http"),
            Some(("127.0.0.2:81".into(), "/b?x=1".into()))
        );
        assert_eq!(
            split_location("https://e/x", "a:1", "https"),
            Some(("e:443".into(), "/x".into()))
        );
        // Never from TLS down to plain HTTP, nor to another scheme.
        assert_eq!(split_location("http://e/x", "a:1", "https"), None);
        assert_eq!(split_location("ftp://e/x", "a:1", "http"), None);
        assert_eq!(split_location("http://u:p@e/x", "a:1", "http"), None);
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(with_port("[::1]", 443), "[::1]:443");
        assert_eq!(with_port("[::1]:5", 443), "[::1]:5");
        let plain = HttpOptions {
            insecure_http: true,
            ..HttpOptions::default()
        };
        assert!(Http::new("registry.example:80", plain.clone()).is_err());
        assert!(Http::new("localhost:5000", plain).is_ok());
    }
}
