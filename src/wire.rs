//! The worker wire protocol's frame codec (docs/PROTOCOL.md).
//!
//! A frame is a 12-byte little-endian header (`length`, `stream`, `kind`, `flags`, reserved)
//! followed by `length` payload bytes. Decoding checks the length against [`MAX_PAYLOAD`] before
//! anything is buffered, so a misbehaving worker cannot make the runtime allocate.

use std::fmt;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Credit each stream direction starts with.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Largest request-body chunk the runtime puts in one frame.
pub const MAX_BODY_CHUNK: usize = 64 * 1024;
/// `flags` bit: the last frame of this direction of the stream.
pub const FLAG_END: u8 = 0x01;

/// Frame kinds. `0x0_` go from the runtime to the worker, `0x8_` the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Load the function and run its initializer.
    Init,
    /// Opens a stream: the request head as JSON.
    RequestHead,
    /// Request body bytes.
    RequestBody,
    /// The client went away or the deadline passed.
    Cancel,
    /// Runtime grants more response-body credit.
    WindowToWorker,
    /// The worker's bootstrap is running.
    Ready,
    /// The initializer succeeded.
    InitDone,
    /// Loading or initializing failed.
    InitError,
    /// Response status and headers as JSON.
    ResponseHead,
    /// Response body bytes.
    ResponseBody,
    /// The invocation failed (terminal).
    ResponseError,
    /// Worker grants more request-body credit.
    WindowToRuntime,
}

impl Kind {
    /// The byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Kind::Init => 0x01,
            Kind::RequestHead => 0x02,
            Kind::RequestBody => 0x03,
            Kind::Cancel => 0x04,
            Kind::WindowToWorker => 0x05,
            Kind::Ready => 0x81,
            Kind::InitDone => 0x82,
            Kind::InitError => 0x83,
            Kind::ResponseHead => 0x84,
            Kind::ResponseBody => 0x85,
            Kind::ResponseError => 0x86,
            Kind::WindowToRuntime => 0x87,
        }
    }

    /// Parses a kind the *worker* may send; runtime-bound kinds are the only ones accepted.
    pub fn from_worker(code: u8) -> Option<Kind> {
        Some(match code {
            0x81 => Kind::Ready,
            0x82 => Kind::InitDone,
            0x83 => Kind::InitError,
            0x84 => Kind::ResponseHead,
            0x85 => Kind::ResponseBody,
            0x86 => Kind::ResponseError,
            0x87 => Kind::WindowToRuntime,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: usize,
    /// Stream id, 0 for worker-level frames.
    pub stream: u32,
    /// What the frame is.
    pub kind: Kind,
    /// Flag bits ([`FLAG_END`]).
    pub flags: u8,
}

impl Header {
    /// Whether the END flag is set.
    pub fn is_end(&self) -> bool {
        self.flags & FLAG_END != 0
    }
}

/// A worker broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The header announced more than [`MAX_PAYLOAD`] bytes.
    TooLarge {
        /// Announced length.
        len: usize,
    },
    /// The kind byte is not one a worker may send.
    UnknownKind(u8),
    /// Flag bits other than END, or non-zero reserved bytes.
    BadFlags(u8),
    /// A WINDOW payload that is not a u32.
    BadWindow(usize),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len } => {
                write!(
                    f,
                    "frame payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                )
            }
            WireError::UnknownKind(code) => write!(f, "unknown frame kind 0x{code:02x}"),
            WireError::BadFlags(flags) => write!(f, "invalid flags 0x{flags:02x}"),
            WireError::BadWindow(len) => {
                write!(f, "window frame payload must be 4 bytes, got {len}")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// Appends a frame header to `out`.
pub fn put_header(out: &mut Vec<u8>, kind: Kind, flags: u8, stream: u32, len: usize) {
    debug_assert!(len <= MAX_PAYLOAD, "frame payload too large: {len}");
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&[kind.code(), flags, 0, 0]);
}

/// Appends a whole frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, kind: Kind, flags: u8, stream: u32, payload: &[u8]) {
    put_header(out, kind, flags, stream, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a WINDOW frame granting `credit` bytes on `stream`.
pub fn put_window(out: &mut Vec<u8>, stream: u32, credit: u32) {
    put_frame(out, Kind::WindowToWorker, 0, stream, &credit.to_le_bytes());
}

/// Decodes a frame header sent by a worker from the start of `buf`. `Ok(None)` means fewer than
/// [`HEADER_LEN`] bytes are available.
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    let Some(raw) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let len = usize::try_from(word(0)).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLarge { len });
    }
    let kind = Kind::from_worker(raw[8]).ok_or(WireError::UnknownKind(raw[8]))?;
    let flags = raw[9];
    if flags & !FLAG_END != 0 || raw[10] != 0 || raw[11] != 0 {
        return Err(WireError::BadFlags(flags));
    }
    Ok(Some(Header {
        len,
        stream: word(4),
        kind,
        flags,
    }))
}

/// Parses the credit carried by a WINDOW frame.
pub fn window_credit(payload: &[u8]) -> Result<u32, WireError> {
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| WireError::BadWindow(payload.len()))?;
    Ok(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&stream.to_le_bytes());
        out.extend_from_slice(&[kind, flags, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut out = Vec::new();
        put_frame(&mut out, Kind::RequestBody, FLAG_END, 7, b"abc");
        assert_eq!(
            out,
            [3, 0, 0, 0, 7, 0, 0, 0, 0x03, 0x01, 0, 0, b'a', b'b', b'c']
        );
    }

    #[test]
    fn decodes_worker_frames() {
        let frame = worker_frame(0x85, FLAG_END, 0x0102_0304, b"hi");
        let head = decode_header(&frame).unwrap().unwrap();
        assert_eq!(head.kind, Kind::ResponseBody);
        assert_eq!(head.stream, 0x0102_0304);
        assert_eq!(head.len, 2);
        assert!(head.is_end());
    }

    #[test]
    fn needs_a_whole_header() {
        let frame = worker_frame(0x81, 0, 0, b"");
        for cut in 0..HEADER_LEN {
            assert_eq!(decode_header(&frame[..cut]), Ok(None));
        }
    }

    #[test]
    fn rejects_oversized_frames_before_reading_them() {
        let mut frame = worker_frame(0x85, 0, 1, b"");
        frame[..4].copy_from_slice(&u32::try_from(MAX_PAYLOAD + 1).unwrap().to_le_bytes());
        assert_eq!(
            decode_header(&frame),
            Err(WireError::TooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        frame[..4].copy_from_slice(&u32::try_from(MAX_PAYLOAD).unwrap().to_le_bytes());
        assert!(decode_header(&frame).unwrap().is_some());
    }

    #[test]
    fn rejects_runtime_kinds_and_unknown_kinds_from_workers() {
        for code in [0x00, 0x01, 0x02, 0x05, 0x80, 0x88, 0xff] {
            let frame = worker_frame(code, 0, 1, b"");
            assert_eq!(decode_header(&frame), Err(WireError::UnknownKind(code)));
        }
    }

    #[test]
    fn rejects_unknown_flags_and_reserved_bytes() {
        let frame = worker_frame(0x85, 0x02, 1, b"");
        assert_eq!(decode_header(&frame), Err(WireError::BadFlags(0x02)));
        let mut frame = worker_frame(0x85, 0, 1, b"");
        frame[11] = 1;
        assert!(decode_header(&frame).is_err());
    }

    #[test]
    fn window_payload_is_exactly_four_bytes() {
        assert_eq!(window_credit(&65536u32.to_le_bytes()), Ok(65536));
        assert_eq!(window_credit(b"abc"), Err(WireError::BadWindow(3)));
        let mut out = Vec::new();
        put_window(&mut out, 9, 1024);
        assert_eq!(out.len(), HEADER_LEN + 4);
        assert_eq!(out[8], 0x05);
    }

    #[test]
    fn every_worker_kind_round_trips_through_its_code() {
        for kind in [
            Kind::Ready,
            Kind::InitDone,
            Kind::InitError,
            Kind::ResponseHead,
            Kind::ResponseBody,
            Kind::ResponseError,
            Kind::WindowToRuntime,
        ] {
            assert_eq!(Kind::from_worker(kind.code()), Some(kind));
        }
    }
}
