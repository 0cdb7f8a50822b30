//! Warm seeds in the loop (`turf::seed`): one per Python function that allows it, started with
//! the function and replaced with its code; forks workers on scale-up; restarted with back-off
//! when it dies. Without a ready seed, workers cold-start: nothing waits for a seed.

use super::effects::Effect;
use super::{Child, Server, Timer};
use crate::config::Runtime;
use crate::reactor::slab::Key;
use crate::reactor::token::{self, Source};
use crate::sched::backoff::RestartBackoff;
use crate::sys;
use crate::turf::accounting::ExitReason;
use crate::turf::seed::{self, Seed, SeedMessage, SeedState};
use crate::turf::spawn;
use crate::turf::worker::{Worker, WorkerState};
use mio::Interest;
use mio::unix::SourceFd;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Worker exits reaped before the seed reported their pid, kept to be claimed (a forked worker
/// can die, and be reaped, before its `forked` message is read).
const MAX_UNCLAIMED_EXITS: usize = 64;

/// A function's seed slot.
#[derive(Debug, Default)]
pub(super) struct SeedSlot {
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

impl Server {
    /// Whether `function` should have a seed at all.
    fn wants_seed(&self, function: usize) -> bool {
        let f = &self.scheduler.functions[function];
        f.profile.runtime == Runtime::Python3
            && !f.profile.worker.disable_seed
            && !f.removed
            && self.supervisor.warm_fork.is_ok()
            && self.lifecycle.phase == super::Lifecycle::Running
            && self.supervisor.background_started
    }

    /// Starts, replaces or stops `function`'s seed as its profile and state require.
    pub(super) fn ensure_seed(&mut self, function: usize) {
        let generation = self.scheduler.functions[function].generation;
        if let Some(key) = self.scheduler.functions[function].seed.key {
            let current = self
                .supervisor
                .seeds
                .get(key)
                .is_some_and(|s| s.generation == generation && s.state < SeedState::Stopping);
            if current && self.wants_seed(function) {
                return;
            }
            self.stop_seed(key, "replaced or no longer wanted");
            self.scheduler.functions[function].seed.key = None;
        }
        let slot = &self.scheduler.functions[function].seed;
        if !self.wants_seed(function)
            || slot.restart.is_armed()
            || slot.import_failed == Some(generation)
        {
            return;
        }
        self.start_seed(function);
    }

    fn start_seed(&mut self, function: usize) {
        let (id, log_dir) = self.next_process_id(function, "seed-");
        let f = &self.scheduler.functions[function];
        let launch = match self.supervisor.runtimes.seed_launch_spec(&f.profile, &id) {
            Some(Ok(launch)) => launch,
            Some(Err(why)) => {
                // The interpreter is missing: the cold starts report it to the requests.
                log::debug!("[turf] no seed for {}: {why}", f.profile.name);
                return;
            }
            None => return,
        };
        let spec = self.spawn_spec(function, &launch, &id, &log_dir);
        let f = &self.scheduler.functions[function];
        let spawned = match spawn::spawn_seed(&spec) {
            Ok(s) => s,
            Err(err) => {
                let why = format!("cannot start seed {id}: {err}");
                log::warn!("[turf] {why}; workers of {} cold-start", f.profile.name);
                self.on_seed_ended(function, why);
                return;
            }
        };
        let generation = f.generation;
        let pid = spawned.pid;
        if let Some(output) = spawned.output {
            self.console.attach(self.poll.registry(), output);
        }
        let key = self.supervisor.seeds.insert(Seed::new(
            id.clone(),
            function,
            generation,
            pid,
            spawned.control,
            spawned.cgroup,
            log_dir,
        ));
        self.supervisor.children.insert(pid, Child::Seed(key));
        self.scheduler.functions[function].seed.key = Some(key);
        let registered = self
            .supervisor
            .seeds
            .get(key)
            .and_then(|s| s.control.as_ref())
            .map(|c| {
                self.poll.registry().register(
                    &mut SourceFd(&c.as_raw_fd()),
                    token::token(Source::Seed(key)),
                    Interest::READABLE,
                )
            });
        if let Some(Err(err)) = registered {
            self.seed_failed(key, &format!("cannot watch its control socket: {err}"));
            return;
        }
        log::info!("[turf seed={id} pid={pid}] started");
    }

    /// The seed's control socket is readable: handle every message waiting.
    pub(super) fn on_seed_readable(&mut self, key: Key) {
        let mut buf = vec![0u8; seed::MAX_MESSAGE];
        loop {
            let Some(control) = self
                .supervisor
                .seeds
                .get(key)
                .and_then(|s| s.control.as_ref())
            else {
                return;
            };
            let n = match sys::recv_message(control, &mut buf) {
                Ok(0) => {
                    self.seed_failed(key, "its control socket closed");
                    return;
                }
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.seed_failed(key, &format!("reading its control socket failed: {err}"));
                    return;
                }
            };
            match SeedMessage::parse(&buf[..n]) {
                Ok(msg) => self.on_seed_message(key, msg),
                Err(why) => {
                    self.seed_failed(key, &why);
                    return;
                }
            }
        }
    }

    fn on_seed_message(&mut self, key: Key, msg: SeedMessage) {
        let Some(s) = self.supervisor.seeds.get_mut(key) else {
            return;
        };
        match msg {
            SeedMessage::Ready { pid, import_ms } => {
                if s.state != SeedState::Importing || pid != s.process.pid {
                    let why = format!("unexpected ready (pid {pid}) in state {}", s.state.as_str());
                    self.seed_failed(key, &why);
                    return;
                }
                s.state = SeedState::Ready;
                let function = s.function;
                log::info!(
                    "[turf seed={} pid={pid}] ready after {:.1} ms (import {import_ms:.1} ms)",
                    s.process.id,
                    s.process.started_at.elapsed().as_secs_f64() * 1000.0
                );
                let slot = &mut self.scheduler.functions[function].seed;
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
                log::warn!(
                    "[turf seed={}] {why}; workers of {} cold-start",
                    s.process.id,
                    self.scheduler.functions[function].profile.name
                );
                // Not retried for this code: each cold start reports the error to its requests.
                self.scheduler.functions[function].seed.import_failed = Some(generation);
                self.scheduler.functions[function].seed.last_error = Some(why.clone());
                self.stop_seed(key, &why);
            }
            SeedMessage::Forked { id, pid } => {
                let Some(worker) = s.take_pending(&id) else {
                    let why = format!("forked unknown worker {id:?} (pid {pid})");
                    spawn::kill(pid, libc::SIGKILL);
                    self.seed_failed(key, &why);
                    return;
                };
                s.forks += 1;
                self.on_worker_forked(worker, pid);
            }
            SeedMessage::ForkFailed { id, error } => {
                let Some(worker) = s.take_pending(&id) else {
                    return;
                };
                let why = format!("seed {} could not fork worker {id}: {error}", s.process.id);
                self.discard_unforked(worker, &why);
                // A seed that cannot fork is no use; workers cold-start until its replacement.
                self.seed_failed(key, &why);
            }
        }
    }

    /// Forks a worker of `function` from its seed, if it has a ready one. `None` when it has
    /// none (the caller cold-starts); otherwise whether a worker is coming.
    pub(super) fn fork_worker(&mut self, function: usize, decided: Instant) -> Option<bool> {
        let seed_key = self.scheduler.functions[function].seed.key?;
        let seed = self.supervisor.seeds.get(seed_key)?;
        if seed.state != SeedState::Ready
            || seed.generation != self.scheduler.functions[function].generation
        {
            return None;
        }
        let (id, log_dir) = self.next_worker_id(function);
        let limits = self.worker_limits(function);
        let plan = spawn::SandboxPlan::build(
            &self.supervisor.caps,
            &id,
            limits,
            self.supervisor.isolation.as_ref(),
        );
        let parts = match spawn::prepare_fork(&log_dir, &plan) {
            Ok(p) => p,
            Err(err) => {
                log::warn!("[turf w={id}] cannot prepare a forked worker: {err}; cold-starting");
                return None;
            }
        };
        let raw: Vec<_> = parts.child_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let request = seed::fork_request(&id, sys::getpid());
        let sent = self
            .supervisor
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
                self.seed_failed(seed_key, &format!("sending a fork request failed: {err}"));
                return None;
            }
            None => return None,
        }
        if let Some(output) = parts.output {
            self.console.attach(self.poll.registry(), output);
        }
        let mut enforcement = parts.enforcement;
        let polled = enforcement.polled_limits(&limits);
        let mut worker = Worker::new(id.clone(), function, 0, parts.to_worker, parts.from_worker);
        worker.enforcement = serde_json::to_value(&enforcement).unwrap_or_default();
        worker.process.cgroup = parts.cgroup;
        worker.polled = polled;
        worker.process.log_dir = log_dir;
        worker.process.started_at = decided;
        worker.forked = true;
        let Some(key) = self.install_worker(worker) else {
            return Some(false);
        };
        if let Some(s) = self.supervisor.seeds.get_mut(seed_key) {
            s.pending.push((id.clone(), key));
        }
        log::debug!("[turf w={id}] fork requested from its seed");
        Some(true)
    }

    /// The seed reported a forked worker's pid: move it into its cgroup, then let it start.
    fn on_worker_forked(&mut self, key: Key, pid: i32) {
        let Some(w) = self.supervisor.workers.get_mut(key) else {
            spawn::kill(pid, libc::SIGKILL);
            return;
        };
        w.process.pid = pid;
        self.supervisor.children.insert(pid, Child::Worker(key));
        let Some(w) = self.supervisor.workers.get_mut(key) else {
            return;
        };
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
        if let Some(at) = self
            .supervisor
            .unclaimed_exits
            .iter()
            .position(|(p, _)| *p == pid)
            && let Some((_, reaped)) = self.supervisor.unclaimed_exits.remove(at)
        {
            self.supervisor.children.remove(&pid);
            self.retire_reaped(key, Some(reaped));
        }
    }

    /// A worker whose fork never happened: it has no process; retire its record now.
    fn discard_unforked(&mut self, key: Key, why: &str) {
        if let Some(w) = self.supervisor.workers.get_mut(key) {
            w.exit_reason.get_or_insert_with(|| why.to_owned());
        }
        self.worker_gone(key, why);
        self.retire_reaped(key, None);
    }

    /// When worker `key` is still waiting for its seed to report its pid, that seed has failed
    /// it: replace the seed.
    pub(super) fn fail_seed_of_unforked(&mut self, key: Key, why: &str) {
        let waiting = self.supervisor.seeds.keys().into_iter().find(|&s| {
            self.supervisor
                .seeds
                .get(s)
                .is_some_and(|seed| seed.pending.iter().any(|(_, w)| *w == key))
        });
        if let Some(seed) = waiting {
            self.seed_failed(seed, &format!("no pid for a forked worker: {why}"));
        }
    }

    /// Closes a seed after an error and restarts it with back-off.
    fn seed_failed(&mut self, key: Key, why: &str) {
        let Some(s) = self.supervisor.seeds.get(key) else {
            return;
        };
        if s.state < SeedState::Stopping {
            log::warn!("[turf seed={} pid={}] {why}", s.process.id, s.process.pid);
        }
        let function = s.function;
        self.stop_seed(key, why);
        if self.scheduler.functions[function].seed.key == Some(key) {
            self.on_seed_ended(function, why.to_owned());
        }
    }

    /// The function's seed is gone: cold starts until a new one is ready after the back-off.
    fn on_seed_ended(&mut self, function: usize, why: String) {
        let generation = self.scheduler.functions[function].generation;
        let slot = &mut self.scheduler.functions[function].seed;
        slot.key = None;
        slot.last_error = Some(why);
        if slot.import_failed == Some(generation) {
            return;
        }
        let Some(delay) = slot.restart.arm() else {
            return;
        };
        self.timers
            .schedule(Instant::now() + delay, Timer::SeedRetry(function));
    }

    /// The restart back-off of `function`'s seed has passed.
    pub(super) fn on_seed_retry(&mut self, function: usize) {
        self.scheduler.functions[function].seed.restart.fired();
        self.ensure_seed(function);
    }

    /// Stops a seed: EOF on its socket asks it to exit, SIGTERM its group, SIGKILL after
    /// `turf.gracefulExitPeriodMs`. Workers it had not forked yet are discarded. The workers it
    /// forked are the runtime's children and are not affected.
    pub(super) fn stop_seed(&mut self, key: Key, why: &str) {
        let Some(s) = self.supervisor.seeds.get_mut(key) else {
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
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&control.as_raw_fd()));
        }
        let pending = std::mem::take(&mut s.pending);
        self.terminate(Child::Seed(key));
        for (_, worker) in pending {
            self.discard_unforked(worker, &format!("its seed stopped: {why}"));
        }
    }

    /// A seed's pid was reaped.
    pub(super) fn on_seed_reaped(&mut self, key: Key, exit: &sys::ExitKind) {
        let Some(s) = self.supervisor.seeds.get(key) else {
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
            self.seed_failed(key, &why);
        }
        if let Some(s) = self.supervisor.seeds.remove(key) {
            self.release_process(s.process);
        }
        if self.scheduler.functions[function].seed.key == Some(key) {
            self.scheduler.functions[function].seed.key = None;
        }
        self.effects.push(Effect::Waiters);
    }

    /// Stops every seed (the runtime is stopping).
    pub(super) fn stop_all_seeds(&mut self) {
        for key in self.supervisor.seeds.keys() {
            self.stop_seed(key, "runtime stopping");
        }
    }

    /// Keeps the exit of a pid nobody claims yet (see [`MAX_UNCLAIMED_EXITS`]).
    pub(super) fn keep_unclaimed_exit(&mut self, reaped: sys::Reaped) {
        if self.supervisor.unclaimed_exits.len() >= MAX_UNCLAIMED_EXITS {
            self.supervisor.unclaimed_exits.pop_front();
        }
        self.supervisor
            .unclaimed_exits
            .push_back((reaped.pid, reaped));
    }
}
