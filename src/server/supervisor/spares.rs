//! Spare Node.js workers (`turf::spare`), the supervisor's: keep `turf.spareWorkers` of them
//! started in the shape of the Node.js function that scaled up last (before any did, the most
//! common shape), hand one to a scale-up of that shape, refill in the background, and restart
//! with back-off when they die. A scale-up that finds no spare starts cold: nothing waits.
//!
//! The shapes the functions need are worked out by the loop (they depend on the profiles, which
//! the scheduler holds) and handed in; the loop also lends its registry, timers and console for
//! the call (`Lent`).

use super::Supervisor;
use crate::config::{FunctionProfile, Runtime, SystemConfig};
use crate::reactor::buffer::ReadBuf;
use crate::reactor::slab::Key;
use crate::reactor::timer::Timers;
use crate::reactor::token::{self, Source};
use crate::runtime::Runtimes;
use crate::sched::backoff::RestartBackoff;
use crate::server::Lent;
use crate::server::{Child, Timer};
use crate::sys;
use crate::turf::child::ChildProc;
use crate::turf::spare::{self, Spare, SpareRead, SpareShape, SpareState};
use crate::turf::spawn::{self, WorkerLimits};
use mio::Interest;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long after a spare is taken its replacement starts.
pub(in crate::server) const SPARE_REFILL_DELAY: Duration = Duration::from_millis(100);
/// A READY frame is tiny; this bounds what a spare may send before it is taken.
const SPARE_READ_MAX: usize = 4096;

/// Spare bookkeeping that is not per spare.
#[derive(Debug, Default)]
pub(in crate::server) struct SparePool {
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

/// A spare taken for a function: its process and pipes, out of the pool.
pub(in crate::server) struct TakenSpare {
    pub(in crate::server) spare: Spare,
    pub(in crate::server) to_worker: mio::unix::pipe::Sender,
    pub(in crate::server) from_worker: mio::unix::pipe::Receiver,
    pub(in crate::server) was_ready: bool,
}

impl Supervisor {
    /// The shape a worker of a function with `profile` (and `limits`) needs, if it can take a
    /// spare at all.
    pub(in crate::server) fn spare_shape(
        &self,
        profile: &FunctionProfile,
        limits: WorkerLimits,
        config: &SystemConfig,
    ) -> Option<SpareShape> {
        if self.spare_support.is_err()
            || config.turf.spare_workers == 0
            || !matches!(profile.runtime, Runtime::Nodejs | Runtime::Aworker)
        {
            return None;
        }
        let launch = self.runtimes.launch_spec(profile, "shape").ok()?;
        let env = self.with_platform_env(launch.env);
        spare::env_allows_spare(&env).then_some(SpareShape {
            program: launch.program,
            args: launch.args,
            limits,
        })
    }

    /// Brings the spares to `turf.spareWorkers` of the wanted shape (of those the functions
    /// need, `shapes`): stops the others, starts what is missing (unless backing off).
    pub(in crate::server) fn balance_spares(&mut self, shapes: &[SpareShape], lp: &mut Lent<'_>) {
        let keep = self
            .spare_pool
            .shape
            .as_ref()
            .is_some_and(|s| shapes.contains(s));
        if !keep {
            self.spare_pool.shape = spare::most_common(shapes).cloned();
        }
        let wanted = self.spare_pool.shape.clone();
        let mut alive = 0;
        for key in self.spares.keys() {
            let Some(s) = self.spares.get(key) else {
                continue;
            };
            if s.state >= SpareState::Stopping {
                continue;
            }
            let fits = wanted.as_ref() == Some(&s.shape);
            if fits && alive < lp.config.turf.spare_workers {
                alive += 1;
            } else {
                self.stop_spare(key, "no longer wanted", lp);
            }
        }
        let Some(shape) = wanted else {
            return;
        };
        if self.spare_pool.restart.is_armed() {
            return;
        }
        while alive < lp.config.turf.spare_workers {
            if !self.start_spare(&shape, lp) {
                break;
            }
            alive += 1;
        }
    }

    /// Starts one spare; false when it could not be (a back-off is then armed).
    fn start_spare(&mut self, shape: &SpareShape, lp: &mut Lent<'_>) -> bool {
        self.spare_pool.started += 1;
        let id = format!("spare-{}", self.spare_pool.started);
        let log_dir = if lp.config.logger.worker_output_to_console {
            PathBuf::new()
        } else {
            self.logdir.join(".spares").join(&id)
        };
        let cwd = self.runtimes.spare_cwd().to_path_buf();
        let spec = spawn::SpawnSpec {
            program: &shape.program,
            args: shape.args.clone(),
            env: Runtimes::spare_env(&id),
            cwd: &cwd,
            log_dir: log_dir.clone(),
            sandbox: spawn::SandboxPlan::build(
                &self.caps,
                &id,
                shape.limits,
                self.isolation.as_ref(),
            ),
            channel: self.channel,
        };
        let spawned = match spawn::spawn(&spec) {
            Ok(s) => s,
            Err(err) => {
                log::warn!("[turf spare={id}] cannot start: {err}");
                self.spare_backoff(lp.timers);
                return false;
            }
        };
        let stderr_relay = spawned
            .output
            .and_then(|output| super::supervise::relay_starting_output(output, lp));
        let mut enforcement = spawned.enforcement;
        let polled = enforcement.polled_limits(&shape.limits);
        let pid = spawned.pid;
        let key = self.spares.insert(Spare {
            process: ChildProc {
                cgroup: spawned.cgroup,
                log_dir,
                stderr_relay,
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
            compact_head: false,
        });
        self.children.insert(pid, Child::Spare(key));
        let registered = self.spares.get_mut(key).and_then(|s| {
            s.from_worker.as_mut().map(|p| {
                lp.registry
                    .register(p, token::token(Source::Spare(key)), Interest::READABLE)
            })
        });
        if let Some(Err(err)) = registered {
            log::warn!("[turf spare={id} pid={pid}] cannot watch its pipe: {err}");
            self.stop_spare(key, "cannot watch its pipe", lp);
            return false;
        }
        log::info!("[turf spare={id} pid={pid}] started");
        true
    }

    /// The spare's pipe is readable: READY, or its end.
    pub(in crate::server) fn on_spare_readable(&mut self, key: Key, lp: &mut Lent<'_>) {
        let Some(s) = self.spares.get_mut(key) else {
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
                    self.spare_pool.restart.succeeded();
                }
            }
            SpareRead::Closed => {
                s.failed = true;
                self.stop_spare(key, "it closed its pipe", lp);
            }
            SpareRead::Protocol(why) => {
                log::warn!("[turf spare={} pid={}] {why}", s.process.id, s.process.pid);
                s.failed = true;
                self.stop_spare(key, &why, lp);
            }
        }
    }

    /// A spare of `shape` a scale-up can take: a ready one, else one still starting with
    /// nothing of its READY read yet (the worker record starts with an empty read buffer).
    pub(in crate::server) fn find_spare(&self, shape: &SpareShape) -> Option<Key> {
        let pick = |want: SpareState| {
            self.spares.keys().into_iter().find(|&k| {
                self.spares.get(k).is_some_and(|s| {
                    s.state == want
                        && s.shape == *shape
                        && s.to_worker.is_some()
                        && s.from_worker.is_some()
                        && s.rbuf.data().is_empty()
                })
            })
        };
        pick(SpareState::Ready).or_else(|| pick(SpareState::Starting))
    }

    /// Takes spare `key` out of the pool for a scale-up, its pipes no longer watched (the
    /// worker record watches them next).
    pub(in crate::server) fn take_spare(
        &mut self,
        key: Key,
        lp: &mut Lent<'_>,
    ) -> Option<TakenSpare> {
        let mut spare = self.spares.remove(key)?;
        self.children.remove(&spare.process.pid);
        let (Some(mut to_worker), Some(mut from_worker)) =
            (spare.to_worker.take(), spare.from_worker.take())
        else {
            if let Some(relay) = spare.process.stderr_relay.take() {
                lp.console.forget_tail(relay);
            }
            return None;
        };
        let _ = lp.registry.deregister(&mut from_worker);
        let _ = lp.registry.deregister(&mut to_worker);
        let was_ready = spare.state == SpareState::Ready;
        Some(TakenSpare {
            spare,
            to_worker,
            from_worker,
            was_ready,
        })
    }

    /// Stops a spare: EOF on its input asks the bootstrap to exit, SIGTERM its group, SIGKILL
    /// after `turf.gracefulExitPeriodMs`.
    pub(in crate::server) fn stop_spare(&mut self, key: Key, why: &str, lp: &mut Lent<'_>) {
        let Some(s) = self.spares.get_mut(key) else {
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
            let _ = lp.registry.deregister(&mut pipe);
        }
        s.to_worker = None;
        let grace = Duration::from_millis(lp.config.turf.graceful_exit_period_ms);
        self.terminate(Child::Spare(key), grace, lp.timers);
    }

    /// A spare's pid was reaped: cleans up after it, and backs off if it died unasked.
    pub(in crate::server) fn spare_reaped(
        &mut self,
        key: Key,
        exit: &sys::ExitKind,
        lp: &mut Lent<'_>,
    ) {
        let Some(mut s) = self.spares.remove(key) else {
            return;
        };
        if let Some(relay) = s.process.stderr_relay.take() {
            lp.console.forget_tail(relay);
        }
        if let Some(mut pipe) = s.from_worker.take() {
            let _ = lp.registry.deregister(&mut pipe);
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
            self.spare_backoff(lp.timers);
        }
        // Whatever it left in its group goes too.
        self.release_process(s.process, lp.timers, &lp.config.worker);
    }

    /// A taken spare became a function's worker: count it, and start its replacement later.
    pub(in crate::server) fn spare_handed_over(&mut self, timers: &mut Timers<Timer>) {
        self.spare_pool.taken += 1;
        self.refill_later(timers);
    }

    /// Spares keep dying or cannot start: wait before starting more.
    fn spare_backoff(&mut self, timers: &mut Timers<Timer>) {
        let Some(delay) = self.spare_pool.restart.arm() else {
            return;
        };
        timers.schedule(Instant::now() + delay, Timer::SpareRetry);
    }

    /// Starts the replacement of a taken spare a little later, so that its start-up (a whole
    /// CPU for tens of milliseconds) does not compete with the taken spare's INIT.
    fn refill_later(&mut self, timers: &mut Timers<Timer>) {
        if !self.spare_pool.refill_armed {
            self.spare_pool.refill_armed = true;
            timers.schedule(Instant::now() + SPARE_REFILL_DELAY, Timer::SpareRefill);
        }
    }

    /// The refill delay has passed (the loop then balances the pool).
    pub(in crate::server) fn spare_refill_fired(&mut self) {
        self.spare_pool.refill_armed = false;
    }

    /// The spare restart back-off has passed (the loop then balances the pool).
    pub(in crate::server) fn spare_retry_fired(&mut self) {
        self.spare_pool.restart.fired();
    }

    /// Stops every spare (the runtime is stopping).
    pub(in crate::server) fn stop_all_spares(&mut self, lp: &mut Lent<'_>) {
        for key in self.spares.keys() {
            self.stop_spare(key, "runtime stopping", lp);
        }
    }
}

/// Moves a taken spare's log directory to where the function's worker's belongs; keeps the
/// spare's when that fails (or when output goes to the console).
pub(in crate::server) fn move_log_dir(from: &std::path::Path, to: PathBuf) -> PathBuf {
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
