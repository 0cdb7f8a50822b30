//! Worker supervision: launching toward the pool's target, the READY/INIT handshake, stopping,
//! killing, reaping, and failing a dead worker's invocations.

use super::client::InvokeError;
use super::{Child, Effect, Lifecycle, Server, Timer};
use crate::fc;
use crate::pool::StartError;
use crate::reactor::slab::Key;
use crate::reactor::token::{self, Source};
use crate::sched::ScaleAction;
use crate::sched::backoff::CRASH_LOOP_WINDOW;
use crate::sched::capacity::LaunchBlock;
use crate::sched::plan::{self, Blocker, LaunchPlan, PlanInput};
use crate::sys;
use crate::turf::accounting::{ExitReason, ExitRecord};
use crate::turf::spawn;
use crate::turf::worker::{Worker, WorkerState};
use crate::wire::{self, ErrorPayload, Init, InitFunction, SpareInit};
use mio::Interest;
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

impl Server {
    /// Launches workers for `function` as the queue and the reservation need.
    pub(super) fn scale(&mut self, function: usize) {
        self.scale_with(function, ScaleAction::Hold);
    }

    /// Launches workers for the queue, the reservation and the scaler's `action` as
    /// [`plan::launch_plan`] decides (within `controlPlane.expandConcurrency`, the back-off,
    /// `replicaCountLimit` and `virtualMemoryPoolSize`), and fails queued requests when it says
    /// no worker can come: with the last start error, or with the capacity limit's error.
    pub(super) fn scale_with(&mut self, function: usize, action: ScaleAction) {
        // The seed follows the function: started with it, replaced with its code, stopped
        // when it is removed or the runtime stops.
        self.follow_seed(function);
        if self.lifecycle.phase != Lifecycle::Running || self.scheduler.functions[function].removed
        {
            return;
        }
        let (starting, alive) = self.worker_counts(function);
        let f = &self.scheduler.functions[function];
        let worker = &f.profile.worker;
        let input = PlanInput {
            queued: f.pool.queue.len(),
            starting,
            alive,
            max_active: self.max_active(function),
            replica_limit: usize::try_from(worker.replica_count_limit).unwrap_or(usize::MAX),
            reservation: usize::try_from(worker.reservation_count).unwrap_or(usize::MAX),
            rollout_target: f.rollout_target,
            expand_concurrency: usize::try_from(self.config.control_plane.expand_concurrency)
                .unwrap_or(1),
            disposable: worker.disposable,
            backoff: f.pool.backoff(),
            memory_per_worker: f.profile.resource_limit.memory,
            pool_used: self.memory_reserved(),
            pool_size: self.config.virtual_memory_pool_size,
            fast_fail: worker.fast_fail_requests_on_starting,
            action,
        };
        let plan = plan::launch_plan(input, Instant::now());
        if let LaunchPlan::Admitted { cut, blocked, .. } = plan {
            self.scheduler.functions[function].pool.launch_blocked = blocked.map(|b| b.to_string());
            if let Some(block) = cut {
                log::warn!(
                    "[cp] function {}: {block}",
                    self.scheduler.functions[function].profile.name
                );
            }
        }
        match plan.fail_queue() {
            Some(Blocker::Backoff) => self.fail_queue_with_start_error(function),
            Some(Blocker::Capacity(block)) => {
                let err = InvokeError::new(503, block.error_type(), block.to_string());
                let f = &mut self.scheduler.functions[function];
                let waiting: Vec<_> = f.pool.queue.drain(..).collect();
                let count = waiting.len() as u64;
                match block {
                    LaunchBlock::MemoryPool { .. } => f.rejected.no_memory += count,
                    LaunchBlock::ReplicaLimit { .. } => f.rejected.replica_limit += count,
                }
                for client in waiting {
                    self.fail_invocation(client, &err);
                }
            }
            None => {}
        }
        for _ in 0..plan.launch() {
            if !self.spawn_worker(function) {
                break;
            }
        }
    }

    /// Memory reserved in `virtualMemoryPoolSize` by every worker that has not exited, starting
    /// ones included (so concurrent starts cannot overcommit the pool).
    fn memory_reserved(&self) -> u64 {
        self.supervisor
            .workers
            .iter()
            .filter(|w| w.state < WorkerState::Exited)
            .map(|w| {
                self.scheduler.functions[w.function]
                    .profile
                    .resource_limit
                    .memory
            })
            .sum()
    }

    /// (starting, alive) workers of a function; alive counts starting and ready ones.
    fn worker_counts(&self, function: usize) -> (usize, usize) {
        let mut starting = 0;
        let mut alive = 0;
        let generation = self.scheduler.functions[function].generation;
        for &key in &self.scheduler.functions[function].pool.workers {
            // Workers of an older generation are being replaced: they do not count.
            if let Some(w) = self
                .supervisor
                .workers
                .get(key)
                .filter(|w| w.generation == generation)
            {
                if w.state.is_starting() {
                    starting += 1;
                }
                if w.state <= WorkerState::Ready {
                    alive += 1;
                }
            }
        }
        (starting, alive)
    }

    /// The next worker id of `function` and its log directory.
    pub(super) fn next_worker_id(&mut self, function: usize) -> (String, PathBuf) {
        let name = &self.scheduler.functions[function].profile.name;
        (self.supervisor).next_process_id(function, name, "", &self.config)
    }

    /// The limits a worker of `function` runs under.
    pub(super) fn worker_limits(&self, function: usize) -> spawn::WorkerLimits {
        let profile = &self.scheduler.functions[function].profile;
        self.supervisor.worker_limits(profile, &self.config)
    }

    /// Asks `function`'s seed to fork a worker, if it has a ready one. `None` when it has none
    /// (the caller cold-starts); otherwise whether a worker is coming.
    fn fork_worker(&mut self, function: usize, decided: Instant) -> Option<bool> {
        let running = self.lifecycle.phase == Lifecycle::Running;
        let target = self.scheduler.seed_target(function, running);
        let fork = (self.supervisor).request_fork(&target, decided, &mut lent!(self))?;
        let id = fork.worker.process.id.clone();
        let Some(key) = self.install_worker(fork.worker) else {
            return Some(false);
        };
        self.supervisor.note_pending_fork(fork.seed, id, key);
        Some(true)
    }

    /// The seed reported a forked worker's pid: move it into its cgroup, then let it start.
    pub(super) fn on_worker_forked(&mut self, key: Key, pid: i32) {
        let Some(w) = self.supervisor.workers.get_mut(key) else {
            spawn::kill(pid, libc::SIGKILL);
            return;
        };
        w.process.pid = pid;
        log::info!("[turf w={} pid={pid}] forked from its seed", w.process.id);
        if w.state >= WorkerState::Stopping {
            // Stopped or killed while the fork was under way.
            spawn::kill(pid, libc::SIGKILL);
        } else if let Some(Err(err)) = w.process.cgroup.as_ref().map(|cg| cg.attach(pid)) {
            let why = format!("cannot move forked worker into its cgroup: {err}");
            self.kill_worker(key, &why, ExitReason::Crashed);
        } else if std::mem::take(&mut w.ready_deferred) {
            self.on_worker_ready(key, b"(forked)");
        }
        self.supervisor.children.insert(pid, Child::Worker(key));
        if let Some(reaped) = self.supervisor.claim_unclaimed_exit(pid) {
            self.retire_reaped(key, Some(reaped));
        }
    }

    /// A worker whose fork never happened: it has no process; retire its record now.
    pub(super) fn discard_unforked(&mut self, key: Key) {
        let Some(why) = self
            .supervisor
            .workers
            .get(key)
            .and_then(|w| w.exit_reason.clone())
        else {
            return;
        };
        self.worker_gone(key, &why);
        self.retire_reaped(key, None);
    }

    /// Starts one worker: forked from the function's warm seed when it has a ready one, else
    /// cold. Returns false when it could not be started (the failure is recorded).
    fn spawn_worker(&mut self, function: usize) -> bool {
        // Start-up is timed from here, the launch decision, through fork/exec to INIT_DONE.
        let decided = Instant::now();
        if let Some(started) = self.fork_worker(function, decided) {
            return started;
        }
        if let Some(started) = self.take_spare(function, decided) {
            return started;
        }
        let (id, log_dir) = self.next_worker_id(function);
        let f = &self.scheduler.functions[function];
        let launch = match self.supervisor.runtimes.launch_spec(&f.profile, &id) {
            Ok(launch) => launch,
            Err(message) => {
                self.worker_start_failed(function, message);
                return false;
            }
        };
        let limits = self.worker_limits(function);
        let spec = (self.supervisor).spawn_spec(&f.profile, &launch, &id, &log_dir, &self.config);
        let spawned = match spawn::spawn(&spec) {
            Ok(s) => s,
            Err(err) => {
                let message = format!(
                    "cannot start a worker for function {}: {err}",
                    f.profile.name
                );
                log::error!("[turf] {message}");
                self.worker_start_failed(function, message);
                return false;
            }
        };
        let pid = spawned.pid;
        if let Some(output) = spawned.output {
            self.console.attach(self.poll.registry(), output);
        }
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
        worker.process.cgroup = spawned.cgroup;
        worker.process.started_at = decided;
        if self.install_worker(worker).is_none() {
            return false;
        }
        log::info!("[turf w={id} pid={pid}] started");
        true
    }

    /// Takes a started (or requested) worker into the loop: watches its pipes, adds it to its
    /// function's pool and arms its init deadline. `None` when its pipes cannot be watched
    /// (it is killed).
    pub(super) fn install_worker(&mut self, mut worker: Worker) -> Option<Key> {
        let function = worker.function;
        let f = &self.scheduler.functions[function];
        worker.generation = f.generation;
        let init_timeout = Duration::from_millis(f.profile.worker.initialization_timeout_ms);
        let pid = worker.process.pid;
        let id = worker.process.id.clone();
        let key = self.supervisor.workers.insert(worker);
        let registry = self.poll.registry();
        let registered = self.supervisor.workers.get_mut(key).map(|w| {
            let out = w.from_worker.as_mut().map(|p| {
                registry.register(p, token::token(Source::WorkerOut(key)), Interest::READABLE)
            });
            let inp = w.to_worker.as_mut().map(|p| {
                registry.register(p, token::token(Source::WorkerIn(key)), Interest::WRITABLE)
            });
            out.transpose().and(inp.transpose())
        });
        if pid > 0 {
            self.supervisor.children.insert(pid, Child::Worker(key));
        }
        self.scheduler.functions[function].pool.workers.push(key);
        if let Some(Err(err)) = registered {
            log::error!("[turf w={id} pid={pid}] cannot watch worker pipes: {err}");
            self.kill_worker(
                key,
                &format!("cannot watch worker pipes: {err}"),
                ExitReason::Crashed,
            );
            return None;
        }
        let timer = self
            .timers
            .schedule(Instant::now() + init_timeout, Timer::WorkerInit(key));
        if let Some(w) = self.supervisor.workers.get_mut(key) {
            w.state_timer = Some(timer);
        }
        self.arm_limit_poll();
        Some(key)
    }

    /// READY: the bootstrap runs; send INIT.
    pub(super) fn on_worker_ready(&mut self, key: Key, payload: &[u8]) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            let reason = format!("READY in state {}", worker.state.as_str());
            self.kill_worker(key, &reason, ExitReason::Crashed);
            return;
        }
        if worker.process.pid == 0 {
            // Forked, and the seed has not said which pid yet: INIT must wait until the worker
            // is in its cgroup (`seeds::on_worker_forked`).
            worker.ready_deferred = true;
            return;
        }
        if log::log_enabled!(log::Level::Debug) {
            match wire::Ready::parse(payload) {
                Ok(ready) => {
                    log::debug!(
                        "[turf w={} pid={}] ready: {ready:?}",
                        worker.process.id,
                        worker.process.pid
                    )
                }
                Err(_) => log::debug!(
                    "[turf w={} pid={}] ready: {}",
                    worker.process.id,
                    worker.process.pid,
                    String::from_utf8_lossy(payload)
                ),
            }
        }
        let profile = &self.scheduler.functions[worker.function].profile;
        // Initialized in answer to `/initialize`: in its name, within its bound. Otherwise in
        // the name of a fresh id, with the latest credentials the platform sent.
        let (request_id, platform_bound) = match &self.lifecycle.initialize_call {
            Some(call) => (call.request_id.clone(), call.timeout_ms),
            None => (self.front.ids.next_id(), None),
        };
        let code_dir = profile.code_dir.to_string_lossy();
        let facts = fc::ProfileFacts {
            name: &profile.name,
            handler: profile.handler.as_deref().unwrap_or(""),
            initializer: profile.initializer.as_deref(),
            memory_bytes: profile.resource_limit.memory,
        };
        let profile_timeout_ms = profile.worker.initialization_timeout_ms;
        let timeout_ms = platform_bound.map_or(profile_timeout_ms, |b| b.min(profile_timeout_ms));
        let mut context = fc::context(
            self.supervisor.platform.headers(),
            &request_id,
            profile.worker.invoke_timeout_ms,
            facts,
        );
        context.function.initialization_timeout = Some(timeout_ms.div_ceil(1000));
        log::debug!(
            "[turf w={}] INIT as {request_id}, credentials from {}",
            worker.process.id,
            self.supervisor.platform.source()
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
            request_id: Cow::Borrowed(&request_id),
            context,
            timeout_ms,
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
                        self.timers.cancel(timer);
                    }
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                    worker.state_timer =
                        Some(self.timers.schedule(deadline, Timer::WorkerInit(key)));
                    worker.platform_init_bound_ms = Some(timeout_ms);
                }
                self.mark_worker_dirty(key);
            }
            Err(err) => self.kill_worker(
                key,
                &format!("cannot encode INIT: {err}"),
                ExitReason::Crashed,
            ),
        }
    }

    /// INIT_DONE: the worker serves from now on.
    pub(super) fn on_worker_init_done(&mut self, key: Key) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        if worker.state != WorkerState::Initializing {
            let reason = format!("INIT_DONE in state {}", worker.state.as_str());
            self.kill_worker(key, &reason, ExitReason::Crashed);
            return;
        }
        if let Some(timer) = worker.state_timer.take() {
            self.timers.cancel(timer);
        }
        worker.advance(WorkerState::Ready);
        worker.last_active = Instant::now();
        let function = worker.function;
        log::info!(
            "[turf w={} pid={}] ready to serve after {:.3} ms",
            worker.process.id,
            worker.process.pid,
            worker.process.started_at.elapsed().as_secs_f64() * 1000.0
        );
        self.scheduler.functions[function].pool.record_initialized();
        self.scheduler
            .check_rollout(function, &self.supervisor.workers, &mut self.effects);
        self.effects.push(Effect::Dispatch(function));
        self.effects.push(Effect::Waiters);
    }

    /// INIT_ERROR: loading the code or the initializer failed.
    pub(super) fn on_worker_init_error(&mut self, key: Key, payload: &[u8]) {
        let Some(worker) = self.supervisor.workers.get(key) else {
            return;
        };
        let function = worker.function;
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
        let reason = format!("initialization failed: {}", error.message);
        self.on_start_failure(function, error);
        self.stop_worker(key, &reason);
    }

    /// The init deadline passed.
    pub(super) fn on_worker_init_timeout(&mut self, key: Key) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        worker.state_timer = None;
        if !worker.state.is_starting() {
            return;
        }
        let function = worker.function;
        let bound = match worker.platform_init_bound_ms {
            Some(ms) => format!("x-fc-initialization-timeout ({ms} ms)"),
            None => format!(
                "worker.initializationTimeout ({} ms)",
                self.scheduler.functions[function]
                    .profile
                    .worker
                    .initialization_timeout_ms
            ),
        };
        let message = format!(
            "worker {} of function {} did not finish initializing within {bound}",
            worker.process.id, self.scheduler.functions[function].profile.name
        );
        log::warn!("[turf] {message}");
        self.on_start_failure(
            function,
            StartError {
                error_type: "InitializationTimeout".into(),
                message: message.clone(),
                stack: Vec::new(),
            },
        );
        self.kill_worker(key, &message, ExitReason::TimeoutKill);
        // A forked worker whose pid never came: its seed is stuck, and is replaced (which also
        // retires this record).
        (self.supervisor).fail_seed_of_unforked(key, &message, &mut lent!(self));
    }

    /// A worker of `function` could not even be started: `WorkerStartFailed` with `message`.
    fn worker_start_failed(&mut self, function: usize, message: String) {
        self.on_start_failure(
            function,
            StartError {
                error_type: "WorkerStartFailed".into(),
                message,
                stack: Vec::new(),
            },
        );
    }

    /// Records a failed start, schedules the retry and tells waiting requests.
    fn on_start_failure(&mut self, function: usize, error: StartError) {
        let until = self.scheduler.functions[function]
            .pool
            .record_start_failure(error, Instant::now());
        self.timers.schedule(until, Timer::SpawnRetry(function));
        let (starting, alive) = self.worker_counts(function);
        // Only the dying worker may still be counted; nothing else will serve the queue soon.
        if starting <= 1 && alive <= 1 && self.scheduler.functions[function].pool.fails_fast() {
            self.fail_queue_with_start_error(function);
        }
        self.effects.push(Effect::Waiters);
    }

    fn fail_queue_with_start_error(&mut self, function: usize) {
        let Some(error) = self.scheduler.functions[function]
            .pool
            .last_start_error
            .clone()
        else {
            return;
        };
        let err = InvokeError {
            status: 404,
            error_type: error.error_type,
            message: error.message,
            stack: (!error.stack.is_empty()).then_some(error.stack),
        };
        let queued: Vec<_> = self.scheduler.functions[function]
            .pool
            .queue
            .drain(..)
            .collect();
        for client in queued {
            self.fail_invocation(client, &err);
        }
    }

    /// Stops sending a worker new requests; it stops once its in-flight ones finish, or after
    /// `dataPlane.closeTrafficTimeout` at the latest.
    pub(super) fn drain_worker(&mut self, key: Key, why: &str) {
        let timeout = Duration::from_millis(self.config.data_plane.close_traffic_timeout_ms);
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        if worker.state != WorkerState::Ready {
            return;
        }
        log::info!("[cp] draining worker {} ({why})", worker.process.id);
        worker.advance(WorkerState::Draining);
        if worker.streams.is_empty() {
            self.stop_worker(key, why);
        } else {
            let timer = self
                .timers
                .schedule(Instant::now() + timeout, Timer::DrainTimeout(key));
            if let Some(w) = self.supervisor.workers.get_mut(key) {
                w.state_timer = Some(timer);
            }
        }
    }

    /// A draining worker did not finish its requests within `dataPlane.closeTrafficTimeout`.
    pub(super) fn on_drain_timeout(&mut self, key: Key) {
        if let Some(w) = self.supervisor.workers.get_mut(key) {
            w.state_timer = None;
            if w.state == WorkerState::Draining {
                let reason = format!(
                    "worker {} still had requests after dataPlane.closeTrafficTimeout ({} ms)",
                    w.process.id, self.config.data_plane.close_traffic_timeout_ms
                );
                self.stop_worker(key, &reason);
            }
        }
    }

    /// Stops a worker gracefully: close its input (EOF asks it to exit), SIGTERM its group, and
    /// SIGKILL after `turf.gracefulExitPeriodMs`.
    pub(super) fn stop_worker(&mut self, key: Key, reason: &str) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
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
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        if let Some(timer) = worker.state_timer.take() {
            self.timers.cancel(timer);
        }
        self.terminate(Child::Worker(key));
        self.worker_gone(key, reason);
    }

    /// Kills a worker's process group at once and fails its invocations with `reason`;
    /// `accounted` is the reason recorded in `resource_usage.log`.
    pub(super) fn kill_worker(&mut self, key: Key, reason: &str, accounted: ExitReason) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        worker.exit_reason.get_or_insert_with(|| reason.to_owned());
        worker.imposed.get_or_insert(accounted);
        worker.process.kill();
        self.worker_gone(key, reason);
    }

    /// A worker the kernel killed for exceeding its cgroup memory limit is accounted (and its
    /// requests failed) as `mem_overload`, like one the poller killed.
    fn note_oom(&mut self, key: Key) {
        let Some(w) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        if w.imposed.is_none() && w.process.cgroup.as_ref().is_some_and(|cg| cg.oom_killed()) {
            let limit = self.scheduler.functions[w.function]
                .profile
                .resource_limit
                .memory;
            w.imposed = Some(ExitReason::MemOverload);
            w.exit_reason = Some(format!(
                "worker {} was killed by the kernel for exceeding resourceLimit.memory \
                 ({limit} bytes, enforced by its cgroup)",
                w.process.id
            ));
        }
    }

    /// The worker's output pipe reached EOF: it exited or is exiting.
    pub(super) fn on_worker_pipe_closed(&mut self, key: Key) {
        // The exit status is often already there; reaping first gives errors the real cause.
        self.reap_children();
        self.note_oom(key);
        let reason = match self.supervisor.workers.get(key) {
            Some(w) => w.exit_reason.clone().unwrap_or_else(|| {
                format!(
                    "worker {} (pid {}) exited unexpectedly",
                    w.process.id, w.process.pid
                )
            }),
            None => return,
        };
        self.worker_gone(key, &reason);
    }

    /// Takes a worker out of service for good: its pipes are closed, its streams fail with
    /// `reason`, and the pool is topped up. Idempotent. The record itself stays until the pid is
    /// reaped.
    pub(super) fn worker_gone(&mut self, key: Key, reason: &str) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        let was_starting = worker.state.is_starting();
        let lifetime = worker.process.started_at.elapsed();
        // Nothing served and nothing in flight: no request is to blame for its death.
        let never_served = worker.served == 0 && worker.streams.is_empty();
        let was_stopping = worker.state >= WorkerState::Stopping;
        let already_gone = worker.from_worker.is_none() && worker.to_worker.is_none();
        if let Some(mut pipe) = worker.from_worker.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        if let Some(mut pipe) = worker.to_worker.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        worker.wbuf.clear();
        worker.wstart = 0;
        let function = worker.function;
        let id = worker.process.id.clone();
        let streams: Vec<_> = worker.streams.drain().collect();
        let in_flight = streams.iter().find_map(|(_, s)| s.client);
        let imposed = worker.imposed;
        if !was_stopping {
            worker.advance(WorkerState::Exited);
        }
        if let Some(client) = in_flight {
            let id = self.request_mut(client).map(|r| r.id.clone());
            if let Some(w) = self.supervisor.workers.get_mut(key) {
                w.request_at_exit = w.request_at_exit.take().or(id);
            }
        }
        // The in-flight requests learn why their worker is gone.
        let (error_type, reason) = match imposed {
            Some(ExitReason::MemOverload) => {
                ("MemoryLimitExceeded", format!("{reason} (mem_overload)"))
            }
            Some(ExitReason::CpuOverload) => {
                ("CpuLimitExceeded", format!("{reason} (cpu_overload)"))
            }
            _ => ("WorkerCrashed", reason.to_owned()),
        };
        for (_, stream) in streams {
            if let Some(timer) = stream.cancel_timer {
                self.timers.cancel(timer);
            }
            if let Some(client) = stream.client {
                let err = InvokeError::new(404, error_type, reason.clone());
                self.log_invocation_failure(client, &err);
                self.fail_invocation(client, &err);
            }
        }
        if already_gone {
            return;
        }
        self.scheduler.functions[function]
            .pool
            .workers
            .retain(|k| *k != key);
        if was_starting
            && self.scheduler.functions[function]
                .pool
                .last_start_error
                .is_none()
        {
            self.on_start_failure(
                function,
                StartError {
                    error_type: "WorkerStartFailed".into(),
                    message: format!("{reason} while starting"),
                    stack: Vec::new(),
                },
            );
        } else if !was_starting && !was_stopping && never_served && lifetime < CRASH_LOOP_WINDOW {
            // A ready worker that dies on its own, serving nothing, would respawn as fast as it
            // starts: back the respawn off. Waiting requests keep waiting. A worker that dies
            // while serving is replaced at once: only the requests it held failed (above).
            let until = self.scheduler.functions[function]
                .pool
                .record_crash(Instant::now());
            log::warn!(
                "[turf w={id}] died {} ms after it started, before serving any request; \
                 respawning after {} ms",
                lifetime.as_millis(),
                until.saturating_duration_since(Instant::now()).as_millis()
            );
            self.timers.schedule(until, Timer::SpawnRetry(function));
        }
        log::debug!("[turf w={id}] out of service: {reason}");
        // What follows a worker's death is recorded, not done here: this runs inside frame,
        // timer and reaping handlers, which must not be re-entered by a launch or a dispatch.
        self.effects.push(Effect::Scale(function));
        self.effects.push(Effect::Dispatch(function));
        self.effects.push(Effect::Waiters);
    }

    /// Reaps every exited child and retires its record.
    pub(super) fn reap_children(&mut self) {
        loop {
            let reaped = match sys::reap_one() {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(err) => {
                    log::warn!("[turf] wait4 failed: {err}");
                    return;
                }
            };
            match self.supervisor.children.remove(&reaped.pid) {
                Some(Child::Seed(seed)) => {
                    (self.supervisor).on_seed_reaped(seed, &reaped.exit, &mut lent!(self));
                }
                Some(Child::Spare(spare)) => self.on_spare_reaped(spare, &reaped.exit),
                Some(Child::Worker(key)) => self.retire_reaped(key, Some(reaped)),
                None => {
                    // A forked worker reaped before its seed reported it, or an orphaned
                    // grandchild of a worker (the runtime is a child subreaper).
                    log::debug!("[turf] reaped unknown child {}", reaped.pid);
                    self.supervisor.keep_unclaimed_exit(reaped);
                }
            }
        }
    }

    /// Retires worker `key` whose process is gone: `reaped` is its exit, `None` when it never
    /// had a process (a fork that did not happen).
    pub(super) fn retire_reaped(&mut self, key: Key, reaped: Option<sys::Reaped>) {
        self.note_oom(key);
        let (id, expected) = match self.supervisor.workers.get_mut(key) {
            Some(w) => {
                if w.exit_reason.is_none() {
                    let how = reaped
                        .as_ref()
                        .map_or_else(|| "never started".to_owned(), |r| r.exit.to_string());
                    w.exit_reason = Some(format!(
                        "worker {} (pid {}) exited unexpectedly with {how}",
                        w.process.id, w.process.pid
                    ));
                }
                (w.process.id.clone(), w.state >= WorkerState::Stopping)
            }
            None => return,
        };
        if let Some(reaped) = &reaped {
            let level = if expected {
                log::Level::Info
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "[turf w={id} pid={}] exited with {} (user {} ms, sys {} ms, max rss {} KiB)",
                reaped.pid,
                reaped.exit,
                reaped.user_cpu_us / 1000,
                reaped.system_cpu_us / 1000,
                reaped.max_rss_kib
            );
        }
        let reason = self
            .supervisor
            .workers
            .get(key)
            .and_then(|w| w.exit_reason.clone())
            .unwrap_or_default();
        self.worker_gone(key, &reason);
        if let Some(w) = self.supervisor.workers.remove(key) {
            if let Some(timer) = w.state_timer {
                self.timers.cancel(timer);
            }
            let oom = w.process.cgroup.as_ref().is_some_and(|cg| cg.oom_killed());
            if let Some(reaped) = &reaped {
                let accounted = ExitReason::decide(w.imposed, oom, reaped.exit);
                let function = &self.scheduler.functions[w.function].profile.name;
                let record = ExitRecord::new(
                    reaped,
                    &w.process.id,
                    function,
                    accounted,
                    w.request_at_exit.as_deref(),
                    w.served,
                );
                self.supervisor.accounting.record(&record);
            }
            // The group may hold grandchildren that outlived the worker: they go too.
            self.release_process(w.process);
        }
        self.effects.push(Effect::Waiters);
    }

    /// Writes a worker's queued frames.
    pub(super) fn flush_worker(&mut self, key: Key) {
        let Some(worker) = self.supervisor.workers.get_mut(key) else {
            return;
        };
        match worker.flush() {
            Ok(_) => {}
            Err(err) => {
                let reason = format!("writing to worker {} failed: {err}", worker.process.id);
                self.on_worker_pipe_closed_with(key, &reason);
            }
        }
    }

    fn on_worker_pipe_closed_with(&mut self, key: Key, reason: &str) {
        if let Some(w) = self.supervisor.workers.get_mut(key) {
            w.exit_reason.get_or_insert_with(|| reason.to_owned());
        }
        self.on_worker_pipe_closed(key);
    }

    /// SIGKILLs every worker and seed group: the runtime is exiting.
    pub(super) fn kill_all_workers(&mut self) {
        for process in self.supervisor.processes() {
            process.kill();
        }
    }
}
