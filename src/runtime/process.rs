//! `runtime: "process"`: one command run per request, CGI style (like OpenFaaS' classic
//! watchdog). The worker is this binary re-executed as `noslate __process-worker`; it speaks
//! docs/PROTOCOL.md on fds 3/4 and, for every stream, spawns the function's command
//! (`NOSLATE_PROCESS_COMMAND`, with the JSON array `NOSLATE_PROCESS_ARGS` as its arguments) in
//! the code directory and its own process group:
//!
//! - the request body is written to the command's stdin as it arrives, and request credit goes
//!   back as it is written;
//! - its stdout is the response body (`200`, `content-type: application/octet-stream`), sent as it
//!   is read and within response credit;
//! - the request metadata and the FC context are environment variables ([`request_env`]);
//! - a non-zero exit, a timeout or a `CANCEL` is a `RESPONSE_ERROR` carrying the tail of stderr;
//!   a timeout or a `CANCEL` kills the command's whole process group first.
//!
//! Every stream has its own threads (the stdout pump, a stdin feeder, a stderr reader and a
//! deadline watchdog), so streams run concurrently, up to `maxActivateRequests`. Memory per stream
//! is bounded by the credit windows and the stderr tail.

use crate::wire::{
    self, Direction, ErrorPayload, FrameDecoder, INITIAL_WINDOW, Kind, MAX_BODY_CHUNK, Ready,
    RequestHead, ResponseHead, WireError,
};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hidden subcommand that runs this worker.
pub const WORKER_ARG: &str = "__process-worker";
/// The command to run, an absolute path.
pub const COMMAND_ENV: &str = "NOSLATE_PROCESS_COMMAND";
/// Its arguments, a JSON array of strings (the profile's `worker.execArgv`).
pub const ARGS_ENV: &str = "NOSLATE_PROCESS_ARGS";
/// Lines of stderr kept for an error's `stackTrace`.
const STDERR_TAIL_LINES: usize = 20;
/// Bytes of stderr kept to find those lines.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// The worker enforces the deadline this much (at most a tenth of the budget) before the
/// runtime does, so that its error, with the stderr tail, is the one the client gets.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// Locks a mutex, ignoring poisoning (a panicking stream thread must not stop the others).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The write side of fd 4, shared by every stream's threads; one frame per write.
struct Out {
    pipe: Mutex<Box<dyn Write + Send>>,
}

impl Out {
    /// Sends the frame `encode` appends to an empty buffer.
    fn send(&self, encode: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.send_json(|frame| {
            encode(frame);
            Ok(())
        })
    }

    /// Sends the frame with a JSON payload that `encode` appends to an empty buffer.
    fn send_json(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
    ) -> io::Result<()> {
        let mut frame = Vec::new();
        encode(&mut frame).map_err(io::Error::other)?;
        lock(&self.pipe).write_all(&frame)
    }

    fn error(&self, stream: u32, error_type: &str, message: &str, stack: Vec<String>) {
        let error = ErrorPayload::new(error_type, message, stack);
        let _ = self.send_json(|frame| wire::put_response_error(frame, stream, &error));
    }
}

/// Why a stream's command was stopped before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    Cancelled(String),
    Timeout,
}

/// A stream's state shared by the frame reader and the stream's threads.
#[derive(Debug, Default)]
struct Control {
    /// Response-body credit granted by the runtime and not used yet.
    credit: u64,
    stop: Option<Stop>,
    /// The command's process group, once spawned.
    pgid: Option<i32>,
    /// The terminal frame is about to go out: nothing more may be sent on the stream.
    done: bool,
}

#[derive(Debug, Default)]
struct Shared {
    control: Mutex<Control>,
    changed: Condvar,
}

impl Shared {
    /// Stops the command (once): kills its process group and wakes the stream's threads.
    fn stop(&self, why: Stop) {
        let mut c = lock(&self.control);
        if c.stop.is_none() && !c.done {
            c.stop = Some(why);
            if let Some(pgid) = c.pgid {
                let _ = crate::sys::kill_group(pgid, libc::SIGKILL);
            }
        }
        drop(c);
        self.changed.notify_all();
    }
}

/// An open stream, as the frame reader sees it.
struct Entry {
    shared: Arc<Shared>,
    /// Request-body chunks for the stdin feeder; `None` once the request ended.
    body: Option<Sender<Vec<u8>>>,
}

type Streams = Arc<Mutex<HashMap<u32, Entry>>>;

/// What every stream runs.
#[derive(Debug, Clone)]
struct Config {
    command: PathBuf,
    args: Vec<String>,
    code_dir: PathBuf,
    /// The worker's environment minus the protocol's variables: the base of the command's.
    env: Vec<(OsString, OsString)>,
}

impl Config {
    fn from_env() -> Config {
        let command = std::env::var_os(COMMAND_ENV)
            .map(PathBuf::from)
            .unwrap_or_default();
        let args = std::env::var(ARGS_ENV)
            .ok()
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default();
        let code_dir = std::env::var_os("NOSLATE_CODE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let env = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.to_string_lossy();
                !k.starts_with("NOSLATE_IPC_") && !k.starts_with("NOSLATE_PROCESS_")
            })
            .collect();
        Config {
            command,
            args,
            code_dir,
            env,
        }
    }

    /// `Err` names the command when it cannot run.
    fn check(&self) -> Result<(), String> {
        if self.command.as_os_str().is_empty() {
            return Err(format!("{COMMAND_ENV} is not set"));
        }
        if !crate::turf::spawn::is_executable(&self.command) {
            return Err(format!(
                "{} is not an executable file",
                self.command.display()
            ));
        }
        Ok(())
    }
}

/// `FOO-bar.baz` → `FOO_BAR_BAZ`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `accessKeyId` → `ACCESS_KEY_ID`.
fn snake_upper(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c);
    }
    env_name(&out)
}

/// A latin1 header value (one char per byte) as the bytes it stands for.
fn latin1(value: &str) -> OsString {
    OsString::from_vec(
        value
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
    )
}

/// Flattens the FC context into `NOSLATE_CTX_<PATH>` variables (`null`s are left out).
fn flatten_context(prefix: &str, value: &Value, env: &mut Vec<(String, OsString)>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                flatten_context(&format!("{prefix}_{}", snake_upper(k)), v, env);
            }
        }
        Value::String(s) => env.push((prefix.to_owned(), s.into())),
        other => env.push((prefix.to_owned(), other.to_string().into())),
    }
}

/// The request's environment variables, from its head (docs/PROTOCOL.md, "Runtimes"):
/// `REQUEST_METHOD`, `REQUEST_URI`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`,
/// `CONTENT_LENGTH`, `HTTP_<NAME>` for every other header (repeats joined with `, `; `Proxy` is
/// dropped, as CGI servers do against "httpoxy"), `NOSLATE_REQUEST_KIND`, `NOSLATE_REQUEST_ID`
/// and `FC_REQUEST_ID`, `NOSLATE_TIMEOUT_MS`, `NOSLATE_DEADLINE_MS`, and the context as
/// `NOSLATE_CTX_*` (`function.name` → `NOSLATE_CTX_FUNCTION_NAME`).
/// An empty `url` or `method` counts as `/` or `POST`.
fn request_env(head: &RequestHead) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let or = |value: &str, default: &'static str| {
        if value.is_empty() { default } else { value }.to_owned()
    };
    let url = or(&head.url, "/");
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    env.push(("REQUEST_METHOD".into(), or(&head.method, "POST").into()));
    env.push(("REQUEST_URI".into(), latin1(&url)));
    env.push(("PATH_INFO".into(), latin1(path)));
    env.push(("QUERY_STRING".into(), latin1(query)));
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in head.headers.iter() {
        let key = match name.to_ascii_lowercase().as_str() {
            "content-type" => "CONTENT_TYPE".to_owned(),
            "content-length" => "CONTENT_LENGTH".to_owned(),
            "proxy" => continue,
            _ => format!("HTTP_{}", env_name(name)),
        };
        let value = latin1(value).into_vec();
        if value.contains(&0) {
            continue;
        }
        match headers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(&value);
            }
            None => headers.push((key, value)),
        }
    }
    env.extend(headers.into_iter().map(|(k, v)| (k, OsString::from_vec(v))));
    if !head.kind.is_empty() {
        env.push(("NOSLATE_REQUEST_KIND".into(), head.kind.as_ref().into()));
    }
    if !head.request_id.is_empty() {
        env.push(("NOSLATE_REQUEST_ID".into(), head.request_id.as_ref().into()));
        env.push(("FC_REQUEST_ID".into(), head.request_id.as_ref().into()));
    }
    for (field, key) in [
        (head.timeout_ms, "NOSLATE_TIMEOUT_MS"),
        (head.deadline, "NOSLATE_DEADLINE_MS"),
    ] {
        if let Some(n) = field {
            env.push((key.into(), n.to_string().into()));
        }
    }
    flatten_context("NOSLATE_CTX", &head.context, &mut env);
    env.retain(|(_, v)| !v.as_encoded_bytes().contains(&0));
    env
}

/// When the worker stops the command: the head's `deadline` (else `timeoutMs` from now), a
/// little early ([`DEADLINE_MARGIN`]). `None`: no deadline given.
fn stream_deadline(head: &RequestHead, now: Instant) -> Option<Instant> {
    let epoch_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let budget = match (head.deadline, head.timeout_ms) {
        (Some(deadline), Some(timeout)) => deadline.saturating_sub(epoch_now).min(timeout),
        (Some(deadline), None) => deadline.saturating_sub(epoch_now),
        (None, Some(timeout)) => timeout,
        (None, None) => return None,
    };
    let budget = Duration::from_millis(budget);
    Some(now + budget - DEADLINE_MARGIN.min(budget / 10))
}

/// The last [`STDERR_TAIL_LINES`] non-empty lines of `tail`.
fn tail_lines(tail: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Copies the command's stderr to the worker's (the function's log) and keeps its tail.
fn read_stderr(mut pipe: impl Read, mut log: impl Write) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = log.write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    tail
}

/// Writes request-body chunks to the command's stdin and returns credit for them (also once the
/// command stopped reading: the rest is discarded). Stdin closes when the request ends.
fn feed_stdin(
    mut stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    out: &Out,
    shared: &Shared,
    stream: u32,
) {
    while let Ok(chunk) = chunks.recv() {
        if let Some(pipe) = stdin.as_mut()
            && pipe.write_all(&chunk).is_err()
        {
            stdin = None;
        }
        let Ok(credit) = u32::try_from(chunk.len()) else {
            continue;
        };
        if credit == 0 {
            continue;
        }
        let c = lock(&shared.control);
        if c.done {
            return;
        }
        let _ = out.send(|frame| wire::put_worker_window(frame, stream, credit));
    }
}

/// Describes how the command ended.
fn describe_exit(command: &str, status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("{command} exited with code {code}"),
            (None, Some(sig)) => {
                format!("{command} was killed by {}", crate::sys::signal_name(sig))
            }
            _ => format!("{command} ended with {s}"),
        },
        Err(e) => format!("cannot wait for {command}: {e}"),
    }
}

/// Runs one stream: spawns the command, pumps its stdout, and sends the terminal frame.
fn run_stream(
    config: &Config,
    out: &Arc<Out>,
    streams: &Streams,
    shared: &Arc<Shared>,
    stream: u32,
    head: &RequestHead,
    body: Option<Receiver<Vec<u8>>>,
) {
    let started = Instant::now();
    let command_name = config.command.display().to_string();
    let mut cmd = Command::new(&config.command);
    cmd.args(&config.args)
        .current_dir(&config.code_dir)
        .env_clear()
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .envs(request_env(head))
        .stdin(if body.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = cmd.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            finish(streams, shared, stream);
            out.error(
                stream,
                "ProcessSpawnFailed",
                &format!("cannot run {command_name}: {e}"),
                Vec::new(),
            );
            return;
        }
    };
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    {
        let mut c = lock(&shared.control);
        c.pgid = Some(pgid);
        if c.stop.is_some() {
            let _ = crate::sys::kill_group(pgid, libc::SIGKILL);
        }
    }
    if let Some(chunks) = body {
        let stdin = child.stdin.take();
        let (out, shared) = (Arc::clone(out), Arc::clone(shared));
        std::thread::spawn(move || feed_stdin(stdin, chunks, &out, &shared, stream));
    }
    let stderr = child
        .stderr
        .take()
        .map(|pipe| std::thread::spawn(move || read_stderr(pipe, io::stderr())));
    if let Some(deadline) = stream_deadline(head, started) {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            let mut c = lock(&shared.control);
            loop {
                if c.done || c.stop.is_some() {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    drop(c);
                    shared.stop(Stop::Timeout);
                    return;
                }
                c = shared
                    .changed
                    .wait_timeout(c, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
    }

    let mut head_sent = false;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = vec![0u8; MAX_BODY_CHUNK];
        loop {
            let allowed = {
                let mut c = lock(&shared.control);
                loop {
                    if c.stop.is_some() {
                        break 0;
                    }
                    if c.credit > 0 {
                        break usize::try_from(c.credit)
                            .unwrap_or(usize::MAX)
                            .min(buf.len());
                    }
                    c = shared.changed.wait(c).unwrap_or_else(|e| e.into_inner());
                }
            };
            if allowed == 0 {
                break;
            }
            let n = match stdout.read(&mut buf[..allowed]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if !head_sent {
                head_sent = true;
                let _ = out.send_json(|frame| {
                    wire::put_response_head(frame, stream, false, &response_head())
                });
            }
            lock(&shared.control).credit -= n as u64;
            let _ = out.send(|frame| wire::put_response_body(frame, stream, false, &buf[..n]));
        }
    }
    let status = child.wait();
    // Whatever the command left running in its group dies with the request.
    let _ = crate::sys::kill_group(pgid, libc::SIGKILL);
    let tail = stderr
        .and_then(|t| t.join().ok())
        .map(|t| tail_lines(&t))
        .unwrap_or_default();
    let stop = finish(streams, shared, stream);
    match stop {
        Some(Stop::Timeout) => {
            let budget = head.timeout_ms.unwrap_or(0);
            out.error(
                stream,
                "FunctionTimeout",
                &format!(
                    "{command_name} did not finish within its timeout of {budget} ms and was killed"
                ),
                tail,
            );
        }
        Some(Stop::Cancelled(reason)) => out.error(
            stream,
            "Cancelled",
            &format!("cancelled ({reason}); {command_name} was killed"),
            tail,
        ),
        None if status.as_ref().is_ok_and(ExitStatus::success) => {
            let _ = if head_sent {
                out.send(|frame| wire::put_response_body(frame, stream, true, &[]))
            } else {
                out.send_json(|frame| {
                    wire::put_response_head(frame, stream, true, &response_head())
                })
            };
        }
        None => out.error(
            stream,
            "ProcessExited",
            &describe_exit(&command_name, &status),
            tail,
        ),
    }
}

fn response_head() -> ResponseHead {
    ResponseHead {
        status: 200,
        headers: vec![(
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        )],
    }
}

/// Closes a stream before its terminal frame: no more WINDOW from the feeder, and the id is free
/// for the runtime to reuse. Returns why the command was stopped, if it was.
fn finish(streams: &Streams, shared: &Shared, stream: u32) -> Option<Stop> {
    let stop = {
        let mut c = lock(&shared.control);
        c.done = true;
        c.stop.clone()
    };
    shared.changed.notify_all();
    lock(streams).remove(&stream);
    stop
}

/// The frame reader's view of the worker.
struct Worker {
    config: Arc<Config>,
    out: Arc<Out>,
    streams: Streams,
    /// Response-body credit each stream starts with (INIT's `responseWindow`).
    response_window: u32,
}

impl Worker {
    fn on_frame(&mut self, frame: wire::Frame<'_>) -> Result<(), String> {
        let (stream, end, payload) = (frame.header.stream, frame.is_end(), frame.payload);
        match frame.header.kind {
            Kind::Init => {
                if let Ok(init) = wire::Init::<Value>::parse(payload) {
                    self.response_window = init.response_window;
                }
                let sent = match self.config.check() {
                    Ok(()) => self
                        .out
                        .send_json(|frame| wire::put_init_done(frame, &wire::InitDone::default())),
                    Err(why) => {
                        let error = ErrorPayload::new("ProcessNotExecutable", &why, Vec::new());
                        self.out
                            .send_json(|frame| wire::put_init_error(frame, &error))
                    }
                };
                sent.map_err(|e| e.to_string())
            }
            Kind::RequestHead => {
                let head = RequestHead::parse(payload)
                    .map_err(|e| format!("bad request head on stream {stream}: {e}"))?;
                let shared = Arc::new(Shared {
                    control: Mutex::new(Control {
                        credit: u64::from(self.response_window),
                        ..Control::default()
                    }),
                    changed: Condvar::new(),
                });
                let (tx, rx) = if end {
                    (None, None)
                } else {
                    let (tx, rx) = mpsc::channel();
                    (Some(tx), Some(rx))
                };
                lock(&self.streams).insert(
                    stream,
                    Entry {
                        shared: Arc::clone(&shared),
                        body: tx,
                    },
                );
                let (config, out, streams) = (
                    Arc::clone(&self.config),
                    Arc::clone(&self.out),
                    Arc::clone(&self.streams),
                );
                std::thread::spawn(move || {
                    run_stream(&config, &out, &streams, &shared, stream, &head, rx);
                });
                Ok(())
            }
            Kind::RequestBody => {
                let mut streams = lock(&self.streams);
                if let Some(entry) = streams.get_mut(&stream) {
                    if let Some(tx) = &entry.body
                        && !payload.is_empty()
                    {
                        let _ = tx.send(payload.to_vec());
                    }
                    if end {
                        entry.body = None;
                    }
                }
                Ok(())
            }
            Kind::Cancel => {
                let reason = wire::cancel_reason(payload).unwrap_or_else(|_| "cancelled".into());
                let shared = lock(&self.streams)
                    .get(&stream)
                    .map(|e| Arc::clone(&e.shared));
                if let Some(shared) = shared {
                    shared.stop(Stop::Cancelled(reason));
                }
                Ok(())
            }
            Kind::WindowToWorker => {
                let credit = wire::window_credit(payload).map_err(|e| e.to_string())?;
                let shared = lock(&self.streams)
                    .get(&stream)
                    .map(|e| Arc::clone(&e.shared));
                if let Some(shared) = shared {
                    lock(&shared.control).credit += u64::from(credit);
                    shared.changed.notify_all();
                }
                Ok(())
            }
            // The decoder yields only the runtime's kinds.
            other => Err(format!("unexpected {} frame", other.name())),
        }
    }

    /// Reads frames until end of file (`Ok`) or a protocol error (a frame cut short by the end
    /// of file is one).
    fn serve(&mut self, mut input: impl Read) -> Result<(), String> {
        let mut decoder = FrameDecoder::new(Direction::ToWorker);
        loop {
            match decoder.read_from(&mut input) {
                Ok(0) => return decoder.finish().map_err(|e| e.to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("cannot read fd 3: {e}")),
            }
            while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                self.on_frame(frame)?;
            }
        }
    }

    /// Kills every stream's command (before the worker exits on an error).
    fn stop_all(&self, why: &str) {
        let all: Vec<Arc<Shared>> = lock(&self.streams)
            .values()
            .map(|e| Arc::clone(&e.shared))
            .collect();
        for shared in all {
            shared.stop(Stop::Cancelled(why.to_owned()));
        }
    }
}

/// `noslate __process-worker`: the worker of a `process` function.
pub fn main() -> ExitCode {
    let fd = |var: &str, default: i32| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let fd_in = fd("NOSLATE_IPC_IN", crate::sys::WORKER_FD_IN);
    let fd_out = fd("NOSLATE_IPC_OUT", crate::sys::WORKER_FD_OUT);
    // Duplicates of the inherited channels (pipes or sockets, which cannot be reopened through
    // /proc), owned from here on.
    let opened = crate::sys::dup_cloexec(fd_in).and_then(|input| {
        let output = crate::sys::dup_cloexec(fd_out)?;
        Ok((std::fs::File::from(input), std::fs::File::from(output)))
    });
    let (input, output) = match opened {
        Ok(pipes) => {
            // The duplicates are close-on-exec; the inherited descriptors are not, and the
            // commands must not hold the protocol channels open.
            for fd in [fd_in, fd_out] {
                if let Err(e) = crate::sys::set_cloexec(fd) {
                    eprintln!("noslate {WORKER_ARG}: cannot mark fd {fd} close-on-exec: {e}");
                }
            }
            pipes
        }
        Err(e) => {
            eprintln!(
                "noslate {WORKER_ARG}: cannot take the protocol channels (fds {fd_in}/{fd_out}): {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let mut worker = Worker {
        config: Arc::new(Config::from_env()),
        out: Arc::new(Out {
            pipe: Mutex::new(Box::new(output)),
        }),
        streams: Arc::default(),
        response_window: INITIAL_WINDOW,
    };
    let ready = Ready {
        pid: std::process::id(),
        runtime: "process".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: 1,
        ..Ready::default()
    };
    if let Err(e) = worker.out.send_json(|frame| wire::put_ready(frame, &ready)) {
        eprintln!("noslate {WORKER_ARG}: cannot write fd {fd_out}: {e}");
        return ExitCode::FAILURE;
    }
    match worker.serve(input) {
        Ok(()) => {
            // End of file: the runtime has no open streams left; let any stragglers finish.
            while !lock(&worker.streams).is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("noslate {WORKER_ARG}: {why}");
            worker.stop_all(&why);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head(value: Value) -> RequestHead<'static> {
        serde_json::from_value(value).unwrap()
    }

    fn get<'a>(env: &'a [(String, OsString)], key: &str) -> Option<&'a str> {
        env.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn the_head_becomes_cgi_variables() {
        let value = json!({
            "kind": "http", "method": "PUT", "url": "/a/b?x=1&y=2",
            "headers": [["Content-Type", "text/plain"], ["content-length", "5"],
                        ["X-Multi", "1"], ["x-multi", "2"], ["Proxy", "evil"],
                        ["x-latin", "caf\u{e9}"]],
            "requestId": "rid-1", "deadline": 1_700_000_000_000u64, "timeoutMs": 3000,
            "context": {"requestId": "rid-1", "region": "cn-hangzhou",
                        "function": {"name": "f", "memory": 512, "initializer": null},
                        "credentials": {"accessKeyId": "AK"}, "retryCount": 0}
        });
        let env = request_env(&head(value));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("PUT"));
        assert_eq!(get(&env, "REQUEST_URI"), Some("/a/b?x=1&y=2"));
        assert_eq!(get(&env, "PATH_INFO"), Some("/a/b"));
        assert_eq!(get(&env, "QUERY_STRING"), Some("x=1&y=2"));
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("5"));
        assert_eq!(get(&env, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&env, "HTTP_X_MULTI"), Some("1, 2"));
        assert_eq!(get(&env, "HTTP_PROXY"), None, "httpoxy");
        let latin = env.iter().find(|(k, _)| k == "HTTP_X_LATIN").unwrap();
        assert_eq!(latin.1.as_encoded_bytes(), b"caf\xe9");
        assert_eq!(get(&env, "NOSLATE_REQUEST_KIND"), Some("http"));
        assert_eq!(get(&env, "NOSLATE_REQUEST_ID"), Some("rid-1"));
        assert_eq!(get(&env, "FC_REQUEST_ID"), Some("rid-1"));
        assert_eq!(get(&env, "NOSLATE_TIMEOUT_MS"), Some("3000"));
        assert_eq!(get(&env, "NOSLATE_DEADLINE_MS"), Some("1700000000000"));
        assert_eq!(get(&env, "NOSLATE_CTX_REGION"), Some("cn-hangzhou"));
        assert_eq!(get(&env, "NOSLATE_CTX_FUNCTION_NAME"), Some("f"));
        assert_eq!(get(&env, "NOSLATE_CTX_FUNCTION_MEMORY"), Some("512"));
        assert_eq!(get(&env, "NOSLATE_CTX_FUNCTION_INITIALIZER"), None);
        assert_eq!(
            get(&env, "NOSLATE_CTX_CREDENTIALS_ACCESS_KEY_ID"),
            Some("AK")
        );
        assert_eq!(get(&env, "NOSLATE_CTX_RETRY_COUNT"), Some("0"));
    }

    #[test]
    fn a_minimal_head_has_defaults() {
        let env = request_env(&RequestHead::default());
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&env, "PATH_INFO"), Some("/"));
        assert_eq!(get(&env, "QUERY_STRING"), Some(""));
        assert_eq!(get(&env, "CONTENT_LENGTH"), None);
        assert!(stream_deadline(&RequestHead::default(), Instant::now()).is_none());
    }

    #[test]
    fn the_deadline_comes_a_little_early() {
        let now = Instant::now();
        let d = stream_deadline(&head(json!({"timeoutMs": 1000})), now).unwrap();
        assert_eq!(d - now, Duration::from_millis(900));
        let d = stream_deadline(&head(json!({"timeoutMs": 10_000})), now).unwrap();
        assert_eq!(d - now, Duration::from_millis(9900));
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        let lines = tail_lines(text.as_bytes());
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines.last().map(String::as_str), Some("line 30"));
        let big = vec![b'x'; 100_000];
        assert!(read_stderr(&big[..], io::sink()).len() <= STDERR_TAIL_BYTES);
    }

    #[test]
    fn names_are_mapped_to_environment_names() {
        assert_eq!(env_name("x-fc-request-id"), "X_FC_REQUEST_ID");
        assert_eq!(snake_upper("accessKeyId"), "ACCESS_KEY_ID");
        assert_eq!(snake_upper("logProject"), "LOG_PROJECT");
    }

    /// A `Write` that keeps what it is given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the worker sent, as `(kind, flags, stream, payload)` frames.
    fn frames(bytes: &[u8]) -> Vec<(Kind, u8, u32, Vec<u8>)> {
        let mut decoder = FrameDecoder::new(Direction::ToRuntime);
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = decoder.next_frame().unwrap() {
            out.push((
                f.header.kind,
                f.header.flags,
                f.header.stream,
                f.payload.to_vec(),
            ));
        }
        assert_eq!(decoder.finish(), Ok(()));
        out
    }

    /// A REQUEST_HEAD frame for `<method> /`.
    fn request_head(stream: u32, end: bool, method: &str) -> Vec<u8> {
        let head: RequestHead = RequestHead {
            method: method.to_owned().into(),
            url: "/".into(),
            ..RequestHead::default()
        };
        let mut out = Vec::new();
        wire::put_request_head(&mut out, stream, end, &head).unwrap();
        out
    }

    fn worker(command: &str, args: &[&str]) -> (Worker, Sink) {
        let sink = Sink::default();
        let worker = Worker {
            config: Arc::new(Config {
                command: PathBuf::from(command),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                code_dir: std::env::temp_dir(),
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            }),
            out: Arc::new(Out {
                pipe: Mutex::new(Box::new(sink.clone())),
            }),
            streams: Arc::default(),
            response_window: INITIAL_WINDOW,
        };
        (worker, sink)
    }

    fn wait_for_terminal(sink: &Sink, stream: u32) -> Vec<(Kind, u8, u32, Vec<u8>)> {
        let start = Instant::now();
        loop {
            let all = frames(&lock(&sink.0));
            let terminal = all.iter().any(|(k, f, s, _)| {
                *s == stream
                    && (*k == Kind::ResponseError
                        || (*f & wire::FLAG_END != 0
                            && (*k == Kind::ResponseHead || *k == Kind::ResponseBody)))
            });
            if terminal {
                return all;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no terminal frame"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn init_checks_the_command() {
        let (mut w, sink) = worker("/nonexistent/cmd", &[]);
        let mut input = Vec::new();
        wire::put_init(&mut input, &json!({})).unwrap();
        w.serve(&input[..]).unwrap();
        let got = frames(&lock(&sink.0));
        assert_eq!(got[0].0, Kind::InitError);
        let error = ErrorPayload::parse(Kind::InitError, &got[0].3).unwrap();
        assert_eq!(error.error_type, "ProcessNotExecutable");
        assert!(error.error_message.contains("/nonexistent/cmd"));
        let (mut w, sink) = worker("/bin/cat", &[]);
        w.serve(&input[..]).unwrap();
        assert_eq!(frames(&lock(&sink.0))[0].0, Kind::InitDone);
    }

    #[test]
    fn malformed_input_stops_the_worker() {
        let (mut w, _) = worker("/bin/cat", &[]);
        let mut input = Vec::new();
        wire::put_init(&mut input, &json!({})).unwrap();
        let cut = &input[..input.len() - 1];
        assert!(w.serve(cut).unwrap_err().contains("ended inside a frame"));
        let mut input = Vec::new();
        wire::put_response_body(&mut input, 1, true, b"");
        assert!(w.serve(&input[..]).unwrap_err().contains("0x85"));
    }

    #[test]
    fn a_stream_echoes_through_cat_and_grants_credit() {
        let (mut w, sink) = worker("/bin/cat", &[]);
        let mut input = request_head(7, false, "POST");
        wire::put_request_body(&mut input, 7, false, b"hello ");
        wire::put_request_body(&mut input, 7, true, b"world");
        w.serve(&input[..]).unwrap();
        let got = wait_for_terminal(&sink, 7);
        let body: Vec<u8> = got
            .iter()
            .filter(|(k, ..)| *k == Kind::ResponseBody)
            .flat_map(|(.., p)| p.clone())
            .collect();
        assert_eq!(body, b"hello world");
        let heads: Vec<_> = got
            .iter()
            .filter(|(k, ..)| *k == Kind::ResponseHead)
            .collect();
        assert_eq!(heads.len(), 1);
        assert_eq!(ResponseHead::parse(&heads[0].3), Ok(response_head()));
        let credit: u32 = got
            .iter()
            .filter(|(k, ..)| *k == Kind::WindowToRuntime)
            .map(|(.., p)| wire::window_credit(p).unwrap())
            .sum();
        assert_eq!(credit, 11);
        assert!(lock(&w.streams).is_empty());
    }

    #[test]
    fn a_failing_command_reports_its_exit_and_stderr() {
        let (mut w, sink) = worker("/bin/sh", &["-c", "echo oops >&2; exit 3"]);
        let input = request_head(1, true, "GET");
        w.serve(&input[..]).unwrap();
        let got = wait_for_terminal(&sink, 1);
        let (_, _, _, payload) = got
            .iter()
            .find(|(k, ..)| *k == Kind::ResponseError)
            .unwrap();
        let error = ErrorPayload::parse(Kind::ResponseError, payload).unwrap();
        assert_eq!(error.error_type, "ProcessExited");
        assert!(error.error_message.contains("exited with code 3"));
        assert_eq!(error.stack_trace, ["oops"]);
    }

    #[test]
    fn cancel_kills_the_command() {
        let (mut w, sink) = worker("/bin/sh", &["-c", "echo started >&2; sleep 30"]);
        w.serve(&request_head(2, true, "GET")[..]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let mut cancel = Vec::new();
        wire::put_cancel(&mut cancel, 2, "client gone").unwrap();
        w.serve(&cancel[..]).unwrap();
        let got = wait_for_terminal(&sink, 2);
        assert!(started.elapsed() < Duration::from_secs(5));
        let (_, _, _, payload) = got
            .iter()
            .find(|(k, ..)| *k == Kind::ResponseError)
            .unwrap();
        let error = ErrorPayload::parse(Kind::ResponseError, payload).unwrap();
        assert_eq!(error.error_type, "Cancelled");
        assert!(error.error_message.contains("client gone"));
    }
}
