//! A reference native worker for noslate's `runtime: "native"`: a standalone executable that
//! speaks docs/PROTOCOL.md on fds 3 and 4. It frames with `noslate::wire`, the codec the runtime
//! itself uses; the document alone is enough to write the same in any language (the Node.js and
//! Python bootstraps are written that way).
//!
//! It is an echo function: the response body is the request body, and the response carries
//! `x-method` and `x-url` headers from the request head. A request with `x-native-error: 1`
//! fails with a function error instead. Two paths measure one direction at a time (the
//! benchmark's large-body rows):
//!
//! - `/upload`: the body is read and dropped; the answer is its length in decimal;
//! - `/download?bytes=N`: the answer is N bytes, with a Content-Length.
//!
//! Streams are handled concurrently, with credit windows in both directions, so it serves
//! 32 MiB bodies with bounded memory per stream.
//!
//! Build: `cargo build --example native_worker`. Profile:
//! `{"name": "native", "runtime": "native", "url": "<dir of the binary>",
//!   "sourceFile": "native_worker", "signature": "v1"}`.

use noslate::wire::{
    self, Direction, ErrorPayload, Frame, FrameDecoder, Kind, Ready, RequestHead, ResponseHead,
};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};

/// Largest response-body chunk put in one frame.
const CHUNK: usize = wire::MAX_BODY_CHUNK;

/// What a stream answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The request body.
    Echo,
    /// The length of the request body, once it has all come.
    Upload { received: u64 },
    /// This many more bytes.
    Download { left: u64 },
}

impl Mode {
    /// The mode a request's url asks for.
    fn of(url: &str) -> Mode {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if path.ends_with("/upload") {
            return Mode::Upload { received: 0 };
        }
        if path.ends_with("/download") {
            let left = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            return Mode::Download { left };
        }
        Mode::Echo
    }
}

/// The bytes a download sends, one frame's worth, reused.
static DOWNLOAD_CHUNK: [u8; CHUNK] = [b'a'; CHUNK];

/// One invocation in progress.
struct Stream {
    /// What it answers with.
    mode: Mode,
    /// The echo: request bytes received and not yet sent back.
    pending: Vec<u8>,
    /// Whether the request body has ended.
    request_done: bool,
    /// Response-body credit the runtime granted.
    credit: u64,
    /// Whether RESPONSE_HEAD went out.
    head_sent: bool,
    /// Response headers, from the request head.
    headers: Vec<(String, String)>,
}

struct Worker {
    out: File,
    streams: HashMap<u32, Stream>,
    /// Response-body credit each stream starts with (INIT's `responseWindow`).
    response_window: u32,
}

impl Worker {
    fn on_frame(&mut self, frame: Frame<'_>) -> io::Result<()> {
        let (stream, end, payload) = (frame.header.stream, frame.is_end(), frame.payload);
        match frame.header.kind {
            Kind::Init => {
                if let Ok(init) = wire::Init::<serde_json::Value>::parse(payload) {
                    self.response_window = init.response_window;
                }
                // Request bodies may come a window of the runtime's size ahead: this worker
                // buffers what it has not echoed yet, so it grants what it is granted.
                let done = wire::InitDone {
                    request_window: self.response_window,
                };
                let mut out = Vec::new();
                wire::put_init_done(&mut out, &done).map_err(io::Error::other)?;
                self.out.write_all(&out)
            }
            Kind::RequestHead => {
                let head = RequestHead::parse(payload).unwrap_or_default();
                let header = |name: &str| head.headers.get(name);
                if header("x-native-error") == Some("1") {
                    let error = ErrorPayload::new(
                        "NativeError",
                        "the native worker was asked to fail",
                        vec!["at native_worker::on_frame".to_owned()],
                    );
                    // Terminal at once; the rest of the request body is ignored.
                    let mut out = Vec::new();
                    wire::put_response_error(&mut out, stream, &error).map_err(io::Error::other)?;
                    return self.out.write_all(&out);
                }
                let mode = Mode::of(&head.url);
                let mut headers = vec![
                    (
                        "content-type".to_owned(),
                        "application/octet-stream".to_owned(),
                    ),
                    ("x-method".to_owned(), head.method.to_string()),
                    ("x-url".to_owned(), head.url.to_string()),
                ];
                if let Mode::Download { left } = mode {
                    headers.push(("content-length".to_owned(), left.to_string()));
                }
                self.streams.insert(
                    stream,
                    Stream {
                        mode,
                        pending: Vec::new(),
                        request_done: end,
                        credit: u64::from(self.response_window),
                        head_sent: false,
                        headers,
                    },
                );
                self.pump(stream)
            }
            Kind::RequestBody => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return Ok(()); // a stream we already answered: ignore the rest
                };
                s.request_done |= end;
                if s.mode == Mode::Echo {
                    s.pending.extend_from_slice(payload);
                } else {
                    // Dropped as it comes: the runtime may send that much more at once.
                    if let Mode::Upload { received } = &mut s.mode {
                        *received += payload.len() as u64;
                    }
                    if !payload.is_empty() && !end {
                        let credit = u32::try_from(payload.len()).map_err(io::Error::other)?;
                        let mut out = Vec::new();
                        wire::put_worker_window(&mut out, stream, credit);
                        self.out.write_all(&out)?;
                    }
                }
                self.pump(stream)
            }
            Kind::WindowToWorker => {
                let credit = wire::window_credit(payload).map_err(io::Error::other)?;
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.credit += u64::from(credit);
                }
                self.pump(stream)
            }
            Kind::Cancel => {
                if self.streams.remove(&stream).is_some() {
                    let error = ErrorPayload::new("Cancelled", "cancelled", Vec::new());
                    let mut out = Vec::new();
                    wire::put_response_error(&mut out, stream, &error).map_err(io::Error::other)?;
                    self.out.write_all(&out)?;
                }
                Ok(())
            }
            // The decoder yields only the runtime's kinds.
            other => Err(io::Error::other(format!(
                "unexpected {} frame",
                other.name()
            ))),
        }
    }

    /// Sends what the stream's credit allows, returns request credit for what was consumed,
    /// and ends the stream once the whole request has been echoed.
    fn pump(&mut self, stream: u32) -> io::Result<()> {
        let mut out = Vec::new();
        let mut finished = false;
        {
            let Some(s) = self.streams.get_mut(&stream) else {
                return Ok(());
            };
            if let Mode::Upload { received } = s.mode {
                // Answered once the whole body has come.
                if !s.request_done {
                    return Ok(());
                }
                s.pending = received.to_string().into_bytes();
                s.mode = Mode::Echo;
            }
            if !s.head_sent {
                let head = ResponseHead {
                    status: 200,
                    headers: std::mem::take(&mut s.headers),
                };
                wire::put_response_head(&mut out, stream, false, &head)
                    .map_err(io::Error::other)?;
                s.head_sent = true;
            }
            if let Mode::Download { left } = &mut s.mode {
                while *left > 0 && s.credit > 0 {
                    let n = usize::try_from((*left).min(s.credit))
                        .unwrap_or(CHUNK)
                        .min(CHUNK);
                    wire::put_response_body(&mut out, stream, false, &DOWNLOAD_CHUNK[..n]);
                    *left -= n as u64;
                    s.credit -= n as u64;
                }
                if *left == 0 && s.request_done {
                    wire::put_response_body(&mut out, stream, true, &[]);
                    finished = true;
                }
            }
            let mut consumed = 0usize;
            while !s.pending.is_empty() && s.credit > 0 {
                let n = s
                    .pending
                    .len()
                    .min(CHUNK)
                    .min(usize::try_from(s.credit).unwrap_or(CHUNK));
                wire::put_response_body(&mut out, stream, false, &s.pending[..n]);
                s.pending.drain(..n);
                s.credit -= n as u64;
                consumed += n;
            }
            if consumed > 0 && !s.request_done {
                // The echoed bytes are consumed: the runtime may send that much more.
                let credit = u32::try_from(consumed).map_err(io::Error::other)?;
                wire::put_worker_window(&mut out, stream, credit);
            }
            if s.mode == Mode::Echo && s.request_done && s.pending.is_empty() {
                wire::put_response_body(&mut out, stream, true, &[]);
                finished = true;
            }
        }
        if finished {
            self.streams.remove(&stream);
        }
        self.out.write_all(&out)
    }
}

fn main() -> io::Result<()> {
    let fd_in: i32 = std::env::var("NOSLATE_IPC_IN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let fd_out: i32 = std::env::var("NOSLATE_IPC_OUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // The protocol channels may be sockets (the default) or pipes: take the inherited
    // descriptors as they are; a socket cannot be reopened through /proc/self/fd.
    use std::os::fd::FromRawFd;
    // SAFETY: the runtime leaves fds NOSLATE_IPC_IN and NOSLATE_IPC_OUT open in every worker it
    // starts, and nothing else in this process owns or closes them.
    let mut input = unsafe { File::from_raw_fd(fd_in) };
    // SAFETY: as above.
    let out = unsafe { File::from_raw_fd(fd_out) };
    let mut worker = Worker {
        out,
        streams: HashMap::new(),
        response_window: wire::INITIAL_WINDOW,
    };
    let ready = Ready {
        pid: std::process::id(),
        runtime: "native".to_owned(),
        version: "1".to_owned(),
        protocol: 1,
        ..Ready::default()
    };
    let mut frame = Vec::new();
    wire::put_ready(&mut frame, &ready).map_err(io::Error::other)?;
    worker.out.write_all(&frame)?;
    let mut decoder = FrameDecoder::new(Direction::ToWorker);
    loop {
        if decoder.read_from(&mut input)? == 0 {
            // EOF on fd 3: shut down (a frame cut short is an error).
            return decoder.finish().map_err(io::Error::other);
        }
        while let Some(frame) = decoder.next_frame().map_err(io::Error::other)? {
            worker.on_frame(frame)?;
        }
    }
}
