//! The worker wire protocol's frame codec (docs/PROTOCOL.md), for both ends of the pipes.
//!
//! A frame is a 12-byte little-endian header (`length`, `stream`, `kind`, `flags`, reserved)
//! followed by `length` payload bytes. The runtime encodes what it sends with the `put_*`
//! functions and decodes what workers send with [`decode_frame`], straight from its read buffer;
//! a worker written in Rust (the `process` runtime's, examples/native_worker.rs) encodes the
//! other kinds and decodes with a [`FrameDecoder`]. Decoding checks the length against
//! [`MAX_PAYLOAD`] before anything is buffered, so a misbehaving peer cannot make the reader
//! allocate.
//!
//! Structured payloads have types: [`Init`], [`RequestHead`], [`ResponseHead`],
//! [`ErrorPayload`], [`Ready`], CANCEL's reason ([`put_cancel`], [`cancel_reason`]) and WINDOW's credit
//! ([`put_window`], [`put_worker_window`], [`window_credit`]).

use crate::http::HeaderList;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Credit each stream direction starts with when its receiver announced no other: INIT's
/// `responseWindow` (the runtime's grant) and INIT_DONE's `requestWindow` (the worker's).
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Most credit a receiver may announce as the window each stream starts with.
pub const MAX_WINDOW: u32 = 16 << 20;
/// Largest request-body chunk the runtime puts in one frame.
pub const MAX_BODY_CHUNK: usize = 64 * 1024;
/// `flags` bit: the last frame of this direction of the stream.
pub const FLAG_END: u8 = 0x01;

/// The flags of a frame that is (`true`) or is not the last of its direction.
pub fn end_flag(end: bool) -> u8 {
    if end { FLAG_END } else { 0 }
}

/// Which way a frame goes; each direction has kinds of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Runtime → worker (the worker's fd 3): kinds `0x01`–`0x06`.
    ToWorker,
    /// Worker → runtime (the worker's fd 4): kinds `0x81`–`0x87`.
    ToRuntime,
}

/// Frame kinds. `0x0_` go from the runtime to the worker, `0x8_` the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Load the function and run its initializer.
    Init,
    /// Opens a stream: the request head as JSON.
    RequestHead,
    /// Opens a stream: the request head in the compact encoding, to a worker that reads it.
    CompactHead,
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
    /// Response status and headers in the compact encoding.
    CompactResponseHead,
    /// Response body bytes.
    ResponseBody,
    /// The invocation failed (terminal).
    ResponseError,
    /// Worker grants more request-body credit.
    WindowToRuntime,
}

impl Kind {
    /// Every kind, the runtime's first.
    pub const ALL: [Kind; 14] = [
        Kind::Init,
        Kind::RequestHead,
        Kind::CompactHead,
        Kind::RequestBody,
        Kind::Cancel,
        Kind::WindowToWorker,
        Kind::Ready,
        Kind::InitDone,
        Kind::InitError,
        Kind::ResponseHead,
        Kind::ResponseBody,
        Kind::ResponseError,
        Kind::WindowToRuntime,
        Kind::CompactResponseHead,
    ];

    /// The byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Kind::Init => 0x01,
            Kind::RequestHead => 0x02,
            Kind::RequestBody => 0x03,
            Kind::Cancel => 0x04,
            Kind::WindowToWorker => 0x05,
            Kind::CompactHead => 0x06,
            Kind::Ready => 0x81,
            Kind::InitDone => 0x82,
            Kind::InitError => 0x83,
            Kind::ResponseHead => 0x84,
            Kind::ResponseBody => 0x85,
            Kind::ResponseError => 0x86,
            Kind::WindowToRuntime => 0x87,
            Kind::CompactResponseHead => 0x88,
        }
    }

    /// The kind with wire byte `code`, in either direction.
    pub fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            0x01 => Kind::Init,
            0x02 => Kind::RequestHead,
            0x03 => Kind::RequestBody,
            0x04 => Kind::Cancel,
            0x05 => Kind::WindowToWorker,
            0x06 => Kind::CompactHead,
            0x81 => Kind::Ready,
            0x82 => Kind::InitDone,
            0x83 => Kind::InitError,
            0x84 => Kind::ResponseHead,
            0x85 => Kind::ResponseBody,
            0x86 => Kind::ResponseError,
            0x87 => Kind::WindowToRuntime,
            0x88 => Kind::CompactResponseHead,
            _ => return None,
        })
    }

    /// The kind with wire byte `code` if frames going `dir` may carry it.
    pub fn decode(dir: Direction, code: u8) -> Option<Kind> {
        Kind::from_code(code).filter(|kind| kind.direction() == dir)
    }

    /// Parses a kind the *worker* may send; runtime-bound kinds are the only ones accepted.
    pub fn from_worker(code: u8) -> Option<Kind> {
        Kind::decode(Direction::ToRuntime, code)
    }

    /// Parses a kind the *runtime* may send; worker-bound kinds are the only ones accepted.
    pub fn from_runtime(code: u8) -> Option<Kind> {
        Kind::decode(Direction::ToWorker, code)
    }

    /// Which way frames of this kind go.
    pub fn direction(self) -> Direction {
        if self.code() & 0x80 == 0 {
            Direction::ToWorker
        } else {
            Direction::ToRuntime
        }
    }

    /// The kind's name in docs/PROTOCOL.md (`WINDOW` in both directions).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Init => "INIT",
            Kind::RequestHead => "REQUEST_HEAD",
            Kind::CompactHead => "COMPACT_HEAD",
            Kind::RequestBody => "REQUEST_BODY",
            Kind::Cancel => "CANCEL",
            Kind::WindowToWorker | Kind::WindowToRuntime => "WINDOW",
            Kind::Ready => "READY",
            Kind::InitDone => "INIT_DONE",
            Kind::InitError => "INIT_ERROR",
            Kind::ResponseHead => "RESPONSE_HEAD",
            Kind::CompactResponseHead => "COMPACT_RESPONSE_HEAD",
            Kind::ResponseBody => "RESPONSE_BODY",
            Kind::ResponseError => "RESPONSE_ERROR",
        }
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

/// A whole frame whose payload is borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header; `header.len == payload.len()`.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame takes on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Whether the END flag is set.
    pub fn is_end(&self) -> bool {
        self.header.is_end()
    }
}

/// A peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The header announced more than [`MAX_PAYLOAD`] bytes.
    TooLarge {
        /// Announced length.
        len: usize,
    },
    /// The kind byte is not one that may travel in this direction.
    UnknownKind(u8),
    /// Flag bits other than END, or non-zero reserved bytes.
    BadFlags(u8),
    /// A WINDOW payload that is not a u32.
    BadWindow(usize),
    /// The byte stream ended inside a frame.
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
    },
    /// A structured payload that does not parse, or cannot be encoded.
    BadPayload {
        /// The frame's kind.
        kind: Kind,
        /// What is wrong with it.
        reason: String,
    },
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
            WireError::Truncated { buffered } => write!(
                f,
                "the stream ended inside a frame ({buffered} bytes of it arrived)"
            ),
            WireError::BadPayload { kind, reason } => {
                write!(f, "invalid {} payload: {reason}", kind.name())
            }
        }
    }
}

impl std::error::Error for WireError {}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends a frame header to `out`.
pub fn put_header(out: &mut Vec<u8>, kind: Kind, flags: u8, stream: u32, len: usize) {
    debug_assert!(len <= MAX_PAYLOAD, "frame payload too large: {len}");
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&[kind.code(), flags, 0, 0]);
}

/// Appends a whole frame to `out`. The caller keeps `payload` within [`MAX_PAYLOAD`] (body
/// chunks are at most [`MAX_BODY_CHUNK`]).
pub fn put_frame(out: &mut Vec<u8>, kind: Kind, flags: u8, stream: u32, payload: &[u8]) {
    put_header(out, kind, flags, stream, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a frame whose payload is `value` as JSON, serialized in place. On an error (the
/// JSON is over [`MAX_PAYLOAD`], or does not serialize) `out` is left as it was.
pub fn put_json<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    kind: Kind,
    flags: u8,
    stream: u32,
    value: &T,
) -> Result<(), WireError> {
    let start = out.len();
    put_header(out, kind, flags, stream, 0);
    if let Err(err) = serde_json::to_writer(&mut *out, value) {
        out.truncate(start);
        return Err(WireError::BadPayload {
            kind,
            reason: err.to_string(),
        });
    }
    seal_frame(out, start)
}

/// Writes the length of the frame that starts at `start` of `out` (its header put with length
/// 0, its payload after it) into its header; a payload over [`MAX_PAYLOAD`] is taken back off
/// `out` instead.
fn seal_frame(out: &mut Vec<u8>, start: usize) -> Result<(), WireError> {
    let len = out.len() - start - HEADER_LEN;
    match u32::try_from(len) {
        Ok(len32) if len <= MAX_PAYLOAD => {
            out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(WireError::TooLarge { len })
        }
    }
}

/// Appends a WINDOW frame from the runtime granting `credit` response-body bytes on `stream`.
pub fn put_window(out: &mut Vec<u8>, stream: u32, credit: u32) {
    put_frame(out, Kind::WindowToWorker, 0, stream, &credit.to_le_bytes());
}

/// Appends a WINDOW frame from a worker granting `credit` request-body bytes on `stream`.
pub fn put_worker_window(out: &mut Vec<u8>, stream: u32, credit: u32) {
    put_frame(out, Kind::WindowToRuntime, 0, stream, &credit.to_le_bytes());
}

/// Appends an INIT frame; `init` is docs/PROTOCOL.md's init object (an [`Init`]).
pub fn put_init<T: Serialize + ?Sized>(out: &mut Vec<u8>, init: &T) -> Result<(), WireError> {
    put_json(out, Kind::Init, 0, 0, init)
}

/// Appends a REQUEST_HEAD frame opening `stream`; `end` when the request has no body.
pub fn put_request_head<C: Serialize>(
    out: &mut Vec<u8>,
    stream: u32,
    end: bool,
    head: &RequestHead<'_, C>,
) -> Result<(), WireError> {
    put_json(out, Kind::RequestHead, end_flag(end), stream, head)
}

/// COMPACT_HEAD's first byte: an HTTP-trigger request (else an event).
pub const COMPACT_HTTP: u8 = 0x01;
/// COMPACT_HEAD's first byte: `deadline` is set.
pub const COMPACT_DEADLINE: u8 = 0x02;
/// COMPACT_HEAD's first byte: `timeoutMs` is set.
pub const COMPACT_TIMEOUT: u8 = 0x04;
/// COMPACT_HEAD's first byte: the head has baggage.
pub const COMPACT_BAGGAGE: u8 = 0x08;
/// COMPACT_HEAD's first byte: the head has a `clientIp`.
pub const COMPACT_CLIENT_IP: u8 = 0x10;
/// COMPACT_HEAD's first byte: every string in it is ASCII.
pub const COMPACT_ASCII: u8 = 0x20;

/// A request context with a compact encoding: what follows the head's own fields in a
/// COMPACT_HEAD (docs/PROTOCOL.md "compact head").
pub trait CompactContext {
    /// Writes the context's compact fields.
    fn put_compact(&self, out: &mut CompactWriter<'_>);
}

/// Appends a COMPACT_HEAD's fields, and notes whether all its strings are ASCII: a worker
/// can then decode them all at once, as one-byte chars, and cut each from the result.
#[derive(Debug)]
pub struct CompactWriter<'a> {
    out: &'a mut Vec<u8>,
    ascii: bool,
}

impl CompactWriter<'_> {
    /// A string: its UTF-8 length as a u32, then its bytes. Header values are latin1 chars,
    /// so their bytes are those chars' UTF-8, as in the JSON head.
    pub fn str(&mut self, value: &str) {
        self.ascii &= value.is_ascii();
        self.u32(compact_len(value.len()));
        self.out.extend_from_slice(value.as_bytes());
    }

    /// A little-endian u32.
    pub fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// A little-endian double: what JSON gives a JavaScript worker for any number, and exact
    /// for integers below 2^53.
    pub fn f64(&mut self, value: f64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A count or length as a u32. Anything larger cannot fit in a frame, whose payload is then
/// refused as too large.
fn compact_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Appends a COMPACT_HEAD frame opening `stream`: the head [`put_request_head`] sends as JSON,
/// in the compact encoding, for a worker whose READY asked for it (a worker spends less time
/// decoding it than parsing the JSON). `end` when the request has no body. On an error `out`
/// is left as it was.
pub fn put_compact_head<C: CompactContext>(
    out: &mut Vec<u8>,
    stream: u32,
    end: bool,
    head: &RequestHead<'_, C>,
) -> Result<(), WireError> {
    let kind = Kind::CompactHead;
    let mut flags = match head.kind.as_ref() {
        "event" => 0,
        "http" => COMPACT_HTTP,
        other => {
            return Err(WireError::BadPayload {
                kind,
                reason: format!("unknown request kind {other:?}"),
            });
        }
    };
    for (set, bit) in [
        (head.deadline.is_some(), COMPACT_DEADLINE),
        (head.timeout_ms.is_some(), COMPACT_TIMEOUT),
        (head.baggage.is_some(), COMPACT_BAGGAGE),
        (head.client_ip.is_some(), COMPACT_CLIENT_IP),
    ] {
        if set {
            flags |= bit;
        }
    }
    let start = out.len();
    put_header(out, kind, end_flag(end), stream, 0);
    let baggage = head.baggage.as_deref().unwrap_or_default();
    out.extend_from_slice(&[flags, 0, 0, 0]);
    let mut w = CompactWriter { out, ascii: true };
    w.u32(compact_len(head.headers.len()));
    w.u32(compact_len(baggage.len()));
    w.f64(head.deadline.unwrap_or(0) as f64);
    w.f64(head.timeout_ms.unwrap_or(0) as f64);
    w.str(&head.method);
    w.str(&head.url);
    w.str(&head.request_id);
    if let Some(ip) = &head.client_ip {
        w.str(ip);
    }
    let baggage = baggage.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in head.headers.iter().chain(baggage) {
        w.str(name);
        w.str(value);
    }
    head.context.put_compact(&mut w);
    if w.ascii {
        out[start + HEADER_LEN] |= COMPACT_ASCII;
    }
    seal_frame(out, start)
}

/// Appends a REQUEST_BODY frame (`data` within [`MAX_PAYLOAD`]).
pub fn put_request_body(out: &mut Vec<u8>, stream: u32, end: bool, data: &[u8]) {
    put_frame(out, Kind::RequestBody, end_flag(end), stream, data);
}

/// Appends the header of a REQUEST_BODY frame whose `len` payload bytes follow by another
/// route (spliced from the client's socket; `len` within [`MAX_PAYLOAD`]).
pub fn put_request_body_header(out: &mut Vec<u8>, stream: u32, end: bool, len: usize) {
    put_header(out, Kind::RequestBody, end_flag(end), stream, len);
}

/// Appends a CANCEL frame ending `stream` in both directions.
pub fn put_cancel(out: &mut Vec<u8>, stream: u32, reason: &str) -> Result<(), WireError> {
    put_json(out, Kind::Cancel, 0, stream, &CancelPayload { reason })
}

/// Appends a READY frame.
pub fn put_ready(out: &mut Vec<u8>, ready: &Ready) -> Result<(), WireError> {
    put_json(out, Kind::Ready, 0, 0, ready)
}

/// Appends an INIT_DONE frame (payload `{}`).
pub fn put_init_done(out: &mut Vec<u8>, done: &InitDone) -> Result<(), WireError> {
    put_json(out, Kind::InitDone, 0, 0, done)
}

/// Appends an INIT_ERROR frame.
pub fn put_init_error(out: &mut Vec<u8>, error: &ErrorPayload) -> Result<(), WireError> {
    put_json(out, Kind::InitError, 0, 0, error)
}

/// Appends a COMPACT_RESPONSE_HEAD frame; `end` when the response has no body. Every char
/// of the header names and values must be latin1 (one byte each).
pub fn put_compact_response_head(
    out: &mut Vec<u8>,
    stream: u32,
    end: bool,
    head: &ResponseHead,
) -> Result<(), WireError> {
    let kind = Kind::CompactResponseHead;
    let start = out.len();
    put_header(out, kind, end_flag(end), stream, 0);
    out.extend_from_slice(&head.status.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&compact_len(head.headers.len()).to_le_bytes());
    for (name, value) in &head.headers {
        for field in [name, value] {
            out.extend_from_slice(&compact_len(field.chars().count()).to_le_bytes());
        }
    }
    for field in head.headers.iter().flat_map(|(name, value)| [name, value]) {
        for c in field.chars() {
            let Ok(byte) = u8::try_from(u32::from(c)) else {
                out.truncate(start);
                return Err(WireError::BadPayload {
                    kind,
                    reason: format!("{c:?} in a header is not latin1"),
                });
            };
            out.push(byte);
        }
    }
    seal_frame(out, start)
}

/// Appends a RESPONSE_HEAD frame; `end` when the response has no body.
pub fn put_response_head(
    out: &mut Vec<u8>,
    stream: u32,
    end: bool,
    head: &ResponseHead,
) -> Result<(), WireError> {
    put_json(out, Kind::ResponseHead, end_flag(end), stream, head)
}

/// Appends a RESPONSE_BODY frame (`data` within [`MAX_PAYLOAD`]).
pub fn put_response_body(out: &mut Vec<u8>, stream: u32, end: bool, data: &[u8]) {
    put_frame(out, Kind::ResponseBody, end_flag(end), stream, data);
}

/// Appends a RESPONSE_ERROR frame, the stream's terminal frame.
pub fn put_response_error(
    out: &mut Vec<u8>,
    stream: u32,
    error: &ErrorPayload,
) -> Result<(), WireError> {
    put_json(out, Kind::ResponseError, 0, stream, error)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a frame header sent by a worker from the start of `buf`. `Ok(None)` means fewer than
/// [`HEADER_LEN`] bytes are available.
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    decode_header_from(Direction::ToRuntime, buf)
}

/// Decodes a frame header travelling `dir` from the start of `buf`. `Ok(None)` means fewer than
/// [`HEADER_LEN`] bytes are available; the length, kind, flags and reserved bytes are checked
/// as soon as they are.
pub fn decode_header_from(dir: Direction, buf: &[u8]) -> Result<Option<Header>, WireError> {
    let Some(raw) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let len = usize::try_from(word(0)).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLarge { len });
    }
    let kind = Kind::decode(dir, raw[8]).ok_or(WireError::UnknownKind(raw[8]))?;
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

/// Decodes the frame travelling `dir` at the start of `buf`, its payload borrowed from `buf`.
/// `Ok(None)` means the frame has not wholly arrived yet (the header, once whole, is checked
/// before that).
pub fn decode_frame(dir: Direction, buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some(header) = decode_header_from(dir, buf)? else {
        return Ok(None);
    };
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + header.len)
        .map(|payload| Frame { header, payload }))
}

/// Bytes [`FrameDecoder::read_from`] asks for in one read.
const READ_CHUNK: usize = MAX_BODY_CHUNK;

/// An incremental decoder for a blocking reader (a worker's fd 3, a test's end of fd 4): bytes
/// go in in pieces of any size, whole frames come out borrowed from its buffer. What it holds
/// is at most one unfinished frame plus the last piece given to it.
#[derive(Debug)]
pub struct FrameDecoder {
    dir: Direction,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` taken by frames already returned.
    taken: usize,
}

impl FrameDecoder {
    /// A decoder for frames travelling `dir`.
    pub fn new(dir: Direction) -> FrameDecoder {
        FrameDecoder {
            dir,
            buf: Vec::new(),
            taken: 0,
        }
    }

    /// Drops the bytes of frames already returned.
    fn compact(&mut self) {
        if self.taken > 0 {
            self.buf.drain(..self.taken);
            self.taken = 0;
        }
    }

    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Reads once from `input` into the buffer (retrying on `EINTR`); `Ok(0)` is end of file.
    pub fn read_from(&mut self, input: &mut impl Read) -> io::Result<usize> {
        self.compact();
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let read = loop {
            match input.read(&mut self.buf[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.buf.truncate(start + read.as_ref().map_or(0, |n| *n));
        read
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. An error stays: every later
    /// call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        let rest = self.buf.get(self.taken..).unwrap_or_default();
        let Some(frame) = decode_frame(self.dir, rest)? else {
            return Ok(None);
        };
        self.taken += frame.wire_len();
        Ok(Some(frame))
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.taken
    }

    /// Checks that the stream may end here: `Err` if a frame was cut short (or the rest is
    /// malformed).
    pub fn finish(&self) -> Result<(), WireError> {
        let rest = self.buf.get(self.taken..).unwrap_or_default();
        decode_frame(self.dir, rest)?;
        match rest.len() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }
}

/// Parses the credit carried by a WINDOW frame.
pub fn window_credit(payload: &[u8]) -> Result<u32, WireError> {
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| WireError::BadWindow(payload.len()))?;
    Ok(u32::from_le_bytes(bytes))
}

/// Parses the JSON payload of a `kind` frame.
pub fn parse_json<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(payload).map_err(|err| WireError::BadPayload {
        kind,
        reason: err.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Structured payloads

/// CANCEL's payload.
#[derive(Serialize, Deserialize)]
struct CancelPayload<S> {
    reason: S,
}

/// Parses the reason carried by a CANCEL frame.
pub fn cancel_reason(payload: &[u8]) -> Result<String, WireError> {
    parse_json::<CancelPayload<String>>(Kind::Cancel, payload).map(|cancel| cancel.reason)
}

/// REQUEST_HEAD's payload (docs/PROTOCOL.md "request head"). Decoding is lenient: a missing
/// field is empty (or `None`).
///
/// The strings and headers are [`Cow`]s so that the runtime serializes a head borrowed from its
/// request, and `C` is the context's type so that it serializes the context it builds (also
/// borrowed); a decoded head owns its fields and its context is a [`serde_json::Value`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHead<'a, C = serde_json::Value> {
    /// `event` or `http`.
    #[serde(default)]
    pub kind: Cow<'a, str>,
    /// The HTTP method.
    #[serde(default)]
    pub method: Cow<'a, str>,
    /// The request target.
    #[serde(default)]
    pub url: Cow<'a, str>,
    /// The client's headers in order, values latin1 (one char per byte).
    #[serde(default)]
    pub headers: Cow<'a, HeaderList>,
    /// Noslate metadata, when a caller provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<Cow<'a, [(String, String)]>>,
    /// The invocation's id.
    #[serde(default)]
    pub request_id: Cow<'a, str>,
    /// Absolute deadline, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The same budget as a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The client's address, when the runtime sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The FC context object.
    #[serde(default)]
    pub context: C,
}

impl RequestHead<'_> {
    /// Parses a REQUEST_HEAD payload.
    pub fn parse(payload: &[u8]) -> Result<RequestHead<'static>, WireError> {
        parse_json(Kind::RequestHead, payload)
    }
}

/// RESPONSE_HEAD's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The HTTP status.
    pub status: u16,
    /// Header pairs in order, values latin1.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// The fixed part of a COMPACT_RESPONSE_HEAD: status, reserved, header count.
const COMPACT_RESPONSE_FIXED: usize = 8;

impl ResponseHead {
    /// Parses a RESPONSE_HEAD payload.
    pub fn parse(payload: &[u8]) -> Result<ResponseHead, WireError> {
        parse_json(Kind::ResponseHead, payload)
    }

    /// Parses a COMPACT_RESPONSE_HEAD payload (docs/PROTOCOL.md "compact response head").
    pub fn parse_compact(payload: &[u8]) -> Result<ResponseHead, WireError> {
        let bad = |reason: String| WireError::BadPayload {
            kind: Kind::CompactResponseHead,
            reason,
        };
        let u16_at = |at: usize| u16::from_le_bytes([payload[at], payload[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        if payload.len() < COMPACT_RESPONSE_FIXED {
            return Err(bad(format!(
                "{} bytes, shorter than its fixed part",
                payload.len()
            )));
        }
        if u16_at(2) != 0 {
            return Err(bad("non-zero reserved bytes".to_owned()));
        }
        let status = u16_at(0);
        let count = u32_at(4) as usize;
        // Each pair takes 8 bytes of lengths: a count the payload cannot hold is refused
        // before anything is allocated for it.
        let table_end = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(COMPACT_RESPONSE_FIXED))
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| {
                bad(format!(
                    "{count} header pairs do not fit its {} bytes",
                    payload.len()
                ))
            })?;
        let mut headers = Vec::with_capacity(count);
        let mut at = table_end;
        for pair in 0..count {
            let lens = COMPACT_RESPONSE_FIXED + pair * 8;
            let mut field = |len: usize| {
                let bytes = payload
                    .get(at..at.saturating_add(len))
                    .ok_or_else(|| bad(format!("header pair {pair} runs past the end")))?;
                at += len;
                Ok(crate::http::headers::latin1(bytes))
            };
            let name = field(u32_at(lens) as usize)?;
            let value = field(u32_at(lens + 4) as usize)?;
            headers.push((name, value));
        }
        if at != payload.len() {
            return Err(bad(format!(
                "{} bytes left after the last header",
                payload.len() - at
            )));
        }
        Ok(ResponseHead { status, headers })
    }
}

/// The payload of INIT_ERROR and RESPONSE_ERROR (docs/PROTOCOL.md "error").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    /// What went wrong, for people.
    #[serde(default)]
    pub error_message: String,
    /// The error's class (`Error`, `Cancelled`, `ProcessExited`, ...).
    #[serde(default)]
    pub error_type: String,
    /// The stack, one line per entry.
    #[serde(default)]
    pub stack_trace: Vec<String>,
}

impl ErrorPayload {
    /// An error of `error_type` saying `message`, with `stack` lines.
    pub fn new(error_type: &str, message: &str, stack: Vec<String>) -> ErrorPayload {
        ErrorPayload {
            error_message: message.to_owned(),
            error_type: error_type.to_owned(),
            stack_trace: stack,
        }
    }

    /// Parses an error payload of a `kind` frame (INIT_ERROR or RESPONSE_ERROR).
    pub fn parse(kind: Kind, payload: &[u8]) -> Result<ErrorPayload, WireError> {
        parse_json(kind, payload)
    }

    /// Parses an error payload whatever its shape, for a reader that must turn any error a
    /// worker reports into an error of its own. A missing (or `null`) `errorType` or
    /// `errorMessage` is `default_type` or `default_message`; `stackTrace` may be an array (an
    /// entry that is not a string becomes its JSON text) or one string (split into lines), and
    /// anything else is no stack. A payload that does not parse as an error object at all is a
    /// `WorkerProtocolError` whose message quotes its first 200 bytes.
    pub fn parse_lenient(
        payload: &[u8],
        default_type: &str,
        default_message: &str,
    ) -> ErrorPayload {
        let Ok(error) = serde_json::from_slice::<LenientError>(payload) else {
            return ErrorPayload {
                error_message: format!(
                    "the worker reported an error that is not valid JSON: {}",
                    String::from_utf8_lossy(payload.get(..200).unwrap_or(payload))
                ),
                error_type: "WorkerProtocolError".to_owned(),
                stack_trace: Vec::new(),
            };
        };
        let stack_trace = match error.stack_trace {
            Some(serde_json::Value::Array(lines)) => lines
                .into_iter()
                .map(|line| match line {
                    serde_json::Value::String(line) => line,
                    other => other.to_string(),
                })
                .collect(),
            Some(serde_json::Value::String(text)) => text.lines().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        ErrorPayload {
            error_message: error
                .error_message
                .unwrap_or_else(|| default_message.to_owned()),
            error_type: error.error_type.unwrap_or_else(|| default_type.to_owned()),
            stack_trace,
        }
    }
}

/// How [`ErrorPayload::parse_lenient`] reads an error: every member optional, the stack any
/// JSON value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LenientError {
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    stack_trace: Option<serde_json::Value>,
}

/// INIT's payload (docs/PROTOCOL.md "init"). Like [`RequestHead`], it borrows what the runtime
/// sends and its context is of type `C`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Init<'a, C = serde_json::Value> {
    /// The function to load.
    pub function: InitFunction<'a>,
    /// The id of the `/initialize` call, or a generated one.
    pub request_id: Cow<'a, str>,
    /// The FC context object of the initializer.
    pub context: C,
    /// The initializer's budget.
    pub timeout_ms: u64,
    /// Response-body credit each stream starts with: the runtime's grant, which a worker may
    /// ignore and keep [`INITIAL_WINDOW`], since sending less than granted is always allowed.
    #[serde(default = "initial_window")]
    pub response_window: u32,
    /// Only for a spare process: what a cold worker would have had from its spawn
    /// (docs/PROTOCOL.md "Spare Node.js workers").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare: Option<SpareInit>,
}

/// INIT's `function` member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitFunction<'a> {
    /// The function's name.
    pub name: Cow<'a, str>,
    /// The handler, `null` when the profile names none.
    pub handler: Option<Cow<'a, str>>,
    /// The initializer, `null` when there is none.
    pub initializer: Option<Cow<'a, str>>,
    /// Where its code is.
    pub code_dir: Cow<'a, str>,
    /// Its memory limit in bytes.
    pub memory: u64,
    /// Its invocation timeout.
    pub timeout_ms: u64,
}

/// INIT's `spare` member: a spare's environment and working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareInit {
    /// The function's environment, in order.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: String,
}

impl Init<'_> {
    /// Parses an INIT payload.
    pub fn parse(payload: &[u8]) -> Result<Init<'static>, WireError> {
        parse_json(Kind::Init, payload)
    }
}

/// READY's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    /// The worker's process id.
    pub pid: u32,
    /// Its runtime (`nodejs`, `python3`, `process`, ...).
    #[serde(default)]
    pub runtime: String,
    /// The runtime's version.
    #[serde(default)]
    pub version: String,
    /// The protocol version, 1.
    #[serde(default)]
    pub protocol: u32,
    /// Set by a spare Node.js process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare: Option<bool>,
    /// Set by a worker forked from a warm seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked: Option<bool>,
    /// Set by a Node.js inspect worker: its debugger's WebSocket URL
    /// (`ws://127.0.0.1:PORT/ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspector: Option<String>,
    /// Set by a worker that reads COMPACT_HEAD frames: it is sent those instead of
    /// REQUEST_HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_head: Option<bool>,
}

fn initial_window() -> u32 {
    INITIAL_WINDOW
}

/// INIT_DONE's payload: empty, `{}`, or the request-body window the worker grants each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitDone {
    /// Request-body credit each stream starts with, 1 to [`MAX_WINDOW`] bytes.
    #[serde(default = "initial_window")]
    pub request_window: u32,
}

impl Default for InitDone {
    fn default() -> Self {
        InitDone {
            request_window: INITIAL_WINDOW,
        }
    }
}

impl InitDone {
    /// Parses an INIT_DONE payload: empty means the defaults; a window of 0 or over
    /// [`MAX_WINDOW`] is an error.
    pub fn parse(payload: &[u8]) -> Result<InitDone, WireError> {
        if payload.is_empty() {
            return Ok(InitDone::default());
        }
        let done: InitDone = parse_json(Kind::InitDone, payload)?;
        if done.request_window == 0 || done.request_window > MAX_WINDOW {
            return Err(WireError::BadPayload {
                kind: Kind::InitDone,
                reason: format!(
                    "requestWindow {} is outside 1..={MAX_WINDOW}",
                    done.request_window
                ),
            });
        }
        Ok(done)
    }
}

impl Ready {
    /// Parses a READY payload.
    pub fn parse(payload: &[u8]) -> Result<Ready, WireError> {
        parse_json(Kind::Ready, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::Rng;
    use serde_json::json;

    fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&stream.to_le_bytes());
        out.extend_from_slice(&[kind, flags, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    /// Decoded frames, owned, and how the stream ended.
    type Run = (Vec<(Header, Vec<u8>)>, Result<(), WireError>);

    /// The frames in `pieces`, fed one piece at a time.
    fn decode_pieces(dir: Direction, pieces: &[&[u8]]) -> Run {
        let mut decoder = FrameDecoder::new(dir);
        let mut frames = Vec::new();
        for piece in pieces {
            decoder.push(piece);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push((frame.header, frame.payload.to_vec())),
                    Ok(None) => break,
                    Err(err) => return (frames, Err(err)),
                }
            }
        }
        (frames, decoder.finish())
    }

    fn sample_head() -> RequestHead<'static> {
        RequestHead {
            kind: "http".into(),
            method: "POST".into(),
            url: "/invoke?x=1".into(),
            headers: Cow::Owned(HeaderList::from_iter([
                ("content-type", "application/json"),
                ("x-a", "caf\u{e9}"),
                ("x-a", "2"),
            ])),
            baggage: Some(vec![("k".into(), "v".into())].into()),
            request_id: "4e1c".into(),
            deadline: Some(1_764_371_234_567),
            timeout_ms: Some(3000),
            client_ip: Some("10.0.0.1".into()),
            context: json!({"requestId": "4e1c", "function": {"name": "f"}}),
        }
    }

    /// One frame of every kind, in both directions, built with the typed encoders.
    fn every_kind() -> (Vec<u8>, Vec<u8>) {
        let mut to_worker = Vec::new();
        put_init(
            &mut to_worker,
            &json!({"function": {"name": "f"}, "timeoutMs": 10}),
        )
        .unwrap();
        put_request_head(&mut to_worker, 1, false, &sample_head()).unwrap();
        put_request_body(&mut to_worker, 1, false, b"");
        put_request_body(&mut to_worker, 1, true, b"body bytes \x00\xff");
        put_cancel(&mut to_worker, 1, "deadline exceeded").unwrap();
        put_window(&mut to_worker, 1, 65536);
        let mut to_runtime = Vec::new();
        let ready = Ready {
            pid: 42,
            runtime: "native".into(),
            version: "1".into(),
            protocol: 1,
            spare: Some(true),
            forked: None,
            inspector: Some("ws://127.0.0.1:40000/id".into()),
            compact_head: Some(true),
        };
        put_ready(&mut to_runtime, &ready).unwrap();
        put_init_done(&mut to_runtime, &InitDone::default()).unwrap();
        let error = ErrorPayload::new("Error", "boom", vec!["Error: boom".into(), "  at x".into()]);
        put_init_error(&mut to_runtime, &error).unwrap();
        let head = ResponseHead {
            status: 201,
            headers: vec![("x-b".into(), "\u{ff}".into())],
        };
        put_response_head(&mut to_runtime, 7, false, &head).unwrap();
        put_response_body(&mut to_runtime, 7, false, &[0u8; 300]);
        put_response_body(&mut to_runtime, 7, true, b"");
        put_response_error(&mut to_runtime, 8, &error).unwrap();
        put_worker_window(&mut to_runtime, 7, 1024);
        put_compact_response_head(&mut to_runtime, 9, true, &head).unwrap();
        (to_worker, to_runtime)
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut out = Vec::new();
        put_frame(&mut out, Kind::RequestBody, FLAG_END, 7, b"abc");
        assert_eq!(
            out,
            [3, 0, 0, 0, 7, 0, 0, 0, 0x03, 0x01, 0, 0, b'a', b'b', b'c']
        );
        let mut typed = Vec::new();
        put_request_body(&mut typed, 7, true, b"abc");
        assert_eq!(typed, out);
    }

    #[test]
    fn every_kind_round_trips_in_its_direction_only() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
            assert_eq!(Kind::decode(kind.direction(), kind.code()), Some(kind));
            let other = match kind.direction() {
                Direction::ToWorker => Direction::ToRuntime,
                Direction::ToRuntime => Direction::ToWorker,
            };
            for flags in [0, FLAG_END] {
                let mut out = Vec::new();
                put_frame(&mut out, kind, flags, 0xdead_beef, b"payload");
                assert_eq!(out, raw_frame(kind.code(), flags, 0xdead_beef, b"payload"));
                let frame = decode_frame(kind.direction(), &out).unwrap().unwrap();
                assert_eq!(
                    frame.header,
                    Header {
                        len: 7,
                        stream: 0xdead_beef,
                        kind,
                        flags
                    }
                );
                assert_eq!(frame.payload, b"payload");
                assert_eq!(frame.wire_len(), out.len());
                assert_eq!(frame.is_end(), flags == FLAG_END);
                assert_eq!(
                    decode_frame(other, &out),
                    Err(WireError::UnknownKind(kind.code()))
                );
            }
        }
        assert_eq!(Kind::from_worker(0x85), Some(Kind::ResponseBody));
        assert_eq!(Kind::from_runtime(0x85), None);
        assert_eq!(Kind::from_runtime(0x03), Some(Kind::RequestBody));
    }

    #[test]
    fn typed_payloads_round_trip() {
        let (to_worker, to_runtime) = every_kind();
        let (frames, end) = decode_pieces(Direction::ToWorker, &[&to_worker]);
        assert_eq!(end, Ok(()));
        let kinds: Vec<Kind> = frames.iter().map(|(h, _)| h.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Init,
                Kind::RequestHead,
                Kind::RequestBody,
                Kind::RequestBody,
                Kind::Cancel,
                Kind::WindowToWorker
            ]
        );
        let init: serde_json::Value = parse_json(Kind::Init, &frames[0].1).unwrap();
        assert_eq!(init["function"]["name"], "f");
        assert_eq!((frames[0].0.stream, frames[0].0.flags), (0, 0));
        assert_eq!(RequestHead::parse(&frames[1].1), Ok(sample_head()));
        assert!(!frames[1].0.is_end() && frames[3].0.is_end());
        assert_eq!(frames[3].1, b"body bytes \x00\xff");
        assert_eq!(
            cancel_reason(&frames[4].1).as_deref(),
            Ok("deadline exceeded")
        );
        assert_eq!(window_credit(&frames[5].1), Ok(65536));

        let (frames, end) = decode_pieces(Direction::ToRuntime, &[&to_runtime]);
        assert_eq!(end, Ok(()));
        let ready = Ready::parse(&frames[0].1).unwrap();
        assert_eq!(
            (ready.pid, ready.spare, ready.forked),
            (42, Some(true), None)
        );
        assert_eq!(frames[1].0.kind, Kind::InitDone);
        assert_eq!(frames[1].1, br#"{"requestWindow":262144}"#);
        let error = ErrorPayload::parse(Kind::InitError, &frames[2].1).unwrap();
        assert_eq!(error.stack_trace, ["Error: boom", "  at x"]);
        let head = ResponseHead::parse(&frames[3].1).unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.headers, [("x-b".to_owned(), "\u{ff}".to_owned())]);
        assert_eq!(frames[4].1.len(), 300);
        assert!(frames[5].0.is_end() && frames[5].1.is_empty());
        assert_eq!(frames[6].0.kind, Kind::ResponseError);
        assert_eq!(
            ErrorPayload::parse(Kind::ResponseError, &frames[6].1),
            Ok(error)
        );
        assert_eq!(frames[7].0.kind, Kind::WindowToRuntime);
        assert_eq!(window_credit(&frames[7].1), Ok(1024));
        assert_eq!(frames[8].0.kind, Kind::CompactResponseHead);
        assert_eq!(ResponseHead::parse_compact(&frames[8].1), Ok(head));
    }

    #[test]
    fn json_payloads_have_the_documented_field_names() {
        let mut out = Vec::new();
        put_response_error(
            &mut out,
            3,
            &ErrorPayload::new("Cancelled", "gone", Vec::new()),
        )
        .unwrap();
        assert_eq!(
            &out[HEADER_LEN..],
            br#"{"errorMessage":"gone","errorType":"Cancelled","stackTrace":[]}"#
        );
        out.clear();
        put_cancel(&mut out, 3, "client closed the connection").unwrap();
        assert_eq!(
            &out[HEADER_LEN..],
            br#"{"reason":"client closed the connection"}"#
        );
        let head: serde_json::Value = serde_json::to_value(sample_head()).unwrap();
        for field in [
            "kind",
            "method",
            "url",
            "headers",
            "requestId",
            "deadline",
            "timeoutMs",
        ] {
            assert!(head.get(field).is_some(), "{field} missing from {head}");
        }
        assert_eq!(
            head["headers"][0],
            json!(["content-type", "application/json"])
        );
        assert_eq!(head["clientIp"], "10.0.0.1");
        // Lenient decoding: an empty head has empty fields.
        assert_eq!(RequestHead::parse(b"{}"), Ok(RequestHead::default()));
    }

    /// A context with one field, written as the runtime's is.
    #[derive(Default)]
    struct OneField<'a>(&'a str);

    impl CompactContext for OneField<'_> {
        fn put_compact(&self, out: &mut CompactWriter<'_>) {
            out.str(self.0);
        }
    }

    /// `value` as a compact string.
    fn compact_str(value: &str) -> Vec<u8> {
        let mut out = (value.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(value.as_bytes());
        out
    }

    #[test]
    fn a_compact_head_has_the_documented_layout() {
        let headers = HeaderList::from_iter([("x-a", "1")]);
        let baggage = vec![("b".to_owned(), "2".to_owned())];
        let head = RequestHead {
            kind: Cow::Borrowed("http"),
            method: Cow::Borrowed("GET"),
            url: Cow::Borrowed("/p?q"),
            headers: Cow::Borrowed(&headers),
            baggage: Some(Cow::Borrowed(&baggage)),
            request_id: Cow::Borrowed("r1"),
            deadline: Some(1_764_371_234_567),
            timeout_ms: Some(3000),
            client_ip: Some("10.0.0.1".to_owned()),
            context: OneField("ctx"),
        };
        let mut out = b"queued".to_vec();
        put_compact_head(&mut out, 5, true, &head).unwrap();
        let frame = decode_frame(Direction::ToWorker, &out[6..])
            .unwrap()
            .unwrap();
        assert_eq!(
            (frame.header.kind, frame.header.stream, frame.is_end()),
            (Kind::CompactHead, 5, true)
        );
        let mut expected = vec![
            COMPACT_HTTP
                | COMPACT_DEADLINE
                | COMPACT_TIMEOUT
                | COMPACT_BAGGAGE
                | COMPACT_CLIENT_IP
                | COMPACT_ASCII,
            0,
            0,
            0,
        ];
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&1_764_371_234_567f64.to_le_bytes());
        expected.extend_from_slice(&3000f64.to_le_bytes());
        for field in ["GET", "/p?q", "r1", "10.0.0.1", "x-a", "1", "b", "2", "ctx"] {
            expected.extend(compact_str(field));
        }
        assert_eq!(frame.payload, expected.as_slice());
    }

    #[test]
    fn a_compact_head_says_which_fields_are_absent_and_whether_all_is_ascii() {
        let headers = HeaderList::from_iter([("x-a", "caf\u{e9}")]);
        let head = RequestHead {
            kind: Cow::Borrowed("event"),
            method: Cow::Borrowed("POST"),
            url: Cow::Borrowed("/invoke"),
            headers: Cow::Borrowed(&headers),
            request_id: Cow::Borrowed("r1"),
            context: OneField(""),
            ..RequestHead::default()
        };
        let mut out = Vec::new();
        put_compact_head(&mut out, 1, false, &head).unwrap();
        let payload = &out[HEADER_LEN..];
        // An event with no deadline, timeout, baggage or client address; "café" is not ASCII,
        // and is sent as UTF-8, as in the JSON head.
        assert_eq!(payload[0], 0);
        assert_eq!(&payload[4..12], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&payload[12..28], &[0; 16]);
        let tail = [compact_str("café"), compact_str("")].concat();
        assert!(payload.ends_with(&tail));
    }

    #[test]
    fn a_compact_head_that_cannot_be_sent_leaves_the_buffer_as_it_was() {
        let big = "x".repeat(MAX_PAYLOAD);
        let mut head = RequestHead {
            kind: Cow::Borrowed("event"),
            context: OneField(&big),
            ..RequestHead::default()
        };
        let mut out = b"queued".to_vec();
        assert!(matches!(
            put_compact_head(&mut out, 1, false, &head),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(out, b"queued");
        head.context = OneField("");
        head.kind = Cow::Borrowed("cron");
        assert!(matches!(
            put_compact_head(&mut out, 1, false, &head),
            Err(WireError::BadPayload {
                kind: Kind::CompactHead,
                ..
            })
        ));
        assert_eq!(out, b"queued");
    }

    #[test]
    fn a_compact_response_head_has_the_documented_layout() {
        let head = ResponseHead {
            status: 404,
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("x-v".into(), "caf\u{e9}".into()),
            ],
        };
        let mut out = Vec::new();
        put_compact_response_head(&mut out, 3, true, &head).unwrap();
        let mut payload = vec![0x94, 0x01, 0, 0, 2, 0, 0, 0];
        for len in [12u32, 10, 3, 4] {
            payload.extend_from_slice(&len.to_le_bytes());
        }
        payload.extend_from_slice(b"Content-Typetext/plainx-vcaf\xe9");
        assert_eq!(out, raw_frame(0x88, FLAG_END, 3, &payload));
        let frame = decode_frame(Direction::ToRuntime, &out).unwrap().unwrap();
        assert_eq!(frame.header.kind, Kind::CompactResponseHead);
        assert_eq!(ResponseHead::parse_compact(frame.payload), Ok(head));
        // No fields at all.
        let bare = ResponseHead {
            status: 204,
            headers: Vec::new(),
        };
        out.clear();
        put_compact_response_head(&mut out, 3, true, &bare).unwrap();
        assert_eq!(
            out,
            raw_frame(0x88, FLAG_END, 3, &[0xcc, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(ResponseHead::parse_compact(&out[HEADER_LEN..]), Ok(bare));
    }

    #[test]
    fn a_compact_response_head_that_does_not_add_up_is_refused() {
        let mut good = Vec::new();
        let head = ResponseHead {
            status: 200,
            headers: vec![("a".into(), "bc".into())],
        };
        put_compact_response_head(&mut good, 1, false, &head).unwrap();
        let good = &good[HEADER_LEN..];
        let with = |at: usize, bytes: &[u8]| {
            let mut p = good.to_vec();
            p[at..at + bytes.len()].copy_from_slice(bytes);
            p
        };
        let longer = [good, b"x"].concat();
        for (payload, why) in [
            (&good[..7], "shorter than its fixed part"),
            (&with(2, &[1, 0])[..], "non-zero reserved bytes"),
            (&with(4, &u32::MAX.to_le_bytes())[..], "do not fit"),
            (&with(4, &2u32.to_le_bytes())[..], "do not fit"),
            (&with(12, &3u32.to_le_bytes())[..], "runs past the end"),
            (&with(8, &u32::MAX.to_le_bytes())[..], "runs past the end"),
            (&good[..good.len() - 1], "runs past the end"),
            (&longer[..], "1 bytes left after the last header"),
        ] {
            let err = ResponseHead::parse_compact(payload).unwrap_err();
            assert!(
                matches!(&err, WireError::BadPayload { kind: Kind::CompactResponseHead, reason } if reason.contains(why)),
                "{payload:?}: {err}"
            );
        }
        // A char past latin1 has no one-byte form: nothing is written.
        let wide = ResponseHead {
            status: 200,
            headers: vec![("x".into(), "\u{100}".into())],
        };
        let mut out = b"queued".to_vec();
        assert!(put_compact_response_head(&mut out, 1, false, &wide).is_err());
        assert_eq!(out, b"queued");
    }

    #[test]
    fn ready_says_whether_the_worker_reads_compact_heads() {
        let ready = Ready::parse(br#"{"pid":7,"protocol":1,"compactHead":true}"#).unwrap();
        assert_eq!(ready.compact_head, Some(true));
        assert_eq!(Ready::parse(br#"{"pid":7}"#).unwrap().compact_head, None);
    }

    #[test]
    fn a_borrowed_request_head_encodes_as_the_runtime_sends_it() {
        /// A context of a type of its own, as the runtime's is.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Ctx<'a> {
            request_id: &'a str,
        }
        let headers = HeaderList::from_iter([("x-a", "caf\u{e9}")]);
        let head = RequestHead {
            kind: Cow::Borrowed("event"),
            method: Cow::Borrowed("POST"),
            url: Cow::Borrowed("/invoke"),
            headers: Cow::Borrowed(&headers),
            baggage: None,
            request_id: Cow::Borrowed("r1"),
            deadline: Some(1_764_371_234_567),
            timeout_ms: Some(3000),
            client_ip: None,
            context: Ctx { request_id: "r1" },
        };
        let mut out = b"queued".to_vec();
        put_request_head(&mut out, 5, true, &head).unwrap();
        let frame = decode_frame(Direction::ToWorker, &out[6..])
            .unwrap()
            .unwrap();
        assert_eq!(
            (frame.header.kind, frame.header.stream),
            (Kind::RequestHead, 5)
        );
        assert!(frame.is_end());
        assert_eq!(
            std::str::from_utf8(frame.payload).unwrap(),
            r#"{"kind":"event","method":"POST","url":"/invoke","headers":[["x-a","café"]],"requestId":"r1","deadline":1764371234567,"timeoutMs":3000,"context":{"requestId":"r1"}}"#
        );
        let parsed = RequestHead::parse(frame.payload).unwrap();
        assert_eq!(parsed.headers.as_ref(), &headers);
        assert_eq!(parsed.context, json!({"requestId": "r1"}));
        assert_eq!(
            (parsed.method.as_ref(), parsed.deadline, parsed.baggage),
            ("POST", Some(1_764_371_234_567), None)
        );
    }

    #[test]
    fn init_encodes_the_documented_members_in_order() {
        let code_dir = String::from("/code/hello");
        let mut init = Init {
            function: InitFunction {
                name: Cow::Borrowed("hello"),
                handler: Some(Cow::Borrowed("index.handler")),
                initializer: None,
                code_dir: Cow::Borrowed(&code_dir),
                memory: 536_870_912,
                timeout_ms: 10_000,
            },
            request_id: Cow::Borrowed("i1"),
            context: json!({"requestId": "i1"}),
            timeout_ms: 3000,
            response_window: 1 << 20,
            spare: None,
        };
        let mut out = Vec::new();
        put_init(&mut out, &init).unwrap();
        let frame = decode_frame(Direction::ToWorker, &out).unwrap().unwrap();
        assert_eq!(
            (frame.header.kind, frame.header.stream, frame.header.flags),
            (Kind::Init, 0, 0)
        );
        assert_eq!(
            std::str::from_utf8(frame.payload).unwrap(),
            r#"{"function":{"name":"hello","handler":"index.handler","initializer":null,"codeDir":"/code/hello","memory":536870912,"timeoutMs":10000},"requestId":"i1","context":{"requestId":"i1"},"timeoutMs":3000,"responseWindow":1048576}"#
        );
        assert_eq!(Init::parse(frame.payload), Ok(init.clone()));

        init.spare = Some(SpareInit {
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/code/hello".into(),
        });
        out.clear();
        put_init(&mut out, &init).unwrap();
        let payload = &out[HEADER_LEN..];
        assert!(
            payload.ends_with(br#","spare":{"env":[["PATH","/bin"]],"cwd":"/code/hello"}}"#),
            "{}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(Init::parse(payload), Ok(init));
        assert!(Init::parse(b"{}").is_err(), "function is required");
    }

    #[test]
    fn a_lenient_error_parse_takes_any_shape() {
        let parse = |payload: &[u8]| ErrorPayload::parse_lenient(payload, "Dflt", "no message");
        let whole = br#"{"errorMessage":"boom","errorType":"TypeError","stackTrace":["a","b"]}"#;
        assert_eq!(
            parse(whole),
            ErrorPayload::new("TypeError", "boom", vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(whole),
            ErrorPayload::parse(Kind::ResponseError, whole).unwrap()
        );
        // Missing or null members take the defaults; empty ones stay empty.
        assert_eq!(
            parse(b"{}"),
            ErrorPayload::new("Dflt", "no message", Vec::new())
        );
        assert_eq!(
            parse(br#"{"errorType":null,"errorMessage":"","stackTrace":null}"#),
            ErrorPayload::new("Dflt", "", Vec::new())
        );
        // A stack as one string is split into lines; entries that are not strings are their
        // JSON; any other stack is none.
        assert_eq!(
            parse(br#"{"stackTrace":"Error: x\n  at f\n  at g"}"#).stack_trace,
            ["Error: x", "  at f", "  at g"]
        );
        assert_eq!(
            parse(br#"{"stackTrace":["a",1,{"b":null},null]}"#).stack_trace,
            ["a", "1", r#"{"b":null}"#, "null"]
        );
        assert!(parse(br#"{"stackTrace":7}"#).stack_trace.is_empty());
        assert_eq!(parse(br#"{"errorType":"E","extra":[1]}"#).error_type, "E");
    }

    #[test]
    fn a_lenient_error_parse_reports_garbage_quoting_its_start() {
        let parse = |payload: &[u8]| ErrorPayload::parse_lenient(payload, "Dflt", "no message");
        for garbage in [
            &b"not json"[..],
            b"",
            b"[1, 2",
            b"\"a string\"",
            b"42",
            br#"{"errorMessage": 5}"#,
            br#"{"errorType": ["x"]}"#,
        ] {
            let error = parse(garbage);
            assert_eq!(error.error_type, "WorkerProtocolError", "{garbage:?}");
            assert_eq!(
                error.error_message,
                format!(
                    "the worker reported an error that is not valid JSON: {}",
                    String::from_utf8_lossy(garbage)
                )
            );
            assert!(error.stack_trace.is_empty());
        }
        let mut long = b"x".repeat(199);
        long.extend_from_slice("é and more".as_bytes());
        let error = parse(&long);
        let quoted = error
            .error_message
            .strip_prefix("the worker reported an error that is not valid JSON: ")
            .unwrap();
        assert_eq!(quoted, format!("{}\u{fffd}", "x".repeat(199)));
    }

    #[test]
    fn decodes_a_byte_at_a_time() {
        for (dir, bytes) in [
            (Direction::ToWorker, every_kind().0),
            (Direction::ToRuntime, every_kind().1),
        ] {
            let whole = decode_pieces(dir, &[&bytes]);
            assert_eq!(whole.1, Ok(()));
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode_pieces(dir, &singles), whole);
        }
    }

    #[test]
    fn decodes_at_random_splits() {
        let (_, bytes) = every_kind();
        let whole = decode_pieces(Direction::ToRuntime, &[&bytes]);
        let mut rng = Rng::with_seed(0x5eed);
        for _ in 0..500 {
            let mut pieces = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let max = if rng.next_u64().is_multiple_of(4) {
                    400
                } else {
                    20
                };
                let n = usize::try_from(rng.next_u64() % max)
                    .unwrap()
                    .min(rest.len());
                let (piece, tail) = rest.split_at(n);
                pieces.push(piece);
                rest = tail;
            }
            assert_eq!(decode_pieces(Direction::ToRuntime, &pieces), whole);
        }
    }

    #[test]
    fn reads_from_a_reader_in_pieces() {
        /// A reader that hands out at most three bytes per read and is interrupted now and then.
        struct Slow<'a>(&'a [u8], usize);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                if self.1.is_multiple_of(5) {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = self.0.len().min(buf.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (bytes, _) = every_kind();
        let mut input = Slow(&bytes, 0);
        let mut decoder = FrameDecoder::new(Direction::ToWorker);
        let mut kinds = Vec::new();
        while decoder.read_from(&mut input).unwrap() > 0 {
            while let Some(frame) = decoder.next_frame().unwrap() {
                kinds.push(frame.header.kind);
            }
        }
        assert_eq!(decoder.finish(), Ok(()));
        assert_eq!(kinds.len(), 6);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decodes_worker_frames() {
        let frame = raw_frame(0x85, FLAG_END, 0x0102_0304, b"hi");
        let head = decode_header(&frame).unwrap().unwrap();
        assert_eq!(head.kind, Kind::ResponseBody);
        assert_eq!(head.stream, 0x0102_0304);
        assert_eq!(head.len, 2);
        assert!(head.is_end());
    }

    #[test]
    fn needs_a_whole_header_and_payload() {
        let frame = raw_frame(0x81, 0, 0, b"{}");
        for cut in 0..HEADER_LEN {
            assert_eq!(decode_header(&frame[..cut]), Ok(None));
        }
        for cut in 0..frame.len() {
            assert_eq!(decode_frame(Direction::ToRuntime, &frame[..cut]), Ok(None));
        }
        assert!(
            decode_frame(Direction::ToRuntime, &frame)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn rejects_oversized_frames_before_reading_them() {
        let mut frame = raw_frame(0x85, 0, 1, b"");
        frame[..4].copy_from_slice(&u32::try_from(MAX_PAYLOAD + 1).unwrap().to_le_bytes());
        assert_eq!(
            decode_header(&frame),
            Err(WireError::TooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        let (frames, end) = decode_pieces(Direction::ToRuntime, &[&frame]);
        assert!(frames.is_empty());
        assert_eq!(
            end,
            Err(WireError::TooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(Direction::ToWorker, &frame),
            Err(WireError::TooLarge { .. })
        ));
        frame[..4].copy_from_slice(&u32::try_from(MAX_PAYLOAD).unwrap().to_le_bytes());
        assert!(decode_header(&frame).unwrap().is_some());
    }

    #[test]
    fn rejects_kinds_of_the_other_direction_and_unknown_kinds() {
        for code in [0x00, 0x01, 0x02, 0x05, 0x80, 0x89, 0xff] {
            let frame = raw_frame(code, 0, 1, b"");
            assert_eq!(decode_header(&frame), Err(WireError::UnknownKind(code)));
        }
        for code in [0x00, 0x07, 0x7f, 0x81, 0x87, 0xff] {
            let frame = raw_frame(code, 0, 1, b"");
            assert_eq!(
                decode_pieces(Direction::ToWorker, &[&frame]).1,
                Err(WireError::UnknownKind(code))
            );
        }
    }

    #[test]
    fn rejects_unknown_flags_and_reserved_bytes() {
        let frame = raw_frame(0x85, 0x02, 1, b"");
        assert_eq!(decode_header(&frame), Err(WireError::BadFlags(0x02)));
        let mut frame = raw_frame(0x03, 0, 1, b"");
        frame[11] = 1;
        assert!(decode_header_from(Direction::ToWorker, &frame).is_err());
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error() {
        let (bytes, _) = every_kind();
        let whole = decode_pieces(Direction::ToWorker, &[&bytes]).0;
        for cut in 1..bytes.len() {
            let (frames, end) = decode_pieces(Direction::ToWorker, &[&bytes[..cut]]);
            let at: usize = frames.iter().map(|(h, _)| HEADER_LEN + h.len).sum();
            assert_eq!(frames, whole[..frames.len()]);
            if at == cut {
                assert_eq!(end, Ok(()));
            } else {
                assert_eq!(end, Err(WireError::Truncated { buffered: cut - at }));
            }
        }
        assert!(
            WireError::Truncated { buffered: 5 }
                .to_string()
                .contains("5 bytes")
        );
    }

    #[test]
    fn an_error_stays() {
        let mut decoder = FrameDecoder::new(Direction::ToRuntime);
        decoder.push(&raw_frame(0x42, 0, 1, b"x"));
        assert_eq!(decoder.next_frame(), Err(WireError::UnknownKind(0x42)));
        decoder.push(&raw_frame(0x85, 0, 1, b"x"));
        assert_eq!(decoder.next_frame(), Err(WireError::UnknownKind(0x42)));
        assert_eq!(decoder.finish(), Err(WireError::UnknownKind(0x42)));
    }

    #[test]
    fn garbage_is_an_error_or_partial_never_a_panic() {
        let mut rng = Rng::with_seed(7);
        for _ in 0..2000 {
            let len = usize::try_from(rng.next_u64() % 64).unwrap();
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Small lengths and valid kinds now and then, so that some frames decode.
            if bytes.len() >= HEADER_LEN && rng.next_u64().is_multiple_of(2) {
                bytes[..4].copy_from_slice(&(rng.next_u64() % 40).to_le_bytes()[..4]);
                bytes[8] = 0x81 + (rng.next_u64() % 7) as u8;
                bytes[9] &= 1;
                bytes[10] = 0;
                bytes[11] = 0;
            }
            for dir in [Direction::ToWorker, Direction::ToRuntime] {
                let whole = decode_pieces(dir, &[&bytes]);
                let singles: Vec<&[u8]> = bytes.chunks(1).collect();
                assert_eq!(decode_pieces(dir, &singles), whole);
                for (header, payload) in &whole.0 {
                    assert_eq!(header.len, payload.len());
                }
            }
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(matches!(
            RequestHead::parse(b"{\"url\": 3}"),
            Err(WireError::BadPayload {
                kind: Kind::RequestHead,
                ..
            })
        ));
        assert!(ResponseHead::parse(b"{}").is_err(), "status is required");
        assert!(cancel_reason(b"not json").is_err());
        assert!(Ready::parse(b"[").is_err());
        assert!(ErrorPayload::parse(Kind::InitError, b"\xff").is_err());
        let err = RequestHead::parse(b"").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid REQUEST_HEAD payload"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_json_payload_is_refused_and_nothing_is_written() {
        let mut out = b"before".to_vec();
        let big = "x".repeat(MAX_PAYLOAD);
        assert!(matches!(
            put_cancel(&mut out, 1, &big),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(out, b"before");
        let fits = "x".repeat(MAX_PAYLOAD - r#"{"reason":""}"#.len());
        put_cancel(&mut out, 1, &fits).unwrap();
        let frame = decode_frame(Direction::ToWorker, &out[6..])
            .unwrap()
            .unwrap();
        assert_eq!(frame.header.len, MAX_PAYLOAD);
    }

    #[test]
    fn window_payload_is_exactly_four_bytes() {
        assert_eq!(window_credit(&65536u32.to_le_bytes()), Ok(65536));
        assert_eq!(window_credit(b"abc"), Err(WireError::BadWindow(3)));
    }

    #[test]
    fn init_done_announces_the_request_window_within_its_bounds() {
        let window = |payload: &[u8]| InitDone::parse(payload).map(|d| d.request_window);
        assert_eq!(window(b""), Ok(INITIAL_WINDOW), "empty: the default");
        assert_eq!(window(b"{}"), Ok(INITIAL_WINDOW));
        assert_eq!(window(br#"{"requestWindow":1048576}"#), Ok(1 << 20));
        assert_eq!(window(br#"{"requestWindow":16777216}"#), Ok(MAX_WINDOW));
        for bad in [
            &br#"{"requestWindow":0}"#[..],
            br#"{"requestWindow":16777217}"#,
            br#"{"requestWindow":-1}"#,
            b"[",
        ] {
            assert!(
                matches!(
                    window(bad),
                    Err(WireError::BadPayload {
                        kind: Kind::InitDone,
                        ..
                    })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        put_window(&mut out, 9, 1024);
        assert_eq!(out.len(), HEADER_LEN + 4);
        assert_eq!(out[8], 0x05);
        out.clear();
        put_worker_window(&mut out, 9, 1024);
        assert_eq!(out, raw_frame(0x87, 0, 9, &1024u32.to_le_bytes()));
    }
}
