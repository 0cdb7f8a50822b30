//! The bridge between a connection and a worker: the two places that need both at once, as
//! free functions over `(&mut Conn, &mut Worker)` (opening a stream with the request head, and
//! moving request body bytes within the stream's credit), and the supervisor's side of a
//! stream (credit, cancellation, its end, reading frames).
//!
//! Where the two sides meet in the loop (dispatching a queue, routing a response frame to its
//! client) is glue in `server/mod.rs`.

use super::Lent;
use super::Timer;
use super::client::InvokeError;
use super::conn::{BodyInput, BodyStep, Conn, Sink};
use super::effects::Effect;
use super::supervisor::Supervisor;
use crate::config::FunctionProfile;
use crate::fc;
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::reactor::buffer::ReadBuf;
use crate::sched::dispatch::StreamEnd;
use crate::turf::accounting::ExitReason;
use crate::turf::worker::{ReadResult, Worker, WorkerState};
use crate::wire::{self, RequestHead, WireError};
use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_millis(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let wall_at = if at >= now {
        wall + (at - now)
    } else {
        wall.saturating_sub(now - at)
    };
    u64::try_from(wall_at.as_millis()).unwrap_or(u64::MAX)
}

/// A stream opened for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Opened {
    /// The stream on the worker.
    pub(super) stream: u32,
    /// The client expects `100 Continue` before it sends its body: it was written.
    pub(super) sent_continue: bool,
}

/// Opens a stream on `worker` for `client`'s request (of a function with `profile`) and
/// writes its head. `None` when the request is not the connection's current one any more;
/// an error when its head cannot be encoded (the caller answers it).
pub(super) fn open_stream(
    conn: &mut Conn,
    client: ConnRef,
    worker: &mut Worker,
    worker_key: WorkerKey,
    profile: &FunctionProfile,
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
        baggage: None,
        request_id: Cow::Borrowed(&req.id),
        deadline: Some(unix_millis(req.deadline)),
        timeout_ms: Some(req.timeout_ms),
        client_ip: None,
        context: fc::context(&head.headers, &req.id, req.timeout_ms, facts),
    };
    let no_body = req.body.is_done();
    if let Err(err) = wire::put_request_head(&mut worker.wbuf, stream, no_body, &msg) {
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
    while !req.body.is_done() && state.request_credit > 0 {
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
        sent_any |= used > 0 || req.body.is_done();
        if used == 0 && !req.body.is_done() {
            break;
        }
    }
    let done = req.body.is_done();
    if sent_any {
        Pumped::Sent { done }
    } else {
        Pumped::Idle { done }
    }
}

/// A stream the worker ended (its terminal frame), for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamClosed {
    pub(super) function: FunctionId,
    /// The request it served, unless it was cancelled.
    pub(super) client: Option<ConnRef>,
    /// The worker's first completed invocation: proof the function can run.
    pub(super) first: bool,
    /// A disposable worker that has served its one request.
    pub(super) spent: bool,
    /// A draining worker with nothing left in flight.
    pub(super) drained: bool,
}

impl Supervisor {
    /// Reads what worker `key` sent into its buffer. `None` when the worker is gone.
    pub(super) fn fill_worker(&mut self, key: WorkerKey) -> Option<std::io::Result<ReadResult>> {
        Some(self.workers.get_mut(key)?.fill())
    }

    /// Takes worker `key`'s read buffer out, so that its frames can be handled while the
    /// worker (and any connection) is touched; [`Supervisor::put_back_frames`] returns it.
    pub(super) fn take_frames(&mut self, key: WorkerKey) -> Option<ReadBuf> {
        let worker = self.workers.get_mut(key)?;
        Some(std::mem::replace(&mut worker.rbuf, ReadBuf::new(0, 0)))
    }

    /// Returns a read buffer taken by [`Supervisor::take_frames`], its handled frames consumed.
    pub(super) fn put_back_frames(&mut self, key: WorkerKey, buf: ReadBuf) {
        if let Some(worker) = self.workers.get_mut(key) {
            worker.rbuf = buf;
            worker.compact();
        }
    }

    /// Whether worker `key` still reads: frames after its end are not handled.
    pub(super) fn worker_reads(&self, key: WorkerKey) -> bool {
        self.workers
            .get(key)
            .is_some_and(|w| w.from_worker.is_some())
    }

    /// The client of a stream, if the stream exists and is still bound to a live request.
    pub(super) fn stream_client(&self, key: WorkerKey, stream: u32) -> Option<ConnRef> {
        self.workers.get(key)?.streams.get(&stream)?.client
    }

    /// The worker granted `credit` more request-body bytes on `stream`: its client may send
    /// them.
    pub(super) fn on_request_window(
        &mut self,
        key: WorkerKey,
        stream: u32,
        credit: u32,
        lp: &mut Lent<'_>,
    ) {
        let Some(state) = self
            .workers
            .get_mut(key)
            .and_then(|w| w.streams.get_mut(&stream))
        else {
            return;
        };
        state.request_credit = state.request_credit.saturating_add(credit);
        if let Some(client) = state.client {
            lp.effects.push(Effect::DriveConn(client.conn));
        }
    }

    /// Response bytes of `stream` left for the client: the worker may send that much more.
    pub(super) fn return_credit(
        &mut self,
        key: WorkerKey,
        stream: u32,
        bytes: u32,
        lp: &mut Lent<'_>,
    ) {
        if let Some(w) = self.workers.get_mut(key)
            && w.streams.contains_key(&stream)
        {
            wire::put_window(&mut w.wbuf, stream, bytes);
            lp.effects.push(Effect::FlushWorker(key));
        }
    }

    /// The worker sent the terminal frame of `stream`: it is freed. `disposable` is whether
    /// the worker's function runs each request in a worker of its own.
    pub(super) fn close_stream(
        &mut self,
        key: WorkerKey,
        stream: u32,
        disposable: bool,
        lp: &mut Lent<'_>,
    ) -> Option<StreamClosed> {
        let worker = self.workers.get_mut(key)?;
        let state = worker.streams.remove(&stream)?;
        if let Some(timer) = state.cancel_timer {
            lp.timers.cancel(timer);
        }
        worker.served += 1;
        worker.last_active = Instant::now();
        Some(StreamClosed {
            function: worker.function,
            client: state.client,
            first: worker.served == 1,
            spent: disposable && worker.life.finish(StreamEnd::Completed),
            drained: worker.state == WorkerState::Draining && worker.streams.is_empty(),
        })
    }

    /// Tells the worker to abandon a stream; it must send its terminal frame within
    /// `dataPlane.cancelGracePeriod` or it is killed.
    pub(super) fn cancel_stream(
        &mut self,
        key: WorkerKey,
        stream: u32,
        reason: &str,
        lp: &mut Lent<'_>,
    ) {
        let grace = Duration::from_millis(lp.config.data_plane.cancel_grace_period_ms);
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        let Some(state) = worker.streams.get_mut(&stream) else {
            return;
        };
        if state.client.take().is_none() {
            return;
        }
        log::debug!(
            "[dp] cancel worker {} stream {stream}: {reason}",
            worker.process.id
        );
        if let Err(err) = wire::put_cancel(&mut worker.wbuf, stream, reason) {
            log::warn!(
                "[dp] cannot encode CANCEL for worker {}: {err}",
                worker.process.id
            );
        }
        let due = Instant::now() + grace;
        let timer = lp.timers.schedule(
            due,
            Timer::CancelGrace {
                worker: key,
                stream,
            },
        );
        if let Some(state) = worker.streams.get_mut(&stream) {
            state.cancel_timer = Some(timer);
        }
        lp.effects.push(Effect::FlushWorker(key));
    }

    /// A cancelled stream was not closed in time: the worker is stuck, kill it.
    pub(super) fn on_cancel_grace(&mut self, key: WorkerKey, stream: u32, lp: &mut Lent<'_>) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if let Some(state) = worker.streams.get_mut(&stream) {
            state.cancel_timer = None;
            let reason = format!(
                "worker {} did not close cancelled stream {stream} within \
                 dataPlane.cancelGracePeriod ({} ms)",
                worker.process.id, lp.config.data_plane.cancel_grace_period_ms
            );
            log::warn!("[dp] {reason}; killing it");
            self.kill_worker(key, &reason, ExitReason::TimeoutKill, lp);
        }
    }

    /// The worker broke the wire protocol: it is killed.
    pub(super) fn worker_protocol_error(
        &mut self,
        key: WorkerKey,
        detail: &str,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get(key) else {
            return;
        };
        let reason = format!(
            "worker {} broke the wire protocol: {detail}",
            worker.process.id
        );
        log::warn!("[turf] {reason}");
        self.kill_worker(key, &reason, ExitReason::Crashed, lp);
    }
}
