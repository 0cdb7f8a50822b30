//! The loop's glue, driven with synthetic events and no worker process: a real `Server` bound
//! to an ephemeral loopback port, real client sockets, and workers that are records with pipes
//! but no process. Each test feeds the server one event the loop would route (a connection
//! became readable, a worker's frames arrived, a worker died, a deadline fired) and asserts
//! the effects it records and the state the owners are left in. Nothing here drains `Scale`,
//! which would start real processes.

use super::console;
use super::effects::Effect;
use super::{ClientReadiness, Server, ServerOptions};
use crate::config::{SystemConfig, parse_functions};
use crate::ids::ConnRef;
use crate::ids::{FunctionId, WorkerKey};
use crate::reactor::slab::Key;
use crate::turf::worker::{Worker, WorkerState};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A server over a throw-away work directory, with the clients connected to it.
struct Harness {
    server: Server,
    dir: PathBuf,
    /// The workers' ends of their input pipes, kept open so that writes to them succeed.
    worker_inputs: Vec<mio::unix::pipe::Receiver>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ONE_FUNCTION: &str = r#"[{"name": "hello", "runtime": "nodejs", "url": "code",
    "handler": "index.handler", "signature": "s"}]"#;

fn harness(functions: &str) -> Harness {
    harness_with(functions, |_| {})
}

fn harness_with(functions: &str, tune: impl FnOnce(&mut SystemConfig)) -> Harness {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("noslate-glue-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["code", "work", "log"] {
        std::fs::create_dir_all(dir.join(sub)).expect("test dirs");
    }
    std::fs::write(dir.join("code/index.js"), "exports.handler = () => {};").expect("code");
    let index = b"exports.handler = () => {};";
    std::fs::write(dir.join("code.zip"), stored_zip("index.js", index)).expect("code.zip");
    std::fs::write(dir.join("bad.zip"), b"not a zip at all").expect("bad.zip");
    let mut config = SystemConfig::default();
    tune(&mut config);
    let set = parse_functions(functions, &dir, &config).expect("valid profiles");
    let server = Server::bind(ServerOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        config,
        functions: set.functions,
        services: set.services,
        raw_functions: Vec::new(),
        raw_services: Vec::new(),
        functions_base: dir.clone(),
        workdir: dir.join("work"),
        logdir: dir.join("log"),
    })
    .expect("bind");
    Harness {
        server,
        dir,
        worker_inputs: Vec::new(),
    }
}

impl Harness {
    /// Connects a client and lets the server accept it; returns the client and its key.
    fn connect(&mut self) -> (TcpStream, Key) {
        let client = TcpStream::connect(self.server.local_addr().expect("an HTTP listener"))
            .expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let before = self.server.front.connections_keys();
        self.server.accept();
        let key = self
            .server
            .front
            .connections_keys()
            .into_iter()
            .find(|k| !before.contains(k))
            .expect("accepted");
        self.take_effects();
        (client, key)
    }

    /// Sends `bytes` from `client` and delivers the readiness event the loop would.
    fn send(&mut self, client: &mut TcpStream, key: Key, bytes: &[u8]) {
        client.write_all(bytes).expect("write");
        self.readable(key);
    }

    /// The readiness event for `key`, once the bytes sent are there to read.
    fn readable(&mut self, key: Key) {
        // Loopback delivers at once, but the event is only routed once the bytes are readable.
        wait_readable(&self.server, key);
        if let Some(conn) = self.server.front.conn_mut(key) {
            conn.maybe_readable = true;
        }
        self.server.drive_conn(key);
    }

    /// The hang-up event the poller reports once the client has closed its side.
    fn hang_up(&mut self, key: Key) {
        wait_readable(&self.server, key);
        if let Some(conn) = self.server.front.conn_mut(key) {
            conn.hung_up = true;
        }
        self.readable(key);
    }

    /// The effects recorded so far, in the order the loop would carry them out.
    fn take_effects(&mut self) -> Vec<Effect> {
        std::iter::from_fn(|| self.server.effects.pop()).collect()
    }

    /// Carries out the recorded effects except re-planning launches (which would start
    /// processes), and returns what ran.
    fn run_effects_but_scale(&mut self) -> Vec<Effect> {
        let mut ran = Vec::new();
        while let Some(effect) = self.server.effects.pop() {
            ran.push(effect);
            match effect {
                Effect::Scale(_) => {}
                Effect::Waiters => self.server.answer_init_waiters(),
                other => self.server.run_effect(other),
            }
        }
        ran
    }

    /// The supervisor takes `worker` out of service (a kill, a crash, a closed pipe).
    fn worker_gone(&mut self, worker: WorkerKey, reason: &str) {
        let server = &mut self.server;
        server
            .supervisor
            .worker_gone(worker, reason, &mut lent!(server));
    }

    /// A ready worker of `function` with pipes and no process.
    fn ready_worker(&mut self, function: usize) -> (WorkerKey, mio::unix::pipe::Sender) {
        self.worker_in_state(function, WorkerState::Ready)
    }

    /// A worker of `function` in `state`, with pipes and no process.
    fn worker_in_state(
        &mut self,
        function: usize,
        state: WorkerState,
    ) -> (WorkerKey, mio::unix::pipe::Sender) {
        let function = FunctionId::new(function);
        let (to_worker, worker_input) = mio::unix::pipe::new().expect("pipe");
        self.worker_inputs.push(worker_input);
        let (from_worker_tx, from_worker) = mio::unix::pipe::new().expect("pipe");
        let mut worker = Worker::new("hello-t".into(), function, 0, to_worker, from_worker);
        if state != WorkerState::Starting {
            worker.advance(state);
        }
        let key = self.server.supervisor.adopt_worker(worker);
        self.server.scheduler.functions_mut()[function]
            .pool
            .workers
            .push(key);
        (key, from_worker_tx)
    }

    /// Invocations `worker` is running now; `None` once its record is gone.
    fn active(&self, worker: WorkerKey) -> Option<usize> {
        self.server
            .supervisor
            .workers()
            .get(worker)
            .map(Worker::active)
    }

    fn queue(&self, function: usize) -> Vec<ConnRef> {
        self.server.scheduler.functions()[function]
            .pool
            .queue
            .iter()
            .copied()
            .collect()
    }
}

/// Waits (bounded) until the server's end of `key` has bytes or a close to read.
fn wait_readable(server: &Server, key: Key) {
    use std::os::fd::AsFd;
    let Some(conn) = server.front.conn(key) else {
        return;
    };
    let fd = match &conn.sock {
        super::conn::Socket::Tcp(s) => s.as_fd(),
        super::conn::Socket::Unix(s) => s.as_fd(),
    };
    let _ = crate::sys::wait_readable(fd, Duration::from_secs(5));
}

/// Reads what the server wrote to `client` until `done` says the answer is complete.
fn read_answer(client: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&got)) {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn complete(text: &str) -> bool {
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    if text[..end]
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return text[end..].ends_with("\r\n0\r\n\r\n");
    }
    let length = text[..end]
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    text.len() >= end + 4 + length
}

const INVOKE: &[u8] = b"POST /invoke HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi";

fn client_of(key: Key, seq: u64) -> ConnRef {
    ConnRef { conn: key, seq }
}

#[test]
fn an_invocation_is_queued_then_dispatch_and_scale_are_recorded_in_that_order() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    assert_eq!(h.queue(0), [client_of(key, 1)]);
    assert_eq!(h.server.scheduler.inflight(), 1);
    assert_eq!(
        h.take_effects(),
        [
            Effect::Dispatch(FunctionId::new(0)),
            Effect::Scale(FunctionId::new(0))
        ]
    );
}

#[test]
fn a_request_in_single_bytes_is_dispatched_once_when_its_head_is_whole() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    let head_len = INVOKE.len() - 2;
    let mut dispatches = 0;
    for (i, byte) in INVOKE.iter().enumerate() {
        h.send(&mut client, key, std::slice::from_ref(byte));
        let effects = h.take_effects();
        let dispatched = effects
            .iter()
            .filter(|e| **e == Effect::Dispatch(FunctionId::new(0)))
            .count();
        if i + 1 < head_len {
            assert_eq!(dispatched, 0, "dispatched at byte {i}: {effects:?}");
            assert!(h.queue(0).is_empty(), "queued at byte {i}");
        }
        dispatches += dispatched;
    }
    // The head is all an invocation needs to queue; its body streams after it.
    assert_eq!(dispatches, 1);
    assert_eq!(h.queue(0), [client_of(key, 1)]);
}

#[test]
fn a_split_head_then_a_stall_leaves_the_connection_waiting_without_work() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, b"POST /invoke HTTP/1.1\r\nhost:");
    assert!(h.take_effects().is_empty());
    assert!(h.queue(0).is_empty());
    // Driving again with nothing new does nothing (no busy loop).
    h.server.drive_conn(key);
    assert!(h.take_effects().is_empty());
    assert!(!h.server.effects.has_next_iteration());
}

#[test]
fn pipelined_requests_are_taken_one_at_a_time() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    let two = [INVOKE, INVOKE].concat();
    h.send(&mut client, key, &two);
    assert_eq!(
        h.queue(0),
        [client_of(key, 1)],
        "the second request waits for the first's answer"
    );
    assert_eq!(
        h.take_effects(),
        [
            Effect::Dispatch(FunctionId::new(0)),
            Effect::Scale(FunctionId::new(0))
        ]
    );
}

#[test]
fn healthz_is_answered_locally_and_keeps_the_connection_alive() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(
        &mut client,
        key,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    let effects = h.run_effects_but_scale();
    assert!(effects.contains(&Effect::FlushConn(key)), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Scale(_))));
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(h.server.front.conn(key).is_some(), "kept alive");
    // The next request on the same connection is served.
    h.send(&mut client, key, INVOKE);
    assert_eq!(h.queue(0), [client_of(key, 2)]);
}

#[test]
fn the_loop_counts_the_connections_that_started_requests_for_its_spin() {
    let mut h = harness(ONE_FUNCTION);
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let (mut first, first_key) = h.connect();
    for _ in 0..3 {
        h.send(&mut first, first_key, healthz);
        h.run_effects_but_scale();
        assert!(read_answer(&mut first, complete).starts_with("HTTP/1.1 200"));
    }
    // Request after request on one connection is one client.
    assert_eq!(h.server.busy_poll.recent_clients(h.server.clock.now()), 1);
    // Connections that are open but send nothing are not clients being served.
    let _idle: Vec<_> = (0..6).map(|_| h.connect()).collect();
    assert_eq!(h.server.busy_poll.recent_clients(h.server.clock.now()), 1);
    // Four more that each sent one (the harness's clock stands still: all within the horizon):
    // five, past the default limit of four.
    for _ in 0..4 {
        let (mut client, key) = h.connect();
        h.send(&mut client, key, healthz);
        h.run_effects_but_scale();
        assert!(read_answer(&mut client, complete).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(h.server.busy_poll.recent_clients(h.server.clock.now()), 5);
}

#[test]
fn a_keep_alive_connection_gives_its_buffers_back_between_requests_and_takes_them_again() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    h.send(&mut client, key, healthz);
    h.run_effects_but_scale();
    assert!(read_answer(&mut client, complete).starts_with("HTTP/1.1 200"));
    // Idle: the connection holds no buffer; the front end keeps one of each for later.
    let conn = h.server.front.conn(key).expect("kept alive");
    assert_eq!((conn.inbuf.allocated(), conn.wbuf.capacity()), (0, 0));
    assert_eq!(h.server.front.spare_buffers(), (1, 1));
    // The next request takes them instead of allocating, and gives them back after.
    h.send(&mut client, key, healthz);
    assert_eq!(h.server.front.spare_buffers(), (0, 0));
    h.run_effects_but_scale();
    assert!(read_answer(&mut client, complete).starts_with("HTTP/1.1 200"));
    assert_eq!(h.server.front.spare_buffers(), (1, 1));
}

#[test]
fn a_connection_is_watched_for_writability_only_while_its_output_waits() {
    use crate::reactor::token::{self, Source};
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    assert!(!h.server.front.conn(key).expect("conn").watching_writable());
    // More than the loopback socket's buffers take at once.
    let big = 16 << 20;
    h.server.front.conn_mut(key).expect("conn").wbuf = vec![b'x'; big];
    h.server.effects.push(Effect::FlushConn(key));
    h.run_effects_but_scale();
    let conn = h.server.front.conn(key).expect("conn");
    assert!(conn.has_output(), "the socket took only part of it");
    assert!(conn.watching_writable());
    // The client reads it all; the rest goes out as the poller reports room in the socket.
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 1 << 16];
        while total < big {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        (client, total)
    });
    let mut events = mio::Events::with_capacity(16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.server.front.conn(key).is_some_and(|c| c.has_output()) && Instant::now() < deadline {
        (h.server.poll)
            .poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for event in &events {
            if token::source(event.token()) == Some(Source::Conn(key)) && event.is_writable() {
                h.server.effects.push(Effect::FlushConn(key));
            }
        }
        h.run_effects_but_scale();
    }
    let (_client, total) = reader.join().expect("reader");
    assert_eq!(total, big, "every byte reached the client");
    let conn = h.server.front.conn(key).expect("conn");
    assert!(
        !conn.watching_writable(),
        "back to reads only once all is written"
    );
}

#[test]
fn an_unknown_function_is_answered_404_without_planning_launches() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(
        &mut client,
        key,
        b"POST /invoke HTTP/1.1\r\nx-noslate-function: nope\r\ncontent-length: 0\r\n\r\n",
    );
    let effects = h.run_effects_but_scale();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Scale(_) | Effect::Dispatch(_)))
    );
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("FunctionNotFound"), "{answer}");
    assert_eq!(h.server.scheduler.inflight(), 0);
}

#[test]
fn a_function_without_a_queue_refuses_what_no_worker_took() {
    let functions = r#"[{"name": "hello", "runtime": "nodejs", "url": "code",
        "handler": "index.handler", "signature": "s",
        "worker": {"disableRequestQueue": true}}]"#;
    let mut h = harness(functions);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    let client_ref = client_of(key, 1);
    let effects = h.run_effects_but_scale();
    assert_eq!(
        &effects[..3],
        [
            Effect::Dispatch(FunctionId::new(0)),
            Effect::RefuseIfStillQueued {
                function: FunctionId::new(0),
                client: client_ref
            },
            Effect::Scale(FunctionId::new(0)),
        ]
    );
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("NoAvailableWorker"), "{answer}");
    assert!(h.queue(0).is_empty());
    assert_eq!(h.server.scheduler.functions()[0].rejected.no_free_worker, 1);
}

#[test]
fn a_ready_worker_takes_the_queued_invocation_when_dispatch_runs() {
    let mut h = harness(ONE_FUNCTION);
    let (worker, _out) = h.ready_worker(0);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    assert!(!h.server.busy_poll.worker_fed());
    let effects = h.run_effects_but_scale();
    // The loop's next wait knows that it handed a worker something.
    assert!(h.server.busy_poll.worker_fed());
    assert!(h.queue(0).is_empty(), "dispatched");
    let w = h.server.supervisor.workers().get(worker).expect("worker");
    assert_eq!(w.active(), 1);
    assert!(
        effects.contains(&Effect::FlushWorker(worker)),
        "{effects:?}"
    );
    // Its body was forwarded within the stream's credit: the request is fully sent.
    assert!(effects.contains(&Effect::DriveConn(key)), "{effects:?}");
}

#[test]
fn a_client_that_closes_mid_body_while_queued_gives_up_its_place() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(
        &mut client,
        key,
        b"POST /invoke HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhi",
    );
    assert_eq!(h.queue(0), [client_of(key, 1)]);
    h.take_effects();
    drop(client);
    h.hang_up(key);
    h.run_effects_but_scale();
    assert!(
        h.queue(0).is_empty(),
        "the rest of its body can never arrive"
    );
    assert_eq!(h.server.scheduler.inflight(), 0);
    assert!(h.server.front.conn(key).is_none(), "connection closed");
}

#[test]
fn a_client_that_closes_after_a_whole_request_keeps_its_place() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.take_effects();
    // A FIN may be a half-close: the client can still read the answer.
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    h.hang_up(key);
    h.run_effects_but_scale();
    assert_eq!(h.queue(0), [client_of(key, 1)]);
    assert_eq!(h.server.scheduler.inflight(), 1);
}

#[test]
fn a_half_close_after_a_whole_request_still_gets_the_answer() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    h.hang_up(key);
    h.run_effects_but_scale();
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_worker_death_fails_its_invocation_and_records_scale_dispatch_and_waiters() {
    let mut h = harness(ONE_FUNCTION);
    let (worker, _out) = h.ready_worker(0);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.run_effects_but_scale();
    h.worker_gone(worker, "worker hello-t was killed by the test");
    // The supervisor only records the departure: no connection is written, no pool changed.
    assert_eq!(h.take_effects(), [Effect::WorkersGone]);
    assert_eq!(h.server.scheduler.functions()[0].pool.workers, [worker]);
    h.server.run_effect(Effect::WorkersGone);
    let effects = h.take_effects();
    for expected in [
        Effect::Scale(FunctionId::new(0)),
        Effect::Dispatch(FunctionId::new(0)),
        Effect::Waiters,
    ] {
        assert!(effects.contains(&expected), "{expected:?} in {effects:?}");
    }
    assert!(effects.contains(&Effect::FlushConn(key)), "{effects:?}");
    // Nothing was launched or dispatched from inside the handler.
    assert!(h.server.scheduler.functions()[0].pool.workers.is_empty());
    h.server.run_effect(Effect::FlushConn(key));
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("WorkerCrashed"), "{answer}");
}

#[test]
fn a_worker_gone_twice_records_its_consequences_once() {
    let mut h = harness(ONE_FUNCTION);
    let (worker, _out) = h.ready_worker(0);
    h.worker_gone(worker, "first");
    assert_eq!(h.run_effects_but_scale()[0], Effect::WorkersGone);
    h.worker_gone(worker, "second");
    assert!(h.take_effects().is_empty(), "idempotent");
    assert!(h.server.supervisor.take_departures().is_empty());
}

#[test]
fn every_worker_that_dies_starting_backs_its_function_off_further_and_fails_the_queue() {
    let mut h = harness(ONE_FUNCTION);
    let function = FunctionId::new(0);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.run_effects_but_scale();
    let mut last_until = None;
    for (n, reason) in ["first exit", "second exit", "third exit"]
        .iter()
        .enumerate()
    {
        let (worker, _out) = h.worker_in_state(0, WorkerState::Starting);
        h.worker_gone(worker, reason);
        h.server.run_effect(Effect::WorkersGone);
        let pool = &h.server.scheduler.functions()[function].pool;
        assert_eq!(
            pool.start_failures as usize,
            n + 1,
            "each failed start counts"
        );
        let until = pool.backoff_until.expect("backing off");
        assert!(
            last_until.is_none_or(|last| until > last),
            "the back-off grows"
        );
        last_until = Some(until);
        assert!(pool.fails_fast());
    }
    // `noslate stats` says why the function does not start, and when it tries again.
    let super::admin::AdminAction::Answer(stats) = h.admin("GET", "/v1/stats") else {
        panic!("stats are an answer");
    };
    let hello = &stats["functions"]["hello"];
    assert_eq!(hello["startFailures"], 3, "{hello}");
    assert_eq!(hello["lastStartError"]["errorType"], "WorkerStartFailed");
    assert_eq!(
        hello["lastStartError"]["errorMessage"],
        "third exit while starting"
    );
    assert!(
        hello["nextStartInMs"].as_u64().is_some_and(|ms| ms <= 400),
        "{hello}"
    );
    // The waiting request was failed with the start error, not left to its deadline.
    h.run_effects_but_scale();
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("WorkerStartFailed"), "{answer}");
    assert!(answer.contains("while starting"), "{answer}");
}

#[test]
fn a_starting_worker_whose_channel_closes_is_reported_with_its_exit_status_once_reaped() {
    let mut h = harness(ONE_FUNCTION);
    let worker = starting_worker_whose_channel_closed(&mut h);
    let reaped = crate::sys::Reaped {
        pid: 0,
        exit: crate::sys::ExitKind::Code(9),
        user_cpu_us: 0,
        system_cpu_us: 0,
        max_rss_kib: 0,
    };
    let server = &mut h.server;
    (server.supervisor).retire_reaped(worker, Some(reaped), &mut lent!(server));
    assert_one_failed_start(
        &mut h,
        "exited unexpectedly with exit code 9 while starting",
    );
}

#[test]
fn a_starting_worker_that_closes_its_channel_and_is_not_reaped_is_reported_after_the_wait() {
    let mut h = harness(ONE_FUNCTION);
    let worker = starting_worker_whose_channel_closed(&mut h);
    // A second read of the closed channel changes nothing while the wait runs.
    h.server.on_worker_readable(worker);
    assert!(!h.take_effects().contains(&Effect::WorkersGone));
    let server = &mut h.server;
    (server.supervisor).exit_status_wait_over(worker, &mut lent!(server));
    assert_one_failed_start(
        &mut h,
        "closed its protocol channel and did not exit while starting",
    );
}

/// A starting worker of function 0 whose output channel the loop has just read to its end.
/// The end of a channel comes a moment before the exit status: nothing is reported yet.
#[track_caller]
fn starting_worker_whose_channel_closed(h: &mut Harness) -> WorkerKey {
    let (worker, out) = h.worker_in_state(0, WorkerState::Starting);
    drop(out);
    h.server.on_worker_readable(worker);
    assert!(!h.take_effects().contains(&Effect::WorkersGone));
    let pool = &h.server.scheduler.functions()[0].pool;
    assert!(pool.last_start_error.is_none());
    worker
}

/// Runs the effects of a departure, then checks that function 0 counted one failed start
/// whose error says `what`.
#[track_caller]
fn assert_one_failed_start(h: &mut Harness, what: &str) {
    h.run_effects_but_scale();
    let pool = &h.server.scheduler.functions()[0].pool;
    let error = pool.last_start_error.as_ref().expect("a failed start");
    assert!(error.message.contains(what), "{}", error.message);
    assert_eq!(pool.start_failures, 1);
}

#[test]
fn a_start_failure_recorded_at_init_error_is_not_counted_again_when_the_worker_exits() {
    let mut h = harness(ONE_FUNCTION);
    let function = FunctionId::new(0);
    let (worker, _out) = h.worker_in_state(0, WorkerState::Initializing);
    h.server.on_worker_init_error(
        worker,
        br#"{"errorType":"SyntaxError","errorMessage":"Unexpected token"}"#,
    );
    assert_eq!(
        h.server.scheduler.functions()[function].pool.start_failures,
        1
    );
    h.worker_gone(worker, "exited after its INIT_ERROR");
    h.run_effects_but_scale();
    let pool = &h.server.scheduler.functions()[function].pool;
    assert_eq!(pool.start_failures, 1, "one failed start, one count");
    let error = pool.last_start_error.as_ref().expect("the start error");
    assert_eq!(error.error_type, "SyntaxError", "the first cause is kept");
}

#[test]
fn an_invocation_deadline_answers_a_queued_request_and_frees_its_place() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.take_effects();
    h.server.on_request_deadline(client_of(key, 1));
    h.run_effects_but_scale();
    let answer = read_answer(&mut client, complete);
    assert!(
        answer.contains("FunctionTimeout") || answer.contains("Timeout"),
        "{answer}"
    );
    assert!(h.queue(0).is_empty());
    assert_eq!(h.server.scheduler.inflight(), 0);
}

#[test]
fn a_draining_runtime_refuses_new_invocations_and_closes_after_answering() {
    let mut h = harness(ONE_FUNCTION);
    h.server.lifecycle.phase = super::Lifecycle::Draining;
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    let effects = h.run_effects_but_scale();
    assert!(!effects.iter().any(|e| matches!(e, Effect::Scale(_))));
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("RuntimeStopped"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[test]
fn a_full_queue_is_refused_with_429_and_leaves_the_queue_as_it_was() {
    let mut h = harness_with(ONE_FUNCTION, |c| c.data_plane.request_queue_limit = 1);
    let (mut first, first_key) = h.connect();
    h.send(&mut first, first_key, INVOKE);
    let (mut second, second_key) = h.connect();
    h.send(&mut second, second_key, INVOKE);
    h.run_effects_but_scale();
    let answer = read_answer(&mut second, complete);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert_eq!(h.queue(0), [client_of(first_key, 1)]);
}

impl Harness {
    fn admin(&self, method: &str, path: &str) -> super::admin::AdminAction {
        self.server.admin_view().action(method, path)
    }
}

#[test]
fn stats_say_whether_the_loop_spins_and_the_cpu_pressure_it_saw() {
    use super::admin::AdminAction;
    let stats = |h: &Harness| match h.admin("GET", "/v1/stats") {
        AdminAction::Answer(stats) => stats["busyPoll"].clone(),
        _ => panic!("stats are an answer"),
    };
    let h = harness(ONE_FUNCTION);
    let busy = stats(&h);
    assert_eq!(busy["paused"], serde_json::Value::Null, "{busy}");
    assert_eq!(
        busy["cpuPressurePercent"],
        serde_json::Value::Null,
        "not watched: {busy}"
    );
    let mut h = harness_with(ONE_FUNCTION, |c| {
        c.data_plane.busy_poll_max_cpu_pressure = 25
    });
    let report = h.dir.join("pressure");
    let t0 = std::time::Instant::now();
    std::fs::write(&report, "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").expect("report");
    h.server.busy_poll.sample_cpu_pressure(&report, t0);
    std::fs::write(
        &report,
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=400000\n",
    )
    .expect("report");
    h.server
        .busy_poll
        .sample_cpu_pressure(&report, t0 + Duration::from_secs(1));
    let busy = stats(&h);
    assert_eq!(busy["cpuPressurePercent"], 40.0, "{busy}");
    assert!(
        busy["paused"]
            .as_str()
            .is_some_and(|why| why.contains("40 %") && why.contains("busyPollMaxCpuPressure 25 %")),
        "{busy}"
    );
}

#[test]
fn admin_stats_are_answered_from_the_owners_state() {
    use super::admin::AdminAction;
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    let AdminAction::Answer(stats) = h.admin("GET", "/v1/stats") else {
        panic!("stats are an answer");
    };
    assert_eq!(stats["inflight"], 1, "{stats}");
    assert_eq!(stats["connections"], 1, "{stats}");
    assert_eq!(stats["functions"]["hello"]["queued"], 1, "{stats}");
    assert_eq!(stats["console"]["droppedBytes"], 0, "{stats}");
    let AdminAction::Answer(functions) = h.admin("GET", "/v1/functions") else {
        panic!("the profile set is an answer");
    };
    assert!(functions["functions"].is_array(), "{functions}");
}

#[test]
fn admin_requests_that_change_or_invoke_are_handed_to_the_loop_and_bad_ones_refused() {
    use super::admin::AdminAction;
    let h = harness(ONE_FUNCTION);
    assert!(matches!(
        h.admin("PUT", "/v1/functions"),
        AdminAction::CollectBody(crate::admin::Route::SetFunctions)
    ));
    assert!(matches!(
        h.admin("POST", "/v1/invoke/hello"),
        AdminAction::Invoke(crate::fc::Target::Function(ref name)) if name == "hello"
    ));
    let AdminAction::Refuse(err) = h.admin("DELETE", "/v1/stats") else {
        panic!("refused");
    };
    assert_eq!(
        (err.status, err.error_type.as_str()),
        (405, "MethodNotAllowed")
    );
    let AdminAction::Refuse(err) = h.admin("GET", "/v1/nothing") else {
        panic!("refused");
    };
    assert_eq!((err.status, err.error_type.as_str()), (404, "NotFound"));
}

#[test]
fn admin_health_says_why_invocations_are_not_served_and_who_the_runtime_is() {
    use super::admin::AdminAction;
    let mut h = harness(ONE_FUNCTION);
    let AdminAction::Answer(health) = h.admin("GET", "/v1/health") else {
        panic!("health is an answer");
    };
    assert_eq!(health["health"], true);
    assert_eq!(health["reason"], serde_json::Value::Null);
    let instance = health["instance"].as_str().unwrap_or_default().to_owned();
    assert!(instance.starts_with(&format!("{}-", std::process::id())));
    h.server.lifecycle.phase = super::Lifecycle::Draining;
    let AdminAction::Answer(health) = h.admin("GET", "/v1/health") else {
        panic!("health is an answer");
    };
    assert_eq!(health["health"], false);
    assert_eq!(health["reason"], "the runtime is draining");
    assert_eq!(health["instance"], instance.as_str());
}

#[test]
fn a_worker_that_finishes_initializing_records_dispatch_and_waiters() {
    let mut h = harness(ONE_FUNCTION);
    let (key, _from_worker) = h.initializing_worker();
    h.server
        .on_worker_init_done(key, br#"{"requestWindow":1048576}"#);
    let effects = h.take_effects();
    assert!(
        effects.contains(&Effect::Dispatch(FunctionId::new(0))),
        "{effects:?}"
    );
    assert!(effects.contains(&Effect::Waiters), "{effects:?}");
    assert_eq!(
        h.server.supervisor.workers().get(key).map(|w| w.state),
        Some(WorkerState::Ready)
    );
    // Its streams start with the request window it announced.
    let (_client, conn) = h.connect();
    let stream = h
        .server
        .supervisor
        .worker_mut(key)
        .map(|w| w.open_stream(crate::ids::ConnRef { conn, seq: 1 }));
    let credit = stream.and_then(|s| {
        let w = h.server.supervisor.workers().get(key)?;
        w.streams.get(&s).map(|st| st.request_credit)
    });
    assert_eq!(credit, Some(1 << 20));
}

#[test]
fn a_worker_is_sent_its_request_heads_in_the_encoding_its_ready_asked_for() {
    use crate::wire::{self, Direction, FrameDecoder, Kind};
    for (ready, head_kind) in [
        (
            &br#"{"pid":1,"protocol":1,"compactHead":true}"#[..],
            Kind::CompactHead,
        ),
        (br#"{"pid":1,"protocol":1}"#, Kind::RequestHead),
    ] {
        let mut h = harness(ONE_FUNCTION);
        let (worker, mut out) = h.ready_worker(0);
        if let Some(w) = h.server.supervisor.worker_mut(worker) {
            w.state = WorkerState::Starting;
            // No such process: nothing here signals it.
            w.process.pid = i32::MAX;
        }
        let mut frame = Vec::new();
        wire::put_frame(&mut frame, Kind::Ready, 0, 0, ready);
        h.worker_sends(worker, &mut out, &frame);
        h.server.on_worker_init_done(worker, b"{}");
        let (mut client, key) = h.connect();
        h.send(&mut client, key, INVOKE);
        h.run_effects_but_scale();
        let input = h.worker_inputs.last_mut().expect("the worker's input");
        let mut bytes = vec![0; 64 * 1024];
        let n = input.read(&mut bytes).expect("frames for the worker");
        let mut decoder = FrameDecoder::new(Direction::ToWorker);
        decoder.push(&bytes[..n]);
        let mut kinds = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            kinds.push(frame.header.kind);
        }
        assert_eq!(
            kinds[..2],
            [Kind::Init, head_kind],
            "{}",
            String::from_utf8_lossy(ready)
        );
    }
}

#[test]
fn a_worker_that_announces_a_window_out_of_bounds_is_stopped_for_a_protocol_error() {
    let mut h = harness(ONE_FUNCTION);
    let (key, _from_worker) = h.initializing_worker();
    h.server.on_worker_init_done(key, br#"{"requestWindow":0}"#);
    let effects = h.take_effects();
    assert!(
        !effects.contains(&Effect::Dispatch(FunctionId::new(0))),
        "{effects:?}"
    );
    assert_ne!(
        h.server.supervisor.workers().get(key).map(|w| w.state),
        Some(WorkerState::Ready),
        "never serves"
    );
}

impl Harness {
    /// A client whose invocation a ready worker of function 0 has taken: the client, its key,
    /// the worker, the worker's output pipe (to answer on) and the stream id.
    fn dispatched(&mut self) -> (TcpStream, Key, WorkerKey, mio::unix::pipe::Sender, u32) {
        let (worker, out) = self.ready_worker(0);
        let (mut client, key) = self.connect();
        self.send(&mut client, key, INVOKE);
        self.run_effects_but_scale();
        let stream = self
            .server
            .supervisor
            .workers()
            .get(worker)
            .and_then(|w| w.streams.keys().next().copied())
            .expect("a stream is open");
        (client, key, worker, out, stream)
    }

    /// A ready worker of function 0 that grants `request_window` of request body, and a client
    /// whose upload of `body_len` bytes it was dispatched (the head only, so far).
    fn upload_dispatched(
        &mut self,
        request_window: u32,
        body_len: usize,
    ) -> (WorkerKey, mio::unix::pipe::Sender, TcpStream, Key) {
        let (worker, out) = self.ready_worker(0);
        if let Some(w) = self.server.supervisor.worker_mut(worker) {
            w.request_window = request_window;
        }
        let (mut client, key) = self.connect();
        let head =
            format!("POST /invoke HTTP/1.1\r\nhost: x\r\ncontent-length: {body_len}\r\n\r\n");
        self.send(&mut client, key, head.as_bytes());
        self.run_effects_but_scale();
        (worker, out, client, key)
    }

    /// A readiness event for connection `key` without waiting for bytes, then the effects.
    fn drive_ready(&mut self, key: Key) {
        if let Some(conn) = self.server.front.conn_mut(key) {
            conn.maybe_readable = true;
        }
        self.server.drive_conn(key);
        self.run_effects_but_scale();
    }

    /// A ready inspect worker of function 0 (its debugger open, `crate::inspector`).
    fn inspect_worker(&mut self) -> (WorkerKey, mio::unix::pipe::Sender) {
        let (key, out) = self.ready_worker(0);
        if let Some(w) = self.server.supervisor.worker_mut(key) {
            w.inspect = true;
        }
        (key, out)
    }

    /// A worker of function 0 that was sent INIT and has not answered, with nothing recorded
    /// yet.
    fn initializing_worker(&mut self) -> (WorkerKey, mio::unix::pipe::Sender) {
        let (key, out) = self.ready_worker(0);
        if let Some(w) = self.server.supervisor.worker_mut(key) {
            w.state = WorkerState::Initializing;
        }
        self.take_effects();
        (key, out)
    }

    /// The worker sends `frames`; the loop reads them.
    fn worker_sends(
        &mut self,
        worker: WorkerKey,
        out: &mut mio::unix::pipe::Sender,
        frames: &[u8],
    ) {
        out.write_all(frames).expect("worker output");
        self.server.on_worker_readable(worker);
    }
}

fn response_frames(stream: u32, body: &[u8]) -> Vec<u8> {
    let mut frames = Vec::new();
    let head = crate::wire::ResponseHead {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
    };
    crate::wire::put_response_head(&mut frames, stream, false, &head).expect("head");
    crate::wire::put_response_body(&mut frames, stream, true, body);
    frames
}

#[test]
fn a_worker_response_reaches_the_client_and_its_end_frees_the_slot_for_the_queue() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    h.worker_sends(worker, &mut out, &response_frames(stream, b"ok"));
    let effects = h.take_effects();
    assert!(effects.contains(&Effect::FlushConn(key)), "{effects:?}");
    assert!(
        effects.contains(&Effect::Dispatch(FunctionId::new(0))),
        "the freed slot: {effects:?}"
    );
    assert_eq!(h.active(worker), Some(0));
    for effect in effects {
        h.server.run_effect(effect);
    }
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\r\n2\r\nok\r\n"), "{answer}");
    // Written whole, the request ended; the scheduler releases its place when that runs.
    let ended = h.run_effects_but_scale();
    assert!(
        ended
            .iter()
            .any(|e| matches!(e, Effect::RequestEnded { function, .. } if *function == FunctionId::new(0))),
        "{ended:?}"
    );
    assert_eq!(h.server.scheduler.inflight(), 0);
}

#[test]
fn a_chunked_body_gets_a_credit_sized_read_buffer_only_once_it_proves_large() {
    let mut h = harness(ONE_FUNCTION);
    let (_worker, _out) = h.ready_worker(0);
    let (mut client, key) = h.connect();
    let allocated = |h: &Harness| h.server.front.conn(key).map(|c| c.inbuf.allocated());
    h.send(
        &mut client,
        key,
        b"POST /invoke HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    h.run_effects_but_scale();
    let small = allocated(&h).expect("the connection");
    assert!(
        small < 64 * 1024,
        "a small chunked body keeps a head's buffer: {small}"
    );
    let mut big = format!("{:x}\r\n", 96 * 1024).into_bytes();
    big.extend(std::iter::repeat_n(b'x', 96 * 1024));
    big.extend_from_slice(b"\r\n");
    h.send(&mut client, key, &big);
    h.run_effects_but_scale();
    assert_eq!(
        allocated(&h),
        Some(crate::wire::INITIAL_WINDOW as usize),
        "past 64 KiB it is read in credit-sized pieces"
    );
}

#[test]
fn a_deadline_for_the_head_only_is_lifted_when_the_head_is_written() {
    let head_frames = |stream: u32| {
        let mut frames = Vec::new();
        let head = crate::wire::ResponseHead {
            status: 200,
            headers: Vec::new(),
        };
        crate::wire::put_response_head(&mut frames, stream, false, &head).expect("head");
        frames
    };
    for head_only in [false, true] {
        let mut h = harness(ONE_FUNCTION);
        let (_client, key, worker, mut out, stream) = h.dispatched();
        let req = |h: &Harness| {
            let conn = h.server.front.conn(key).expect("the connection");
            conn.req.as_ref().map(|r| r.deadline_timer.is_some())
        };
        if let Some(r) = h.server.front.conn_mut(key).and_then(|c| c.req.as_mut()) {
            r.head_deadline = head_only;
        }
        assert_eq!(req(&h), Some(true), "armed at admission");
        h.worker_sends(worker, &mut out, &head_frames(stream));
        h.run_effects_but_scale();
        assert_eq!(
            req(&h),
            Some(!head_only),
            "a whole-response deadline stays armed while the body streams"
        );
    }
}

#[test]
fn fc_end_lines_reach_stdout_before_the_bytes_that_finish_their_responses() {
    let mut h = harness(ONE_FUNCTION);
    let (console, mut stdout) = console::Console::over_pipes(64 * 1024);
    h.server.console = console;
    let (mut client, _key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    h.worker_sends(worker, &mut out, &response_frames(stream, b"ok"));
    // Only the effects run, not the end of the loop iteration, where the console is flushed
    // anyway: the End line must already be out when the client can read its answer.
    for effect in h.take_effects() {
        h.server.run_effect(effect);
    }
    let answer = read_answer(&mut client, complete);
    assert!(answer.contains("\r\n2\r\nok\r\n"), "{answer}");
    let mut lines = vec![0; 4096];
    let n = stdout.read(&mut lines).unwrap_or(0);
    let lines = String::from_utf8_lossy(&lines[..n]);
    assert!(lines.contains("FC Invoke Start RequestId: "), "{lines}");
    assert!(lines.contains("FC Invoke End RequestId: "), "{lines}");
}

#[test]
fn an_ended_invocation_becomes_one_access_log_line_handed_on_in_a_batch() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key, worker, mut out, stream) = h.dispatched();
    let facts = (h.server.front.conn(key))
        .and_then(|c| c.req.as_ref())
        .and_then(|r| r.access.as_ref())
        .map(|f| (f.method.clone(), f.worker.clone()));
    assert_eq!(
        facts,
        Some(("POST".to_owned(), Some("hello-t".to_owned()))),
        "what the line needs is kept while the log is on"
    );
    h.take_effects();
    h.worker_sends(worker, &mut out, &response_frames(stream, b"ok"));
    h.run_effects_but_scale();
    let _ = read_answer(&mut client, complete);
    assert_eq!(
        h.server.access_log.stats().lines,
        0,
        "not before the iteration ends"
    );
    h.server.flush_console();
    assert_eq!(
        h.server.access_log.stats().lines,
        0,
        "one line waits for more, or for its hand-off timer"
    );
    // The hand-off timer, once it is due (the loop reads its clock at each wake-up).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while h.server.access_log.stats().lines == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        h.server.clock.tick();
        h.server.on_access_log_handoff();
    }
    assert_eq!(h.server.access_log.stats().lines, 1);
}

#[test]
fn the_handlers_of_one_wake_up_share_its_clock_reading() {
    let mut h = harness(ONE_FUNCTION);
    let (worker, mut out) = h.ready_worker(0);
    let (mut client, key) = h.connect();
    let woke = h.server.clock.tick();
    // Time passes within the iteration; its timestamps stay those of the wake-up.
    std::thread::sleep(Duration::from_millis(2));
    h.send(&mut client, key, INVOKE);
    h.run_effects_but_scale();
    let timing = |h: &Harness| {
        (h.server.front.conn(key))
            .and_then(|c| c.req.as_ref())
            .map(|r| r.timing)
    };
    let at_dispatch = timing(&h).expect("a request in progress");
    assert_eq!(at_dispatch.admitted, Some(woke));
    assert_eq!(at_dispatch.dispatched, Some(woke));
    let stream = (h.server.supervisor.workers().get(worker))
        .and_then(|w| w.streams.keys().next().copied())
        .expect("a stream is open");
    let answer_woke = h.server.clock.tick();
    assert!(answer_woke >= woke + Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(2));
    h.worker_sends(worker, &mut out, &response_frames(stream, b"ok"));
    h.run_effects_but_scale();
    let _ = read_answer(&mut client, complete);
    let mut ended = Vec::new();
    h.server.front.take_ended(&mut ended);
    let [one] = ended.as_slice() else {
        panic!("one request ended: {}", ended.len());
    };
    assert_eq!(one.timing.admitted, Some(woke));
    assert_eq!(one.timing.answered, Some(answer_woke));
    assert_eq!(one.ended, answer_woke);
}

#[test]
fn with_the_access_log_off_requests_keep_nothing_for_it() {
    let mut h = harness_with(ONE_FUNCTION, |c| {
        c.logger.access_log = crate::config::AccessLogDestination::Off;
    });
    let (_client, key, ..) = h.dispatched();
    let kept = (h.server.front.conn(key))
        .and_then(|c| c.req.as_ref())
        .map(|r| r.access.is_some());
    assert_eq!(kept, Some(false));
}

#[test]
fn a_worker_error_frame_is_a_function_error_for_its_client_only() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    let mut frames = Vec::new();
    let error = crate::wire::ErrorPayload {
        error_type: "TypeError".into(),
        error_message: "boom".into(),
        stack_trace: Vec::new(),
    };
    crate::wire::put_response_error(&mut frames, stream, &error).expect("error frame");
    h.worker_sends(worker, &mut out, &frames);
    let effects = h.take_effects();
    assert!(effects.contains(&Effect::FlushConn(key)), "{effects:?}");
    assert!(
        effects.contains(&Effect::Dispatch(FunctionId::new(0))),
        "{effects:?}"
    );
    for effect in effects {
        h.server.run_effect(effect);
    }
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("x-fc-status: 404"), "{answer}");
    assert!(answer.contains("\"errorType\":\"TypeError\""), "{answer}");
    // The worker keeps serving.
    assert_eq!(
        h.server.supervisor.workers().get(worker).map(|w| w.state),
        Some(WorkerState::Ready)
    );
}

#[test]
fn frames_for_a_stream_that_is_not_open_are_ignored_and_the_open_one_completes() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, _key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    // A stream the runtime closed (a cancel the worker had not seen yet) may still get frames.
    let mut frames = response_frames(stream + 1000, b"stray");
    frames.extend(response_frames(stream, b"mine"));
    h.worker_sends(worker, &mut out, &frames);
    assert_eq!(
        h.server.supervisor.workers().get(worker).map(|w| w.state),
        Some(WorkerState::Ready)
    );
    h.run_effects_but_scale();
    let answer = read_answer(&mut client, complete);
    assert!(answer.contains("\r\nmine\r\n"), "{answer}");
    assert!(!answer.contains("stray"), "{answer}");
}

#[test]
fn a_reconfiguration_records_scale_and_dispatch_for_every_function_instead_of_launching() {
    let mut h = harness(ONE_FUNCTION);
    let profiles = format!(
        r#"[{{"name": "hello", "runtime": "nodejs", "url": "{code}", "handler": "index.handler",
            "signature": "s"}},
           {{"name": "second", "runtime": "nodejs", "url": "{code}", "handler": "index.handler",
            "signature": "s"}}]"#,
        code = h.dir.join("code").display()
    );
    h.take_effects();
    let answer = h
        .server
        .set_functions(profiles.as_bytes(), Some(h.dir.clone()))
        .expect("a valid set");
    assert_eq!(answer["added"], serde_json::json!(["second"]));
    let effects = h.take_effects();
    for function in [0, 1] {
        assert!(
            effects.contains(&Effect::Scale(FunctionId::new(function))),
            "{effects:?}"
        );
        assert!(
            effects.contains(&Effect::Dispatch(FunctionId::new(function))),
            "{effects:?}"
        );
    }
    assert!(
        h.server.supervisor.workers().is_empty(),
        "nothing launched inline"
    );
}

#[test]
fn reaped_childrens_log_directories_wait_for_the_delay_and_never_pile_up_beyond_the_mark() {
    let mut h = harness(ONE_FUNCTION);
    let policy = crate::config::WorkerDefaults {
        gc_log_delay_ms: 60_000,
        gc_log_high_water_mark: 2,
        ..crate::config::WorkerDefaults::default()
    };
    let dirs: Vec<PathBuf> = (0..3).map(|i| h.dir.join(format!("log/w{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        std::fs::create_dir_all(dir).expect("log dir");
        let mut process = crate::turf::child::ChildProc::new(format!("w{i}"), 0);
        process.log_dir = dir.clone();
        h.server
            .supervisor
            .release_process(process, &mut h.server.timers, &policy);
    }
    // The oldest went at once (over the mark); the others wait for the delay.
    assert!(!dirs[0].exists());
    assert!(dirs[1].exists() && dirs[2].exists());
    // A collection before the delay deletes nothing.
    h.server.supervisor.collect_logs(&mut h.server.timers);
    assert!(dirs[1].exists() && dirs[2].exists());
}

fn profile_set(h: &Harness, names: &[&str], handler: &str) -> String {
    let items: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                r#"{{"name": "{name}", "runtime": "nodejs", "url": "{code}",
                    "handler": "{handler}", "signature": "s"}}"#,
                code = h.dir.join("code").display()
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[test]
fn removing_a_function_records_its_workers_retirement_and_its_seed_instead_of_stopping_inline() {
    let mut h = harness(ONE_FUNCTION);
    let both = profile_set(&h, &["hello", "gone"], "index.handler");
    h.server
        .set_functions(both.as_bytes(), Some(h.dir.clone()))
        .expect("a valid set");
    let (worker, _out) = h.ready_worker(1);
    h.take_effects();
    let set = profile_set(&h, &["hello"], "index.handler");
    let answer = h
        .server
        .set_functions(set.as_bytes(), Some(h.dir.clone()))
        .expect("a valid set");
    assert_eq!(answer["removed"], serde_json::json!(["gone"]));
    let effects = h.take_effects();
    let retire = Effect::Retire {
        worker,
        why: super::reconfig::Retirement::FunctionRemoved,
    };
    assert!(effects.contains(&retire), "{effects:?}");
    assert!(
        effects.contains(&Effect::FollowSeed(FunctionId::new(1))),
        "{effects:?}"
    );
    assert!(
        !effects.contains(&Effect::Scale(FunctionId::new(1))),
        "{effects:?}"
    );
    assert!(effects.contains(&Effect::BalanceSpares), "{effects:?}");
    // Recorded, not done: the worker still serves until the effect runs.
    assert_eq!(
        h.server.supervisor.workers().get(worker).map(|w| w.state),
        Some(WorkerState::Ready)
    );
    h.server.run_effect(retire);
    assert_eq!(
        h.server.supervisor.workers().get(worker).map(|w| w.state),
        Some(WorkerState::Stopping),
        "a ready worker with nothing in flight drains straight to a stop"
    );
}

#[test]
fn a_code_change_rolls_a_new_generation_and_retires_the_old_once_it_is_ready() {
    let mut h = harness(ONE_FUNCTION);
    let (old, _out) = h.ready_worker(0);
    h.take_effects();
    let set = profile_set(&h, &["hello"], "index.other");
    let answer = h
        .server
        .set_functions(set.as_bytes(), Some(h.dir.clone()))
        .expect("a valid set");
    assert_eq!(answer["restarted"], serde_json::json!(["hello"]));
    let effects = h.take_effects();
    assert!(
        effects.contains(&Effect::Scale(FunctionId::new(0))),
        "{effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Retire { .. })),
        "the old generation serves until a new worker is ready: {effects:?}"
    );
    // A worker of the new generation becomes ready: the old one is retired.
    let (new, _out2) = h.ready_worker(0);
    if let Some(w) = h.server.supervisor.worker_mut(new) {
        w.generation = h.server.scheduler.functions()[0].generation;
    }
    h.server.scheduler.check_rollout(
        FunctionId::new(0),
        h.server.supervisor.workers(),
        &mut h.server.effects,
    );
    let effects = h.take_effects();
    assert_eq!(
        effects,
        [Effect::Retire {
            worker: old,
            why: super::reconfig::Retirement::NewGeneration
        }]
    );
}

#[test]
fn set_and_remove_cycles_reuse_retired_function_records() {
    let mut h = harness(ONE_FUNCTION);
    for round in 0..20 {
        let name = format!("extra{round}");
        let with = profile_set(&h, &["hello", &name], "index.handler");
        h.server
            .set_functions(with.as_bytes(), Some(h.dir.clone()))
            .expect("add");
        let without = profile_set(&h, &["hello"], "index.handler");
        h.server
            .set_functions(without.as_bytes(), Some(h.dir.clone()))
            .expect("remove");
        h.take_effects();
    }
    assert!(
        h.server.scheduler.functions().len() <= 2,
        "{} function records after 20 cycles",
        h.server.scheduler.functions().len()
    );
}

#[test]
fn an_invalid_profile_set_changes_nothing_and_records_no_work() {
    let mut h = harness(ONE_FUNCTION);
    h.take_effects();
    let err = h
        .server
        .set_functions(
            br#"[{"name": "x", "runtime": "cobol"}]"#,
            Some(h.dir.clone()),
        )
        .expect_err("invalid");
    assert_eq!(err.status, 400);
    assert_eq!(err.error_type, "InvalidProfiles");
    assert!(h.take_effects().is_empty());
    assert_eq!(h.server.scheduler.functions().len(), 1);
}

#[test]
fn a_client_that_resets_mid_invocation_records_the_cancel_of_its_worker_stream() {
    let mut h = harness(ONE_FUNCTION);
    let (client, key, worker, _out, stream) = h.dispatched();
    h.take_effects();
    drop(client);
    if let Some(conn) = h.server.front.conn_mut(key) {
        conn.reset = true;
    }
    h.hang_up(key);
    let effects = h.take_effects();
    let cancel = Effect::CancelStream {
        worker,
        stream,
        why: "client closed the connection",
    };
    assert!(effects.contains(&cancel), "{effects:?}");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::RequestEnded { function, .. } if *function == FunctionId::new(0))),
        "{effects:?}"
    );
    // The front end closed the connection; the worker's side is untouched until it runs.
    assert!(h.server.front.conn(key).is_none());
    let client_of_stream = |h: &Harness| h.server.supervisor.stream_client(worker, stream);
    assert!(client_of_stream(&h).is_some());
    h.server.run_effect(cancel);
    assert!(client_of_stream(&h).is_none(), "cancelled: no client");
    assert_eq!(h.take_effects(), [Effect::FlushWorker(worker)]);
}

#[test]
fn response_bytes_that_leave_return_their_credit_to_the_worker() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    let mut frames = Vec::new();
    let head = crate::wire::ResponseHead {
        status: 200,
        headers: Vec::new(),
    };
    crate::wire::put_response_head(&mut frames, stream, false, &head).expect("head");
    crate::wire::put_response_body(&mut frames, stream, false, b"abc");
    h.worker_sends(worker, &mut out, &frames);
    assert_eq!(h.take_effects(), [Effect::FlushConn(key)]);
    h.server.run_effect(Effect::FlushConn(key));
    assert_eq!(
        h.take_effects(),
        [Effect::ReturnCredit {
            worker,
            stream,
            bytes: 3
        }]
    );
    let answer = read_answer(&mut client, |t| t.ends_with("abc\r\n"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_queued_request_answered_by_its_deadline_leaves_the_queue_then_ends() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.take_effects();
    let queued = client_of(key, 1);
    h.server.on_request_deadline(queued);
    let effects = h.take_effects();
    let left = Effect::LeftQueue {
        function: FunctionId::new(0),
        client: queued,
    };
    // In the drain's order: recorded work first, then flushes.
    assert_eq!(
        effects,
        [left, Effect::DriveConn(key), Effect::FlushConn(key)]
    );
    // Recorded, not done: the scheduler still holds it until the effect runs.
    assert_eq!(h.queue(0), [queued]);
    assert_eq!(h.server.scheduler.inflight(), 1);
    h.server.run_effect(left);
    assert!(h.queue(0).is_empty());
    // Driving the connection ends the answered request; then its place in flight is freed.
    h.server.run_effect(Effect::DriveConn(key));
    let effects = h.take_effects();
    let [ended] = effects[..] else {
        panic!("one effect expected: {effects:?}");
    };
    let Effect::RequestEnded {
        function,
        client: ended_client,
        still_queued: false,
        finished: Some(finished),
    } = ended
    else {
        panic!("RequestEnded with its metrics expected: {ended:?}");
    };
    assert_eq!((function, ended_client), (FunctionId::new(0), queued));
    // Timed out in the queue: answered 404 by the runtime, never dispatched, no head.
    assert_eq!(finished.status, 404);
    assert_eq!(
        finished.error,
        crate::metrics::ErrorKind::Runtime("FunctionTimeout")
    );
    assert_eq!((finished.queue_wait, finished.to_head), (None, None));
    h.server.run_effect(ended);
    assert_eq!(h.server.scheduler.inflight(), 0);
    let metrics = &h.server.scheduler.functions()[FunctionId::new(0)].invocations;
    assert_eq!(metrics.histograms()[2].1.count(), 1, "one total duration");
}

#[test]
fn a_draining_worker_whose_last_stream_ends_is_stopped_and_departs() {
    let mut h = harness(ONE_FUNCTION);
    let (_client, _key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    if let Some(w) = h.server.supervisor.worker_mut(worker) {
        w.advance(WorkerState::Draining);
    }
    h.worker_sends(worker, &mut out, &response_frames(stream, b"ok"));
    assert_eq!(
        h.server.supervisor.workers().get(worker).map(|w| w.state),
        Some(WorkerState::Stopping)
    );
    let effects = h.take_effects();
    assert!(effects.contains(&Effect::WorkersGone), "{effects:?}");
    assert!(
        effects.contains(&Effect::Dispatch(FunctionId::new(0))),
        "{effects:?}"
    );
}

#[test]
fn answers_that_cannot_be_written_to_a_client_that_reset_close_its_connection() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key) = h.connect();
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    h.send(&mut client, key, &[&healthz[..], &healthz[..]].concat());
    // Both answers are buffered, both requests complete; nothing has been written yet.
    let effects = h.take_effects();
    assert!(effects.contains(&Effect::FlushConn(key)), "{effects:?}");
    assert!(h.server.front.conn(key).is_some_and(|c| c.req.is_none()));
    crate::sys::reset_on_close(&client).expect("SO_LINGER");
    drop(client);
    wait_readable(&h.server, key);
    // The write fails: nobody is left to read, so the connection goes with its unsent bytes
    // instead of waiting for a flush that would never come.
    h.server.run_effect(Effect::FlushConn(key));
    assert!(h.server.front.conn(key).is_none(), "closed");
}

#[test]
fn the_scaler_poll_runs_only_for_polling_scalers_and_drains_after_the_spare_polls() {
    let mut idle = harness(ONE_FUNCTION);
    let before = idle.server.timers.len();
    idle.server.arm_scaler_poll();
    assert_eq!(
        idle.server.timers.len(),
        before,
        "idle shrink does not poll"
    );

    let mut h = harness_with(ONE_FUNCTION, |c| {
        c.control_plane.scaler = crate::config::ScalerKind::WaterLevel;
        c.control_plane.worker_redundant_victim_spare_times = 2;
    });
    let before = h.server.timers.len();
    h.server.arm_scaler_poll();
    assert_eq!(h.server.timers.len(), before + 1, "the water level polls");
    let (a, _) = h.ready_worker(0);
    let (b, _) = h.ready_worker(0);
    let state = |h: &Harness, k: WorkerKey| h.server.supervisor.workers().get(k).map(|w| w.state);
    let scaler_stats = |h: &Harness| match h.admin("GET", "/v1/stats") {
        super::admin::AdminAction::Answer(stats) => stats["functions"]["hello"]["scaler"].clone(),
        _ => panic!("stats are an answer"),
    };
    let polls = serde_json::json!({"kind": "waterLevel", "redundantPolls": 0});
    assert_eq!(scaler_stats(&h), polls);
    // Two idle workers, reservation 0: the first low poll only counts.
    h.server.on_scaler_poll();
    assert_eq!(state(&h, a), Some(WorkerState::Ready));
    assert_eq!(state(&h, b), Some(WorkerState::Ready));
    assert_eq!(scaler_stats(&h)["redundantPolls"], 1);
    // Called directly, not fired: the first timer is still there beside the next one.
    assert_eq!(h.server.timers.len(), before + 2, "each poll arms the next");
    // The second drains both; with nothing in flight they stop at once.
    h.server.on_scaler_poll();
    for k in [a, b] {
        assert!(
            state(&h, k).is_none_or(|s| s >= WorkerState::Stopping),
            "{:?}",
            state(&h, k)
        );
    }
    assert!(
        h.take_effects()
            .iter()
            .all(|e| !matches!(e, Effect::Scale(_))),
        "a drain plans no launch"
    );
    assert_eq!(scaler_stats(&h), polls, "the count starts again");
}

/// A harness whose gateway runs `sh -c script`, with the runtime's listener on loopback.
fn gateway_harness(script: &str) -> Harness {
    harness_with(ONE_FUNCTION, |config| {
        let mut gateway = crate::config::GatewayConfig::new("/bin/sh".into());
        gateway.args = vec!["-c".into(), script.into()];
        gateway.runtime_port = crate::config::RuntimePort::Loopback(0);
        config.gateway = Some(gateway);
    })
}

/// The running gateway's pid.
fn gateway_pid(h: &Harness) -> i32 {
    h.server
        .supervisor
        .gateway_pid()
        .expect("a running gateway")
}

/// Waits for the gateway process itself (only it: other tests' children are left alone) and
/// hands its exit to the supervisor, as the loop's reaping would.
fn reap_gateway(h: &mut Harness) -> crate::sys::ExitKind {
    let pid = gateway_pid(h);
    let exit = crate::sys::sandbox::wait_pid(pid, true)
        .expect("waitpid")
        .expect("an exit");
    let server = &mut h.server;
    server.supervisor.gateway_reaped(&exit, &mut lent!(server));
    exit
}

#[test]
fn a_gateway_that_exits_is_backed_off_with_its_stderr_tail_then_restarted() {
    let mut h = gateway_harness("echo starting; echo 'fatal: no config' >&2; exit 3");
    let server = &mut h.server;
    server.supervisor.start_gateway_if_due(&mut lent!(server));
    let (gateway, _) = h.server.supervisor.gateway().expect("configured");
    assert_eq!(gateway.state().as_str(), "running");
    assert_eq!(gateway.restarts(), 0);
    assert_eq!(reap_gateway(&mut h), crate::sys::ExitKind::Code(3));
    let (gateway, _) = h.server.supervisor.gateway().expect("configured");
    assert_eq!(gateway.state().as_str(), "backoff");
    let failure = gateway.last_failure().expect("a failure");
    assert_eq!(failure.reason, "exit code 3");
    assert_eq!(failure.stderr_tail, "fatal: no config");
    // A retry before its delay starts nothing; the retry timer's firing does.
    let server = &mut h.server;
    server.supervisor.start_gateway_if_due(&mut lent!(server));
    assert!(server.supervisor.gateway_pid().is_none());
    server.supervisor.gateway_retry_due(&mut lent!(server));
    let (gateway, _) = h.server.supervisor.gateway().expect("configured");
    assert_eq!(gateway.restarts(), 1);
    assert_eq!(reap_gateway(&mut h), crate::sys::ExitKind::Code(3));
}

/// A harness with a started gateway that exits 0 on SIGTERM, once its shell has set that trap
/// (a signal before it would kill the shell instead).
fn trapping_gateway() -> Harness {
    let mark = std::env::temp_dir().join(format!(
        "noslate-glue-trap-{}-{}",
        std::process::id(),
        crate::rand::Rng::from_entropy().next_u64()
    ));
    let script = format!(
        "trap 'exit 0' TERM; : > '{}'; while :; do sleep 0.05; done",
        mark.display()
    );
    let mut h = gateway_harness(&script);
    let server = &mut h.server;
    server.supervisor.start_gateway_if_due(&mut lent!(server));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(
            Instant::now() < deadline,
            "the gateway's shell did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_file(&mark);
    h
}

#[test]
fn a_shutdown_signal_stops_the_gateway_before_the_runtime_drains() {
    let mut h = trapping_gateway();
    let server = &mut h.server;
    server.on_shutdown_signal(libc::SIGTERM);
    // The runtime keeps serving what the gateway sends until the gateway is gone.
    assert_eq!(h.server.lifecycle.phase, super::Lifecycle::Running);
    let (gateway, _) = h.server.supervisor.gateway().expect("configured");
    assert_eq!(gateway.state().as_str(), "stopping");
    assert_eq!(reap_gateway(&mut h), crate::sys::ExitKind::Code(0));
    h.server.after_gateway_reaped();
    assert_ne!(h.server.lifecycle.phase, super::Lifecycle::Running);
    let (gateway, _) = h.server.supervisor.gateway().expect("configured");
    assert_eq!(gateway.state().as_str(), "stopped");
    assert!(gateway.last_failure().is_none(), "a stop is no failure");
}

#[test]
fn a_shutdown_signal_while_the_gateway_backs_off_drains_at_once() {
    let mut h = gateway_harness("exit 1");
    let server = &mut h.server;
    server.supervisor.start_gateway_if_due(&mut lent!(server));
    reap_gateway(&mut h);
    h.server.on_shutdown_signal(libc::SIGTERM);
    assert_ne!(h.server.lifecycle.phase, super::Lifecycle::Running);
    assert!(h.server.supervisor.gateway_stopped());
    let server = &mut h.server;
    server.supervisor.gateway_retry_due(&mut lent!(server));
    assert!(server.supervisor.gateway_pid().is_none(), "no restart");
}

#[test]
fn a_signal_after_pre_stop_still_waits_for_the_gateway_before_exiting() {
    let mut h = trapping_gateway();
    let server = &mut h.server;
    // `/pre-stop` stopped the runtime (no workers: at once); the gateway still runs.
    server.begin_drain("pre-stop");
    assert_eq!(server.lifecycle.phase, super::Lifecycle::Stopped);
    server.on_shutdown_signal(libc::SIGTERM);
    assert!(
        !h.server.stopped_for_exit(),
        "the gateway is still stopping"
    );
    reap_gateway(&mut h);
    h.server.after_gateway_reaped();
    assert!(h.server.stopped_for_exit());
}

/// A zip of one stored file, built by hand.
fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
    let crc = crate::code::zip::crc32(data);
    let size = u32::try_from(data.len()).expect("small");
    let name_len = u16::try_from(name.len()).expect("short");
    let mut zip = Vec::new();
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for field in [20u16, 0, 0, 0, 0] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&name_len.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    zip.extend_from_slice(data);
    let central = zip.len();
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    for field in [20u16, 20, 0, 0, 0, 0] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [name_len, 0, 0, 0, 0] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    let central_len = u32::try_from(zip.len() - central).expect("small");
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for field in [0u16, 0, 1, 1] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&central_len.to_le_bytes());
    zip.extend_from_slice(&u32::try_from(central).expect("small").to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

#[test]
fn a_packaged_function_launches_once_its_package_is_built_or_fails_its_start() {
    let mut h = harness(
        r#"[{"name": "pkg", "runtime": "nodejs", "url": "file://code.zip", "handler": "index.handler",
             "signature": "s", "worker": {"reservationCount": 1}},
            {"name": "bad", "runtime": "nodejs", "url": "bad.zip", "handler": "index.handler",
             "signature": "s", "worker": {"reservationCount": 1}}]"#,
    );
    let (pkg, bad) = (FunctionId::new(0), FunctionId::new(1));
    // The plan wants a worker each; none starts before its package is unpacked.
    h.server.scale(pkg);
    h.server.scale(bad);
    assert_eq!(h.server.supervisor.workers().iter().count(), 0);
    assert!(h.take_effects().is_empty());

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut events = mio::Events::with_capacity(8);
    let mut effects = Vec::new();
    loop {
        let failed = h.server.scheduler.functions()[bad]
            .pool
            .last_start_error
            .clone();
        let built = h.server.scheduler.functions()[pkg].profile.package.clone();
        let ready = built.is_some_and(|p| h.server.packages.is_ready(&p));
        if ready && failed.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the builds did not end"
        );
        h.server
            .poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        let woken = events.iter().any(|e| {
            crate::reactor::token::source(e.token())
                == Some(crate::reactor::token::Source::Packages)
        });
        if woken {
            h.server.on_packages_built();
            effects.extend(h.take_effects());
        }
    }
    assert!(effects.contains(&Effect::Scale(pkg)), "{effects:?}");
    assert!(!effects.contains(&Effect::Scale(bad)), "{effects:?}");
    let code_dir = &h.server.scheduler.functions()[pkg].profile.code_dir;
    assert!(
        code_dir.join("index.js").is_file(),
        "{}",
        code_dir.display()
    );
    let error = h.server.scheduler.functions()[bad]
        .pool
        .last_start_error
        .clone();
    let error = error.expect("a start error");
    assert_eq!(error.error_type, "CodeFetchFailed");
    assert!(
        error.message.contains("function bad from bad.zip")
            && error.message.contains("not a zip archive"),
        "{}",
        error.message
    );
}

#[test]
fn while_the_inspector_is_on_only_the_inspect_worker_takes_invocations() {
    use super::reconfig::Retirement;
    let mut h = harness(ONE_FUNCTION);
    let (ordinary, _out) = h.ready_worker(0);
    let (inspect, _inspect_out) = h.inspect_worker();
    let on = h.server.set_inspector("hello", br#"{"use": true}"#);
    assert_eq!(
        on.expect("on"),
        serde_json::json!({"function": "hello", "use": true, "changed": true})
    );
    let f = FunctionId::new(0);
    let effects = h.take_effects();
    for wanted in [Effect::Scale(f), Effect::Dispatch(f), Effect::Waiters] {
        assert!(effects.contains(&wanted), "{effects:?}");
    }
    let (mut client, key) = h.connect();
    h.send(&mut client, key, INVOKE);
    h.run_effects_but_scale();
    assert_eq!(h.active(inspect), Some(1));
    assert_eq!(h.active(ordinary), Some(0));

    // Off: the inspect worker is retired and the next invocation goes to the ordinary worker.
    let off = h.server.set_inspector("hello", br#"{"use": false}"#);
    assert_eq!(off.expect("off")["changed"], true);
    let effects = h.take_effects();
    let retire = Effect::Retire {
        worker: inspect,
        why: Retirement::InspectorOff,
    };
    assert!(effects.contains(&retire), "{effects:?}");
    let (mut other, other_key) = h.connect();
    h.send(&mut other, other_key, INVOKE);
    h.run_effects_but_scale();
    assert_eq!(h.active(ordinary), Some(1));
    assert_eq!(h.active(inspect), Some(1), "the first one still runs there");
}

#[test]
fn a_second_inspect_worker_is_refused_and_none_is_planned() {
    let mut h = harness(ONE_FUNCTION);
    let (inspect, _out) = h.inspect_worker();
    assert!(h.server.set_inspector("hello", br#"{"use": true}"#).is_ok());
    let f = FunctionId::new(0);
    let counts = h.server.worker_counts(f, true);
    assert_eq!((counts.starting, counts.alive), (0, 1));
    let config = h.server.config.clone();
    let plan =
        (h.server.scheduler).plan_inspect_launch(f, counts, &config, std::time::Instant::now());
    assert_eq!(plan.launch, 0, "one is there: none is planned");
    let before = h.server.supervisor.workers().len();
    assert!(
        !h.server.spawn_inspect_worker(f),
        "a second inspect worker is refused"
    );
    assert_eq!(h.server.supervisor.workers().len(), before);
    // Without one, exactly one is planned, whatever the queue.
    if let Some(w) = h.server.supervisor.worker_mut(inspect) {
        w.inspect = false;
    }
    let counts = h.server.worker_counts(f, true);
    let plan =
        (h.server.scheduler).plan_inspect_launch(f, counts, &config, std::time::Instant::now());
    assert_eq!(plan.launch, 1);
}

#[test]
fn the_inspector_of_a_python_function_or_an_unknown_one_is_refused() {
    let mut h = harness(
        r#"[{"name": "py", "runtime": "python3", "url": "code", "handler": "index.handler",
            "signature": "s"}]"#,
    );
    let err = h
        .server
        .set_inspector("py", br#"{"use": true}"#)
        .expect_err("refused");
    assert_eq!(
        (err.status, err.error_type.as_str()),
        (409, "InspectorUnsupported")
    );
    assert!(!h.server.scheduler.inspecting(FunctionId::new(0)));
    let err = h
        .server
        .set_inspector("nope", br#"{"use": true}"#)
        .expect_err("unknown");
    assert_eq!(err.status, 404);
    let err = h
        .server
        .set_inspector("py", br#"{"use": "on"}"#)
        .expect_err("bad body");
    assert_eq!(err.status, 400);
    assert!(h.take_effects().is_empty());
}

#[test]
fn the_tick_never_sees_an_inspect_worker() {
    let mut h = harness(ONE_FUNCTION);
    let (ordinary, _out) = h.ready_worker(0);
    let (_inspect, _inspect_out) = h.inspect_worker();
    let workers = h.server.scheduler.functions()[0].pool.workers.clone();
    let snapshots = h.server.supervisor.snapshots(&workers);
    let seen: Vec<WorkerKey> = snapshots.iter().map(|s| s.key).collect();
    assert_eq!(seen, [ordinary], "idle shrink and the scaler skip it");
}

#[test]
fn a_worker_pipe_is_read_one_bite_per_event_and_the_rest_on_the_next_iteration() {
    let mut h = harness(ONE_FUNCTION);
    let (mut client, key, worker, mut out, stream) = h.dispatched();
    h.take_effects();
    {
        use std::os::fd::AsFd;
        crate::sys::set_pipe_size(out.as_fd(), 1 << 20).expect("a 1 MiB pipe");
    }
    // Three body frames of 64 KiB: more than the worker's read buffer holds at once.
    let piece = vec![b'x'; crate::wire::MAX_BODY_CHUNK];
    let mut frames = Vec::new();
    let head = crate::wire::ResponseHead {
        status: 200,
        headers: vec![("content-length".into(), (3 * piece.len()).to_string())],
    };
    crate::wire::put_response_head(&mut frames, stream, false, &head).expect("head");
    for i in 0..3 {
        crate::wire::put_response_body(&mut frames, stream, i == 2, &piece);
    }
    h.worker_sends(worker, &mut out, &frames);
    let first = h.take_effects();
    assert!(first.contains(&Effect::FlushConn(key)), "{first:?}");
    assert!(
        h.server.effects.has_next_iteration(),
        "the rest waits for the next iteration"
    );
    assert_eq!(h.active(worker), Some(1), "the end frame is not read yet");
    h.server.effects.begin_iteration();
    let mut ran = Vec::new();
    for _ in 0..8 {
        ran.extend(h.run_effects_but_scale());
        if !h.server.effects.has_next_iteration() {
            break;
        }
        h.server.effects.begin_iteration();
    }
    assert!(ran.contains(&Effect::ReadWorker(worker)), "{ran:?}");
    assert_eq!(
        h.active(worker),
        Some(0),
        "the end frame was read on a later iteration"
    );
    let answer = read_answer(&mut client, complete);
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..40]);
    assert!(answer.ends_with(&"x".repeat(100)), "the whole body arrived");
}

#[test]
fn a_large_request_body_is_written_to_its_worker_in_batches_as_it_is_framed() {
    use std::os::fd::AsFd;
    let mut h = harness_with(ONE_FUNCTION, |c| c.data_plane.splice_request_bodies = false);
    let body_len = 400 * 1024;
    let (worker, _out, mut client, key) = h.upload_dispatched(1 << 20, body_len);
    if let Some(input) = h.worker_inputs.last() {
        crate::sys::set_pipe_size(input.as_fd(), 1 << 20).expect("a 1 MiB pipe");
    }
    // The body arrives in one burst, and is framed within one iteration: the frames past the
    // batch size are already in the pipe before the iteration's flushes run.
    std::io::Write::write_all(&mut client, &vec![b'x'; body_len]).expect("write");
    let framed = |h: &Harness| {
        let w = h.server.supervisor.workers().get(worker)?;
        let credit = w.streams.values().next()?.request_credit;
        Some((1usize << 20) - credit as usize)
    };
    let mut queued = 0;
    for _ in 0..100 {
        if framed(&h).unwrap_or(0) >= body_len {
            break;
        }
        h.readable(key);
        queued = (h.server.supervisor.workers().get(worker)).map_or(0, |w| w.wbuf.len());
        assert!(
            queued < super::WORKER_WRITE_BATCH_BYTES + crate::wire::MAX_BODY_CHUNK + 64,
            "{queued} bytes of frames queued"
        );
    }
    assert_eq!(framed(&h), Some(body_len), "the whole body was framed");
    let mut piped = vec![0u8; 1 << 20];
    let n = std::io::Read::read(&mut h.worker_inputs[0], &mut piped).unwrap_or(0);
    assert!(
        n >= super::WORKER_WRITE_BATCH_BYTES,
        "only {n} bytes reached the pipe before the flushes ({queued} queued)"
    );
}

#[test]
fn a_worker_that_grants_credit_but_never_reads_holds_the_runtime_to_a_bounded_queue() {
    use crate::turf::worker::WRITE_QUEUE_LIMIT;
    // Copied bodies: a spliced one stops sooner, at one body pipe.
    let mut h = harness_with(ONE_FUNCTION, |c| c.data_plane.splice_request_bodies = false);
    let body_len: usize = 8 << 20;
    let (worker, _out, client, key) = h.upload_dispatched(crate::wire::MAX_WINDOW, body_len);
    let mut writer = client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        // Blocks once the runtime stops reading; ends with an error when the test drops it.
        let _ = std::io::Write::write_all(&mut writer, &vec![b'x'; body_len]);
    });
    let bound = WRITE_QUEUE_LIMIT + crate::wire::MAX_BODY_CHUNK + crate::wire::HEADER_LEN;
    let queued =
        |h: &Harness| (h.server.supervisor.workers().get(worker)).map_or(0, Worker::queued);
    // Drive the connection as readiness events would, until the queue reaches its limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while queued(&h) < WRITE_QUEUE_LIMIT && std::time::Instant::now() < deadline {
        h.drive_ready(key);
        assert!(queued(&h) <= bound, "{} bytes queued", queued(&h));
        std::thread::sleep(Duration::from_millis(1));
    }
    // More readiness changes nothing: the rest of the body waits in the socket.
    for _ in 0..20 {
        h.drive_ready(key);
        assert!(queued(&h) <= bound, "{} bytes queued", queued(&h));
    }
    assert!(
        queued(&h) >= WRITE_QUEUE_LIMIT,
        "the queue filled up to its limit: {}",
        queued(&h)
    );
    // The worker reads: its queue drains below the limit, and the body moves on.
    let mut sink = vec![0u8; 1 << 20];
    while std::io::Read::read(&mut h.worker_inputs[0], &mut sink).is_ok_and(|n| n > 0) {}
    h.server.effects.push(Effect::FlushWorker(worker));
    let ran = h.run_effects_but_scale();
    assert!(ran.contains(&Effect::DriveConn(key)), "{ran:?}");
    // The runtime's side goes: the blocked sender fails and ends.
    drop(client);
    let server = &mut h.server;
    server.front.close_conn(key, &mut lent!(server));
    let _ = sender.join();
}

/// Reads frames from a worker's input until `body_len` request-body bytes of `stream` came,
/// the last frame marked END; returns the body and the frame kinds in order.
fn read_request_body(
    input: &mut mio::unix::pipe::Receiver,
    stream: u32,
    body_len: usize,
) -> (Vec<u8>, Vec<crate::wire::Kind>) {
    let mut decoder = crate::wire::FrameDecoder::new(crate::wire::Direction::ToWorker);
    let (mut body, mut kinds) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while body.len() < body_len {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {body_len} body bytes",
            body.len()
        );
        let n = match std::io::Read::read(input, &mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::yield_now();
                continue;
            }
            Err(err) => panic!("{err}"),
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame().expect("well-formed frames") {
            kinds.push(frame.header.kind);
            if frame.header.kind == crate::wire::Kind::RequestBody {
                assert_eq!(frame.header.stream, stream);
                body.extend_from_slice(frame.payload);
                let end = frame.header.flags & crate::wire::FLAG_END != 0;
                assert_eq!(end, body.len() == body_len, "END on the last frame only");
            }
        }
    }
    (body, kinds)
}

#[test]
fn a_large_body_on_a_tcp_socket_is_spliced_to_its_worker_and_the_read_buffer_stays_small() {
    let mut h = harness(ONE_FUNCTION);
    let body_len = 3 * 256 * 1024 + 1234;
    let (worker, _out, client, key) = h.upload_dispatched(1 << 20, body_len);
    let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
    let mut writer = client.try_clone().expect("clone");
    let sent = body.clone();
    let sender = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &sent));
    let mut input = h.worker_inputs.remove(0);
    let reader = std::thread::spawn(move || {
        let stream = 1;
        read_request_body(&mut input, stream, body_len)
    });
    let moved = |h: &Harness| {
        let w = h.server.supervisor.workers().get(worker)?;
        let credit = w.streams.values().next()?.request_credit;
        Some((1usize << 20) - credit as usize)
    };
    // Until the whole body is in the worker's channel: the last piece may wait in the pipe
    // while the channel is full.
    let held = |h: &Harness| (h.server.supervisor.workers().get(worker)).map(Worker::spliced_held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while moved(&h) != Some(body_len) || held(&h) != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "moved {:?}",
            moved(&h)
        );
        h.drive_ready(key);
        h.server
            .supervisor
            .flush_worker(worker, &mut lent!(h.server));
        let conn = h.server.front.conn_mut(key).expect("conn");
        assert!(
            conn.input().is_empty(),
            "body bytes went through the read buffer"
        );
        assert!(
            conn.inbuf.allocated() < 64 * 1024,
            "the read buffer grew to {}",
            conn.inbuf.allocated()
        );
        std::thread::yield_now();
    }
    sender.join().expect("sender").expect("sent");
    let (received, kinds) = reader.join().expect("reader");
    assert_eq!(received, body, "the worker got the body as sent");
    assert_eq!(kinds.first(), Some(&crate::wire::Kind::RequestHead));
    drop(client.shutdown(std::net::Shutdown::Both));
}

#[test]
fn a_worker_that_does_not_read_a_spliced_body_holds_at_most_one_body_pipe_of_it() {
    let mut h = harness(ONE_FUNCTION);
    let body_len: usize = 8 << 20;
    let (worker, _out, client, key) = h.upload_dispatched(crate::wire::MAX_WINDOW, body_len);
    let mut writer = client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        // Blocks once the runtime stops reading; ends with an error when the test drops it.
        let _ = std::io::Write::write_all(&mut writer, &vec![b'x'; body_len]);
    });
    let queued =
        |h: &Harness| (h.server.supervisor.workers().get(worker)).map_or(0, Worker::queued);
    let bound = crate::turf::body_pipe::BODY_PIPE_BYTES + crate::wire::HEADER_LEN;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h
        .server
        .supervisor
        .workers()
        .get(worker)
        .map_or(0, Worker::spliced_held)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing stayed in the body pipe"
        );
        h.drive_ready(key);
        assert!(queued(&h) <= bound, "{} bytes queued", queued(&h));
    }
    for _ in 0..20 {
        h.drive_ready(key);
        assert!(queued(&h) <= bound, "{} bytes queued", queued(&h));
    }
    // The worker reads: its body pipe empties into the channel, and the body moves on.
    let mut sink = vec![0u8; 1 << 20];
    let mut ran = Vec::new();
    while !ran.contains(&Effect::DriveConn(key)) {
        assert!(std::time::Instant::now() < deadline, "{ran:?}");
        while std::io::Read::read(&mut h.worker_inputs[0], &mut sink).is_ok_and(|n| n > 0) {}
        h.server.effects.push(Effect::FlushWorker(worker));
        ran = h.run_effects_but_scale();
    }
    drop(client);
    let server = &mut h.server;
    server.front.close_conn(key, &mut lent!(server));
    let _ = sender.join();
}

#[test]
fn request_bodies_are_copied_when_splicing_is_off() {
    let mut h = harness_with(ONE_FUNCTION, |c| c.data_plane.splice_request_bodies = false);
    let body_len = 200 * 1024;
    let (worker, _out, client, key) = h.upload_dispatched(1 << 20, body_len);
    std::io::Write::write_all(&mut &client, &vec![b'y'; body_len]).expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut grew = false;
    while h
        .server
        .supervisor
        .workers()
        .get(worker)
        .and_then(|w| w.streams.values().next())
        .is_some_and(|s| s.request_credit as usize > (1 << 20) - body_len)
    {
        assert!(std::time::Instant::now() < deadline);
        h.drive_ready(key);
        grew |= h
            .server
            .front
            .conn_mut(key)
            .is_some_and(|c| c.inbuf.allocated() >= 64 * 1024);
    }
    assert!(
        grew,
        "a copied large body is read with a credit-sized buffer"
    );
    let held = h
        .server
        .supervisor
        .workers()
        .get(worker)
        .map(Worker::spliced_held);
    assert_eq!(held, Some(0));
}

/// Bytes the runtime wrote to the first worker's input pipe since the last call.
fn drain_worker_input(h: &mut Harness) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match h.worker_inputs[0].read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(err) => panic!("reading the worker's input: {err}"),
        }
    }
}

/// Ten clients, each with a request sent, handled as one batch of readiness events the way the
/// loop does; returns, after each event, the bytes the worker was handed by then.
fn hand_offs_during_a_batch_of_ten(halve_from: usize) -> Vec<usize> {
    let mut h = harness_with(ONE_FUNCTION, |config| {
        config.data_plane.halve_batches_from = halve_from;
    });
    let (worker, _out) = h.ready_worker(0);
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let (mut client, key) = h.connect();
            client.write_all(INVOKE).expect("write");
            wait_readable(&h.server, key);
            (client, key)
        })
        .collect();
    h.server.effects.begin_iteration();
    h.server.effects.begin_batch(clients.len());
    let readable = ClientReadiness {
        readable: true,
        ..ClientReadiness::default()
    };
    let mut handed = Vec::new();
    for (_, key) in &clients {
        h.server.on_client_event(*key, readable);
        handed.push(drain_worker_input(&mut h));
    }
    h.run_effects_but_scale();
    handed.push(drain_worker_input(&mut h));
    assert_eq!(
        h.active(worker),
        Some(10),
        "every request went to the worker"
    );
    handed
}

#[test]
fn a_worker_gets_the_first_half_of_a_batch_before_the_loop_reads_the_second() {
    let handed = hand_offs_during_a_batch_of_ten(8);
    // Nothing until the fifth event ends the first half; then its five requests at once, and
    // the other five at the end of the batch.
    assert!(handed[..4].iter().all(|&n| n == 0), "{handed:?}");
    assert!(handed[4] > 0, "{handed:?}");
    assert!(handed[5..10].iter().all(|&n| n == 0), "{handed:?}");
    assert_eq!(
        handed[10], handed[4],
        "two halves of equal requests: {handed:?}"
    );
}

#[test]
fn a_batch_below_the_halving_size_is_handed_over_whole() {
    for halve_from in [0, 11] {
        let handed = hand_offs_during_a_batch_of_ten(halve_from);
        assert!(
            handed[..10].iter().all(|&n| n == 0),
            "{halve_from}: {handed:?}"
        );
        assert!(handed[10] > 0, "{halve_from}: {handed:?}");
    }
}
