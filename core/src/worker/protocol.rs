//! The wire protocol between the daemon and a plugin worker process.
//!
//! Frames on a private socketpair: `len: u32 LE` (of what follows), `kind: u8`, body.
//! The worker opens with [`Kind::Hello`] (protocol version + the plugin's metadata as
//! JSON), then answers each request with exactly one [`Kind::Result`]. Nothing else
//! shares the channel, so whatever a plugin prints on stdout or stderr cannot corrupt it.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this protocol; a worker of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
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
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Configure,
            3 => Kind::Execute,
            4 => Kind::Result,
            5 => Kind::Failed,
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

/// Reads one frame (blocking).
pub fn read_frame(r: &mut impl Read) -> std::io::Result<(Kind, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    let (kind, len) = header(head)?;
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
    fn round_trip_and_garbage() {
        let bytes = encode(Kind::Execute, b"hello");
        let (kind, body) = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!((kind, body.as_slice()), (Kind::Execute, &b"hello"[..]));
        assert!(
            read_frame(&mut &[0u8, 0, 0, 0, 1][..]).is_err(),
            "zero length"
        );
        assert!(
            read_frame(&mut &[2u8, 0, 0, 0, 99, 0][..]).is_err(),
            "unknown kind"
        );
        assert!(
            read_frame(&mut &[255u8, 255, 255, 255, 3][..]).is_err(),
            "too large"
        );
        assert!(
            read_frame(&mut &[9u8, 0, 0, 0, 3, 1][..]).is_err(),
            "truncated"
        );
    }
}
