//! Large bodies (`BENCH_TARGETS` letter `l`): a 32 MiB echo, a 32 MiB upload and a 32 MiB
//! download, through noslate and one Node.js worker, and through Node's own `http` serving the
//! same handler (`benches/bodies/index.js`), with a plain `cat` through pipes for scale (a
//! pipe's speed on this machine: worker channels are socket pairs by default, which pass it,
//! and `turf.workerChannel: "pipe"` is held to it); and through noslate with the native reference worker
//! (`examples/native_worker.rs`, which is not the bottleneck), so the runtime's own throughput
//! shows. Each transfer is timed from its first byte sent to its last byte received; the four
//! sides alternate, `BENCH_BODY_RUNS` times in each of `BENCH_BODY_ROUNDS` rounds with fresh
//! servers, and medians over all rounds are reported. A Node.js process keeps the speed it
//! settles into for its whole life: with one Node direct process for all runs, its 32 MiB echo
//! came out at 1885 MB/s in one bench run and 2471 in the next, with noslate's alike in both.
//! Before its timed runs, each round's every side
//! makes `BENCH_BODY_WARMUP` untimed transfers of each mode: a fresh Node.js process runs its
//! stream code, and the worker its frame code, unoptimised for the first few transfers (a 32
//! MiB echo through noslate took 72, 69, 44, 47 and 39 ms in its first five and 22 to 29 ms from
//! the eighth on), so medians of cold runs measure V8's compiler more than the path.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::report::{cpu_times, rows_or_why};
use crate::rounds::process_cpu_ns;
use crate::servers::{one_worker, start_node_serving};
use crate::spawn::native_worker_bin;

/// The body size of every transfer.
pub const BODY_BYTES: usize = 32 << 20;
/// Echo through noslate against echo through Node's own http: the target.
pub const TARGET_ECHO_RATIO: f64 = 0.9;
/// Upload and download through noslate with the native worker, MB/s: the target.
pub const TARGET_NATIVE_MB_PER_S: f64 = 1000.0;

/// The three transfers.
#[derive(Clone, Copy)]
enum Mode {
    Echo,
    Upload,
    Download,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Echo, Mode::Upload, Mode::Download];

    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Upload => "upload",
            Mode::Download => "download",
        }
    }

    /// Bytes sent and bytes expected back (at least: a chunked answer adds its framing).
    fn sizes(self) -> (usize, usize) {
        match self {
            Mode::Echo => (BODY_BYTES, BODY_BYTES),
            Mode::Upload => (BODY_BYTES, 0),
            Mode::Download => (0, BODY_BYTES),
        }
    }
}

/// One mode's timings, in seconds, per side, and what the two HTTP sides cost in CPU.
#[derive(Default)]
pub struct ModeRuns {
    noslate: Vec<f64>,
    node: Vec<f64>,
    cat: Vec<f64>,
    native: Vec<f64>,
    errors: Vec<String>,
    noslate_cpu: CpuSpent,
    node_cpu: CpuSpent,
}

/// The CPU that one side's timed transfers used, summed over them. Both CPUs of this machine
/// are shared by the client, the server and (through noslate) the worker, so a side whose
/// processes together need more CPU per transfer is slower, whatever each one does.
#[derive(Default, Clone, Copy)]
struct CpuSpent {
    /// The server process: noslate's runtime, or Node's own process.
    server_ns: u64,
    /// The server's descendants: noslate's worker (none for Node direct).
    workers_ns: u64,
    /// This process, the client that sends and reads the bodies.
    client_ns: u64,
    /// The machine's busy and idle time over all CPUs, in clock ticks (/proc/stat).
    busy_ticks: u64,
    idle_ticks: u64,
    transfers: u32,
}

/// The counters [`CpuSpent`] is the difference of.
struct CpuSample {
    server_ns: u64,
    workers_ns: u64,
    client_ns: u64,
    machine: [u64; 3],
}

impl CpuSample {
    fn take(server: u32) -> CpuSample {
        let workers_ns = descendants(server)
            .iter()
            .filter_map(|&(pid, _)| process_cpu_ns(pid))
            .sum();
        CpuSample {
            server_ns: process_cpu_ns(server).unwrap_or(0),
            workers_ns,
            client_ns: own_cpu_ns(),
            machine: cpu_times().unwrap_or_default(),
        }
    }
}

impl CpuSpent {
    /// Adds one transfer: what was used between `before` and now.
    fn add(&mut self, server: u32, before: &CpuSample) {
        let after = CpuSample::take(server);
        self.server_ns += after.server_ns.saturating_sub(before.server_ns);
        self.workers_ns += after.workers_ns.saturating_sub(before.workers_ns);
        self.client_ns += after.client_ns.saturating_sub(before.client_ns);
        self.busy_ticks += after.machine[0].saturating_sub(before.machine[0]);
        self.idle_ticks += after.machine[1].saturating_sub(before.machine[1]);
        self.transfers += 1;
    }

    /// Milliseconds per transfer: server, workers, client, and their total.
    fn per_transfer_ms(&self) -> Option<[f64; 4]> {
        let n = f64::from(self.transfers);
        let ms = |ns: u64| ns as f64 / 1e6 / n;
        let (s, w, c) = (ms(self.server_ns), ms(self.workers_ns), ms(self.client_ns));
        (self.transfers > 0).then_some([s, w, c, s + w + c])
    }

    /// The share of the machine's CPU time that was busy while the transfers ran, percent.
    fn busy_percent(&self) -> Option<f64> {
        let all = self.busy_ticks + self.idle_ticks;
        (all > 0).then(|| 100.0 * self.busy_ticks as f64 / all as f64)
    }

    fn json(&self) -> Value {
        let ms = self.per_transfer_ms();
        json!({
            "transfers": self.transfers,
            "server_ms_per_transfer": ms.map(|m| m[0]),
            "workers_ms_per_transfer": ms.map(|m| m[1]),
            "client_ms_per_transfer": ms.map(|m| m[2]),
            "total_ms_per_transfer": ms.map(|m| m[3]),
            "machine_busy_percent": self.busy_percent(),
        })
    }
}

/// CPU time this process has used, every thread it has had included, in nanoseconds.
#[allow(unsafe_code)]
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct it is given, which is zeroed and owned here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF needs no other argument.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_usec).unwrap_or(0) * 1_000
    };
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// The large-body rows.
pub struct BodyRows {
    modes: Vec<(&'static str, ModeRuns)>,
    note: Option<String>,
}

fn code_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("benches/bodies")
}

/// One HTTP transfer on a fresh connection (`Connection: close`): sends `up` bytes, reads the
/// answer to its end, and checks it carried at least `down` body bytes.
fn http_transfer(port: u16, mode: Mode) -> Result<f64, String> {
    let (up, down) = mode.sizes();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let head = match mode {
        Mode::Download => format!(
            "GET /download?bytes={down} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
        ),
        _ => format!(
            "POST /{} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-length: {up}\r\n\r\n",
            mode.name()
        ),
    };
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let sender = thread::spawn(move || -> Result<(), String> {
        writer
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        send_bytes(&mut writer, up)
    });
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut head_len, mut status_ok) = (0usize, None, false);
    let mut head_bytes = Vec::new();
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n;
        if head_len.is_none() {
            head_bytes.extend_from_slice(&buf[..n]);
            if let Some(end) = head_bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                head_len = Some(end + 4);
                status_ok = head_bytes.starts_with(b"HTTP/1.1 200");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sender.join().map_err(|_| "sender panicked".to_string())??;
    let body = total - head_len.ok_or("no response head")?;
    if !status_ok {
        return Err(format!(
            "answer: {}",
            String::from_utf8_lossy(&head_bytes[..head_bytes.len().min(200)])
        ));
    }
    if body < down {
        return Err(format!("{body} body bytes, expected {down}"));
    }
    Ok(secs)
}

/// The same bytes through `cat` (echo: in and out of one `cat`; upload: into `cat` writing to
/// /dev/null; download: out of `head -c` reading /dev/zero).
fn cat_transfer(mode: Mode) -> Result<f64, String> {
    let (up, down) = mode.sizes();
    let mut cmd = match mode {
        Mode::Download => {
            let mut c = Command::new("head");
            c.args(["-c", &down.to_string(), "/dev/zero"]);
            c
        }
        _ => Command::new("cat"),
    };
    cmd.stdin(if up > 0 {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(if down > 0 {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let stdin = child.stdin.take();
    let sender = thread::spawn(move || -> Result<(), String> {
        match stdin {
            Some(mut stdin) => send_bytes(&mut stdin, up),
            None => Ok(()),
        }
    });
    let mut got = 0;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stdout.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n;
        }
    }
    sender.join().map_err(|_| "sender panicked".to_string())??;
    child.wait().map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    if got < down {
        return Err(format!("{got} bytes through cat, expected {down}"));
    }
    Ok(secs)
}

/// Writes `n` bytes to `out`, from one reused chunk.
fn send_bytes(out: &mut impl Write, n: usize) -> Result<(), String> {
    let chunk = vec![b'x'; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let piece = left.min(chunk.len());
        out.write_all(&chunk[..piece]).map_err(|e| e.to_string())?;
        left -= piece;
    }
    Ok(())
}

/// Runs the rows: `rounds` rounds, each with a fresh runtime and Node.js server (a Node.js
/// process keeps the speed it settles into for its whole life, so one pair of processes would
/// make the ratio one draw), `warmup` untimed transfers, then `runs` timed ones per side and
/// mode. The medians pool the transfers of every round.
pub fn measure_bodies(tmp: &Path, rounds: usize, runs: usize, warmup: usize) -> BodyRows {
    let mut modes: Vec<(&'static str, ModeRuns)> = Mode::ALL
        .iter()
        .map(|m| (m.name(), ModeRuns::default()))
        .collect();
    for round in 0..rounds.max(1) {
        if let Err(e) = measure_round(tmp, round, runs, warmup, &mut modes) {
            return BodyRows {
                modes: Vec::new(),
                note: Some(e),
            };
        }
        eprintln!("bench: large bodies, round {} of {rounds} done", round + 1);
    }
    BodyRows { modes, note: None }
}

/// Round `round` of [`measure_bodies`], on servers (and work directories) of its own.
fn measure_round(
    tmp: &Path,
    round: usize,
    runs: usize,
    warmup: usize,
    modes: &mut [(&'static str, ModeRuns)],
) -> Result<(), String> {
    let functions = json!([{
        "name": "bodies",
        "runtime": "nodejs",
        "url": code_dir(),
        "handler": "index.handler",
        "signature": "bench",
        "worker": one_worker(),
    }]);
    let config = json!({"http": {"maxRequestBodySize": "64mb"}});
    let noslate = start_noslate_with(
        tmp,
        &format!("bodies-{round}"),
        &functions,
        Some(&config),
        true,
    )?;
    let node = start_node_serving(&code_dir(), "node_direct[bodies]")?;
    let bin = native_worker_bin()?;
    let functions = json!([{
        "name": "bodies-native",
        "runtime": "native",
        "url": bin.parent().unwrap_or(Path::new("/")),
        "sourceFile": "native_worker",
        "signature": "bench",
        "worker": one_worker(),
    }]);
    let native = start_noslate_with(
        tmp,
        &format!("bodies-native-{round}"),
        &functions,
        Some(&config),
        true,
    )?;
    for _ in 0..warmup {
        for mode in Mode::ALL {
            // Errors show in the timed runs that follow.
            let _ = http_transfer(noslate.1, mode);
            let _ = http_transfer(node.1, mode);
            let _ = http_transfer(native.1, mode);
        }
    }
    let (noslate_pid, node_pid) = (noslate.0.pid(), node.0.pid());
    for run in 0..runs.max(1) {
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            let runs = &mut modes[i].1;
            // Alternating the order cancels drift between the sides.
            let order: [u8; 4] = if run % 2 == 0 {
                [0, 1, 2, 3]
            } else {
                [3, 2, 1, 0]
            };
            for side in order {
                let result = match side {
                    0 => {
                        let before = CpuSample::take(noslate_pid);
                        let result = http_transfer(noslate.1, mode);
                        runs.noslate_cpu.add(noslate_pid, &before);
                        result
                    }
                    1 => {
                        let before = CpuSample::take(node_pid);
                        let result = http_transfer(node.1, mode);
                        runs.node_cpu.add(node_pid, &before);
                        result
                    }
                    2 => cat_transfer(mode),
                    _ => http_transfer(native.1, mode),
                };
                match (side, result) {
                    (0, Ok(s)) => runs.noslate.push(s),
                    (1, Ok(s)) => runs.node.push(s),
                    (2, Ok(s)) => runs.cat.push(s),
                    (_, Ok(s)) => runs.native.push(s),
                    (side, Err(e)) => runs.errors.push(format!(
                        "{} {}: {e}",
                        ["noslate", "node", "cat", "native"][usize::from(side)],
                        mode.name()
                    )),
                }
            }
        }
    }
    Ok(())
}

fn mb_per_s(secs: Option<f64>) -> Option<f64> {
    secs.map(|s| BODY_BYTES as f64 / s / 1e6)
}

impl BodyRows {
    fn echo_ratio(&self) -> Option<f64> {
        let (_, echo) = self.modes.first()?;
        Some(median(echo.node.clone())? / median(echo.noslate.clone())?)
    }

    /// Upload and download through noslate with the native worker, MB/s.
    fn native_one_way(&self) -> [Option<f64>; 2] {
        ["upload", "download"].map(|name| {
            let (_, runs) = self.modes.iter().find(|(n, _)| *n == name)?;
            mb_per_s(median(runs.native.clone()))
        })
    }

    fn native_pass(&self) -> bool {
        (self.native_one_way())
            .iter()
            .all(|v| v.is_some_and(|v| v >= TARGET_NATIVE_MB_PER_S))
    }

    /// Echo at >= 0.9x Node direct, upload and download at >= 1 GB/s with the native worker,
    /// and no transfer failed.
    pub fn pass(&self) -> bool {
        self.note.is_none()
            && self.modes.iter().all(|(_, m)| m.errors.is_empty())
            && self.echo_ratio().is_some_and(|r| r >= TARGET_ECHO_RATIO)
            && self.native_pass()
    }

    pub fn json(&self) -> Value {
        json!({
            "body_bytes": BODY_BYTES,
            "note": self.note,
            "modes": self.modes.iter().map(|(name, m)| json!({
                "mode": name,
                "noslate_secs": m.noslate, "node_secs": m.node, "cat_secs": m.cat,
                "native_secs": m.native,
                "noslate_mb_per_s": mb_per_s(median(m.noslate.clone())),
                "node_mb_per_s": mb_per_s(median(m.node.clone())),
                "cat_mb_per_s": mb_per_s(median(m.cat.clone())),
                "native_mb_per_s": mb_per_s(median(m.native.clone())),
                "noslate_cpu": m.noslate_cpu.json(),
                "node_cpu": m.node_cpu.json(),
                "errors": m.errors,
            })).collect::<Vec<_>>(),
            "echo_noslate_over_node": self.echo_ratio(),
            "target_echo_min": TARGET_ECHO_RATIO,
            "target_native_mb_per_s_min": TARGET_NATIVE_MB_PER_S,
            "pass": self.pass(),
        })
    }
}

/// CPU per transfer of one mode, noslate's beside Node direct's: where the time of a transfer
/// that both CPUs carry goes.
fn cpu_line(out: &mut String, m: &ModeRuns) {
    let (Some(n), Some(d)) = (
        m.noslate_cpu.per_transfer_ms(),
        m.node_cpu.per_transfer_ms(),
    ) else {
        return;
    };
    let busy = |c: &CpuSpent| c.busy_percent().map_or("-".into(), |b| format!("{b:.0}%"));
    let _ = writeln!(
        out,
        "           CPU ms per transfer: noslate {:.1} (runtime {:.1}, worker {:.1}, client {:.1}; machine busy {}), node direct {:.1} (node {:.1}, client {:.1}; machine busy {})",
        n[3],
        n[0],
        n[1],
        n[2],
        busy(&m.noslate_cpu),
        d[3],
        d[0],
        d[2],
        busy(&m.node_cpu),
    );
}

/// The report's lines for the rows.
pub fn body_lines(out: &mut String, rows: Option<&BodyRows>) {
    let title = format!(
        "large bodies ({} MiB per transfer, fresh connection each; medians of BENCH_BODY_RUNS; MB/s = 10^6 bytes of body per second):",
        BODY_BYTES >> 20
    );
    let Some(rows) = rows_or_why(out, &title, rows, |r| r.note.as_ref()) else {
        return;
    };
    for (name, m) in &rows.modes {
        let (n, d, c, v) = (
            median(m.noslate.clone()),
            median(m.node.clone()),
            median(m.cat.clone()),
            median(m.native.clone()),
        );
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:>6.0}"));
        let ratio = n
            .zip(d)
            .map_or("-".into(), |(n, d)| format!("{:.2}", d / n));
        let _ = writeln!(
            out,
            "  {name:<8} noslate {} MB/s, node direct {} MB/s, cat through pipes {} MB/s; noslate/node = {ratio}; native worker through noslate {} MB/s{}",
            fmt(mb_per_s(n)),
            fmt(mb_per_s(d)),
            fmt(mb_per_s(c)),
            fmt(mb_per_s(v)),
            if m.errors.is_empty() {
                String::new()
            } else {
                format!("; {} failed: {}", m.errors.len(), m.errors[0])
            }
        );
        cpu_line(out, m);
    }
    let _ = writeln!(
        out,
        "  echo noslate/node = {} (target >= {TARGET_ECHO_RATIO:.1})  {}",
        rows.echo_ratio().map_or("-".into(), |r| format!("{r:.2}")),
        if rows.echo_ratio().is_some_and(|r| r >= TARGET_ECHO_RATIO) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    let [up, down] = rows
        .native_one_way()
        .map(|v| v.map_or("-".into(), |v| format!("{v:.0}")));
    let _ = writeln!(
        out,
        "  native worker through noslate: upload {up} MB/s, download {down} MB/s (target >= {TARGET_NATIVE_MB_PER_S:.0} each)  {}",
        if rows.native_pass() { "PASS" } else { "FAIL" }
    );
}
