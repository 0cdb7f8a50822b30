//! Shared helpers for the integration tests.
//!
//! Every test runs the real `noslate` binary on an ephemeral port with real Node.js workers and
//! talks to it over real TCP sockets:
//!
//! - [`Noslate`] starts the binary in a fresh [`TempDir`], discovers its port from stderr,
//!   collects its stdout/stderr lines and, on drop, kills it, its process group and every process
//!   it forked.
//! - [`Client`] is a raw-socket HTTP/1.1 client: it writes exactly the bytes it is given and reads
//!   one response at a time (Content-Length, chunked or close-delimited framing).
//! - [`wait_until`] replaces sleeps for synchronisation: it polls a condition up to a deadline.
//! - The `/proc` helpers find the runtime's children and zombies.
//! - [`Pattern`] and [`Crc32`] let large bodies be generated and verified as streams, without
//!   holding copies of them.

#![allow(dead_code)] // each test crate uses its own subset of these helpers

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The longest any single wait in the suite may last.
pub const WAIT: Duration = Duration::from_secs(30);

/// 1 MiB.
pub const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Polling

/// Polls `cond` every 10 ms until it holds; panics with `what` once `timeout` has passed.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A directory under the system temp dir, unique per test, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("noslate-it-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the test's temp dir");
        // Like /tmp (sticky, writable by all): workers run as an unprivileged user and some
        // fixtures leave markers here. The runtime's `work` and `logs` below it are not.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o1777))
            .expect("make the test's temp dir writable for workers");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Function profiles

/// Absolute path of `tests/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A Noslate function profile for the fixture `fixture`, named `name`, with one reserved worker
/// and no other replica: the smallest footprint. Tests adjust it with `p["worker"][...] = ...`.
pub fn profile(name: &str, fixture: &str) -> Value {
    json!({
        "name": name,
        "runtime": "nodejs",
        "url": fixture_dir(fixture),
        "handler": "index.handler",
        "signature": "test",
        "environments": [],
        "worker": {
            "reservationCount": 1,
            "replicaCountLimit": 1,
            "maxActivateRequests": 10,
            "initializationTimeout": 10000
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The noslate process

/// Lines read from one of the runtime's output pipes.
#[derive(Debug, Default)]
struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct OutputState {
    lines: Vec<String>,
    eof: bool,
}

impl Output {
    fn lines(&self) -> Vec<String> {
        self.state.lock().unwrap().lines.clone()
    }

    /// Waits until a line satisfies `pred` (returns it) or the pipe ends / `timeout` passes (None).
    fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                return None;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// Reads `pipe` line by line into `out`, echoing each line on the test's (captured) stderr so that
/// a failing test shows what the runtime said.
fn spawn_reader(tag: &'static str, pipe: impl Read + Send + 'static, out: Arc<Output>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            eprintln!("[noslate {tag}] {line}");
            out.state.lock().unwrap().lines.push(line);
            out.changed.notify_all();
        }
        out.state.lock().unwrap().eof = true;
        out.changed.notify_all();
    });
}

/// Panics with a clear message when `node` is not on PATH (CI installs it).
pub fn require_node() {
    static NODE: OnceLock<Result<String, String>> = OnceLock::new();
    let found = NODE.get_or_init(|| match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!("`node --version` exited with {}", out.status)),
        Err(e) => Err(format!("cannot run `node`: {e}")),
    });
    if let Err(why) = found {
        panic!("these integration tests need Node.js as `node` on PATH ({why}); install Node.js");
    }
}

/// The binary under test: `$NOSLATE_BIN` if set (e.g. a release build), else cargo's build.
pub fn binary() -> PathBuf {
    std::env::var_os("NOSLATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_noslate")),
        PathBuf::from,
    )
}

/// A handle on one output of the runtime that outlives its [`Noslate`].
#[derive(Debug, Clone)]
pub struct LogLines(Arc<Output>);

impl LogLines {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lines()
    }
}

/// The reference native worker (examples/native_worker.rs), built on demand beside the binary
/// (`cargo test --test NAME` builds no examples).
pub fn native_worker() -> PathBuf {
    let worker = binary()
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join("native_worker");
    // Built once per test binary, even when it exists: a stale one from an earlier build
    // would test old code (`cargo test --test native` does not build examples itself).
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "native_worker"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example native_worker");
        assert!(status.success(), "cannot build the native reference worker");
    });
    worker
}

/// How to start the runtime: the functions file, an optional config file, extra environment.
#[derive(Debug, Default)]
pub struct Builder {
    functions: String,
    config: Option<String>,
    env: Vec<(String, String)>,
    hold_stdout: bool,
    /// `--port`: 0 unless set.
    port: Option<u16>,
    /// The log line `start` waits for instead of `listening on 0.0.0.0:<port>`.
    ready_mark: Option<String>,
    /// The runtime's working directory, when not the test's.
    cwd: Option<PathBuf>,
}

impl Builder {
    /// Runs the runtime in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Builder {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The functions file content (a JSON array of profiles).
    pub fn functions(mut self, profiles: &Value) -> Builder {
        self.functions = profiles.to_string();
        self
    }

    /// The functions file content, verbatim (for invalid files).
    pub fn functions_raw(mut self, text: &str) -> Builder {
        self.functions = text.to_string();
        self
    }

    /// A `--config` file with this content.
    pub fn config(mut self, config: &Value) -> Builder {
        self.config = Some(config.to_string());
        self
    }

    /// Leaves the runtime's stdout unread until the test takes it ([`Noslate::take_stdout`]),
    /// as a log collector that stalls would.
    pub fn hold_stdout(mut self) -> Builder {
        self.hold_stdout = true;
        self
    }

    /// `--port port` instead of `--port 0`.
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// [`Builder::start`] waits for a stderr line containing `mark` instead of
    /// `listening on 0.0.0.0:<port>` (when the runtime serves no HTTP, or not on the FC port);
    /// [`Noslate::port`] is then the `--port` given, or with none the port the runtime gave
    /// its gateway.
    pub fn ready_when(mut self, mark: &str) -> Builder {
        self.ready_mark = Some(mark.to_string());
        self
    }

    /// One more environment variable for the runtime process.
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn spawn(self, dir: &TempDir) -> Child {
        require_node();
        let functions = dir.path().join("functions.json");
        fs::write(&functions, &self.functions).expect("write the functions file");
        let mut cmd = Command::new(binary());
        cmd.args([
            "serve",
            "--port",
            &self.port.unwrap_or(0).to_string(),
            "--functions",
        ])
        .arg(&functions);
        if let Some(config) = &self.config {
            let path = dir.path().join("config.json");
            fs::write(&path, config).expect("write the config file");
            cmd.arg("--config").arg(path);
        }
        let work = dir.path().join("work");
        let logs = dir.path().join("logs");
        fs::create_dir_all(&work).expect("create the work dir");
        fs::create_dir_all(&logs).expect("create the log dir");
        cmd.env("NOSLATE_WORKDIR", work).env("NOSLATE_LOGDIR", logs);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        // Its own process group, so that drop can kill the whole group.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn the noslate binary")
    }

    /// Starts the runtime and waits (≤ 30 s) until it logs `listening on 0.0.0.0:<port>`.
    #[track_caller]
    pub fn start(self) -> Noslate {
        let dir = TempDir::new();
        let hold_stdout = self.hold_stdout;
        let ready_mark = self.ready_mark.clone();
        let fixed_port = self.port.unwrap_or(0);
        let mut child = self.spawn(&dir);
        let stdout = Arc::new(Output::default());
        let stderr = Arc::new(Output::default());
        let held_stdout = if hold_stdout {
            child.stdout.take()
        } else {
            spawn_reader("stdout", child.stdout.take().unwrap(), Arc::clone(&stdout));
            None
        };
        spawn_reader("stderr", child.stderr.take().unwrap(), Arc::clone(&stderr));
        let pid = i32::try_from(child.id()).expect("pid fits in pid_t");
        let mut noslate = Noslate {
            dir,
            child,
            pid,
            port: 0,
            stdout,
            stderr,
            held_stdout,
        };
        if let Some(mark) = ready_mark {
            if noslate
                .stderr
                .wait_line(WAIT, |l| l.contains(&mark))
                .is_none()
            {
                let status = noslate.child.try_wait().ok().flatten();
                panic!(
                    "noslate did not log `{mark}` within {WAIT:?} (exit status: {status:?}); \
                     stderr:\n{}",
                    noslate.stderr.lines().join("\n")
                );
            }
            noslate.port = fixed_port;
            if fixed_port == 0 {
                // With `--port 0`, a gateway is given a free port, which the runtime logs.
                const GATEWAY_MARK: &str = "the gateway serves the FC port ";
                let line = noslate
                    .stderr
                    .lines()
                    .into_iter()
                    .find(|l| l.contains(GATEWAY_MARK));
                if let Some(line) = line {
                    let at = line
                        .find(GATEWAY_MARK)
                        .map_or(0, |i| i + GATEWAY_MARK.len());
                    let digits: String = line[at..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    noslate.port = digits.parse().unwrap_or(0);
                }
            }
            return noslate;
        }
        const MARK: &str = "listening on 0.0.0.0:";
        let line = noslate.stderr.wait_line(WAIT, |l| l.contains(MARK));
        let Some(line) = line else {
            let status = noslate.child.try_wait().ok().flatten();
            panic!(
                "noslate did not log `{MARK}<port>` within {WAIT:?} (exit status: {status:?}); \
                 stderr:\n{}",
                noslate.stderr.lines().join("\n")
            );
        };
        let digits: String = line[line.find(MARK).unwrap() + MARK.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        noslate.port = digits
            .parse()
            .unwrap_or_else(|_| panic!("no port in {line:?}"));
        noslate
    }

    /// Runs the runtime expecting it to exit by itself within 10 s (for invalid configurations).
    #[track_caller]
    pub fn run_to_exit(self) -> Exited {
        let dir = TempDir::new();
        let mut child = self.spawn(&dir);
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the child") {
                break status;
            }
            if Instant::now() >= deadline {
                let pid = i32::try_from(child.id()).unwrap();
                kill_tree(pid);
                let _ = child.wait();
                panic!("noslate did not exit within 10 s although its configuration is invalid");
            }
            thread::sleep(Duration::from_millis(10));
        };
        Exited {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }
}

/// A run of the runtime that ended by itself.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running `noslate serve`; killed with everything it forked when dropped.
#[derive(Debug)]
pub struct Noslate {
    dir: TempDir,
    child: Child,
    pid: i32,
    port: u16,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
    held_stdout: Option<std::process::ChildStdout>,
}

impl Noslate {
    /// The runtime's stdout, when the builder held it ([`Builder::hold_stdout`]).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.held_stdout.take()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts the runtime with these profiles and no config file.
    #[track_caller]
    pub fn start(profiles: &Value) -> Noslate {
        Noslate::builder().functions(profiles).start()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The test's temp dir (also holds `work/` and `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines()
    }

    /// How many lines of the runtime's log contain every one of `needles`.
    pub fn log_count(&self, needles: &[&str]) -> usize {
        self.stderr
            .lines()
            .iter()
            .filter(|l| needles.iter().all(|x| l.contains(x)))
            .count()
    }

    /// Waits (bounded) until at least `at_least` lines of the runtime's stderr contain all of
    /// `needles`, and returns how many do. A line the runtime logged before it answered may
    /// still be in the pipe, or in the reader thread, when the test has the answer.
    pub fn wait_log_count(&self, needles: &[&str], at_least: usize) -> usize {
        wait_until(
            WAIT,
            &format!("{at_least} log lines with {needles:?}"),
            || self.log_count(needles) >= at_least,
        );
        self.log_count(needles)
    }

    /// The runtime's stderr (its log), readable after this `Noslate` is gone.
    pub fn stderr_handle(&self) -> LogLines {
        LogLines(Arc::clone(&self.stderr))
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// Waits (≤ 30 s) for a stdout line containing `needle`; returns its index among the lines.
    #[track_caller]
    pub fn wait_stdout(&self, needle: &str) -> usize {
        if self
            .stdout
            .wait_line(WAIT, |l| l.contains(needle))
            .is_none()
        {
            panic!(
                "no stdout line containing {needle:?} within {WAIT:?}; stdout:\n{}",
                self.stdout_lines().join("\n")
            );
        }
        self.stdout_lines()
            .iter()
            .position(|l| l.contains(needle))
            .unwrap()
    }

    /// A new keep-alive connection to the runtime.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Sends `req` on a new connection and reads the response.
    #[track_caller]
    pub fn send(&self, req: &Req) -> Response {
        let mut c = self.client();
        c.request(req)
    }

    /// `POST /invoke` with `body` and the extra `headers`.
    #[track_caller]
    pub fn invoke(&self, body: &[u8], headers: &[(&str, &str)]) -> Response {
        let mut req = Req::new("POST", "/invoke").body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        self.send(&req)
    }

    /// Runs the noslate CLI (`ps`, `stats`, `functions ...`) against this runtime's admin
    /// socket; returns success, stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let socket = self.dir().join("work").join("noslated.sock");
        let out = Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .expect("run the noslate CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The runtime's direct children (workers, including zombies).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// Waits (≤ 30 s) until the runtime has no zombie descendant.
    #[track_caller]
    pub fn wait_no_zombies(&self) {
        wait_until(WAIT, "the runtime has no zombie descendant", || {
            descendants_of(self.pid)
                .iter()
                .all(|&p| proc_state(p) != Some('Z'))
        });
    }

    /// Whether the runtime process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (≤ 30 s) for the runtime to exit by itself, and returns its exit status.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(WAIT, "the runtime exits", || {
            status = self.child.try_wait().expect("poll the runtime");
            status.is_some()
        });
        status.expect("an exit status")
    }

    /// Prints the tail of every worker log file (on failure, to help diagnose).
    fn dump_logs(&self) {
        let mut stack = vec![self.dir().join("logs")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = fs::read(&path) {
                    let tail = &bytes[bytes.len().saturating_sub(4096)..];
                    eprintln!(
                        "--- {} (last {} bytes) ---\n{}",
                        path.display(),
                        tail.len(),
                        String::from_utf8_lossy(tail)
                    );
                }
            }
        }
    }
}

impl Drop for Noslate {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        // Only while the child is not yet reaped is its pid (and group id) surely still ours.
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_tree(self.pid);
            let _ = self.child.wait();
        }
    }
}

/// Kills `pid`, its process group and every process it forked. `pid` is stopped first so that it
/// cannot reap its children meanwhile, which keeps their pids from being reused before the kill.
fn kill_tree(pid: i32) {
    // SAFETY: kill(2) only sends a signal; `pid` is our own child, not yet waited for.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for p in descendants_of(pid) {
        // SAFETY: as above; `p` descends from our stopped child, so its pid is still held.
        unsafe {
            libc::kill(-p, libc::SIGKILL);
            libc::kill(p, libc::SIGKILL);
        }
    }
    // SAFETY: as above; the group of our child is the one it was spawned in.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// `(state, ppid)` of `pid` from `/proc/<pid>/stat`, or None if it does not exist.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The state letter of `pid` (`R`, `S`, `Z`, ...), None if it does not exist.
pub fn proc_state(pid: i32) -> Option<char> {
    proc_stat(pid).map(|(s, _)| s)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((_, pp)) if pp == pid))
        .collect()
}

/// All descendants of `pid` (not `pid` itself).
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, proc_stat(p)?.1)))
        .collect();
    let mut found: HashSet<i32> = HashSet::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && found.insert(p) {
                frontier.push(p);
            }
        }
    }
    found.into_iter().collect()
}

/// Sends `signal` to `pid`.
#[track_caller]
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) only sends a signal; callers pass pids of the runtime's workers.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP requests

/// An HTTP/1.1 request to serialise. `Host` and `Content-Length` are added unless given.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Req {
        self.headers.push((name.into(), value.as_ref().into()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The head only (request line, headers, blank line).
    pub fn head_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self.has("host") {
            s.push_str("Host: 127.0.0.1\r\n");
        }
        for (k, v) in &self.headers {
            let _ = write!(s, "{k}: {v}\r\n");
        }
        let bodied = !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT");
        if bodied && !self.has("content-length") && !self.has("transfer-encoding") {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// Head and body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.head_bytes();
        b.extend_from_slice(&self.body);
        b
    }
}

/// How the body of a response was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    Close,
}

/// A parsed response; headers keep their order, case and duplicates.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as text, cut to 600 characters, for assertion messages.
    pub fn brief(&self) -> String {
        let text = self.text();
        match text.char_indices().nth(600) {
            Some((at, _)) => format!("{}... ({} bytes)", &text[..at], self.body.len()),
            None => text,
        }
    }

    /// The body as JSON; panics with the body text if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Asserts that `resp` is an error with `status` and a JSON body carrying string `errorMessage`
/// and `errorType` (equal to `error_type` if given); returns the body.
#[track_caller]
pub fn assert_error_json(resp: &Response, status: u16, error_type: Option<&str>) -> Value {
    assert_eq!(resp.status, status, "status; body: {}", resp.brief());
    let body = resp.json();
    assert!(
        body["errorMessage"].is_string(),
        "errorMessage is not a string in {body}"
    );
    assert!(
        body["errorType"].is_string(),
        "errorType is not a string in {body}"
    );
    if let Some(t) = error_type {
        assert_eq!(body["errorType"], t, "errorType in {body}");
    }
    body
}

/// Asserts an FC function error: 404, `x-fc-status: 404`, JSON with `errorType == error_type`.
#[track_caller]
pub fn assert_function_error(resp: &Response, error_type: &str) -> Value {
    let body = assert_error_json(resp, 404, Some(error_type));
    assert_eq!(
        resp.header("x-fc-status"),
        Some("404"),
        "x-fc-status; headers {:?}",
        resp.headers
    );
    body
}

/// Asserts a successful event invocation (200, `x-fc-status: 200`) and returns its body as JSON.
#[track_caller]
pub fn assert_invoke_ok(resp: &Response) -> Value {
    assert_eq!(resp.status, 200, "status; body: {}", resp.brief());
    assert_eq!(
        resp.header("x-fc-status"),
        Some("200"),
        "x-fc-status; headers {:?}",
        resp.headers
    );
    resp.json()
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// One client connection: writes raw bytes, reads responses.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to noslate");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The socket, e.g. to `try_clone` it for a writer thread.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Writes `bytes`, panicking on error.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to noslate");
    }

    /// Writes `bytes`; a reset or closed connection is not an error (the server may answer early).
    #[track_caller]
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Sends `req` and reads its response.
    #[track_caller]
    pub fn request(&mut self, req: &Req) -> Response {
        self.send(&req.to_bytes());
        if req.method == "HEAD" {
            self.read_head_response()
        } else {
            self.read_response()
        }
    }

    /// Reads one response, keeping its body.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        let mut body = Vec::new();
        let mut resp = self.read_response_with(false, &mut |b| body.extend_from_slice(b));
        resp.body = body;
        resp
    }

    /// Reads the response to a HEAD request (no body whatever the headers say).
    #[track_caller]
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_with(true, &mut |_| {})
    }

    /// Reads one response, handing the body to `sink` piece by piece (`Response::body` is empty).
    #[track_caller]
    pub fn read_response_with(&mut self, head: bool, sink: &mut dyn FnMut(&[u8])) -> Response {
        let (status, reason, headers) = self.read_head();
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
        };
        let te = resp
            .header_all("transfer-encoding")
            .join(",")
            .to_ascii_lowercase();
        resp.framing = if head || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else if te.contains("chunked") {
            Framing::Chunked
        } else if let Some(cl) = resp.header("content-length") {
            Framing::Length(
                cl.trim()
                    .parse()
                    .expect("numeric Content-Length in the response"),
            )
        } else {
            Framing::Close
        };
        match resp.framing {
            Framing::None => {}
            Framing::Length(n) => self.read_exact_into(n, sink),
            Framing::Chunked => self.read_chunked(sink),
            Framing::Close => loop {
                if self.pos < self.buf.len() {
                    sink(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                }
                if !self.fill() {
                    break;
                }
            },
        }
        resp
    }

    /// Asserts that the server closes the connection without sending anything more.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let extra = self.buf.len() - self.pos;
        assert_eq!(
            extra,
            0,
            "unexpected bytes after the response: {:?}",
            self.rest()
        );
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("the server sent more bytes instead of closing the connection"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection within {WAIT:?}: {e}"),
        }
    }

    /// Closes the connection with a reset (SO_LINGER 0) instead of an orderly FIN.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let size = libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap();
        // SAFETY: setsockopt on our own open socket, with a valid linger struct and its size.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                size,
            )
        };
        assert_eq!(
            rc,
            0,
            "setsockopt(SO_LINGER): {}",
            io::Error::last_os_error()
        );
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn rest(&self) -> String {
        String::from_utf8_lossy(&self.buf[self.pos..]).into_owned()
    }

    /// Reads more bytes into the buffer; false at end of stream. Panics on timeout.
    #[track_caller]
    fn fill(&mut self) -> bool {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 16 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 1 << 16];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("reading the response failed (timeout {WAIT:?}?): {e}"),
            }
        }
    }

    #[track_caller]
    fn read_head(&mut self) -> (u16, String, Vec<(String, String)>) {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 256];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf[self.pos..]) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let head = (
                        parsed.code.unwrap(),
                        parsed.reason.unwrap_or_default().to_string(),
                        headers,
                    );
                    self.pos += len;
                    return head;
                }
                Ok(httparse::Status::Partial) => {
                    assert!(
                        self.fill(),
                        "connection closed before a complete response head; got {:?}",
                        self.rest()
                    );
                }
                Err(e) => panic!("malformed response head ({e}): {:?}", self.rest()),
            }
        }
    }

    #[track_caller]
    fn read_exact_into(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) {
        while n > 0 {
            if self.pos == self.buf.len() {
                assert!(self.fill(), "connection closed with {n} body bytes missing");
            }
            let avail = self.buf.len() - self.pos;
            let take = usize::try_from(n).map_or(avail, |n| n.min(avail));
            sink(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= u64::try_from(take).unwrap();
        }
    }

    #[track_caller]
    fn read_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return line;
            }
            assert!(self.fill(), "connection closed inside a chunked body");
        }
    }

    #[track_caller]
    fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) {
        loop {
            let line = self.read_line();
            let size = line.split(';').next().unwrap().trim();
            let size = u64::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line in the response: {line:?}"));
            if size == 0 {
                while !self.read_line().is_empty() {} // trailers
                return;
            }
            self.read_exact_into(size, sink);
            assert_eq!(self.read_line(), "", "chunk data not followed by CRLF");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Large bodies

/// A deterministic byte stream (xorshift32, low byte of each step); `tests/fixtures/bytes` makes
/// the same stream in JavaScript.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u32,
}

impl Pattern {
    pub fn new(seed: u32) -> Pattern {
        Pattern { state: seed }
    }

    #[track_caller]
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.state = x;
            *b = x.to_le_bytes()[0];
        }
    }

    /// Writes `len` bytes of the stream to `w` (in 64 KiB pieces); returns their CRC-32.
    pub fn write_to(&mut self, w: &mut impl Write, len: usize) -> io::Result<u32> {
        let mut crc = Crc32::new();
        let mut chunk = vec![0u8; 1 << 16];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            self.fill(&mut chunk[..n]);
            crc.update(&chunk[..n]);
            w.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok(crc.finish())
    }

    /// CRC-32 of the first `len` bytes of the stream with `seed`.
    pub fn crc(seed: u32, len: usize) -> u32 {
        Pattern::new(seed).write_to(&mut io::sink(), len).unwrap()
    }
}

/// Checks a received byte stream against a [`Pattern`] without storing it.
#[derive(Debug)]
pub struct PatternCheck {
    pattern: Pattern,
    expected: Vec<u8>,
    pub received: u64,
    /// Offset of the first differing byte, if any.
    pub first_mismatch: Option<u64>,
}

impl PatternCheck {
    pub fn new(seed: u32) -> PatternCheck {
        PatternCheck {
            pattern: Pattern::new(seed),
            expected: Vec::new(),
            received: 0,
            first_mismatch: None,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.expected.resize(data.len(), 0);
        self.pattern.fill(&mut self.expected);
        if self.first_mismatch.is_none()
            && let Some(i) = data.iter().zip(&self.expected).position(|(a, b)| a != b)
        {
            self.first_mismatch = Some(self.received + u64::try_from(i).unwrap());
        }
        self.received += u64::try_from(data.len()).unwrap();
    }
}

/// CRC-32 (IEEE 802.3, as zlib); `tests/fixtures/bytes` computes the same in JavaScript.
#[derive(Debug, Clone)]
pub struct Crc32 {
    state: u32,
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

impl Crc32 {
    pub fn new() -> Crc32 {
        Crc32 { state: 0xFFFF_FFFF }
    }

    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            let i = usize::from(self.state.to_le_bytes()[0] ^ b);
            self.state = CRC_TABLE[i] ^ (self.state >> 8);
        }
    }

    pub fn finish(&self) -> u32 {
        !self.state
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Python (tests/conformance.rs)

/// Panics with a clear message when `python3` (`noslate::MIN_PYTHON` or newer) is not on
/// PATH (CI installs it).
pub fn require_python() {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        match Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import sys; assert sys.version_info >= {:?}; print(sys.version)",
                    noslate::MIN_PYTHON
                ),
            ])
            .output()
        {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => Err(format!(
                "`python3` is not {}.{} or newer ({}): {}",
                noslate::MIN_PYTHON.0,
                noslate::MIN_PYTHON.1,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run `python3`: {e}")),
        }
    });
    if let Err(why) = found {
        panic!("these integration tests need Python as `python3` on PATH ({why}); install it");
    }
}

// ---------------------------------------------------------------------------------------------
// Raw sockets and the runtime's own resources (tests/split_requests.rs, tests/net_fuzz.rs)

impl Noslate {
    /// The admin socket, `NOSLATE_WORKDIR/noslated.sock`.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir().join("work").join("noslated.sock")
    }
}

/// User plus system CPU time of `pid` itself (not of its children), in clock ticks.
pub fn proc_cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `pid` in KiB.
pub fn proc_rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many file descriptors `pid` has open.
pub fn proc_fd_count(pid: i32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU ticks `pid` spends over `window` while the test does nothing.
pub fn cpu_ticks_over(pid: i32, window: Duration) -> u64 {
    let before = proc_cpu_ticks(pid).expect("read the runtime's CPU time");
    // Measuring an interval, not waiting for a condition.
    thread::sleep(window);
    let after = proc_cpu_ticks(pid).expect("read the runtime's CPU time");
    after.saturating_sub(before)
}

/// One response as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Every byte of the response: head and body (chunked framing included).
    pub bytes: Vec<u8>,
    /// Length of the head within `bytes`.
    pub head_len: usize,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = String::from_utf8_lossy(&self.bytes[..self.head_len]).into_owned();
        head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The bytes with the `Date` field removed: what two answers to the same request share.
    pub fn without_date(&self) -> Vec<u8> {
        let head = &self.bytes[..self.head_len];
        let mut out = Vec::with_capacity(self.bytes.len());
        for line in head.split_inclusive(|&b| b == b'\n') {
            if !line.to_ascii_lowercase().starts_with(b"date:") {
                out.extend_from_slice(line);
            }
        }
        out.extend_from_slice(&self.bytes[self.head_len..]);
        out
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How reading from a [`RawReader`] stopped when it could not complete a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnd {
    /// An orderly end of stream (FIN).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing arrived within the socket's read timeout.
    TimedOut,
    /// The bytes are not an HTTP/1.1 response.
    Garbage,
    /// Any other socket error.
    Failed,
}

/// Reads HTTP/1.1 responses from any byte stream (TCP or Unix) without panicking, keeping their
/// exact bytes: for tests where a reset, a timeout or a malformed answer is a finding to report.
#[derive(Debug)]
pub struct RawReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> RawReader<R> {
    pub fn new(inner: R) -> RawReader<R> {
        RawReader {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes read but not yet part of a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn fill(&mut self) -> Result<(), RawEnd> {
        let mut chunk = [0u8; 1 << 16];
        loop {
            match self.inner.read(&mut chunk) {
                Ok(0) => return Err(RawEnd::Eof),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        return Err(RawEnd::Reset);
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(RawEnd::TimedOut);
                    }
                    _ => return Err(RawEnd::Failed),
                },
            }
        }
    }

    fn need(&mut self, end: usize) -> Result<(), RawEnd> {
        while self.buf.len() < end {
            self.fill()?;
        }
        Ok(())
    }

    fn line_end(&mut self, from: usize) -> Result<usize, RawEnd> {
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                return Ok(from + i + 2);
            }
            if self.buf.len() - from > 64 * 1024 {
                return Err(RawEnd::Garbage);
            }
            self.fill()?;
        }
    }

    /// Reads the next response; `head` says it answers a HEAD request (no body follows).
    pub fn next(&mut self, head: bool) -> Result<RawResponse, RawEnd> {
        let start = self.pos;
        let (status, head_len, length, chunked) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf[start..]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    for h in parsed.headers.iter() {
                        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length =
                                Some(value.trim().parse::<usize>().map_err(|_| RawEnd::Garbage)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked |= value.contains("chunked");
                        }
                    }
                    break (status, len, length, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill()?,
                Err(_) => return Err(RawEnd::Garbage),
            }
        };
        let body_start = start + head_len;
        let mut body = Vec::new();
        let end = if head || status < 200 || status == 204 || status == 304 {
            body_start
        } else if chunked {
            let mut at = body_start;
            loop {
                let line_end = self.line_end(at)?;
                let line = String::from_utf8_lossy(&self.buf[at..line_end - 2]).into_owned();
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| RawEnd::Garbage)?;
                at = line_end;
                if size == 0 {
                    loop {
                        let trailer_end = self.line_end(at)?;
                        let empty = trailer_end == at + 2;
                        at = trailer_end;
                        if empty {
                            break;
                        }
                    }
                    break at;
                }
                self.need(at + size + 2)?;
                body.extend_from_slice(&self.buf[at..at + size]);
                if &self.buf[at + size..at + size + 2] != b"\r\n" {
                    return Err(RawEnd::Garbage);
                }
                at += size + 2;
            }
        } else if let Some(n) = length {
            self.need(body_start + n)?;
            body.extend_from_slice(&self.buf[body_start..body_start + n]);
            body_start + n
        } else {
            // Delimited by the end of the connection.
            loop {
                match self.fill() {
                    Ok(()) => {}
                    Err(RawEnd::Eof) => break,
                    Err(other) => return Err(other),
                }
            }
            body.extend_from_slice(&self.buf[body_start..]);
            self.buf.len()
        };
        self.pos = end;
        Ok(RawResponse {
            status,
            bytes: self.buf[start..end].to_vec(),
            head_len,
            body,
        })
    }

    /// Reads until the stream ends; returns how it ended and the bytes that came before.
    pub fn read_to_end(&mut self) -> (RawEnd, Vec<u8>) {
        let end = loop {
            if let Err(end) = self.fill() {
                break end;
            }
        };
        let rest = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        (end, rest)
    }
}

/// A TCP connection to the runtime for raw-byte tests: no delay, bounded reads and writes.
pub fn raw_connect(port: u16, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to noslate");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
}

/// SplitMix64: a tiny seeded generator, so that a failing run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n).unwrap()).unwrap()
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Sets an integer socket option on `stream`, panicking on error.
#[track_caller]
fn set_int_option(stream: &TcpStream, level: i32, name: i32, value: i32, what: &str) {
    use std::os::fd::AsRawFd;
    let size = libc::socklen_t::try_from(std::mem::size_of::<i32>()).unwrap();
    // SAFETY: setsockopt on our own open socket, with a valid int and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size,
        )
    };
    assert_eq!(rc, 0, "setsockopt({what}): {}", io::Error::last_os_error());
}

/// A connection to the runtime whose receive buffer is shrunk to about `bytes` (SO_RCVBUF, set
/// before connecting so that the window is small from the start): a client that does not read
/// soon stops the server's sending.
pub fn connect_with_recv_buffer(port: u16, bytes: i32, timeout: Duration) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) returns a new descriptor (or -1), which we own from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket nobody else owns; the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_int_option(
        &stream,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        bytes,
        "SO_RCVBUF",
    );
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap(),
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap();
    // SAFETY: connect(2) on our socket with a valid sockaddr_in and its size.
    let rc = unsafe { libc::connect(fd, std::ptr::from_ref(&addr).cast(), len) };
    assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
}

/// One request on an admin socket, with `Connection: close`; the whole raw answer.
#[allow(dead_code)]
pub fn admin_request(socket: &std::path::Path, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("admin socket");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path` on an admin socket; the whole raw answer.
#[allow(dead_code)]
pub fn admin_get(socket: &std::path::Path, path: &str) -> String {
    admin_request(socket, "GET", path)
}
