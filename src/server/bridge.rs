//! The bridge between connections and workers: dispatching queued requests onto worker
//! streams, forwarding request bodies within the worker's credit, turning worker frames into
//! HTTP responses, deadlines and cancellation.

use super::client::InvokeError;
use super::conn::{BodyStep, Resp, Sink};
use super::effects::Effect;
use super::{Server, Timer};
use crate::fc;
use crate::reactor::buffer::ReadBuf;
use crate::reactor::slab::Key;
use crate::sched::dispatch::{self, DisposableCandidate, StreamEnd, WorkerLoad};
use crate::turf::accounting::ExitReason;
use crate::turf::worker::{ConnRef, ReadResult, WorkerState};
use crate::wire::{self, Direction, ErrorPayload, Kind, RequestHead, ResponseHead, WireError};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_millis(at: std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
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

impl Server {
    /// Hands queued requests of `function` to ready workers, oldest first.
    pub(super) fn dispatch_queue(&mut self, function: usize) {
        let max_active = self.max_active(function);
        loop {
            let Some(&client) = self.scheduler.functions[function].pool.queue.front() else {
                return;
            };
            // Skip entries whose connection closed or moved on (they were cancelled).
            let live = self
                .request_mut(client)
                .is_some_and(|r| matches!(r.sink, Sink::Hold) && r.resp == Resp::NotStarted);
            if !live {
                self.scheduler.functions[function].pool.queue.pop_front();
                continue;
            }
            // The current generation serves; an older one only until the new one is ready.
            let generation = self.scheduler.functions[function].generation;
            let current_ready = self.scheduler.functions[function]
                .pool
                .workers
                .iter()
                .any(|&k| {
                    self.supervisor.workers.get(k).is_some_and(|w| {
                        w.generation == generation && w.state == WorkerState::Ready
                    })
                });
            let loads: Vec<WorkerLoad> = self.scheduler.functions[function]
                .pool
                .workers
                .iter()
                .filter_map(|&key| {
                    self.supervisor
                        .workers
                        .get(key)
                        .filter(|w| !current_ready || w.generation == generation)
                        .map(|w| WorkerLoad {
                            key,
                            state: w.state,
                            active: w.active(),
                        })
                })
                .collect();
            let f = &mut self.scheduler.functions[function];
            let picked = if f.profile.worker.disposable {
                let candidates: Vec<DisposableCandidate> = f
                    .pool
                    .workers
                    .iter()
                    .filter_map(|&key| {
                        self.supervisor
                            .workers
                            .get(key)
                            .map(|w| DisposableCandidate {
                                key,
                                state: w.state,
                                life: w.life,
                            })
                    })
                    .collect();
                dispatch::pick_disposable(&candidates)
            } else {
                dispatch::pick(
                    f.profile.worker.dispatch_mode,
                    &mut f.round_robin,
                    &loads,
                    max_active,
                )
            };
            let Some(worker) = picked else {
                return;
            };
            if self.scheduler.functions[function].profile.worker.disposable
                && let Some(w) = self.supervisor.workers.get_mut(worker)
            {
                w.life.take();
            }
            self.scheduler.functions[function].pool.queue.pop_front();
            self.dispatch(client, worker);
        }
    }

    pub(super) fn max_active(&self, function: usize) -> usize {
        self.scheduler.functions[function].max_active()
    }

    /// Opens a stream on `worker` for the request and sends its head.
    fn dispatch(&mut self, client: ConnRef, worker_key: Key) {
        let Some(conn) = self.front.conns.get_mut(client.conn) else {
            return;
        };
        let Some(req) = conn.req.as_mut().filter(|r| r.seq == client.seq) else {
            return;
        };
        let Some(worker) = self.supervisor.workers.get_mut(worker_key) else {
            return;
        };
        let Some(function) = req.function else {
            return;
        };
        let Some(head) = req.head.take() else {
            return;
        };
        let profile = &self.scheduler.functions[function].profile;
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
            let err = match err {
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
            };
            self.respond_error(client, &err, false);
            return;
        }
        req.sink = Sink::Worker {
            worker: worker_key,
            stream,
        };
        let send_continue = req.expect_continue && !no_body && !req.continue_sent;
        if send_continue {
            req.continue_sent = true;
        }
        log::trace!(
            "[dp] request {} -> worker {} stream {stream}",
            req.id,
            worker.process.id
        );
        if send_continue {
            conn.wbuf
                .extend_from_slice(crate::http::response::CONTINUE_100);
            self.mark_conn_dirty(client.conn);
        }
        self.mark_worker_dirty(worker_key);
        // Body bytes may already be buffered.
        self.schedule_drive(client.conn);
    }

    /// Forwards buffered body bytes to the worker, within the stream's credit. Returns whether
    /// the body is now fully sent.
    pub(super) fn pump_body_to_worker(&mut self, key: Key, worker_key: Key, stream: u32) -> bool {
        let Some(conn) = self.front.conns.get_mut(key) else {
            return false;
        };
        let super::conn::Conn {
            inbuf,
            req,
            close_when_flushed,
            ..
        } = conn;
        let Some(req) = req.as_mut() else {
            return false;
        };
        let Some(worker) = self.supervisor.workers.get_mut(worker_key) else {
            return req.body.is_done();
        };
        let Some(state) = worker.streams.get_mut(&stream) else {
            // The worker already answered and closed the stream: drop the rest of the body.
            req.sink = Sink::Discard;
            return req.body.is_done();
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
                    // The rest of the body is refused (too large, or broken framing): the
                    // worker's stream is cancelled with the cause, which fails the handler's
                    // request body (docs/PROTOCOL.md "Cancellation"); the client gets the 413
                    // or 400 if nothing was answered yet, else a cut response; and the
                    // connection closes (its framing is lost).
                    log::debug!("[http conn={}] request body refused: {err}", key.idx);
                    req.keep_alive = false;
                    *close_when_flushed = true;
                    inbuf.clear();
                    let status = err.status();
                    let error_type = err.error_type();
                    let message = err.to_string();
                    let client = ConnRef {
                        conn: key,
                        seq: req.seq,
                    };
                    self.cancel_stream(worker_key, stream, &message);
                    self.fail_invocation(client, &InvokeError::new(status, error_type, message));
                    return true;
                }
            };
            inbuf.consume(used);
            state.request_credit -= u32::try_from(sent).unwrap_or(u32::MAX);
            sent_any |= used > 0 || req.body.is_done();
            if used == 0 && !req.body.is_done() {
                break;
            }
        }
        if sent_any {
            self.mark_worker_dirty(worker_key);
        }
        self.front
            .conns
            .get(key)
            .and_then(|c| c.req.as_ref())
            .is_some_and(|r| r.body.is_done())
    }

    /// Reads and handles everything a worker sent.
    pub(super) fn on_worker_readable(&mut self, key: Key) {
        loop {
            let Some(worker) = self.supervisor.workers.get_mut(key) else {
                return;
            };
            let result = worker.fill();
            if !self.decode_worker_frames(key) {
                return;
            }
            match result {
                Ok(ReadResult::More) => {}
                Ok(ReadResult::Drained) => return,
                Ok(ReadResult::Closed) => {
                    return self.supervisor.on_worker_pipe_closed(key, &mut lent!(self));
                }
                Err(err) => {
                    log::warn!("[turf] reading worker pipe failed: {err}");
                    return self.supervisor.on_worker_pipe_closed(key, &mut lent!(self));
                }
            }
        }
    }

    /// Handles every complete frame in the worker's read buffer. Returns false when the worker
    /// is gone (killed for a protocol error, or while handling a frame).
    fn decode_worker_frames(&mut self, key: Key) -> bool {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return false;
        };
        // Frames are handled straight from the read buffer, which is taken out of the worker
        // record meanwhile so that handlers may touch the worker (and any connection) freely.
        let mut buf = std::mem::replace(&mut worker.rbuf, ReadBuf::new(0, 0));
        loop {
            let frame = match wire::decode_frame(Direction::ToRuntime, buf.data()) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    self.worker_protocol_error(key, &err.to_string());
                    return false;
                }
            };
            let used = frame.wire_len();
            self.on_frame(key, frame);
            buf.consume(used);
            if self
                .supervisor
                .workers
                .get(key)
                .is_none_or(|w| w.from_worker.is_none())
            {
                return false;
            }
        }
        if let Some(worker) = self.supervisor.workers.get_mut(key) {
            worker.rbuf = buf;
            worker.compact();
        }
        true
    }

    fn on_frame(&mut self, key: Key, frame: wire::Frame<'_>) {
        let wire::Frame { header, payload } = frame;
        match header.kind {
            Kind::Ready => self.on_worker_ready(key, payload),
            Kind::InitDone => self.on_worker_init_done(key),
            Kind::InitError => self.on_worker_init_error(key, payload),
            Kind::ResponseHead => self.on_response_head(key, header, payload),
            Kind::ResponseBody => self.on_response_body(key, header, payload),
            Kind::ResponseError => self.on_response_error(key, header.stream, payload),
            Kind::WindowToRuntime => match wire::window_credit(payload) {
                Ok(credit) => self.on_request_window(key, header.stream, credit),
                Err(err) => self.worker_protocol_error(key, &err.to_string()),
            },
            Kind::Init
            | Kind::RequestHead
            | Kind::RequestBody
            | Kind::Cancel
            | Kind::WindowToWorker => {
                // decode_frame only yields runtime-bound kinds; nothing to do.
            }
        }
    }

    /// The client of a stream, if the stream exists and is still bound to a live request.
    fn stream_client(&self, key: Key, stream: u32) -> Option<ConnRef> {
        self.supervisor
            .workers
            .get(key)?
            .streams
            .get(&stream)?
            .client
    }

    fn on_response_head(&mut self, key: Key, header: wire::Header, payload: &[u8]) {
        let head = match ResponseHead::parse(payload) {
            Ok(h) => h,
            Err(err) => {
                self.worker_protocol_error(key, &err.to_string());
                return;
            }
        };
        if let Some(client) = self.stream_client(key, header.stream) {
            self.write_response_head(client, head.status, head.headers, header.is_end());
            if header.is_end() {
                self.write_response_body(client, &[], true);
            }
        }
        if header.is_end() {
            self.close_stream(key, header.stream);
        }
    }

    fn on_response_body(&mut self, key: Key, header: wire::Header, payload: &[u8]) {
        if let Some(client) = self.stream_client(key, header.stream) {
            let started = self
                .request_mut(client)
                .is_some_and(|r| matches!(r.resp, Resp::Streaming { .. }));
            if !started {
                self.worker_protocol_error(key, "RESPONSE_BODY before RESPONSE_HEAD");
                return;
            }
            if !self.write_response_body(client, payload, header.is_end()) {
                self.cancel_stream(key, header.stream, "response exceeded its Content-Length");
                self.fail_invocation(
                    client,
                    &InvokeError::new(
                        502,
                        "InvalidResponse",
                        "the function wrote more bytes than its Content-Length",
                    ),
                );
                return;
            }
        }
        if header.is_end() {
            self.close_stream(key, header.stream);
        }
    }

    fn on_response_error(&mut self, key: Key, stream: u32, payload: &[u8]) {
        if let Some(client) = self.stream_client(key, stream) {
            let error = ErrorPayload::parse_lenient(payload, "Error", "");
            let err = InvokeError {
                status: 404,
                error_type: error.error_type,
                message: error.error_message,
                stack: Some(error.stack_trace),
            };
            self.log_invocation_failure(client, &err);
            self.fail_invocation(client, &err);
        }
        self.close_stream(key, stream);
    }

    fn on_request_window(&mut self, key: Key, stream: u32, credit: u32) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        let Some(state) = worker.streams.get_mut(&stream) else {
            return;
        };
        state.request_credit = state.request_credit.saturating_add(credit);
        if let Some(client) = state.client {
            self.schedule_drive(client.conn);
        }
    }

    /// The worker sent its terminal frame: free the slot and give it the next queued request.
    fn close_stream(&mut self, key: Key, stream: u32) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        let Some(state) = worker.streams.remove(&stream) else {
            return;
        };
        if let Some(timer) = state.cancel_timer {
            self.timers.cancel(timer);
        }
        worker.served += 1;
        worker.last_active = std::time::Instant::now();
        let function = worker.function;
        if worker.served == 1 {
            // A completed invocation proves the function can run: forgive start-up failures.
            self.scheduler.functions[function].pool.record_stable();
        }
        let idle = worker.streams.is_empty();
        let draining = worker.state == WorkerState::Draining;
        if let Some(client) = state.client {
            // The response may be complete while the request body is still arriving: keep the
            // connection in sync by discarding the rest.
            if let Some(req) = self.request_mut(client)
                && matches!(req.sink, Sink::Worker { .. })
            {
                req.sink = Sink::Discard;
            }
            self.schedule_drive(client.conn);
        }
        let spent = self.scheduler.functions[function].profile.worker.disposable
            && self
                .supervisor
                .workers
                .get_mut(key)
                .is_some_and(|w| w.life.finish(StreamEnd::Completed));
        if spent {
            // Disposable: one request per worker; it goes once that request is done.
            self.supervisor.drain_worker(
                key,
                "disposable worker served its request",
                &mut lent!(self),
            );
        } else if draining && idle {
            self.supervisor
                .stop_worker(key, "drained", &mut lent!(self));
        }
        // The freed slot takes the next queued request once this event is handled.
        self.effects.push(Effect::Dispatch(function));
        self.scheduler
            .retire_if_removed(function, &self.supervisor.workers, &mut self.effects);
    }

    /// Tells the worker to abandon a stream; it must send its terminal frame within the cancel
    /// grace period or it is killed.
    pub(super) fn cancel_stream(&mut self, key: Key, stream: u32, reason: &str) {
        let grace = Duration::from_millis(self.config.data_plane.cancel_grace_period_ms);
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
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
        let timer = self.timers.schedule(
            std::time::Instant::now() + grace,
            Timer::CancelGrace {
                worker: key,
                stream,
            },
        );
        if let Some(state) = self
            .supervisor
            .workers
            .get_mut(key)
            .and_then(|w| w.streams.get_mut(&stream))
        {
            state.cancel_timer = Some(timer);
        }
        self.mark_worker_dirty(key);
    }

    /// A cancelled stream was not closed in time: the worker is stuck, kill it.
    pub(super) fn on_cancel_grace(&mut self, key: Key, stream: u32) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        if let Some(state) = worker.streams.get_mut(&stream) {
            state.cancel_timer = None;
            let reason = format!(
                "worker {} did not close cancelled stream {stream} within dataPlane.cancelGracePeriod ({} ms)",
                worker.process.id, self.config.data_plane.cancel_grace_period_ms
            );
            log::warn!("[dp] {reason}; killing it");
            self.supervisor
                .kill_worker(key, &reason, ExitReason::TimeoutKill, &mut lent!(self));
        }
    }

    /// An invocation's deadline passed.
    pub(super) fn on_request_deadline(&mut self, client: ConnRef) {
        let Some(req) = self.request_mut(client) else {
            return;
        };
        req.deadline_timer = None;
        let timeout_ms = req.timeout_ms;
        let queued = matches!(req.sink, Sink::Hold);
        let sink = req.sink;
        let function = req.function;
        let name = function
            .map(|f| self.scheduler.functions[f].profile.name.clone())
            .unwrap_or_default();
        if let Sink::Worker { worker, stream } = sink {
            self.cancel_stream(worker, stream, "deadline exceeded");
        }
        let message = if queued {
            format!("waiting for a worker of function {name} timed out after {timeout_ms} ms")
        } else {
            format!("function {name} did not answer within its timeout of {timeout_ms} ms")
        };
        let err = InvokeError::new(404, "FunctionTimeout", message);
        self.log_invocation_failure(client, &err);
        self.fail_invocation(client, &err);
    }

    /// One warn line in the runtime's own log for an invocation that failed with a timeout, a
    /// function error or its worker's death, so that such failures are not only in the worker's
    /// own files. Runs on failure paths only; a multi-line message stays on one line.
    pub(super) fn log_invocation_failure(&self, client: ConnRef, err: &InvokeError) {
        if !log::log_enabled!(log::Level::Warn) {
            return;
        }
        let Some(req) = self
            .front
            .conns
            .get(client.conn)
            .and_then(|c| c.req.as_ref())
            .filter(|r| r.seq == client.seq)
        else {
            return;
        };
        let function = req
            .function
            .and_then(|f| self.scheduler.functions.get(f))
            .map_or("-", |f| f.profile.name.as_str());
        let message = err.message.trim_end().replace('\n', "\\n");
        log::warn!(
            "[dp] request {} of function {function} failed: {}: {message}",
            req.id,
            err.error_type
        );
    }

    fn worker_protocol_error(&mut self, key: Key, detail: &str) {
        let id = self
            .supervisor
            .workers
            .get(key)
            .map(|w| w.process.id.clone())
            .unwrap_or_default();
        let reason = format!("worker {id} broke the wire protocol: {detail}");
        log::warn!("[turf] {reason}");
        self.supervisor
            .kill_worker(key, &reason, ExitReason::Crashed, &mut lent!(self));
    }
}
