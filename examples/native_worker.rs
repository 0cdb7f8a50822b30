//! A reference native worker for noslate's `runtime: "native"`, written only against
//! docs/PROTOCOL.md (it uses nothing from the noslate crate), as the proof that the document is
//! enough to write a worker in any language.
//!
//! It is an echo function: the response body is the request body, and the response carries
//! `x-method` and `x-url` headers from the request head. A request with `x-native-error: 1`
//! fails with a function error instead. Streams are handled concurrently, with credit windows
//! in both directions, so it serves 32 MiB bodies with bounded memory per stream.
//!
//! Build: `cargo build --example native_worker`. Profile:
//! `{"name": "native", "runtime": "native", "url": "<dir of the binary>",
//!   "sourceFile": "native_worker", "signature": "v1"}`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};

const HEADER_LEN: usize = 12;
const MAX_PAYLOAD: usize = 1 << 20;
const INITIAL_WINDOW: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;
const FLAG_END: u8 = 1;

// Runtime → worker kinds.
const INIT: u8 = 0x01;
const REQUEST_HEAD: u8 = 0x02;
const REQUEST_BODY: u8 = 0x03;
const CANCEL: u8 = 0x04;
const WINDOW_IN: u8 = 0x05;
// Worker → runtime kinds.
const READY: u8 = 0x81;
const INIT_DONE: u8 = 0x82;
const RESPONSE_HEAD: u8 = 0x84;
const RESPONSE_BODY: u8 = 0x85;
const RESPONSE_ERROR: u8 = 0x86;
const WINDOW_OUT: u8 = 0x87;

/// One invocation in progress.
struct Stream {
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
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&stream.to_le_bytes());
    f.extend_from_slice(&[kind, flags, 0, 0]);
    f.extend_from_slice(payload);
    f
}

impl Worker {
    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(&frame(kind, flags, stream, payload))
    }

    fn on_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        match kind {
            INIT => self.send(INIT_DONE, 0, 0, b"{}"),
            REQUEST_HEAD => {
                let head: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                let header = |name: &str| {
                    head["headers"].as_array().and_then(|hs| {
                        hs.iter().find_map(|h| {
                            let k = h[0].as_str()?;
                            k.eq_ignore_ascii_case(name)
                                .then(|| h[1].as_str().unwrap_or("").to_owned())
                        })
                    })
                };
                if header("x-native-error").as_deref() == Some("1") {
                    let error = serde_json::json!({
                        "errorMessage": "the native worker was asked to fail",
                        "errorType": "NativeError",
                        "stackTrace": ["at native_worker::on_frame"],
                    });
                    // Terminal at once; the rest of the request body is ignored.
                    return self.send(RESPONSE_ERROR, 0, stream, error.to_string().as_bytes());
                }
                let headers = vec![
                    (
                        "content-type".to_owned(),
                        "application/octet-stream".to_owned(),
                    ),
                    (
                        "x-method".to_owned(),
                        head["method"].as_str().unwrap_or("").to_owned(),
                    ),
                    (
                        "x-url".to_owned(),
                        head["url"].as_str().unwrap_or("").to_owned(),
                    ),
                ];
                self.streams.insert(
                    stream,
                    Stream {
                        pending: Vec::new(),
                        request_done: flags & FLAG_END != 0,
                        credit: INITIAL_WINDOW,
                        head_sent: false,
                        headers,
                    },
                );
                self.pump(stream)
            }
            REQUEST_BODY => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return Ok(()); // a stream we already answered: ignore the rest
                };
                s.pending.extend_from_slice(payload);
                s.request_done |= flags & FLAG_END != 0;
                self.pump(stream)
            }
            WINDOW_IN => {
                let credit = payload.try_into().map(u32::from_le_bytes).unwrap_or(0);
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.credit += u64::from(credit);
                }
                self.pump(stream)
            }
            CANCEL => {
                if self.streams.remove(&stream).is_some() {
                    let error = br#"{"errorMessage":"cancelled","errorType":"Cancelled"}"#;
                    self.send(RESPONSE_ERROR, 0, stream, error)?;
                }
                Ok(())
            }
            other => Err(io::Error::other(format!(
                "unknown frame kind 0x{other:02x}"
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
            if !s.head_sent {
                let head = serde_json::json!({ "status": 200, "headers": s.headers });
                out.extend(frame(RESPONSE_HEAD, 0, stream, head.to_string().as_bytes()));
                s.head_sent = true;
            }
            let mut consumed = 0usize;
            while !s.pending.is_empty() && s.credit > 0 {
                let n = s
                    .pending
                    .len()
                    .min(CHUNK)
                    .min(usize::try_from(s.credit).unwrap_or(CHUNK));
                out.extend(frame(RESPONSE_BODY, 0, stream, &s.pending[..n]));
                s.pending.drain(..n);
                s.credit -= n as u64;
                consumed += n;
            }
            if consumed > 0 && !s.request_done {
                // The echoed bytes are consumed: the runtime may send that much more.
                out.extend(frame(
                    WINDOW_OUT,
                    0,
                    stream,
                    &(consumed as u32).to_le_bytes(),
                ));
            }
            if s.request_done && s.pending.is_empty() {
                out.extend(frame(RESPONSE_BODY, FLAG_END, stream, &[]));
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
    let fd_in: u32 = std::env::var("NOSLATE_IPC_IN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let fd_out: u32 = std::env::var("NOSLATE_IPC_OUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // Reopening the inherited pipes through /proc needs no unsafe code in a worker.
    let mut input = File::open(format!("/proc/self/fd/{fd_in}"))?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd_out}"))?;
    let mut worker = Worker {
        out,
        streams: HashMap::new(),
    };
    let ready = serde_json::json!({
        "pid": std::process::id(), "runtime": "native", "version": "1", "protocol": 1
    });
    worker.send(READY, 0, 0, ready.to_string().as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // EOF on fd 3: shut down
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= HEADER_LEN {
            let h = &buf[at..at + HEADER_LEN];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > MAX_PAYLOAD {
                return Err(io::Error::other("frame over the 1 MiB limit"));
            }
            if buf.len() - at < HEADER_LEN + len {
                break;
            }
            let stream = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let (kind, flags) = (h[8], h[9]);
            let payload = buf[at + HEADER_LEN..at + HEADER_LEN + len].to_vec();
            worker.on_frame(kind, flags, stream, &payload)?;
            at += HEADER_LEN + len;
        }
        buf.drain(..at);
    }
}
