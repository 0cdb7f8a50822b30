//! Workers' lives, on the supervisor: installing a started worker into the loop, the
//! READY/INIT handshake, draining, stopping, killing, reaping, and taking a dead worker out of
//! service.
//!
//! What a worker's end means elsewhere (its invocations fail, its pool shrinks, its function
//! re-plans) is not done here: the worker's `Departure` is kept for the loop, and `WorkersGone`
//! recorded; a reaped worker's record stays until `WorkerReaped` has run, so the loop can
//! still name the request it died in.

use super::Supervisor;
use crate::config::FunctionProfile;
use crate::fc;
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::inspector;
use crate::pool::StartError;
use crate::reactor::slab::Key;
use crate::reactor::token::{self, Source};
use crate::sched::backoff::CRASH_LOOP_WINDOW;
use crate::server::Lent;
use crate::server::client::InvokeError;
use crate::server::effects::Effect;
use crate::server::{Child, Timer};
use crate::sys;
use crate::turf::accounting::{ExitReason, ExitRecord};
use crate::turf::child::{stderr_file_tail, tail_text};
use crate::turf::spawn;
use crate::turf::worker::{WRITE_QUEUE_LIMIT, Worker, WorkerState};
use crate::wire::{self, ErrorPayload, Init, InitFunction, SpareInit};
use mio::Interest;
use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a starting worker whose protocol channel closed is given to become reapable, so
/// that its failed start is reported with its exit status (a process closes its descriptors
/// shortly before the kernel makes its status available).
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(100);

/// A worker that left service, for the loop: who was waiting on it and what its end means for
/// its function.
#[derive(Debug)]
pub(in crate::server) struct Departure {
    pub(in crate::server) worker: WorkerKey,
    /// Its process id (`hello-3`), for logs.
    pub(in crate::server) id: String,
    /// It left service now (not a second notice of the same end): its pool loses it.
    pub(in crate::server) first: bool,
    pub(in crate::server) function: FunctionId,
    /// What its in-flight invocations are answered.
    pub(in crate::server) error: InvokeError,
    /// The invocations it was running.
    pub(in crate::server) clients: Vec<ConnRef>,
    /// It died before it was ready, and that failed start is not recorded yet (an INIT_ERROR
    /// or an init timeout is recorded when it happens).
    pub(in crate::server) start_failed: bool,
    /// For such a start: the end of its stderr (`logger.startFailureStderrBytes`), if it wrote
    /// any.
    pub(in crate::server) stderr_tail: Option<String>,
    /// It was ready, died on its own this long after starting and served nothing: respawning
    /// it at once would loop as fast as it starts.
    pub(in crate::server) crash_loop: Option<Duration>,
}

/// What a worker's INIT carries from the rest of the runtime.
pub(in crate::server) struct InitParams<'a> {
    pub(in crate::server) profile: &'a FunctionProfile,
    /// The request id it initializes in: `/initialize`'s, or a fresh one.
    pub(in crate::server) request_id: String,
    /// `x-fc-initialization-timeout`, when it initializes in answer to `/initialize`.
    pub(in crate::server) platform_bound_ms: Option<u64>,
}

impl Supervisor {
    /// (starting, alive) among `keys` of `generation` that are inspect workers or not, as
    /// `inspect` says; alive counts starting and ready ones. Workers of an older generation
    /// are being replaced: they do not count.
    pub(in crate::server) fn worker_counts(
        &self,
        keys: &[WorkerKey],
        generation: u64,
        inspect: bool,
    ) -> (usize, usize) {
        let mut starting = 0;
        let mut alive = 0;
        for w in keys.iter().filter_map(|&key| self.workers.get(key)) {
            if w.generation != generation || w.inspect != inspect {
                continue;
            }
            if w.state.is_starting() {
                starting += 1;
            }
            if w.state <= WorkerState::Ready {
                alive += 1;
            }
        }
        (starting, alive)
    }

    /// Memory reserved in `virtualMemoryPoolSize` by every worker that has not exited, starting
    /// ones included (so concurrent starts cannot overcommit the pool).
    pub(in crate::server) fn memory_reserved(&self) -> u64 {
        self.workers
            .iter()
            .filter(|w| w.state < WorkerState::Exited)
            .map(|w| w.memory_limit)
            .sum()
    }

    /// Cold-starts a worker of `function` (fork and exec of its runtime). Its record is
    /// returned for [`Supervisor::install_worker`]; the error says why it could not start.
    /// An `inspect` worker (`crate::inspector`) runs Node.js with its debugger on 127.0.0.1
    /// and its memory limit relaxed; the virtual memory pool still counts the function's own.
    pub(in crate::server) fn spawn_cold(
        &mut self,
        function: FunctionId,
        profile: &FunctionProfile,
        inspect: bool,
        decided: Instant,
        lp: &mut Lent<'_>,
    ) -> Result<Worker, String> {
        let kind = if inspect { "inspect-" } else { "" };
        let (id, log_dir) = self.next_process_id(function, &profile.name, kind, lp.config);
        let mut launch = self.runtimes.launch_spec(profile, &id)?;
        let mut limits = self.worker_limits(profile, lp.config);
        if inspect {
            if !inspector::supports(profile.runtime) {
                return Err(inspector::unsupported_message(
                    &profile.name,
                    profile.runtime,
                ));
            }
            launch.args.insert(0, inspector::NODE_INSPECT_ARG.into());
            limits.memory = limits.memory.map(inspector::relaxed_memory);
        }
        let spec = self.spawn_spec_with(profile, &launch, &id, &log_dir, limits);
        let spawned = spawn::spawn(&spec).map_err(|err| {
            let message = format!("cannot start a worker for function {}: {err}", profile.name);
            log::error!("[turf] {message}");
            message
        })?;
        let pid = spawned.pid;
        let stderr_relay = spawned
            .output
            .and_then(|output| relay_starting_output(output, lp));
        let mut enforcement = spawned.enforcement;
        // What no cgroup enforces, the runtime polls.
        let polled = enforcement.polled_limits(&limits);
        log::debug!("[turf w={id}] enforcement: {}", enforcement.summary());
        let mut worker = Worker::new(
            id.clone(),
            function,
            pid,
            spawned.to_worker,
            spawned.from_worker,
        );
        worker.polled = polled;
        worker.enforcement = serde_json::to_value(&enforcement).unwrap_or_default();
        worker.process.log_dir = log_dir;
        worker.process.stderr_relay = stderr_relay;
        worker.process.cgroup = spawned.cgroup;
        worker.process.started_at = decided;
        worker.inspect = inspect;
        log::info!(
            "[turf w={id} pid={pid}] started{}",
            if inspect { " (inspect worker)" } else { "" }
        );
        Ok(worker)
    }

    /// Takes a started (or requested) worker into the loop: watches its pipes, maps its pid
    /// and arms its init deadline. `None` when its pipes cannot be watched (it is killed).
    pub(in crate::server) fn install_worker(
        &mut self,
        mut worker: Worker,
        generation: u64,
        profile: &FunctionProfile,
        lp: &mut Lent<'_>,
    ) -> Option<WorkerKey> {
        worker.generation = generation;
        worker.memory_limit = profile.resource_limit.memory;
        let init_timeout = Duration::from_millis(profile.worker.initialization_timeout_ms);
        let pid = worker.process.pid;
        let id = worker.process.id.clone();
        let key = self.workers.insert(worker);
        let registry = lp.registry;
        let registered = self.workers.get_mut(key).map(|w| {
            let out = w.from_worker.as_mut().map(|p| {
                registry.register(
                    p,
                    token::token(Source::WorkerOut(key.0)),
                    Interest::READABLE,
                )
            });
            let inp = w.to_worker.as_mut().map(|p| {
                registry.register(p, token::token(Source::WorkerIn(key.0)), Interest::WRITABLE)
            });
            out.transpose().and(inp.transpose())
        });
        if pid > 0 {
            self.children.insert(pid, Child::Worker(key));
        }
        if let Some(Err(err)) = registered {
            log::error!("[turf w={id} pid={pid}] cannot watch worker pipes: {err}");
            let reason = format!("cannot watch worker pipes: {err}");
            self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            return None;
        }
        let timer = lp
            .timers
            .schedule(Instant::now() + init_timeout, Timer::WorkerInit(key));
        if let Some(w) = self.workers.get_mut(key) {
            w.state_timer = Some(timer);
        }
        Some(key)
    }

    /// READY: the bootstrap runs; send INIT.
    pub(in crate::server) fn on_worker_ready(
        &mut self,
        key: WorkerKey,
        payload: &[u8],
        init: &InitParams<'_>,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            let reason = format!("READY in state {}", worker.state.as_str());
            self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            return;
        }
        if worker.process.pid == 0 {
            // Forked, and the seed has not said which pid yet: INIT must wait until the worker
            // is in its cgroup (`worker_forked`).
            worker.ready_deferred = true;
            return;
        }
        // A spare's READY was read before it was taken (`payload` is then not one): what
        // it asked for is already on the worker.
        let ready = wire::Ready::parse(payload).ok();
        if let Some(ready) = &ready {
            worker.compact_head = ready.compact_head == Some(true);
        }
        let reported = ready.and_then(|r| r.inspector);
        if !worker.inspect
            && let Some(url) = reported
        {
            // Only the runtime opens a debugger (`crate::inspector`); one opened by a flag
            // that reached Node.js some other way (the inherited environment) is refused.
            let reason =
                format!("a debugger is open on {url}: only an inspect worker may have one");
            log::error!("[turf w={}] {reason}", worker.process.id);
            self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            return;
        }
        if worker.inspect {
            let endpoint = reported
                .as_deref()
                .ok_or_else(|| "its READY names no debugger".to_owned())
                .and_then(inspector::Endpoint::parse);
            match endpoint {
                Ok(endpoint) => {
                    log::info!(
                        "[turf w={} pid={}] debugger on {} (DevTools: {})",
                        worker.process.id,
                        worker.process.pid,
                        endpoint.ws_url(),
                        endpoint.devtools_url()
                    );
                    worker.inspector = Some(endpoint);
                }
                Err(why) => {
                    let reason = format!("inspect worker refused: {why}");
                    log::error!("[turf w={}] {reason}", worker.process.id);
                    self.kill_worker(key, &reason, ExitReason::Crashed, lp);
                    return;
                }
            }
        }
        if log::log_enabled!(log::Level::Debug) {
            match wire::Ready::parse(payload) {
                Ok(ready) => log::debug!(
                    "[turf w={} pid={}] ready: {ready:?}",
                    worker.process.id,
                    worker.process.pid
                ),
                Err(_) => log::debug!(
                    "[turf w={} pid={}] ready: {}",
                    worker.process.id,
                    worker.process.pid,
                    String::from_utf8_lossy(payload)
                ),
            }
        }
        let profile = init.profile;
        let request_id = &init.request_id;
        let code_dir = profile.code_dir.to_string_lossy();
        let facts = fc::ProfileFacts {
            name: &profile.name,
            handler: profile.handler.as_deref().unwrap_or(""),
            initializer: profile.initializer.as_deref(),
            memory_bytes: profile.resource_limit.memory,
        };
        let profile_timeout_ms = profile.worker.initialization_timeout_ms;
        let timeout_ms = init
            .platform_bound_ms
            .map_or(profile_timeout_ms, |b| b.min(profile_timeout_ms));
        let mut context = fc::context(
            self.platform.headers(),
            request_id,
            profile.worker.invoke_timeout_ms,
            facts,
        );
        context.function.initialization_timeout = Some(timeout_ms.div_ceil(1000));
        log::debug!(
            "[turf w={}] INIT as {request_id}, credentials from {}",
            worker.process.id,
            self.platform.source()
        );
        let msg = Init {
            function: InitFunction {
                name: Cow::Borrowed(&profile.name),
                handler: profile.handler.as_deref().map(Cow::Borrowed),
                initializer: profile.initializer.as_deref().map(Cow::Borrowed),
                code_dir,
                memory: profile.resource_limit.memory,
                timeout_ms: profile.worker.invoke_timeout_ms,
            },
            request_id: Cow::Borrowed(request_id),
            context,
            timeout_ms,
            response_window: lp.config.data_plane.stream_window,
            spare: worker.spare_init.take().map(|s| SpareInit {
                env: s.env,
                cwd: s.cwd.to_string_lossy().into_owned(),
            }),
        };
        match wire::put_init(&mut worker.wbuf, &msg) {
            Ok(()) => {
                worker.advance(WorkerState::Initializing);
                if timeout_ms < profile_timeout_ms {
                    // The platform's bound is the shorter one: the init deadline moves to it.
                    if let Some(timer) = worker.state_timer.take() {
                        lp.timers.cancel(timer);
                    }
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                    worker.state_timer = Some(lp.timers.schedule(deadline, Timer::WorkerInit(key)));
                    worker.platform_init_bound_ms = Some(timeout_ms);
                }
                lp.effects.push(Effect::FlushWorker(key));
            }
            Err(err) => {
                let reason = format!("cannot encode INIT: {err}");
                self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            }
        }
    }

    /// INIT_DONE: the worker serves from now on. Returns its function.
    pub(in crate::server) fn on_worker_init_done(
        &mut self,
        key: WorkerKey,
        payload: &[u8],
        lp: &mut Lent<'_>,
    ) -> Option<(FunctionId, crate::metrics::StartKind, std::time::Duration)> {
        let worker = self.workers.get_mut(key)?;
        if worker.state != WorkerState::Initializing {
            let reason = format!("INIT_DONE in state {}", worker.state.as_str());
            self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            return None;
        }
        let done = match wire::InitDone::parse(payload) {
            Ok(done) => done,
            Err(err) => {
                self.worker_protocol_error(key, &err.to_string(), lp);
                return None;
            }
        };
        let worker = self.workers.get_mut(key)?;
        worker.request_window = done.request_window;
        if let Some(timer) = worker.state_timer.take() {
            lp.timers.cancel(timer);
        }
        worker.become_ready(lp.clock.now());
        worker.last_active = lp.clock.now();
        if let Some(relay) = worker.process.stderr_relay.take() {
            lp.console.forget_tail(relay);
        }
        let after = worker.process.started_at.elapsed();
        log::info!(
            "[turf w={} pid={}] ready to serve after {:.3} ms",
            worker.process.id,
            worker.process.pid,
            after.as_secs_f64() * 1000.0
        );
        Some((worker.function, worker.start_kind(), after))
    }

    /// INIT_ERROR: loading the code or the initializer failed. Returns the worker's function
    /// and the start error; the loop records it, then stops the worker.
    pub(in crate::server) fn init_error(
        &mut self,
        key: WorkerKey,
        payload: &[u8],
    ) -> Option<(FunctionId, StartError)> {
        let worker = self.workers.get_mut(key)?;
        worker.start_failure_recorded = true;
        let msg = ErrorPayload::parse_lenient(payload, "InitializationError", "initializer failed");
        let error = StartError {
            error_type: msg.error_type,
            message: msg.error_message,
            stack: msg.stack_trace,
        };
        log::warn!(
            "[turf w={}] initialization failed: {}: {}",
            worker.process.id,
            error.error_type,
            error.message
        );
        Some((worker.function, error))
    }

    /// The init deadline of a worker of a function with `profile` passed. Returns the start
    /// error when the worker was still starting; the loop records it, then kills the worker.
    pub(in crate::server) fn init_timed_out(
        &mut self,
        key: WorkerKey,
        profile: &FunctionProfile,
    ) -> Option<StartError> {
        let worker = self.workers.get_mut(key)?;
        worker.state_timer = None;
        if !worker.state.is_starting() {
            return None;
        }
        worker.start_failure_recorded = true;
        let bound = match worker.platform_init_bound_ms {
            Some(ms) => format!("x-fc-initialization-timeout ({ms} ms)"),
            None => format!(
                "worker.initializationTimeout ({} ms)",
                profile.worker.initialization_timeout_ms
            ),
        };
        let message = format!(
            "worker {} of function {} did not finish initializing within {bound}",
            worker.process.id, profile.name
        );
        log::warn!("[turf] {message}");
        Some(StartError {
            error_type: "InitializationTimeout".into(),
            message,
            stack: Vec::new(),
        })
    }

    /// Stops sending a worker new requests; it stops once its in-flight ones finish, or after
    /// `dataPlane.closeTrafficTimeout` at the latest.
    pub(in crate::server) fn drain_worker(&mut self, key: WorkerKey, why: &str, lp: &mut Lent<'_>) {
        let timeout = Duration::from_millis(lp.config.data_plane.close_traffic_timeout_ms);
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if worker.state != WorkerState::Ready {
            return;
        }
        log::info!("[cp] draining worker {} ({why})", worker.process.id);
        worker.advance(WorkerState::Draining);
        if worker.streams.is_empty() {
            self.stop_worker(key, why, lp);
        } else {
            let timer = lp
                .timers
                .schedule(Instant::now() + timeout, Timer::DrainTimeout(key));
            worker.state_timer = Some(timer);
        }
    }

    /// A draining worker did not finish its requests within `dataPlane.closeTrafficTimeout`.
    pub(in crate::server) fn on_drain_timeout(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        if let Some(w) = self.workers.get_mut(key) {
            w.state_timer = None;
            if w.state == WorkerState::Draining {
                let reason = format!(
                    "worker {} still had requests after dataPlane.closeTrafficTimeout ({} ms)",
                    w.process.id, lp.config.data_plane.close_traffic_timeout_ms
                );
                self.stop_worker(key, &reason, lp);
            }
        }
    }

    /// Stops a worker gracefully: close its input (EOF asks it to exit), SIGTERM its group, and
    /// SIGKILL after `turf.gracefulExitPeriodMs`.
    pub(in crate::server) fn stop_worker(
        &mut self,
        key: WorkerKey,
        reason: &str,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if worker.state >= WorkerState::Stopping {
            return;
        }
        log::info!(
            "[turf w={} pid={}] stopping: {reason}",
            worker.process.id,
            worker.process.pid
        );
        worker.exit_reason.get_or_insert_with(|| reason.to_owned());
        worker.imposed.get_or_insert(ExitReason::Stopped);
        worker.advance(WorkerState::Stopping);
        if let Some(mut pipe) = worker.to_worker.take() {
            let _ = lp.registry.deregister(&mut pipe);
        }
        if let Some(timer) = worker.state_timer.take() {
            lp.timers.cancel(timer);
        }
        let grace = Duration::from_millis(lp.config.turf.graceful_exit_period_ms);
        self.terminate(Child::Worker(key), grace, lp.timers);
        self.worker_gone(key, reason, lp);
    }

    /// Stops every worker (the runtime is stopping).
    pub(in crate::server) fn stop_all_workers(&mut self, lp: &mut Lent<'_>) {
        for key in self.workers.keys() {
            self.stop_worker(key, "runtime stopping", lp);
        }
    }

    /// Kills a worker's process group at once and fails its invocations with `reason`;
    /// `accounted` is the reason recorded in `resource_usage.log`.
    pub(in crate::server) fn kill_worker(
        &mut self,
        key: WorkerKey,
        reason: &str,
        accounted: ExitReason,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        worker.exit_reason.get_or_insert_with(|| reason.to_owned());
        worker.imposed.get_or_insert(accounted);
        worker.process.kill();
        self.worker_gone(key, reason, lp);
    }

    /// A worker the kernel killed for exceeding its cgroup memory limit is accounted (and its
    /// requests failed) as `mem_overload`, like one the poller killed.
    fn note_oom(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(key) else {
            return;
        };
        if w.imposed.is_none() && w.process.cgroup.as_ref().is_some_and(|cg| cg.oom_killed()) {
            w.imposed = Some(ExitReason::MemOverload);
            // An inspect worker's cgroup holds the relaxed limit, not the pool's share.
            let (limit, relaxed) = if w.inspect {
                (
                    inspector::relaxed_memory(w.memory_limit),
                    ", x100 for an inspect worker",
                )
            } else {
                (w.memory_limit, "")
            };
            w.exit_reason = Some(format!(
                "worker {} was killed by the kernel for exceeding resourceLimit.memory \
                 ({limit} bytes{relaxed}, enforced by its cgroup)",
                w.process.id
            ));
        }
    }

    /// The worker's output pipe reached EOF: it exited or is exiting.
    pub(in crate::server) fn on_worker_pipe_closed(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        // The exit status is often already there; reaping first gives errors the real cause.
        self.reap_children(lp);
        self.note_oom(key);
        if let Some(w) = self.workers.get_mut(key)
            && w.state.is_starting()
            && w.exit_reason.is_none()
        {
            if w.awaiting_exit {
                return;
            }
            // A process closes its descriptors a moment before its exit status can be
            // collected. A failed start's error is read by whoever deploys the function, so it
            // waits for that status (the reap reports it) rather than saying only "exited";
            // a worker that closed its channel and lives on is reported when the wait is over.
            w.awaiting_exit = true;
            if let Some(pipe) = w.from_worker.as_mut() {
                let _ = lp.registry.deregister(pipe);
            }
            if let Some(pipe) = w.to_worker.as_mut() {
                let _ = lp.registry.deregister(pipe);
            }
            if let Some(timer) = w.state_timer.take() {
                lp.timers.cancel(timer);
            }
            let due = Instant::now() + EXIT_STATUS_WAIT;
            w.state_timer = Some(lp.timers.schedule(due, Timer::ExitStatusWait(key)));
            return;
        }
        self.report_closed_channel(key, lp);
    }

    /// A starting worker whose channel closed was not reaped within [`EXIT_STATUS_WAIT`]: it
    /// goes out of service without its exit status, and its process group is killed.
    pub(in crate::server) fn exit_status_wait_over(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        self.reap_children(lp);
        if let Some(w) = self.workers.get_mut(key) {
            w.state_timer = None;
            if w.exit_reason.is_none() {
                w.exit_reason = Some(format!(
                    "worker {} (pid {}) closed its protocol channel and did not exit",
                    w.process.id, w.process.pid
                ));
            }
        }
        self.report_closed_channel(key, lp);
    }

    /// Takes worker `key`, whose protocol channel closed, out of service with the reason it
    /// has, or "exited unexpectedly".
    fn report_closed_channel(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        let Some(w) = self.workers.get(key) else {
            return;
        };
        let reason = w.exit_reason.clone().unwrap_or_else(|| {
            format!(
                "worker {} (pid {}) exited unexpectedly",
                w.process.id, w.process.pid
            )
        });
        // Without its channel a worker can serve nothing: one that closed it and lives on (or
        // left processes in its group) is killed now, not when it chooses to exit. A stopping
        // worker closes it as it exits, within the grace period it was given.
        if w.state < WorkerState::Stopping {
            w.process.kill();
        }
        self.worker_gone(key, &reason, lp);
    }

    /// Takes a worker out of service for good: its pipes are closed, its streams end, and its
    /// [`Departure`] is kept for the loop (`WorkersGone`). Idempotent. The record itself stays
    /// until the pid is reaped.
    pub(in crate::server) fn worker_gone(
        &mut self,
        key: WorkerKey,
        reason: &str,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        let was_starting = worker.state.is_starting();
        // A start whose failure was recorded when it happened does not fail again by exiting.
        let start_failed_here = was_starting && !worker.start_failure_recorded;
        let lifetime = worker.process.started_at.elapsed();
        // Nothing served and nothing in flight: no request is to blame for its death.
        let never_served = worker.served == 0 && worker.streams.is_empty();
        let was_stopping = worker.state >= WorkerState::Stopping;
        let already_gone = worker.from_worker.is_none() && worker.to_worker.is_none();
        let relay = worker.process.stderr_relay.take();
        let stderr_tail = if start_failed_here && !already_gone {
            start_failure_stderr(relay, &worker.process.log_dir, lp)
        } else {
            if let Some(relay) = relay {
                lp.console.forget_tail(relay);
            }
            None
        };
        if let Some(mut pipe) = worker.from_worker.take() {
            let _ = lp.registry.deregister(&mut pipe);
        }
        if let Some(mut pipe) = worker.to_worker.take() {
            let _ = lp.registry.deregister(&mut pipe);
        }
        worker.wbuf.clear();
        worker.wstart = 0;
        if !was_stopping {
            worker.advance(WorkerState::Exited);
        }
        let mut clients = Vec::with_capacity(worker.streams.len());
        for (_, stream) in worker.streams.drain() {
            if let Some(timer) = stream.cancel_timer {
                lp.timers.cancel(timer);
            }
            clients.extend(stream.client);
        }
        if already_gone && clients.is_empty() {
            return;
        }
        // The in-flight requests learn why their worker is gone.
        let (error_type, reason) = match worker.imposed {
            Some(ExitReason::MemOverload) => {
                ("MemoryLimitExceeded", format!("{reason} (mem_overload)"))
            }
            Some(ExitReason::CpuOverload) => {
                ("CpuLimitExceeded", format!("{reason} (cpu_overload)"))
            }
            _ => ("WorkerCrashed", reason.to_owned()),
        };
        let crash_loop = (!already_gone
            && !was_starting
            && !was_stopping
            && never_served
            && lifetime < CRASH_LOOP_WINDOW)
            .then_some(lifetime);
        log::debug!("[turf w={}] out of service: {reason}", worker.process.id);
        self.departures.push(Departure {
            worker: key,
            id: worker.process.id.clone(),
            first: !already_gone,
            function: worker.function,
            error: InvokeError::new(404, error_type, reason),
            clients,
            start_failed: start_failed_here && !already_gone,
            stderr_tail,
            crash_loop,
        });
        // What follows a worker's death is recorded, not done here: this runs inside frame,
        // timer and reaping handlers, which must not be re-entered by a launch or a dispatch.
        lp.effects.push(Effect::WorkersGone);
    }

    /// The departures the loop has not dealt with yet, oldest first.
    pub(in crate::server) fn take_departures(&mut self) -> Vec<Departure> {
        std::mem::take(&mut self.departures)
    }

    /// Names the request worker `key` died in, for its `resource_usage.log` line.
    pub(in crate::server) fn note_request_at_exit(&mut self, key: WorkerKey, request_id: String) {
        if let Some(w) = self.workers.get_mut(key) {
            w.request_at_exit.get_or_insert(request_id);
        }
    }

    /// Reaps every exited child and retires its record.
    pub(in crate::server) fn reap_children(&mut self, lp: &mut Lent<'_>) {
        loop {
            let reaped = match sys::reap_one() {
                Ok(Some(sys::Waited::Exited(r))) => r,
                Ok(Some(sys::Waited::Stopped { pid, signal })) => {
                    self.child_stopped(pid, signal, lp);
                    continue;
                }
                Ok(None) => return,
                Err(err) => {
                    log::warn!("[turf] wait4 failed: {err}");
                    return;
                }
            };
            match self.children.remove(&reaped.pid) {
                Some(Child::Seed(seed)) => self.on_seed_reaped(seed, &reaped.exit, lp),
                Some(Child::Spare(spare)) => {
                    self.spare_reaped(spare, &reaped.exit, lp);
                    lp.effects.push(Effect::BalanceSpares);
                    lp.effects.push(Effect::Waiters);
                }
                Some(Child::Worker(key)) => self.retire_reaped(key, Some(reaped), lp),
                Some(Child::Gateway) => self.gateway_reaped(&reaped.exit, lp),
                None => {
                    // A forked worker reaped before its seed reported it, or an orphaned
                    // grandchild of a worker (the runtime is a child subreaper).
                    log::debug!("[turf] reaped unknown child {}", reaped.pid);
                    self.keep_unclaimed_exit(reaped);
                }
            }
        }
    }

    /// A child process was stopped by `signal` (its own code, or anyone allowed to signal it):
    /// frozen, it would hold its invocations until their deadlines and its place in its pool
    /// for ever. It is killed, and its exit goes the usual way; a worker's invocations fail now
    /// with the reason. An orphaned grandchild (the runtime is a child subreaper) is left alone.
    fn child_stopped(&mut self, pid: i32, signal: i32, lp: &mut Lent<'_>) {
        let Some(&child) = self.children.get(&pid) else {
            log::debug!(
                "[turf] unknown child {pid} stopped by {}",
                sys::signal_name(signal)
            );
            return;
        };
        if let Child::Worker(key) = child {
            let Some(w) = self.workers.get(key) else {
                return;
            };
            let reason = format!(
                "worker {} (pid {pid}) was stopped by {} and could serve nothing, so it was \
                 killed",
                w.process.id,
                sys::signal_name(signal)
            );
            log::warn!("[turf w={} pid={pid}] {reason}", w.process.id);
            self.kill_worker(key, &reason, ExitReason::Crashed, lp);
            return;
        }
        if let Some(process) = self.process_mut(child) {
            log::warn!(
                "[turf {} pid={pid}] stopped by {}; killing it",
                process.id,
                sys::signal_name(signal)
            );
            process.kill();
        }
    }

    /// Retires worker `key` whose process is gone: `reaped` is its exit, `None` when it never
    /// had a process (a fork that did not happen). It leaves service now; its record goes
    /// when `WorkerReaped` runs, after the loop has dealt with its departure.
    pub(in crate::server) fn retire_reaped(
        &mut self,
        key: WorkerKey,
        reaped: Option<sys::Reaped>,
        lp: &mut Lent<'_>,
    ) {
        self.note_oom(key);
        let Some(w) = self.workers.get_mut(key) else {
            return;
        };
        if w.exit_reason.is_none() {
            let how = reaped
                .as_ref()
                .map_or_else(|| "never started".to_owned(), |r| r.exit.to_string());
            w.exit_reason = Some(format!(
                "worker {} (pid {}) exited unexpectedly with {how}",
                w.process.id, w.process.pid
            ));
        }
        if let Some(reaped) = &reaped {
            let level = if w.state >= WorkerState::Stopping {
                log::Level::Info
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "[turf w={} pid={}] exited with {} (user {} ms, sys {} ms, max rss {} KiB)",
                w.process.id,
                reaped.pid,
                reaped.exit,
                reaped.user_cpu_us / 1000,
                reaped.system_cpu_us / 1000,
                reaped.max_rss_kib
            );
        }
        let reason = w.exit_reason.clone().unwrap_or_default();
        self.reaped.push((key, reaped));
        self.worker_gone(key, &reason, lp);
        lp.effects.push(Effect::WorkersReaped);
    }

    /// Removes the records of reaped workers and writes their `resource_usage.log` lines;
    /// `function_name` names a worker's function.
    pub(in crate::server) fn finish_reaped(
        &mut self,
        function_name: impl Fn(FunctionId) -> String,
        lp: &mut Lent<'_>,
    ) {
        for (key, reaped) in std::mem::take(&mut self.reaped) {
            let Some(w) = self.workers.remove(key) else {
                continue;
            };
            if let Some(timer) = w.state_timer {
                lp.timers.cancel(timer);
            }
            let oom = w.process.cgroup.as_ref().is_some_and(|cg| cg.oom_killed());
            if let Some(reaped) = &reaped {
                let accounted = ExitReason::decide(w.imposed, oom, reaped.exit);
                let function = function_name(w.function);
                let record = ExitRecord::new(
                    reaped,
                    &w.process.id,
                    &function,
                    accounted,
                    w.request_at_exit.as_deref(),
                    w.served,
                );
                self.accounting.record(&record);
            }
            // The group may hold grandchildren that outlived the worker: they go too.
            self.release_process(w.process, lp.timers, &lp.config.worker);
        }
        lp.effects.push(Effect::Waiters);
    }

    /// The seed reported a forked worker's pid: move it into its cgroup. Returns whether its
    /// READY came first and must now be answered.
    pub(in crate::server) fn worker_forked(
        &mut self,
        key: WorkerKey,
        pid: i32,
        lp: &mut Lent<'_>,
    ) -> bool {
        let Some(w) = self.workers.get_mut(key) else {
            spawn::kill(pid, libc::SIGKILL);
            return false;
        };
        w.process.pid = pid;
        self.children.insert(pid, Child::Worker(key));
        log::info!("[turf w={} pid={pid}] forked from its seed", w.process.id);
        let mut ready_due = false;
        if w.state >= WorkerState::Stopping {
            // Stopped or killed while the fork was under way.
            spawn::kill(pid, libc::SIGKILL);
        } else if let Some(Err(err)) = w.process.cgroup.as_ref().map(|cg| cg.attach(pid)) {
            let why = format!("cannot move forked worker into its cgroup: {err}");
            self.kill_worker(key, &why, ExitReason::Crashed, lp);
        } else {
            ready_due = std::mem::take(&mut w.ready_deferred);
        }
        if let Some(reaped) = self.claim_unclaimed_exit(pid) {
            self.retire_reaped(key, Some(reaped), lp);
            return false;
        }
        ready_due
    }

    /// A worker whose fork never happened: it has no process; retire its record now.
    pub(in crate::server) fn discard_unforked(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        let Some(why) = self.workers.get(key).and_then(|w| w.exit_reason.clone()) else {
            return;
        };
        self.worker_gone(key, &why, lp);
        self.retire_reaped(key, None, lp);
    }

    /// Writes a worker's queued frames.
    pub(in crate::server) fn flush_worker(&mut self, key: WorkerKey, lp: &mut Lent<'_>) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if worker.awaiting_exit {
            // Its channel is closed; writing would only replace its exit status with EPIPE.
            return;
        }
        let was_full = worker.queued() >= WRITE_QUEUE_LIMIT;
        if let Err(err) = worker.flush() {
            let reason = format!("writing to worker {} failed: {err}", worker.process.id);
            worker.exit_reason.get_or_insert(reason);
            self.on_worker_pipe_closed(key, lp);
            return;
        }
        if (was_full && worker.queued() < WRITE_QUEUE_LIMIT) | worker.take_splice_waiters() {
            // Its queue has room again, or its body pipe is empty: the bodies that waited for
            // it move on.
            for client in worker.streams.values().filter_map(|s| s.client) {
                lp.effects.push(Effect::DriveConn(client.conn));
            }
        }
    }

    /// SIGKILLs every worker and seed group: the runtime is exiting.
    pub(in crate::server) fn kill_all_workers(&self) {
        for process in self.processes() {
            process.kill();
        }
    }
}

/// Relays a starting worker's (or spare's) output to the console. Until it is ready, the console
/// keeps the end of its stderr (`logger.startFailureStderrBytes`) for the error of a failed
/// start; returns the relay whose tail is kept.
pub(in crate::server) fn relay_starting_output(
    output: spawn::OutputPipes,
    lp: &mut Lent<'_>,
) -> Option<Key> {
    let relay = lp.console.attach_labelled(lp.registry, output, "")?;
    let bytes = lp.config.logger.start_failure_stderr_bytes;
    if bytes == 0 {
        return None;
    }
    lp.console.keep_tail(relay, bytes);
    Some(relay)
}

/// The end of the stderr of a worker that exited while starting: what the console kept of its
/// relay, or the end of the `stderr` file in its log directory. `None` when it wrote nothing or
/// quoting is off.
fn start_failure_stderr(relay: Option<Key>, log_dir: &Path, lp: &mut Lent<'_>) -> Option<String> {
    let bytes = lp.config.logger.start_failure_stderr_bytes;
    let text = match relay {
        Some(relay) => {
            let tail = lp.console.take_tail(lp.registry, relay);
            tail_text(&tail, tail.len() < bytes)
        }
        None if bytes > 0 && !log_dir.as_os_str().is_empty() => stderr_file_tail(log_dir, bytes)?,
        None => return None,
    };
    (!text.is_empty()).then_some(text)
}
