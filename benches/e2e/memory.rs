//! The runtime's own memory: its `VmRSS` with two idle workers, and per client connection, idle
//! and stalled in the middle of a pipeline.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::config::Config;
use crate::report::fmt_int;
use crate::servers::{start_noslate, why};

/// The runtime's own RSS with two idle workers, MiB.
pub const TARGET_RSS_MIB: f64 = 10.0;

pub fn measure_rss(tmp: &Path) -> Value {
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

/// The runtime's own RSS with two idle workers, KiB, if it was measured.
pub fn rss_kib(rss: &Value) -> Option<u64> {
    rss.get("runtime_vm_rss_kib").and_then(Value::as_u64)
}

/// The RSS with two idle workers was measured and is under its target.
pub fn rss_pass(rss: &Value) -> bool {
    rss_kib(rss).is_some_and(|k| (k as f64) / 1024.0 < TARGET_RSS_MIB)
}

/// The RSS lines of the report: with two idle workers (`measure_rss`), and after the load.
pub fn rss_lines(out: &mut String, rss: &Value, rss_after: Option<u64>) {
    let kib = |k: &str| rss.get(k).and_then(Value::as_u64).unwrap_or(0);
    match rss_kib(rss) {
        Some(k) => {
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: {:.1} MiB (target < {TARGET_RSS_MIB:.0} MiB)  {}  [not counting its {} child processes: {:.1} MiB together]",
                k as f64 / 1024.0,
                pass(rss_pass(rss)),
                kib("child_processes"),
                kib("children_vm_rss_kib") as f64 / 1024.0
            );
        }
        None => {
            let e = rss.get("error").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: not measured (target < {TARGET_RSS_MIB:.0} MiB)  FAIL ({})",
                e.lines().next().unwrap_or_default()
            );
        }
    }
    if let Some(k) = rss_after {
        let _ = writeln!(
            out,
            "runtime RSS after the load (the last round's runtime, 1 worker; informational): {:.1} MiB",
            k as f64 / 1024.0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Memory per connection

/// Target: the runtime's RSS per idle keep-alive connection, KiB.
pub const TARGET_IDLE_CONN_KIB: f64 = 4.0;
/// Target: the runtime's RSS per stalled pipelining connection, KiB. Its buffers hold at most
/// `http.maxConnectionOutputBytes` (16 KiB by default) of unsent answers, one answer more and a
/// 4 KiB read buffer; the target leaves room for the allocator's overhead around them, and is
/// a quarter of the 280 KB a stalled connection used to cost.
pub const TARGET_STALLED_CONN_KIB: f64 = 68.0;
/// `SO_RCVBUF` of the stalled clients, set before they connect (the kernel doubles it).
pub const STALLED_RCVBUF: usize = 4096;
/// The MSS the stalled clients announce (`TCP_MAXSEG` before connect): Ethernet's, as from a
/// client across a network. Loopback's own MSS (65483) makes the kernel size the runtime's send
/// buffer near `tcp_wmem`'s maximum (4 MiB) per connection, where a whole pipeline's answers
/// (362 KB for 2,000 `/healthz`) would sit without the runtime ever holding a backlog; with
/// this MSS the kernel takes about 70 KB per connection and the rest backs up in the runtime.
pub const STALLED_MSS: u32 = 1460;
/// Of the stalled connections, the share whose requests the runtime must have stopped reading
/// (found in /proc/net/tcp) for the row to measure a stall at all.
const MIN_STALLED_SHARE: f64 = 0.9;
/// Growth of the RSS over the last second below which it counts as settled, KiB.
const SETTLE_SLACK_KIB: u64 = 128;
/// CPU the runtime may use over the last second while it counts as settled, clock ticks
/// (`CLOCK_TICKS_PER_SEC` a second): 5 %.
const SETTLE_CPU_TICKS: u64 = 5;
/// The unit of the CPU times in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// The longest a phase waits for the RSS to settle.
const SETTLE_BOUND: Duration = Duration::from_secs(30);
/// Stalled connections at the larger count may cost at most this much more per connection than
/// at the smaller one (and 1 KiB), to count as not growing with the client count.
const GROWTH_TOLERANCE: f64 = 1.10;

/// The RSS of `pid` once it stopped growing and the process stopped working: sampled every
/// 100 ms, with `between` called before each sample, until over the last second it grew by
/// less than `SETTLE_SLACK_KIB` and the process used less than `SETTLE_CPU_TICKS` of CPU, or
/// `SETTLE_BOUND` passed. (A runtime still parsing a million pipelined requests may hold its
/// RSS flat for a while before its output backs up.)
pub struct Settled {
    pub kib: u64,
    pub secs: f64,
    pub settled: bool,
    /// CPU seconds the process used while this waited.
    pub cpu_secs: f64,
}

/// CPU clock ticks (user + system) `pid` has used, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(comm)": state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn settle(pid: u32, mut between: impl FnMut()) -> Settled {
    let t0 = Instant::now();
    let cpu0 = cpu_ticks(pid).unwrap_or(0);
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    loop {
        between();
        let t = t0.elapsed().as_secs_f64();
        let kib = vm_rss_kib(pid).unwrap_or(0);
        let cpu = cpu_ticks(pid).unwrap_or(0);
        samples.push((t, kib, cpu));
        let done = |settled| Settled {
            kib,
            secs: t,
            settled,
            cpu_secs: cpu.saturating_sub(cpu0) as f64 / CLOCK_TICKS_PER_SEC,
        };
        let second_ago = samples.iter().rev().find(|s| s.0 <= t - 1.0);
        if let Some(&(_, old_kib, old_cpu)) = second_ago
            && kib <= old_kib + SETTLE_SLACK_KIB
            && cpu.saturating_sub(old_cpu) < SETTLE_CPU_TICKS
        {
            return done(true);
        }
        if t0.elapsed() >= SETTLE_BOUND {
            return done(false);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel's queues of the runtime's established connections on `port`, from
/// /proc/net/tcp and /proc/net/tcp6.
#[derive(Debug, Default, Clone, Copy)]
pub struct Queues {
    /// Connections with request bytes the runtime has not read.
    pub unread_conns: usize,
    /// Bytes the runtime has not read, and bytes it wrote that the client has not acknowledged.
    pub unread_bytes: u64,
    pub unsent_bytes: u64,
}

fn queues(port: u16) -> Queues {
    let mut q = Queues::default();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) || f.get(3) != Some(&"01") {
                continue;
            }
            let Some((tx, rx)) = f.get(4).and_then(|x| x.split_once(':')) else {
                continue;
            };
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
            let (tx, rx) = (hex(tx), hex(rx));
            q.unsent_bytes += tx;
            q.unread_bytes += rx;
            q.unread_conns += usize::from(rx > 0);
        }
    }
    q
}

/// One `GET /healthz` on a new keep-alive connection, answered 200; the connection stays open.
fn healthz_conn(addr: SocketAddr, req: &[u8], buf: &mut [u8]) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(req).map_err(|e| format!("write: {e}"))?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err("response larger than the read buffer".into());
        }
        let n = s
            .read(&mut buf[filled..])
            .map_err(|e| format!("read: {e}"))?;
        filled += n;
        match parse_response(&buf[..filled], None, n == 0)? {
            Some(r) if r.status == 200 && !r.close => return Ok(s),
            Some(r) => return Err(answer_summary(&buf[..filled], &r)),
            None if n == 0 => return Err("closed before an answer".into()),
            None => {}
        }
    }
}

/// The idle phase: connections that each made one `GET /healthz` and then idle.
pub struct IdlePhase {
    pub conns: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub before_kib: u64,
    pub after: Settled,
}

impl IdlePhase {
    fn kib_per_conn(&self) -> Option<f64> {
        (self.ok > 0)
            .then(|| self.after.kib.saturating_sub(self.before_kib) as f64 / self.ok as f64)
    }

    fn pass(&self) -> bool {
        self.errors == 0
            && self
                .kib_per_conn()
                .is_some_and(|k| k <= TARGET_IDLE_CONN_KIB)
    }

    fn json(&self) -> Value {
        json!({"conns": self.conns, "ok": self.ok, "errors": self.errors,
               "first_error": self.first_error, "rss_before_kib": self.before_kib,
               "rss_kib": self.after.kib, "settled": self.after.settled,
               "settle_secs": self.after.secs, "kib_per_conn": self.kib_per_conn(),
               "target_max_kib_per_conn": TARGET_IDLE_CONN_KIB, "pass": self.pass()})
    }
}

/// A stalled phase: connections that each wrote a long pipeline of `GET /healthz` (with a small
/// receive buffer) and never read.
pub struct StalledPhase {
    pub conns: usize,
    pub connected: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Bytes of each connection's pipeline, and of all of them that the kernel took.
    pub pipeline_bytes: usize,
    pub sent_bytes: u64,
    /// Connections whose whole pipeline the kernel took.
    pub fully_sent: usize,
    pub before_kib: u64,
    pub after: Settled,
    /// The runtime's open file descriptors at the end.
    pub runtime_fds: Option<usize>,
    /// The kernel's queues of the runtime's connections at the end.
    pub queues: Queues,
}

impl StalledPhase {
    fn total_kib(&self) -> u64 {
        self.after.kib.saturating_sub(self.before_kib)
    }

    fn kib_per_conn(&self) -> Option<f64> {
        (self.connected > 0).then(|| self.total_kib() as f64 / self.connected as f64)
    }

    /// The runtime stopped reading (nearly) every stalled connection: its output backed up.
    fn stalled(&self) -> bool {
        self.queues.unread_conns as f64 >= MIN_STALLED_SHARE * self.connected as f64
    }

    fn pass(&self) -> bool {
        self.errors == 0
            && self.after.settled
            && self.stalled()
            && self
                .kib_per_conn()
                .is_some_and(|k| k < TARGET_STALLED_CONN_KIB)
    }

    fn json(&self, requests: usize) -> Value {
        json!({"conns": self.conns, "connected": self.connected, "errors": self.errors,
               "first_error": self.first_error, "requests_per_conn": requests,
               "pipeline_bytes_per_conn": self.pipeline_bytes, "so_rcvbuf": STALLED_RCVBUF,
               "sent_bytes": self.sent_bytes, "conns_fully_sent": self.fully_sent,
               "rss_before_kib": self.before_kib, "rss_kib": self.after.kib,
               "total_kib": self.total_kib(), "settled": self.after.settled,
               "settle_secs": self.after.secs, "runtime_cpu_secs": self.after.cpu_secs,
               "runtime_fds": self.runtime_fds, "client_mss": STALLED_MSS,
               "conns_unread_by_runtime": self.queues.unread_conns,
               "kernel_unread_bytes": self.queues.unread_bytes,
               "kernel_unsent_bytes": self.queues.unsent_bytes,
               "stalled_share_min": MIN_STALLED_SHARE, "stalled": self.stalled(),
               "kib_per_conn": self.kib_per_conn(),
               "target_max_kib_per_conn": TARGET_STALLED_CONN_KIB, "pass": self.pass()})
    }
}

/// Opens `n` idle connections; they stay in `keep`.
fn idle_phase(
    pid: u32,
    addr: SocketAddr,
    port: u16,
    n: usize,
    keep: &mut Vec<TcpStream>,
) -> IdlePhase {
    let req = request_bytes("GET", "/healthz", port, b"");
    let mut buf = vec![0u8; RBUF];
    let before_kib = vm_rss_kib(pid).unwrap_or(0);
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for _ in 0..n {
        match healthz_conn(addr, &req, &mut buf) {
            Ok(s) => {
                keep.push(s);
                ok += 1;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let after = settle(pid, || {});
    IdlePhase {
        conns: n,
        ok,
        errors,
        first_error,
        before_kib,
        after,
    }
}

/// Writes what the kernel takes of `pipeline[*sent..]` without blocking; false on an error.
fn push(s: &mut TcpStream, pipeline: &[u8], sent: &mut usize, err: &mut Option<String>) -> bool {
    while *sent < pipeline.len() {
        match s.write(&pipeline[*sent..]) {
            Ok(0) => return true,
            Ok(k) => *sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                err.get_or_insert(format!("write: {e}"));
                return false;
            }
        }
    }
    true
}

/// Opens `n` stalled connections, each with `requests` pipelined `GET /healthz`; they stay in
/// `keep`. Keeps writing what is left of their pipelines until the runtime's RSS settles.
fn stalled_phase(
    pid: u32,
    addr: SocketAddrV4,
    requests: usize,
    n: usize,
    keep: &mut Vec<TcpStream>,
) -> StalledPhase {
    let pipeline = request_bytes("GET", "/healthz", addr.port(), b"").repeat(requests);
    let before_kib = vm_rss_kib(pid).unwrap_or(0);
    let (mut errors, mut first_error) = (0, None);
    let mut conns: Vec<(TcpStream, usize)> = Vec::with_capacity(n);
    for _ in 0..n {
        let s = connect_with_opts(addr, STALLED_RCVBUF, STALLED_MSS).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match s {
            Ok(mut s) => {
                let mut sent = 0;
                if push(&mut s, &pipeline, &mut sent, &mut first_error) {
                    conns.push((s, sent));
                } else {
                    errors += 1;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("connect: {e}"));
            }
        }
    }
    let connected = conns.len();
    let after = settle(pid, || {
        for (s, sent) in conns.iter_mut() {
            if !push(s, &pipeline, sent, &mut first_error) {
                errors += 1;
                *sent = pipeline.len();
            }
        }
    });
    let sent_bytes = conns.iter().map(|c| c.1 as u64).sum();
    let fully_sent = conns.iter().filter(|c| c.1 == pipeline.len()).count();
    keep.extend(conns.into_iter().map(|c| c.0));
    StalledPhase {
        conns: n,
        connected,
        errors,
        first_error,
        pipeline_bytes: pipeline.len(),
        sent_bytes,
        fully_sent,
        before_kib,
        after,
        runtime_fds: fd_count(pid),
        queues: queues(addr.port()),
    }
}

/// A runtime for a memory row: the usual noslate target (`examples/hello`, one worker), after a
/// few `GET /healthz` on short connections and with its RSS settled.
fn memory_runtime(tmp: &Path, tag: &str) -> Result<(Proc, u16), String> {
    let (p, port) = start_noslate(tmp, tag, 1)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req = request_bytes("GET", "/healthz", port, b"");
    let mut buf = vec![0u8; RBUF];
    for _ in 0..16 {
        healthz_conn(addr, &req, &mut buf).map_err(|e| format!("warm-up: {e}"))?;
    }
    settle(p.pid(), || {});
    Ok((p, port))
}

/// The memory-per-connection rows.
#[derive(Default)]
pub struct ConnMemory {
    pub requests: usize,
    /// The first runtime: idle connections, then stalled ones beside them.
    pub baseline_kib: Option<u64>,
    pub idle: Option<IdlePhase>,
    pub stalled: Option<StalledPhase>,
    /// A fresh runtime with fewer stalled connections.
    pub small_baseline_kib: Option<u64>,
    pub small: Option<StalledPhase>,
    pub note: Option<String>,
}

impl ConnMemory {
    /// The stalled cost per connection does not grow with the client count: the larger count's
    /// per-connection figure is not above the smaller one's (within `GROWTH_TOLERANCE` and 1 KiB).
    fn no_growth(&self) -> Option<bool> {
        let large = self.stalled.as_ref()?.kib_per_conn()?;
        let small = self.small.as_ref()?.kib_per_conn()?;
        Some(large <= small * GROWTH_TOLERANCE + 1.0)
    }

    pub fn pass(&self) -> bool {
        self.note.is_none()
            && self.idle.as_ref().is_some_and(IdlePhase::pass)
            && self.stalled.as_ref().is_some_and(StalledPhase::pass)
            && self.small.as_ref().is_some_and(StalledPhase::pass)
            && self.no_growth() == Some(true)
    }

    pub fn json(&self) -> Value {
        json!({
            "runtime": "noslate, examples/hello, one worker (reservationCount 1)",
            "rss_source": "/proc/<pid>/status VmRSS of the runtime process",
            "baseline_kib": self.baseline_kib,
            "idle": self.idle.as_ref().map(IdlePhase::json),
            "stalled": self.stalled.as_ref().map(|s| s.json(self.requests)),
            "small_baseline_kib": self.small_baseline_kib,
            "stalled_small": self.small.as_ref().map(|s| s.json(self.requests)),
            "stalled_per_conn_does_not_grow": self.no_growth(),
            "growth_tolerance": GROWTH_TOLERANCE,
            "note": self.note, "pass": self.pass(),
        })
    }
}

/// Idle, then stalled connections on one runtime, then fewer stalled ones on a fresh runtime.
pub fn measure_conn_memory(cfg: &Config, tmp: &Path) -> ConnMemory {
    let mut m = ConnMemory {
        requests: cfg.mem_pipeline,
        ..ConnMemory::default()
    };
    match memory_runtime(tmp, "mem") {
        Ok((p, port)) => {
            let pid = p.pid();
            let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
            m.baseline_kib = vm_rss_kib(pid);
            let mut keep = Vec::with_capacity(2 * cfg.mem_conns);
            let idle = idle_phase(pid, addr.into(), port, cfg.mem_conns, &mut keep);
            eprintln!(
                "bench: memory: {} idle connections ({} errors), RSS {} -> {} KiB",
                idle.ok, idle.errors, idle.before_kib, idle.after.kib
            );
            m.idle = Some(idle);
            let stalled = stalled_phase(pid, addr, cfg.mem_pipeline, cfg.mem_conns, &mut keep);
            eprintln!(
                "bench: memory: {} stalled connections ({} errors), RSS {} -> {} KiB after {:.1} s",
                stalled.connected,
                stalled.errors,
                stalled.before_kib,
                stalled.after.kib,
                stalled.after.secs
            );
            m.stalled = Some(stalled);
            drop(keep);
            drop(p);
        }
        Err(e) => {
            eprintln!("bench: memory per connection: {e}");
            m.note = Some(why(&e));
            return m;
        }
    }
    match memory_runtime(tmp, "mem-small") {
        Ok((p, port)) => {
            let pid = p.pid();
            let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
            m.small_baseline_kib = vm_rss_kib(pid);
            let mut keep = Vec::with_capacity(cfg.mem_small_conns);
            let small = stalled_phase(pid, addr, cfg.mem_pipeline, cfg.mem_small_conns, &mut keep);
            eprintln!(
                "bench: memory: {} stalled connections on a fresh runtime ({} errors), RSS {} -> {} KiB after {:.1} s",
                small.connected, small.errors, small.before_kib, small.after.kib, small.after.secs
            );
            m.small = Some(small);
            drop(keep);
            drop(p);
        }
        Err(e) => {
            eprintln!(
                "bench: memory per connection ({} stalled): {e}",
                cfg.mem_small_conns
            );
            m.note = Some(why(&e));
        }
    }
    m
}

/// The memory-per-connection section of the report.
pub fn conn_memory_lines(out: &mut String, cfg: &Config, m: Option<&ConnMemory>) {
    let _ = writeln!(
        out,
        "\nmemory per connection (the runtime's own VmRSS from /proc/<pid>/status, kernel socket buffers not included; noslate with examples/hello, one worker):"
    );
    let Some(m) = m else {
        let _ = writeln!(out, "  not selected (BENCH_TARGETS)");
        return;
    };
    let mib = |k: u64| k as f64 / 1024.0;
    let kib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    if let Some(b) = m.baseline_kib {
        let _ = writeln!(out, "  baseline: {:.1} MiB", mib(b));
    }
    if let Some(i) = &m.idle {
        let mut verdict = pass(i.pass()).to_string();
        if let Some(e) = &i.first_error {
            let _ = write!(verdict, " ({} errors, first: {e})", i.errors);
        }
        let _ = writeln!(
            out,
            "  idle keep-alive, one GET /healthz each: {} conns, +{:.2} MiB = {} KiB per conn (target <= {TARGET_IDLE_CONN_KIB:.0} KiB)  {verdict}",
            fmt_int(i.ok as f64),
            mib(i.after.kib.saturating_sub(i.before_kib)),
            kib(i.kib_per_conn()),
        );
    }
    let stalled_line = |out: &mut String, label: &str, s: &StalledPhase| {
        let mut verdict = pass(s.pass()).to_string();
        if !s.stalled() {
            let _ = write!(
                verdict,
                " (the runtime stopped reading only {} of {} connections: no stall measured)",
                s.queues.unread_conns, s.connected
            );
        }
        if !s.after.settled {
            let _ = write!(
                verdict,
                " (not settled within {:.0} s: RSS still growing or the runtime still busy)",
                s.after.secs
            );
        }
        if let Some(e) = &s.first_error {
            let _ = write!(verdict, " ({} errors, first: {e})", s.errors);
        }
        let _ = writeln!(
            out,
            "  {label}: {} conns, +{:.1} MiB = {} KiB per conn, runtime RSS {:.1} MiB in all, {} fds; {} conns left unread by the runtime, the kernel holding {:.1} MiB of their requests and {:.1} MiB of answers (settled after {:.1} s, {:.1} s of the runtime's CPU; target < {TARGET_STALLED_CONN_KIB:.0} KiB per conn)  {verdict}",
            fmt_int(s.connected as f64),
            mib(s.total_kib()),
            kib(s.kib_per_conn()),
            mib(s.after.kib),
            s.runtime_fds.map_or("-".into(), |f| f.to_string()),
            fmt_int(s.queues.unread_conns as f64),
            s.queues.unread_bytes as f64 / MIB as f64,
            s.queues.unsent_bytes as f64 / MIB as f64,
            s.after.secs,
            s.after.cpu_secs,
        );
    };
    if let Some(s) = &m.stalled {
        let label = format!(
            "stalled pipelining, {} x GET /healthz in one write each, SO_RCVBUF {STALLED_RCVBUF} and MSS {STALLED_MSS} set before connect, never read, beside the idle ones",
            fmt_int(m.requests as f64)
        );
        stalled_line(out, &label, s);
    }
    if let Some(s) = &m.small {
        let label = format!(
            "stalled pipelining, the same, a fresh runtime (baseline {:.1} MiB)",
            mib(m.small_baseline_kib.unwrap_or(0))
        );
        stalled_line(out, &label, s);
    }
    if let Some(ok) = m.no_growth() {
        let per = |s: &Option<StalledPhase>| kib(s.as_ref().and_then(StalledPhase::kib_per_conn));
        let _ = writeln!(
            out,
            "  per stalled conn at {} vs {} clients: {} vs {} KiB (target: does not grow with the client count; http.maxBufferedBytes caps all connections together)  {}",
            fmt_int(cfg.mem_conns as f64),
            fmt_int(cfg.mem_small_conns as f64),
            per(&m.stalled),
            per(&m.small),
            pass(ok)
        );
    }
    if let Some(n) = &m.note {
        let _ = writeln!(out, "  FAIL ({n})");
    }
}
