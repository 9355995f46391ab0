//! The wire protocol between the daemon and a plugin worker process.
//!
//! Frames on a private socketpair: `len: u32 LE` (of what follows), `kind: u8`, body.
//! The worker opens with [`Kind::Hello`] (protocol version + the plugin's metadata and
//! sandbox report as JSON), then answers each request with exactly one
//! [`Kind::Result`], which may be preceded by the plugin's host calls for that request
//! ([`Kind::Log`], [`Kind::Progress`], [`Kind::Emit`]); while it runs, the daemon may
//! send [`Kind::Cancel`], and it answers each [`Kind::Emit`] with a [`Kind::EmitAck`]
//! (whether the event was published: the worker's plugin gets the same answer as one
//! in the daemon's process). Between calls a worker sends nothing: the daemon kills
//! an idle worker whose channel becomes readable. Nothing else shares the channel, so whatever a plugin prints
//! on stdout or stderr cannot corrupt it.
//!
//! Plugin code runs in the worker and can write to the channel itself. So every
//! request carries a fresh random call id that its result must repeat: a frame the
//! plugin forged before it saw a request cannot answer it, and the daemon kills a worker
//! whose frame is unexpected, malformed or carries another id. An answer therefore
//! reaches only the caller whose request the worker saw.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this protocol; a worker of another version is refused.
pub const PROTOCOL_VERSION: u32 = 4;
/// Bytes before the payload of a request: the call id.
pub const REQUEST_HEAD: usize = 8;
/// Bytes before the text of a result: the call id and the status.
pub const RESULT_HEAD: usize = 9;

/// Result status: success; the text is the output.
pub const RESULT_OK: u8 = 0;
/// Result status: the plugin returned an error; the text is its message.
pub const RESULT_ERROR: u8 = 1;
/// Result status: the plugin panicked; the text is the panic message.
pub const RESULT_PANIC: u8 = 2;
/// Result status: the output was not valid UTF-8.
pub const RESULT_INVALID_OUTPUT: u8 = 3;
/// Largest frame accepted either way.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// worker → daemon: `version: u32 LE` + [`Hello`] as JSON.
    Hello = 1,
    /// daemon → worker: settings JSON for `configure`.
    Configure = 2,
    /// daemon → worker: input for `execute`.
    Execute = 3,
    /// worker → daemon: `status: u8` (ABI status) + output or message.
    Result = 4,
    /// worker → daemon: the plugin could not be loaded; body is the message.
    Failed = 5,
    /// daemon → worker: call id + `len: u64 LE`; the input is in the shared region.
    ExecuteShared = 6,
    /// worker → daemon: call id + status + `len: u64 LE`; the text is in the region.
    ResultShared = 7,
    /// worker → daemon, during a call: call id + level `u8` + the log line.
    Log = 8,
    /// worker → daemon, during a call: call id + fraction `f64 LE` + status text.
    Progress = 9,
    /// worker → daemon, during a call: call id + event name length `u16 LE` + name +
    /// payload.
    Emit = 10,
    /// daemon → worker: the call id whose caller gave up.
    Cancel = 11,
    /// daemon → worker, answering an [`Kind::Emit`]: call id + `0` (published) or `1`
    /// (dropped).
    EmitAck = 12,
    /// worker → daemon, just before a result: call id + CPU µs `u64 LE` + RSS bytes
    /// `u64 LE` of the worker (informational, see `worker::usage`).
    Usage = 13,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Configure,
            3 => Kind::Execute,
            4 => Kind::Result,
            5 => Kind::Failed,
            6 => Kind::ExecuteShared,
            7 => Kind::ResultShared,
            8 => Kind::Log,
            9 => Kind::Progress,
            10 => Kind::Emit,
            11 => Kind::Cancel,
            12 => Kind::EmitAck,
            13 => Kind::Usage,
            _ => return None,
        })
    }
}

/// What a worker says about its plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Plugin description.
    pub description: String,
    /// ABI version the plugin declared.
    pub abi_version: u32,
    /// Whether it is a service plugin.
    pub service: bool,
    /// What the worker runs under (absent when it was started without a sandbox).
    #[serde(default)]
    pub sandbox: Option<super::sandbox::SandboxReport>,
    /// Whether the worker mapped the shared payload region.
    #[serde(default)]
    pub shared: bool,
}

impl Hello {
    /// What the plugin declared, for the library's description.
    pub fn described(&self) -> dynplug_loader::library::Described {
        dynplug_loader::library::Described {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            abi_version: self.abi_version,
            service: self.service,
        }
    }

    /// The body of a [`Kind::Hello`] frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = PROTOCOL_VERSION.to_le_bytes().to_vec();
        body.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        body
    }

    /// Decodes the body of a [`Kind::Hello`] frame, checking the protocol version.
    pub fn decode(body: &[u8]) -> Result<Hello, String> {
        let Some((version, json)) = body.split_first_chunk::<4>() else {
            return Err("short hello".into());
        };
        let version = u32::from_le_bytes(*version);
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "worker speaks protocol {version}, expected {PROTOCOL_VERSION}"
            ));
        }
        serde_json::from_slice(json).map_err(|e| format!("bad hello: {e}"))
    }
}

/// A fresh, unpredictable call id.
pub fn new_call_id() -> u64 {
    let mut id = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != 8 {
        // No entropy source: still unique within this process, if predictable.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        return NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    u64::from_ne_bytes(id)
}

/// The start of a request frame whose payload of `payload_len` bytes follows: frame
/// header and call id (so a large payload can be written without being copied).
pub fn request_head(kind: Kind, call: u64, payload_len: usize) -> Vec<u8> {
    let len = u32::try_from(1 + REQUEST_HEAD + payload_len).unwrap_or(u32::MAX);
    let mut head = Vec::with_capacity(5 + REQUEST_HEAD);
    head.extend_from_slice(&len.to_le_bytes());
    head.push(kind as u8);
    head.extend_from_slice(&call.to_le_bytes());
    head
}

/// Splits a request body into call id and payload.
pub fn split_request(body: &[u8]) -> Option<(u64, &[u8])> {
    let (id, payload) = body.split_first_chunk::<REQUEST_HEAD>()?;
    Some((u64::from_le_bytes(*id), payload))
}

/// The body of a result frame.
pub fn result_body(call: u64, status: u8, text: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(RESULT_HEAD + text.len());
    body.extend_from_slice(&call.to_le_bytes());
    body.push(status);
    body.extend_from_slice(text);
    body
}

/// What a plugin asked of the host during a call, as carried by a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCall<'a> {
    /// A log line at an ABI level.
    Log(u32, &'a [u8]),
    /// Progress and status text.
    Progress(f64, &'a [u8]),
    /// An event name and payload.
    Emit(&'a [u8], &'a [u8]),
}

impl HostCall<'_> {
    /// The frame for this host call during call `call`.
    pub fn frame(&self, call: u64) -> Vec<u8> {
        let mut body = call.to_le_bytes().to_vec();
        let kind = match self {
            HostCall::Log(level, text) => {
                body.push(u8::try_from(*level).unwrap_or(u8::MAX));
                body.extend_from_slice(text);
                Kind::Log
            }
            HostCall::Progress(fraction, text) => {
                body.extend_from_slice(&fraction.to_le_bytes());
                body.extend_from_slice(text);
                Kind::Progress
            }
            HostCall::Emit(event, payload) => {
                let n = u16::try_from(event.len()).unwrap_or(u16::MAX);
                body.extend_from_slice(&n.to_le_bytes());
                body.extend_from_slice(&event[..usize::from(n).min(event.len())]);
                body.extend_from_slice(payload);
                Kind::Emit
            }
        };
        encode(kind, &body)
    }

    /// Decodes the body of a host-call frame of `kind` into call id and call.
    pub fn decode(kind: Kind, body: &[u8]) -> Option<(u64, HostCall<'_>)> {
        let (call, rest) = split_request(body)?;
        let host_call = match kind {
            Kind::Log => {
                let (level, text) = rest.split_first()?;
                HostCall::Log(u32::from(*level), text)
            }
            Kind::Progress => {
                let (fraction, text) = rest.split_first_chunk::<8>()?;
                HostCall::Progress(f64::from_le_bytes(*fraction), text)
            }
            Kind::Emit => {
                let (n, rest) = rest.split_first_chunk::<2>()?;
                let n = usize::from(u16::from_le_bytes(*n));
                if rest.len() < n {
                    return None;
                }
                let (event, payload) = rest.split_at(n);
                HostCall::Emit(event, payload)
            }
            _ => return None,
        };
        Some((call, host_call))
    }
}

/// The [`Kind::EmitAck`] frame answering an event of call `call`.
pub fn emit_ack(call: u64, published: bool) -> Vec<u8> {
    let mut body = call.to_le_bytes().to_vec();
    body.push(u8::from(!published));
    encode(Kind::EmitAck, &body)
}

/// Decodes the body of a [`Kind::EmitAck`] frame into call id and whether the event
/// was published.
pub fn split_emit_ack(body: &[u8]) -> Option<(u64, bool)> {
    match split_request(body)? {
        (call, [status]) => Some((call, *status == 0)),
        _ => None,
    }
}

/// Splits a result body into call id, status and text.
pub fn split_result(body: &[u8]) -> Option<(u64, u8, &[u8])> {
    let (id, rest) = body.split_first_chunk::<REQUEST_HEAD>()?;
    let (status, text) = rest.split_first()?;
    Some((u64::from_le_bytes(*id), *status, text))
}

/// Encodes a frame.
pub fn encode(kind: Kind, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}

/// Splits a frame header (the 5 bytes after which the body follows).
pub fn header(head: [u8; 5]) -> std::io::Result<(Kind, usize)> {
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    if len == 0 || len > MAX_FRAME {
        return Err(bad(format!("frame length {len} out of range")));
    }
    let kind =
        Kind::from_u8(head[4]).ok_or_else(|| bad(format!("unknown frame kind {}", head[4])))?;
    Ok((kind, len - 1))
}

/// Reads one frame (blocking), refusing a body longer than `limit` before reading it.
pub fn read_frame(r: &mut impl Read, limit: usize) -> std::io::Result<(Kind, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    let (kind, len) = header(head)?;
    if len > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, more than {limit}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((kind, body))
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, kind: Kind, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode(kind, body))?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_and_bodies() {
        assert_ne!(new_call_id(), new_call_id());
        let mut frame = request_head(Kind::Execute, 7, 2);
        frame.extend_from_slice(b"in");
        let (kind, body) = read_frame(&mut &frame[..], MAX_FRAME).unwrap();
        assert_eq!(kind, Kind::Execute);
        assert_eq!(split_request(&body), Some((7, &b"in"[..])));
        assert_eq!(split_request(b"short"), None);
        let body = result_body(9, RESULT_PANIC, b"boom");
        assert_eq!(split_result(&body), Some((9, RESULT_PANIC, &b"boom"[..])));
        assert_eq!(split_result(&body[..8]), None);
    }

    #[test]
    fn host_calls_round_trip_and_malformed_ones_are_refused() {
        for call in [
            HostCall::Log(3, b"line"),
            HostCall::Progress(0.5, b"half"),
            HostCall::Emit(b"ev", b"{}"),
        ] {
            let frame = call.frame(42);
            let (kind, body) = read_frame(&mut &frame[..], MAX_FRAME).unwrap();
            assert_eq!(HostCall::decode(kind, &body), Some((42, call)));
        }
        assert_eq!(HostCall::decode(Kind::Progress, &[0; 12]), None);
        assert_eq!(
            HostCall::decode(Kind::Emit, &[0, 0, 0, 0, 0, 0, 0, 0, 9, 0]),
            None
        );
        assert_eq!(HostCall::decode(Kind::Result, &[0; 12]), None);
    }

    #[test]
    fn emit_acks_round_trip() {
        for published in [true, false] {
            let frame = emit_ack(5, published);
            let (kind, body) = read_frame(&mut &frame[..], MAX_FRAME).unwrap();
            assert_eq!(kind, Kind::EmitAck);
            assert_eq!(split_emit_ack(&body), Some((5, published)));
        }
        assert_eq!(split_emit_ack(&[0; 10]), None);
        assert_eq!(split_emit_ack(&[0; 8]), None);
    }

    #[test]
    fn hello_round_trip_and_version() {
        let hello = Hello {
            name: "x".into(),
            version: "1.0.0".into(),
            description: String::new(),
            abi_version: 1,
            service: false,
            sandbox: None,
            shared: false,
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let mut old = 1u32.to_le_bytes().to_vec();
        old.extend_from_slice(b"{}");
        assert!(Hello::decode(&old).unwrap_err().contains("protocol 1"));
        let mut two = 2u32.to_le_bytes().to_vec();
        two.extend_from_slice(b"{}");
        assert!(Hello::decode(&two).unwrap_err().contains("protocol 2"));
        assert!(Hello::decode(b"ab").is_err());
    }

    #[test]
    fn round_trip_and_garbage() {
        let bytes = encode(Kind::Execute, b"hello");
        let (kind, body) = read_frame(&mut &bytes[..], MAX_FRAME).unwrap();
        assert_eq!((kind, body.as_slice()), (Kind::Execute, &b"hello"[..]));
        assert!(
            read_frame(&mut &[0u8, 0, 0, 0, 1][..], MAX_FRAME).is_err(),
            "zero length"
        );
        assert!(
            read_frame(&mut &[2u8, 0, 0, 0, 99, 0][..], MAX_FRAME).is_err(),
            "unknown kind"
        );
        assert!(
            read_frame(&mut &[255u8, 255, 255, 255, 3][..], MAX_FRAME).is_err(),
            "too large"
        );
        assert!(
            read_frame(&mut &[9u8, 0, 0, 0, 3, 1][..], MAX_FRAME).is_err(),
            "truncated"
        );
        assert!(
            read_frame(&mut &encode(Kind::Execute, b"hello")[..], 3).is_err(),
            "over the limit"
        );
    }
}
