//! The front end's connections: reading and parsing requests, stepping their bodies, writing
//! responses, keep-alive, pipelining and closing.
//!
//! What a connection's progress means elsewhere is handed back to the loop: a parsed head
//! (`Step::Started`) is routed by it, a body bound for a worker (`Step::Pump`) is moved by it,
//! and an answered, ended or abandoned request is recorded as an effect (`LeftQueue`,
//! `RequestEnded`, `CancelStream`, `ReturnCredit`).

use super::FrontEnd;
use super::conn::{
    AccessFacts, BodyInput, BodyLeft, BodyStep, Conn, EndedRequest, Filled, MAX_COLLECTED_BODY,
    Request, RequestTiming, Resp, Sink, body_complete_in,
};
use crate::fc::{self, InvokeKind, Phase, Route, Target};
use crate::http::chunked::{ChunkedDecoder, LAST_CHUNK};
use crate::http::error::HttpError;
use crate::http::request::{BodyKind, Parsed, parse_request};
use crate::http::response::{self, Framing};
use crate::ids::ConnRef;
use crate::ids::WorkerKey;
use crate::reactor::slab::{Key, Slab};
use crate::reactor::token::{self, Source};
use crate::server::console::Stream;
use crate::server::effects::Effect;
use crate::server::{Lent, Timer};
use crate::turf::origin;
use crate::turf::worker::Worker;
use std::time::Duration;

/// Bound on parse/pump rounds per readiness event, so one connection cannot starve the loop
/// (a client pipelining thousands of tiny requests is served in slices).
pub(in crate::server) const MAX_ROUNDS_PER_EVENT: usize = 64;

/// What one step on a connection's buffered input came to.
pub(in crate::server) enum Step {
    /// Nothing more until more bytes arrive, the answer is written or room frees up.
    Wait,
    /// Progress was made; step again.
    Continue,
    /// A request head was parsed and its request started: the loop routes it.
    Started(Started),
    /// The current request's body goes to a worker's stream, within its credit.
    Pump {
        /// The worker.
        worker: WorkerKey,
        /// The stream.
        stream: u32,
    },
    /// The current admin request's body has been collected whole.
    AdminBody(ConnRef),
}

/// A request whose head was just parsed, for the loop to route.
pub(in crate::server) struct Started {
    pub(in crate::server) client: ConnRef,
    /// Its FC route (or why its control path is bad).
    pub(in crate::server) route: Result<Route, String>,
    /// The function or service it names in `x-noslate-function`/`x-noslate-service`, or why
    /// the two contradict.
    pub(in crate::server) target: Result<Option<Target>, String>,
    /// It came on the admin socket: its method and path (FC's routes never apply there).
    pub(in crate::server) admin: Option<(String, String)>,
    /// It came on the metrics listener: its method and path.
    pub(in crate::server) metrics: Option<(String, String)>,
}

/// Progress of a collected body.
enum Collected {
    /// Wait for more bytes.
    More,
    /// The whole body is in `Request::collected`.
    Done,
    /// Over the limit (or broken framing): answered with 413 and closed.
    TooLarge,
}

/// An error the runtime answers an invocation with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeError {
    /// HTTP status.
    pub status: u16,
    /// FC-style error type.
    pub error_type: String,
    /// What went wrong.
    pub message: String,
    /// Stack trace lines, for function errors.
    pub stack: Option<Vec<String>>,
}

impl InvokeError {
    /// An error with no stack trace.
    pub fn new(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        InvokeError {
            status,
            error_type: error_type.to_owned(),
            message: message.into(),
            stack: None,
        }
    }
}

/// Answers a connection the runtime cannot hold with 503 and drops it.
pub fn refuse_connection(sock: &mut mio::net::TcpStream, why: &str) {
    let mut out = Vec::new();
    let body = response::error_body("TooManyConnections", why);
    let mut date = crate::http::date::DateCache::new();
    response::write_json_response(&mut out, 503, &[], &body, false, date.get());
    // Best effort: the socket is fresh, so a short response fits in its buffer.
    let _ = std::io::Write::write(sock, &out);
}

/// Writes the answer to a request the HTTP layer refused (a head that does not parse, or did
/// not arrive in time). On the admin socket it carries `x-noslate-error`, as every answer the
/// runtime makes there does, so that a client does not take it for a function's response.
fn write_refusal(conn: &mut Conn, err: &HttpError, date: &[u8]) {
    let admin = [(crate::admin::invocation::ERROR, err.error_type())];
    let extra: &[(&str, &str)] = if conn.sock.is_admin() { &admin } else { &[] };
    response::write_error(&mut conn.wbuf, err, extra, false, date);
}

impl FrontEnd {
    /// Whether connection `key` is closing and only drains what its client still sends.
    pub(in crate::server) fn is_lingering(&self, key: Key) -> bool {
        self.conns.get(key).is_some_and(|c| c.linger.is_some())
    }

    /// After a round on `key`: reads more from its socket when its state can use more input
    /// (`workers` says which streams have credit for a body). Returns whether a new round is
    /// worth it.
    pub(in crate::server) fn read_more(
        &mut self,
        key: Key,
        workers: &Slab<Worker, WorkerKey>,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.close_when_flushed && conn.req.is_none() {
            return false;
        }
        if !wants_input(conn, workers) || conn.input_full() {
            return false;
        }
        matches!(conn.fill(&mut self.spares), Filled::Bytes(n) if n > 0)
    }

    /// Ends a drive of `key`: notices a client that left (its end of stream may have come with
    /// its last bytes), and puts off pipelined requests left over after the round limit to the
    /// next iteration.
    pub(in crate::server) fn end_drive(&mut self, key: Key, lp: &mut Lent<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.hung_up && !conn.peer_closed && conn.req.is_none() && !conn.input_full() {
            // The client's last bytes and its end of stream can come in one event, and the
            // short read that took the bytes stops before the end of stream: look for it.
            conn.maybe_readable = true;
            if let Filled::Bytes(n) = conn.fill(&mut self.spares)
                && n > 0
            {
                lp.effects.push(Effect::DriveConn(key));
                return;
            }
        }
        // A hang-up seen while a request is in progress means the client left, even if its
        // last bytes were not read (a queued request is not read, for backpressure).
        if conn.peer_closed || (conn.hung_up && conn.req.is_some()) {
            self.on_peer_closed(key, lp);
        } else if conn.req.is_none() && conn.has_parsable_input() && !conn.has_output() {
            // The round limit was hit with pipelined requests left: serve them on the next
            // iteration, after the other connections have had their turn.
            lp.effects.drive_next_iteration(key);
        }
    }

    /// One step on `key`'s buffered input, without reading the socket. `serving` is whether
    /// the runtime serves (while it stops, every answer closes its connection).
    pub(in crate::server) fn step(&mut self, key: Key, serving: bool, lp: &mut Lent<'_>) -> Step {
        let Some(conn) = self.conns.get_mut(key) else {
            return Step::Wait;
        };
        let Some(req) = conn.req.as_ref() else {
            // Pipelined requests wait while earlier responses are unsent, so a client that
            // sends without reading cannot grow the write buffer without bound: past its own
            // limit, or while all connections together hold too much, a connection with
            // unsent output starts nothing new (and so is not read either).
            let backlog = conn.unsent();
            let http = &lp.config.http;
            if conn.close_when_flushed
                || conn.input().is_empty()
                || backlog > http.max_connection_output_bytes
                || (backlog > 0 && self.buffered_output > http.max_buffered_bytes)
            {
                return Step::Wait;
            }
            return match parse_request(conn.input(), &self.request_limits) {
                Ok(Parsed::Partial) => {
                    conn.awaiting_bytes = true;
                    if conn.peer_closed {
                        // The client closed in the middle of a head: nothing to answer.
                        conn.close_when_flushed = true;
                    } else if conn.head_timer.is_none() {
                        let due = lp.clock.now() + Duration::from_millis(http.header_timeout_ms);
                        conn.head_timer = Some(lp.timers.schedule(due, Timer::HeadTimeout(key)));
                    }
                    Step::Wait
                }
                Ok(Parsed::Complete { head, head_len }) => {
                    conn.consume(head_len);
                    if let Some(timer) = conn.head_timer.take() {
                        lp.timers.cancel(timer);
                    }
                    match self.start_request(key, head, serving, lp) {
                        Some(started) => Step::Started(started),
                        None => Step::Continue,
                    }
                }
                Err(err) => {
                    self.reject_head(key, &err, lp);
                    Step::Wait
                }
            };
        };
        let client = ConnRef {
            conn: key,
            seq: req.seq,
        };
        match req.sink {
            Sink::Hold => Step::Wait,
            Sink::Worker { worker, stream } => Step::Pump { worker, stream },
            Sink::Discard => {
                if self.discard_body(key) && self.try_complete(key, serving, lp) {
                    Step::Continue
                } else {
                    Step::Wait
                }
            }
            Sink::Collect => match self.collect_body(key) {
                Collected::More => Step::Wait,
                Collected::TooLarge => {
                    let err = InvokeError::new(
                        413,
                        "PayloadTooLarge",
                        format!("admin request bodies are limited to {MAX_COLLECTED_BODY} bytes"),
                    );
                    self.respond_error(client, &err, false, lp);
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.close_when_flushed = true;
                    }
                    Step::Wait
                }
                Collected::Done => Step::AdminBody(client),
            },
        }
    }

    /// A head that could not be parsed: answer and close, since the stream cannot be resynced.
    fn reject_head(&mut self, key: Key, err: &HttpError, lp: &mut Lent<'_>) {
        log::debug!("[http conn={}] bad request: {err}", key.idx);
        let date = self.date.get_at(lp.clock.wall());
        if let Some(conn) = self.conns.get_mut(key) {
            write_refusal(conn, err, date);
            conn.close_when_flushed = true;
            conn.consume(conn.input().len());
        }
        lp.effects.push(Effect::FlushConn(key));
    }

    /// Starts the request whose head was just parsed on `key`, and says how to route it.
    fn start_request(
        &mut self,
        key: Key,
        head: crate::http::request::RequestHead,
        serving: bool,
        lp: &mut Lent<'_>,
    ) -> Option<Started> {
        let request_id = fc::call_request_id(&head.headers)
            .map(str::to_owned)
            .unwrap_or_else(|| self.ids.next_id());
        let route = fc::route(
            &head.method,
            head.path(),
            head.header("x-fc-control-path"),
            &lp.config.readiness_path,
        )
        .map_err(|err| err.0);
        let target = match (
            head.header("x-noslate-function"),
            head.header("x-noslate-service"),
        ) {
            (Some(_), Some(_)) => {
                Err("name either x-noslate-function or x-noslate-service, not both".to_owned())
            }
            (Some(f), None) => Ok(Some(Target::Function(f.to_owned()))),
            (None, Some(s)) => Ok(Some(Target::Service(s.to_owned()))),
            (None, None) => Ok(None),
        };
        let max_body = lp.config.http.max_request_body_size;
        let conn = self.conns.get_mut(key)?;
        conn.provide_write_buffer(&mut self.spares);
        conn.seq += 1;
        // While stopping, every answer closes its connection.
        let keep_alive = head.keep_alive && serving;
        let body = match head.body {
            BodyKind::None | BodyKind::Length(0) => BodyLeft::Done,
            BodyKind::Length(n) => BodyLeft::Length(n),
            BodyKind::Chunked => BodyLeft::Chunked(ChunkedDecoder::new(max_body)),
        };
        let admin = conn
            .sock
            .is_admin()
            .then(|| (head.method.clone(), head.path().to_owned()));
        let metrics = conn
            .metrics_only
            .then(|| (head.method.clone(), head.path().to_owned()));
        let access = self
            .ended
            .is_some()
            .then(|| AccessFacts::new(lp.clock.now()));
        conn.req = Some(Request {
            seq: conn.seq,
            id: request_id,
            phase: None,
            end_logged: false,
            function: None,
            kind: InvokeKind::Http,
            is_head: head.is_head(),
            minor_version: head.minor_version,
            keep_alive,
            expect_continue: head.expect_continue,
            continue_sent: false,
            body,
            sink: Sink::Hold,
            splice_body: false,
            resp: Resp::NotStarted,
            deadline_timer: None,
            timeout_ms: 0,
            deadline: lp.clock.now(),
            head_deadline: false,
            baggage: None,
            counted: false,
            collected: Vec::new(),
            admin: None,
            timing: RequestTiming::default(),
            access,
            head: Some(head),
        });
        Some(Started {
            client: ConnRef {
                conn: key,
                seq: conn.seq,
            },
            route,
            target,
            admin,
            metrics,
        })
    }

    /// Whether the client of `key` is one of the runtime's own descendants (a function calling
    /// the FC port over loopback), or a local client that no longer holds its socket. Only
    /// clients on this machine are traced, once per connection. Where `/proc` cannot be read
    /// at all, the client is taken for an outsider, since refusing would lock out an
    /// operator's local call.
    pub(in crate::server) fn client_is_descendant(
        &mut self,
        key: Key,
        trusted: Option<i32>,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if let Some(known) = conn.from_descendant {
            return known;
        }
        let verdict = peer_is_descendant(conn, key, trusted);
        conn.from_descendant = Some(verdict);
        verdict
    }

    /// Marks `client`'s request a call of hook `phase` and writes FC's Start line.
    pub(in crate::server) fn begin_hook(&mut self, client: ConnRef, phase: Phase) {
        if let Some(req) = request_in(&mut self.conns, client) {
            req.phase = Some(phase);
            self.fc_log.start(phase, &req.id);
        }
    }

    /// Marks `client`'s request an invocation of `kind` and writes FC's Start line; false when
    /// the request is gone.
    pub(in crate::server) fn begin_invocation(
        &mut self,
        client: ConnRef,
        kind: InvokeKind,
    ) -> bool {
        let Some(req) = request_in(&mut self.conns, client) else {
            return false;
        };
        req.kind = kind;
        req.phase = Some(Phase::Invoke);
        self.fc_log.start(Phase::Invoke, &req.id);
        true
    }

    /// The request `client` refers to, if it is still the connection's current one.
    pub(in crate::server) fn request_mut(&mut self, client: ConnRef) -> Option<&mut Request> {
        request_in(&mut self.conns, client)
    }

    /// Drops body bytes of a request whose answer no longer needs them. Returns whether the
    /// body is now fully consumed.
    fn discard_body(&mut self, key: Key) -> bool {
        let Some(BodyInput {
            req,
            input: inbuf,
            close_when_flushed,
        }) = self.conns.get_mut(key).and_then(Conn::body_input)
        else {
            return false;
        };
        loop {
            if req.body.is_done() {
                return true;
            }
            let used = match req.body.step(inbuf.data(), usize::MAX) {
                BodyStep::Data { used, .. } | BodyStep::NeedMore { used } => used,
                BodyStep::Refused(err) => {
                    // The framing is broken: nothing after it can be trusted.
                    log::debug!(
                        "[http conn={} req={}] discarding body: {err}",
                        key.idx,
                        req.id
                    );
                    req.keep_alive = false;
                    *close_when_flushed = true;
                    inbuf.data().len()
                }
            };
            inbuf.consume(used);
            if used == 0 {
                return req.body.is_done();
            }
        }
    }

    /// Appends body bytes to the request's collection buffer.
    fn collect_body(&mut self, key: Key) -> Collected {
        let Some(BodyInput {
            req, input: inbuf, ..
        }) = self.conns.get_mut(key).and_then(Conn::body_input)
        else {
            return Collected::More;
        };
        loop {
            if req.body.is_done() {
                return Collected::Done;
            }
            let used = match req.body.step(inbuf.data(), usize::MAX) {
                BodyStep::Data { used, data, .. } => {
                    req.collected.extend_from_slice(data);
                    used
                }
                BodyStep::NeedMore { used } => used,
                BodyStep::Refused(_) => {
                    req.keep_alive = false;
                    return Collected::TooLarge;
                }
            };
            inbuf.consume(used);
            if req.collected.len() > MAX_COLLECTED_BODY {
                req.body = BodyLeft::Done;
                req.keep_alive = false;
                return Collected::TooLarge;
            }
            if used == 0 && !req.body.is_done() {
                return Collected::More;
            }
        }
    }

    /// Completes the current request if its response is fully buffered and its body consumed.
    /// Returns whether the connection moved on to the next request.
    pub(in crate::server) fn try_complete(
        &mut self,
        key: Key,
        serving: bool,
        lp: &mut Lent<'_>,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(req) = conn.req.as_ref() else {
            return false;
        };
        if req.resp != Resp::Done || !req.body.is_done() {
            return false;
        }
        let keep_alive = req.keep_alive && serving;
        self.end_request(key, lp);
        if let Some(conn) = self.conns.get_mut(key) {
            // A client that half-closed after its requests gets every answer, then the close.
            if !keep_alive || (conn.peer_closed && !conn.has_parsable_input()) {
                conn.close_when_flushed = true;
                return false;
            }
            conn.release_if_idle(&mut self.spares);
        }
        true
    }

    /// Forgets the connection's current request: its deadline, FC's End line; what it held
    /// elsewhere (its place in flight) is released by `RequestEnded`.
    pub(in crate::server) fn end_request(&mut self, key: Key, lp: &mut Lent<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let client_addr = conn.peer;
        let Some(mut req) = conn.req.take() else {
            return;
        };
        // Back to a head's size after a streamed body (bridge::open_stream). Only the limit:
        // growing a head's 4 KiB buffer to it here cost an allocation and a 13 KiB memset per
        // request.
        conn.inbuf.limit_to(self.rbuf_size);
        if let Some(timer) = req.deadline_timer {
            lp.timers.cancel(timer);
        }
        if let (true, Some(function)) = (req.counted, req.function) {
            // Still queued (the client left, or it was answered while waiting): its place is
            // freed too, so that stale entries never count against dataPlane.requestQueueLimit.
            lp.effects.push(Effect::RequestEnded {
                function,
                client: ConnRef {
                    conn: key,
                    seq: req.seq,
                },
                still_queued: matches!(req.sink, Sink::Hold),
                finished: if self.count_invocations {
                    req.timing.finished(lp.clock.now())
                } else {
                    None
                },
            });
        }
        req.log_end(&mut self.fc_log);
        if let (Some(ended), Some(mut facts), Some(phase)) =
            (self.ended.as_mut(), req.access.take(), req.phase)
        {
            // Answered without a worker: the head is still here.
            if let Some(head) = req.head.take() {
                facts.take_line(head);
            }
            ended.push(EndedRequest {
                time: crate::reactor::clock::unix_millis(lp.clock.wall()),
                id: req.id,
                phase,
                function: req.function,
                facts,
                timing: req.timing,
                ended: lp.clock.now(),
                client: client_addr,
            });
        }
    }

    /// Writes a complete JSON response for the current request.
    pub(in crate::server) fn respond_json(
        &mut self,
        client: ConnRef,
        status: u16,
        extra: &[(&str, &str)],
        body: &[u8],
        lp: &mut Lent<'_>,
    ) {
        self.respond(client, status, "application/json", extra, body, lp);
    }

    /// Writes a complete response with a body of `content_type` for the current request.
    pub(in crate::server) fn respond(
        &mut self,
        client: ConnRef,
        status: u16,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        lp: &mut Lent<'_>,
    ) {
        let date = self.date.get_at(lp.clock.wall());
        let Some(conn) = self.conns.get_mut(client.conn) else {
            return;
        };
        let Conn {
            inbuf,
            req,
            wbuf,
            close_when_flushed,
            ..
        } = conn;
        let Some(req) = req.as_mut().filter(|r| r.seq == client.seq) else {
            return;
        };
        if req.resp != Resp::NotStarted {
            return;
        }
        // A client still waiting for `100 Continue` will not send its body; the connection
        // cannot be reused safely, so it closes after this answer.
        if req.expect_continue && !req.continue_sent && !req.body.is_done() {
            req.keep_alive = false;
            req.body = BodyLeft::Done;
            inbuf.clear();
            *close_when_flushed = true;
        }
        let body = if req.is_head { &[][..] } else { body };
        // FC reads every hook answer's outcome from `x-fc-status`.
        let fc_status = if (200..300).contains(&status) {
            "200"
        } else {
            "404"
        };
        let with_status;
        let extra = if req.phase.is_some_and(Phase::is_hook)
            && !extra.iter().any(|(k, _)| *k == "x-fc-status")
        {
            with_status = [extra, &[("x-fc-status", fc_status)]].concat();
            &with_status[..]
        } else {
            extra
        };
        let head = response::Head {
            status,
            content_type,
            extra,
            keep_alive: req.keep_alive,
        };
        response::write_response(wbuf, &head, body, date);
        req.timing.status = status;
        // For HEAD, write_json_response announced the length of the body a GET would get,
        // which is right, and no body follows.
        req.complete_response(&mut self.fc_log);
        let was_queued = matches!(req.sink, Sink::Hold)
            .then_some(req.function)
            .flatten();
        req.sink = Sink::Discard;
        if let Some(function) = was_queued {
            // Answered while waiting (deadline, start failure): it leaves the queue.
            lp.effects.push(Effect::LeftQueue { function, client });
        }
        lp.effects.push(Effect::FlushConn(client.conn));
        // Consume the rest of the body and move on to the next request.
        lp.effects.push(Effect::DriveConn(client.conn));
    }

    /// Answers the current request with an error. `function_error` marks errors FC should count
    /// as the function's failure (`x-fc-status: 404`).
    pub(in crate::server) fn respond_error(
        &mut self,
        client: ConnRef,
        err: &InvokeError,
        function_error: bool,
        lp: &mut Lent<'_>,
    ) {
        let mut body = serde_json::json!({
            "errorMessage": err.message,
            "errorType": err.error_type,
        });
        if let Some(stack) = &err.stack {
            body["stackTrace"] = serde_json::json!(stack);
        }
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(2);
        if function_error {
            extra.push(("x-fc-status", "404"));
        }
        // On the admin socket, a client tells the runtime's own answers from a function's
        // response of the same status by this header.
        if self
            .conns
            .get(client.conn)
            .is_some_and(|c| c.sock.is_admin())
        {
            extra.push((crate::admin::invocation::ERROR, &err.error_type));
        }
        if let Some(req) = self.request_mut(client)
            && req.resp == Resp::NotStarted
        {
            req.note_error(&err.error_type);
        }
        self.respond_json(client, err.status, &extra, body.to_string().as_bytes(), lp);
    }

    /// Fails an invocation: a proper error response if nothing was sent yet, otherwise the
    /// connection is cut (the client sees a truncated body, which is the only honest signal
    /// left).
    /// `function_error` is whether FC should count it as the function's failure
    /// (`x-fc-status: 404`): not when the client's own body was refused.
    pub(in crate::server) fn fail_invocation(
        &mut self,
        client: ConnRef,
        err: &InvokeError,
        function_error: bool,
        lp: &mut Lent<'_>,
    ) {
        let Some(req) = self.request_mut(client) else {
            return;
        };
        match req.resp {
            Resp::NotStarted => {
                if let Sink::Worker { .. } = req.sink {
                    req.sink = Sink::Discard;
                }
                self.respond_error(client, err, function_error, lp);
            }
            Resp::Streaming { .. } => {
                log::info!(
                    "[http conn={} req={}] aborting response: {}",
                    client.conn.idx,
                    req.id,
                    err.message
                );
                req.resp = Resp::Done;
                req.keep_alive = false;
                req.body = BodyLeft::Done;
                req.sink = Sink::Discard;
                req.note_error(&err.error_type);
                self.end_request(client.conn, lp);
                if let Some(conn) = self.conns.get_mut(client.conn) {
                    conn.close_when_flushed = true;
                }
                lp.effects.push(Effect::FlushConn(client.conn));
                lp.effects.push(Effect::DriveConn(client.conn));
            }
            Resp::Done => {}
        }
    }

    /// Writes the response head a worker sent.
    pub(in crate::server) fn write_response_head(
        &mut self,
        client: ConnRef,
        status: u16,
        headers: Vec<(String, String)>,
        no_body: bool,
        lp: &mut Lent<'_>,
    ) {
        let date = self.date.get_at(lp.clock.wall());
        let Some(conn) = self.conns.get_mut(client.conn) else {
            return;
        };
        let Some(req) = conn.req.as_mut().filter(|r| r.seq == client.seq) else {
            return;
        };
        if req.resp != Resp::NotStarted {
            return;
        }
        // An event invocation answers 200 whatever the function said, and tells FC so.
        let (status, fc_status) = match req.kind {
            InvokeKind::Event => (200, Some(("x-fc-status", "200"))),
            InvokeKind::Http => (status, None),
        };
        let declared = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok());
        let length = if no_body { Some(0) } else { declared };
        let framing = response::response_framing(status, req.is_head, length, req.minor_version);
        // HEAD keeps the worker's Content-Length (what a GET would return) but sends no body.
        let announced = match (req.is_head, declared) {
            (true, Some(len)) => Framing::Length(len),
            _ => framing,
        };
        let fields = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        response::write_head(
            &mut conn.wbuf,
            status,
            fields.chain(fc_status),
            &announced,
            req.keep_alive,
            req.minor_version,
            date,
        );
        if framing == Framing::Close {
            req.keep_alive = false;
        }
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        req.resp = Resp::Streaming { framing, remaining };
        req.timing.status = status;
        req.timing.answered = Some(lp.clock.now());
        if req.head_deadline
            && let Some(timer) = req.deadline_timer.take()
        {
            lp.timers.cancel(timer);
        }
        lp.effects.push(Effect::FlushConn(client.conn));
    }

    /// Appends response-body bytes from a worker. Returns false when the worker broke the
    /// framing it declared (more bytes than its Content-Length).
    pub(in crate::server) fn write_response_body(
        &mut self,
        client: ConnRef,
        data: &[u8],
        end: bool,
        lp: &mut Lent<'_>,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(client.conn) else {
            return true;
        };
        let Some(req) = conn.req.as_mut().filter(|r| r.seq == client.seq) else {
            return true;
        };
        let Resp::Streaming { framing, remaining } = &mut req.resp else {
            return true;
        };
        req.timing.bytes_out += data.len() as u64;
        match framing {
            Framing::NoBody => {}
            Framing::Length(_) => {
                if data.len() as u64 > *remaining {
                    return false;
                }
                *remaining -= data.len() as u64;
                conn.wbuf.extend_from_slice(data);
                conn.body_in_wbuf += data.len();
            }
            Framing::Chunked => {
                if !data.is_empty() {
                    crate::http::chunked::encode_chunk_header(data.len(), &mut conn.wbuf);
                    conn.wbuf.extend_from_slice(data);
                    conn.wbuf.extend_from_slice(b"\r\n");
                    conn.body_in_wbuf += data.len();
                }
            }
            Framing::Close => {
                conn.wbuf.extend_from_slice(data);
                conn.body_in_wbuf += data.len();
            }
        }
        if end {
            match *framing {
                Framing::Chunked => conn.wbuf.extend_from_slice(LAST_CHUNK),
                Framing::Length(_) if *remaining > 0 => {
                    // Fewer bytes than announced: the client must not take this as complete.
                    log::warn!(
                        "[http conn={} req={}] worker ended the body {} bytes short of its \
                         Content-Length",
                        client.conn.idx,
                        req.id,
                        remaining
                    );
                    req.keep_alive = false;
                    conn.close_when_flushed = true;
                }
                Framing::Close => {
                    req.keep_alive = false;
                }
                _ => {}
            }
            req.complete_response(&mut self.fc_log);
            lp.effects.push(Effect::DriveConn(client.conn));
        }
        lp.effects.push(Effect::FlushConn(client.conn));
        true
    }

    /// Writes a connection's buffered output, returns response credit to its worker
    /// (`ReturnCredit`), and closes it when it is done.
    pub(in crate::server) fn flush_conn(&mut self, key: Key, lp: &mut Lent<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !self.fc_log.take().is_empty() {
            // FC's End lines go out before the bytes that finish their responses.
            // Dropped lines are counted by the console.
            let _ = lp.console.write_own(Stream::Out, self.fc_log.take());
            self.fc_log.clear();
            lp.console.flush(lp.registry);
        }
        let written = match conn.flush() {
            Ok(n) => n,
            Err(err) => {
                log::debug!("[http conn={}] write failed: {err}", key.idx);
                // Nobody is left to read an answer: the connection goes, whatever it held.
                conn.peer_closed = true;
                conn.reset = true;
                self.on_peer_closed(key, lp);
                return;
            }
        };
        conn.watch_writable(lp.registry, token::token(Source::Conn(key)));
        let credited = written.min(conn.body_in_wbuf);
        conn.body_in_wbuf -= credited;
        conn.credit_owed = conn
            .credit_owed
            .saturating_add(u32::try_from(credited).unwrap_or(u32::MAX));
        let stream = conn.req.as_ref().and_then(|r| match (r.sink, r.resp) {
            (Sink::Worker { worker, stream }, Resp::Streaming { .. }) => Some((worker, stream)),
            _ => None,
        });
        if let Some((worker, stream)) = stream {
            // A quarter of the window: the worker keeps three quarters in flight while this
            // part travels back, and the WINDOW frames stay few.
            let owed = conn.credit_owed;
            let step = lp.config.data_plane.stream_window / 4;
            if owed >= step || (owed > 0 && !conn.has_output()) {
                conn.credit_owed = 0;
                lp.effects.push(Effect::ReturnCredit {
                    worker,
                    stream,
                    bytes: owed,
                });
            }
        } else {
            conn.credit_owed = 0;
        }
        let unsent = conn.unsent();
        self.buffered_output = self.buffered_output - conn.accounted_output + unsent;
        conn.accounted_output = unsent;
        if !conn.has_output() {
            if conn.close_when_flushed {
                self.begin_close(key, lp);
                return;
            }
            conn.release_if_idle(&mut self.spares);
            // Finished a response with pipelined requests behind it: serve them. The start of
            // a head still arriving waits for its next readable event instead.
            if conn.req.is_none() && conn.has_parsable_input() {
                lp.effects.push(Effect::DriveConn(key));
            }
        }
    }

    /// The client closed its side (a FIN, which may be only a half-close), the socket failed,
    /// or the poller reported a hang-up that has not been read yet.
    ///
    /// A FIN after a complete request is not a cancel: the client may still be reading, so the
    /// request is answered and the connection closes after it. Only a request whose bytes can
    /// no longer all arrive is cancelled.
    fn on_peer_closed(&mut self, key: Key, lp: &mut Lent<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.req.is_some() && !conn.peer_closed && !conn.input_full() {
            // A queued request's bytes are left in the socket for backpressure: read them now,
            // to learn whether its body is all there.
            conn.maybe_readable = true;
            conn.fill(&mut self.spares);
        }
        let Some(req) = conn.req.as_mut() else {
            if conn.has_parsable_input() && !conn.reset {
                // Complete pipelined requests are still answered (on the next iteration).
                return;
            }
            // Between requests: nothing is lost. Send what is buffered, then close; after a
            // reset nothing can be sent, and unsent output would keep the connection for ever.
            conn.close_when_flushed = true;
            if !conn.has_output() || conn.reset {
                self.close_conn(key, lp);
            }
            return;
        };
        if !conn.reset && (!conn.peer_closed || body_complete_in(&req.body, conn.inbuf.data())) {
            // Either the whole request is here, or its remaining bytes may still be waiting in
            // the socket: answer it (the connection closes after the response).
            return;
        }
        if req.resp == Resp::Done && !conn.reset {
            // Answered already (an early error): send the answer, then close.
            req.body = BodyLeft::Done;
            req.keep_alive = false;
            conn.close_when_flushed = true;
            lp.effects.push(Effect::FlushConn(key));
            lp.effects.push(Effect::DriveConn(key));
            return;
        }
        // Mid-request, or reset: the rest of the request can never arrive, or nobody is left
        // to read the answer. Cancel its work and drop the connection.
        log::debug!(
            "[http conn={} req={}] client went away during the request",
            key.idx,
            req.id
        );
        self.close_conn(key, lp);
    }

    /// Ends the connection's current request, if any, cancelling its worker stream (`why` is
    /// what the worker is told).
    fn abandon_request(&mut self, key: Key, why: &'static str, lp: &mut Lent<'_>) {
        let sink = (self.conns.get(key))
            .and_then(|c| c.req.as_ref())
            .map(|r| r.sink);
        if let Some(Sink::Worker { worker, stream }) = sink {
            lp.effects.push(Effect::CancelStream {
                worker,
                stream,
                why,
            });
        }
        self.end_request(key, lp);
    }

    /// Closes a connection whose answers are all written: shuts down writing (a FIN, so the
    /// client reads the last response to its end), then reads and drops what the client still
    /// sends until it closes, so that unread input does not turn the close into a reset that
    /// destroys the response. Bounded by `http.lingerTimeoutMs` and `http.lingerMaxBytes`.
    pub(in crate::server) fn begin_close(&mut self, key: Key, lp: &mut Lent<'_>) {
        self.abandon_request(key, "the connection is closing", lp);
        let timeout = Duration::from_millis(lp.config.http.linger_timeout_ms);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.linger.is_some() {
            return;
        }
        if conn.peer_closed || timeout.is_zero() || conn.sock.shutdown_write().is_err() {
            self.close_conn(key, lp);
            return;
        }
        if let Some(timer) = conn.head_timer.take() {
            lp.timers.cancel(timer);
        }
        conn.wbuf = Vec::new();
        conn.wstart = 0;
        conn.lingered = conn.input().len() as u64;
        conn.inbuf.clear();
        conn.inbuf.release_if_empty();
        conn.linger = Some(
            lp.timers
                .schedule(lp.clock.now() + timeout, Timer::Linger(key)),
        );
        self.drain_lingering(key, lp);
    }

    /// Reads and drops a closing connection's input; closes it at end of stream or past
    /// `http.lingerMaxBytes`.
    pub(in crate::server) fn drain_lingering(&mut self, key: Key, lp: &mut Lent<'_>) {
        let limit = lp.config.http.linger_max_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        loop {
            let filled = conn.fill(&mut self.spares);
            let read = conn.input().len() as u64;
            conn.inbuf.clear();
            conn.lingered += read;
            match filled {
                Filled::Closed => break,
                _ if conn.lingered > limit => break,
                Filled::Bytes(0) => {
                    conn.inbuf.release_if_empty();
                    return;
                }
                Filled::Bytes(_) => {}
            }
        }
        self.close_conn(key, lp);
    }

    /// A started head did not complete within `http.headerTimeoutMs`: 408, then close.
    pub(in crate::server) fn on_head_timeout(&mut self, key: Key, lp: &mut Lent<'_>) {
        let date = self.date.get_at(lp.clock.wall());
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.head_timer = None;
        if conn.req.is_some() || conn.linger.is_some() || conn.input().is_empty() {
            return;
        }
        log::debug!(
            "[http conn={}] request head incomplete after http.headerTimeoutMs",
            key.idx
        );
        let err = HttpError::HeadTimeout(lp.config.http.header_timeout_ms);
        write_refusal(conn, &err, date);
        conn.close_when_flushed = true;
        conn.consume(conn.input().len());
        lp.effects.push(Effect::FlushConn(key));
    }

    /// Closes a connection now, cancelling whatever it was waiting for.
    pub(in crate::server) fn close_conn(&mut self, key: Key, lp: &mut Lent<'_>) {
        if let Some(conn) = self.conns.get_mut(key) {
            for timer in [conn.head_timer.take(), conn.linger.take()]
                .into_iter()
                .flatten()
            {
                lp.timers.cancel(timer);
            }
            self.buffered_output -= conn.accounted_output;
            conn.accounted_output = 0;
        }
        // Queue entries for this connection go stale (their key no longer resolves).
        self.abandon_request(key, "client closed the connection", lp);
        if let Some(mut conn) = self.conns.remove(key) {
            if let Err(err) = lp.registry.deregister(&mut conn.sock) {
                log::debug!("[http conn={}] deregister failed: {err}", key.idx);
            }
            log::trace!("[http conn={}] closed", key.idx);
        }
    }
}

/// The request `client` refers to, borrowing only the connection slab.
pub(in crate::server) fn request_in(
    conns: &mut Slab<Conn>,
    client: ConnRef,
) -> Option<&mut Request> {
    conns
        .get_mut(client.conn)
        .and_then(|c| c.req.as_mut())
        .filter(|r| r.seq == client.seq)
}

/// Whether the connection's state can use more input right now.
fn wants_input(conn: &Conn, workers: &Slab<Worker, WorkerKey>) -> bool {
    let Some(req) = conn.req.as_ref() else {
        // Read only to complete a head: complete pipelined requests already buffered are
        // parsed first, and the socket holds the rest.
        return !conn.close_when_flushed && !conn.has_parsable_input();
    };
    if req.body.is_done() {
        return false;
    }
    match req.sink {
        Sink::Hold => false,
        Sink::Discard | Sink::Collect => true,
        // A spliced body is read by the splice, once the buffered bytes went.
        Sink::Worker { .. } if req.splice_body && conn.input().is_empty() => false,
        Sink::Worker { worker, stream } => workers
            .get(worker)
            .and_then(|w| w.streams.get(&stream))
            .is_some_and(|s| s.request_credit > 0),
    }
}

/// Whether the peer of `conn` is one of the runtime's own descendants, or a local client that
/// no longer holds its socket (see `turf::origin`).
fn peer_is_descendant(conn: &Conn, key: Key, trusted: Option<i32>) -> bool {
    let super::conn::Socket::Tcp(sock) = &conn.sock else {
        return false;
    };
    let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
        return false;
    };
    if !origin::is_local_peer(local, peer) {
        return false;
    }
    match origin::trace(local, peer, crate::sys::getpid()) {
        origin::Origin::Descendant(pid)
            if !origin::is_workers_process(pid, crate::sys::getpid(), trusted) =>
        {
            log::debug!(
                "[http conn={}] the peer is pid {pid}, the gateway or one of its processes",
                key.idx
            );
            false
        }
        origin::Origin::Descendant(pid) => {
            log::warn!(
                "[http conn={}] the peer is pid {pid}, a process of the runtime's own \
                 workers",
                key.idx
            );
            true
        }
        origin::Origin::Gone => true,
        origin::Origin::Outside => false,
        origin::Origin::Untraceable(why) => {
            log::warn!(
                "[http conn={}] cannot trace the peer {peer}: {why}",
                key.idx
            );
            false
        }
    }
}
