//! The scheduler in the loop: admission (circuit breaker, rate limit, queue-less functions),
//! the one-second tick that checks the breaker and shrinks idle pools (or runs the EMA scaler),
//! and draining. Every decision comes from the pure code in `crate::sched`; this file only
//! gathers snapshots and applies the answers.

use super::client::InvokeError;
use super::{Lifecycle, Server, Timer};
use crate::reactor::slab::Key;
use crate::sched::shrink::{self, WorkerSnapshot};
use crate::sched::{ScaleAction, ScalerInput};
use crate::turf::worker::{ConnRef, WorkerState};
use std::time::{Duration, Instant};

/// How often the breaker is checked and pools are considered for shrinking.
pub const SCHED_TICK: Duration = Duration::from_secs(1);

/// Requests a function turned away, by cause (for `noslate stats`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Rejections {
    /// Over the function's `rateLimit`.
    pub rate_limited: u64,
    /// While the system circuit breaker was open.
    pub breaker_open: u64,
    /// The queue was full (`dataPlane.requestQueueLimit`).
    pub queue_full: u64,
    /// No free worker and `worker.disableRequestQueue`.
    pub no_free_worker: u64,
}

impl Server {
    /// `worker.disableRequestQueue`: a request that found no free worker when its function's
    /// queue was dispatched is answered at once. (Its function's launches are re-planned by the
    /// `Scale` effect recorded with this one, so that later requests find a worker.)
    pub(super) fn refuse_if_still_queued(&mut self, function: usize, client: ConnRef) {
        let f = &mut self.scheduler.functions[function];
        if !f.pool.queue.contains(&client) {
            return;
        }
        f.rejected.no_free_worker += 1;
        let err = InvokeError::new(
            503,
            "NoAvailableWorker",
            format!(
                "no worker of function {} is free and worker.disableRequestQueue is set",
                f.profile.name
            ),
        );
        self.respond_error(client, &err, true);
    }

    /// Arms the scheduler tick if it is not armed.
    pub(super) fn arm_sched_tick(&mut self) {
        if !self.scheduler.sched_tick_armed {
            self.scheduler.sched_tick_armed = true;
            self.timers
                .schedule(Instant::now() + SCHED_TICK, Timer::SchedTick);
        }
    }

    /// The scheduler tick: breaker, then per-function scaling.
    pub(super) fn on_sched_tick(&mut self) {
        self.scheduler.sched_tick_armed = false;
        self.scheduler
            .check_breaker(&self.config.system_circuit_breaker, load1());
        // Cgroups whose processes were still dying at reap time.
        self.supervisor.stale_cgroups.retain(|cg| !cg.try_remove());
        if self.lifecycle.phase == Lifecycle::Running {
            let now = Instant::now();
            for function in 0..self.scheduler.functions.len() {
                self.scale_tick(function, now);
            }
        }
        self.arm_sched_tick();
    }

    fn snapshots(&self, function: usize) -> Vec<WorkerSnapshot> {
        self.scheduler.functions[function]
            .pool
            .workers
            .iter()
            .filter_map(|&key| {
                self.supervisor.workers.get(key).map(|w| WorkerSnapshot {
                    key,
                    state: w.state,
                    active: w.active(),
                    started_at: w.process.started_at,
                    last_active: w.last_active,
                })
            })
            .collect()
    }

    /// One function's scaling on a tick: the EMA scaler when `controlPlane.useEmaScaling` is
    /// on, otherwise idle shrink (workers idle for `worker.idleTimeout`, never below the
    /// reservation).
    fn scale_tick(&mut self, function: usize, now: Instant) {
        let profile = &self.scheduler.functions[function].profile;
        if profile.worker.disposable || self.scheduler.functions[function].removed {
            return;
        }
        let strategy = profile.worker.shrink_strategy;
        let reservation = usize::try_from(profile.worker.reservation_count).unwrap_or(0);
        let idle_after = Duration::from_millis(profile.worker.idle_timeout_ms);
        let snapshots = self.snapshots(function);
        let victims = if self.scheduler.functions[function].ema.is_some() {
            let ready = snapshots
                .iter()
                .filter(|w| w.state == WorkerState::Ready)
                .count();
            let input = ScalerInput {
                ready,
                starting: snapshots.iter().filter(|w| w.state.is_starting()).count(),
                queued: self.scheduler.functions[function].pool.queue.len(),
                active_requests: snapshots
                    .iter()
                    .filter(|w| w.state == WorkerState::Ready)
                    .map(|w| w.active)
                    .sum(),
                max_active: self.max_active(function),
                reservation,
                replica_limit: usize::try_from(profile.worker.replica_count_limit)
                    .unwrap_or(usize::MAX),
            };
            let mode = profile.worker.concurrency_stats_mode;
            let settings = profile.worker.ema.clone();
            let f = &mut self.scheduler.functions[function];
            let concurrency = f.meter.sample(mode, now);
            let Some(ema) = f.ema.as_mut() else {
                return;
            };
            match ema.tick(concurrency, input, &settings, now).action {
                ScaleAction::Hold => Vec::new(),
                ScaleAction::Launch(n) => {
                    self.scale_with(function, ScaleAction::Launch(n));
                    Vec::new()
                }
                ScaleAction::Drain(n) => shrink::pick_victims(&snapshots, n, strategy),
            }
        } else {
            shrink::idle_victims(&snapshots, reservation, idle_after, strategy, now)
        };
        for victim in victims {
            self.drain_worker(victim, "idle");
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
}

/// The one-minute load average, if readable.
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
