//! Warm seeds, on the supervisor (`turf::seed`): one per Python function that allows it,
//! started with the function and replaced with its code; forks workers on scale-up; restarted
//! with back-off when it dies. Without a ready seed, workers cold-start: nothing waits for a
//! seed.
//!
//! A fork that never happened retires its worker's record here; a fork the seed reported is
//! recorded (`WorkerForked`) for the loop, which may owe the worker its INIT.

use super::Supervisor;
use crate::config::{FunctionProfile, Runtime};
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::reactor::slab::Key;
use crate::reactor::token::{self, Source};
use crate::sched::backoff::RestartBackoff;
use crate::server::Lent;
use crate::server::effects::Effect;
use crate::server::{Child, Timer};
use crate::sys;
use crate::turf::seed::{self, Seed, SeedMessage, SeedState};
use crate::turf::spawn;
use crate::turf::worker::Worker;
use mio::Interest;
use mio::unix::SourceFd;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Worker exits reaped before the seed reported their pid, kept to be claimed (a forked worker
/// can die, and be reaped, before its `forked` message is read).
const MAX_UNCLAIMED_EXITS: usize = 64;

/// A function's seed slot.
#[derive(Debug, Default)]
pub(in crate::server) struct SeedSlot {
    /// Its current seed, if one is running.
    pub key: Option<Key>,
    /// The restart back-off after seed deaths.
    pub restart: RestartBackoff,
    /// The generation whose import failed: no seed for it (workers cold-start and report the
    /// error themselves).
    pub import_failed: Option<u64>,
    /// Why the last seed ended, for `noslate ps`.
    pub last_error: Option<String>,
}

/// What the scheduler says of a function, for its seed.
#[derive(Debug, Clone, Copy)]
pub(in crate::server) struct SeedTarget<'a> {
    pub(in crate::server) function: FunctionId,
    /// The function's code generation: a seed of an older one is replaced.
    pub(in crate::server) generation: u64,
    pub(in crate::server) profile: &'a FunctionProfile,
    /// The function is live and the runtime serves.
    pub(in crate::server) live: bool,
}

/// A fork the seed was asked for: the worker's record, to be installed by the loop, then
/// noted as pending on the seed.
pub(in crate::server) struct ForkRequested {
    pub(in crate::server) worker: Worker,
    pub(in crate::server) seed: Key,
}

impl Supervisor {
    /// The seed slot of `function` (created on first use).
    pub(in crate::server) fn seed_slot_mut(&mut self, function: FunctionId) -> &mut SeedSlot {
        if self.seed_slots.len() <= function.index() {
            self.seed_slots
                .resize_with(function.index() + 1, SeedSlot::default);
        }
        &mut self.seed_slots[function.index()]
    }

    /// The seed slot of `function`, if it ever had one.
    pub(in crate::server) fn seed_slot(&self, function: FunctionId) -> Option<&SeedSlot> {
        self.seed_slots.get(function.index())
    }

    /// Forgets what the slot of a removed function that nothing refers to any more says (its
    /// record may be reused by a new function).
    pub(in crate::server) fn forget_seed_slot(&mut self, function: FunctionId) {
        if let Some(slot) = self.seed_slots.get_mut(function.index())
            && slot.key.is_none()
        {
            *slot = SeedSlot::default();
        }
    }

    /// Whether the function should have a seed at all.
    fn wants_seed(&self, target: &SeedTarget<'_>) -> bool {
        target.live
            && target.profile.runtime == Runtime::Python3
            && !target.profile.worker.disable_seed
            && self.warm_fork.is_ok()
            && self.background_started
    }

    /// Starts, replaces or stops the function's seed as its profile and state require.
    pub(in crate::server) fn ensure_seed(&mut self, target: &SeedTarget<'_>, lp: &mut Lent<'_>) {
        let function = target.function;
        if let Some(key) = self.seed_slot_mut(function).key {
            let current = self.seeds.get(key).is_some_and(|s| {
                s.generation == target.generation && s.state < SeedState::Stopping
            });
            if current && self.wants_seed(target) {
                return;
            }
            self.stop_seed(key, "replaced or no longer wanted", lp);
            self.seed_slot_mut(function).key = None;
        }
        let wanted = self.wants_seed(target);
        let slot = self.seed_slot_mut(function);
        if !wanted || slot.restart.is_armed() || slot.import_failed == Some(target.generation) {
            return;
        }
        self.start_seed(target, lp);
    }

    fn start_seed(&mut self, target: &SeedTarget<'_>, lp: &mut Lent<'_>) {
        let function = target.function;
        let profile = target.profile;
        let (id, log_dir) = self.next_process_id(function, &profile.name, "seed-", lp.config);
        let launch = match self.runtimes.seed_launch_spec(profile, &id) {
            Some(Ok(launch)) => launch,
            Some(Err(why)) => {
                // The interpreter is missing: the cold starts report it to the requests.
                log::debug!("[turf] no seed for {}: {why}", profile.name);
                return;
            }
            None => return,
        };
        let spec = self.spawn_spec(profile, &launch, &id, &log_dir, lp.config);
        let spawned = match spawn::spawn_seed(&spec) {
            Ok(s) => s,
            Err(err) => {
                let why = format!("cannot start seed {id}: {err}");
                log::warn!("[turf] {why}; workers of {} cold-start", profile.name);
                self.on_seed_ended(function, target.generation, why, lp);
                return;
            }
        };
        let pid = spawned.pid;
        if let Some(output) = spawned.output {
            lp.console.attach(lp.registry, output);
        }
        let key = self.seeds.insert(Seed::new(
            id.clone(),
            function,
            target.generation,
            pid,
            spawned.control,
            spawned.cgroup,
            log_dir,
        ));
        self.children.insert(pid, Child::Seed(key));
        self.seed_slot_mut(function).key = Some(key);
        let registered = self
            .seeds
            .get(key)
            .and_then(|s| s.control.as_ref())
            .map(|c| {
                lp.registry.register(
                    &mut SourceFd(&c.as_raw_fd()),
                    token::token(Source::Seed(key)),
                    Interest::READABLE,
                )
            });
        if let Some(Err(err)) = registered {
            self.seed_failed(key, &format!("cannot watch its control socket: {err}"), lp);
            return;
        }
        log::info!("[turf seed={id} pid={pid}] started");
    }

    /// The seed's control socket is readable: handle every message waiting.
    pub(in crate::server) fn on_seed_readable(&mut self, key: Key, lp: &mut Lent<'_>) {
        let mut buf = vec![0u8; seed::MAX_MESSAGE];
        loop {
            let Some(control) = self.seeds.get(key).and_then(|s| s.control.as_ref()) else {
                return;
            };
            let n = match sys::recv_message(control, &mut buf) {
                Ok(0) => {
                    self.seed_failed(key, "its control socket closed", lp);
                    return;
                }
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let why = format!("reading its control socket failed: {err}");
                    self.seed_failed(key, &why, lp);
                    return;
                }
            };
            match SeedMessage::parse(&buf[..n]) {
                Ok(msg) => self.on_seed_message(key, msg, lp),
                Err(why) => {
                    self.seed_failed(key, &why, lp);
                    return;
                }
            }
        }
    }

    fn on_seed_message(&mut self, key: Key, msg: SeedMessage, lp: &mut Lent<'_>) {
        let Some(s) = self.seeds.get_mut(key) else {
            return;
        };
        match msg {
            SeedMessage::Ready { pid, import_ms } => {
                if s.state != SeedState::Importing || pid != s.process.pid {
                    let why = format!("unexpected ready (pid {pid}) in state {}", s.state.as_str());
                    self.seed_failed(key, &why, lp);
                    return;
                }
                s.state = SeedState::Ready;
                let function = s.function;
                log::info!(
                    "[turf seed={} pid={pid}] ready after {:.1} ms (import {import_ms:.1} ms)",
                    s.process.id,
                    s.process.started_at.elapsed().as_secs_f64() * 1000.0
                );
                let slot = self.seed_slot_mut(function);
                slot.restart.succeeded();
                slot.last_error = None;
            }
            SeedMessage::Failed { error } => {
                let function = s.function;
                let generation = s.generation;
                let why = format!(
                    "importing the function failed: {}: {}",
                    error.error_type, error.error_message
                );
                log::warn!("[turf seed={}] {why}; workers cold-start", s.process.id);
                // Not retried for this code: each cold start reports the error to its requests.
                let slot = self.seed_slot_mut(function);
                slot.import_failed = Some(generation);
                slot.last_error = Some(why.clone());
                self.stop_seed(key, &why, lp);
            }
            SeedMessage::Forked { id, pid } => {
                let Some(worker) = s.take_pending(&id) else {
                    let why = format!("forked unknown worker {id:?} (pid {pid})");
                    spawn::kill(pid, libc::SIGKILL);
                    self.seed_failed(key, &why, lp);
                    return;
                };
                s.forks += 1;
                lp.effects.push(Effect::WorkerForked { worker, pid });
            }
            SeedMessage::ForkFailed { id, error } => {
                let Some(worker) = s.take_pending(&id) else {
                    return;
                };
                let why = format!("seed {} could not fork worker {id}: {error}", s.process.id);
                self.abandon_fork(worker, &why, lp);
                // A seed that cannot fork is no use; workers cold-start until its replacement.
                self.seed_failed(key, &why, lp);
            }
        }
    }

    /// Asks the function's seed, if it has a ready one of the current code, to fork a worker.
    /// `None` when it has none or the request could not be made (the caller cold-starts);
    /// otherwise the worker's record, which the loop installs and then notes as pending
    /// (`note_pending_fork`) until the seed reports its pid.
    pub(in crate::server) fn request_fork(
        &mut self,
        target: &SeedTarget<'_>,
        decided: Instant,
        lp: &mut Lent<'_>,
    ) -> Option<ForkRequested> {
        let function = target.function;
        let seed_key = self.seed_slot(function)?.key?;
        let seed = self.seeds.get(seed_key)?;
        if seed.state != SeedState::Ready || seed.generation != target.generation {
            return None;
        }
        let (id, log_dir) = self.next_process_id(function, &target.profile.name, "", lp.config);
        let limits = self.worker_limits(target.profile, lp.config);
        let plan = spawn::SandboxPlan::build(&self.caps, &id, limits, self.isolation.as_ref());
        let parts = match spawn::prepare_fork(&log_dir, &plan, self.channel) {
            Ok(p) => p,
            Err(err) => {
                log::warn!("[turf w={id}] cannot prepare a forked worker: {err}; cold-starting");
                return None;
            }
        };
        let raw: Vec<_> = parts.child_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let request = seed::fork_request(&id, sys::getpid());
        let sent = self
            .seeds
            .get(seed_key)
            .and_then(|s| s.control.as_ref())
            .map(|c| sys::send_with_fds(c, &request, &raw));
        // Our copies of the worker's ends: the seed has its own now.
        drop(parts.child_fds);
        match sent {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                if let Some(cg) = parts.cgroup {
                    let _ = cg.remove();
                }
                let why = format!("sending a fork request failed: {err}");
                self.seed_failed(seed_key, &why, lp);
                return None;
            }
            None => return None,
        }
        let stderr_relay = parts
            .output
            .and_then(|output| super::supervise::relay_starting_output(output, lp));
        let mut enforcement = parts.enforcement;
        let polled = enforcement.polled_limits(&limits);
        let mut worker = Worker::new(id, function, 0, parts.to_worker, parts.from_worker);
        worker.enforcement = serde_json::to_value(&enforcement).unwrap_or_default();
        worker.process.cgroup = parts.cgroup;
        worker.polled = polled;
        worker.process.log_dir = log_dir;
        worker.process.stderr_relay = stderr_relay;
        worker.process.started_at = decided;
        worker.forked = true;
        Some(ForkRequested {
            worker,
            seed: seed_key,
        })
    }

    /// The installed worker `worker` (`id`) waits for `seed` to report its pid.
    pub(in crate::server) fn note_pending_fork(
        &mut self,
        seed: Key,
        id: String,
        worker: WorkerKey,
    ) {
        if let Some(s) = self.seeds.get_mut(seed) {
            log::debug!("[turf w={id}] fork requested from its seed");
            s.pending.push((id, worker));
        }
    }

    /// The exit of `pid`, if it was reaped before anyone claimed it.
    pub(in crate::server) fn claim_unclaimed_exit(&mut self, pid: i32) -> Option<sys::Reaped> {
        let at = self.unclaimed_exits.iter().position(|(p, _)| *p == pid)?;
        self.children.remove(&pid);
        self.unclaimed_exits.remove(at).map(|(_, reaped)| reaped)
    }

    /// A worker whose fork never happened (the fork failed, or its seed stopped): it has no
    /// process; its record is retired.
    fn abandon_fork(&mut self, worker: WorkerKey, why: &str, lp: &mut Lent<'_>) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.exit_reason.get_or_insert_with(|| why.to_owned());
        }
        self.discard_unforked(worker, lp);
    }

    /// When worker `key` is still waiting for its seed to report its pid, that seed has failed
    /// it: replace the seed.
    pub(in crate::server) fn fail_seed_of_unforked(
        &mut self,
        key: WorkerKey,
        why: &str,
        lp: &mut Lent<'_>,
    ) {
        let waiting = (self.seeds.keys().into_iter()).find(|&s| {
            (self.seeds.get(s)).is_some_and(|seed| seed.pending.iter().any(|(_, w)| *w == key))
        });
        if let Some(seed) = waiting {
            self.seed_failed(seed, &format!("no pid for a forked worker: {why}"), lp);
        }
    }

    /// Closes a seed after an error and restarts it with back-off.
    fn seed_failed(&mut self, key: Key, why: &str, lp: &mut Lent<'_>) {
        let Some(s) = self.seeds.get(key) else {
            return;
        };
        if s.state < SeedState::Stopping {
            log::warn!("[turf seed={} pid={}] {why}", s.process.id, s.process.pid);
        }
        let (function, generation) = (s.function, s.generation);
        self.stop_seed(key, why, lp);
        if self.seed_slot_mut(function).key == Some(key) {
            self.on_seed_ended(function, generation, why.to_owned(), lp);
        }
    }

    /// The function's seed is gone: cold starts until a new one is ready after the back-off.
    fn on_seed_ended(
        &mut self,
        function: FunctionId,
        generation: u64,
        why: String,
        lp: &mut Lent<'_>,
    ) {
        let slot = self.seed_slot_mut(function);
        slot.key = None;
        slot.last_error = Some(why);
        if slot.import_failed == Some(generation) {
            return;
        }
        let Some(delay) = slot.restart.arm() else {
            return;
        };
        lp.timers
            .schedule(Instant::now() + delay, Timer::SeedRetry(function));
    }

    /// The restart back-off of `function`'s seed has passed: the loop re-checks its seed.
    pub(in crate::server) fn seed_retry_due(&mut self, function: FunctionId) {
        self.seed_slot_mut(function).restart.fired();
    }

    /// Stops a seed: EOF on its socket asks it to exit, SIGTERM its group, SIGKILL after
    /// `turf.gracefulExitPeriodMs`. Workers it had not forked yet are discarded. The workers it
    /// forked are the runtime's children and are not affected.
    fn stop_seed(&mut self, key: Key, why: &str, lp: &mut Lent<'_>) {
        let Some(s) = self.seeds.get_mut(key) else {
            return;
        };
        if s.state >= SeedState::Stopping {
            return;
        }
        log::debug!(
            "[turf seed={} pid={}] stopping: {why}",
            s.process.id,
            s.process.pid
        );
        s.state = SeedState::Stopping;
        if let Some(control) = s.control.take() {
            let _ = lp.registry.deregister(&mut SourceFd(&control.as_raw_fd()));
        }
        let pending = std::mem::take(&mut s.pending);
        let grace = Duration::from_millis(lp.config.turf.graceful_exit_period_ms);
        self.terminate(Child::Seed(key), grace, lp.timers);
        for (_, worker) in pending {
            self.abandon_fork(worker, &format!("its seed stopped: {why}"), lp);
        }
    }

    /// A seed's pid was reaped.
    pub(in crate::server) fn on_seed_reaped(
        &mut self,
        key: Key,
        exit: &sys::ExitKind,
        lp: &mut Lent<'_>,
    ) {
        let Some(s) = self.seeds.get(key) else {
            return;
        };
        let function = s.function;
        if s.state >= SeedState::Stopping {
            log::info!(
                "[turf seed={} pid={}] exited with {exit}",
                s.process.id,
                s.process.pid
            );
        } else {
            // Died on its own: workers cold-start until a new one is ready after the back-off.
            let why = format!(
                "seed {} (pid {}) exited with {exit}",
                s.process.id, s.process.pid
            );
            self.seed_failed(key, &why, lp);
        }
        if let Some(s) = self.seeds.remove(key) {
            self.release_process(s.process, lp.timers, &lp.config.worker);
        }
        let slot = self.seed_slot_mut(function);
        if slot.key == Some(key) {
            slot.key = None;
        }
        lp.effects.push(Effect::Waiters);
    }

    /// Stops every seed (the runtime is stopping).
    pub(in crate::server) fn stop_all_seeds(&mut self, lp: &mut Lent<'_>) {
        for key in self.seeds.keys() {
            self.stop_seed(key, "runtime stopping", lp);
        }
    }

    /// Keeps the exit of a pid nobody claims yet (see [`MAX_UNCLAIMED_EXITS`]).
    pub(in crate::server) fn keep_unclaimed_exit(&mut self, reaped: sys::Reaped) {
        if self.unclaimed_exits.len() >= MAX_UNCLAIMED_EXITS {
            self.unclaimed_exits.pop_front();
        }
        self.unclaimed_exits.push_back((reaped.pid, reaped));
    }
}
