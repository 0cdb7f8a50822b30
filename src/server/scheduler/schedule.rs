//! The scheduler's periodic decisions: the one-second tick that checks the breaker and shrinks
//! idle pools (the idle scaler), the poll of the water-level and EMA scalers
//! (`controlPlane.workerTrafficStatsPullingMs`), and the refusal of queue-less functions'
//! requests.
//! Every decision comes from the pure code in `crate::sched`; these methods gather its inputs
//! from the scheduler's own state and the workers' snapshots the loop hands in, and return what
//! must be done (launch, drain, refuse), which the loop carries out.

use super::Scheduler;
use crate::config::{ControlPlaneConfig, SystemConfig, WorkerProfile};
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::sched::ScaleAction;
use crate::sched::capacity::LaunchBlock;
use crate::sched::plan::{self, Blocker, LaunchPlan, PlanInput};
use crate::sched::scaler::{PoolBounds, ScalerSettings};
use crate::sched::shrink::WorkerSnapshot;
use crate::server::client::InvokeError;
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
    /// No worker could be launched for it: `virtualMemoryPoolSize` was used up.
    pub no_memory: u64,
    /// No worker could be launched for it: `worker.replicaCountLimit` was reached.
    pub replica_limit: u64,
}

/// What the supervisor says of a function's workers, for its launch plan.
#[derive(Debug, Clone, Copy)]
pub(in crate::server) struct WorkerCounts {
    /// Its workers of the current generation that are starting.
    pub(in crate::server) starting: usize,
    /// Its workers of the current generation that are starting or ready.
    pub(in crate::server) alive: usize,
    /// Memory all live workers reserve in `virtualMemoryPoolSize`.
    pub(in crate::server) pool_used: u64,
}

/// What a launch plan decided for a function.
#[derive(Debug, Default)]
pub(in crate::server) struct LaunchDecision {
    /// How many workers to start.
    pub(in crate::server) launch: usize,
    /// Queued invocations that no worker can serve soon, taken out of the queue, and their
    /// answer.
    pub(in crate::server) fail: Option<(Vec<ConnRef>, InvokeError)>,
}

/// What one function's tick or poll decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::server) struct TickPlan {
    /// The scaler wants more workers.
    pub(in crate::server) launch: Option<ScaleAction>,
    /// Workers to drain (idle, or the scaler wants fewer).
    pub(in crate::server) drain: Vec<WorkerKey>,
}

impl Scheduler {
    /// Plans `function`'s launches for its queue, its reservation and the scaler's `action`
    /// as [`plan::launch_plan`] decides (within `controlPlane.expandConcurrency`, the
    /// back-off, `replicaCountLimit` and `virtualMemoryPoolSize`). When it says no worker can
    /// come, the queue is failed: with the last start error, or with the capacity limit's
    /// error (counted as rejections). While the function's inspector is on, its queue is the
    /// inspect worker's (`plan_inspect_launch`): the ordinary workers are planned for their
    /// reservation only, and never by the scaler.
    pub(in crate::server) fn plan_launches(
        &mut self,
        function: FunctionId,
        counts: WorkerCounts,
        config: &SystemConfig,
        action: ScaleAction,
        now: Instant,
    ) -> LaunchDecision {
        let f = &mut self.functions[function];
        let worker = &f.profile.worker;
        let inspecting = f.inspector;
        let input = PlanInput {
            queued: if inspecting { 0 } else { f.pool.queue.len() },
            starting: counts.starting,
            alive: counts.alive,
            max_active: f.max_active(),
            replica_limit: usize::try_from(worker.replica_count_limit).unwrap_or(usize::MAX),
            reservation: usize::try_from(worker.reservation_count).unwrap_or(usize::MAX),
            rollout_target: f.rollout_target,
            expand_concurrency: usize::try_from(config.control_plane.expand_concurrency)
                .unwrap_or(1),
            disposable: worker.disposable,
            backoff: f.pool.backoff(),
            memory_per_worker: f.profile.resource_limit.memory,
            pool_used: counts.pool_used,
            pool_size: config.virtual_memory_pool_size,
            fast_fail: worker.fast_fail_requests_on_starting,
            action: if inspecting {
                ScaleAction::Hold
            } else {
                action
            },
        };
        let plan = plan::launch_plan(input, now);
        if let LaunchPlan::Admitted { cut, blocked, .. } = plan {
            f.pool.launch_blocked = blocked.map(|b| b.to_string());
            if let Some(block) = cut {
                log::warn!("[cp] function {}: {block}", f.profile.name);
            }
        }
        let fail = match plan.fail_queue() {
            _ if inspecting => None,
            Some(Blocker::Backoff) => self.take_queue_with_start_error(function),
            Some(Blocker::Capacity(block)) => {
                let err = InvokeError::new(503, block.error_type(), block.to_string());
                let waiting: Vec<_> = f.pool.queue.drain(..).collect();
                let count = waiting.len() as u64;
                match block {
                    LaunchBlock::MemoryPool { .. } => f.rejected.no_memory += count,
                    LaunchBlock::ReplicaLimit { .. } => f.rejected.replica_limit += count,
                }
                Some((waiting, err))
            }
            None => None,
        };
        LaunchDecision {
            launch: plan.launch(),
            fail,
        }
    }

    /// Takes `function`'s queue out, with its last start error as their answer (404: the
    /// function's failure), when it has one.
    pub(in crate::server) fn take_queue_with_start_error(
        &mut self,
        function: FunctionId,
    ) -> Option<(Vec<ConnRef>, InvokeError)> {
        let pool = &mut self.functions[function].pool;
        let error = pool.last_start_error.clone()?;
        let err = InvokeError {
            status: 404,
            error_type: error.error_type,
            message: error.message,
            stack: (!error.stack.is_empty()).then_some(error.stack),
        };
        Some((pool.queue.drain(..).collect(), err))
    }

    /// `worker.disableRequestQueue`: the answer for an invocation that found no free worker
    /// when its function's queue was dispatched, if it is still queued (counted as a
    /// rejection). Its function's launches are re-planned by the `Scale` effect recorded with
    /// this one, so that later requests find a worker.
    pub(in crate::server) fn refusal_if_still_queued(
        &mut self,
        function: FunctionId,
        client: ConnRef,
    ) -> Option<InvokeError> {
        let f = &mut self.functions[function];
        if !f.pool.queue.contains(&client) {
            return None;
        }
        f.rejected.no_free_worker += 1;
        Some(InvokeError::new(
            503,
            "NoAvailableWorker",
            format!(
                "no worker of function {} is free and worker.disableRequestQueue is set",
                f.profile.name
            ),
        ))
    }

    /// Whether the tick must be scheduled now; returning true marks it scheduled.
    pub(in crate::server) fn claim_sched_tick(&mut self) -> bool {
        !std::mem::replace(&mut self.sched_tick_armed, true)
    }

    /// The tick fired: it is no longer scheduled.
    pub(in crate::server) fn sched_tick_fired(&mut self) {
        self.sched_tick_armed = false;
    }

    /// One function's one-second tick, from its workers' `snapshots`: under the idle scaler,
    /// its workers idle for `worker.idleTimeout` (never below the reservation); the polling
    /// scalers drain only on a poll ([`Scheduler::poll_plan`]).
    pub(in crate::server) fn tick_plan(
        &self,
        function: FunctionId,
        snapshots: &[WorkerSnapshot],
        config: &ControlPlaneConfig,
        now: Instant,
    ) -> TickPlan {
        let f = &self.functions[function];
        if f.profile.worker.disposable || f.removed {
            return TickPlan::default();
        }
        let reservation = usize::try_from(f.profile.worker.reservation_count).unwrap_or(0);
        let settings = scaler_settings(&f.profile.worker, config);
        TickPlan {
            launch: None,
            drain: f.scaler.on_tick(snapshots, reservation, &settings, now),
        }
    }

    /// One function's scaler poll (`controlPlane.workerTrafficStatsPullingMs`), from its
    /// workers' `snapshots`: the water-level or EMA scaler's launch or victims. During a
    /// rollout nothing is drained: the rollout retires the old generation itself, and a drain
    /// chosen among both generations could take the new workers it waits for.
    pub(in crate::server) fn poll_plan(
        &mut self,
        function: FunctionId,
        snapshots: &[WorkerSnapshot],
        config: &ControlPlaneConfig,
        now: Instant,
    ) -> TickPlan {
        let f = &mut self.functions[function];
        if f.profile.worker.disposable || f.removed {
            return TickPlan::default();
        }
        let worker = &f.profile.worker;
        let bounds = PoolBounds {
            // While the inspector is on, the queue is the inspect worker's, not this pool's.
            queued: if f.inspector { 0 } else { f.pool.queue.len() },
            max_active: f.max_active(),
            reservation: usize::try_from(worker.reservation_count).unwrap_or(usize::MAX),
            replica_limit: usize::try_from(worker.replica_count_limit).unwrap_or(usize::MAX),
        };
        let settings = scaler_settings(worker, config);
        let mut decision = f
            .scaler
            .poll(snapshots, bounds, &mut f.meter, &settings, now);
        if f.rollout_target > 0 {
            decision.drain.clear();
        }
        TickPlan {
            launch: (decision.launch > 0).then_some(ScaleAction::Launch(decision.launch)),
            drain: decision.drain,
        }
    }
}

/// What a function's scaler reads of its profile's `worker` and of `config`.
fn scaler_settings<'a>(
    worker: &'a WorkerProfile,
    config: &ControlPlaneConfig,
) -> ScalerSettings<'a> {
    ScalerSettings {
        strategy: worker.shrink_strategy,
        idle_after: Duration::from_millis(worker.idle_timeout_ms),
        stats_mode: worker.concurrency_stats_mode,
        ema: &worker.ema,
        spare_times: config.worker_redundant_victim_spare_times,
        scaling_stage: config.capacity_scaling_stage,
    }
}

/// The one-minute load average, if readable.
pub(in crate::server) fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
