//! Where a connection and a worker meet: the two steps that need both at once, as free
//! functions over `(&mut Conn, &mut Worker)`: opening a stream with the request head, and
//! moving request body bytes within the stream's credit.
//!
//! The worker's side of a stream is the supervisor's (`supervisor/streams.rs`); routing a
//! response frame to its client is glue in `server/mod.rs`.

use super::client::InvokeError;
use super::conn::{BodyInput, BodyLeft, BodyStep, Conn, Sink, Socket};
use crate::config::FunctionProfile;
use crate::fc;
use crate::ids::ConnRef;
use crate::ids::WorkerKey;
use crate::reactor::clock::{LoopClock, unix_millis};
use crate::turf::worker::{WRITE_QUEUE_LIMIT, Worker};
use crate::wire::{self, RequestHead, WireError};
use std::borrow::Cow;

/// A stream opened for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Opened {
    /// The stream on the worker.
    pub(super) stream: u32,
    /// The client expects `100 Continue` before it sends its body: it was written.
    pub(super) sent_continue: bool,
}

/// The read buffer of a connection whose body streams to a worker: one credit window, so
/// that a large upload takes a few dozen reads and frames per window rather than one per 4 KiB.
const STREAM_READ_BUFFER: usize = wire::INITIAL_WINDOW as usize;
/// Bodies up to this size are read with the buffer a head uses: growing it would cost more
/// than the reads it saves.
const STREAM_READ_THRESHOLD: u64 = 64 * 1024;

/// Opens a stream on `worker` for `client`'s request (of a function with `profile`) and
/// writes its head. With `splice`, a large Content-Length body arriving on a TCP socket is to
/// be spliced to the worker (`splice_body`). `None` when the request is not the connection's
/// current one any more; an error when its head cannot be encoded (the caller answers it).
pub(super) fn open_stream(
    conn: &mut Conn,
    client: ConnRef,
    worker: &mut Worker,
    worker_key: WorkerKey,
    profile: &FunctionProfile,
    clock: &LoopClock,
    splice: bool,
) -> Option<Result<Opened, InvokeError>> {
    let req = conn.req.as_mut().filter(|r| r.seq == client.seq)?;
    let head = req.head.take()?;
    let stream = worker.open_stream(client);
    let facts = fc::ProfileFacts {
        name: &profile.name,
        handler: profile.handler.as_deref().unwrap_or(""),
        initializer: profile.initializer.as_deref(),
        memory_bytes: profile.resource_limit.memory,
    };
    let msg = RequestHead {
        kind: Cow::Borrowed(req.kind.as_str()),
        method: Cow::Borrowed(&head.method),
        url: Cow::Borrowed(&head.target),
        headers: Cow::Borrowed(&head.headers),
        baggage: req.baggage.as_deref().map(Cow::Borrowed),
        request_id: Cow::Borrowed(&req.id),
        deadline: Some(unix_millis(clock.wall_at(req.deadline))),
        timeout_ms: Some(req.timeout_ms),
        client_ip: None,
        context: fc::context(&head.headers, &req.id, req.timeout_ms, facts),
    };
    let no_body = req.body.is_done();
    // A body known to be large is read from the socket in pieces as large as the stream's
    // credit. A chunked one is too, but only once it has proved large (`pump_body`): most are
    // a few bytes, and a credit-sized buffer for each would cost more than the reads it saves.
    // A large one on a TCP socket is spliced instead, and needs no larger buffer.
    let large = matches!(req.body, BodyLeft::Length(left) if left > STREAM_READ_THRESHOLD);
    req.splice_body = large && splice && matches!(conn.sock, Socket::Tcp(_));
    if large && !req.splice_body {
        conn.inbuf.grow_to(STREAM_READ_BUFFER);
    }
    let written = if worker.compact_head {
        wire::put_compact_head(&mut worker.wbuf, stream, no_body, &msg)
    } else {
        wire::put_request_head(&mut worker.wbuf, stream, no_body, &msg)
    };
    if let Err(err) = written {
        worker.streams.remove(&stream);
        return Some(Err(match err {
            // Only a pathological head (16 KiB of headers cannot get here) could; fail it.
            WireError::TooLarge { len } => InvokeError::new(
                431,
                "RequestHeaderFieldsTooLarge",
                format!(
                    "request head encodes to {len} bytes, over the worker protocol's frame limit"
                ),
            ),
            WireError::BadPayload { reason, .. } => InvokeError::new(
                500,
                "InternalError",
                format!("cannot encode request head: {reason}"),
            ),
            other => InvokeError::new(
                500,
                "InternalError",
                format!("cannot encode request head: {other}"),
            ),
        }));
    }
    req.sink = Sink::Worker {
        worker: worker_key,
        stream,
    };
    let now = clock.now();
    req.timing.dispatched = Some(now);
    if let Some(facts) = req.access.as_mut() {
        facts.take_line(head);
        facts.worker = Some(worker.process.id.clone());
        // The request waited for this worker's start if the worker became ready after it
        // was admitted.
        facts.cold_start = match (req.timing.admitted, worker.ready_at) {
            (Some(admitted), Some(ready)) if ready > admitted => Some(ready - admitted),
            _ => None,
        };
    }
    let sent_continue = req.expect_continue && !no_body && !req.continue_sent;
    log::trace!(
        "[dp] request {} -> worker {} stream {stream}",
        req.id,
        worker.process.id
    );
    if sent_continue {
        req.continue_sent = true;
        conn.wbuf
            .extend_from_slice(crate::http::response::CONTINUE_100);
    }
    Some(Ok(Opened {
        stream,
        sent_continue,
    }))
}

/// What moving a request body to its worker came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Bytes (or the end) were framed for the worker; whether the body is now all sent.
    Sent { done: bool },
    /// Nothing could move (no bytes, or no credit); whether the body is all sent.
    Idle { done: bool },
    /// The rest of the body is refused (too large, or broken framing): the connection's
    /// framing is lost and it closes; the stream is to be cancelled and the invocation failed
    /// with this error.
    Refused(InvokeError),
}

/// Moves `conn`'s buffered body bytes to `stream` on `worker`, within the stream's credit.
/// When the worker has already closed the stream (it answered), the rest of the body is
/// dropped instead.
pub(super) fn pump_body(conn: &mut Conn, worker: &mut Worker, stream: u32) -> Pumped {
    let Some(BodyInput {
        req,
        input: inbuf,
        close_when_flushed,
    }) = conn.body_input()
    else {
        return Pumped::Idle { done: false };
    };
    let Some(state) = worker.streams.get_mut(&stream) else {
        // The worker already answered and closed the stream: drop the rest of the body.
        req.sink = Sink::Discard;
        return Pumped::Idle {
            done: req.body.is_done(),
        };
    };
    let mut sent_any = false;
    // Within the stream's credit, and while the worker's queue is under its limit whatever
    // credit it granted: a worker that grants credit and never reads its pipe holds the runtime
    // to a bounded buffer, and its clients to TCP back-pressure.
    while !req.body.is_done()
        && state.request_credit > 0
        && worker.wbuf.len() - worker.wstart < WRITE_QUEUE_LIMIT
    {
        let credit = usize::try_from(state.request_credit).unwrap_or(usize::MAX);
        let (used, sent) = match req
            .body
            .step(inbuf.data(), credit.min(wire::MAX_BODY_CHUNK))
        {
            BodyStep::Data { used, data, end } => {
                if !data.is_empty() || end {
                    wire::put_request_body(&mut worker.wbuf, stream, end, data);
                }
                (used, data.len())
            }
            BodyStep::NeedMore { used } => (used, 0),
            BodyStep::Refused(err) => {
                // The worker's stream is cancelled with the cause, which fails the handler's
                // request body (docs/PROTOCOL.md "Cancellation"); the client gets the 413 or
                // 400 if nothing was answered yet, else a cut response; and the connection
                // closes (its framing is lost).
                req.keep_alive = false;
                *close_when_flushed = true;
                inbuf.clear();
                return Pumped::Refused(InvokeError::new(
                    err.status(),
                    err.error_type(),
                    err.to_string(),
                ));
            }
        };
        inbuf.consume(used);
        state.request_credit -= u32::try_from(sent).unwrap_or(u32::MAX);
        req.timing.bytes_in += sent as u64;
        sent_any |= used > 0 || req.body.is_done();
        if used == 0 && !req.body.is_done() {
            break;
        }
    }
    let done = req.body.is_done();
    if !done && !req.splice_body && req.timing.bytes_in > STREAM_READ_THRESHOLD {
        // A chunked body that has proved large: read the rest in credit-sized pieces.
        inbuf.grow_to(STREAM_READ_BUFFER);
    }
    if sent_any {
        Pumped::Sent { done }
    } else {
        Pumped::Idle { done }
    }
}

/// What splicing a request body to its worker came to.
#[derive(Debug)]
pub(super) enum Spliced {
    /// Bytes are in the worker's body pipe, their frame header queued; whether the body is now
    /// all sent.
    Moved { done: bool },
    /// Nothing could move: no bytes in the socket (or it ended), no credit, or the worker's
    /// pipe or queue still full.
    Idle,
    /// The kernel cannot splice these descriptors: the body goes on by copy, and so should
    /// every later one.
    Unsupported(std::io::Error),
}

/// Moves the next piece of `conn`'s request body from its socket to `stream` on `worker` by
/// splice(2), within the stream's credit, when the request splices its body and nothing of
/// it is buffered. The socket's end, or an error reading it, is the client leaving, as for a
/// read.
pub(super) fn splice_body(conn: &mut Conn, worker: &mut Worker, stream: u32) -> Spliced {
    let Some(req) = conn.req.as_ref() else {
        return Spliced::Idle;
    };
    let BodyLeft::Length(left) = req.body else {
        return Spliced::Idle;
    };
    if !req.splice_body
        || !matches!(req.sink, Sink::Worker { stream: s, .. } if s == stream)
        || !worker.can_splice()
        || worker.queued() >= WRITE_QUEUE_LIMIT
    {
        return Spliced::Idle;
    }
    let Some(credit) = worker.streams.get(&stream).map(|s| s.request_credit) else {
        return Spliced::Idle;
    };
    if credit == 0 {
        return Spliced::Idle;
    }
    let Some(source) = conn.splice_source() else {
        return Spliced::Idle;
    };
    let max = usize::try_from(credit).unwrap_or(usize::MAX);
    let moved = worker.splice_request_body(source, stream, max, left);
    let n = match moved {
        Ok(0) => {
            conn.peer_closed = true;
            return Spliced::Idle;
        }
        Ok(n) => n,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
            conn.maybe_readable = false;
            return Spliced::Idle;
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            if let Some(req) = conn.req.as_mut() {
                req.splice_body = false;
            }
            conn.inbuf.grow_to(STREAM_READ_BUFFER);
            return Spliced::Unsupported(err);
        }
        Err(err) => {
            log::debug!("splicing a request body from its socket failed: {err}");
            conn.peer_closed = true;
            return Spliced::Idle;
        }
    };
    conn.awaiting_bytes = false;
    let sent = n as u64;
    if let Some(state) = worker.streams.get_mut(&stream) {
        state.request_credit -= u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(state.request_credit);
    }
    let Some(req) = conn.req.as_mut() else {
        return Spliced::Idle;
    };
    req.timing.bytes_in += sent;
    let done = sent >= left;
    req.body = if done {
        BodyLeft::Done
    } else {
        BodyLeft::Length(left - sent)
    };
    Spliced::Moved { done }
}
