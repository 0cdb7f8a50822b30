//! A seeded random mix of good requests, bad requests and bad deliveries (split, stalled, cut
//! off, half-closed, reset) over concurrent real sockets, in batches. After every batch the
//! runtime must be alive, answer promptly, have answered every good request correctly, never
//! have answered with an undocumented 5xx, and hold no more memory or descriptors than after the
//! first batch (within a small bound).
//!
//! The seed is printed; `NOSLATE_FUZZ_SEED=<n>` replays a run, and `NOSLATE_FUZZ_CONN=<n>`
//! replays one connection (its seed is in the failure message) against a fresh runtime.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Client, Noslate, RawEnd, RawReader, RawResponse, Req, SplitMix, proc_fd_count, proc_rss_kib,
    profile, raw_connect, wait_until,
};
use serde_json::json;

const BATCHES: usize = 10;
const CONNS_PER_BATCH: usize = 200;
const THREADS: usize = 8;
/// How long a good request may take to be answered.
const GOOD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the runtime may take to answer or close a connection that sent a bad request.
const BAD_TIMEOUT: Duration = Duration::from_secs(3);
/// How soon a healthy runtime answers a request on a fresh connection.
const PROMPT: Duration = Duration::from_secs(3);
const RSS_SLACK_KIB: u64 = 8 * 1024;
const FD_SLACK: usize = 16;

/// A seed in decimal or 0x-hex.
fn parse_seed(text: &str) -> u64 {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("seed {text:?} is not a number"))
}

/// The run's seed: `NOSLATE_FUZZ_SEED` (decimal or 0x-hex), else the clock.
fn seed() -> u64 {
    if let Ok(text) = std::env::var("NOSLATE_FUZZ_SEED") {
        return parse_seed(&text);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    u64::try_from(nanos & u128::from(u64::MAX)).unwrap()
}

/// What a request must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// 200 from `GET /healthz`.
    Healthz,
    /// 200 and `x-fc-status: 200` from the echo function, which saw this body.
    Echo(String),
}

/// How the bytes reach the runtime.
#[derive(Debug, Clone)]
enum Delivery {
    /// One write.
    Whole,
    /// Pieces ending at these offsets, with short pauses between them.
    Split(Vec<usize>),
    /// A pause of this many milliseconds after this many bytes.
    Stall(usize, u64),
    /// One write, then shutdown(Write).
    HalfClose,
    /// This many bytes, then an orderly close without reading.
    Close(usize),
    /// This many bytes, then a reset (SO_LINGER 0).
    Reset(usize),
}

/// One connection's worth of traffic.
#[derive(Debug, Clone)]
struct Plan {
    what: String,
    bytes: Vec<u8>,
    /// For good requests, what each must get; None for bad requests (any documented answer,
    /// or none, is fine).
    expect: Option<Vec<Expect>>,
    delivery: Delivery,
}

const TEXT: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \"\\{}[]:,.-_/\n\t";

fn random_text(rng: &mut SplitMix, max: usize) -> String {
    let len = rng.below(max + 1);
    (0..len).map(|_| char::from(*rng.pick(TEXT))).collect()
}

fn invoke_bytes(rng: &mut SplitMix, body: &str) -> Vec<u8> {
    let mut req = Req::new("POST", "/invoke").body(body.as_bytes());
    if rng.chance(20) {
        req = req.header("x-echo-delay", (1 + rng.below(30)).to_string());
    }
    req.to_bytes()
}

fn chunked_bytes(rng: &mut SplitMix, body: &str) -> Vec<u8> {
    let mut raw = Req::new("POST", "/invoke")
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    let data = body.as_bytes();
    let mut at = 0;
    while at < data.len() {
        let n = (1 + rng.below(40)).min(data.len() - at);
        let ext = if rng.chance(20) { ";x=1" } else { "" };
        raw.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        raw.extend_from_slice(&data[at..at + n]);
        raw.extend_from_slice(b"\r\n");
        at += n;
    }
    raw.extend_from_slice(b"0\r\n");
    if rng.chance(30) {
        raw.extend_from_slice(b"X-Trailer: t\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

/// A good request (or a pipelined pair) and what it must get.
fn good(rng: &mut SplitMix) -> (String, Vec<u8>, Vec<Expect>) {
    match rng.below(4) {
        0 => (
            "GET /healthz".into(),
            Req::new("GET", "/healthz").to_bytes(),
            vec![Expect::Healthz],
        ),
        1 => {
            let body = random_text(rng, 300);
            (
                "invoke".into(),
                invoke_bytes(rng, &body),
                vec![Expect::Echo(body)],
            )
        }
        2 => {
            let body = random_text(rng, 300);
            (
                "chunked invoke".into(),
                chunked_bytes(rng, &body),
                vec![Expect::Echo(body)],
            )
        }
        _ => {
            let first = random_text(rng, 100);
            let second = random_text(rng, 100);
            let mut bytes = invoke_bytes(rng, &first);
            bytes.extend(chunked_bytes(rng, &second));
            bytes.extend(Req::new("GET", "/healthz").to_bytes());
            (
                "three pipelined".into(),
                bytes,
                vec![Expect::Echo(first), Expect::Echo(second), Expect::Healthz],
            )
        }
    }
}

/// A request the runtime must refuse (or may serve, where HTTP allows a lenient reading).
fn bad(rng: &mut SplitMix) -> (String, Vec<u8>) {
    let head =
        |extra: &str| format!("POST /invoke HTTP/1.1\r\nHost: a\r\n{extra}\r\n").into_bytes();
    match rng.below(16) {
        0 => {
            let len = 1 + rng.below(200);
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| u8::try_from(rng.below(256)).unwrap())
                .collect();
            if rng.chance(50) {
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            ("random bytes".into(), bytes)
        }
        1 => {
            let lines: [&[u8]; 10] = [
                b"GET\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                b" / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1 extra\r\n\r\n",
                b"GET /\x00 HTTP/1.1\r\n\r\n",
                b"G\xffT / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\r\n\r\n",
                b"\r\n\r\n\r\n",
                b"GET / FTP/1.1\r\n\r\n",
            ];
            ("broken request line".into(), rng.pick(&lines).to_vec())
        }
        2 => {
            let sizes = [
                "zz",
                "-1",
                "fffffffffffffffffffff",
                " 5",
                "5 5",
                "0x5",
                "",
                "\x00",
            ];
            let mut raw = head("Transfer-Encoding: chunked\r\n");
            raw.extend_from_slice(format!("{}\r\nhello\r\n0\r\n\r\n", rng.pick(&sizes)).as_bytes());
            ("bad chunk size".into(), raw)
        }
        3 => {
            let mut raw = head("Transfer-Encoding: chunked\r\n");
            raw.extend_from_slice(b"5\r\nhelloXX0\r\n\r\n");
            ("chunk data without its CRLF".into(), raw)
        }
        4 => {
            let n = 101 + rng.below(300);
            let mut extra = String::new();
            for i in 0..n {
                extra.push_str(&format!("X-H{i}: v\r\n"));
            }
            ("too many headers".into(), head(&extra))
        }
        5 => {
            let values = [
                "abc",
                "-5",
                "1, 2",
                "99999999999999999999999",
                "+5",
                "5 5",
                "0x10",
                "",
            ];
            let mut raw = head(&format!("Content-Length: {}\r\n", rng.pick(&values)));
            raw.extend_from_slice(b"hello");
            ("bad Content-Length".into(), raw)
        }
        6 => {
            let mut raw = head("Content-Length: 5\r\nContent-Length: 6\r\n");
            raw.extend_from_slice(b"hello!");
            ("two different Content-Lengths".into(), raw)
        }
        7 => {
            let mut raw = head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n");
            raw.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
            ("Content-Length and Transfer-Encoding".into(), raw)
        }
        8 => {
            let values = [
                "gzip",
                "chunked, gzip",
                "gzip, chunked",
                "identity",
                "chunked\r\nTransfer-Encoding: chunked",
            ];
            let mut raw = head(&format!("Transfer-Encoding: {}\r\n", rng.pick(&values)));
            raw.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
            ("odd Transfer-Encoding".into(), raw)
        }
        9 => {
            let heads: [&[u8]; 4] = [
                b"GET / HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
                b"GET / HTTP/1.1\r\nX-\x00: v\r\n\r\n",
                b"GET / HTTP/1.1\r\nX-Fold: a\r\n folded\r\n\r\n",
                b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            ];
            (
                "NUL, fold or colon-less header".into(),
                rng.pick(&heads).to_vec(),
            )
        }
        10 => {
            let big = "x".repeat(17 * 1024 + rng.below(8 * 1024));
            (
                "head over http.maxHeaderBytes".into(),
                format!("GET /{big} HTTP/1.1\r\n\r\n").into_bytes(),
            )
        }
        11 => (
            "Expect other than 100-continue".into(),
            head("Expect: 200-ok\r\nContent-Length: 2\r\n"),
        ),
        12 => (
            "body over http.maxRequestBodySize".into(),
            head("Content-Length: 40000000\r\n"),
        ),
        13 => (
            "unknown control path".into(),
            head("x-fc-control-path: /nowhere\r\nContent-Length: 0\r\n"),
        ),
        14 => (
            "unknown function".into(),
            head("x-noslate-function: nobody\r\nContent-Length: 0\r\n"),
        ),
        _ => (
            "bare LF line ends".into(),
            b"GET /lf HTTP/1.1\nHost: a\n\n".to_vec(),
        ),
    }
}

fn plan(rng: &mut SplitMix) -> Plan {
    let (what, bytes, expect) = if rng.chance(55) {
        let (what, bytes, expect) = good(rng);
        (what, bytes, Some(expect))
    } else {
        let (what, bytes) = bad(rng);
        (what, bytes, None)
    };
    let len = bytes.len();
    let cut = |rng: &mut SplitMix| 1 + rng.below(len.max(2) - 1);
    let delivery = match rng.below(100) {
        0..40 => Delivery::Whole,
        40..65 => {
            let mut cuts: Vec<usize> = (0..1 + rng.below(8)).map(|_| cut(rng)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            Delivery::Split(cuts)
        }
        65..72 => Delivery::Stall(cut(rng), 20 + u64::try_from(rng.below(130)).unwrap()),
        72..86 => Delivery::HalfClose,
        86..93 => Delivery::Close(rng.below(len + 1)),
        _ => Delivery::Reset(rng.below(len + 1)),
    };
    Plan {
        what,
        bytes,
        expect,
        delivery,
    }
}

/// The 5xx answers the README documents.
const DOCUMENTED_5XX: &[(u16, &str)] = &[
    (501, "NotImplemented"),
    (503, "RuntimeStopped"),
    (503, "SystemCircuitBreakerOpen"),
    (503, "NoAvailableWorker"),
    (503, "NoEnoughVirtualMemory"),
    (503, "ReplicaLimitExceeded"),
    (503, "TooManyConnections"),
];

fn check_status(resp: &RawResponse) -> Result<(), String> {
    if resp.status < 500 {
        return Ok(());
    }
    let error_type = resp
        .json()
        .and_then(|j| j["errorType"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if DOCUMENTED_5XX.contains(&(resp.status, error_type.as_str())) {
        Ok(())
    } else {
        Err(format!(
            "undocumented {} answer: {:?}",
            resp.status,
            String::from_utf8_lossy(&resp.bytes)
        ))
    }
}

fn check_expected(resp: &RawResponse, expect: &Expect) -> Result<(), String> {
    let ok = match expect {
        Expect::Healthz => resp.status == 200 && resp.json().is_some_and(|j| j["status"] == "ok"),
        Expect::Echo(body) => {
            resp.status == 200
                && resp.header("x-fc-status").as_deref() == Some("200")
                && resp
                    .json()
                    .is_some_and(|j| j["body"].as_str() == Some(body.as_str()))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {expect:?}, got {:?}",
            String::from_utf8_lossy(&resp.bytes)
        ))
    }
}

/// Writes `bytes` as `delivery` says; None when the client leaves without reading.
fn deliver(c: Client, bytes: &[u8], delivery: &Delivery, rng: &mut SplitMix) -> Option<Client> {
    let mut w = c.stream();
    // The runtime may answer and close before everything is written: writes are best effort.
    match delivery {
        Delivery::Whole => {
            let _ = w.write_all(bytes);
        }
        Delivery::HalfClose => {
            let _ = w.write_all(bytes);
            let _ = w.shutdown(Shutdown::Write);
        }
        Delivery::Split(cuts) => {
            let mut from = 0;
            for &to in cuts.iter().chain([bytes.len()].iter()) {
                if to > from {
                    let _ = w.write_all(&bytes[from..to]);
                    from = to;
                    // Pacing the delivery, not waiting for anything.
                    thread::sleep(Duration::from_micros(
                        u64::try_from(rng.below(1000)).unwrap(),
                    ));
                }
            }
        }
        Delivery::Stall(at, ms) => {
            let _ = w.write_all(&bytes[..*at]);
            // The stall is what is under test.
            thread::sleep(Duration::from_millis(*ms));
            let _ = w.write_all(&bytes[*at..]);
        }
        Delivery::Close(at) | Delivery::Reset(at) => {
            let _ = w.write_all(&bytes[..*at]);
        }
    }
    match delivery {
        Delivery::Close(_) => None,
        Delivery::Reset(_) => {
            c.reset();
            None
        }
        _ => Some(c),
    }
}

/// Runs one connection; Err describes what went wrong.
fn run_conn(port: u16, plan: &Plan, rng: &mut SplitMix) -> Result<(), String> {
    let c = Client::connect(port);
    let Some(c) = deliver(c, &plan.bytes, &plan.delivery, rng) else {
        return Ok(());
    };
    let half_closed = matches!(plan.delivery, Delivery::HalfClose);
    let stream: &TcpStream = c.stream();
    match &plan.expect {
        Some(expect) => {
            stream.set_read_timeout(Some(GOOD_TIMEOUT)).unwrap();
            let mut reader = RawReader::new(stream);
            for (i, e) in expect.iter().enumerate() {
                let resp = reader
                    .next(false)
                    .map_err(|end| format!("answer {i} lost ({end:?})"))?;
                check_status(&resp)?;
                check_expected(&resp, e).map_err(|err| format!("answer {i}: {err}"))?;
            }
            if half_closed {
                stream.set_read_timeout(Some(PROMPT)).unwrap();
                let (end, rest) = reader.read_to_end();
                if end != RawEnd::Eof || !rest.is_empty() {
                    return Err(format!(
                        "after the answers to a half-closed connection: {end:?} with {:?}",
                        String::from_utf8_lossy(&rest)
                    ));
                }
            }
            Ok(())
        }
        None => {
            if !half_closed {
                let _ = stream.shutdown(Shutdown::Write);
            }
            stream.set_read_timeout(Some(BAD_TIMEOUT)).unwrap();
            let mut reader = RawReader::new(stream);
            let mut answers = Vec::new();
            loop {
                match reader.next(false) {
                    Ok(resp) => {
                        check_status(&resp)?;
                        answers.push(resp.status);
                    }
                    Err(RawEnd::Eof | RawEnd::Reset) => return Ok(()),
                    Err(RawEnd::TimedOut) => {
                        return Err(format!(
                            "not closed within {BAD_TIMEOUT:?} after the client's half-close \
                             (answers so far: {answers:?}; pending {:?})",
                            String::from_utf8_lossy(reader.pending())
                        ));
                    }
                    Err(end) => {
                        return Err(format!(
                            "unreadable answer ({end:?}): {:?}",
                            String::from_utf8_lossy(reader.pending())
                        ));
                    }
                }
            }
        }
    }
}

/// A good request on a fresh connection is answered correctly within [`PROMPT`].
fn prompt_check(port: u16) -> Result<(), String> {
    let started = Instant::now();
    let mut s = raw_connect(port, PROMPT);
    let body = "fresh connection";
    let mut raw = Req::new("GET", "/healthz").to_bytes();
    raw.extend(Req::new("POST", "/invoke").body(body.as_bytes()).to_bytes());
    s.write_all(&raw).map_err(|e| format!("write: {e}"))?;
    let mut reader = RawReader::new(&mut s);
    for expect in [Expect::Healthz, Expect::Echo(body.into())] {
        let resp = reader
            .next(false)
            .map_err(|end| format!("{expect:?} not answered within {PROMPT:?} ({end:?})"))?;
        check_expected(&resp, &expect)?;
    }
    let took = started.elapsed();
    if took > PROMPT {
        return Err(format!("a fresh connection took {took:?}"));
    }
    Ok(())
}

fn fds(pid: i32) -> usize {
    proc_fd_count(pid).expect("count the runtime's descriptors")
}

fn rss_kib(pid: i32) -> u64 {
    proc_rss_kib(pid).expect("read the runtime's VmRSS")
}

#[test]
fn random_traffic_leaves_the_runtime_healthy_and_bounded() {
    let seed = seed();
    eprintln!("net_fuzz seed: {seed:#x} (replay with NOSLATE_FUZZ_SEED={seed:#x})");
    let mut p = profile("echo", "echo");
    p["worker"]["maxActivateRequests"] = json!(16);
    let mut ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({
            "turf": {"spareWorkers": 0},
            "systemCircuitBreaker": {"systemLoad1Limit": 1000}
        }))
        .start();
    let pid = ns.pid();
    let port = ns.port();
    prompt_check(port).unwrap_or_else(|e| panic!("before any traffic: {e}"));
    if let Ok(text) = std::env::var("NOSLATE_FUZZ_CONN") {
        // Replays one connection by its seed, alone.
        let conn_seed = parse_seed(&text);
        let mut rng = SplitMix::new(conn_seed);
        let plan = plan(&mut rng);
        eprintln!("replaying {plan:?}");
        if let Err(e) = run_conn(port, &plan, &mut rng) {
            panic!(
                "conn seed {conn_seed:#x}: {} via {:?}: {e}",
                plan.what, plan.delivery
            );
        }
        return;
    }
    let idle_fds = fds(pid);
    let started = Instant::now();
    let mut baseline: Option<(usize, u64)> = None;
    let mut totals = (0usize, 0usize);
    for batch in 0..BATCHES {
        let batch_seed = seed ^ (0x9E37_79B9 * (batch as u64 + 1));
        let failures = Mutex::new(Vec::new());
        let good = std::sync::atomic::AtomicUsize::new(0);
        thread::scope(|scope| {
            for t in 0..THREADS {
                let failures = &failures;
                let good = &good;
                scope.spawn(move || {
                    for n in (t..CONNS_PER_BATCH).step_by(THREADS) {
                        let conn_seed = batch_seed.wrapping_add(n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
                        let mut rng = SplitMix::new(conn_seed);
                        let plan = plan(&mut rng);
                        if plan.expect.is_some() {
                            good.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if let Err(e) = run_conn(port, &plan, &mut rng) {
                            failures.lock().unwrap().push(format!(
                                "batch {batch} conn {n} (conn seed {conn_seed:#x}): {} via {:?}: {e}",
                                plan.what, plan.delivery
                            ));
                        }
                    }
                });
            }
        });
        totals.0 += CONNS_PER_BATCH;
        totals.1 += good.into_inner();
        let failures = failures.into_inner().unwrap();
        assert!(
            failures.is_empty(),
            "seed {seed:#x}: {} connections failed in batch {batch}:\n{}",
            failures.len(),
            failures
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            ns.is_running(),
            "seed {seed:#x}: the runtime died in batch {batch}"
        );
        prompt_check(port).unwrap_or_else(|e| panic!("seed {seed:#x}, after batch {batch}: {e}"));

        // Every client socket is closed: the runtime's descriptors settle back.
        let limit = baseline.map_or(idle_fds, |(f, _)| f) + FD_SLACK;
        let mut last = 0;
        let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(
                Duration::from_secs(10),
                "the runtime's descriptors settle",
                || {
                    last = fds(pid);
                    last <= limit
                },
            );
        }));
        assert!(
            settled.is_ok(),
            "seed {seed:#x}, after batch {batch}: the runtime holds {last} descriptors \
             (limit {limit}; {idle_fds} before any traffic)"
        );
        let rss = rss_kib(pid);
        match baseline {
            None => baseline = Some((fds(pid), rss)),
            Some((_, base_rss)) => assert!(
                rss <= base_rss + RSS_SLACK_KIB,
                "seed {seed:#x}, after batch {batch}: VmRSS {rss} KiB, {base_rss} KiB after \
                 the first batch"
            ),
        }
    }
    eprintln!(
        "net_fuzz: {} connections ({} good) in {:?}",
        totals.0,
        totals.1,
        started.elapsed()
    );
}
