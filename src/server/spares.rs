//! Spare Node.js workers in the loop (`turf::spare`): keep `turf.spareWorkers` of them started
//! in the shape of the Node.js function that scaled up last (before any did, the most common
//! shape), hand one to a scale-up of that shape, refill in the background, and restart with
//! back-off when they die. A scale-up that finds no spare starts cold: nothing waits.

use super::effects::Effect;
use super::{Child, Lifecycle, Server, Timer};
use crate::config::Runtime;
use crate::reactor::buffer::ReadBuf;
use crate::reactor::slab::Key;
use crate::reactor::token::{self, Source};
use crate::runtime::Runtimes;
use crate::sched::backoff::RestartBackoff;
use crate::sys;
use crate::turf::child::ChildProc;
use crate::turf::spare::{self, Spare, SpareRead, SpareShape, SpareState};
use crate::turf::spawn;
use crate::turf::worker::{SpareInit, Worker};
use mio::Interest;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long after a spare is taken its replacement starts.
const SPARE_REFILL_DELAY: Duration = Duration::from_millis(100);
/// A READY frame is tiny; this bounds what a spare may send before it is taken.
const SPARE_READ_MAX: usize = 4096;

/// Spare bookkeeping that is not per spare.
#[derive(Debug, Default)]
pub(super) struct SparePool {
    /// The shape spares are kept in.
    pub shape: Option<SpareShape>,
    /// The restart back-off after spare deaths.
    pub restart: RestartBackoff,
    /// A refill is scheduled.
    pub refill_armed: bool,
    /// Spares started so far (for their ids).
    pub started: u64,
    /// Spares taken by functions.
    pub taken: u64,
}

impl Server {
    /// The shape a worker of `function` needs, if it can take a spare at all.
    fn spare_shape_of(&self, function: usize) -> Option<SpareShape> {
        let f = &self.scheduler.functions[function];
        if self.supervisor.spare_support.is_err()
            || self.config.turf.spare_workers == 0
            || f.removed
            || !matches!(f.profile.runtime, Runtime::Nodejs | Runtime::Aworker)
        {
            return None;
        }
        let launch = self
            .supervisor
            .runtimes
            .launch_spec(&f.profile, "shape")
            .ok()?;
        let env = self.with_platform_env(launch.env);
        spare::env_allows_spare(&env).then(|| SpareShape {
            program: launch.program,
            args: launch.args,
            limits: self.worker_limits(function),
        })
    }

    /// Brings the spares to `turf.spareWorkers` of the wanted shape: stops the others, starts
    /// what is missing (unless backing off).
    pub(super) fn balance_spares(&mut self) {
        if self.lifecycle.phase != Lifecycle::Running || !self.supervisor.background_started {
            return;
        }
        let shapes: Vec<SpareShape> = (0..self.scheduler.functions.len())
            .filter_map(|i| self.spare_shape_of(i))
            .collect();
        let keep = self
            .supervisor
            .spare_pool
            .shape
            .as_ref()
            .is_some_and(|s| shapes.contains(s));
        if !keep {
            self.supervisor.spare_pool.shape = spare::most_common(&shapes).cloned();
        }
        let wanted = self.supervisor.spare_pool.shape.clone();
        let mut alive = 0;
        for key in self.supervisor.spares.keys() {
            let Some(s) = self.supervisor.spares.get(key) else {
                continue;
            };
            if s.state >= SpareState::Stopping {
                continue;
            }
            let fits = wanted.as_ref() == Some(&s.shape);
            if fits && alive < self.config.turf.spare_workers {
                alive += 1;
            } else {
                self.stop_spare(key, "no longer wanted");
            }
        }
        let Some(shape) = wanted else {
            return;
        };
        if self.supervisor.spare_pool.restart.is_armed() {
            return;
        }
        while alive < self.config.turf.spare_workers {
            if !self.start_spare(&shape) {
                break;
            }
            alive += 1;
        }
    }

    /// Starts one spare; false when it could not be (a back-off is then armed).
    fn start_spare(&mut self, shape: &SpareShape) -> bool {
        self.supervisor.spare_pool.started += 1;
        let id = format!("spare-{}", self.supervisor.spare_pool.started);
        let log_dir = if self.config.logger.worker_output_to_console {
            PathBuf::new()
        } else {
            self.supervisor.logdir.join(".spares").join(&id)
        };
        let cwd = self.supervisor.runtimes.spare_cwd().to_path_buf();
        let spec = spawn::SpawnSpec {
            program: &shape.program,
            args: shape.args.clone(),
            env: Runtimes::spare_env(&id),
            cwd: &cwd,
            log_dir: log_dir.clone(),
            sandbox: spawn::SandboxPlan::build(
                &self.supervisor.caps,
                &id,
                shape.limits,
                self.supervisor.isolation.as_ref(),
            ),
        };
        let spawned = match spawn::spawn(&spec) {
            Ok(s) => s,
            Err(err) => {
                log::warn!("[turf spare={id}] cannot start: {err}");
                self.spare_backoff();
                return false;
            }
        };
        if let Some(output) = spawned.output {
            self.console.attach(self.poll.registry(), output);
        }
        let mut enforcement = spawned.enforcement;
        let polled = enforcement.polled_limits(&shape.limits);
        let pid = spawned.pid;
        let key = self.supervisor.spares.insert(Spare {
            process: ChildProc {
                cgroup: spawned.cgroup,
                log_dir,
                ..ChildProc::new(id.clone(), pid)
            },
            state: SpareState::Starting,
            shape: shape.clone(),
            to_worker: Some(spawned.to_worker),
            from_worker: Some(spawned.from_worker),
            rbuf: ReadBuf::new(SPARE_READ_MAX, SPARE_READ_MAX),
            enforcement: serde_json::to_value(&enforcement).unwrap_or_default(),
            polled,
            failed: false,
        });
        self.supervisor.children.insert(pid, Child::Spare(key));
        let registry = self.poll.registry();
        let registered = self.supervisor.spares.get_mut(key).and_then(|s| {
            s.from_worker
                .as_mut()
                .map(|p| registry.register(p, token::token(Source::Spare(key)), Interest::READABLE))
        });
        if let Some(Err(err)) = registered {
            log::warn!("[turf spare={id} pid={pid}] cannot watch its pipe: {err}");
            self.stop_spare(key, "cannot watch its pipe");
            return false;
        }
        log::info!("[turf spare={id} pid={pid}] started");
        true
    }

    /// The spare's pipe is readable: READY, or its end.
    pub(super) fn on_spare_readable(&mut self, key: Key) {
        let Some(s) = self.supervisor.spares.get_mut(key) else {
            return;
        };
        match s.read() {
            SpareRead::Pending => {}
            SpareRead::Ready => {
                if s.state == SpareState::Starting {
                    s.state = SpareState::Ready;
                    log::info!(
                        "[turf spare={} pid={}] ready after {:.3} ms",
                        s.process.id,
                        s.process.pid,
                        s.process.started_at.elapsed().as_secs_f64() * 1000.0
                    );
                    self.supervisor.spare_pool.restart.succeeded();
                }
            }
            SpareRead::Closed => {
                s.failed = true;
                self.stop_spare(key, "it closed its pipe");
            }
            SpareRead::Protocol(why) => {
                log::warn!("[turf spare={} pid={}] {why}", s.process.id, s.process.pid);
                s.failed = true;
                self.stop_spare(key, &why);
            }
        }
    }

    /// Hands a spare of the right shape to a scale-up of `function`. `None` when there is none
    /// (the caller starts cold); otherwise whether a worker is coming.
    pub(super) fn take_spare(&mut self, function: usize, decided: Instant) -> Option<bool> {
        let shape = self.spare_shape_of(function)?;
        if self.supervisor.spare_pool.shape.as_ref() != Some(&shape) {
            // A miss: spares follow the function that scaled up last.
            self.supervisor.spare_pool.shape = Some(shape);
            self.balance_spares();
            return None;
        }
        // A spare still starting is taken only with nothing of its READY read yet: the worker
        // record starts with an empty read buffer.
        let pick = |want: SpareState| {
            self.supervisor.spares.keys().into_iter().find(|&k| {
                self.supervisor.spares.get(k).is_some_and(|s| {
                    s.state == want
                        && s.shape == shape
                        && s.to_worker.is_some()
                        && s.from_worker.is_some()
                        && s.rbuf.data().is_empty()
                })
            })
        };
        let spare_key = pick(SpareState::Ready).or_else(|| pick(SpareState::Starting))?;
        let (id, log_dir) = self.next_worker_id(function);
        let f = &self.scheduler.functions[function];
        let env = match self.supervisor.runtimes.launch_spec(&f.profile, &id) {
            Ok(launch) => self.with_platform_env(launch.env),
            Err(_) => return None,
        };
        let cwd = f.profile.code_dir.clone();
        let mut spare = self.supervisor.spares.remove(spare_key)?;
        self.supervisor.children.remove(&spare.process.pid);
        let (Some(mut to), Some(mut from)) = (spare.to_worker.take(), spare.from_worker.take())
        else {
            return None;
        };
        let _ = self.poll.registry().deregister(&mut from);
        let _ = self.poll.registry().deregister(&mut to);
        let log_dir = move_log_dir(&spare.process.log_dir, log_dir);
        let was_ready = spare.state == SpareState::Ready;
        let mut worker = Worker::new(id.clone(), function, spare.process.pid, to, from);
        worker.process.cgroup = spare.process.cgroup.take();
        worker.enforcement = spare.enforcement.clone();
        worker.polled = std::mem::take(&mut spare.polled);
        worker.process.log_dir = log_dir;
        worker.process.started_at = decided;
        worker.from_spare = true;
        worker.spare_init = Some(SpareInit { env, cwd });
        let pid = spare.process.pid;
        let key = self.install_worker(worker)?;
        self.supervisor.spare_pool.taken += 1;
        log::info!(
            "[turf w={id} pid={pid}] taken from {} ({})",
            spare.process.id,
            if was_ready { "ready" } else { "still starting" }
        );
        if was_ready {
            self.on_worker_ready(key, b"(spare)");
            // INIT leaves now, before the refill below forks and execs a new spare.
            self.flush_worker(key);
        }
        self.refill_later();
        Some(true)
    }

    /// Stops a spare: EOF on its input asks the bootstrap to exit, SIGTERM its group, SIGKILL
    /// after `turf.gracefulExitPeriodMs`.
    pub(super) fn stop_spare(&mut self, key: Key, why: &str) {
        let Some(s) = self.supervisor.spares.get_mut(key) else {
            return;
        };
        if s.state == SpareState::Stopping {
            return;
        }
        log::debug!(
            "[turf spare={} pid={}] stopping: {why}",
            s.process.id,
            s.process.pid
        );
        s.state = SpareState::Stopping;
        if let Some(mut pipe) = s.from_worker.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        s.to_worker = None;
        self.terminate(Child::Spare(key));
    }

    /// A spare's pid was reaped.
    pub(super) fn on_spare_reaped(&mut self, key: Key, exit: &sys::ExitKind) {
        let Some(mut s) = self.supervisor.spares.remove(key) else {
            return;
        };
        if let Some(mut pipe) = s.from_worker.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        if s.state == SpareState::Stopping && !s.failed {
            log::info!(
                "[turf spare={} pid={}] exited with {exit}",
                s.process.id,
                s.process.pid
            );
        } else {
            log::warn!(
                "[turf spare={} pid={}] exited unexpectedly with {exit}",
                s.process.id,
                s.process.pid
            );
            self.spare_backoff();
        }
        // Whatever it left in its group goes too.
        self.release_process(s.process);
        self.balance_spares();
        self.effects.push(Effect::Waiters);
    }

    /// Spares keep dying or cannot start: wait before starting more.
    fn spare_backoff(&mut self) {
        let Some(delay) = self.supervisor.spare_pool.restart.arm() else {
            return;
        };
        self.timers
            .schedule(Instant::now() + delay, Timer::SpareRetry);
    }

    /// Starts the replacement of a taken spare a little later, so that its start-up (a whole
    /// CPU for tens of milliseconds) does not compete with the taken spare's INIT.
    fn refill_later(&mut self) {
        if !self.supervisor.spare_pool.refill_armed {
            self.supervisor.spare_pool.refill_armed = true;
            self.timers
                .schedule(Instant::now() + SPARE_REFILL_DELAY, Timer::SpareRefill);
        }
    }

    /// The refill delay has passed.
    pub(super) fn on_spare_refill(&mut self) {
        self.supervisor.spare_pool.refill_armed = false;
        self.balance_spares();
    }

    /// The spare restart back-off has passed.
    pub(super) fn on_spare_retry(&mut self) {
        self.supervisor.spare_pool.restart.fired();
        self.balance_spares();
    }

    /// Stops every spare (the runtime is stopping).
    pub(super) fn stop_all_spares(&mut self) {
        for key in self.supervisor.spares.keys() {
            self.stop_spare(key, "runtime stopping");
        }
    }
}

/// Moves a taken spare's log directory to where the function's worker's belongs; keeps the
/// spare's when that fails (or when output goes to the console).
fn move_log_dir(from: &std::path::Path, to: PathBuf) -> PathBuf {
    if from.as_os_str().is_empty() || to.as_os_str().is_empty() {
        return from.to_path_buf();
    }
    let moved = to
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(from, &to));
    match moved {
        Ok(()) => to,
        Err(err) => {
            log::warn!(
                "[turf] cannot move log directory {} to {}: {err}",
                from.display(),
                to.display()
            );
            from.to_path_buf()
        }
    }
}
