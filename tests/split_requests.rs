//! Requests delivered the way a network delivers them: a byte at a time, split at random points,
//! stalled, cut off, half-closed, and followed by bytes the runtime never reads. A request
//! delivered in pieces must get the same answer, byte for byte (`Date` aside), as the same
//! request sent in one write; a connection that ends early must leave the runtime healthy and
//! idle; an answer must survive the client's half-close and the bytes it sent after a bad head.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Noslate, RawEnd, RawReader, RawResponse, Req, SplitMix, connect_with_recv_buffer,
    cpu_ticks_over, profile, raw_connect, wait_until,
};
use serde_json::json;

/// How long any read in these tests may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a healthy runtime answers a request on a fresh connection.
const PROMPT: Duration = Duration::from_secs(3);
/// CPU ticks the runtime may use over one idle second (a spinning loop uses about 100).
const IDLE_TICKS: u64 = 50;

fn echo() -> Noslate {
    Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({
            "turf": {"spareWorkers": 0},
            "systemCircuitBreaker": {"systemLoad1Limit": 1000}
        }))
        .start()
}

/// One request shape: the bytes a client sends and what it expects back.
#[derive(Debug, Clone)]
struct Shape {
    name: &'static str,
    bytes: Vec<u8>,
    /// One entry per request in `bytes`: whether it is a HEAD (its answer has no body).
    heads: Vec<bool>,
    /// Sent to the admin socket instead of the FC port.
    admin: bool,
}

impl Shape {
    fn new(name: &'static str, reqs: &[Vec<u8>], heads: &[bool]) -> Shape {
        Shape {
            name,
            bytes: reqs.concat(),
            heads: heads.to_vec(),
            admin: false,
        }
    }
}

fn invoke(id: &str, body: &[u8]) -> Vec<u8> {
    Req::new("POST", "/invoke")
        .header("x-fc-request-id", id)
        .body(body)
        .to_bytes()
}

fn chunked_invoke(id: &str) -> Vec<u8> {
    let mut raw = Req::new("POST", "/invoke")
        .header("x-fc-request-id", id)
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    raw.extend_from_slice(
        b"5;ext=1\r\nhello\r\n1\r\n,\r\n6;a;b=\"q v\"\r\n world\r\nA\r\n0123456789\r\n\
          0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n",
    );
    raw
}

fn trigger_put(id: &str) -> Vec<u8> {
    Req::new("PUT", "/some/deep/path?q=1&q=2&r=a%20b")
        .header("x-fc-request-id", id)
        .header("X-Repeat", "first")
        .header("Content-Type", "text/plain")
        .header("X-Repeat", "second")
        .header("x-repeat", "third")
        .body(b"the put body")
        .to_bytes()
}

fn trigger_head(id: &str) -> Vec<u8> {
    Req::new("HEAD", "/a/head/path?x=1")
        .header("x-fc-request-id", id)
        .to_bytes()
}

fn healthz() -> Vec<u8> {
    Req::new("GET", "/healthz").to_bytes()
}

/// Every request shape the front end serves.
fn shapes() -> Vec<Shape> {
    let expect = Req::new("POST", "/invoke")
        .header("x-fc-request-id", "split-expect")
        .header("Expect", "100-continue")
        .body(b"continued")
        .to_bytes();
    let mut admin = Shape::new(
        "admin GET /v1/functions",
        &[Req::new("GET", "/v1/functions").to_bytes()],
        &[false],
    );
    admin.admin = true;
    // A full invocation on the admin socket: what the function sees is in `x-noslate-*`
    // headers, and the body is chunked.
    let mut admin_invoke_bytes = Req::new("POST", "/v1/invoke/echo")
        .header("x-noslate-method", "PATCH")
        .header("x-noslate-url", "/via/admin?x=1")
        .header(
            "x-noslate-headers",
            r#"[["Host","example.com"],["x-a","1"],["x-a","2"]]"#,
        )
        .header("x-noslate-baggage", r#"[["tenant","t1"]]"#)
        .header("x-noslate-request-id", "split-admin-invoke")
        .header("x-noslate-timeout", "5000")
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    admin_invoke_bytes.extend_from_slice(b"7\r\nthrough\r\n6\r\n admin\r\n0\r\n\r\n");
    let mut admin_invoke = Shape::new(
        "admin POST /v1/invoke with metadata and a chunked body",
        &[admin_invoke_bytes],
        &[false],
    );
    admin_invoke.admin = true;
    vec![
        Shape::new("GET /healthz", &[healthz()], &[false]),
        Shape::new(
            "POST /invoke with Content-Length",
            &[invoke("split-invoke", b"hello, split world")],
            &[false],
        ),
        Shape::new(
            "POST /invoke chunked with extensions and trailers",
            &[chunked_invoke("split-chunked")],
            &[false],
        ),
        Shape::new(
            "HTTP trigger PUT with a query and repeated headers",
            &[trigger_put("split-put")],
            &[false],
        ),
        Shape::new("HTTP trigger HEAD", &[trigger_head("split-head")], &[true]),
        Shape::new("Expect: 100-continue", &[expect], &[false]),
        Shape::new(
            "two pipelined requests",
            &[invoke("split-p2", b"first of two"), healthz()],
            &[false, false],
        ),
        Shape::new(
            "three pipelined requests",
            &[
                invoke("split-p3", b"first of three"),
                trigger_put("split-p3-put"),
                trigger_head("split-p3-head"),
            ],
            &[false, false, true],
        ),
        Shape::new(
            "POST /initialize",
            &[Req::new("POST", "/initialize")
                .header("x-fc-request-id", "split-init")
                .to_bytes()],
            &[false],
        ),
        Shape::new(
            "GET /pre-freeze",
            &[Req::new("GET", "/pre-freeze")
                .header("x-fc-request-id", "split-freeze")
                .to_bytes()],
            &[false],
        ),
        admin,
        admin_invoke,
    ]
}

/// A connection to either socket of the runtime.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn open(ns: &Noslate, admin: bool) -> Sock {
        if admin {
            let s = UnixStream::connect(ns.admin_socket()).expect("connect to the admin socket");
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
            Sock::Unix(s)
        } else {
            Sock::Tcp(raw_connect(ns.port(), READ_TIMEOUT))
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

/// Reads the answers to the requests of `shape`: interim (1xx) answers and then the final
/// answer of each request, each without its `Date` field.
fn read_answers(reader: &mut RawReader<&mut Sock>, shape: &Shape) -> Result<Vec<Vec<u8>>, String> {
    let mut answers = Vec::new();
    for (i, &head) in shape.heads.iter().enumerate() {
        loop {
            let resp = reader.next(head).map_err(|end| {
                format!(
                    "answer to request {i} incomplete ({end:?}) after {} complete answers; \
                     pending bytes {:?}",
                    answers.len(),
                    String::from_utf8_lossy(reader.pending())
                )
            })?;
            answers.push(resp.without_date());
            if resp.status >= 200 {
                break;
            }
        }
    }
    Ok(answers)
}

/// Sends `shape` in pieces ending at `cuts` (ascending offsets; the last piece runs to the end),
/// pausing `pause(i)` after piece `i`, and reads its answers.
fn exchange(
    ns: &Noslate,
    shape: &Shape,
    cuts: &[usize],
    pause: &mut dyn FnMut(usize) -> Duration,
) -> Result<Vec<Vec<u8>>, String> {
    let mut sock = Sock::open(ns, shape.admin);
    let mut from = 0;
    for (i, &to) in cuts.iter().chain([shape.bytes.len()].iter()).enumerate() {
        if to <= from {
            continue;
        }
        sock.write_all(&shape.bytes[from..to])
            .and_then(|()| sock.flush())
            .map_err(|e| format!("writing bytes {from}..{to} failed: {e}"))?;
        from = to;
        if to < shape.bytes.len() {
            let wait = pause(i);
            if !wait.is_zero() {
                // Pacing the delivery (what is under test), not waiting for anything.
                thread::sleep(wait);
            }
        }
    }
    let mut reader = RawReader::new(&mut sock);
    read_answers(&mut reader, shape)
}

/// The answers to each shape sent in one write; every final status is 200.
fn references(ns: &Noslate, shapes: &[Shape]) -> Vec<Vec<Vec<u8>>> {
    shapes
        .iter()
        .map(|shape| {
            let answers = exchange(ns, shape, &[], &mut |_| Duration::ZERO)
                .unwrap_or_else(|e| panic!("{}: sent in one write: {e}", shape.name));
            for a in &answers {
                let text = String::from_utf8_lossy(a);
                assert!(
                    text.starts_with("HTTP/1.1 200 ") || text.starts_with("HTTP/1.1 100 "),
                    "{}: sent in one write, answered {text:?}",
                    shape.name
                );
            }
            answers
        })
        .collect()
}

/// Describes how `got` differs from `want` (None when equal).
fn difference(want: &[Vec<u8>], got: &[Vec<u8>]) -> Option<String> {
    if want == got {
        return None;
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w != g {
            return Some(format!(
                "answer {i} differs:\n  in one write: {:?}\n  in pieces:    {:?}",
                String::from_utf8_lossy(w),
                String::from_utf8_lossy(g)
            ));
        }
    }
    Some(format!("{} answers instead of {}", got.len(), want.len()))
}

#[track_caller]
fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what} failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Deliveries in pieces

#[test]
fn every_shape_delivered_one_byte_at_a_time_is_answered_as_in_one_write() {
    let ns = echo();
    let shapes = shapes();
    let want = references(&ns, &shapes);
    let mut failures = Vec::new();
    for (shape, want) in shapes.iter().zip(&want) {
        let cuts: Vec<usize> = (1..shape.bytes.len()).collect();
        match exchange(&ns, shape, &cuts, &mut |_| Duration::from_micros(100)) {
            Ok(got) => {
                if let Some(diff) = difference(want, &got) {
                    failures.push(format!("{}: {diff}", shape.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", shape.name)),
        }
    }
    assert_no_failures("byte-at-a-time deliveries", &failures);
}

#[test]
fn every_shape_split_at_random_points_is_answered_as_in_one_write() {
    const SEEDS: u64 = 20;
    let ns = echo();
    let shapes = shapes();
    let want = references(&ns, &shapes);
    let mut failures = Vec::new();
    for (n, (shape, want)) in shapes.iter().zip(&want).enumerate() {
        for s in 0..SEEDS {
            let seed = 0x5EED_0000 + (n as u64) * 1000 + s;
            let mut rng = SplitMix::new(seed);
            let pieces = 1 + rng.below(12);
            let mut cuts: Vec<usize> = (0..pieces)
                .map(|_| 1 + rng.below(shape.bytes.len() - 1))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut pauses = rng.clone();
            let result = exchange(&ns, shape, &cuts, &mut |_| {
                Duration::from_micros(pauses.below(2000) as u64)
            });
            match result {
                Ok(got) => {
                    if let Some(diff) = difference(want, &got) {
                        failures.push(format!(
                            "{} (seed {seed:#x}, cuts {cuts:?}): {diff}",
                            shape.name
                        ));
                    }
                }
                Err(e) => failures.push(format!(
                    "{} (seed {seed:#x}, cuts {cuts:?}): {e}",
                    shape.name
                )),
            }
        }
    }
    assert_no_failures("random splits", &failures);
}

// ---------------------------------------------------------------------------------------------
// Stalled, closed and half-closed partial heads

/// The runtime answers `GET /healthz` on a fresh connection within [`PROMPT`].
#[track_caller]
fn assert_prompt_healthz(ns: &Noslate, after: &str) {
    let started = Instant::now();
    let mut s = raw_connect(ns.port(), PROMPT);
    s.write_all(&healthz()).expect("write GET /healthz");
    let resp = RawReader::new(&mut s).next(false);
    let took = started.elapsed();
    match resp {
        Ok(resp) => assert_eq!(
            resp.status,
            200,
            "after {after}: GET /healthz answered {:?}",
            String::from_utf8_lossy(&resp.bytes)
        ),
        Err(end) => panic!("after {after}: GET /healthz not answered within {PROMPT:?} ({end:?})"),
    }
    assert!(took <= PROMPT, "after {after}: GET /healthz took {took:?}");
}

/// The runtime uses less than [`IDLE_TICKS`] of CPU over one second while nothing happens.
#[track_caller]
fn assert_idle(ns: &Noslate, after: &str) {
    let ticks = cpu_ticks_over(ns.pid(), Duration::from_secs(1));
    assert!(
        ticks < IDLE_TICKS,
        "after {after}: the runtime used {ticks} CPU ticks in one idle second (spinning?)"
    );
}

/// Keeps the runtime stopped (SIGSTOP) until dropped, so that whatever the test sends meanwhile
/// is waiting in its sockets when it resumes.
struct Stopped(i32);

impl Stopped {
    fn new(ns: &Noslate) -> Stopped {
        let pid = ns.pid();
        common::signal(pid, libc::SIGSTOP);
        let stopped = Stopped(pid);
        wait_until(PROMPT, "the runtime is stopped", || {
            common::proc_state(pid) == Some('T')
        });
        stopped
    }
}

/// Serves one request on `sock` (`GET /healthz`, or `GET /v1/stats` on the admin socket), so
/// that the runtime has surely accepted it and is waiting for its next request.
fn warm_up(sock: &mut (impl Read + Write), admin: bool) {
    let req = if admin {
        Req::new("GET", "/v1/stats").to_bytes()
    } else {
        healthz()
    };
    sock.write_all(&req).expect("write the warm-up request");
    let resp = RawReader::new(sock)
        .next(false)
        .unwrap_or_else(|end| panic!("a request on a fresh connection: {end:?}"));
    assert_eq!(resp.status, 200);
}

impl Drop for Stopped {
    fn drop(&mut self) {
        common::signal(self.0, libc::SIGCONT);
    }
}

/// A request cut short at `cut`, for the stall, close and half-close tests.
#[derive(Debug, Clone)]
struct Partial {
    what: &'static str,
    shape: Shape,
    cut: usize,
    /// A complete request comes before the cut one.
    pipelined: bool,
}

fn partials() -> Vec<Partial> {
    let shapes = shapes();
    let by_name = |name: &str| shapes.iter().find(|s| s.name == name).unwrap().clone();
    let single = by_name("POST /invoke with Content-Length");
    let request_line = single.bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let head_end = single
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    let two = by_name("two pipelined requests");
    let first_len = invoke("split-p2", b"first of two").len();
    let second_half = first_len + (two.bytes.len() - first_len) / 2;
    let chunked = by_name("POST /invoke chunked with extensions and trailers");
    let chunk_size_line = chunked
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 6;
    vec![
        Partial {
            what: "one byte of a request line",
            shape: by_name("GET /healthz"),
            cut: 1,
            pipelined: false,
        },
        Partial {
            what: "a request line alone",
            shape: single.clone(),
            cut: request_line,
            pipelined: false,
        },
        Partial {
            what: "half a head",
            shape: single.clone(),
            cut: head_end / 2,
            pipelined: false,
        },
        Partial {
            what: "a head without its last LF",
            shape: single.clone(),
            cut: head_end + 3,
            pipelined: false,
        },
        Partial {
            what: "a head without its body",
            shape: single.clone(),
            cut: head_end + 4,
            pipelined: false,
        },
        Partial {
            what: "a chunked body cut inside a chunk extension",
            shape: chunked,
            cut: chunk_size_line,
            pipelined: false,
        },
        Partial {
            what: "one request and half of a second pipelined one",
            shape: two,
            cut: second_half,
            pipelined: true,
        },
        Partial {
            what: "one byte of an admin request",
            shape: by_name("admin GET /v1/functions"),
            cut: 1,
            pipelined: false,
        },
    ]
}

#[test]
fn partial_head_then_a_pause_then_the_rest_is_answered_normally() {
    let ns = echo();
    let partials = partials();
    let mut failures = Vec::new();
    for p in &partials {
        let want = references(&ns, std::slice::from_ref(&p.shape)).remove(0);
        // The stall is what is under test.
        match exchange(&ns, &p.shape, &[p.cut], &mut |_| Duration::from_millis(300)) {
            Ok(got) => {
                if let Some(diff) = difference(&want, &got) {
                    failures.push(format!("{}: {diff}", p.what));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", p.what)),
        }
    }
    assert_no_failures("stalled deliveries", &failures);
}

#[test]
fn one_byte_then_close_leaves_the_runtime_answering_promptly() {
    let ns = echo();
    let mut s = raw_connect(ns.port(), READ_TIMEOUT);
    s.write_all(b"G").unwrap();
    drop(s);
    assert_prompt_healthz(&ns, "b\"G\" then close");
    assert_idle(&ns, "b\"G\" then close");
}

#[test]
fn a_request_line_held_open_does_not_spin_or_block_others() {
    let ns = echo();
    let mut held = raw_connect(ns.port(), READ_TIMEOUT);
    held.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert_idle(&ns, "a request line left waiting");
    assert_prompt_healthz(&ns, "a request line left waiting");
    // The held request still completes.
    held.write_all(b"Host: a\r\nx-fc-request-id: held\r\n\r\n")
        .unwrap();
    let resp = RawReader::new(&mut held)
        .next(false)
        .unwrap_or_else(|end| panic!("the held request was not answered ({end:?})"));
    assert_eq!(
        resp.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp.bytes)
    );
    assert_eq!(resp.json().unwrap()["url"], "/");
}

#[test]
fn partial_head_then_close_leaves_the_runtime_healthy_and_idle() {
    let ns = echo();
    for p in partials() {
        let mut sock = Sock::open(&ns, p.shape.admin);
        sock.write_all(&p.shape.bytes[..p.cut]).unwrap();
        if p.pipelined {
            let mut reader = RawReader::new(&mut sock);
            let first = reader.next(false).unwrap_or_else(|end| {
                panic!(
                    "{}: the complete first request was not answered ({end:?})",
                    p.what
                )
            });
            assert_eq!(first.status, 200, "{}", p.what);
        }
        drop(sock);
        assert_prompt_healthz(&ns, p.what);
        assert_idle(&ns, p.what);
    }
}

#[test]
fn partial_head_then_half_close_is_closed_by_the_runtime() {
    let ns = echo();
    let mut failures = Vec::new();
    // Together: on a connection that has served a request, the runtime is stopped while the
    // bytes and the end of stream arrive, so that one readiness event reports both.
    let mut cases = Vec::new();
    for p in partials() {
        cases.push((true, p.clone()));
        cases.push((false, p));
    }
    for (together, p) in cases {
        let what = format!(
            "{}{}",
            p.what,
            if together {
                " (with the end of stream)"
            } else {
                ""
            }
        );
        let mut sock = Sock::open(&ns, p.shape.admin);
        match &sock {
            Sock::Tcp(s) => s.set_read_timeout(Some(PROMPT)).unwrap(),
            Sock::Unix(s) => s.set_read_timeout(Some(PROMPT)).unwrap(),
        }
        if together {
            warm_up(&mut sock, p.shape.admin);
        }
        let stopped = together.then(|| Stopped::new(&ns));
        sock.write_all(&p.shape.bytes[..p.cut]).unwrap();
        sock.shutdown_write();
        drop(stopped);
        let mut reader = RawReader::new(&mut sock);
        if p.pipelined {
            match reader.next(false) {
                Ok(first) if first.status == 200 => {}
                Ok(first) => failures.push(format!(
                    "{what}: first answer {:?}",
                    String::from_utf8_lossy(&first.bytes)
                )),
                Err(end) => {
                    failures.push(format!(
                        "{what}: the complete first request was not answered ({end:?})"
                    ));
                    continue;
                }
            }
        }
        let (end, rest) = reader.read_to_end();
        // Nothing more, or an error answer for the cut-off request.
        let text = String::from_utf8_lossy(&rest).into_owned();
        if end != RawEnd::Eof {
            failures.push(format!(
                "{what}: the runtime did not close the half-closed connection within {PROMPT:?} \
                 ({end:?}; received {text:?})"
            ));
        } else if !rest.is_empty() && !text.starts_with("HTTP/1.1 4") {
            failures.push(format!("{what}: received {text:?} before the close"));
        }
        assert_prompt_healthz(&ns, &what);
    }
    assert_idle(&ns, "the half-closed partial heads");
    assert_no_failures("half-closed partial heads", &failures);
}

// ---------------------------------------------------------------------------------------------
// Complete requests followed by a half-close

/// Sends `bytes`, half-closes, and expects `expected` answers (checked by `check`) then EOF.
/// With `stop`, the connection first serves a request and the runtime is stopped while the
/// bytes and the end of stream arrive, so that one readiness event reports both.
fn half_close_exchange(
    ns: &Noslate,
    stop: bool,
    bytes: &[u8],
    check: &dyn Fn(usize, &RawResponse) -> Result<(), String>,
    expected: usize,
) -> Result<(), String> {
    let mut s = raw_connect(ns.port(), READ_TIMEOUT);
    if stop {
        warm_up(&mut s, false);
    }
    let stopped = stop.then(|| Stopped::new(ns));
    s.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    drop(stopped);
    let mut reader = RawReader::new(&mut s);
    for i in 0..expected {
        let resp = reader.next(false).map_err(|end| {
            format!(
                "answer {i} incomplete ({end:?}); pending {:?}",
                String::from_utf8_lossy(reader.pending())
            )
        })?;
        check(i, &resp)?;
    }
    let (end, rest) = reader.read_to_end();
    if end != RawEnd::Eof || !rest.is_empty() {
        return Err(format!(
            "after the answers: {end:?} with {:?} instead of a clean EOF",
            String::from_utf8_lossy(&rest)
        ));
    }
    Ok(())
}

fn echoed(resp: &RawResponse, body: &str) -> Result<(), String> {
    let seen = resp.json().map(|j| j["body"].clone());
    if resp.status == 200 && seen.as_ref().and_then(|b| b.as_str()) == Some(body) {
        Ok(())
    } else {
        Err(format!(
            "expected 200 echoing {body:?}, got {:?}",
            String::from_utf8_lossy(&resp.bytes)
        ))
    }
}

/// Runs `attempt` `n` times over `threads` threads; returns the failures.
fn repeat(
    n: usize,
    threads: usize,
    attempt: impl Fn(usize) -> Result<(), String> + Sync,
) -> Vec<String> {
    let failures = std::sync::Mutex::new(Vec::new());
    thread::scope(|scope| {
        for t in 0..threads {
            let attempt = &attempt;
            let failures = &failures;
            scope.spawn(move || {
                for i in (t..n).step_by(threads) {
                    if let Err(e) = attempt(i) {
                        failures.lock().unwrap().push(format!("attempt {i}: {e}"));
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn complete_request_then_half_close_gets_the_whole_answer_100_times() {
    let ns = echo();
    let raw = b"POST /invoke HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let failures = repeat(100, 4, |_| {
        half_close_exchange(&ns, false, raw, &|_, r| echoed(r, "hello"), 1)
    });
    assert_no_failures("of 100 half-closed complete requests", &failures);
    assert_prompt_healthz(&ns, "the half-closed requests");
}

#[test]
fn complete_request_and_its_end_of_stream_read_together_get_the_whole_answer() {
    let ns = echo();
    let raw = b"POST /invoke HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let chunked = chunked_invoke("half-closed-together");
    let mut pair = invoke("together-1", b"first");
    pair.extend(invoke("together-2", b"second"));
    let mut failures = Vec::new();
    for i in 0..10 {
        let cases: [(&str, &[u8], &[&str]); 3] = [
            ("Content-Length", raw, &["hello"]),
            ("chunked", &chunked, &["hello, world0123456789"]),
            ("two pipelined", &pair, &["first", "second"]),
        ];
        for (what, bytes, bodies) in cases {
            let check = |n: usize, r: &RawResponse| echoed(r, bodies[n]);
            if let Err(e) = half_close_exchange(&ns, true, bytes, &check, bodies.len()) {
                failures.push(format!("{what}, attempt {i}: {e}"));
            }
        }
    }
    assert_no_failures("requests read together with their end of stream", &failures);
}

#[test]
fn complete_chunked_request_then_half_close_gets_the_whole_answer() {
    let ns = echo();
    let raw = chunked_invoke("half-closed-chunked");
    let failures = repeat(40, 4, |_| {
        half_close_exchange(
            &ns,
            false,
            &raw,
            &|_, r| echoed(r, "hello, world0123456789"),
            1,
        )
    });
    assert_no_failures("of 40 half-closed chunked requests", &failures);
}

#[test]
fn two_pipelined_requests_then_half_close_are_both_answered_in_order() {
    let ns = echo();
    let mut raw = Req::new("POST", "/invoke")
        .header("x-echo-delay", "20")
        .body(b"first")
        .to_bytes();
    raw.extend(Req::new("POST", "/invoke").body(b"second").to_bytes());
    let failures = repeat(40, 4, |_| {
        half_close_exchange(
            &ns,
            false,
            &raw,
            &|i, r| echoed(r, ["first", "second"][i]),
            2,
        )
    });
    assert_no_failures("of 40 half-closed pipelined pairs", &failures);
}

// ---------------------------------------------------------------------------------------------
// Bad requests followed by bytes the runtime never reads

/// Sends `bad` and 64 KiB more before reading; the error answer must arrive whole.
fn bad_then_junk(port: u16, bad: &[u8], status: u16, seed: u64) -> Result<(), String> {
    let mut s = raw_connect(port, READ_TIMEOUT);
    let mut junk = vec![0u8; 64 * 1024];
    let mut rng = SplitMix::new(seed);
    for b in &mut junk {
        *b = b"abcdefghijklmnopqrstuvwxyz0123456789 \r\n"[rng.below(39)];
    }
    // The runtime may stop reading (and close) before all of this is written.
    let _ = s.write_all(bad);
    let _ = s.write_all(&junk);
    let resp = RawReader::new(&mut s)
        .next(false)
        .map_err(|end| format!("the {status} answer was lost ({end:?})"))?;
    let body = resp.json();
    let error_type = body.as_ref().and_then(|b| b["errorType"].as_str());
    if resp.status != status || error_type.is_none() {
        return Err(format!(
            "expected {status} with a JSON errorType, got {:?}",
            String::from_utf8_lossy(&resp.bytes)
        ));
    }
    Ok(())
}

#[test]
fn garbage_request_line_with_unread_bytes_behind_it_still_delivers_the_400() {
    let ns = echo();
    let failures = repeat(50, 2, |i| {
        bad_then_junk(ns.port(), b"THIS IS NOT HTTP AT ALL\r\n\r\n", 400, i as u64)
    });
    assert_no_failures("of 50 garbage requests followed by 64 KiB", &failures);
    assert_prompt_healthz(&ns, "the garbage requests");
}

#[test]
fn oversized_head_with_unread_bytes_behind_it_still_delivers_the_431() {
    let ns = echo();
    let head = Req::new("GET", "/big")
        .header("X-Big", "h".repeat(20 * 1024))
        .head_bytes();
    let failures = repeat(50, 2, |i| {
        bad_then_junk(ns.port(), &head, 431, 1000 + i as u64)
    });
    assert_no_failures("of 50 oversized heads followed by 64 KiB", &failures);
    assert_prompt_healthz(&ns, "the oversized heads");
}

#[test]
fn bad_request_behind_a_backlog_of_unsent_answers_still_delivers_them_all() {
    // The client reads nothing until it has sent everything, through a small receive window:
    // when the runtime closes, answers are still in its send queue, and unread bytes in its
    // receive queue. An abortive close would throw the unsent answers away.
    const PIPELINED: usize = 300;
    let ns = echo();
    let failures = repeat(20, 2, |_| {
        let mut s = connect_with_recv_buffer(ns.port(), 4096, READ_TIMEOUT);
        let mut raw = healthz().repeat(PIPELINED);
        raw.extend_from_slice(b"THIS IS NOT HTTP AT ALL\r\n\r\n");
        raw.extend(std::iter::repeat_n(b'j', 64 * 1024));
        s.set_write_timeout(Some(PROMPT)).unwrap();
        let _ = s.write_all(&raw);
        let mut reader = RawReader::new(&mut s);
        for n in 0..PIPELINED {
            match reader.next(false) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    return Err(format!(
                        "answer {n} is {:?}",
                        String::from_utf8_lossy(&r.bytes)
                    ));
                }
                Err(end) => {
                    return Err(format!("answer {n} of {PIPELINED} lost ({end:?})"));
                }
            }
        }
        match reader.next(false) {
            Ok(r) if r.status == 400 && r.json().is_some_and(|j| j["errorType"].is_string()) => {
                Ok(())
            }
            Ok(r) => Err(format!(
                "instead of the 400: {:?}",
                String::from_utf8_lossy(&r.bytes)
            )),
            Err(end) => Err(format!("the 400 was lost ({end:?})")),
        }
    });
    assert_no_failures("of 20 backlogs ending in a bad request", &failures);
    assert_prompt_healthz(&ns, "the backlogs");
}
