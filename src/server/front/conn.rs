//! A client connection: its socket, buffers and the request it is serving.
//!
//! ```text
//!            ┌───────────────────────────── keep-alive ──────────────────────────────┐
//!            ▼                                                                       │
//!       ReadingHead ──head──▶ Request{ sink: Hold ──dispatch──▶ Worker ──▶ Discard } ─┤
//!            │                      │ local answer (hooks, errors) ─────────────────▶│
//!            └── EOF / error / Connection: close / protocol error ──▶ Closing ◀──────┘
//! ```
//!
//! A connection serves one request at a time; pipelined requests wait in the read buffer and are
//! parsed once the current one is complete (its response sent and its body consumed), so
//! responses always go out in order.

use crate::fc::{InvokeKind, Phase};
use crate::http::chunked::{Chunk, ChunkedDecoder};
use crate::http::error::HttpError;
use crate::http::request::RequestHead;
use crate::http::response::Framing;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::reactor::buffer::{ReadBuf, SpareBuffers};
use crate::reactor::timer::TimerKey;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

/// Write-buffer capacity a connection whose client stalls may keep above its unsent bytes.
const STALLED_WRITE_BUFFER: usize = 16 * 1024;
/// First size of a connection's read buffer. It grows (up to the largest allowed head) only
/// when one head does not fit, and is released while the connection idles, so that an idle
/// keep-alive connection holds no buffer at all.
const INITIAL_READ_BUFFER: usize = 4 * 1024;

/// A connection's socket: FC's TCP port, or the admin Unix socket. Both speak HTTP/1.1 through
/// the same code; only routing differs.
#[derive(Debug)]
pub enum Socket {
    /// A connection on the FC port.
    Tcp(TcpStream),
    /// A connection on the admin socket.
    Unix(UnixStream),
}

impl Socket {
    /// Whether this is an admin connection.
    pub fn is_admin(&self) -> bool {
        matches!(self, Socket::Unix(_))
    }

    /// Sends a FIN: the client reads everything written so far, then end of stream.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Socket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.register(registry, token, interests),
            Socket::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.reregister(registry, token, interests),
            Socket::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.deregister(registry),
            Socket::Unix(s) => s.deregister(registry),
        }
    }
}

/// Largest body an admin request may carry (a profile set is a few KiB; this is generous).
pub const MAX_COLLECTED_BODY: usize = 16 << 20;

/// Where request-body bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Not dispatched yet: bytes stay in the read buffer (which is bounded), so a queued request
    /// exerts backpressure on its client.
    Hold,
    /// Forwarded to a worker stream, within its credit.
    Worker {
        /// The worker.
        worker: WorkerKey,
        /// The stream on it.
        stream: u32,
    },
    /// Read and dropped: the answer is already decided, but the connection must stay in sync.
    Discard,
    /// Collected into [`Request::collected`] (admin requests with a JSON body), up to
    /// [`MAX_COLLECTED_BODY`].
    Collect,
}

/// How much of the request body is left.
#[derive(Debug, Clone)]
pub enum BodyLeft {
    /// Nothing (no body, or fully consumed).
    Done,
    /// This many bytes of a Content-Length body.
    Length(u64),
    /// A chunked body being decoded.
    Chunked(ChunkedDecoder),
}

impl BodyLeft {
    /// Whether the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyLeft::Done)
    }

    /// Takes the next body bytes from `input`, at most `limit` of them (a worker's credit, a
    /// frame's size): the one place that knows Content-Length and chunked framing, whatever
    /// the bytes are for (a worker, an admin request, or nothing). The caller consumes `used`
    /// input bytes; a step that ends the body leaves `self` done.
    pub fn step<'a>(&mut self, input: &'a [u8], limit: usize) -> BodyStep<'a> {
        let input = input.get(..limit.min(input.len())).unwrap_or_default();
        let step = match self {
            BodyLeft::Done => BodyStep::Data {
                used: 0,
                data: &[],
                end: true,
            },
            BodyLeft::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= n as u64;
                BodyStep::Data {
                    used: n,
                    data: input.get(..n).unwrap_or_default(),
                    end: *left == 0,
                }
            }
            // Truncating the decoder's input is safe: it keeps its line state across calls,
            // and data never exceeds the input it is given.
            BodyLeft::Chunked(decoder) => match decoder.decode(input) {
                Ok((used, Chunk::Data(data))) => BodyStep::Data {
                    used,
                    data,
                    end: false,
                },
                Ok((used, Chunk::NeedMore)) => BodyStep::NeedMore { used },
                Ok((used, Chunk::Done)) => BodyStep::Data {
                    used,
                    data: &[],
                    end: true,
                },
                Err(err) => BodyStep::Refused(err),
            },
        };
        if matches!(
            step,
            BodyStep::Data { end: true, .. } | BodyStep::Refused(_)
        ) {
            *self = BodyLeft::Done;
        }
        step
    }
}

/// One step of [`BodyLeft::step`].
#[derive(Debug)]
pub enum BodyStep<'a> {
    /// `used` input bytes gave `data` (possibly empty); `end` when the body is complete.
    Data {
        /// Input bytes to consume.
        used: usize,
        /// Body bytes.
        data: &'a [u8],
        /// The body is complete.
        end: bool,
    },
    /// No body bytes until more input arrives; `used` framing bytes were taken.
    NeedMore {
        /// Input bytes to consume.
        used: usize,
    },
    /// The rest of the body is refused: broken framing, or over `http.maxRequestBodySize`. The
    /// connection cannot be resynchronised.
    Refused(HttpError),
}

/// The response's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resp {
    /// Nothing sent yet: an error can still become a proper response.
    NotStarted,
    /// The head is out; body bytes follow with this framing.
    Streaming {
        /// How the body is delimited.
        framing: Framing,
        /// Bytes still owed for a Content-Length body.
        remaining: u64,
    },
    /// Fully written to the buffer.
    Done,
}

/// The request a connection is serving.
#[derive(Debug)]
pub struct Request {
    /// Sequence number on this connection (stale timers and queue entries compare it).
    pub seq: u64,
    /// FC request id.
    pub id: String,
    /// The FC phase whose End line is printed when the response is complete (none for the
    /// runtime's own routes and requests rejected before routing).
    pub phase: Option<Phase>,
    /// FC's End line was queued: it goes out once, when the response's last byte is buffered
    /// (so before that byte reaches the client), or when the request ends without one.
    pub end_logged: bool,
    /// The target function, for invocations.
    pub function: Option<FunctionId>,
    /// Event or HTTP.
    pub kind: InvokeKind,
    /// The parsed head, kept until it is sent to a worker.
    pub head: Option<RequestHead>,
    /// A HEAD request: responses carry no body.
    pub is_head: bool,
    /// The client's HTTP minor version.
    pub minor_version: u8,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// Whether `100 Continue` was sent.
    pub continue_sent: bool,
    /// Remaining request body.
    pub body: BodyLeft,
    /// Where body bytes go.
    pub sink: Sink,
    /// Its body goes to its worker by splice(2), from the socket through the worker's body
    /// pipe, rather than through the read buffer: the bytes already buffered go first, and the
    /// socket is then read by the splice alone.
    pub splice_body: bool,
    /// Response progress.
    pub resp: Resp,
    /// The invocation deadline's timer.
    pub deadline_timer: Option<TimerKey>,
    /// The invocation's budget in milliseconds.
    pub timeout_ms: u64,
    /// The absolute deadline.
    pub deadline: Instant,
    /// The deadline covers the wait for the response head only (an admin invocation that set
    /// its own timeout), so it is lifted when the head is written.
    pub head_deadline: bool,
    /// Noslate's baggage, which an admin invocation may carry to the function.
    pub baggage: Option<Vec<(String, String)>>,
    /// Counted in the server's in-flight invocations.
    pub counted: bool,
    /// The body, for [`Sink::Collect`].
    pub collected: Vec<u8>,
    /// The admin route whose body is being collected.
    pub admin: Option<crate::admin::Route>,
    /// What its metrics need: when it was admitted, dispatched and answered, how, and how
    /// many body bytes went each way.
    pub timing: RequestTiming,
    /// What its access-log line needs beyond the timing; `None` while the access log is off,
    /// so that nothing is copied for it.
    pub access: Option<AccessFacts>,
}

/// What a request's access-log line needs beyond its timing.
#[derive(Debug)]
pub struct AccessFacts {
    /// When its head was parsed.
    pub received: Instant,
    /// The request method.
    pub method: String,
    /// The request path, without its query.
    pub path: String,
    /// The service that picked its function, if one did.
    pub service: Option<String>,
    /// The worker that took it.
    pub worker: Option<String>,
    /// How long it waited for the start of the worker that took it.
    pub cold_start: Option<std::time::Duration>,
    /// The error it ended with (the function's own type, or the runtime's).
    pub error_type: Option<String>,
}

impl AccessFacts {
    /// Nothing known yet but when the head arrived.
    pub fn new(received: Instant) -> AccessFacts {
        AccessFacts {
            received,
            method: String::new(),
            path: String::new(),
            service: None,
            worker: None,
            cold_start: None,
            error_type: None,
        }
    }

    /// Takes the method and the path (its query cut off) from the head, which is done with:
    /// they move rather than being copied for every request.
    pub fn take_line(&mut self, head: RequestHead) {
        let RequestHead {
            method, mut target, ..
        } = head;
        if let Some(query) = target.find('?') {
            target.truncate(query);
        }
        self.method = method;
        self.path = target;
    }
}

/// A request that ended, as the access log records it.
#[derive(Debug)]
pub struct EndedRequest {
    /// When it ended, in milliseconds since the Unix epoch.
    pub time: u64,
    /// Its request id.
    pub id: String,
    /// The invocation or hook it was.
    pub phase: Phase,
    /// Its function, once it was resolved.
    pub function: Option<FunctionId>,
    /// Its method, path, service, worker and cold start.
    pub facts: AccessFacts,
    /// Its timestamps, outcome and byte counts.
    pub timing: RequestTiming,
    /// When it ended.
    pub ended: Instant,
    /// The client's address (TCP clients).
    pub client: Option<std::net::SocketAddr>,
}

impl Request {
    /// The response is fully buffered: its FC End line is queued now, ahead of the bytes
    /// that finish it, so that FC's log collection sees it within the request.
    pub fn complete_response(&mut self, fc_log: &mut crate::fc::FcLog) {
        self.resp = Resp::Done;
        self.log_end(fc_log);
    }

    /// The invocation ended with an error of `error_type`.
    pub fn note_error(&mut self, error_type: &str) {
        self.timing.error = crate::metrics::ErrorKind::of(error_type);
        if let Some(facts) = self.access.as_mut() {
            facts.error_type = Some(error_type.to_owned());
        }
    }

    /// Queues FC's End line, once.
    pub fn log_end(&mut self, fc_log: &mut crate::fc::FcLog) {
        if let (Some(phase), false) = (self.phase, self.end_logged) {
            self.end_logged = true;
            fc_log.end(phase, &self.id);
        }
    }
}

/// An invocation's timestamps and outcome, for its function's metrics.
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    /// Admitted by the scheduler.
    pub admitted: Option<Instant>,
    /// Handed to a worker.
    pub dispatched: Option<Instant>,
    /// Its response head was written.
    pub answered: Option<Instant>,
    /// The status it was answered with.
    pub status: u16,
    /// The error it ended with, if any.
    pub error: crate::metrics::ErrorKind,
    /// Request body bytes sent to its worker.
    pub bytes_in: u64,
    /// Response body bytes written for its client.
    pub bytes_out: u64,
}

impl Default for RequestTiming {
    fn default() -> Self {
        RequestTiming {
            admitted: None,
            dispatched: None,
            answered: None,
            status: 0,
            error: crate::metrics::ErrorKind::None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl RequestTiming {
    /// What the invocation contributes to its function's metrics, ending now.
    pub fn finished(&self, now: Instant) -> Option<crate::metrics::Finished> {
        let admitted = self.admitted?;
        Some(crate::metrics::Finished {
            status: self.status,
            error: self.error,
            queue_wait: self
                .dispatched
                .map(|at| at.saturating_duration_since(admitted)),
            to_head: self
                .answered
                .map(|at| at.saturating_duration_since(admitted)),
            total: now.saturating_duration_since(admitted),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        })
    }
}

/// A client connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub sock: Socket,
    /// Accepted on the metrics listener: it is answered `GET /metrics` only.
    pub metrics_only: bool,
    /// Bytes read and not yet consumed.
    pub inbuf: ReadBuf,
    /// Bytes to write, from `wstart`.
    pub wbuf: Vec<u8>,
    /// Start of unwritten bytes.
    pub wstart: usize,
    /// The client closed its side (or the socket failed).
    pub peer_closed: bool,
    /// The socket may hold unread bytes: set by a readable event, cleared by a read that drained
    /// it. A drained edge-triggered socket reports new bytes with a new event, so reading it
    /// again before that would only cost a syscall that returns EAGAIN.
    pub maybe_readable: bool,
    /// The poller reported the peer's side closed (or an error) before the bytes were read.
    /// A connection that is not being read (a queued request) learns of a departed client this
    /// way.
    pub hung_up: bool,
    /// The poller reported the connection reset or hung up in both directions: unlike a FIN,
    /// which may be a half-close from a client still reading, nobody is left to answer.
    pub reset: bool,
    /// Whether the peer is one of the runtime's own descendants (a worker calling the FC
    /// port), once someone needed to know: tracing a peer reads `/proc`, so it is done at most
    /// once per connection.
    pub from_descendant: Option<bool>,
    /// Requests started on this connection.
    pub seq: u64,
    /// The request in progress.
    pub req: Option<Request>,
    /// Close once the write buffer is flushed.
    pub close_when_flushed: bool,
    /// Response-body bytes in `wbuf` not yet written to the socket.
    pub body_in_wbuf: usize,
    /// Response-body bytes written to the socket and not yet returned to the worker as credit.
    pub credit_owed: u32,
    /// The buffered input is an incomplete head: nothing can be parsed until more bytes arrive,
    /// so driving the connection again before a read would only spin.
    pub awaiting_bytes: bool,
    /// `http.headerTimeoutMs` for the head that has started to arrive.
    pub head_timer: Option<TimerKey>,
    /// Closing: writing is shut down and input is read and dropped until the client closes,
    /// `http.lingerMaxBytes` have been dropped, or this timer fires.
    pub linger: Option<TimerKey>,
    /// Input dropped while lingering.
    pub lingered: u64,
    /// Unsent output last counted in the server's total of buffered bytes.
    pub accounted_output: usize,
    /// The client's address (TCP clients), for the access log.
    pub peer: Option<std::net::SocketAddr>,
    /// The socket is registered for writability too: only while output waits that the socket
    /// did not take ([`Conn::watch_writable`]).
    watching_writable: bool,
}

/// Connection buffers given back between requests (`Conn::release_if_idle`), kept for the
/// next requests: reads of a head's initial size, writes up to [`SPARE_WRITE_BUFFER_BYTES`].
#[derive(Debug)]
pub struct ConnSpares {
    reads: SpareBuffers,
    writes: SpareBuffers,
}

/// How many buffers of each kind are kept: one per connection of a busy keep-alive client
/// pool, so that its requests stop allocating; beyond it they are freed.
pub const SPARE_BUFFERS_KEPT: usize = 64;

/// The largest write buffer kept: a small response's head and body. Larger ones (a large
/// buffered response) are freed, so that the kept memory stays within 64 x 16 KiB.
pub const SPARE_WRITE_BUFFER_BYTES: usize = 16 * 1024;

impl ConnSpares {
    /// Kept read and write buffers.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.reads.len(), self.writes.len())
    }
}

impl Default for ConnSpares {
    fn default() -> Self {
        ConnSpares {
            reads: SpareBuffers::new(SPARE_BUFFERS_KEPT, INITIAL_READ_BUFFER),
            writes: SpareBuffers::new(SPARE_BUFFERS_KEPT, SPARE_WRITE_BUFFER_BYTES),
        }
    }
}

/// The outcome of reading from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// This many new bytes; 0 means nothing was available.
    Bytes(usize),
    /// End of stream or a socket error.
    Closed,
}

/// A connection's current request and the buffered input its body is stepped from, borrowed
/// together: every body consumer (discard, collect, pump to a worker) reads through it.
pub struct BodyInput<'a> {
    /// The current request.
    pub req: &'a mut Request,
    /// The connection's buffered input.
    pub input: &'a mut ReadBuf,
    /// Set when the body's framing is lost: the connection closes after its answer.
    pub close_when_flushed: &'a mut bool,
}

impl Conn {
    /// The current request with the input its body is read from; `None` between requests.
    pub fn body_input(&mut self) -> Option<BodyInput<'_>> {
        Some(BodyInput {
            req: self.req.as_mut()?,
            input: &mut self.inbuf,
            close_when_flushed: &mut self.close_when_flushed,
        })
    }

    /// A new connection whose read buffer holds up to `rbuf_size` bytes.
    pub fn new(sock: Socket, rbuf_size: usize) -> Self {
        Conn {
            sock,
            metrics_only: false,
            inbuf: ReadBuf::new(INITIAL_READ_BUFFER.min(rbuf_size), rbuf_size),
            wbuf: Vec::new(),
            wstart: 0,
            peer_closed: false,
            maybe_readable: true,
            hung_up: false,
            reset: false,
            from_descendant: None,
            seq: 0,
            req: None,
            close_when_flushed: false,
            body_in_wbuf: 0,
            credit_owed: 0,
            awaiting_bytes: false,
            head_timer: None,
            linger: None,
            lingered: 0,
            accounted_output: 0,
            peer: None,
            watching_writable: false,
        }
    }

    /// Unconsumed input.
    pub fn input(&self) -> &[u8] {
        self.inbuf.data()
    }

    /// Marks `n` input bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.inbuf.consume(n);
    }

    /// Reads what the socket has, up to the buffer's capacity.
    pub fn fill(&mut self, spares: &mut ConnSpares) -> Filled {
        if self.peer_closed {
            return Filled::Closed;
        }
        if !self.maybe_readable {
            return Filled::Bytes(0);
        }
        self.inbuf.provide_from(&mut spares.reads);
        let fill = self.inbuf.fill_from(&mut self.sock);
        self.maybe_readable = !fill.drained;
        if fill.bytes > 0 {
            self.awaiting_bytes = false;
        }
        if fill.closed {
            self.peer_closed = true;
            if fill.bytes == 0 {
                return Filled::Closed;
            }
        }
        Filled::Bytes(fill.bytes)
    }

    /// Whether buffered input could make progress without reading: a pipelined request waits
    /// in it, rather than nothing or the start of a head that is still arriving.
    pub fn has_parsable_input(&self) -> bool {
        !self.awaiting_bytes && !self.inbuf.data().is_empty()
    }

    /// The socket to splice body bytes from: a TCP socket that may have bytes and whose read
    /// buffer holds none (buffered bytes come first).
    pub fn splice_source(&self) -> Option<BorrowedFd<'_>> {
        match &self.sock {
            Socket::Tcp(sock)
                if self.maybe_readable && !self.peer_closed && self.inbuf.data().is_empty() =>
            {
                Some(sock.as_fd())
            }
            _ => None,
        }
    }

    /// Whether the read buffer has no free space left.
    pub fn input_full(&self) -> bool {
        self.inbuf.is_full()
    }

    /// Writes buffered output. Returns the number of bytes written, or an error when the client
    /// is gone.
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut written = 0;
        while self.wstart < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wstart..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wstart += n;
                    written += n;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        if self.wstart == self.wbuf.len() {
            self.wbuf.clear();
            self.wstart = 0;
        } else if self.wstart > 0 && self.wstart >= self.wbuf.len() - self.wstart {
            // The client is not keeping up: drop what it has taken, so that a stalled
            // connection holds only its unsent bytes, not everything written before them.
            // Only once at least half is sent: then the bytes moved are never more than the
            // bytes sent, where moving the rest after every short write would copy a large
            // response over and over.
            self.wbuf.drain(..self.wstart);
            self.wstart = 0;
            let keep = self.wbuf.len().max(STALLED_WRITE_BUFFER);
            if self.wbuf.capacity() > 2 * keep {
                self.wbuf.shrink_to(keep);
            }
        }
        Ok(written)
    }

    /// Registers the socket for writability while output waits, and for reads only once it
    /// is all written and the request is over. A socket registered for writability is
    /// signalled every time its peer frees send space: for a Unix socket that is every read
    /// the peer makes (the SDK's gateway reading each response woke the loop for nothing), and
    /// the peer pays for the wake-up in its read. A response still streaming keeps the
    /// registration, so that a large body does not re-register twice per bite.
    /// Re-registering reports a readiness that is already there, so no edge is lost.
    pub fn watch_writable(&mut self, registry: &mio::Registry, token: mio::Token) {
        let want = self.has_output() || (self.watching_writable && self.req.is_some());
        if want == self.watching_writable {
            return;
        }
        let interest = if want {
            mio::Interest::READABLE | mio::Interest::WRITABLE
        } else {
            mio::Interest::READABLE
        };
        match registry.reregister(&mut self.sock, token, interest) {
            Ok(()) => self.watching_writable = want,
            Err(err) => log::warn!("[http] cannot re-register a connection: {err}"),
        }
    }

    /// Whether the socket is registered for writability (glue tests).
    #[cfg(test)]
    pub fn watching_writable(&self) -> bool {
        self.watching_writable
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        self.wstart < self.wbuf.len()
    }

    /// Unsent output bytes.
    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wstart
    }

    /// Gives both buffers back while the connection idles between requests, so that an idle
    /// keep-alive connection costs its record and the socket, not its buffers.
    /// They go to `spares`, for the next request of any connection to take.
    pub fn release_if_idle(&mut self, spares: &mut ConnSpares) {
        if self.req.is_none() && self.wbuf.is_empty() {
            if self.wbuf.capacity() > 0 {
                spares.writes.give(std::mem::take(&mut self.wbuf));
                self.wstart = 0;
            }
            self.inbuf.release_into(&mut spares.reads);
        }
    }

    /// Takes a kept write buffer for the response of the request that starts now.
    pub fn provide_write_buffer(&mut self, spares: &mut ConnSpares) {
        if self.wbuf.capacity() == 0
            && let Some(buf) = spares.writes.take()
        {
            self.wbuf = buf;
        }
    }
}

/// Whether `input` holds the rest of `body`: a request whose bytes have all arrived is answered
/// even when the client half-closes right after it.
pub fn body_complete_in(body: &BodyLeft, input: &[u8]) -> bool {
    let mut body = body.clone();
    let mut rest = input;
    loop {
        match body.step(rest, usize::MAX) {
            BodyStep::Data { end: true, .. } => return true,
            BodyStep::Data { used, .. } | BodyStep::NeedMore { used } if used > 0 => {
                rest = rest.get(used..).unwrap_or_default();
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a body `size` bytes at a time, with at most `limit` per step, and
    /// returns the body bytes and whether it ended (or the refusal).
    fn stepped(
        mut body: BodyLeft,
        wire: &[u8],
        size: usize,
        limit: usize,
    ) -> Result<(Vec<u8>, bool), String> {
        let mut out = Vec::new();
        let mut buffered: Vec<u8> = Vec::new();
        for piece in wire.chunks(size.max(1)) {
            buffered.extend_from_slice(piece);
            loop {
                match body.step(&buffered, limit) {
                    BodyStep::Data { used, data, end } => {
                        out.extend_from_slice(data);
                        buffered.drain(..used);
                        if end {
                            return Ok((out, true));
                        }
                        if used == 0 {
                            break;
                        }
                    }
                    BodyStep::NeedMore { used } => {
                        buffered.drain(..used);
                        if used == 0 {
                            break;
                        }
                    }
                    BodyStep::Refused(err) => return Err(err.to_string()),
                }
            }
        }
        Ok((out, body.is_done()))
    }

    #[test]
    fn steps_a_length_body_in_any_pieces_and_within_any_limit() {
        for size in [1, 2, 3, 7, 100] {
            for limit in [1, 4, 1 << 20] {
                let got = stepped(BodyLeft::Length(11), b"hello worldGET /", size, limit);
                assert_eq!(got, Ok((b"hello world".to_vec(), true)), "{size} {limit}");
            }
        }
        assert_eq!(
            stepped(BodyLeft::Length(5), b"hel", 1, 8),
            Ok((b"hel".to_vec(), false))
        );
    }

    #[test]
    fn steps_a_chunked_body_in_any_pieces_and_within_any_limit() {
        let wire = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nGET";
        for size in [1, 2, 5, 13, 100] {
            for limit in [1, 3, 1 << 20] {
                let body = BodyLeft::Chunked(ChunkedDecoder::new(1 << 20));
                let got = stepped(body, wire, size, limit);
                assert_eq!(got, Ok((b"hello world".to_vec(), true)), "{size} {limit}");
            }
        }
    }

    #[test]
    fn a_refused_chunked_body_is_done_with_its_error() {
        let mut body = BodyLeft::Chunked(ChunkedDecoder::new(4));
        assert!(matches!(
            body.step(b"10\r\n0123456789abcdef\r\n", 1 << 20),
            BodyStep::Refused(HttpError::BodyTooLarge { .. })
        ));
        assert!(body.is_done());
        let mut body = BodyLeft::Chunked(ChunkedDecoder::new(1 << 20));
        assert!(matches!(
            body.step(b"zz\r\n", 100),
            BodyStep::Refused(HttpError::BadChunk(_))
        ));
    }

    #[test]
    fn a_slow_connection_holds_at_most_twice_its_unsent_output_and_moves_each_byte_once() {
        let (ours, mut client) = UnixStream::pair().expect("a socket pair");
        let mut conn = Conn::new(Socket::Unix(ours), 16 * 1024);
        conn.wbuf = vec![7u8; 4 << 20];
        let written = conn.flush().expect("a partial write");
        assert!(written > 0 && written < 2 << 20, "wrote {written}");
        assert_eq!(conn.unsent(), (4 << 20) - written);
        assert_eq!(
            conn.wbuf.len(),
            4 << 20,
            "less than half sent: nothing moved yet"
        );
        // The client reads a little at a time; once half is sent, the sent part is dropped.
        let mut sink = vec![0u8; 64 * 1024];
        while conn.wstart > 0 {
            assert!(conn.wbuf.len() <= 2 * conn.unsent(), "{}", conn.wbuf.len());
            let _ = client.read(&mut sink);
            conn.flush().expect("a write");
        }
        assert_eq!(conn.wbuf.len(), conn.unsent());
        assert!(conn.unsent() <= 2 << 20);
        assert!(conn.has_output());
    }

    #[test]
    fn a_length_body_is_complete_once_all_its_bytes_are_buffered() {
        assert!(body_complete_in(&BodyLeft::Done, b""));
        assert!(!body_complete_in(&BodyLeft::Length(5), b"hell"));
        assert!(body_complete_in(&BodyLeft::Length(5), b"hello"));
        assert!(body_complete_in(&BodyLeft::Length(5), b"helloGET"));
    }

    #[test]
    fn a_chunked_body_is_complete_once_its_last_chunk_and_trailers_are_buffered() {
        let body = || BodyLeft::Chunked(ChunkedDecoder::new(1 << 20));
        assert!(!body_complete_in(&body(), b""));
        assert!(!body_complete_in(&body(), b"5\r\nhello\r\n"));
        assert!(!body_complete_in(&body(), b"5\r\nhello\r\n0\r\n"));
        assert!(body_complete_in(&body(), b"5\r\nhello\r\n0\r\n\r\n"));
        assert!(body_complete_in(
            &body(),
            b"2\r\nhe\r\n3;ext=1\r\nllo\r\n0\r\nX-T: 1\r\n\r\n"
        ));
        assert!(!body_complete_in(&body(), b"zz\r\n"));
    }
}
