//! Soak and fault suite of noslate: `make soak` (`cargo bench --bench soak`).
//!
//! Six scenarios against the real binary on loopback, each printing its figures and one
//! PASS/FAIL line against the expectation it states; everything also goes to
//! `<target dir>/bench/soak.json`. The process exits 1 when a scenario failed. Every runtime
//! starts with the default config except `systemCircuitBreaker.systemLoad1Limit`, raised so
//! that the load average of a shared machine cannot open the breaker; every phase is bounded in
//! time, and every process is stopped (also on a panic) when its scenario ends.
//!
//! 1. **requests**: `SOAK_REQUESTS` (default 1,000,000) `POST /invoke` to `examples/hello` at
//!    c=64 on one worker, the runtime's `VmRSS` and open fds sampled every second. Expected: no
//!    errors, RSS at the end within 4 MiB of the start and no more than 4 MiB of drift under
//!    load, fds back to the baseline.
//! 2. **kill -9**: c=32 load on one worker (`maxActivateRequests` 10); the worker (found with
//!    `noslate ps --json`) gets SIGKILL. Expected: at most 10 failed requests (the ones it held),
//!    a replacement, and from 2 s after the kill at least 50 % of the rate before it (a fresh
//!    Node.js process settles into one of two speeds, about 2x apart: benches/README.md).
//! 3. **busy loop**: a handler that runs `while (true) {}` for one input, invoked with
//!    `x-fc-function-timeout: 1`, while c=8 load runs on another function. Expected: each call
//!    answered `FunctionTimeout`, the looping worker replaced (a new pid), the next valid call to
//!    it 200, and the other function's load without a failed request.
//! 4. **memory hog**: a handler that allocates without bound, under `resourceLimit.memory`
//!    96 MiB, while c=8 load runs on another function. Expected: `MemoryLimitExceeded` each
//!    time, the runtime's RSS within 4 MiB of its level before, the next valid calls 200, and
//!    the other load without a failed request.
//! 5. **slow clients**: `SOAK_SLOW_CLIENTS` (default 2,000) connections each trickle a valid
//!    57-byte request one byte every 200 ms, their starts spread over 4 s, while c=16 load
//!    runs. Expected: every slow client answered 200, the normal load without errors and with
//!    at least 70 % of its req/s without them; its p99 and the runtime's RSS and fds with the
//!    slow clients are reported.
//! 6. **SIGTERM**: 40 requests in flight to a handler that answers after 500 ms and 8 idle
//!    keep-alive connections, then SIGTERM. Expected: all 40 answered 200, 8 requests sent
//!    afterwards on new connections 503 `RuntimeStopped`, the idle connections closed with a FIN
//!    (docs/ARCHITECTURE.md), exit status 0; the time to exit is reported.
//!
//! Knobs (environment): `SOAK_REQUESTS`, `SOAK_SLOW_CLIENTS`, `SOAK_SCENARIOS` (which ones to
//! run, default `123456`), `SOAK_MAX_SECS` (the longest scenario 1 may load, default 240),
//! `BENCH_NOSLATE_BIN` (another runtime binary). See benches/README.md.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use common::*;

/// The function of scenarios 3, 4 and 6: what it does depends on the request body.
const SOAK_JS: &str = r#"'use strict';
// soak: the request body says what to do.
//   spin   loop forever without answering
//   hog    allocate 8 MiB every 10 ms, every page touched, without bound
//   sleep  answer "done" after 500 ms
//   other  answer "ok"
const held = [];

exports.handler = (ctx, req, res) => {
  const parts = [];
  req.on('data', (c) => parts.push(c));
  req.on('end', () => {
    const body = Buffer.concat(parts).toString();
    if (body === 'spin') {
      while (true) {}
    }
    if (body === 'hog') {
      const grow = () => {
        held.push(Buffer.alloc(8 << 20, 1));
        setTimeout(grow, 10);
      };
      grow();
      return;
    }
    if (body === 'sleep') {
      setTimeout(() => res.end('done'), 500);
      return;
    }
    res.end('ok');
  });
};
"#;

/// `maxActivateRequests` of scenario 2's worker: the most requests a SIGKILL may fail.
const KILL_MAX_ACTIVE: u64 = 10;
/// Scenario 6: requests in flight when SIGTERM arrives, and requests sent after it.
const TERM_INFLIGHT: usize = 40;
const TERM_LATE: usize = 8;

// ---------------------------------------------------------------------------------------------
// Set-up

struct Config {
    requests: u64,
    slow_clients: usize,
    scenarios: String,
    max_secs: f64,
}

impl Config {
    fn from_env() -> Config {
        Config {
            requests: env_num("SOAK_REQUESTS", 1_000_000u64).max(1),
            slow_clients: env_num("SOAK_SLOW_CLIENTS", 2000usize),
            scenarios: std::env::var("SOAK_SCENARIOS").unwrap_or_else(|_| "123456".into()),
            max_secs: env_num("SOAK_MAX_SECS", 240.0f64).max(1.0),
        }
    }
}

/// A Node.js function profile (`resourceLimit.memory` in bytes).
fn profile(name: &str, dir: &Path, worker: Value, memory: u64) -> Value {
    json!({
        "name": name,
        "runtime": "nodejs",
        "url": dir,
        "handler": "index.handler",
        "signature": "soak",
        "resourceLimit": {"memory": memory},
        "worker": worker,
    })
}

/// `examples/hello` on one worker taking `max_active` requests at once.
fn hello(max_active: u64) -> Value {
    let dir = Path::new(MANIFEST_DIR).join("examples/hello");
    let worker =
        json!({"reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": max_active});
    profile("hello", &dir, worker, 128 * MIB)
}

/// The soak function (`SOAK_JS`) under `name`, one worker, with this memory limit.
fn soak_fn(code: &Path, name: &str, memory: u64) -> Value {
    let worker = json!({"reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": 64});
    profile(name, code, worker, memory)
}

/// The system config of every runtime here: the defaults, except that the circuit breaker
/// ignores the machine's load average (which other processes on a shared machine drive).
fn config() -> Value {
    json!({"systemCircuitBreaker": {"systemLoad1Limit": 1_000_000}})
}

/// A started runtime: its process, its port and its work directory.
struct Runtime {
    proc: Proc,
    port: u16,
    work: PathBuf,
}

impl Runtime {
    fn start(tmp: &Path, tag: &str, functions: Value) -> Result<Runtime, String> {
        let (proc, port) = start_noslate_with(tmp, tag, &functions, Some(&config()), true)?;
        Ok(Runtime {
            proc,
            port,
            work: workdir(tmp, tag),
        })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `POST /invoke` of `function` with `body` and any extra header lines.
    fn invoke_req(&self, function: &str, body: &[u8], extra: &str) -> Vec<u8> {
        invoke_bytes(self.port, function, body, extra)
    }

    /// The pids of `function`'s workers in state `ready`.
    fn ready_pids(&self, function: &str) -> Vec<u64> {
        ps_json(&self.work)
            .unwrap_or_default()
            .iter()
            .filter(|w| w["function"] == function && w["state"] == "ready")
            .filter_map(|w| w["pid"].as_u64())
            .collect()
    }

    /// Waits up to `timeout` for a ready worker of `function` other than `old`.
    fn wait_replaced(&self, function: &str, old: Option<u64>, timeout: Duration) -> Option<u64> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(p) = self
                .ready_pids(function)
                .into_iter()
                .find(|&p| Some(p) != old)
            {
                return Some(p);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn invoke_bytes(port: u16, function: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /invoke HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-noslate-function: {function}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    r.reserve(body.len());
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

/// One exchange on `client`: (status, errorType of a JSON error body or the body itself,
/// seconds it took).
fn exchange(client: &mut BlockingClient, req: &[u8]) -> (Option<u16>, String, f64) {
    let t0 = Instant::now();
    let r = client.exchange(req, None);
    let secs = t0.elapsed().as_secs_f64();
    match r {
        Ok((resp, n)) => {
            let body = client.buf.get(resp.head_len..n).unwrap_or_default();
            (Some(resp.status), body_summary(body), secs)
        }
        Err(e) => (None, e, secs),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Sampling the runtime while a load runs

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Seconds since sampling started.
    t: f64,
    rss_kib: u64,
    fds: usize,
    /// Cumulative outcomes of the load so far.
    ok: u64,
    failed: u64,
}

/// Samples `pid` and `live` every `every` until `stop` is set.
fn sample(pid: u32, live: &Live, every: Duration, stop: &AtomicBool) -> Vec<Sample> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut next = t0;
    loop {
        let (ok, non2xx, errors) = live.snapshot();
        out.push(Sample {
            t: t0.elapsed().as_secs_f64(),
            rss_kib: vm_rss_kib(pid).unwrap_or(0),
            fds: fd_count(pid).unwrap_or(0),
            ok,
            failed: non2xx + errors,
        });
        next += every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return out;
            }
            thread::sleep(Duration::from_millis(5).min(every));
        }
    }
}

/// Per-interval rates between consecutive samples: (start, end, ok/s).
fn rates(samples: &[Sample]) -> Vec<(f64, f64, f64)> {
    samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-9);
            (w[0].t, w[1].t, (w[1].ok - w[0].ok) as f64 / dt)
        })
        .collect()
}

/// Mean rate of the intervals within [from, to].
fn mean_rate(r: &[(f64, f64, f64)], from: f64, to: f64) -> f64 {
    let v: Vec<f64> = r
        .iter()
        .filter(|x| x.0 >= from && x.1 <= to)
        .map(|x| x.2)
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn peak_rss(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.rss_kib).max().unwrap_or(0)
}

/// Runs `load` with a sampler of `pid` beside it.
fn load_sampled(load: &Load, pid: u32, every: Duration) -> (ThroughputRun, Vec<Sample>) {
    let live = load.live.expect("a sampled load counts live");
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let sampler = s.spawn(|| sample(pid, live, every, &stop));
        let run = run_load(load);
        stop.store(true, Ordering::Relaxed);
        (run, sampler.join().expect("sampler panicked"))
    })
}

// ---------------------------------------------------------------------------------------------
// The report

/// One scenario's outcome: its printed lines, its JSON and its verdict.
struct Scenario {
    name: &'static str,
    pass: bool,
    json: Value,
}

fn verdict(name: &'static str, pass: bool, expect: &str, json: Value) -> Scenario {
    println!("  {}  {name}: expected {expect}", common::pass(pass));
    let mut json = json;
    json["expectation"] = json!(expect);
    json["pass"] = json!(pass);
    Scenario { name, pass, json }
}

fn failed(name: &'static str, why: &str) -> Scenario {
    println!("  FAIL  {name}: could not run: {why}");
    Scenario {
        name,
        pass: false,
        json: json!({"error": why, "pass": false}),
    }
}

fn fmt_counts(c: &Counts) -> String {
    let mut s = format!("ok {} non-2xx {} errors {}", c.ok, c.non2xx, c.errors);
    if let Some(e) = &c.first_non2xx {
        s.push_str(&format!(" (first non-2xx: {e})"));
    }
    if let Some(e) = &c.first_error {
        s.push_str(&format!(" (first error: {e})"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// 1. A million requests

fn scenario_requests(cfg: &Config, tmp: &Path) -> Scenario {
    const NAME: &str = "requests";
    println!(
        "\n[1] {} x POST /invoke (examples/hello) at c=64, runtime RSS and fds sampled every second",
        cfg.requests
    );
    let rt = match Runtime::start(tmp, "requests", json!([hello(64)])) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let req = rt.invoke_req("hello", b"hello", "");
    let expect = Some(&b"hello"[..]);
    // Warm-up: the worker's JIT and the runtime's buffers, outside the figures.
    let warm = run_load(&Load {
        budget: Some(20_000),
        ..Load::new(rt.addr(), &req, expect, 64, 2, Duration::from_secs(30))
    });
    thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (
        vm_rss_kib(rt.pid()).unwrap_or(0),
        fd_count(rt.pid()).unwrap_or(0),
    );
    let live = Live::default();
    let (run, samples) = load_sampled(
        &Load {
            budget: Some(cfg.requests),
            live: Some(&live),
            ..Load::new(
                rt.addr(),
                &req,
                expect,
                64,
                2,
                Duration::from_secs_f64(cfg.max_secs),
            )
        },
        rt.pid(),
        Duration::from_secs(1),
    );
    // The connections are closed; give the runtime a moment to release them.
    thread::sleep(Duration::from_secs(1));
    let (rss1, fds1) = (
        vm_rss_kib(rt.pid()).unwrap_or(0),
        fd_count(rt.pid()).unwrap_or(0),
    );
    let peak = peak_rss(&samples).max(rss0).max(rss1);
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    // Drift under load: the last loaded sample against the first one after 2 s of load.
    let loaded: Vec<&Sample> = samples.iter().filter(|s| s.t >= 2.0).collect();
    let drift = match (loaded.first(), loaded.last()) {
        (Some(a), Some(b)) => b.rss_kib as i64 - a.rss_kib as i64,
        _ => 0,
    };
    let answered = run.counts.ok + run.counts.non2xx + run.counts.errors;
    println!(
        "    warm-up: {} requests; load: {answered} answered in {:.1} s = {:.0} req/s; {}",
        warm.counts.ok,
        run.secs,
        run.rps(),
        fmt_counts(&run.counts)
    );
    println!(
        "    runtime RSS: start {:.2} MiB, peak {:.2} MiB, end {:.2} MiB (end - start {:+.2} MiB; drift under load {:+.2} MiB)",
        mib(rss0),
        mib(peak),
        mib(rss1),
        mib(rss1) - mib(rss0),
        drift as f64 / 1024.0
    );
    println!("    runtime fds: start {fds0}, peak {peak_fds}, end {fds1}");
    // At most 30 values on the line; every sample is in the JSON.
    let step = samples.len().div_ceil(30).max(1);
    let per_sec: Vec<String> = samples
        .iter()
        .step_by(step)
        .map(|s| format!("{:.1}", mib(s.rss_kib)))
        .collect();
    println!("    RSS every {step} s (MiB): {}", per_sec.join(" "));
    let pass = run.counts.ok == cfg.requests
        && run.counts.non2xx + run.counts.errors == 0
        && rss1 <= rss0 + 4 * 1024
        && drift <= 4 * 1024
        && fds1 <= fds0;
    verdict(
        NAME,
        pass,
        "every request 200 'hello', RSS end - start <= 4 MiB and drift under load <= 4 MiB, fds end <= start",
        json!({
            "requests": cfg.requests, "connections": 64, "answered": answered,
            "ok": run.counts.ok, "non2xx": run.counts.non2xx, "errors": run.counts.errors,
            "first_error": run.counts.first_error, "secs": run.secs, "req_per_sec": run.rps(),
            "rss_kib": {"start": rss0, "peak": peak, "end": rss1, "drift_under_load": drift},
            "fds": {"start": fds0, "peak": peak_fds, "end": fds1},
            "samples": samples.iter().map(|s| json!([s.t, s.rss_kib, s.fds, s.ok, s.failed])).collect::<Vec<_>>(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 of a worker under load

fn scenario_kill(tmp: &Path) -> Scenario {
    const NAME: &str = "kill9";
    const LOAD_SECS: f64 = 10.0;
    const KILL_AT: f64 = 4.0;
    println!(
        "\n[2] SIGKILL of the worker under c=32 load (one worker, maxActivateRequests {KILL_MAX_ACTIVE})"
    );
    let rt = match Runtime::start(tmp, "kill", json!([hello(KILL_MAX_ACTIVE)])) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let req = rt.invoke_req("hello", b"hello", "");
    let live = Live::default();
    let load = Load {
        live: Some(&live),
        ..Load::new(
            rt.addr(),
            &req,
            Some(b"hello"),
            32,
            2,
            Duration::from_secs_f64(LOAD_SECS),
        )
    };
    let t0 = Instant::now();
    let (killed, (run, samples)) = thread::scope(|s| {
        let loader = s.spawn(|| load_sampled(&load, rt.pid(), Duration::from_millis(100)));
        thread::sleep(Duration::from_secs_f64(KILL_AT));
        let victim = rt.ready_pids("hello").first().copied();
        let at = t0.elapsed().as_secs_f64();
        if let Some(pid) = victim {
            signal(pid as u32, "KILL");
        }
        (
            victim.map(|p| (p, at)),
            loader.join().expect("load panicked"),
        )
    });
    let Some((victim, kill_at)) = killed else {
        return failed(NAME, "no ready worker of hello in `noslate ps --json`");
    };
    let replacement = rt.wait_replaced("hello", Some(victim), Duration::from_secs(5));
    // The sampler's clock starts with the load, within a millisecond of t0.
    let r = rates(&samples);
    let before_rate = mean_rate(&r, 1.0, kill_at);
    let after_rate = mean_rate(&r, kill_at + 2.0, LOAD_SECS);
    // Recovery: the end of the first 100 ms window after the kill at half the rate before it.
    let recovered_ms = r
        .iter()
        .find(|x| x.0 >= kill_at && x.2 >= before_rate / 2.0)
        .map(|x| (x.1 - kill_at) * 1000.0);
    let dip = r
        .iter()
        .filter(|x| x.0 >= kill_at && x.1 <= kill_at + 2.0)
        .map(|x| x.2)
        .fold(f64::INFINITY, f64::min);
    let failed_n = run.counts.non2xx + run.counts.errors;
    println!(
        "    killed worker pid {victim} at t={kill_at:.2} s; replacement: {}",
        replacement.map_or("none within 5 s".into(), |p| format!("pid {p}"))
    );
    println!(
        "    load {:.1} s: {}; failed requests: {failed_n} (at most {KILL_MAX_ACTIVE} expected)",
        run.secs,
        fmt_counts(&run.counts)
    );
    println!(
        "    throughput: {before_rate:.0} req/s before the kill, {after_rate:.0} req/s from 2 s after it; lowest 100 ms after it {dip:.0} req/s, back to half rate {} after the kill",
        recovered_ms.map_or("never".into(), |ms| format!("{ms:.0} ms"))
    );
    // A fresh Node.js process settles into one of two speeds (benches/README.md): the
    // replacement may serve at about half the rate of the worker it replaces.
    let pass = failed_n <= KILL_MAX_ACTIVE
        && replacement.is_some()
        && after_rate >= 0.5 * before_rate
        && before_rate > 0.0;
    verdict(
        NAME,
        pass,
        "failed requests <= maxActivateRequests (10), a replacement worker, req/s from 2 s after the kill >= 50 % of before",
        json!({
            "connections": 32, "max_activate_requests": KILL_MAX_ACTIVE,
            "killed_pid": victim, "replacement_pid": replacement, "kill_at_secs": kill_at,
            "ok": run.counts.ok, "non2xx": run.counts.non2xx, "errors": run.counts.errors,
            "first_error": run.counts.first_error, "failed": failed_n,
            "req_per_sec_before": before_rate, "req_per_sec_after": after_rate,
            "half_rate_after_ms": recovered_ms, "lowest_100ms_req_per_sec_after": dip,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. A faulty function beside a healthy one under load

/// What happened to the faulty calls, and the healthy load meanwhile.
struct FaultRun {
    calls: Vec<Value>,
    all_as_expected: bool,
    load: ThroughputRun,
    samples: Vec<Sample>,
}

/// Runs c=8 load on `hello` while `calls` faulty calls go to `function` (with
/// `x-fc-function-timeout: timeout_s`), one at a time: each must answer `status` +
/// `error_type`, then the worker must be replaced and a valid call to `function` must answer
/// 200 `ok`.
fn faulty_beside_load(
    rt: &Runtime,
    function: &str,
    fault: &[u8],
    timeout_s: u32,
    calls: usize,
    status: u16,
    error_type: &str,
) -> FaultRun {
    let req = rt.invoke_req("hello", b"hello", "");
    let live = Live::default();
    let stop = AtomicBool::new(false);
    let load = Load {
        live: Some(&live),
        stop: Some(&stop),
        ..Load::new(
            rt.addr(),
            &req,
            Some(b"hello"),
            8,
            2,
            Duration::from_secs(60),
        )
    };
    let bad = rt.invoke_req(
        function,
        fault,
        &format!("x-fc-function-timeout: {timeout_s}\r\n"),
    );
    let good = rt.invoke_req(function, b"x", "");
    let mut all = true;
    let mut out = Vec::new();
    let (load, samples) = thread::scope(|s| {
        let loader = s.spawn(|| load_sampled(&load, rt.pid(), Duration::from_secs(1)));
        thread::sleep(Duration::from_secs(1));
        for i in 0..calls {
            let old = rt.ready_pids(function).first().copied();
            let rss_before = vm_rss_kib(rt.pid());
            let (st, what, secs) = exchange(&mut BlockingClient::new(rt.addr()), &bad);
            let t = Instant::now();
            let new = rt.wait_replaced(function, old, Duration::from_secs(10));
            let replaced_ms = t.elapsed().as_secs_f64() * 1000.0;
            let (gst, gwhat, _) = exchange(&mut BlockingClient::new(rt.addr()), &good);
            let rss_after = vm_rss_kib(rt.pid());
            let ok = st == Some(status)
                && what == error_type
                && new.is_some()
                && gst == Some(200)
                && gwhat == "ok";
            all &= ok;
            println!(
                "    call {}: {} {what} after {:.2} s; worker {} -> {} ({}); next valid call: {} {gwhat}",
                i + 1,
                st.map_or("no answer".into(), |s| s.to_string()),
                secs,
                old.map_or("?".into(), |p| p.to_string()),
                new.map_or("not replaced".into(), |p| p.to_string()),
                if new.is_some() {
                    format!("ready {replaced_ms:.0} ms after the answer")
                } else {
                    "none within 10 s".into()
                },
                gst.map_or("no answer".into(), |s| s.to_string()),
            );
            out.push(json!({
                "status": st, "error_type": what, "answer_secs": secs,
                "old_pid": old, "new_pid": new, "replaced_after_answer_ms": new.map(|_| replaced_ms),
                "next_valid_status": gst, "next_valid_body": gwhat,
                "runtime_rss_kib_before": rss_before, "runtime_rss_kib_after": rss_after,
            }));
        }
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        loader.join().expect("load panicked")
    });
    FaultRun {
        calls: out,
        all_as_expected: all,
        load,
        samples,
    }
}

/// The lowest per-second rate of the load in `f` (1 s intervals, the last partial one left out).
fn min_rate(f: &FaultRun) -> f64 {
    let r = rates(&f.samples);
    let full = r.len().saturating_sub(1).max(1);
    r.iter()
        .take(full)
        .map(|x| x.2)
        .fold(f64::INFINITY, f64::min)
}

fn scenario_busy_loop(tmp: &Path, code: &Path) -> Scenario {
    const NAME: &str = "busy_loop";
    println!(
        "\n[3] `while (true) {{}}` with x-fc-function-timeout: 1, c=8 load on another function meanwhile"
    );
    let functions = json!([hello(64), soak_fn(code, "spin", 128 * MIB)]);
    let rt = match Runtime::start(tmp, "spin", functions) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let f = faulty_beside_load(&rt, "spin", b"spin", 1, 2, 404, "FunctionTimeout");
    let min = min_rate(&f);
    println!(
        "    other function meanwhile: {:.0} req/s over {:.1} s (lowest second {min:.0} req/s); {}",
        f.load.rps(),
        f.load.secs,
        fmt_counts(&f.load.counts)
    );
    let pass = f.all_as_expected && f.load.counts.non2xx + f.load.counts.errors == 0 && min > 0.0;
    verdict(
        NAME,
        pass,
        "404 FunctionTimeout after ~1 s each, the worker replaced, the next valid call 200, the other function's load without failures and answering every second",
        json!({
            "calls": f.calls, "other_function": {
                "ok": f.load.counts.ok, "non2xx": f.load.counts.non2xx, "errors": f.load.counts.errors,
                "first_error": f.load.counts.first_error, "req_per_sec": f.load.rps(),
                "lowest_second_req_per_sec": min,
            },
        }),
    )
}

fn scenario_hog(tmp: &Path, code: &Path) -> Scenario {
    const NAME: &str = "memory_hog";
    println!(
        "\n[4] unbounded allocation under resourceLimit.memory 96 MiB, c=8 load on another function meanwhile"
    );
    let functions = json!([hello(64), soak_fn(code, "hog", 96 * MIB)]);
    let rt = match Runtime::start(tmp, "hog", functions) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let f = faulty_beside_load(&rt, "hog", b"hog", 20, 3, 404, "MemoryLimitExceeded");
    let first = f
        .samples
        .get(1)
        .or(f.samples.first())
        .map_or(0, |s| s.rss_kib);
    let peak = peak_rss(&f.samples);
    let end = f.samples.last().map_or(0, |s| s.rss_kib);
    println!(
        "    runtime RSS: {:.2} MiB under load before the first call, peak {:.2} MiB, {:.2} MiB at the end",
        mib(first),
        mib(peak),
        mib(end)
    );
    println!(
        "    other function meanwhile: {:.0} req/s over {:.1} s; {}",
        f.load.rps(),
        f.load.secs,
        fmt_counts(&f.load.counts)
    );
    let pass = f.all_as_expected
        && f.load.counts.non2xx + f.load.counts.errors == 0
        && peak <= first + 4 * 1024;
    verdict(
        NAME,
        pass,
        "404 MemoryLimitExceeded each time, the worker replaced, the next valid call 200, runtime RSS peak within 4 MiB of before, the other load without failures",
        json!({
            "memory_limit_bytes": 96 * MIB, "calls": f.calls,
            "runtime_rss_kib": {"before": first, "peak": peak, "end": end},
            "other_function": {
                "ok": f.load.counts.ok, "non2xx": f.load.counts.non2xx, "errors": f.load.counts.errors,
                "first_error": f.load.counts.first_error, "req_per_sec": f.load.rps(),
            },
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// 5. Slow clients

/// Each slow client sends one byte of its request every `SLOW_STEP`.
const SLOW_STEP: Duration = Duration::from_millis(200);
/// The slow clients start their trickles spread over this long, so that their requests
/// complete spread over it too (at once, 2,000 of them would overflow the function's queue).
const SLOW_SPREAD: Duration = Duration::from_secs(4);

/// How the slow clients ended.
#[derive(Default, Debug)]
struct SlowRun {
    connected: usize,
    connect_errors: usize,
    connect_secs: f64,
    /// The slowest single connect.
    connect_max_ms: f64,
    answered_200: usize,
    /// Other answers: (status and errorType, count).
    other: Vec<(String, usize)>,
    /// Closed or failed without a complete answer.
    dropped: usize,
    first_drop: Option<String>,
    /// Still waiting at the deadline.
    pending: usize,
    /// From the start of the trickle until the last byte was sent, and until the last answer.
    trickle_secs: f64,
    last_answer_secs: f64,
}

struct Slow {
    stream: Option<MioStream>,
    sent: usize,
    next: Instant,
    got: Vec<u8>,
}

/// Opens `n` connections and trickles `req` on each, one byte every `SLOW_STEP`, the clients
/// staggered over `SLOW_SPREAD`; then waits for every answer until `deadline` after the last byte.
/// `started` is set once every connection is open and the trickle has begun.
fn slow_clients(
    addr: SocketAddr,
    req: &[u8],
    n: usize,
    deadline: Duration,
    started: &AtomicBool,
) -> SlowRun {
    let mut run = SlowRun::default();
    let mut poll = Poll::new().expect("mio poll");
    let t_connect = Instant::now();
    let mut clients: Vec<Slow> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let stream = connect_mio(addr).and_then(|mut s| {
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE)?;
                Ok(s)
            });
            match stream {
                Ok(_) => run.connected += 1,
                Err(_) => run.connect_errors += 1,
            }
            run.connect_max_ms = run.connect_max_ms.max(t.elapsed().as_secs_f64() * 1000.0);
            Slow {
                stream: stream.ok(),
                sent: 0,
                next: t_connect,
                got: Vec::new(),
            }
        })
        .collect();
    run.connect_secs = t_connect.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        c.next = t0 + SLOW_SPREAD.mul_f64(i as f64 / n.max(1) as f64);
    }
    started.store(true, Ordering::Relaxed);
    let mut open = run.connected;
    let mut writing = run.connected;
    let mut end = t0 + SLOW_SPREAD + SLOW_STEP * (req.len() as u32 + 1) + deadline;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; RBUF];
    // "200" for each 200 `hello`, else the status and errorType of the answer.
    let mut answers: Vec<String> = Vec::new();
    // Closes a client: answered (Ok) or dropped (Err).
    let mut finish = |c: &mut Slow, poll: &Poll, why: Result<String, String>, run: &mut SlowRun| {
        if let Some(mut s) = c.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        match why {
            Ok(answer) => answers.push(answer),
            Err(e) => {
                run.dropped += 1;
                run.first_drop.get_or_insert(e);
            }
        }
        run.last_answer_secs = t0.elapsed().as_secs_f64();
    };
    let mut trickling = true;
    while open > 0 && Instant::now() < end {
        if trickling && writing == 0 {
            // Every byte is out (or its client is gone): from now on, only the deadline.
            trickling = false;
            run.trickle_secs = t0.elapsed().as_secs_f64();
            end = Instant::now() + deadline;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(5))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            let Some(s) = c.stream.as_mut() else { continue };
            let result = loop {
                match s.read(&mut buf) {
                    Ok(0) => break Some(Err("closed by the runtime before an answer".into())),
                    Ok(k) => c.got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(Err(format!("read: {e}"))),
                }
            };
            let parsed = parse_response(&c.got, Some(b"hello"), matches!(result, Some(Err(_))));
            let outcome = match parsed {
                Ok(Some(r)) if r.status == 200 && r.body_ok => Some(Ok("200".into())),
                Ok(Some(r)) => Some(Ok(answer_summary(&c.got, &r))),
                Ok(None) => result,
                Err(e) => Some(Err(e)),
            };
            if let Some(o) = outcome {
                if c.sent < req.len() {
                    writing -= 1;
                }
                finish(c, &poll, o, &mut run);
                open -= 1;
            }
        }
        let now = Instant::now();
        if writing > 0 {
            for c in clients.iter_mut() {
                if c.sent >= req.len() || now < c.next {
                    continue;
                }
                let Some(s) = c.stream.as_mut() else { continue };
                match s.write(&req[c.sent..c.sent + 1]) {
                    Ok(1) => {
                        c.sent += 1;
                        c.next += SLOW_STEP;
                        if c.sent == req.len() {
                            writing -= 1;
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        writing -= 1;
                        finish(c, &poll, Err(format!("write: {e}")), &mut run);
                        open -= 1;
                    }
                }
            }
        }
    }
    run.pending = open;
    for a in answers {
        if a == "200" {
            run.answered_200 += 1;
        } else if let Some(x) = run.other.iter_mut().find(|x| x.0 == a) {
            x.1 += 1;
        } else {
            run.other.push((a, 1));
        }
    }
    run
}

fn scenario_slow_clients(cfg: &Config, tmp: &Path) -> Scenario {
    const NAME: &str = "slow_clients";
    const WINDOW: Duration = Duration::from_secs(8);
    let n = cfg.slow_clients;
    println!(
        "\n[5] {n} slow clients (one byte every {} ms each, starts spread over {} s) while c=16 load runs",
        SLOW_STEP.as_millis(),
        SLOW_SPREAD.as_secs()
    );
    let rt = match Runtime::start(tmp, "slow", json!([hello(64)])) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let req = rt.invoke_req("hello", b"hello", "");
    // The slow clients' request is short, so that its head trickles in well within 30 s.
    let slow_req = b"POST /invoke/hello HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let load = |live| Load {
        latencies: true,
        live,
        ..Load::new(rt.addr(), &req, Some(b"hello"), 16, 2, WINDOW)
    };
    let _warm = run_load(&Load::new(
        rt.addr(),
        &req,
        None,
        16,
        2,
        Duration::from_secs(1),
    ));
    let rss_idle = vm_rss_kib(rt.pid()).unwrap_or(0);
    let base = run_load(&load(None));
    let started = AtomicBool::new(false);
    let live = Live::default();
    let (slow, with, samples) = thread::scope(|s| {
        let slow =
            s.spawn(|| slow_clients(rt.addr(), slow_req, n, Duration::from_secs(30), &started));
        while !started.load(Ordering::Relaxed) && !slow.is_finished() {
            thread::sleep(Duration::from_millis(10));
        }
        let (with, samples) = load_sampled(&load(Some(&live)), rt.pid(), Duration::from_secs(1));
        (slow.join().expect("slow clients panicked"), with, samples)
    });
    let rss_with = peak_rss(&samples);
    let fds_with = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    thread::sleep(Duration::from_secs(1));
    let rss_after = vm_rss_kib(rt.pid()).unwrap_or(0);
    let p99 = |r: &ThroughputRun| r.latency_us(99.0).map_or(f64::NAN, |v| v / 1000.0);
    let ratio = with.rps() / base.rps().max(1e-9);
    println!(
        "    normal load without slow clients: {:.0} req/s, p99 {:.2} ms; {}",
        base.rps(),
        p99(&base),
        fmt_counts(&base.counts)
    );
    println!(
        "    normal load with {n} slow clients: {:.0} req/s ({ratio:.2}x), p99 {:.2} ms; {}",
        with.rps(),
        p99(&with),
        fmt_counts(&with.counts)
    );
    println!(
        "    runtime: RSS {:.2} MiB idle, peak {:.2} MiB with the slow clients ({fds_with} fds), {:.2} MiB after",
        mib(rss_idle),
        mib(rss_with),
        mib(rss_after)
    );
    let other: Vec<String> = slow
        .other
        .iter()
        .map(|(s, k)| format!("{k} x {s}"))
        .collect();
    println!(
        "    slow clients: {} connected in {:.2} s (slowest {:.0} ms, {} failed), last byte sent at {:.1} s; answered 200: {}, other answers: [{}], dropped: {}{}, still waiting: {}; last answer at {:.1} s",
        slow.connected,
        slow.connect_secs,
        slow.connect_max_ms,
        slow.connect_errors,
        slow.trickle_secs,
        slow.answered_200,
        other.join(", "),
        slow.dropped,
        slow.first_drop
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})")),
        slow.pending,
        slow.last_answer_secs
    );
    let pass = slow.answered_200 == n
        && with.counts.non2xx + with.counts.errors == 0
        && base.counts.non2xx + base.counts.errors == 0
        && ratio >= 0.7;
    verdict(
        NAME,
        pass,
        "every slow client answered 200, the normal load without failures and at >= 70 % of its req/s without them",
        json!({
            "slow_clients": n, "byte_interval_ms": SLOW_STEP.as_millis() as u64,
            "start_spread_secs": SLOW_SPREAD.as_secs(), "request_bytes": slow_req.len(),
            "without": {"req_per_sec": base.rps(), "p99_ms": base.latency_us(99.0).map(|v| v / 1000.0),
                        "p50_ms": base.latency_us(50.0).map(|v| v / 1000.0),
                        "non2xx": base.counts.non2xx, "errors": base.counts.errors},
            "with": {"req_per_sec": with.rps(), "p99_ms": with.latency_us(99.0).map(|v| v / 1000.0),
                     "p50_ms": with.latency_us(50.0).map(|v| v / 1000.0),
                     "non2xx": with.counts.non2xx, "errors": with.counts.errors,
                     "first_error": with.counts.first_error},
            "req_per_sec_ratio": ratio,
            "runtime_rss_kib": {"idle": rss_idle, "peak_with_slow_clients": rss_with, "after": rss_after},
            "runtime_peak_fds": fds_with,
            "slow": {"connected": slow.connected, "connect_errors": slow.connect_errors,
                     "connect_secs": slow.connect_secs, "connect_max_ms": slow.connect_max_ms, "answered_200": slow.answered_200,
                     "other_answers": slow.other, "dropped": slow.dropped, "first_drop": slow.first_drop,
                     "pending": slow.pending, "last_byte_secs": slow.trickle_secs,
                     "last_answer_secs": slow.last_answer_secs},
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM under load

fn scenario_sigterm(tmp: &Path, code: &Path) -> Scenario {
    const NAME: &str = "sigterm";
    println!(
        "\n[6] SIGTERM with {TERM_INFLIGHT} requests in flight to a 500 ms handler and {TERM_LATE} idle keep-alive connections; {TERM_LATE} requests sent after it"
    );
    let mut rt = match Runtime::start(tmp, "term", json!([soak_fn(code, "sleep", 128 * MIB)])) {
        Ok(rt) => rt,
        Err(e) => return failed(NAME, &e),
    };
    let (addr, pid) = (rt.addr(), rt.pid());
    let slow_req = rt.invoke_req("sleep", b"sleep", "");
    let quick_req = rt.invoke_req("sleep", b"x", "");
    // Idle keep-alive connections, each after one exchange: SIGTERM should close them.
    let idle: Vec<TcpStream> = (0..TERM_LATE)
        .filter_map(|_| {
            let mut c = BlockingClient::new(addr);
            let _ = exchange(&mut c, &quick_req);
            c.stream.take()
        })
        .collect();
    let (inflight, late_answers, fresh, exit, exit_secs) = thread::scope(|s| {
        let calls: Vec<_> = (0..TERM_INFLIGHT)
            .map(|_| s.spawn(|| exchange(&mut BlockingClient::new(addr), &slow_req)))
            .collect();
        // SIGTERM once all of them are in the worker.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let n: u64 = ps_json(&rt.work)
                .unwrap_or_default()
                .iter()
                .filter_map(|w| w["inflight"].as_u64())
                .sum();
            if n >= TERM_INFLIGHT as u64 {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let t_term = Instant::now();
        signal(pid, "TERM");
        thread::sleep(Duration::from_millis(20));
        // New invocations, each on a new connection.
        let late_answers: Vec<(Option<u16>, String, f64)> = (0..TERM_LATE)
            .map(|_| exchange(&mut BlockingClient::new(addr), &quick_req))
            .collect();
        // What the idle connections got, without sending anything: a FIN is a read of 0.
        let fresh = idle
            .into_iter()
            .map(|mut c| {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                match c.read(&mut [0u8; 256]) {
                    Ok(0) => "FIN".to_string(),
                    Ok(_) => "bytes".to_string(),
                    Err(e) => e.to_string(),
                }
            })
            .collect::<Vec<_>>();
        let inflight: Vec<(Option<u16>, String, f64)> = calls
            .into_iter()
            .map(|h| h.join().expect("call panicked"))
            .collect();
        let end = t_term + Duration::from_secs(15);
        let exit = loop {
            match rt.proc.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(2)),
                _ => break None,
            }
        };
        let exit_secs = t_term.elapsed().as_secs_f64();
        (inflight, late_answers, fresh, exit, exit_secs)
    });
    let ok = inflight
        .iter()
        .filter(|(st, b, _)| *st == Some(200) && b == "done")
        .count();
    let slowest = inflight.iter().map(|x| x.2).fold(0.0, f64::max);
    let stopped = late_answers
        .iter()
        .filter(|(st, t, _)| *st == Some(503) && t == "RuntimeStopped")
        .count();
    let late_seen: Vec<String> = late_answers
        .iter()
        .map(|(st, t, _)| format!("{} {t}", st.map_or("-".into(), |s| s.to_string())))
        .collect();
    let code_ = exit.and_then(|st| st.code());
    println!(
        "    in flight: {ok} of {TERM_INFLIGHT} answered 200 'done' (slowest {slowest:.2} s after it was sent)"
    );
    let fins = fresh.iter().filter(|f| *f == "FIN").count();
    println!(
        "    sent after SIGTERM, each on a new connection: {stopped} of {TERM_LATE} answered 503 RuntimeStopped [{}]",
        late_seen.join("; ")
    );
    println!(
        "    idle keep-alive connections: {fins} of {} closed with a FIN [{}]",
        fresh.len(),
        fresh.join(", ")
    );
    println!(
        "    exit: {} {exit_secs:.2} s after SIGTERM",
        exit.map_or("still running after 15 s".into(), |st| st.to_string())
    );
    let pass = ok == TERM_INFLIGHT && stopped == TERM_LATE && fins == TERM_LATE && code_ == Some(0);
    verdict(
        NAME,
        pass,
        "all 40 in flight answered 200, every later request 503 RuntimeStopped, the idle connections closed with a FIN, exit status 0",
        json!({
            "in_flight": TERM_INFLIGHT, "in_flight_ok": ok, "slowest_secs": slowest,
            "late_requests": TERM_LATE, "late_runtime_stopped": stopped, "late_answers": late_seen,
            "idle_connections": fresh, "idle_closed_with_fin": fins, "exit_code": code_,
            "exit_signal": exit.and_then(|st| std::os::unix::process::ExitStatusExt::signal(&st)),
            "exit_secs_after_sigterm": exit_secs,
        }),
    )
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // there it should only prove that the suite builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak suite: built; run it with `make soak` (cargo bench --bench soak)");
        return;
    }
    let cfg = Config::from_env();
    let t_start = Instant::now();
    let nofile = raise_nofile();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("noslate soak suite: {}", noslate_bin().display());
    println!(
        "  scenarios {} (SOAK_SCENARIOS), {} requests (SOAK_REQUESTS), {} slow clients (SOAK_SLOW_CLIENTS); RLIMIT_NOFILE {nofile}; loadavg before {}",
        cfg.scenarios,
        cfg.requests,
        cfg.slow_clients,
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Declared first, so dropped last: after every process below is gone.
    let tmp = TempDir::new().expect("temp dir");
    let code = tmp.0.join("soak-fn");
    std::fs::create_dir_all(&code)
        .and_then(|()| std::fs::write(code.join("index.js"), SOAK_JS))
        .expect("write the soak function");
    let mut results = Vec::new();
    for s in cfg.scenarios.chars() {
        let t = Instant::now();
        let mut r = match s {
            '1' => scenario_requests(&cfg, &tmp.0),
            '2' => scenario_kill(&tmp.0),
            '3' => scenario_busy_loop(&tmp.0, &code),
            '4' => scenario_hog(&tmp.0, &code),
            '5' => scenario_slow_clients(&cfg, &tmp.0),
            '6' => scenario_sigterm(&tmp.0, &code),
            _ => continue,
        };
        r.json["secs"] = json!(t.elapsed().as_secs_f64());
        results.push(r);
    }
    let all = results.iter().all(|r| r.pass);
    let total = t_start.elapsed().as_secs_f64();
    println!("\nsummary ({total:.0} s):");
    for r in &results {
        println!("  {}  {}", common::pass(r.pass), r.name);
    }
    let mut scenarios = serde_json::Map::new();
    for r in results {
        scenarios.insert(r.name.to_string(), r.json);
    }
    write_report(
        "soak",
        &json!({
            "binary": noslate_bin(), "requests": cfg.requests, "slow_clients": cfg.slow_clients,
            "nofile_limit": nofile, "loadavg_before": loadavg.trim(),
            "scenarios": scenarios, "total_secs": total, "pass": all,
        }),
    );
    let _ = io::stdout().flush();
    drop(tmp);
    if !all {
        std::process::exit(1);
    }
}
