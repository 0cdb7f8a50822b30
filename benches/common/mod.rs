//! Shared by the bench targets (`e2e`, `soak`): HTTP/1.1 response parsing, a blocking client,
//! the closed-loop load generator, and the processes (the runtime and its workers) with their
//! temp dirs, all stopped and removed on drop.
//!
//! `tests/common/mod.rs` has helpers of the same kind (`TempDir`, `signal`, the descendants of a
//! pid from /proc) with the tests' types and semantics (i32 pids, kill(2), fixtures); the two sets
//! stay apart, so that neither the benches nor the tests build against the other's harness.

#![allow(dead_code)] // each bench target uses its own subset of these helpers

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

pub const NOSLATE_BIN: &str = env!("CARGO_BIN_EXE_noslate");
/// The runtime under test: the binary cargo built, unless `BENCH_NOSLATE_BIN` names another.
pub fn noslate_bin() -> PathBuf {
    std::env::var_os("BENCH_NOSLATE_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(NOSLATE_BIN), PathBuf::from)
}
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Largest response the generator accepts (head + body).
pub const RBUF: usize = 64 * 1024;

pub const MIB: u64 = 1024 * 1024;

pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("bench: ignoring {name}={v:?} (not a number)");
            default
        }),
        _ => default,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response parsing (shared by both load loops)

#[derive(Debug, Clone, Copy)]
pub struct Resp {
    /// Bytes of `buf` this response occupies.
    pub consumed: usize,
    /// Bytes of its head: the body starts there.
    pub head_len: usize,
    pub status: u16,
    /// The body matched the expectation (always true without one).
    pub body_ok: bool,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Parses one response from the start of `buf`. `Ok(None)`: need more bytes. `eof`: the peer
/// closed, which completes a response delimited by the end of the connection.
pub fn parse_response(
    buf: &[u8],
    expect: Option<&[u8]>,
    eof: bool,
) -> Result<Option<Resp>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => return Err("connection closed mid-head".into()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let mut close = r.version == Some(0);
    let mut content_length = None;
    let mut chunked = false;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            content_length = Some(v.ok_or("bad content-length")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    if (100..200).contains(&status) {
        return Err(format!("unexpected informational response {status}"));
    }
    let body = &buf[head_len..];
    let check = |b: &[u8]| expect.is_none_or(|e| e == b);
    let (len, body_ok) = if status == 204 || status == 304 {
        (0, check(b""))
    } else if chunked {
        match decode_chunked(body, expect)? {
            Some(x) => x,
            None if eof => return Err("connection closed mid-body".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = content_length {
        if body.len() < n {
            if eof {
                return Err("connection closed mid-body".into());
            }
            return Ok(None);
        }
        (n, check(&body[..n]))
    } else if eof {
        close = true;
        (body.len(), check(body))
    } else {
        return Ok(None);
    };
    Ok(Some(Resp {
        consumed: head_len + len,
        head_len,
        status,
        body_ok,
        close,
    }))
}

/// Walks a chunked body: `Ok(Some((bytes, matches expect)))` once complete.
pub fn decode_chunked(body: &[u8], expect: Option<&[u8]>) -> Result<Option<(usize, bool)>, String> {
    let find_crlf = |from: usize| {
        body[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let mut pos = 0;
    let mut matched = 0;
    let mut ok = true;
    loop {
        let Some(line_end) = find_crlf(pos) else {
            return Ok(None);
        };
        let size_hex = body[pos..line_end]
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let size = std::str::from_utf8(size_hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .filter(|&n| n < RBUF)
            .ok_or("bad chunk size")?;
        pos = line_end + 2;
        if size == 0 {
            loop {
                let Some(end) = find_crlf(pos) else {
                    return Ok(None);
                };
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    break;
                }
            }
            return Ok(Some((pos, ok && expect.is_none_or(|e| matched == e.len()))));
        }
        if body.len() < pos + size + 2 {
            return Ok(None);
        }
        if let Some(e) = expect {
            ok = ok && e.get(matched..matched + size) == Some(&body[pos..pos + size]);
            matched += size;
        }
        if &body[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

/// How one exchange ended.
pub enum Outcome {
    Ok,
    Non2xx,
    /// Any other failure: I/O, protocol, or a 2xx with the wrong body.
    Error(String),
}

pub fn classify(r: &Resp) -> Outcome {
    if !(200..300).contains(&r.status) {
        Outcome::Non2xx
    } else if !r.body_ok {
        Outcome::Error(format!("status {} with an unexpected body", r.status))
    } else {
        Outcome::Ok
    }
}

#[derive(Default, Clone)]
pub struct Counts {
    pub ok: u64,
    pub non2xx: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The first non-2xx answer: its status and `errorType` (see `answer_summary`).
    pub first_non2xx: Option<String>,
}

impl Counts {
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Non2xx => self.non2xx += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
    pub fn merge(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        if self.first_non2xx.is_none() {
            self.first_non2xx.clone_from(&o.first_non2xx);
        }
    }
}

/// The `errorType` of a JSON error body, else the start of the body as text.
pub fn body_summary(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["errorType"].is_string() => v["errorType"].as_str().unwrap_or_default().into(),
        _ => String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned(),
    }
}

/// `503 RuntimeStopped`: the status of the response at the start of `buf` and what its body
/// says (`body_summary`). Only for a body delimited by Content-Length.
pub fn answer_summary(buf: &[u8], r: &Resp) -> String {
    let body = buf.get(r.head_len..r.consumed).unwrap_or_default();
    format!("{} {}", r.status, body_summary(body))
}

pub fn request_bytes(method: &str, path: &str, port: u16, body: &[u8]) -> Vec<u8> {
    request_with_headers(method, path, port, &[], body)
}

/// [`request_bytes`] with `headers` after its `Host`.
pub fn request_with_headers(
    method: &str,
    path: &str,
    port: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (name, value) in headers {
        let _ = write!(r, "{name}: {value}\r\n");
    }
    if method != "GET" {
        let _ = write!(
            r,
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

/// The headers FC sends with every call to an event function with a role (STS credentials) and
/// a log store: what a function behind FC receives, about 900 bytes of them, against the two
/// of [`request_bytes`]. The credentials and ids are made up, of the usual lengths.
pub const FC_CALL_HEADERS: [(&str, &str); 21] = [
    ("x-fc-request-id", "a5c1e3a2-6d4b-4d0e-9f8e-0c7b1f6e2a11"),
    ("x-fc-access-key-id", "STS.NUabcdefghijklmnopqrstu"),
    (
        "x-fc-access-key-secret",
        "A3abcdefghijklmnopqrstuvwxyz0123456789ABCD",
    ),
    (
        "x-fc-security-token",
        "CAISabcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop",
    ),
    ("x-fc-function-handler", "index.handler"),
    ("x-fc-function-memory", "512"),
    ("x-fc-function-initializer", "index.initializer"),
    ("x-fc-initialization-timeout", "3"),
    ("x-fc-region", "cn-hangzhou"),
    ("x-fc-account-id", "1234567890123456"),
    ("x-fc-qualifier", "LATEST"),
    ("x-fc-version-id", ""),
    ("x-fc-function-name", "hello"),
    ("x-fc-service-name", "bench"),
    ("x-fc-service-logproject", "bench-project"),
    ("x-fc-service-logstore", "bench-store"),
    ("x-fc-control-path", "/invoke"),
    ("x-fc-function-timeout", "3"),
    ("x-fc-retry-count", "0"),
    ("x-fc-client-ip", "10.0.0.1"),
    ("x-fc-eagleeye-traceid", "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"),
];

/// [`request_bytes`] with FC's [`FC_CALL_HEADERS`], as FC calls a function.
pub fn fc_request_bytes(method: &str, path: &str, port: u16, body: &[u8]) -> Vec<u8> {
    request_with_headers(method, path, port, &FC_CALL_HEADERS, body)
}

// ---------------------------------------------------------------------------------------------
// c=1: one blocking keep-alive connection

pub struct BlockingClient {
    pub addr: SocketAddr,
    pub stream: Option<TcpStream>,
    pub buf: Box<[u8]>,
}

impl BlockingClient {
    pub fn new(addr: SocketAddr) -> BlockingClient {
        BlockingClient {
            addr,
            stream: None,
            buf: vec![0; RBUF].into_boxed_slice(),
        }
    }

    /// One request/response exchange. The raw response (for diagnostics) is `self.buf[..n]`
    /// with `n` the returned length.
    pub fn exchange(&mut self, req: &[u8], expect: Option<&[u8]>) -> Result<(Resp, usize), String> {
        let r = self.try_exchange(req, expect);
        match &r {
            Ok((resp, _)) if !resp.close => {}
            _ => self.stream = None,
        }
        r
    }

    /// Opens the keep-alive connection unless it is open.
    pub fn connect(&mut self) -> Result<&mut TcpStream, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("connected above"))
    }

    pub fn try_exchange(
        &mut self,
        req: &[u8],
        expect: Option<&[u8]>,
    ) -> Result<(Resp, usize), String> {
        self.connect()?;
        let s = self.stream.as_mut().expect("connected above");
        s.write_all(req).map_err(|e| format!("write: {e}"))?;
        let mut filled = 0;
        loop {
            if filled == self.buf.len() {
                return Err("response larger than the read buffer".into());
            }
            let n = match s.read(&mut self.buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            filled += n;
            if let Some(resp) = parse_response(&self.buf[..filled], expect, n == 0)? {
                if resp.consumed != filled {
                    return Err("bytes after the response".into());
                }
                return Ok((resp, filled));
            }
            if n == 0 {
                return Err("connection closed before a response".into());
            }
        }
    }
}

/// Nearest-rank percentile of sorted samples, in microseconds.
pub fn percentile_us(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// c=64: closed-loop keep-alive connections on a mio event loop per thread

pub struct Conn {
    pub stream: Option<MioStream>,
    pub writing: bool,
    pub wpos: usize,
    pub filled: usize,
    pub buf: Box<[u8]>,
    /// The request being written or awaited counts against the run's budget.
    pub claimed: bool,
    /// When the request being written or awaited was started (only when latencies are kept).
    pub sent_at: Option<Instant>,
}

impl Conn {
    pub fn new(stream: Option<MioStream>) -> Conn {
        Conn {
            stream,
            writing: true,
            wpos: 0,
            filled: 0,
            buf: vec![0; RBUF].into_boxed_slice(),
            claimed: false,
            sent_at: None,
        }
    }
}

/// Counters a load run updates as outcomes arrive, for a sampler to read while it runs.
#[derive(Debug, Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub non2xx: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    /// (ok, non-2xx, errors) so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.non2xx.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// A closed-loop load run: `conns` keep-alive connections on `threads` threads, each sending
/// `req` again as soon as the previous answer is in.
pub struct Load<'a> {
    pub addr: SocketAddr,
    pub req: &'a [u8],
    pub expect: Option<&'a [u8]>,
    pub conns: usize,
    pub threads: usize,
    /// How long the run lasts (with a budget: at most).
    pub dur: Duration,
    /// Stop once this many requests have been sent and answered (or failed).
    pub budget: Option<u64>,
    /// Keep the latency of every 2xx-valid exchange.
    pub latencies: bool,
    /// Updated on every counted outcome.
    pub live: Option<&'a Live>,
    /// Ends the run early once set.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> Load<'a> {
    /// `conns` connections on `threads` threads for `dur`; no budget, latencies or live counts.
    pub fn new(
        addr: SocketAddr,
        req: &'a [u8],
        expect: Option<&'a [u8]>,
        conns: usize,
        threads: usize,
        dur: Duration,
    ) -> Load<'a> {
        Load {
            addr,
            req,
            expect,
            conns,
            threads: threads.clamp(1, conns.max(1)),
            dur,
            budget: None,
            latencies: false,
            live: None,
            stop: None,
        }
    }
}

pub struct Loop<'a> {
    pub addr: SocketAddr,
    pub req: &'a [u8],
    pub expect: Option<&'a [u8]>,
    pub end: Instant,
    pub counts: Counts,
    /// Requests claimed so far by every thread of the run, and the most it may claim.
    pub budget: Option<(&'a AtomicU64, u64)>,
    /// Latencies of the 2xx-valid exchanges, microseconds, when kept.
    pub latencies: Option<Vec<u32>>,
    pub live: Option<&'a Live>,
}

pub fn connect_mio(addr: SocketAddr) -> io::Result<MioStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(MioStream::from_std(s))
}

impl Loop<'_> {
    pub fn record(&mut self, o: Outcome) {
        if Instant::now() < self.end {
            if let Some(live) = self.live {
                let n = match o {
                    Outcome::Ok => &live.ok,
                    Outcome::Non2xx => &live.non2xx,
                    Outcome::Error(_) => &live.errors,
                };
                n.fetch_add(1, Ordering::Relaxed);
            }
            self.counts.add(o);
        }
    }

    /// Takes one request out of the budget; false once it is spent.
    fn claim(&self) -> bool {
        self.budget
            .is_none_or(|(sent, max)| sent.fetch_add(1, Ordering::Relaxed) < max)
    }

    /// Drops the connection and opens a new one; false if that failed (the slot then stays
    /// idle for the rest of the run).
    pub fn reconnect(&mut self, poll: &Poll, token: Token, c: &mut Conn) -> bool {
        if let Some(mut old) = c.stream.take() {
            let _ = poll.registry().deregister(&mut old);
        }
        c.writing = true;
        c.wpos = 0;
        c.filled = 0;
        c.claimed = false;
        if Instant::now() >= self.end {
            return false;
        }
        match connect_mio(self.addr) {
            Ok(mut s) => {
                let reg = poll.registry().register(
                    &mut s,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                );
                if let Err(e) = reg {
                    self.record(Outcome::Error(format!("register: {e}")));
                    return false;
                }
                c.stream = Some(s);
                true
            }
            Err(e) => {
                self.record(Outcome::Error(format!("connect: {e}")));
                false
            }
        }
    }

    /// Advances one connection until the socket would block (edge-triggered readiness).
    pub fn drive(&mut self, poll: &Poll, token: Token, c: &mut Conn) {
        loop {
            if c.stream.is_none() {
                return;
            }
            if c.writing && !c.claimed {
                if !self.claim() {
                    // The budget is spent: this connection is done.
                    if let Some(mut s) = c.stream.take() {
                        let _ = poll.registry().deregister(&mut s);
                    }
                    return;
                }
                c.claimed = true;
                if self.latencies.is_some() {
                    c.sent_at = Some(Instant::now());
                }
            }
            let Some(s) = c.stream.as_mut() else { return };
            if c.writing {
                match s.write(&self.req[c.wpos..]) {
                    Ok(n) => {
                        c.wpos += n;
                        if c.wpos == self.req.len() {
                            c.writing = false;
                            c.filled = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.record(Outcome::Error(format!("write: {e}")));
                        if !self.reconnect(poll, token, c) {
                            return;
                        }
                    }
                }
                continue;
            }
            if c.filled == c.buf.len() {
                self.record(Outcome::Error(
                    "response larger than the read buffer".into(),
                ));
                if !self.reconnect(poll, token, c) {
                    return;
                }
                continue;
            }
            let n = match s.read(&mut c.buf[c.filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.record(Outcome::Error(format!("read: {e}")));
                    if !self.reconnect(poll, token, c) {
                        return;
                    }
                    continue;
                }
            };
            c.filled += n;
            let eof = n == 0;
            match parse_response(&c.buf[..c.filled], self.expect, eof) {
                Ok(Some(resp)) => {
                    let o = if resp.consumed != c.filled {
                        Outcome::Error("bytes after the response".into())
                    } else {
                        classify(&resp)
                    };
                    if matches!(o, Outcome::Non2xx) && self.counts.first_non2xx.is_none() {
                        self.counts.first_non2xx = Some(answer_summary(&c.buf, &resp));
                    }
                    if let (Outcome::Ok, Some(lat), Some(t0)) =
                        (&o, self.latencies.as_mut(), c.sent_at)
                        && Instant::now() < self.end
                    {
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    self.record(o);
                    c.claimed = false;
                    if Instant::now() >= self.end {
                        return;
                    }
                    if resp.close || eof || resp.consumed != c.filled {
                        if !self.reconnect(poll, token, c) {
                            return;
                        }
                    } else {
                        c.writing = true;
                        c.wpos = 0;
                    }
                }
                Ok(None) if !eof => {}
                Ok(None) => {
                    self.record(Outcome::Error("connection closed before a response".into()));
                    if !self.reconnect(poll, token, c) {
                        return;
                    }
                }
                Err(e) => {
                    self.record(Outcome::Error(e));
                    if !self.reconnect(poll, token, c) {
                        return;
                    }
                }
            }
        }
    }
}

pub struct ThroughputRun {
    pub counts: Counts,
    pub secs: f64,
    /// Latencies of the 2xx-valid exchanges, microseconds, sorted (when the run kept them).
    pub latencies_us: Vec<u32>,
}

impl ThroughputRun {
    pub fn rps(&self) -> f64 {
        self.counts.ok as f64 / self.secs
    }

    /// Nearest-rank percentile of the kept latencies, in microseconds.
    pub fn latency_us(&self, p: f64) -> Option<f64> {
        let s = &self.latencies_us;
        if s.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        Some(f64::from(s[rank.clamp(1, s.len()) - 1]))
    }
}

pub fn run_throughput(
    addr: SocketAddr,
    req: &[u8],
    expect: Option<&[u8]>,
    conns: usize,
    threads: usize,
    dur: Duration,
) -> ThroughputRun {
    run_load(&Load::new(addr, req, expect, conns, threads, dur))
}

/// Runs `load`; `secs` is its duration, or with a budget or a stop flag the time it took.
pub fn run_load(load: &Load) -> ThroughputRun {
    let barrier = Barrier::new(load.threads);
    let sent = AtomicU64::new(0);
    let start = Instant::now();
    let (counts, mut latencies_us) = thread::scope(|scope| {
        let handles: Vec<_> = (0..load.threads)
            .map(|t| {
                // Thread t owns connections t, t+threads, ...: halves with 2 threads.
                let mine = (t..load.conns).step_by(load.threads).count();
                let (barrier, sent) = (&barrier, &sent);
                scope.spawn(move || throughput_thread(load, mine, barrier, sent))
            })
            .collect();
        let mut total = Counts::default();
        let mut lat = Vec::new();
        for h in handles {
            let (c, l) = h.join().expect("load thread panicked");
            total.merge(&c);
            lat.extend(l);
        }
        (total, lat)
    });
    latencies_us.sort_unstable();
    let secs = if load.budget.is_some() || load.stop.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        load.dur.as_secs_f64()
    };
    ThroughputRun {
        counts,
        secs,
        latencies_us,
    }
}

fn throughput_thread(
    load: &Load,
    conns: usize,
    barrier: &Barrier,
    sent: &AtomicU64,
) -> (Counts, Vec<u32>) {
    let mut poll = Poll::new().expect("mio poll");
    let mut lp = Loop {
        addr: load.addr,
        req: load.req,
        expect: load.expect,
        end: Instant::now() + Duration::from_secs(3600),
        counts: Counts::default(),
        budget: load.budget.map(|max| (sent, max)),
        latencies: load.latencies.then(Vec::new),
        live: load.live,
    };
    let mut slots: Vec<Conn> = (0..conns).map(|_| Conn::new(None)).collect();
    for (i, c) in slots.iter_mut().enumerate() {
        lp.reconnect(&poll, Token(i), c);
    }
    // Connection set-up (and its errors) is outside the measured window.
    let setup = std::mem::take(&mut lp.counts);
    barrier.wait();
    lp.end = Instant::now() + load.dur;
    lp.counts = setup;
    for (i, c) in slots.iter_mut().enumerate() {
        lp.drive(&poll, Token(i), c);
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= lp.end {
            break;
        }
        let mut wait = lp.end - now;
        if lp.budget.is_some() {
            if slots.iter().all(|c| c.stream.is_none()) {
                break;
            }
            wait = wait.min(Duration::from_millis(100));
        }
        if let Some(stop) = load.stop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            wait = wait.min(Duration::from_millis(100));
        }
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            let i = ev.token().0;
            lp.drive(&poll, ev.token(), &mut slots[i]);
        }
    }
    (lp.counts, lp.latencies.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Processes and temp dir, all cleaned up by Drop (also on panic)

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> io::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("noslate-bench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub type Tail = Arc<Mutex<VecDeque<String>>>;

/// What the output readers noticed in a runtime's log, besides the tail.
#[derive(Default)]
pub struct Seen {
    /// Every `[turf w=.. pid=..] ready to serve after <ms> ms`, in order: spawn to ready, ms.
    pub ready_ms: Vec<f64>,
    /// Every `[turf w=.. pid=..] started`: workers forked.
    pub started: usize,
    /// Every `[turf w=.. pid=..] exited with ...`: workers reaped.
    pub exits: usize,
    /// Every `[turf seed=.. pid=..] ready after ...`: warm seeds ready to fork.
    pub seeds_ready: usize,
    /// Every `[turf spare=.. pid=..] ready after ...`: spare Node.js workers ready to take.
    pub spares_ready: usize,
}

impl Seen {
    pub fn note(&mut self, line: &str) {
        const READY: &str = "] ready to serve after ";
        if line.contains("[turf seed=") && line.contains("] ready after ") {
            self.seeds_ready += 1;
        }
        if line.contains("[turf spare=") && line.contains("] ready after ") {
            self.spares_ready += 1;
        }
        if !line.contains("[turf w=") {
            return;
        }
        if let Some(i) = line.find(READY) {
            let ms = line[i + READY.len()..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(ms) = ms {
                self.ready_ms.push(ms);
            }
        } else if line.contains("] exited with ") {
            self.exits += 1;
        } else if line.ends_with("] started") {
            self.started += 1;
        }
    }
}

/// A child process that is stopped, with everything it forked, when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub tail: Tail,
    pub seen: Arc<Mutex<Seen>>,
}

/// Sends a signal with kill(1): std only, no unsafe.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// pid -> (ppid, start time in clock ticks) of every process, from /proc.
pub fn process_table() -> HashMap<u32, (u32, u64)> {
    let mut t = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return t;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after "(comm)": state ppid ... starttime is field 22, i.e. the 20th after comm.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(start)) = (
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(19).and_then(|s| s.parse().ok()),
        ) {
            t.insert(pid, (ppid, start));
        }
    }
    t
}

/// All descendants of `root` with their start times.
pub fn descendants(root: u32) -> Vec<(u32, u64)> {
    let table = process_table();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&pid, &(ppid, start)) in &table {
            if ppid == p {
                out.push((pid, start));
                frontier.push(pid);
            }
        }
    }
    out
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (the runtime it starts
/// inherits it); returns the soft limit in force afterwards.
#[allow(unsafe_code)]
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that setrlimit only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// A blocking TCP connection to `addr` with `SO_RCVBUF` (the kernel doubles it) and
/// `TCP_MAXSEG` set before connecting: the window and the MSS it announces are small from its
/// SYN on. std sets socket options only after connect.
#[allow(unsafe_code)]
pub fn connect_with_opts(addr: SocketAddrV4, rcvbuf: usize, mss: u32) -> io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created here that nothing else owns or closes.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let rcvbuf = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    let mss = libc::c_int::try_from(mss).unwrap_or(libc::c_int::MAX);
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss),
    ] {
        // SAFETY: `value` is a live c_int and the length passed is its size; setsockopt only
        // reads it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a live sockaddr_in and the length passed is its size; connect only reads
    // it.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(owned))
}

pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The start of the runtime's per-invocation log lines (`FC Invoke Start RequestId: ...` and
/// `FC Invoke End ...`), which the output readers drop unparsed.
const FC_INVOKE_LINE: &[u8] = b"FC Invoke ";

impl Proc {
    /// Spawns `cmd` with stdout and stderr read by threads into a tail of recent lines. The
    /// first line for which `port_of` yields a port is sent back; `wait_port` receives it.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        port_of: fn(&str) -> Option<u16>,
    ) -> Result<(Proc, mpsc::Receiver<u16>), String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("{name}: spawn: {e}"))?;
        let tail: Tail = Arc::default();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [out, err].into_iter().flatten() {
            let (tail, seen, tx) = (tail.clone(), seen.clone(), tx.clone());
            thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = Vec::new();
                let mut sent = false;
                while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    // Two per invocation: read, as a log agent would, but not kept or parsed,
                    // so that the reader costs what a log agent's copy costs and no more.
                    if line.starts_with(FC_INVOKE_LINE) {
                        line.clear();
                        continue;
                    }
                    let s = String::from_utf8_lossy(&line).trim_end().to_string();
                    line.clear();
                    if !sent && let Some(p) = port_of(&s) {
                        sent = tx.send(p).is_ok();
                    }
                    seen.lock().unwrap_or_else(|e| e.into_inner()).note(&s);
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 200 {
                        t.pop_front();
                    }
                    t.push_back(s);
                }
            });
        }
        Ok((
            Proc {
                name: name.to_string(),
                child,
                tail,
                seen,
            },
            rx,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `done` holds for what its log has shown, at most `timeout`; whether it did.
    pub fn wait_seen(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.seen.lock().unwrap_or_else(|e| e.into_inner())) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn ready_ms(&self) -> Vec<f64> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.ready_ms.clone()
    }

    /// Workers started and workers ready so far, from its log.
    pub fn workers(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (seen.started, seen.ready_ms.len())
    }

    pub fn tail(&self, n: usize) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let skip = t.len().saturating_sub(n);
        t.iter()
            .skip(skip)
            .map(|l| format!("    | {l}\n"))
            .collect()
    }

    pub fn wait_port(
        &mut self,
        rx: &mpsc::Receiver<u16>,
        timeout: Duration,
    ) -> Result<u16, String> {
        let end = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(p) => return Ok(p),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both outputs closed: it is exiting (or detached them); say which.
                    let status = (0..100).find_map(|_| {
                        let st = self.child.try_wait().ok().flatten();
                        if st.is_none() {
                            thread::sleep(Duration::from_millis(10));
                        }
                        st
                    });
                    let how =
                        status.map_or("closed its output".into(), |st| format!("exited ({st})"));
                    return Err(format!(
                        "{}: {how} before listening\n{}",
                        self.name,
                        self.tail(20)
                    ));
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100)); // let the readers catch the last lines
                return Err(format!(
                    "{}: exited ({st}) before listening\n{}",
                    self.name,
                    self.tail(20)
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{}: not listening after {timeout:?}\n{}",
                    self.name,
                    self.tail(20)
                ));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        let kids = descendants(pid);
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, "TERM");
            let end = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
                thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever it forked and left behind (same pid and start time: not a reused pid).
        let table = process_table();
        for (kid, start) in kids {
            if table.get(&kid).is_some_and(|&(_, s)| s == start) {
                signal(kid, "KILL");
            }
        }
    }
}

pub fn listening_port(line: &str) -> Option<u16> {
    let i = line.find("listening on ")?;
    let rest = &line[i + "listening on ".len()..];
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':')
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

pub fn bare_port(line: &str) -> Option<u16> {
    line.trim().parse().ok()
}

/// The work directory of the runtime started under `tag` (its admin socket lives there).
pub fn workdir(tmp: &Path, tag: &str) -> PathBuf {
    tmp.join(tag).join("work")
}

/// Starts noslate in `tmp/tag` with these function profiles and, if given, this system config
/// (`--config`); with `init`, waits for `POST /initialize` to answer 200.
pub fn start_noslate_with(
    tmp: &Path,
    tag: &str,
    functions: &Value,
    config: Option<&Value>,
    init: bool,
) -> Result<(Proc, u16), String> {
    let dir = tmp.join(tag);
    let (work, logs) = (workdir(tmp, tag), dir.join("logs"));
    for d in [&work, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let file = dir.join("functions.json");
    fs::write(&file, serde_json::to_vec_pretty(functions).expect("json"))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(noslate_bin());
    cmd.arg("serve")
        .arg("--port")
        .arg("0")
        .arg("--functions")
        .arg(&file)
        .env("NOSLATE_WORKDIR", &work)
        .env("NOSLATE_LOGDIR", &logs);
    if let Some(config) = config {
        let path = dir.join("config.json");
        fs::write(&path, serde_json::to_vec_pretty(config).expect("json"))
            .map_err(|e| e.to_string())?;
        cmd.arg("--config").arg(&path);
    }
    let (mut p, rx) = Proc::spawn(&format!("noslate[{tag}]"), cmd, listening_port)?;
    let port = p.wait_port(&rx, Duration::from_secs(20))?;
    if init {
        initialize(&p, port)?;
    }
    Ok((p, port))
}

/// What `noslate ps --json` lists for the runtime whose work directory is `work`: one object
/// per worker (`id`, `function`, `pid`, `state`, `inflight`, `enforcement`, ...).
pub fn ps_json(work: &Path) -> Option<Vec<Value>> {
    let out = Command::new(noslate_bin())
        .args(["ps", "--json"])
        .env("NOSLATE_WORKDIR", work)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    match serde_json::from_slice(&out.stdout).ok()? {
        Value::Array(v) => Some(v),
        _ => None,
    }
}

/// POST /initialize until it answers 200 (workers up and initialized).
pub fn initialize(p: &Proc, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req = request_bytes("POST", "/initialize", port, b"");
    let mut client = BlockingClient::new(addr);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client.exchange(&req, None) {
            Ok((r, _)) if r.status == 200 => return Ok(()),
            Ok((_, n)) => String::from_utf8_lossy(&client.buf[..n]).into_owned(),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(format!(
                "{}: POST /initialize never returned 200; last: {last}\n{}",
                p.name,
                p.tail(20)
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn pass(b: bool) -> &'static str {
    if b { "PASS" } else { "FAIL" }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Writes `report` to `<target dir>/bench/<name>.json` and says where (or why not).
pub fn write_report(name: &str, report: &Value) {
    let target_dir = Path::new(NOSLATE_BIN)
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let path = target_dir.join(format!("bench/{name}.json"));
    let written = fs::create_dir_all(target_dir.join("bench")).and_then(|()| {
        fs::write(
            &path,
            serde_json::to_string_pretty(report).expect("json") + "\n",
        )
    });
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("bench: could not write {}: {e}", path.display()),
    }
}
