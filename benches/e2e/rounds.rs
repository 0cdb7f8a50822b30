//! The interleaved rounds of the targets (a)-(f) and (w): c=64 throughput and c=1 latency, and their
//! statistics per round and pooled.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::config::Config;
use crate::pin::Pin;
use crate::report::{fmt_int, fmt_us};

/// The round targets, in `Target` order.
pub const NTARGETS: usize = 9;

pub struct LatencyRun {
    /// Latency of every 2xx-valid exchange, nanoseconds, sorted.
    pub samples: Vec<u64>,
    pub counts: Counts,
    pub secs: f64,
}

pub fn run_latency(
    addr: SocketAddr,
    req: &[u8],
    expect: Option<&[u8]>,
    dur: Duration,
) -> LatencyRun {
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

pub struct Target {
    pub key: char,
    pub label: &'static str,
    pub addr: Option<SocketAddr>,
    /// The server process (for BENCH_PIN).
    pub pid: Option<u32>,
    pub req: Vec<u8>,
    pub expect: Option<&'static [u8]>,
    pub note: Option<String>,
    /// c=64 only: no c=1 phase (its rounds hold an empty latency run).
    pub tp_only: bool,
    pub rounds: Vec<(LatencyRun, ThroughputRun)>,
    pub warmup: Counts,
    /// Per round: the server process's own CPU time (all its threads, not its children) per
    /// 2xx answer in the c=64 segment, in microseconds. Unlike throughput, this does not move
    /// with what the rest of the machine (the load generator, the worker) happens to do.
    pub cpu_us_per_req: Vec<Option<f64>>,
    /// Per round: voluntary context switches (a process went to sleep and was woken) of the
    /// server process and its children (the workers) per c=1 exchange.
    pub wakeups_per_req: Vec<Option<f64>>,
}

/// Voluntary context switches of `pid` and its children, all their threads together (from
/// /proc/PID/task/TID/status): how often they slept and were woken.
pub fn wakeups(pid: u32) -> Option<u64> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid is the second field after the command, which is in parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    let mut total = 0;
    for p in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// CPU time `pid` has used, all its threads together, in nanoseconds (from schedstat).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

impl Target {
    pub fn new(key: char, label: &'static str, tp_only: bool) -> Target {
        Target {
            key,
            label,
            addr: None,
            pid: None,
            req: Vec::new(),
            expect: None,
            note: None,
            tp_only,
            rounds: Vec::new(),
            warmup: Counts::default(),
            cpu_us_per_req: Vec::new(),
            wakeups_per_req: Vec::new(),
        }
    }

    pub fn set(
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
    pub fn probe(&mut self) {
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

pub struct Stats {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub samples: usize,
    pub c1_rps: f64,
    pub rps: f64,
    pub c1: Counts,
    pub c64: Counts,
}

impl Stats {
    /// Rounds pooled: all c=1 samples sorted together, c=64 total 2xx over total time.
    pub fn pooled(runs: &[(LatencyRun, ThroughputRun)]) -> Stats {
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

    /// Something was measured, and nothing failed. A c=64-only target has no c=1 samples.
    pub fn clean(&self) -> bool {
        let c1_ran = self.c1.ok + self.c1.non2xx + self.c1.errors > 0;
        let measured = self.samples > 0 || (!c1_ran && self.c64.ok > 0);
        measured && self.c1.non2xx + self.c1.errors + self.c64.non2xx + self.c64.errors == 0
    }

    pub fn first_error(&self) -> Option<&String> {
        self.c1
            .first_error
            .as_ref()
            .or(self.c64.first_error.as_ref())
    }

    pub fn json(&self) -> Value {
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

/// Round r runs the targets in this order: a→d→b→f→e→w→c→y→x, then x→y→c→w→e→f→b→d→a, and so
/// on. (b) is adjacent in time to (d) and (f), whose ratios to it have the tightest targets, and
/// (e) is one c=64-only segment away, as are (a) and (c); (w), two workers, sits next to (c),
/// which it is compared with, and (x) next to (y). Unselected targets drop out of the order.
pub fn round_order(r: usize) -> [usize; NTARGETS] {
    if r.is_multiple_of(2) {
        [0, 3, 1, 5, 4, 6, 2, 8, 7]
    } else {
        [7, 8, 2, 6, 4, 5, 1, 3, 0]
    }
}

/// The rounds. `setup(r, targets)` starts the servers of round r (every round with
/// `BENCH_FRESH`, else only the first) and fills in the targets' addresses.
pub fn run_rounds(
    cfg: &Config,
    targets: &mut [Target; NTARGETS],
    setup: &mut dyn FnMut(usize, &mut [Target; NTARGETS]),
) {
    let seg = cfg.segment();
    for r in 0..cfg.rounds {
        let fresh = r == 0 || cfg.fresh;
        if fresh {
            setup(r, targets);
        }
        for i in round_order(r) {
            let t = &mut targets[i];
            let Some(addr) = t.addr else { continue };
            let warm = if fresh { cfg.warmup } else { cfg.warmup / 4.0 };
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
            // c=64 first, right after the warm-up: every target's c=64 then follows the same
            // warm-up (with c=1 first, a target's worker would get more JIT warm-up than a
            // c=64-only one's: +5 % for (b) over (d) in A/A runs).
            let cpu_before = t.pid.and_then(process_cpu_ns);
            let tp = run_throughput(addr, &t.req, t.expect, cfg.conns, cfg.threads, seg);
            let cpu_after = t.pid.and_then(process_cpu_ns);
            t.cpu_us_per_req.push(
                cpu_before
                    .zip(cpu_after)
                    .filter(|_| tp.counts.ok > 0)
                    .map(|(a, b)| b.saturating_sub(a) as f64 / 1000.0 / tp.counts.ok as f64),
            );
            let lat = if t.tp_only {
                LatencyRun {
                    samples: Vec::new(),
                    counts: Counts::default(),
                    secs: 0.0,
                }
            } else {
                let _pin = (cfg.pin).then(|| t.pid.map(Pin::new));
                let before = t.pid.and_then(wakeups);
                let lat = run_latency(addr, &t.req, t.expect, seg);
                let after = t.pid.and_then(wakeups);
                let exchanges = lat.counts.ok + lat.counts.non2xx;
                t.wakeups_per_req.push(
                    before
                        .zip(after)
                        .filter(|_| exchanges > 0)
                        .map(|(a, b)| b.saturating_sub(a) as f64 / exchanges as f64),
                );
                lat
            };
            let c1 = if t.tp_only {
                "c=1 not measured".to_string()
            } else {
                format!(
                    "c=1 p50 {:>6} µs, p99 {:>7} µs, {} ok {} non-2xx {} err",
                    fmt_us(percentile_us(&lat.samples, 50.0)),
                    fmt_us(percentile_us(&lat.samples, 99.0)),
                    lat.counts.ok,
                    lat.counts.non2xx,
                    lat.counts.errors,
                )
            };
            eprintln!(
                "bench: round {} {:<22} {c1} | c=64 {:>7} req/s, {} non-2xx {} err",
                r + 1,
                t.label,
                fmt_int(tp.rps()),
                tp.counts.non2xx,
                tp.counts.errors
            );
            t.rounds.push((lat, tp));
        }
    }
}
