//! The access log: one JSON line per invocation and per lifecycle hook, with its outcome, its
//! bytes and where its time went.
//!
//! Lines are collected during a loop iteration and handed on once at its end, with the loop's
//! other output. The loop never waits for them:
//!
//! ```text
//!  ended requests ──▶ AccessLog.pending ──end of iteration──▶ console (stdout)      [console]
//!                                                       └──▶ writer thread ──▶ access.log [file]
//!                     bounded by logger.accessLogBufferSize: past it lines are dropped, counted
//! ```
//!
//! A regular file cannot be written without blocking, so `file` has one writer thread that owns
//! the file and nothing else: it takes whole batches over a channel, writes them, and rotates
//! `access.log` by size. A slow or full disk backs up into the bytes in flight, which are
//! bounded; a failed write drops its batch and counts the lines.

use super::conn::EndedRequest;
use super::console::{Console, Stream};
use crate::config::{AccessLogDestination, LoggerConfig};
use crate::fc::Phase;
use crate::json_text::{Millis, write_str, write_u64};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// File name of the access log inside the log directory (Noslate's name).
pub const LOG_NAME: &str = "access.log";

/// Batches that may wait for the writer thread (the bytes they hold are bounded separately).
const QUEUED_BATCHES: usize = 64;
/// Lines wait in the loop until they fill this many bytes, or for [`HANDOFF_INTERVAL`], before
/// they are handed on: handing them on at the end of every iteration woke the writer thread
/// (or wrote the console) about once per request at high rates, which cost 15-20 % of the
/// throughput of a trivial function on two vCPUs.
const HANDOFF_BYTES: usize = 64 * 1024;
/// The longest a line waits in the loop before it is handed on.
pub(super) const HANDOFF_INTERVAL: Duration = Duration::from_millis(100);

/// One access-log line, as written (its fields in this order, named in camelCase).
#[derive(Debug)]
pub(super) struct Entry<'a> {
    /// When it ended, in milliseconds since the Unix epoch (as `resource_usage.log`).
    pub time: u64,
    pub request_id: &'a str,
    /// `invoke`, `initialize`, `pre-freeze` or `pre-stop`.
    pub kind: &'static str,
    pub function: Option<&'a str>,
    pub service: Option<&'a str>,
    pub worker: Option<&'a str>,
    pub method: &'a str,
    /// The path without its query, which may carry secrets.
    pub path: &'a str,
    /// 0 when the connection ended before any answer.
    pub status: u16,
    pub error_type: Option<&'a str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From admission to a worker taking it (`None`: no worker took it).
    pub queue_ms: Option<Millis>,
    /// Of the queueing, how long it waited for the start of the worker that took it.
    pub cold_start_ms: Option<Millis>,
    /// From the head's arrival to the response head.
    pub head_ms: Option<Millis>,
    /// From the head's arrival to the end.
    pub total_ms: Millis,
    /// The client's address (`None` on the admin socket).
    pub client: Option<std::net::SocketAddr>,
}

impl<'a> Entry<'a> {
    /// The line of a request that ended; `function` is its function's name, if it had one.
    pub(super) fn of(ended: &'a EndedRequest, function: Option<&'a str>) -> Entry<'a> {
        let timing = &ended.timing;
        let facts = &ended.facts;
        let since_received = |at: Instant| Millis::of(at.saturating_duration_since(facts.received));
        // A local answer (a hook, a refusal) is written whole when it ends.
        let head = timing
            .answered
            .or((timing.status != 0).then_some(ended.ended));
        Entry {
            time: ended.time,
            request_id: &ended.id,
            kind: kind_of(ended.phase),
            function,
            service: facts.service.as_deref(),
            worker: facts.worker.as_deref(),
            method: &facts.method,
            path: &facts.path,
            status: timing.status,
            error_type: facts.error_type.as_deref(),
            bytes_in: timing.bytes_in,
            bytes_out: timing.bytes_out,
            queue_ms: timing
                .admitted
                .zip(timing.dispatched)
                .map(|(admitted, dispatched)| {
                    Millis::of(dispatched.saturating_duration_since(admitted))
                }),
            cold_start_ms: facts.cold_start.map(Millis::of),
            head_ms: head.map(since_received),
            total_ms: since_received(ended.ended),
            client: ended.client,
        }
    }
}

impl Entry<'_> {
    /// Appends the line's JSON object (without the newline).
    fn write_json(&self, out: &mut Vec<u8>) {
        fn opt_str(out: &mut Vec<u8>, value: Option<&str>) {
            match value {
                Some(s) => write_str(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn opt_millis(out: &mut Vec<u8>, value: Option<Millis>) {
            match value {
                Some(m) => m.write(out),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"{\"time\":");
        write_u64(out, self.time);
        out.extend_from_slice(b",\"requestId\":");
        write_str(out, self.request_id);
        out.extend_from_slice(b",\"kind\":");
        write_str(out, self.kind);
        out.extend_from_slice(b",\"function\":");
        opt_str(out, self.function);
        out.extend_from_slice(b",\"service\":");
        opt_str(out, self.service);
        out.extend_from_slice(b",\"worker\":");
        opt_str(out, self.worker);
        out.extend_from_slice(b",\"method\":");
        write_str(out, self.method);
        out.extend_from_slice(b",\"path\":");
        write_str(out, self.path);
        out.extend_from_slice(b",\"status\":");
        write_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"errorType\":");
        opt_str(out, self.error_type);
        out.extend_from_slice(b",\"bytesIn\":");
        write_u64(out, self.bytes_in);
        out.extend_from_slice(b",\"bytesOut\":");
        write_u64(out, self.bytes_out);
        out.extend_from_slice(b",\"queueMs\":");
        opt_millis(out, self.queue_ms);
        out.extend_from_slice(b",\"coldStartMs\":");
        opt_millis(out, self.cold_start_ms);
        out.extend_from_slice(b",\"headMs\":");
        opt_millis(out, self.head_ms);
        out.extend_from_slice(b",\"totalMs\":");
        self.total_ms.write(out);
        out.extend_from_slice(b",\"client\":");
        match self.client {
            Some(std::net::SocketAddr::V4(addr)) => {
                out.push(b'"');
                for (i, octet) in addr.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    write_u64(out, u64::from(octet));
                }
                out.push(b':');
                write_u64(out, u64::from(addr.port()));
                out.push(b'"');
            }
            Some(addr) => {
                let _ = write!(out, "\"{addr}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

/// The access-log name of an FC phase.
fn kind_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Invoke => "invoke",
        Phase::Initialize => "initialize",
        Phase::PreFreeze => "pre-freeze",
        Phase::PreStop => "pre-stop",
    }
}

/// What the access log has done, for `stats` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AccessLogStats {
    /// Lines handed to the console or written to the file.
    pub lines: u64,
    /// Lines dropped: the buffer was full, the console would not take them, or the disk failed.
    pub dropped: u64,
}

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Off,
    Console,
    File(FileSink),
}

/// The access log's owner in the loop.
#[derive(Debug)]
pub(super) struct AccessLog {
    sink: Sink,
    /// Lines not yet handed on.
    pending: Vec<u8>,
    pending_lines: u64,
    /// When the oldest pending line was added.
    pending_since: Option<Instant>,
    /// A hand-off is scheduled (the loop's timer), so none needs to be asked for.
    handoff_scheduled: bool,
    buffer_size: usize,
    lines: u64,
    dropped: u64,
}

impl AccessLog {
    /// An access log as `logger` configures it, `access.log` going to `logdir`.
    pub(super) fn new(logger: &LoggerConfig, logdir: &Path) -> AccessLog {
        let sink = match logger.access_log {
            AccessLogDestination::Off => Sink::Off,
            AccessLogDestination::Console => Sink::Console,
            AccessLogDestination::File => match FileSink::start(
                logdir.join(LOG_NAME),
                logger.access_log_max_bytes,
                logger.access_log_files,
            ) {
                Ok(file) => Sink::File(file),
                Err(err) => {
                    log::warn!("[http] cannot start the access log writer: {err}; access log off");
                    Sink::Off
                }
            },
        };
        AccessLog {
            sink,
            pending: Vec::new(),
            pending_lines: 0,
            pending_since: None,
            handoff_scheduled: false,
            buffer_size: logger.access_log_buffer_size.max(1),
            lines: 0,
            dropped: 0,
        }
    }

    /// Whether lines are written at all: when not, requests collect nothing for them.
    pub(super) fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Adds one line at `now`, or drops and counts it when the lines waiting already fill the
    /// buffer.
    pub(super) fn append(&mut self, entry: &Entry<'_>, now: Instant) {
        if !self.enabled() {
            return;
        }
        if self.pending.len() + self.in_flight() >= self.buffer_size {
            self.dropped += 1;
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = Some(now);
        }
        entry.write_json(&mut self.pending);
        self.pending.push(b'\n');
        self.pending_lines += 1;
    }

    /// Bytes handed to the writer thread and not yet written.
    fn in_flight(&self) -> usize {
        match &self.sink {
            Sink::File(file) => file.in_flight.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Hands the pending lines on once they fill [`HANDOFF_BYTES`] or the oldest has waited
    /// [`HANDOFF_INTERVAL`]. Returns when the loop should call again, if it has not been told
    /// already ([`AccessLog::handoff_due`] clears that).
    pub(super) fn flush(&mut self, console: &mut Console, now: Instant) -> Option<Instant> {
        let due = self.pending_since? + HANDOFF_INTERVAL;
        if self.pending.len() < HANDOFF_BYTES.min(self.buffer_size / 2) && now < due {
            return (!std::mem::replace(&mut self.handoff_scheduled, true)).then_some(due);
        }
        self.flush_now(console);
        None
    }

    /// The hand-off the loop scheduled is due.
    pub(super) fn handoff_due(&mut self) {
        self.handoff_scheduled = false;
    }

    /// Hands the pending lines on now: to the console, or to the writer thread. Whatever
    /// cannot be taken now is dropped and counted.
    pub(super) fn flush_now(&mut self, console: &mut Console) {
        self.pending_since = None;
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending_lines);
        match &mut self.sink {
            Sink::Off => {}
            Sink::Console => {
                if console.write_own(Stream::Out, &self.pending) {
                    self.lines += lines;
                } else {
                    self.dropped += lines;
                }
                self.pending.clear();
            }
            Sink::File(file) => {
                let batch = std::mem::take(&mut self.pending);
                if file.send(batch) {
                    self.lines += lines;
                } else {
                    self.dropped += lines;
                }
            }
        }
    }

    /// Lines written and dropped so far (the writer thread's failures included).
    pub(super) fn stats(&self) -> AccessLogStats {
        let failed = match &self.sink {
            Sink::File(file) => file.failed_lines.load(Ordering::Relaxed),
            _ => 0,
        };
        AccessLogStats {
            lines: self.lines.saturating_sub(failed),
            dropped: self.dropped + failed,
        }
    }

    /// The runtime is exiting: hands on the last lines and gives the writer up to `wait` to
    /// write them. A disk that hangs does not hold the exit longer.
    pub(super) fn close(&mut self, console: &mut Console, wait: Duration) {
        self.flush_now(console);
        if let Sink::File(file) = std::mem::replace(&mut self.sink, Sink::Off) {
            let failed = file.finish(wait);
            self.lines = self.lines.saturating_sub(failed);
            self.dropped += failed;
        }
    }
}

/// The writer thread's end in the loop.
#[derive(Debug)]
struct FileSink {
    batches: Option<SyncSender<Vec<u8>>>,
    /// Bytes sent to the thread and not yet written (or dropped) by it.
    in_flight: Arc<AtomicUsize>,
    /// Lines the thread could not write.
    failed_lines: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FileSink {
    fn start(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<FileSink> {
        let (batches, receiver) = sync_channel(QUEUED_BATCHES);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let failed_lines = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
            in_flight: Arc::clone(&in_flight),
            failed_lines: Arc::clone(&failed_lines),
            failing: false,
        };
        // Opened by the thread as it starts (an unwritable log directory is reported then):
        // opening can block too (a FIFO without a reader, a hung network mount).
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                writer.open();
                writer.run(receiver);
            })?;
        Ok(FileSink {
            batches: Some(batches),
            in_flight,
            failed_lines,
            thread: Some(thread),
        })
    }

    /// Queues a batch for the thread; false when its queue is full or it is gone.
    fn send(&mut self, batch: Vec<u8>) -> bool {
        let Some(batches) = &self.batches else {
            return false;
        };
        let len = batch.len();
        self.in_flight.fetch_add(len, Ordering::Relaxed);
        match batches.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// Closes the queue and waits up to `wait` for the thread to write what it holds.
    /// Returns the lines it failed to write.
    fn finish(mut self, wait: Duration) -> u64 {
        self.batches = None;
        let Some(thread) = self.thread.take() else {
            return self.failed_lines.load(Ordering::Relaxed);
        };
        let until = std::time::Instant::now() + wait;
        while !thread.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            log::warn!(
                "[http] the access log writer is still busy at exit; its last lines are lost"
            );
        }
        self.failed_lines.load(Ordering::Relaxed)
    }
}

/// The writer thread: it owns the file, its size and its rotation, and nothing of the loop's.
struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    in_flight: Arc<AtomicUsize>,
    failed_lines: Arc<AtomicU64>,
    /// The last write failed (reported once per run of failures).
    failing: bool,
}

impl Writer {
    fn run(&mut self, batches: Receiver<Vec<u8>>) {
        while let Ok(batch) = batches.recv() {
            self.write(&batch);
            self.in_flight.fetch_sub(batch.len(), Ordering::Relaxed);
        }
    }

    fn open(&mut self) {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Private like the runtime's other logs: it names every function's requests and
        // clients, and workers may run as another user.
        let mode = crate::turf::spawn::LOG_FILE_MODE;
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(mode)
            .open(&self.path);
        match opened {
            Ok(file) => {
                let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
                self.size = file.metadata().map_or(0, |m| m.len());
                self.file = Some(file);
            }
            Err(err) => self.fail(&format!("cannot open {}: {err}", self.path.display())),
        }
    }

    fn write(&mut self, batch: &[u8]) {
        // Rotated before the batch that would take it past the limit: the current file always
        // holds the newest lines, and only a single oversized batch exceeds the limit.
        if self.file.is_some() && self.size > 0 && self.size + batch.len() as u64 > self.max_bytes {
            self.rotate();
        }
        if self.file.is_none() {
            self.open();
        }
        let Some(file) = self.file.as_mut() else {
            self.count_failed(batch);
            return;
        };
        match file.write_all(batch) {
            Ok(()) => {
                self.failing = false;
                self.size += batch.len() as u64;
            }
            Err(err) => {
                self.count_failed(batch);
                self.file = None;
                self.fail(&format!("cannot write {}: {err}", self.path.display()));
            }
        }
    }

    fn count_failed(&self, batch: &[u8]) {
        let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        self.failed_lines.fetch_add(lines, Ordering::Relaxed);
    }

    fn fail(&mut self, why: &str) {
        if !self.failing {
            log::warn!("[http] access log: {why}; lines are dropped and counted until it works");
        }
        self.failing = true;
    }

    /// `access.log` becomes `access.log.1`, `.1` becomes `.2`, ..., and the oldest beyond
    /// `keep` goes; with `keep` 0 the full file is simply removed.
    fn rotate(&mut self) {
        self.file = None;
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let outcome = if self.keep == 0 {
            std::fs::remove_file(&self.path)
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))
        };
        if let Err(err) = outcome {
            log::warn!("[http] cannot rotate {}: {err}", self.path.display());
        }
        self.open();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry<'_> {
        Entry {
            time: 1,
            request_id: id,
            kind: "invoke",
            function: Some("f"),
            service: None,
            worker: Some("f-1"),
            method: "POST",
            path: "/invoke",
            status: 200,
            error_type: None,
            bytes_in: 3,
            bytes_out: 5,
            queue_ms: Some(Millis::of(Duration::from_micros(250))),
            cold_start_ms: None,
            head_ms: Some(Millis::of(Duration::from_micros(1500))),
            total_ms: Millis::of(Duration::from_millis(2)),
            client: Some(([127, 0, 0, 1], 5000).into()),
        }
    }

    fn line_of(entry: &Entry<'_>) -> String {
        let mut out = Vec::new();
        entry.write_json(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn a_line_names_its_fields_in_camel_case_in_a_fixed_order() {
        assert_eq!(
            line_of(&entry("r-1")),
            "{\"time\":1,\"requestId\":\"r-1\",\"kind\":\"invoke\",\"function\":\"f\",\
             \"service\":null,\"worker\":\"f-1\",\"method\":\"POST\",\"path\":\"/invoke\",\
             \"status\":200,\"errorType\":null,\"bytesIn\":3,\"bytesOut\":5,\"queueMs\":0.25,\
             \"coldStartMs\":null,\"headMs\":1.5,\"totalMs\":2.0,\"client\":\"127.0.0.1:5000\"}"
        );
    }

    #[test]
    fn what_a_client_sent_stays_one_valid_json_line_whatever_it_holds() {
        let id = "q\"uo\\te\n\r\t\u{0}\u{1b}\u{7f}é😀";
        let mut hostile = entry(id);
        hostile.path = "/a\"b\\c\nd";
        hostile.method = "P\u{1}ST";
        hostile.error_type = Some("Bad\"Type");
        hostile.client = Some("[::1]:65535".parse().expect("an IPv6 address"));
        hostile.time = u64::MAX;
        let line = line_of(&hostile);
        assert!(!line.contains('\n'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
        assert_eq!(parsed["requestId"], id);
        assert_eq!(parsed["path"], "/a\"b\\c\nd");
        assert_eq!(parsed["method"], "P\u{1}ST");
        assert_eq!(parsed["errorType"], "Bad\"Type");
        assert_eq!(parsed["client"], "[::1]:65535");
        assert_eq!(parsed["time"], u64::MAX);
        assert_eq!(parsed.as_object().map(|o| o.len()), Some(17));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("noslate-access-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn logger(destination: AccessLogDestination) -> LoggerConfig {
        LoggerConfig {
            access_log: destination,
            ..LoggerConfig::default()
        }
    }

    #[test]
    fn file_lines_are_json_and_written_by_the_thread() {
        let dir = temp_dir("file");
        let (mut console, _stdout) = Console::over_pipes(1 << 16);
        let mut log = AccessLog::new(&logger(AccessLogDestination::File), &dir);
        log.append(&entry("a"), Instant::now());
        log.append(&entry("b"), Instant::now());
        log.close(&mut console, Duration::from_secs(5));
        let text = std::fs::read_to_string(dir.join(LOG_NAME)).expect("access.log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["requestId"], "b");
        assert_eq!(lines[0]["queueMs"], 0.25);
        assert_eq!(lines[0]["client"], "127.0.0.1:5000");
        assert_eq!(
            log.stats(),
            AccessLogStats {
                lines: 2,
                dropped: 0
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_configured_count() {
        let dir = temp_dir("rotate");
        let (mut console, _stdout) = Console::over_pipes(1 << 16);
        let mut config = logger(AccessLogDestination::File);
        config.access_log_max_bytes = 4096;
        config.access_log_files = 2;
        let mut log = AccessLog::new(&config, &dir);
        for round in 0..40 {
            for n in 0..5 {
                log.append(&entry(&format!("r{round}-{n}")), Instant::now());
            }
            log.flush_now(&mut console);
        }
        log.close(&mut console, Duration::from_secs(5));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["access.log", "access.log.1", "access.log.2"]);
        let newest = std::fs::read_to_string(dir.join("access.log")).expect("current");
        assert!(
            newest.contains("r39-4"),
            "the last line is in the current file"
        );
        for name in &names {
            let len = std::fs::metadata(dir.join(name)).expect("size").len();
            assert!(len < 4096 + 5 * 400, "{name}: {len} bytes");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_growing() {
        let dir = temp_dir("full");
        let (mut console, _stdout) = Console::over_pipes(1 << 16);
        let mut config = logger(AccessLogDestination::File);
        config.access_log_buffer_size = 1024;
        let mut log = AccessLog::new(&config, &dir);
        for n in 0..100 {
            log.append(&entry(&format!("{n}")), Instant::now());
        }
        assert!(log.pending.len() <= 1024 + 400, "{}", log.pending.len());
        let stats = log.stats();
        assert!(stats.dropped > 80, "{stats:?}");
        log.close(&mut console, Duration::from_secs(5));
        let text = std::fs::read_to_string(dir.join(LOG_NAME)).expect("access.log");
        let stats = log.stats();
        assert_eq!(text.lines().count() as u64, stats.lines, "{stats:?}");
        assert_eq!(stats.lines + stats.dropped, 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_disk_that_does_not_take_lines_never_stalls_the_loop() {
        let dir = temp_dir("stalled");
        let fifo = dir.join(LOG_NAME);
        // A FIFO nobody reads: the writer thread blocks opening it, as on a hung disk.
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let (mut console, _stdout) = Console::over_pipes(1 << 16);
        let mut config = logger(AccessLogDestination::File);
        config.access_log_buffer_size = 8192;
        let mut log = AccessLog::new(&config, &dir);
        for round in 0..100 {
            log.append(&entry(&format!("{round}")), Instant::now());
            log.flush_now(&mut console);
        }
        let stats = log.stats();
        assert!(stats.dropped > 0, "{stats:?}");
        // A reader comes: what was queued is written, and every line is accounted for.
        let reader = std::thread::spawn(move || std::fs::read(&fifo).expect("read the FIFO"));
        log.close(&mut console, Duration::from_secs(10));
        let written = reader.join().expect("reader");
        let stats = log.stats();
        let lines = written.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(lines, stats.lines, "{stats:?}");
        assert_eq!(stats.lines + stats.dropped, 100, "{stats:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_counts_every_line_as_dropped() {
        let (mut console, _stdout) = Console::over_pipes(1 << 16);
        let missing =
            std::env::temp_dir().join(format!("noslate-access-none-{}/x/y", std::process::id()));
        let mut log = AccessLog::new(&logger(AccessLogDestination::File), &missing);
        log.append(&entry("a"), Instant::now());
        log.close(&mut console, Duration::from_secs(5));
        assert_eq!(
            log.stats(),
            AccessLogStats {
                lines: 0,
                dropped: 1
            }
        );
    }

    #[test]
    fn console_lines_go_to_stdout_and_off_writes_nothing() {
        let (mut console, mut stdout) = Console::over_pipes(1 << 16);
        let mut log = AccessLog::new(&logger(AccessLogDestination::Console), Path::new("/"));
        log.append(&entry("c"), Instant::now());
        log.flush_now(&mut console);
        let poll = mio::Poll::new().expect("poll");
        assert!(!console.flush(poll.registry()), "all written");
        let mut out = vec![0; 4096];
        let n = std::io::Read::read(&mut stdout, &mut out).expect("stdout");
        let line: serde_json::Value = serde_json::from_slice(&out[..n]).expect("one JSON line");
        assert_eq!(line["requestId"], "c");

        let mut off = AccessLog::new(&logger(AccessLogDestination::Off), Path::new("/"));
        assert!(!off.enabled());
        off.append(&entry("d"), Instant::now());
        off.flush_now(&mut console);
        assert_eq!(off.stats(), AccessLogStats::default());
    }
}
