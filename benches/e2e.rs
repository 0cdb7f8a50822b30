//! End-to-end benchmark of noslate: `make bench` (`cargo bench --bench e2e`).
//!
//! # What it guards
//!
//! The promise of noslate is that putting the runtime in front of a Node.js function costs
//! (almost) nothing compared with serving the same function from Node's own `http` module, and
//! that the runtime itself stays small. Three targets run side by side in one invocation:
//!
//! - **(a) noslate `GET /healthz`**, answered by the runtime itself: the HTTP floor of the event
//!   loop, no worker involved.
//! - **(b) noslate `POST /invoke`** with the 5-byte body `hello`, to `examples/hello` through the
//!   runtime and ONE pre-forked Node.js worker (`reservationCount: 1`, `replicaCountLimit: 1`).
//! - **(c) node http direct**: the same handler in one Node.js process on `http.createServer`
//!   (`benches/node_direct.js`). One worker against one Node process: apples to apples.
//!
//! For each target: a warm-up, then **c=1 latency** (one keep-alive connection, one thread,
//! blocking socket with TCP_NODELAY; p50/p99/p999 from all sorted samples) and **c=64
//! throughput** (keep-alive connections on a mio event loop over 2 threads, each connection
//! closed-loop: send, read the whole response by Content-Length or chunked, send again; req/s
//! counts only 2xx with a valid body, non-2xx and errors are counted apart). Every response is
//! validated: 200 for (a); 200 and body `hello` for (b) and (c).
//!
//! The targets run interleaved in rounds (default 4: a→b→c, c→b→a, a→b→c, c→b→a), each after
//! a warm-up; `BENCH_SECS` is split across the rounds. Why rounds, and why medians: on this
//! 2-vCPU VM, an A/A run (the same Node server as both b and c) gave per-round c=64 ratios of
//! 1.24, 1.01, 1.06 and 0.81: bare Node's rate moves ±20 % from one 1-s segment to the next.
//! c=1 latency is bimodal: about 12 µs per exchange when the kernel keeps the client and the
//! server on one vCPU, about 85 µs when they sit on two (an idle vCPU must be woken), and a
//! segment tends to stay in one mode. Running b next to a and c in every round and taking the
//! **median of the per-round pairs** cancels machine drift and outvotes a lottery round; the
//! per-round values and the pooled ones (all samples and all rounds together) are printed too.
//!
//! One extra measurement starts noslate with two idle workers (`reservationCount: 2`), calls
//! `/initialize`, waits 1 s and reads the runtime's own `VmRSS` (not the workers').
//!
//! # How to read it
//!
//! The load generator shares the 2 vCPUs with the servers, as wrk did in `reference/peers.md`,
//! so absolute numbers move a lot from run to run. **Compare only ratios measured in one run**:
//!
//! - throughput b/c >= 1.0: the runtime does not cap what one Node process can serve;
//! - p50 b-c <= +100 µs: the latency the runtime hop adds over calling Node directly;
//! - b/a: how far the function path is from the runtime's own HTTP floor (informational);
//! - runtime RSS with 2 idle workers < 10 MiB.
//!
//! PASS/FAIL is printed per line, but the process exits 0 either way: numbers from a shared,
//! noisy machine are reported, not asserted. Results also go to `<target dir>/bench/e2e.json`.
//!
//! Knobs (environment): `BENCH_SECS` (measurement seconds per target and mode, split across
//! rounds; default 5), `BENCH_ROUNDS` (default 4), `BENCH_CONNS` (default 64), `BENCH_THREADS`
//! (default 2), `BENCH_WARMUP` (seconds before a target's first round, default 1; later rounds
//! re-warm for a quarter of it), `BENCH_TARGETS` (subset of `abc`, default all), `BENCH_PIN`
//! (1: pin the c=1 phase, client thread and servers, to one CPU with taskset; removes the
//! placement lottery but is not how peers.md measured), `BENCH_FUNCTION_DIR` (the function's
//! code, default `examples/hello`), `BENCH_EXAMPLE_WAIT` (seconds to wait for that function to
//! appear, default 0), `BENCH_NOSLATE_BIN` (another runtime binary to measure, default the one
//! cargo built). See benches/README.md.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

const NOSLATE_BIN: &str = env!("CARGO_BIN_EXE_noslate");
/// The runtime under test: the binary cargo built, unless `BENCH_NOSLATE_BIN` names another.
fn noslate_bin() -> PathBuf {
    std::env::var_os("BENCH_NOSLATE_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(NOSLATE_BIN), PathBuf::from)
}
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const BODY: &[u8] = b"hello";
/// Largest response the generator accepts (head + body).
const RBUF: usize = 64 * 1024;

const TARGET_TP_RATIO: f64 = 1.0;
const TARGET_P50_DELTA_US: f64 = 100.0;
const TARGET_RSS_MIB: f64 = 10.0;

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    secs: f64,
    conns: usize,
    threads: usize,
    rounds: usize,
    warmup: f64,
    targets: String,
    pin: bool,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("bench: ignoring {name}={v:?} (not a number)");
            default
        }),
        _ => default,
    }
}

impl Config {
    fn from_env() -> Config {
        let c = Config {
            secs: env_num("BENCH_SECS", 5.0f64).max(0.1),
            conns: env_num("BENCH_CONNS", 64usize).max(1),
            threads: env_num("BENCH_THREADS", 2usize).max(1),
            rounds: env_num("BENCH_ROUNDS", 4usize).max(1),
            warmup: env_num("BENCH_WARMUP", 1.0f64).max(0.0),
            targets: std::env::var("BENCH_TARGETS").unwrap_or_else(|_| "abc".into()),
            pin: env_num("BENCH_PIN", 0u8) != 0,
        };
        Config {
            threads: c.threads.min(c.conns),
            ..c
        }
    }
    fn segment(&self) -> Duration {
        Duration::from_secs_f64(self.secs / self.rounds as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response parsing (shared by both load loops)

#[derive(Debug, Clone, Copy)]
struct Resp {
    /// Bytes of `buf` this response occupies.
    consumed: usize,
    status: u16,
    /// The body matched the expectation (always true without one).
    body_ok: bool,
    /// The server will close the connection after this response.
    close: bool,
}

/// Parses one response from the start of `buf`. `Ok(None)`: need more bytes. `eof`: the peer
/// closed, which completes a response delimited by the end of the connection.
fn parse_response(buf: &[u8], expect: Option<&[u8]>, eof: bool) -> Result<Option<Resp>, String> {
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
        status,
        body_ok,
        close,
    }))
}

/// Walks a chunked body: `Ok(Some((bytes, matches expect)))` once complete.
fn decode_chunked(body: &[u8], expect: Option<&[u8]>) -> Result<Option<(usize, bool)>, String> {
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
enum Outcome {
    Ok,
    Non2xx,
    /// Any other failure: I/O, protocol, or a 2xx with the wrong body.
    Error(String),
}

fn classify(r: &Resp) -> Outcome {
    if !(200..300).contains(&r.status) {
        Outcome::Non2xx
    } else if !r.body_ok {
        Outcome::Error(format!("status {} with an unexpected body", r.status))
    } else {
        Outcome::Ok
    }
}

#[derive(Default, Clone)]
struct Counts {
    ok: u64,
    non2xx: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Non2xx => self.non2xx += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
    fn merge(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

fn request_bytes(method: &str, path: &str, port: u16, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
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

// ---------------------------------------------------------------------------------------------
// c=1: one blocking keep-alive connection

struct BlockingClient {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
}

impl BlockingClient {
    fn new(addr: SocketAddr) -> BlockingClient {
        BlockingClient {
            addr,
            stream: None,
            buf: vec![0; RBUF].into_boxed_slice(),
        }
    }

    /// One request/response exchange. The raw response (for diagnostics) is `self.buf[..n]`
    /// with `n` the returned length.
    fn exchange(&mut self, req: &[u8], expect: Option<&[u8]>) -> Result<(Resp, usize), String> {
        let r = self.try_exchange(req, expect);
        match &r {
            Ok((resp, _)) if !resp.close => {}
            _ => self.stream = None,
        }
        r
    }

    /// Opens the keep-alive connection unless it is open.
    fn connect(&mut self) -> Result<&mut TcpStream, String> {
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

    fn try_exchange(&mut self, req: &[u8], expect: Option<&[u8]>) -> Result<(Resp, usize), String> {
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

struct LatencyRun {
    /// Latency of every 2xx-valid exchange, nanoseconds, sorted.
    samples: Vec<u64>,
    counts: Counts,
    secs: f64,
}

fn run_latency(addr: SocketAddr, req: &[u8], expect: Option<&[u8]>, dur: Duration) -> LatencyRun {
    let mut client = BlockingClient::new(addr);
    let mut samples = Vec::with_capacity(64 * 1024);
    let mut counts = Counts::default();
    // The connection is opened outside the measured exchanges (a failure shows up below).
    let _ = client.connect();
    let start = Instant::now();
    let end = start + dur;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let r = client.exchange(req, expect);
        let t1 = Instant::now();
        match r {
            Ok((resp, _)) => {
                let o = classify(&resp);
                if matches!(o, Outcome::Ok) {
                    samples.push((t1 - t0).as_nanos() as u64);
                }
                counts.add(o);
            }
            Err(e) => {
                counts.add(Outcome::Error(e));
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    samples.sort_unstable();
    LatencyRun {
        samples,
        counts,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// Nearest-rank percentile of sorted samples, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// c=64: closed-loop keep-alive connections on a mio event loop per thread

struct Conn {
    stream: Option<MioStream>,
    writing: bool,
    wpos: usize,
    filled: usize,
    buf: Box<[u8]>,
}

struct Loop<'a> {
    addr: SocketAddr,
    req: &'a [u8],
    expect: Option<&'a [u8]>,
    end: Instant,
    counts: Counts,
}

fn connect_mio(addr: SocketAddr) -> io::Result<MioStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(MioStream::from_std(s))
}

impl Loop<'_> {
    fn record(&mut self, o: Outcome) {
        if Instant::now() < self.end {
            self.counts.add(o);
        }
    }

    /// Drops the connection and opens a new one; false if that failed (the slot then stays
    /// idle for the rest of the run).
    fn reconnect(&mut self, poll: &Poll, token: Token, c: &mut Conn) -> bool {
        if let Some(mut old) = c.stream.take() {
            let _ = poll.registry().deregister(&mut old);
        }
        c.writing = true;
        c.wpos = 0;
        c.filled = 0;
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
    fn drive(&mut self, poll: &Poll, token: Token, c: &mut Conn) {
        loop {
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
                    self.record(if resp.consumed != c.filled {
                        Outcome::Error("bytes after the response".into())
                    } else {
                        classify(&resp)
                    });
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

struct ThroughputRun {
    counts: Counts,
    secs: f64,
}

impl ThroughputRun {
    fn rps(&self) -> f64 {
        self.counts.ok as f64 / self.secs
    }
}

fn run_throughput(
    addr: SocketAddr,
    req: &[u8],
    expect: Option<&[u8]>,
    conns: usize,
    threads: usize,
    dur: Duration,
) -> ThroughputRun {
    let barrier = Barrier::new(threads);
    let counts = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Thread t owns connections t, t+threads, ...: halves with 2 threads.
                let mine = (t..conns).step_by(threads).count();
                let barrier = &barrier;
                scope.spawn(move || throughput_thread(addr, req, expect, mine, barrier, dur))
            })
            .collect();
        let mut total = Counts::default();
        for h in handles {
            total.merge(&h.join().expect("load thread panicked"));
        }
        total
    });
    ThroughputRun {
        counts,
        secs: dur.as_secs_f64(),
    }
}

fn throughput_thread(
    addr: SocketAddr,
    req: &[u8],
    expect: Option<&[u8]>,
    conns: usize,
    barrier: &Barrier,
    dur: Duration,
) -> Counts {
    let mut poll = Poll::new().expect("mio poll");
    let mut lp = Loop {
        addr,
        req,
        expect,
        end: Instant::now() + Duration::from_secs(3600),
        counts: Counts::default(),
    };
    let mut slots: Vec<Conn> = (0..conns)
        .map(|_| Conn {
            stream: None,
            writing: true,
            wpos: 0,
            filled: 0,
            buf: vec![0; RBUF].into_boxed_slice(),
        })
        .collect();
    for (i, c) in slots.iter_mut().enumerate() {
        lp.reconnect(&poll, Token(i), c);
    }
    // Connection set-up (and its errors) is outside the measured window.
    let setup = std::mem::take(&mut lp.counts);
    barrier.wait();
    lp.end = Instant::now() + dur;
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
        if let Err(e) = poll.poll(&mut events, Some(lp.end - now)) {
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
    lp.counts
}

// ---------------------------------------------------------------------------------------------
// Processes and temp dir, all cleaned up by Drop (also on panic)

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
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

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A child process that is stopped, with everything it forked, when dropped.
struct Proc {
    name: String,
    child: Child,
    tail: Tail,
}

/// Sends a signal with kill(1): std only, no unsafe.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// pid -> (ppid, start time in clock ticks) of every process, from /proc.
fn process_table() -> HashMap<u32, (u32, u64)> {
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
fn descendants(root: u32) -> Vec<(u32, u64)> {
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

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr read by threads into a tail of recent lines. The
    /// first line for which `port_of` yields a port is sent back; `wait_port` receives it.
    fn spawn(
        name: &str,
        mut cmd: Command,
        port_of: fn(&str) -> Option<u16>,
    ) -> Result<(Proc, mpsc::Receiver<u16>), String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("{name}: spawn: {e}"))?;
        let tail: Tail = Arc::default();
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
            let (tail, tx) = (tail.clone(), tx.clone());
            thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = Vec::new();
                let mut sent = false;
                while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let s = String::from_utf8_lossy(&line).trim_end().to_string();
                    line.clear();
                    if !sent && let Some(p) = port_of(&s) {
                        sent = tx.send(p).is_ok();
                    }
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
            },
            rx,
        ))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tail(&self, n: usize) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let skip = t.len().saturating_sub(n);
        t.iter()
            .skip(skip)
            .map(|l| format!("    | {l}\n"))
            .collect()
    }

    fn wait_port(&mut self, rx: &mpsc::Receiver<u16>, timeout: Duration) -> Result<u16, String> {
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

fn listening_port(line: &str) -> Option<u16> {
    let i = line.find("listening on ")?;
    let rest = &line[i + "listening on ".len()..];
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':')
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

fn bare_port(line: &str) -> Option<u16> {
    line.trim().parse().ok()
}

/// Starts noslate with one function whose worker pool is `reservation` idle workers.
fn start_noslate(tmp: &Path, tag: &str, reservation: u32) -> Result<(Proc, u16), String> {
    let dir = tmp.join(tag);
    let (work, logs) = (dir.join("work"), dir.join("logs"));
    for d in [&work, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let functions = json!([{
        "name": "hello",
        "runtime": "nodejs",
        "url": function_dir(),
        "handler": "index.handler",
        "signature": "bench",
        "worker": {
            "reservationCount": reservation,
            "replicaCountLimit": reservation,
            "maxActivateRequests": 64
        }
    }]);
    let file = dir.join("functions.json");
    fs::write(&file, serde_json::to_vec_pretty(&functions).expect("json"))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(noslate_bin());
    cmd.arg("serve")
        .arg("--port")
        .arg("0")
        .arg("--functions")
        .arg(&file)
        .env("NOSLATE_WORKDIR", &work)
        .env("NOSLATE_LOGDIR", &logs);
    let (mut p, rx) = Proc::spawn(&format!("noslate[{tag}]"), cmd, listening_port)?;
    let port = p.wait_port(&rx, Duration::from_secs(20))?;
    initialize(&p, port)?;
    Ok((p, port))
}

/// POST /initialize until it answers 200 (workers up and initialized).
fn initialize(p: &Proc, port: u16) -> Result<(), String> {
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

fn start_node_direct() -> Result<(Proc, u16), String> {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(MANIFEST_DIR).join("benches/node_direct.js"))
        .arg("0")
        .env("HELLO_DIR", function_dir());
    let (mut p, rx) = Proc::spawn("node_direct", cmd, bare_port)?;
    let port = p.wait_port(&rx, Duration::from_secs(20))?;
    Ok((p, port))
}

/// The function's code directory: `examples/hello` unless `BENCH_FUNCTION_DIR` says otherwise.
fn function_dir() -> PathBuf {
    match std::env::var_os("BENCH_FUNCTION_DIR") {
        Some(d) if !d.is_empty() => fs::canonicalize(&d).unwrap_or_else(|_| PathBuf::from(d)),
        _ => Path::new(MANIFEST_DIR).join("examples/hello"),
    }
}

/// Whether the function exists; waits up to `BENCH_EXAMPLE_WAIT` seconds (default 0) for it.
fn wait_for_example() -> bool {
    let f = function_dir().join("index.js");
    let end = Instant::now() + Duration::from_secs(env_num("BENCH_EXAMPLE_WAIT", 0u64));
    loop {
        if f.exists() {
            return true;
        }
        if Instant::now() >= end {
            eprintln!("bench: {} is missing", f.display());
            return false;
        }
        thread::sleep(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Optional pinning of the c=1 phase (BENCH_PIN=1), with taskset(1): std only, no unsafe

/// The affinity mask of a process or thread, as taskset prints it (hex).
fn affinity(pid: u32) -> Option<String> {
    let out = Command::new("taskset")
        .args(["-p", &pid.to_string()])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Some(s.trim().rsplit(' ').next()?.to_string()).filter(|m| !m.is_empty())
}

fn set_affinity(pid: u32, mask: &str) -> bool {
    // -a: every thread of the process (a tid alone is a process of one thread here).
    Command::new("taskset")
        .args(["-a", "-p", mask, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// While alive, keeps the calling thread and the server processes (with everything they
/// forked) on one CPU; restores the previous masks when dropped.
struct Pin(Vec<(u32, String)>);

impl Pin {
    fn new(server: u32) -> Pin {
        let me = fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
        let mut pids: Vec<u32> = me.into_iter().chain([server]).collect();
        pids.extend(descendants(server).into_iter().map(|(p, _)| p));
        // The lowest CPU this process may use.
        let one = affinity(std::process::id())
            .and_then(|m| u128::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            .filter(|&m| m != 0)
            .map_or(1, |m| 1u128 << m.trailing_zeros());
        let mut saved = Vec::new();
        for pid in pids {
            if let Some(old) = affinity(pid)
                && set_affinity(pid, &format!("{one:x}"))
            {
                saved.push((pid, old));
            }
        }
        Pin(saved)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        for (pid, mask) in &self.0 {
            set_affinity(*pid, mask);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement bookkeeping and report

struct Target {
    key: char,
    label: &'static str,
    addr: Option<SocketAddr>,
    /// The server process (for BENCH_PIN).
    pid: Option<u32>,
    req: Vec<u8>,
    expect: Option<&'static [u8]>,
    note: Option<String>,
    rounds: Vec<(LatencyRun, ThroughputRun)>,
    warmup: Counts,
}

impl Target {
    fn new(key: char, label: &'static str) -> Target {
        Target {
            key,
            label,
            addr: None,
            pid: None,
            req: Vec::new(),
            expect: None,
            note: None,
            rounds: Vec::new(),
            warmup: Counts::default(),
        }
    }

    fn set(
        &mut self,
        p: &Proc,
        port: u16,
        method: &str,
        path: &str,
        body: &[u8],
        expect: Option<&'static [u8]>,
    ) {
        self.addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        self.pid = Some(p.pid());
        self.req = request_bytes(method, path, port, body);
        self.expect = expect;
    }

    /// One validated request before measuring, so that a broken target fails loudly and fast.
    fn probe(&mut self) {
        let Some(addr) = self.addr else { return };
        let mut c = BlockingClient::new(addr);
        let problem = match c.exchange(&self.req, self.expect) {
            Ok((r, n)) => match classify(&r) {
                Outcome::Ok => None,
                _ => Some(format!(
                    "probe got: {}",
                    String::from_utf8_lossy(&c.buf[..n]).escape_debug()
                )),
            },
            Err(e) => Some(format!("probe failed: {e}")),
        };
        if let Some(p) = problem {
            self.addr = None;
            self.note = Some(p);
        }
    }
}

struct Stats {
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    max: Option<f64>,
    samples: usize,
    c1_rps: f64,
    rps: f64,
    c1: Counts,
    c64: Counts,
}

impl Stats {
    /// Rounds pooled: all c=1 samples sorted together, c=64 total 2xx over total time.
    fn pooled(runs: &[(LatencyRun, ThroughputRun)]) -> Stats {
        let mut samples: Vec<u64> = runs
            .iter()
            .flat_map(|r| r.0.samples.iter().copied())
            .collect();
        samples.sort_unstable();
        let (mut c1, mut c64) = (Counts::default(), Counts::default());
        let (mut lat_secs, mut tp_secs) = (0.0, 0.0);
        for (lat, tp) in runs {
            c1.merge(&lat.counts);
            c64.merge(&tp.counts);
            lat_secs += lat.secs;
            tp_secs += tp.secs;
        }
        let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Stats {
            p50: percentile_us(&samples, 50.0),
            p99: percentile_us(&samples, 99.0),
            p999: percentile_us(&samples, 99.9),
            max: samples.last().map(|&n| n as f64 / 1000.0),
            samples: samples.len(),
            c1_rps: rate(c1.ok, lat_secs),
            rps: rate(c64.ok, tp_secs),
            c1,
            c64,
        }
    }

    fn clean(&self) -> bool {
        self.samples > 0 && self.c1.non2xx + self.c1.errors + self.c64.non2xx + self.c64.errors == 0
    }

    fn first_error(&self) -> Option<&String> {
        self.c1
            .first_error
            .as_ref()
            .or(self.c64.first_error.as_ref())
    }

    fn json(&self) -> Value {
        json!({
            "c1": {"p50_us": self.p50, "p99_us": self.p99, "p999_us": self.p999, "max_us": self.max,
                   "samples": self.samples, "req_per_s": self.c1_rps,
                   "ok": self.c1.ok, "non2xx": self.c1.non2xx, "errors": self.c1.errors,
                   "first_error": self.c1.first_error},
            "c64": {"req_per_s": self.rps, "ok": self.c64.ok, "non2xx": self.c64.non2xx,
                    "errors": self.c64.errors, "first_error": self.c64.first_error},
        })
    }
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn fmt_int(v: f64) -> String {
    let s = format!("{v:.0}");
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

const HEADER: &str =
    "target                   c=1 p50 µs    p99 µs   p999 µs   c=64 req/s  non-2xx  errors";

fn row(label: &str, s: Option<&Stats>, verdict: &str) -> String {
    let cols = match s {
        Some(s) => [
            fmt_us(s.p50),
            fmt_us(s.p99),
            fmt_us(s.p999),
            fmt_int(s.rps),
            (s.c1.non2xx + s.c64.non2xx).to_string(),
            (s.c1.errors + s.c64.errors).to_string(),
        ],
        None => Default::default(),
    };
    let [p50, p99, p999, rps, non2xx, errors] =
        cols.map(|c| if c.is_empty() { "-".to_string() } else { c });
    format!("{label:<24} {p50:>10} {p99:>9} {p999:>9} {rps:>12} {non2xx:>8} {errors:>7}  {verdict}")
        .trim_end()
        .to_string()
}

fn pass(b: bool) -> &'static str {
    if b { "PASS" } else { "FAIL" }
}

/// (busy, idle, steal) jiffies from the first line of /proc/stat.
fn cpu_times() -> Option<[u64; 3]> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    Some([g(0) + g(1) + g(2) + g(5) + g(6), g(3) + g(4), g(7)])
}

fn measure_rss(tmp: &Path) -> Value {
    match start_noslate(tmp, "rss", 2) {
        Ok((p, _port)) => {
            thread::sleep(Duration::from_secs(1));
            let rss = vm_rss_kib(p.pid());
            let kids: Vec<u32> = process_table()
                .iter()
                .filter(|(_, (ppid, _))| *ppid == p.pid())
                .map(|(&pid, _)| pid)
                .collect();
            let kids_rss: u64 = kids.iter().filter_map(|&k| vm_rss_kib(k)).sum();
            json!({"runtime_vm_rss_kib": rss, "child_processes": kids.len(), "children_vm_rss_kib": kids_rss})
        }
        Err(e) => {
            eprintln!("bench: RSS measurement failed: {e}");
            json!({"error": e})
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The comparisons the bench is about, from one set of rows (a, b, c).
#[derive(Clone, Copy, Default)]
struct Ratios {
    tp_bc: Option<f64>,
    p50_bc: Option<f64>,
    tp_ba: Option<f64>,
    p50_ba: Option<f64>,
}

impl Ratios {
    fn of(s: &[Option<Stats>]) -> Ratios {
        let (a, b, c) = (s[0].as_ref(), s[1].as_ref(), s[2].as_ref());
        let tp = |x: &Stats, y: &Stats| (y.rps > 0.0).then(|| x.rps / y.rps);
        let p50 = |x: &Stats, y: &Stats| Some(x.p50? - y.p50?);
        Ratios {
            tp_bc: b.zip(c).and_then(|(b, c)| tp(b, c)),
            p50_bc: b.zip(c).and_then(|(b, c)| p50(b, c)),
            tp_ba: b.zip(a).and_then(|(b, a)| tp(b, a)),
            p50_ba: b.zip(a).and_then(|(b, a)| p50(b, a)),
        }
    }

    /// Median over the rounds of each paired (same round, adjacent in time) comparison.
    fn median_of(rounds: &[Ratios]) -> Ratios {
        let m = |f: fn(&Ratios) -> Option<f64>| median(rounds.iter().filter_map(f).collect());
        Ratios {
            tp_bc: m(|r| r.tp_bc),
            p50_bc: m(|r| r.p50_bc),
            tp_ba: m(|r| r.tp_ba),
            p50_ba: m(|r| r.p50_ba),
        }
    }

    fn json(&self) -> Value {
        json!({"throughput_b_over_c": self.tp_bc, "p50_b_minus_c_us": self.p50_bc,
               "throughput_b_over_a": self.tp_ba, "p50_b_minus_a_us": self.p50_ba})
    }
}

/// The headline value, then the per-round values and the pooled one in brackets.
fn fmt_ratio(
    head: &Ratios,
    rounds: &[Ratios],
    pool: &Ratios,
    f: fn(&Ratios) -> Option<f64>,
    signed: bool,
) -> String {
    let one = |v: Option<f64>| match v {
        Some(x) if signed => format!("{x:+.1}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    };
    if rounds.len() < 2 {
        return one(f(head));
    }
    let r: Vec<String> = rounds.iter().map(|r| one(f(r))).collect();
    format!(
        "{} [rounds {}; pooled {}]",
        one(f(head)),
        r.join(" "),
        one(f(pool))
    )
}

/// Starts the servers and fills in each target's address and request.
fn setup_targets(
    cfg: &Config,
    tmp: &Path,
    have_example: bool,
    targets: &mut [Target; 3],
) -> (Option<Proc>, Option<Proc>) {
    let (mut noslate, mut node) = (None, None);
    let first_line = |e: &str| Some(e.lines().next().unwrap_or_default().to_string());
    let missing = || Err::<(Proc, u16), String>("examples/hello/index.js missing".into());
    if cfg.targets.contains(['a', 'b']) {
        match if have_example {
            start_noslate(tmp, "main", 1)
        } else {
            missing()
        } {
            Ok((p, port)) => {
                targets[0].set(&p, port, "GET", "/healthz", b"", None);
                targets[1].set(&p, port, "POST", "/invoke", BODY, Some(BODY));
                noslate = Some(p);
            }
            Err(e) => {
                eprintln!("bench: noslate: {e}");
                targets[0].note = first_line(&e);
                targets[1].note = first_line(&e);
            }
        }
    }
    if cfg.targets.contains('c') {
        match if have_example {
            start_node_direct()
        } else {
            missing()
        } {
            Ok((p, port)) => {
                targets[2].set(&p, port, "POST", "/invoke", BODY, Some(BODY));
                node = Some(p);
            }
            Err(e) => {
                eprintln!("bench: node direct: {e}");
                targets[2].note = first_line(&e);
            }
        }
    }
    for t in targets.iter_mut() {
        if !cfg.targets.contains(t.key) {
            t.addr = None;
            t.note = Some("not selected (BENCH_TARGETS)".into());
        }
        t.probe();
    }
    (noslate, node)
}

/// Round r runs the targets in this order: a→b→c, then c→b→a, and so on. (b) is always
/// adjacent in time to both (a) and (c).
fn round_order(r: usize) -> [usize; 3] {
    if r.is_multiple_of(2) {
        [0, 1, 2]
    } else {
        [2, 1, 0]
    }
}

fn run_rounds(cfg: &Config, targets: &mut [Target; 3]) {
    let seg = cfg.segment();
    for r in 0..cfg.rounds {
        for i in round_order(r) {
            let t = &mut targets[i];
            let Some(addr) = t.addr else { continue };
            let warm = if r == 0 { cfg.warmup } else { cfg.warmup / 4.0 };
            if warm > 0.0 {
                let w = run_throughput(
                    addr,
                    &t.req,
                    t.expect,
                    cfg.conns,
                    cfg.threads,
                    Duration::from_secs_f64(warm),
                );
                t.warmup.merge(&w.counts);
            }
            let lat = {
                let _pin = (cfg.pin).then(|| t.pid.map(Pin::new));
                run_latency(addr, &t.req, t.expect, seg)
            };
            let tp = run_throughput(addr, &t.req, t.expect, cfg.conns, cfg.threads, seg);
            eprintln!(
                "bench: round {} {:<22} c=1 p50 {:>6} µs, p99 {:>7} µs, {} ok {} non-2xx {} err | c=64 {:>7} req/s, {} non-2xx {} err",
                r + 1,
                t.label,
                fmt_us(percentile_us(&lat.samples, 50.0)),
                fmt_us(percentile_us(&lat.samples, 99.0)),
                lat.counts.ok,
                lat.counts.non2xx,
                lat.counts.errors,
                fmt_int(tp.rps()),
                tp.counts.non2xx,
                tp.counts.errors
            );
            t.rounds.push((lat, tp));
        }
    }
}

/// What was observed besides the rows.
struct Extra {
    rss: Value,
    rss_after: Option<u64>,
    cpu: Option<(f64, f64)>,
    loadavg: String,
    total_secs: f64,
}

/// Prints the tables and verdicts; returns the JSON report.
fn report(cfg: &Config, targets: &[Target; 3], x: &Extra) -> Value {
    let per_round: Vec<Vec<Option<Stats>>> = (0..cfg.rounds)
        .map(|r| {
            targets
                .iter()
                .map(|t| {
                    t.rounds
                        .get(r)
                        .map(|x| Stats::pooled(std::slice::from_ref(x)))
                })
                .collect()
        })
        .collect();
    let agg: Vec<Option<Stats>> = targets
        .iter()
        .map(|t| (!t.rounds.is_empty()).then(|| Stats::pooled(&t.rounds)))
        .collect();
    let round_ratios: Vec<Ratios> = per_round.iter().map(|s| Ratios::of(s)).collect();
    let pooled = Ratios::of(&agg);
    let head = Ratios::median_of(&round_ratios);
    let tp_ok = head.tp_bc.is_some_and(|r| r >= TARGET_TP_RATIO);
    let p50_ok = head.p50_bc.is_some_and(|d| d <= TARGET_P50_DELTA_US);
    let rss_kib = x.rss.get("runtime_vm_rss_kib").and_then(Value::as_u64);
    let rss_ok = rss_kib.is_some_and(|k| (k as f64) / 1024.0 < TARGET_RSS_MIB);
    let verdicts: Vec<bool> = (0..3)
        .map(|i| {
            let t = &targets[i];
            let clean = t.note.is_none()
                && agg[i].as_ref().is_some_and(Stats::clean)
                && t.warmup.errors + t.warmup.non2xx == 0;
            clean && (i != 1 || (tp_ok && p50_ok))
        })
        .collect();

    let mut out = String::new();
    let seg = cfg.segment().as_secs_f64();
    let pin = if cfg.pin {
        ", c=1 pinned to one CPU"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "\nper round ({seg:.2} s per mode and target{pin}; order a→b→c, then c→b→a, ...)"
    );
    let _ = writeln!(out, "rnd {HEADER}");
    for (r, stats) in per_round.iter().enumerate() {
        for i in round_order(r) {
            if targets[i].rounds.len() > r {
                let _ = writeln!(
                    out,
                    "{:<3} {}",
                    r + 1,
                    row(targets[i].label, stats[i].as_ref(), "")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nall rounds pooled (c=1 percentiles over all samples, c=64 total 2xx / total time)"
    );
    let _ = writeln!(out, "    {HEADER}");
    for (i, t) in targets.iter().enumerate() {
        let mut verdict = pass(verdicts[i]).to_string();
        let first_error = agg[i]
            .as_ref()
            .and_then(Stats::first_error)
            .or(t.warmup.first_error.as_ref());
        if let Some(e) = t.note.as_ref().or(first_error) {
            let _ = write!(verdict, " ({e})");
        }
        let _ = writeln!(out, "    {}", row(t.label, agg[i].as_ref(), &verdict));
    }
    let how = if cfg.rounds > 1 {
        "median of the per-round pairs"
    } else {
        "one round"
    };
    let _ = writeln!(
        out,
        "\nratios from this run ({how}; compare these, not absolute numbers):"
    );
    let _ = writeln!(
        out,
        "  throughput b/c = {} (target >= {TARGET_TP_RATIO:.1})  {}",
        fmt_ratio(&head, &round_ratios, &pooled, |r| r.tp_bc, false),
        pass(tp_ok)
    );
    let _ = writeln!(
        out,
        "  p50 b-c = {} µs (target <= +{TARGET_P50_DELTA_US:.0} µs)  {}",
        fmt_ratio(&head, &round_ratios, &pooled, |r| r.p50_bc, true),
        pass(p50_ok)
    );
    let _ = writeln!(
        out,
        "  throughput b/a = {}; p50 b-a = {} µs (the function path against the runtime's own HTTP floor; informational)",
        fmt_ratio(&head, &round_ratios, &pooled, |r| r.tp_ba, false),
        fmt_ratio(&head, &round_ratios, &pooled, |r| r.p50_ba, true),
    );
    let kib = |k: &str| x.rss.get(k).and_then(Value::as_u64).unwrap_or(0);
    match rss_kib {
        Some(k) => {
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: {:.1} MiB (target < {TARGET_RSS_MIB:.0} MiB)  {}  [not counting its {} child processes: {:.1} MiB together]",
                k as f64 / 1024.0,
                pass(rss_ok),
                kib("child_processes"),
                kib("children_vm_rss_kib") as f64 / 1024.0
            );
        }
        None => {
            let e = x.rss.get("error").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: not measured (target < {TARGET_RSS_MIB:.0} MiB)  FAIL ({})",
                e.lines().next().unwrap_or_default()
            );
        }
    }
    if let Some(k) = x.rss_after {
        let _ = writeln!(
            out,
            "runtime RSS after the load (1 worker; informational): {:.1} MiB",
            k as f64 / 1024.0
        );
    }
    if let Some((busy, steal)) = x.cpu {
        let _ = writeln!(
            out,
            "machine: {busy:.0}% CPU busy during the run (the bench included), {steal:.1}% steal; loadavg before {}",
            x.loadavg
        );
    }
    let all = verdicts.iter().all(|&v| v) && rss_ok;
    let _ = writeln!(
        out,
        "overall: {} in {:.0} s (reported, not asserted: the exit status is 0 either way)",
        pass(all),
        x.total_secs
    );
    print!("{out}");

    let target_json: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "key": t.key.to_string(),
                "label": t.label,
                "note": t.note,
                "pass": verdicts[i],
                "warmup": {"ok": t.warmup.ok, "non2xx": t.warmup.non2xx, "errors": t.warmup.errors},
                "rounds": per_round.iter().map(|r| r[i].as_ref().map(Stats::json)).collect::<Vec<_>>(),
                "pooled": agg[i].as_ref().map(Stats::json),
            })
        })
        .collect();
    json!({
        "config": {"secs": cfg.secs, "segment_secs": seg, "conns": cfg.conns,
                   "threads": cfg.threads, "rounds": cfg.rounds, "warmup_secs": cfg.warmup,
                   "pin_c1": cfg.pin, "noslate_workers": 1, "node_direct_processes": 1,
                   "cpus": thread::available_parallelism().map(|n| n.get()).ok()},
        "targets": target_json,
        "ratios": {
            "median_of_rounds": head.json(),
            "per_round": round_ratios.iter().map(Ratios::json).collect::<Vec<_>>(),
            "pooled": pooled.json(),
            "targets": {"throughput_b_over_c_min": TARGET_TP_RATIO, "p50_b_minus_c_max_us": TARGET_P50_DELTA_US},
            "pass": {"throughput_b_over_c": tp_ok, "p50_b_minus_c": p50_ok},
        },
        "rss": {"two_idle_workers": x.rss, "target_max_mib": TARGET_RSS_MIB, "pass": rss_ok,
                "after_load_kib": x.rss_after},
        "machine": {"busy_pct": x.cpu.map(|c| c.0), "steal_pct": x.cpu.map(|c| c.1), "loadavg_before": x.loadavg},
        "total_secs": x.total_secs,
        "pass": all,
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // there it should only prove that the bench builds, not spend a minute loading the machine.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e bench: built; run it with `make bench` (cargo bench --bench e2e)");
        return;
    }
    let cfg = Config::from_env();
    let t_start = Instant::now();
    let cpu0 = cpu_times();
    let loadavg = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!("noslate e2e bench: {}", noslate_bin().display());
    println!(
        "  {} rounds x {:.2} s per mode and target (BENCH_SECS={} split over BENCH_ROUNDS), c=64 = {} conns on {} threads, warm-up {} s{}",
        cfg.rounds,
        cfg.segment().as_secs_f64(),
        cfg.secs,
        cfg.conns,
        cfg.threads,
        cfg.warmup,
        if cfg.pin {
            ", c=1 pinned to one CPU (BENCH_PIN)"
        } else {
            ""
        }
    );
    println!(
        "  noslate runs ONE Node.js worker (reservationCount = replicaCountLimit = 1) against ONE Node.js process in (c): apples to apples"
    );

    // Declared first, so dropped last: after every process below is gone.
    let tmp = TempDir::new().expect("temp dir");
    let have_example = wait_for_example();

    // Runtime memory with two idle workers, measured alone before the load.
    let rss = if have_example && cfg.targets.contains(['a', 'b']) {
        measure_rss(&tmp.0)
    } else {
        json!({"error": "skipped"})
    };

    let mut targets = [
        Target::new('a', "(a) noslate /healthz"),
        Target::new('b', "(b) noslate /invoke"),
        Target::new('c', "(c) node http direct"),
    ];
    let (noslate, node) = setup_targets(&cfg, &tmp.0, have_example, &mut targets);
    run_rounds(&cfg, &mut targets);
    let rss_after = noslate.as_ref().and_then(|p| vm_rss_kib(p.pid()));
    let cpu = cpu0.zip(cpu_times()).map(|(a, b)| {
        let d: Vec<f64> = (0..3).map(|i| b[i].saturating_sub(a[i]) as f64).collect();
        let total = (d[0] + d[1] + d[2]).max(1.0);
        (100.0 * d[0] / total, 100.0 * d[2] / total)
    });
    drop(noslate);
    drop(node);

    let extra = Extra {
        rss,
        rss_after,
        cpu,
        loadavg,
        total_secs: t_start.elapsed().as_secs_f64(),
    };
    let json = report(&cfg, &targets, &extra);
    let target_dir = Path::new(NOSLATE_BIN)
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let path = target_dir.join("bench/e2e.json");
    let written = fs::create_dir_all(target_dir.join("bench")).and_then(|()| {
        fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("json") + "\n",
        )
    });
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("bench: could not write {}: {e}", path.display()),
    }
    let _ = io::stdout().flush();
}
