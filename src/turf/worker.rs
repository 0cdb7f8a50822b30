//! The runtime's record of one worker process: its state, its pipes and their buffers, and the
//! invocation streams open on it.
//!
//! ```text
//!  Starting ──READY──▶ Initializing ──INIT_DONE──▶ Ready ──drain──▶ Draining ──idle──▶ Stopping
//!     │                    │                         │                                 │
//!     └──── crash / INIT_ERROR / init timeout ───────┴──── crash ──────────────────────┴──▶ Exited
//! ```
//!
//! States only move forward. A worker in `Exited` is kept until its pid has been reaped.

use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::reactor::buffer::ReadBuf;
use crate::reactor::timer::TimerKey;
use crate::turf::accounting::ExitReason;
use crate::turf::body_pipe::BodyPipe;
use crate::turf::child::ChildProc;
use crate::wire;
use mio::unix::pipe::{Receiver, Sender};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkerState {
    /// Forked; waiting for READY.
    Starting,
    /// INIT sent; waiting for INIT_DONE.
    Initializing,
    /// Serving invocations.
    Ready,
    /// Taking no new invocations; stopped once its streams are done.
    Draining,
    /// Its input is closed and it has been sent SIGTERM; SIGKILL follows after the grace period.
    Stopping,
    /// The process is gone (pipe closed or reaped).
    Exited,
}

impl WorkerState {
    /// Every state, in order.
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Starting,
        WorkerState::Initializing,
        WorkerState::Ready,
        WorkerState::Draining,
        WorkerState::Stopping,
        WorkerState::Exited,
    ];

    /// Lowercase name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Initializing => "initializing",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Stopping => "stopping",
            WorkerState::Exited => "exited",
        }
    }

    /// Whether the worker is still coming up.
    pub fn is_starting(self) -> bool {
        matches!(self, WorkerState::Starting | WorkerState::Initializing)
    }
}

/// One invocation open on this worker.
#[derive(Debug)]
pub struct Stream {
    /// The request it serves; `None` once cancelled (the worker still owes its terminal frame).
    pub client: Option<ConnRef>,
    /// Request-body bytes the runtime may still send before the worker grants more.
    pub request_credit: u32,
    /// Armed after CANCEL: the worker is killed if the terminal frame has not come by then.
    pub cancel_timer: Option<TimerKey>,
}

/// The most request-body bytes queued for one worker beyond what its pipe took: two protocol
/// pipes' worth. Frames already queued (heads, credit, cancels) may pass it; body bytes wait.
pub const WRITE_QUEUE_LIMIT: usize = 2 * crate::turf::spawn::PROTOCOL_CHANNEL_BYTES;

/// What a read from the worker's pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    /// The pipe is drained for now.
    Drained,
    /// The buffer filled up first: decode, then read again (more is waiting).
    More,
    /// The worker closed its end: it is exiting or has died.
    Closed,
}

/// The runtime's record of one worker.
#[derive(Debug)]
pub struct Worker {
    /// Its process: name, pid, cgroup, log directory, stop sequence.
    pub process: ChildProc,
    /// Index of its function.
    pub function: FunctionId,
    /// Life-cycle state.
    pub state: WorkerState,
    /// Runtime → worker pipe; `None` once closed to ask the worker to exit.
    pub to_worker: Option<Sender>,
    /// Worker → runtime pipe; `None` once it reached EOF.
    pub from_worker: Option<Receiver>,
    /// Bytes read from the worker and not yet decoded.
    pub rbuf: ReadBuf,
    /// Request-body credit each of its streams starts with: what its INIT_DONE announced.
    pub request_window: u32,
    /// Frames waiting to be written to the worker, from `wstart`.
    pub wbuf: Vec<u8>,
    /// Start of unwritten bytes in `wbuf`.
    pub wstart: usize,
    /// Open invocation streams by id.
    pub streams: HashMap<u32, Stream>,
    next_stream: u32,
    /// When it last finished an invocation (or became ready), for idle accounting.
    pub last_active: Instant,
    /// When it became ready, for the cold start of the requests that waited for it.
    pub ready_at: Option<Instant>,
    /// The deadline of the current state, if it has one: the init timeout while starting, the
    /// drain timeout (`dataPlane.closeTrafficTimeout`) while draining. (Stopping's grace period
    /// is the process's own `kill_timer`.)
    pub state_timer: Option<TimerKey>,
    /// The initializer's bound from FC's `x-fc-initialization-timeout`, when it was shorter
    /// than the profile's and so became the init deadline.
    pub platform_init_bound_ms: Option<u64>,
    /// Invocations completed.
    pub served: u64,
    /// Why it is being stopped or why it died, for the errors of its streams.
    pub exit_reason: Option<String>,
    /// The accounting reason the runtime imposed by stopping or killing it, if it did.
    pub imposed: Option<ExitReason>,
    /// The request that was in flight when it left service, for the accounting line.
    pub request_at_exit: Option<String>,
    /// Its function's `resourceLimit.memory` when it started, named when the kernel kills it
    /// for exceeding it.
    pub memory_limit: u64,
    /// Which mechanism enforces each limit (shown by `noslate ps`).
    pub enforcement: serde_json::Value,
    /// The function's generation (code and resources) it was started with.
    pub generation: u64,
    /// For disposable functions: whether it has taken its one request.
    pub life: crate::sched::dispatch::DisposableLife,
    /// Limits the runtime polls itself because no cgroup enforces them.
    pub polled: crate::turf::poll::PolledLimits,
    /// Forked by its function's warm seed (`turf::seed`) rather than cold-started. Its `pid` is
    /// 0 until the seed reports it.
    pub forked: bool,
    /// READY came before the seed reported the pid: INIT waits until the worker is in its
    /// cgroup.
    pub ready_deferred: bool,
    /// Taken from a spare process (`turf::spare`).
    pub from_spare: bool,
    /// Its READY asked for COMPACT_HEAD frames instead of REQUEST_HEAD.
    pub compact_head: bool,
    /// For a spare: the environment and cwd its INIT carries, sent once.
    pub spare_init: Option<SpareInit>,
    /// Its function's inspect worker (`crate::inspector`): started with the debugger on,
    /// takes invocations only while the function's inspector is on.
    pub inspect: bool,
    /// Where its debugger listens on 127.0.0.1, from its READY (inspect workers only).
    pub inspector: Option<crate::inspector::Endpoint>,
    /// Its failed start was already recorded for its function (INIT_ERROR, init timeout), so
    /// that its exit does not count as a second one.
    pub start_failure_recorded: bool,
    /// Its protocol channel closed while it was starting, and the runtime waits a moment for
    /// its exit status before it reports the failed start.
    pub awaiting_exit: bool,
    /// Request-body bytes spliced from a client's socket on their way to its channel, made on
    /// the first splice.
    body_pipe: Option<BodyPipe>,
    /// Where in `wbuf` the bytes the body pipe holds belong: right after their frame header.
    spliced_at: usize,
    /// A body found the pipe busy and waits for it to empty.
    splice_waiters: bool,
}

/// What a spare process learns at INIT about the function that took it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpareInit {
    /// Its complete environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: std::path::PathBuf,
}

/// Read chunk size for worker pipes: two of the largest body frames, so that a stream of them
/// is read without growing the buffer (a 64 KiB one grew, and was released again, for every
/// frame of a large body).
const READ_CHUNK: usize = 2 * (wire::HEADER_LEN + wire::MAX_BODY_CHUNK);

impl Worker {
    /// A freshly forked worker.
    pub fn new(id: String, function: FunctionId, pid: i32, to: Sender, from: Receiver) -> Self {
        let now = Instant::now();
        Worker {
            process: ChildProc::new(id, pid),
            function,
            state: WorkerState::Starting,
            to_worker: Some(to),
            from_worker: Some(from),
            rbuf: ReadBuf::new(READ_CHUNK, wire::HEADER_LEN + wire::MAX_PAYLOAD),
            request_window: wire::INITIAL_WINDOW,
            wbuf: Vec::new(),
            wstart: 0,
            streams: HashMap::new(),
            next_stream: 0,
            last_active: now,
            ready_at: None,
            state_timer: None,
            platform_init_bound_ms: None,
            served: 0,
            exit_reason: None,
            imposed: None,
            request_at_exit: None,
            memory_limit: 0,
            enforcement: serde_json::Value::Null,
            polled: crate::turf::poll::PolledLimits::default(),
            life: crate::sched::dispatch::DisposableLife::default(),
            generation: 0,
            forked: false,
            ready_deferred: false,
            from_spare: false,
            compact_head: false,
            start_failure_recorded: false,
            awaiting_exit: false,
            spare_init: None,
            inspect: false,
            inspector: None,
            body_pipe: None,
            spliced_at: 0,
            splice_waiters: false,
        }
    }

    /// How it came to be: cold, forked from a seed, or a spare taken over.
    pub fn start_kind(&self) -> crate::metrics::StartKind {
        if self.forked {
            crate::metrics::StartKind::Forked
        } else if self.from_spare {
            crate::metrics::StartKind::Spare
        } else {
            crate::metrics::StartKind::Cold
        }
    }

    /// Moves to `next`; states never move backwards.
    pub fn advance(&mut self, next: WorkerState) {
        debug_assert!(
            next >= self.state,
            "{} -> {}",
            self.state.as_str(),
            next.as_str()
        );
        if next > self.state {
            log::debug!(
                "[turf w={} pid={}] {} -> {}",
                self.process.id,
                self.process.pid,
                self.state.as_str(),
                next.as_str()
            );
            self.state = next;
        }
    }

    /// Advances to `Ready` (from an earlier state) at `at`, the loop's time, so that it
    /// compares with the times of the requests that waited for it.
    pub fn become_ready(&mut self, at: Instant) {
        if self.state < WorkerState::Ready {
            self.advance(WorkerState::Ready);
            self.ready_at = Some(at);
        }
    }

    /// Invocations in flight, including cancelled ones the worker has not yet closed.
    pub fn active(&self) -> usize {
        self.streams.len()
    }

    /// Opens a stream for `client` and returns its id.
    pub fn open_stream(&mut self, client: ConnRef) -> u32 {
        loop {
            self.next_stream = self.next_stream.wrapping_add(1);
            if self.next_stream != 0 && !self.streams.contains_key(&self.next_stream) {
                break;
            }
        }
        self.streams.insert(
            self.next_stream,
            Stream {
                client: Some(client),
                request_credit: self.request_window,
                cancel_timer: None,
            },
        );
        self.next_stream
    }

    /// Writes queued frames until done or the channel is full. Returns whether everything was
    /// written. A worker whose input channel is closed silently drops output.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(channel) = self.to_worker.as_mut() else {
            self.wbuf.clear();
            self.wstart = 0;
            self.body_pipe = None;
            return Ok(true);
        };
        loop {
            let pipe = self.body_pipe.as_mut().filter(|p| p.held() > 0);
            // Spliced bytes go right after their frame header, before anything queued later.
            let end = if pipe.is_some() {
                self.spliced_at
            } else {
                self.wbuf.len()
            };
            while self.wstart < end {
                match channel.write(&self.wbuf[self.wstart..end]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.wstart += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        self.drop_written();
                        return Ok(false);
                    }
                    Err(err) => return Err(err),
                }
            }
            match pipe {
                None => break,
                Some(pipe) => {
                    if !pipe.give_to(channel.as_fd())? {
                        self.drop_written();
                        return Ok(false);
                    }
                }
            }
        }
        self.wbuf.clear();
        self.wstart = 0;
        Ok(true)
    }

    /// A worker that reads slowly while more is queued behind: drops what it has taken once
    /// that is at least half, so the buffer holds the unsent bytes and not everything written
    /// before them (and never moves more bytes than were sent).
    fn drop_written(&mut self) {
        if self.wstart * 2 >= self.wbuf.len() {
            self.wbuf.drain(..self.wstart);
            self.spliced_at = self.spliced_at.saturating_sub(self.wstart);
            self.wstart = 0;
        }
    }

    /// Bytes of frames queued for the worker and not yet written to its channel, spliced
    /// payloads included.
    pub fn queued(&self) -> usize {
        self.wbuf.len() - self.wstart + self.spliced_held()
    }

    /// Spliced request-body bytes its body pipe holds for the channel.
    pub fn spliced_held(&self) -> usize {
        self.body_pipe.as_ref().map_or(0, BodyPipe::held)
    }

    /// Whether a request body can be spliced to it now: its channel is open and its body
    /// pipe is empty (it carries one frame's payload at a time). When the pipe is busy, the
    /// asker is noted as waiting (`take_splice_waiters`).
    pub fn can_splice(&mut self) -> bool {
        let free = self.spliced_held() == 0;
        self.splice_waiters |= !free;
        self.to_worker.is_some() && free
    }

    /// Whether a body waited for the body pipe since the last call, now that it is empty:
    /// the connections of its streams are then to be driven again.
    pub fn take_splice_waiters(&mut self) -> bool {
        let waited = self.splice_waiters && self.spliced_held() == 0;
        if waited {
            self.splice_waiters = false;
        }
        waited
    }

    /// Moves up to `max` bytes of `stream`'s request body from `source` (a client's socket)
    /// into the body pipe, and queues the header of the REQUEST_BODY frame they are the
    /// payload of; the frame is END when it carries the last of the `left` bytes the body still
    /// had. Returns the bytes moved: 0 when `source` ended.
    pub fn splice_request_body(
        &mut self,
        source: BorrowedFd<'_>,
        stream: u32,
        max: usize,
        left: u64,
    ) -> io::Result<usize> {
        let pipe = match self.body_pipe.as_mut() {
            Some(pipe) => pipe,
            None => self.body_pipe.insert(BodyPipe::new()?),
        };
        let max = max
            .min(wire::MAX_PAYLOAD)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = pipe.take_from(source, max)?;
        if n > 0 {
            wire::put_request_body_header(&mut self.wbuf, stream, n as u64 == left, n);
            self.spliced_at = self.wbuf.len();
        }
        Ok(n)
    }

    /// Reads what the pipe has into `rbuf`, up to the buffer's size: one bite. The buffer grows
    /// only to hold a frame larger than it.
    pub fn fill(&mut self) -> io::Result<ReadResult> {
        let Some(pipe) = self.from_worker.as_mut() else {
            return Ok(ReadResult::Closed);
        };
        let fill = self.rbuf.fill_bounded_from(pipe);
        Ok(if fill.closed {
            ReadResult::Closed
        } else if fill.drained {
            ReadResult::Drained
        } else {
            ReadResult::More
        })
    }

    /// Releases what a large frame needed beyond the usual size once everything is consumed.
    /// The usual size stays: allocating it again for every request would cost more than it.
    pub fn compact(&mut self) {
        self.rbuf.shrink_if_empty();
        if self.wbuf.is_empty() && self.wbuf.capacity() > READ_CHUNK * 4 {
            self.wbuf.shrink_to(READ_CHUNK);
        }
    }
}
