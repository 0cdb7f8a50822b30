//! The runtime's console: its own stdout and stderr, and the pipes that relay its children's
//! output to them (`logger.workerOutput: console`).
//!
//! Only the loop writes the console, and it writes whole lines in the order they were
//! completed, so lines of different workers never mix, however long or however many workers
//! write at once. The console is written only as fast as it takes bytes without blocking: when
//! the reader (FC's log collector, a terminal) is slower, output waits here up to
//! `logger.consoleBufferSize`, then in the children's pipes, and a child that keeps writing
//! blocks in its own `write()`. The loop never waits, and memory stays bounded.
//!
//! ```text
//!  child ──pipe──▶ Relay (cuts lines) ──▶ Sink (stdout|stderr) ──write_if_ready──▶ fd 1|2
//!                  stalled while its sink holds ≥ consoleBufferSize; resumed below half of it
//! ```

use crate::reactor::slab::{Key, Slab};
use crate::reactor::token::{self, Source};
use crate::sys;
use crate::turf::spawn::OutputPipes;
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

/// Which of the runtime's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Stream::Out => 0,
            Stream::Err => 1,
        }
    }
}

/// How much one read from a child's pipe takes.
const READ_CHUNK: usize = 64 * 1024;

/// Cuts a byte stream into lines of at most `limit` bytes (newline excluded): a longer line is
/// ended after `limit` bytes and continues on the next line.
#[derive(Debug)]
struct LineCutter {
    partial: Vec<u8>,
    limit: usize,
    /// Written before every line (`[gateway] `); empty for workers, whose lines are their own.
    prefix: Vec<u8>,
}

impl LineCutter {
    #[cfg(test)]
    fn new(limit: usize) -> LineCutter {
        LineCutter::prefixed(limit, "")
    }

    fn prefixed(limit: usize, prefix: &str) -> LineCutter {
        LineCutter {
            partial: Vec::new(),
            limit: limit.max(1),
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    /// Appends the lines `bytes` completes to `out` and keeps the unfinished rest. Returns how
    /// many over-long lines were cut.
    fn push(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut cut = 0;
        while !bytes.is_empty() {
            let room = self.limit - self.partial.len();
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) if end <= room => {
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(&self.partial);
                    self.partial.clear();
                    out.extend_from_slice(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                }
                _ if bytes.len() <= room => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
                _ => {
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(&self.partial);
                    self.partial.clear();
                    out.extend_from_slice(&bytes[..room]);
                    out.push(b'\n');
                    bytes = &bytes[room..];
                    cut += 1;
                }
            }
        }
        cut
    }

    /// The stream ended: what is left is a last line.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(&self.partial);
            out.push(b'\n');
            self.partial.clear();
        }
    }
}

/// One of the runtime's standard streams and what waits to be written to it.
#[derive(Debug)]
struct Sink {
    fd: std::fs::File,
    /// `fd` is written directly: a non-blocking pipe of our own
    /// (`sys::reopen_pipe_nonblocking`), or a regular file, which is always writable. Another
    /// descriptor (a terminal, a socket, a pipe that cannot be reopened) is polled before each
    /// write.
    direct: bool,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    /// The stream failed (its reader is gone): what would go to it is dropped.
    broken: bool,
}

impl Sink {
    fn new(fd: OwnedFd) -> Sink {
        let own = sys::reopen_pipe_nonblocking(fd.as_fd());
        let reopened = own.is_some();
        let fd = std::fs::File::from(own.unwrap_or(fd));
        let regular = fd.metadata().is_ok_and(|m| m.file_type().is_file());
        Sink {
            direct: reopened || regular,
            fd,
            pending: Vec::new(),
            written: 0,
            broken: false,
        }
    }

    fn waiting(&self) -> usize {
        self.pending.len() - self.written
    }

    /// Writes what the stream takes now. Returns the bytes dropped because it broke.
    fn flush(&mut self) -> u64 {
        while self.written < self.pending.len() && !self.broken {
            let rest = &self.pending[self.written..];
            // At most PIPE_BUF at once either way, so that each write stays atomic among the
            // other writers a shared stdout may have.
            let rest = &rest[..rest.len().min(sys::ATOMIC_WRITE)];
            let wrote = if self.direct {
                match std::io::Write::write(&mut &self.fd, rest) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => Ok(None),
                    Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                sys::write_if_ready(self.fd.as_fd(), rest)
            };
            match wrote {
                Ok(Some(0)) | Ok(None) => break,
                Ok(Some(n)) => self.written += n,
                Err(_) => self.broken = true,
            }
        }
        let mut dropped = 0;
        if self.broken {
            dropped = self.waiting() as u64;
            self.written = self.pending.len();
        }
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
            if self.pending.capacity() > 4 * READ_CHUNK {
                self.pending.shrink_to(READ_CHUNK);
            }
        } else if self.written >= READ_CHUNK && self.written * 2 >= self.pending.len() {
            self.pending.drain(..self.written);
            self.written = 0;
        }
        dropped
    }
}

/// A child's stdout or stderr pipe, relayed to the same stream of the runtime.
#[derive(Debug)]
struct Relay {
    pipe: Receiver,
    stream: Stream,
    lines: LineCutter,
    /// Left unread because its sink was full: read again once the sink has room.
    stalled: bool,
}

/// Output counters, for `noslate stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConsoleStats {
    /// Bytes of the runtime's own output dropped because the console was full or broken.
    pub(super) dropped_bytes: u64,
    /// Over-long lines of children's output cut (`logger.workerOutputLineLimit`).
    pub(super) cut_lines: u64,
    /// Children's pipes relayed now.
    pub(super) relays: usize,
    /// Bytes waiting for the runtime's stdout and stderr now.
    pub(super) waiting_bytes: usize,
}

/// The runtime's stdout and stderr and the relays into them.
#[derive(Debug)]
pub(super) struct Console {
    sinks: [Sink; 2],
    relays: Slab<Relay>,
    buffer_size: usize,
    line_limit: usize,
    scratch: Vec<u8>,
    stats: ConsoleStats,
    /// The last bytes read from the relays that keep a tail (the gateway's stderr), by relay
    /// key, with their size limit; kept after the pipe ends until taken.
    tails: Vec<(Key, Vec<u8>, usize)>,
}

impl Console {
    /// A console writing to the runtime's own stdout and stderr.
    pub(super) fn new(line_limit: usize, buffer_size: usize) -> io::Result<Console> {
        let stdout = io::stdout().as_fd().try_clone_to_owned()?;
        let stderr = io::stderr().as_fd().try_clone_to_owned()?;
        Ok(Console::over(stdout, stderr, line_limit, buffer_size))
    }

    /// A console writing into pipes, and the (non-blocking) read end of its stdout.
    #[cfg(test)]
    pub(super) fn over_pipes(buffer_size: usize) -> (Console, Receiver) {
        let (out_reader, out_writer) = std::io::pipe().expect("stdout pipe");
        let (_err_reader, err_writer) = std::io::pipe().expect("stderr pipe");
        let console = Console::over(out_writer.into(), err_writer.into(), 1024, buffer_size);
        let reader = Receiver::from(OwnedFd::from(out_reader));
        reader
            .set_nonblocking(true)
            .expect("non-blocking stdout pipe");
        (console, reader)
    }

    /// A console writing to `stdout` and `stderr`.
    fn over(stdout: OwnedFd, stderr: OwnedFd, line_limit: usize, buffer_size: usize) -> Console {
        Console {
            sinks: [Sink::new(stdout), Sink::new(stderr)],
            relays: Slab::default(),
            buffer_size: buffer_size.max(1),
            line_limit: line_limit.clamp(1, buffer_size.max(1)),
            scratch: Vec::new(),
            stats: ConsoleStats::default(),
            tails: Vec::new(),
        }
    }

    /// Relays a child's stdout and stderr. A pipe that cannot be watched is closed: the child
    /// then gets EPIPE for its output, rather than blocking forever on a pipe nobody reads.
    pub(super) fn attach(&mut self, registry: &Registry, pipes: OutputPipes) {
        self.attach_labelled(registry, pipes, "");
    }

    /// Relays a child's stdout and stderr with `prefix` before each line, and returns the
    /// stderr relay's key (`None` if it could not be watched).
    pub(super) fn attach_labelled(
        &mut self,
        registry: &Registry,
        pipes: OutputPipes,
        prefix: &str,
    ) -> Option<Key> {
        let mut stderr_key = None;
        for (pipe, stream) in [(pipes.stdout, Stream::Out), (pipes.stderr, Stream::Err)] {
            let key = self.relays.insert(Relay {
                pipe,
                stream,
                lines: LineCutter::prefixed(self.line_limit, prefix),
                stalled: false,
            });
            let registered = self.relays.get_mut(key).map(|relay| {
                registry.register(
                    &mut relay.pipe,
                    token::token(Source::Output(key)),
                    Interest::READABLE,
                )
            });
            if let Some(Err(err)) = registered {
                log::warn!("cannot relay a worker's output: {err}");
                self.relays.remove(key);
            } else if stream == Stream::Err {
                stderr_key = Some(key);
            }
        }
        self.stats.relays = self.relays.len();
        stderr_key
    }

    /// Keeps the last `bytes` read from relay `key` from now on, until [`Console::take_tail`].
    pub(super) fn keep_tail(&mut self, key: Key, bytes: usize) {
        self.tails.push((key, Vec::new(), bytes.max(1)));
    }

    /// Stops keeping relay `key`'s tail and drops what was kept.
    pub(super) fn forget_tail(&mut self, key: Key) {
        self.tails.retain(|(k, _, _)| *k != key);
    }

    /// Reads relay `key` now (a child that exited has written all it will), then hands over
    /// and forgets its tail: at most the size given to [`Console::keep_tail`].
    pub(super) fn take_tail(&mut self, registry: &Registry, key: Key) -> Vec<u8> {
        self.on_readable(registry, key);
        match self.tails.iter().position(|(k, _, _)| *k == key) {
            Some(index) => self.tails.swap_remove(index).1,
            None => Vec::new(),
        }
    }

    /// A relayed pipe is readable (or closed): moves its lines to its sink while the sink has
    /// room.
    pub(super) fn on_readable(&mut self, registry: &Registry, key: Key) {
        let Some(relay) = self.relays.get_mut(key) else {
            return;
        };
        relay.stalled = false;
        if self.scratch.len() < READ_CHUNK {
            self.scratch.resize(READ_CHUNK, 0);
        }
        let sink = &mut self.sinks[relay.stream.index()];
        let ended = loop {
            if sink.waiting() >= self.buffer_size {
                relay.stalled = true;
                break false;
            }
            match relay.pipe.read(&mut self.scratch) {
                Ok(0) => break true,
                Ok(n) => {
                    self.stats.cut_lines += relay.lines.push(&self.scratch[..n], &mut sink.pending);
                    if let Some((_, tail, limit)) = self.tails.iter_mut().find(|t| t.0 == key) {
                        tail.extend_from_slice(&self.scratch[..n]);
                        let excess = tail.len().saturating_sub(*limit);
                        tail.drain(..excess);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if ended {
            relay.lines.finish(&mut sink.pending);
            let _ = registry.deregister(&mut relay.pipe);
            self.relays.remove(key);
            self.stats.relays = self.relays.len();
        }
    }

    /// The runtime's own output (whole lines). Dropped, and counted, when the console already
    /// holds `logger.consoleBufferSize`.
    /// Returns whether the bytes were taken.
    pub(super) fn write_own(&mut self, stream: Stream, bytes: &[u8]) -> bool {
        let sink = &mut self.sinks[stream.index()];
        if sink.broken || sink.waiting() + bytes.len() > self.buffer_size {
            self.stats.dropped_bytes += bytes.len() as u64;
            return false;
        }
        sink.pending.extend_from_slice(bytes);
        true
    }

    /// Writes what the console takes now and reads the pipes that were waiting for room.
    /// Returns whether output still waits (to be tried again shortly).
    pub(super) fn flush(&mut self, registry: &Registry) -> bool {
        loop {
            for sink in &mut self.sinks {
                self.stats.dropped_bytes += sink.flush();
            }
            // Called every loop iteration: nothing to collect (or allocate) unless a pipe waits.
            if !self.relays.iter().any(|r| r.stalled) {
                break;
            }
            let resumable: Vec<Key> = self
                .relays
                .keys()
                .into_iter()
                .filter(|&k| {
                    self.relays.get(k).is_some_and(|r| {
                        r.stalled && self.sinks[r.stream.index()].waiting() * 2 < self.buffer_size
                    })
                })
                .collect();
            if resumable.is_empty() {
                break;
            }
            for key in resumable {
                self.on_readable(registry, key);
            }
        }
        self.sinks.iter().any(|s| s.waiting() > 0)
    }

    /// The counters.
    pub(super) fn stats(&self) -> ConsoleStats {
        ConsoleStats {
            waiting_bytes: self.sinks.iter().map(Sink::waiting).sum(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cut(limit: usize, pieces: &[&[u8]]) -> (Vec<u8>, u64, Vec<u8>) {
        let mut lines = LineCutter::new(limit);
        let mut out = Vec::new();
        let mut cuts = 0;
        for piece in pieces {
            cuts += lines.push(piece, &mut out);
        }
        let before_end = out.clone();
        lines.finish(&mut out);
        (before_end, cuts, out)
    }

    #[test]
    fn lines_are_released_only_when_complete_whatever_the_pieces() {
        let whole = b"first line\nsecond\n\nthird without end";
        for split in 0..whole.len() {
            let (before_end, cuts, all) = cut(64, &[&whole[..split], &whole[split..]]);
            assert_eq!(before_end, b"first line\nsecond\n\n", "split at {split}");
            assert_eq!(cuts, 0);
            assert_eq!(all, b"first line\nsecond\n\nthird without end\n");
        }
        let singles: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(cut(64, &singles).0, b"first line\nsecond\n\n");
    }

    #[test]
    fn a_prefix_starts_every_line_whatever_the_pieces_and_cuts() {
        let whole = b"one\ntwo\nthree";
        for split in 0..whole.len() {
            let mut lines = LineCutter::prefixed(64, "[gateway] ");
            let mut out = Vec::new();
            lines.push(&whole[..split], &mut out);
            lines.push(&whole[split..], &mut out);
            assert_eq!(out, b"[gateway] one\n[gateway] two\n", "split at {split}");
            lines.finish(&mut out);
            assert_eq!(out, b"[gateway] one\n[gateway] two\n[gateway] three\n");
        }
        let mut lines = LineCutter::prefixed(4, "> ");
        let mut out = Vec::new();
        assert_eq!(lines.push(b"abcdefg\n", &mut out), 1);
        assert_eq!(out, b"> abcd\n> efg\n");
    }

    /// A child relayed with `prefix` by a console over pipes, its stderr tail of `tail_bytes`
    /// kept.
    struct Relayed {
        console: Console,
        poll: mio::Poll,
        key: Key,
        stdout: mio::unix::pipe::Sender,
        stderr: mio::unix::pipe::Sender,
        _readers: (std::fs::File, std::fs::File),
    }

    fn relayed(prefix: &str, tail_bytes: usize) -> Relayed {
        let (out_reader, out) = pipe();
        let (err_reader, err) = pipe();
        let mut console = Console::over(out, err, 64, 1 << 16);
        let poll = mio::Poll::new().expect("poll");
        let (stdout_writer, stdout) = mio::unix::pipe::new().expect("pipe");
        let (stderr_writer, stderr) = mio::unix::pipe::new().expect("pipe");
        let key = console
            .attach_labelled(poll.registry(), OutputPipes { stdout, stderr }, prefix)
            .expect("stderr relayed");
        console.keep_tail(key, tail_bytes);
        Relayed {
            console,
            poll,
            key,
            stdout: stdout_writer,
            stderr: stderr_writer,
            _readers: (out_reader, err_reader),
        }
    }

    #[test]
    fn a_kept_tail_holds_the_last_bytes_and_outlives_its_pipe() {
        let Relayed {
            mut console,
            poll,
            key,
            stdout: mut stdout_writer,
            stderr: mut stderr_writer,
            _readers,
        } = relayed("[g] ", 8);
        stderr_writer.write_all(b"first\nsecond\n").expect("write");
        stdout_writer
            .write_all(b"not in the tail\n")
            .expect("write");
        drop(stderr_writer);
        drop(stdout_writer);
        // Taking the tail reads what the pipe still holds, to its end.
        assert_eq!(console.take_tail(poll.registry(), key), b"\nsecond\n");
        assert_eq!(console.take_tail(poll.registry(), key), b"", "taken once");
        assert_eq!(console.sinks[1].pending, b"[g] first\n[g] second\n");
    }

    #[test]
    fn a_forgotten_tail_is_dropped_and_its_relay_still_relays() {
        let Relayed {
            mut console,
            poll,
            key,
            stderr: mut stderr_writer,
            _readers,
            ..
        } = relayed("", 64);
        stderr_writer.write_all(b"starting\n").expect("write");
        console.on_readable(poll.registry(), key);
        console.forget_tail(key);
        assert!(console.tails.is_empty(), "nothing kept once forgotten");
        stderr_writer.write_all(b"ready\n").expect("write");
        assert_eq!(console.take_tail(poll.registry(), key), b"");
        assert_eq!(console.sinks[1].pending, b"starting\nready\n");
    }

    #[test]
    fn an_over_long_line_is_cut_at_the_limit() {
        let (before_end, cuts, all) = cut(4, &[b"abcdefghij\nxy", b"z\n"]);
        assert_eq!(before_end, b"abcd\nefgh\nij\nxyz\n");
        assert_eq!(cuts, 2);
        assert_eq!(all, before_end);
        // Exactly the limit is not cut.
        assert_eq!(cut(4, &[b"abcd\n"]).1, 0);
        assert_eq!(cut(4, &[b"ab", b"cd", b"\n"]).0, b"abcd\n");
    }

    /// A pipe: (read end as a File, write end as the sink fd).
    fn pipe() -> (std::fs::File, OwnedFd) {
        let (sender, receiver) = mio::unix::pipe::new().expect("pipe");
        receiver.set_nonblocking(false).expect("blocking");
        let read = std::fs::File::from(OwnedFd::from(receiver));
        (read, OwnedFd::from(sender))
    }

    fn fill_pipe(fd: &OwnedFd) -> usize {
        let mut filled = 0;
        while let Ok(Some(n)) = sys::write_if_ready(fd.as_fd(), &[b'.'; 4096]) {
            filled += n;
        }
        filled
    }

    /// Whether `fd` is in non-blocking mode, from /proc/self/fdinfo (flags in octal).
    fn is_nonblocking(fd: &impl AsFd) -> bool {
        use std::os::fd::AsRawFd;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
            .expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
            .expect("flags");
        flags & i64::from(libc::O_NONBLOCK) != 0
    }

    #[test]
    fn a_pipe_or_a_file_is_written_without_polling_and_a_shared_pipe_stays_blocking() {
        let (mut reader, writer) = std::io::pipe().expect("pipe");
        let shared = OwnedFd::from(writer);
        let parents = shared.try_clone().expect("dup");
        let mut sink = Sink::new(shared);
        assert!(sink.direct, "a pipe gets a descriptor of its own");
        assert!(is_nonblocking(&sink.fd));
        assert!(
            !is_nonblocking(&parents),
            "the shared one is left as it was"
        );
        sink.pending.extend_from_slice(b"line\n");
        assert_eq!(sink.flush(), 0);
        let mut got = [0u8; 5];
        reader.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"line\n");
        // A regular file is always writable: written directly too.
        let path = std::env::temp_dir().join(format!("noslate-console-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("a file");
        let mut sink = Sink::new(OwnedFd::from(file));
        assert!(sink.direct);
        sink.pending.extend_from_slice(b"to a file\n");
        assert_eq!(sink.flush(), 0);
        assert_eq!(std::fs::read(&path).expect("read"), b"to a file\n");
        let _ = std::fs::remove_file(&path);
        // Anything else (here a character device) keeps the poll before each write.
        let null = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .expect("null");
        assert!(!Sink::new(OwnedFd::from(null)).direct);
    }

    #[test]
    fn a_full_console_never_blocks_and_drops_the_runtimes_own_lines_beyond_its_buffer() {
        let (mut out_reader, out) = pipe();
        let (_err_reader, err) = pipe();
        let filled = fill_pipe(&out);
        assert!(filled > 0);
        let mut console = Console::over(out, err, 64, 100);
        let poll = mio::Poll::new().expect("poll");
        let _ = console.write_own(Stream::Out, b"0123456789\n");
        assert!(console.flush(poll.registry()), "waits: the pipe is full");
        for _ in 0..20 {
            let _ = console.write_own(Stream::Out, b"0123456789\n");
        }
        assert!(console.stats().dropped_bytes > 0);
        assert!(console.sinks[0].waiting() <= 100);
        // The reader catches up: what was kept arrives whole.
        let mut drained = vec![0; filled];
        out_reader.read_exact(&mut drained).expect("drain");
        assert!(!console.flush(poll.registry()), "all written");
        let kept = console.sinks[0].pending.len();
        assert_eq!(kept, 0);
    }

    #[test]
    fn relayed_lines_of_two_children_never_mix_and_a_full_console_stalls_the_pipes() {
        let (mut out_reader, out) = pipe();
        let (_err_reader, err) = pipe();
        let mut console = Console::over(out, err, 1 << 20, 64 * 1024);
        let poll = mio::Poll::new().expect("poll");
        let mut writers = Vec::new();
        for _ in 0..2 {
            let (stdout_w, stdout_r) = mio::unix::pipe::new().expect("pipe");
            let (_stderr_w, stderr_r) = mio::unix::pipe::new().expect("pipe");
            console.attach(
                poll.registry(),
                OutputPipes {
                    stdout: stdout_r,
                    stderr: stderr_r,
                },
            );
            writers.push(stdout_w);
        }
        // Each child writes 20 lines of 10 KiB, in pieces that interleave with the other's.
        let line = |c: u8| {
            let mut l = vec![c; 10 * 1024];
            l.push(b'\n');
            l
        };
        let keys = console.relays.keys();
        let mut received = Vec::new();
        for _ in 0..20 {
            for (i, w) in writers.iter_mut().enumerate() {
                let l = line(b'a' + i as u8);
                let (first, second) = l.split_at(3000);
                w.write_all(first).expect("write");
                for &k in &keys {
                    console.on_readable(poll.registry(), k);
                }
                w.write_all(second).expect("write");
            }
            for &k in &keys {
                console.on_readable(poll.registry(), k);
            }
            while console.flush(poll.registry()) {
                let mut chunk = vec![0; 64 * 1024];
                let n = out_reader.read(&mut chunk).expect("read");
                received.extend_from_slice(&chunk[..n]);
            }
        }
        drop(writers);
        for &k in &keys {
            console.on_readable(poll.registry(), k);
        }
        console.flush(poll.registry());
        // Close the console's end and read the rest.
        drop(console);
        out_reader.read_to_end(&mut received).expect("read");
        let lines: Vec<&[u8]> = received
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 40);
        for l in lines {
            assert_eq!(l.len(), 10 * 1024);
            assert!(
                l.iter().all(|&b| b == l[0]),
                "a line mixes two children's output"
            );
        }
    }

    #[test]
    fn a_pipe_is_left_unread_while_its_sink_is_full_and_read_again_after() {
        let (mut out_reader, out) = pipe();
        let (_err_reader, err) = pipe();
        let filled = fill_pipe(&out);
        let mut console = Console::over(out, err, 1024, 8 * 1024);
        let poll = mio::Poll::new().expect("poll");
        let (mut w, r) = mio::unix::pipe::new().expect("pipe");
        let (stderr_writer, er) = mio::unix::pipe::new().expect("pipe");
        drop(stderr_writer);
        console.attach(
            poll.registry(),
            OutputPipes {
                stdout: r,
                stderr: er,
            },
        );
        let key = console.relays.keys()[0];
        let mut sent = 0;
        let line = [b'x'; 99];
        while sent < 32 * 1024 {
            w.write_all(&line).expect("write");
            w.write_all(b"\n").expect("write");
            sent += 100;
        }
        console.on_readable(poll.registry(), key);
        assert!(console.relays.get(key).is_some_and(|r| r.stalled));
        assert!(console.sinks[0].waiting() < 8 * 1024 + READ_CHUNK);
        assert!(console.flush(poll.registry()));
        // The console's reader catches up: the stalled pipe is read again, to the end.
        drop(w);
        let mut received = Vec::new();
        let mut drained = vec![0; filled];
        out_reader.read_exact(&mut drained).expect("drain");
        while console.flush(poll.registry()) || !console.relays.is_empty() {
            for k in console.relays.keys() {
                console.on_readable(poll.registry(), k);
            }
            let mut chunk = vec![0; 64 * 1024];
            let n = out_reader.read(&mut chunk).expect("read");
            received.extend_from_slice(&chunk[..n]);
        }
        drop(console);
        out_reader.read_to_end(&mut received).expect("read");
        assert_eq!(received.len(), sent);
    }
}
