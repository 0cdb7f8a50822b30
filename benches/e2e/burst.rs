//! Burst from zero: 64 requests at once on open connections, cold and warm.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use crate::common::*;
use crate::servers::{BODY, hello_profile, why};

/// Requests in a burst, one per connection.
pub const BURST_REQUESTS: usize = 64;

/// One burst: when every request was answered (from the first one sent), and how they ended.
pub struct BurstRun {
    /// First request sent → last response received; None unless all were answered.
    pub total_ms: Option<f64>,
    pub counts: Counts,
    /// Workers started in that runtime, by the end of the burst (the warm side's included).
    pub started: usize,
    /// Of them, workers ready by the end of the burst.
    pub ready: usize,
}

/// Advances one burst connection until it would block; Some once its exchange is over.
pub fn burst_step(c: &mut Conn, req: &[u8], expect: Option<&[u8]>) -> Option<Outcome> {
    let s = c.stream.as_mut()?;
    loop {
        if c.writing {
            match s.write(&req[c.wpos..]) {
                Ok(n) => {
                    c.wpos += n;
                    c.writing = c.wpos < req.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Outcome::Error(format!("write: {e}"))),
            }
            continue;
        }
        if c.filled == c.buf.len() {
            return Some(Outcome::Error(
                "response larger than the read buffer".into(),
            ));
        }
        let n = match s.read(&mut c.buf[c.filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Outcome::Error(format!("read: {e}"))),
        };
        c.filled += n;
        match parse_response(&c.buf[..c.filled], expect, n == 0) {
            Ok(Some(r)) if r.consumed != c.filled => {
                return Some(Outcome::Error("bytes after the response".into()));
            }
            Ok(Some(r)) => return Some(classify(&r)),
            Ok(None) if n > 0 => {}
            Ok(None) => {
                return Some(Outcome::Error("connection closed before a response".into()));
            }
            Err(e) => return Some(Outcome::Error(e)),
        }
    }
}

/// `n` connections, opened first; then one request on each, all at once. Returns the time from
/// the first request until the last answer (None unless every one was answered) and the counts.
pub fn run_burst(
    addr: SocketAddr,
    req: &[u8],
    expect: Option<&[u8]>,
    n: usize,
    timeout: Duration,
) -> (Option<Duration>, Counts) {
    let mut counts = Counts::default();
    let mut poll = Poll::new().expect("mio poll");
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    for i in 0..n {
        let stream = connect_mio(addr).and_then(|mut s| {
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        let stream = stream
            .map_err(|e| counts.add(Outcome::Error(format!("connect: {e}"))))
            .ok();
        conns.push(Conn::new(stream));
    }
    let mut open = conns.iter().filter(|c| c.stream.is_some()).count();
    let all = open == n;
    let t0 = Instant::now();
    let mut last = t0;
    // Drives connection i; once its exchange is over, counts it and closes it.
    let step = |poll: &Poll, c: &mut Conn, counts: &mut Counts| -> bool {
        let Some(o) = burst_step(c, req, expect) else {
            return false;
        };
        if let Some(mut s) = c.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        counts.add(o);
        true
    };
    for c in conns.iter_mut() {
        if step(&poll, c, &mut counts) {
            open -= 1;
            last = Instant::now();
        }
    }
    let end = t0 + timeout;
    let mut events = Events::with_capacity(1024);
    while open > 0 {
        let now = Instant::now();
        if now >= end {
            counts.add(Outcome::Error(format!(
                "{open} of {n} not answered within {timeout:?}"
            )));
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(end - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            if step(&poll, &mut conns[ev.token().0], &mut counts) {
                open -= 1;
                last = Instant::now();
            }
        }
    }
    let done = all && open == 0 && counts.ok == n as u64;
    (done.then(|| last - t0), counts)
}

/// One burst against a fresh runtime: `reservation` 0 scales from zero, 4 starts warm.
pub fn burst_once(tmp: &Path, tag: &str, reservation: u32) -> Result<BurstRun, String> {
    let worker = json!({
        "reservationCount": reservation,
        "replicaCountLimit": 4,
        "maxActivateRequests": 16
    });
    let memory = json!({"resourceLimit": {"memory": 128u64 << 20}});
    let functions = json!([hello_profile(worker, memory)]);
    let (p, port) = start_noslate_with(tmp, tag, &functions, None, true)?;
    // Let start-up (and the warm side's initialization) settle.
    thread::sleep(Duration::from_millis(300));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req = request_bytes("POST", "/invoke", port, BODY);
    let (total, counts) = run_burst(
        addr,
        &req,
        Some(BODY),
        BURST_REQUESTS,
        Duration::from_secs(30),
    );
    // Log lines written just before the last answers may still be on their way.
    thread::sleep(Duration::from_millis(20));
    let (started, ready) = p.workers();
    Ok(BurstRun {
        total_ms: total.map(|d| d.as_secs_f64() * 1000.0),
        counts,
        started,
        ready,
    })
}

/// Bursts from zero and warm, alternating (cold first in even reps, warm first in odd ones).
#[derive(Default)]
pub struct BurstRow {
    pub cold: Vec<BurstRun>,
    pub warm: Vec<BurstRun>,
    pub note: Option<String>,
}

impl BurstRow {
    pub fn median_ms(runs: &[BurstRun]) -> Option<f64> {
        median(runs.iter().filter_map(|r| r.total_ms).collect())
    }

    pub fn ratio(&self) -> Option<f64> {
        let (c, w) = (Self::median_ms(&self.cold)?, Self::median_ms(&self.warm)?);
        (w > 0.0).then(|| c / w)
    }

    pub fn clean(&self) -> bool {
        self.note.is_none()
            && !self.cold.is_empty()
            && !self.warm.is_empty()
            && self
                .cold
                .iter()
                .chain(&self.warm)
                .all(|r| r.total_ms.is_some())
    }

    pub fn first_error(&self) -> Option<&String> {
        self.cold
            .iter()
            .chain(&self.warm)
            .find_map(|r| r.counts.first_error.as_ref())
    }

    pub fn json(&self) -> Value {
        let side = |runs: &[BurstRun], reservation: u32| {
            json!({
                "reservation_count": reservation,
                "median_ms": Self::median_ms(runs),
                "bursts_ms": runs.iter().map(|r| r.total_ms).collect::<Vec<_>>(),
                "workers_started": runs.iter().map(|r| r.started).collect::<Vec<_>>(),
                "workers_ready_by_last_answer": runs.iter().map(|r| r.ready).collect::<Vec<_>>(),
                "ok": runs.iter().map(|r| r.counts.ok).sum::<u64>(),
                "non2xx": runs.iter().map(|r| r.counts.non2xx).sum::<u64>(),
                "errors": runs.iter().map(|r| r.counts.errors).sum::<u64>(),
            })
        };
        json!({
            "requests": BURST_REQUESTS, "replica_count_limit": 4, "max_activate_requests": 16,
            "memory_bytes": 128u64 << 20,
            "cold": side(&self.cold, 0), "warm": side(&self.warm, 4),
            "cold_over_warm": self.ratio(), "note": self.note,
            "first_error": self.first_error(), "pass": self.clean(),
        })
    }
}

pub fn measure_bursts(tmp: &Path, reps: usize) -> BurstRow {
    let mut row = BurstRow::default();
    'reps: for r in 0..reps {
        let order = if r.is_multiple_of(2) { [0, 4] } else { [4, 0] };
        for reservation in order {
            let side = if reservation == 0 { "cold" } else { "warm" };
            match burst_once(tmp, &format!("burst-{side}-{r}"), reservation) {
                Ok(b) => {
                    eprintln!(
                        "bench: burst {} {side:<4} {:>9} ms, {} ok {} non-2xx {} err, workers started {} (ready by the last answer {})",
                        r + 1,
                        b.total_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
                        b.counts.ok,
                        b.counts.non2xx,
                        b.counts.errors,
                        b.started,
                        b.ready
                    );
                    if reservation == 0 {
                        row.cold.push(b);
                    } else {
                        row.warm.push(b);
                    }
                }
                Err(e) => {
                    eprintln!("bench: burst ({side}): {e}");
                    row.note = Some(why(&e));
                    break 'reps;
                }
            }
        }
    }
    row
}

/// The burst section of the report.
pub fn burst_lines(out: &mut String, row: Option<&BurstRow>) {
    let _ = writeln!(
        out,
        "\nburst from zero ({BURST_REQUESTS} requests at once on {BURST_REQUESTS} open connections, first sent → last answered; replicaCountLimit 4, maxActivateRequests 16, memory 128 MiB; a fresh runtime per burst):"
    );
    match row {
        None => {
            let _ = writeln!(out, "  not selected (BENCH_TARGETS)");
        }
        Some(b) => {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            let side = |runs: &[BurstRun]| {
                let each: Vec<String> = runs.iter().map(|r| ms(r.total_ms)).collect();
                let workers: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{}/{}", r.started, r.ready))
                    .collect();
                format!(
                    "{} ms [bursts {}; workers started/ready by the last answer {}]",
                    ms(BurstRow::median_ms(runs)),
                    each.join(" "),
                    workers.join(" ")
                )
            };
            let _ = writeln!(
                out,
                "  cold, reservationCount 0:                    {}",
                side(&b.cold)
            );
            let _ = writeln!(
                out,
                "  warm, reservationCount 4 after /initialize: {}",
                side(&b.warm)
            );
            let mut verdict = pass(b.clean()).to_string();
            if let Some(e) = b.note.as_ref().or(b.first_error()) {
                let _ = write!(verdict, " ({e})");
            }
            let _ = writeln!(
                out,
                "  cold/warm = {} (medians of {} bursts each; no target, informational)  {verdict}",
                b.ratio().map_or("-".into(), |r| format!("{r:.1}")),
                b.cold.len().min(b.warm.len())
            );
        }
    }
}
