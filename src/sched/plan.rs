//! The launch decision: how many workers a function starts now, and, when none can come,
//! which limit blocks them and whether its queued requests fail at once.
//!
//! [`launch_plan`] composes every piece in one order, the one the event loop
//! (`Server::scale_with`) and the simulation (`sched/sim.rs`) both apply:
//!
//! 1. **Demand**, before any limit: the queue's (`queued ÷ maxActivateRequests`, minus the
//!    workers starting; one worker per request for disposable functions) or the reservation's
//!    shortfall (the rollout target's, when larger), or the scaler's [`ScaleAction::Launch`],
//!    whichever is largest ([`launches`], [`super::dispatch::disposable_launches`]). No demand:
//!    nothing happens.
//! 2. **Back-off** ([`super::backoff`]): while it runs nothing launches; with nothing running or
//!    starting after a failed start, queued requests fail with the start error.
//! 3. **Capacity** ([`super::capacity::admit_launches`]): `replicaCountLimit`, then
//!    `virtualMemoryPoolSize`. When it admits none, the limit is the pool's launch status, and
//!    queued requests fail with its error if nothing is starting (always for the memory pool;
//!    for the replica limit only with `worker.fastFailRequestsOnStarting`).
//! 4. **Launch slots**: at most `controlPlane.expandConcurrency` workers starting at once.
//!
//! The capacity limit is measured against the whole demand, not the part the launch slots
//! allow, so that a blocked launch names its limit even while slots are busy.

use super::ScaleAction;
use super::backoff::Backoff;
use super::capacity::{LaunchBlock, LaunchLimits, admit_launches};
use super::dispatch::disposable_launches;
use std::time::Instant;

/// Inputs of the queue's and the reservation's launch demand.
#[derive(Debug, Clone, Copy)]
pub struct ScaleInput {
    /// Requests waiting.
    pub queued: usize,
    /// Workers still starting.
    pub starting: usize,
    /// Workers starting or serving (draining and stopping ones do not count).
    pub alive: usize,
    /// `worker.maxActivateRequests`.
    pub max_active: usize,
    /// `worker.replicaCountLimit`.
    pub replica_limit: usize,
    /// `worker.reservationCount`.
    pub reservation: usize,
    /// `controlPlane.expandConcurrency`: concurrent launches.
    pub expand_concurrency: usize,
}

/// How many workers to launch now: enough that starting workers cover the queue (each takes up
/// to `max_active` requests) and the reservation is met, within the replica limit and the
/// number of concurrent launches.
pub fn workers_to_launch(input: ScaleInput) -> usize {
    let max_active = input.max_active.max(1);
    let for_queue = input
        .queued
        .div_ceil(max_active)
        .saturating_sub(input.starting);
    let for_reservation = input.reservation.saturating_sub(input.alive);
    let wanted = for_queue.max(for_reservation);
    let room = input.replica_limit.saturating_sub(input.alive);
    let launch_slots = input.expand_concurrency.saturating_sub(input.starting);
    wanted.min(room).min(launch_slots)
}

/// How many workers to launch now: the queue's and the reservation's demand
/// ([`workers_to_launch`]) or the scaler's [`ScaleAction::Launch`], whichever is larger, within
/// the replica limit and the free launch slots (`expandConcurrency` minus those starting).
pub fn launches(input: ScaleInput, action: ScaleAction) -> usize {
    let for_queue = workers_to_launch(input);
    let ScaleAction::Launch(wanted) = action else {
        return for_queue;
    };
    let room = input.replica_limit.saturating_sub(input.alive);
    let slots = input.expand_concurrency.saturating_sub(input.starting);
    for_queue.max(wanted.min(room).min(slots))
}

/// Everything the launch decision reads, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput {
    /// Requests waiting in the function's queue.
    pub queued: usize,
    /// Workers of the current generation starting or initializing.
    pub starting: usize,
    /// Workers of the current generation starting or serving.
    pub alive: usize,
    /// `worker.maxActivateRequests` (0 is taken as 1).
    pub max_active: usize,
    /// `worker.replicaCountLimit`.
    pub replica_limit: usize,
    /// `worker.reservationCount`.
    pub reservation: usize,
    /// During a rollout, the ready workers the new generation needs before the old one drains
    /// (0 otherwise); it raises the reservation.
    pub rollout_target: usize,
    /// `controlPlane.expandConcurrency`: workers starting at once (0 is taken as 1).
    pub expand_concurrency: usize,
    /// `worker.disposable`: one request per worker, no reservation.
    pub disposable: bool,
    /// The function's start and respawn back-off.
    pub backoff: Backoff,
    /// `resourceLimit.memory` of one worker, in bytes.
    pub memory_per_worker: u64,
    /// Bytes reserved in `virtualMemoryPoolSize` by every worker (all functions) not exited.
    pub pool_used: u64,
    /// `virtualMemoryPoolSize`, in bytes.
    pub pool_size: u64,
    /// `worker.fastFailRequestsOnStarting`.
    pub fast_fail: bool,
    /// The scaler's wish on this tick ([`ScaleAction::Hold`] outside the tick).
    pub action: ScaleAction,
}

/// What blocks every wanted launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The start or respawn back-off; queued requests fail with the last start error.
    Backoff,
    /// `replicaCountLimit` or `virtualMemoryPoolSize`; queued requests fail with its error.
    Capacity(LaunchBlock),
}

/// What to do for one function now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchPlan {
    /// No launch is wanted. The pool's launch status stays as it is.
    Idle,
    /// Launches are wanted but a back-off holds them (its timer scales again when it ends).
    BackingOff {
        /// Nothing runs or starts and the last start failed: the queued requests fail now
        /// with that start error.
        fail_queue: bool,
    },
    /// Launches are wanted and capacity admission ran.
    Admitted {
        /// Workers to start now: the admitted ones within the free launch slots.
        launch: usize,
        /// The capacity limit that admitted fewer than wanted (to be logged), if any.
        cut: Option<LaunchBlock>,
        /// The capacity limit that admitted none: the pool's launch status until a launch
        /// succeeds (`None` clears it).
        blocked: Option<LaunchBlock>,
        /// Nothing starts and `blocked` is final for now: the queued requests fail with its
        /// error.
        fail_queue: bool,
    },
}

impl LaunchPlan {
    /// Workers to start now.
    pub fn launch(&self) -> usize {
        match *self {
            LaunchPlan::Admitted { launch, .. } => launch,
            LaunchPlan::Idle | LaunchPlan::BackingOff { .. } => 0,
        }
    }

    /// When launches are wanted and none can come: the limit that blocks them.
    pub fn blocked_by(&self) -> Option<Blocker> {
        match *self {
            LaunchPlan::Idle => None,
            LaunchPlan::BackingOff { .. } => Some(Blocker::Backoff),
            LaunchPlan::Admitted { blocked, .. } => blocked.map(Blocker::Capacity),
        }
    }

    /// The limit whose error the queued requests fail with now, if they do.
    pub fn fail_queue(&self) -> Option<Blocker> {
        match *self {
            LaunchPlan::BackingOff { fail_queue: true }
            | LaunchPlan::Admitted {
                fail_queue: true, ..
            } => self.blocked_by(),
            _ => None,
        }
    }
}

/// The launch decision for one function at `now`, composed in the order the module
/// documentation gives.
pub fn launch_plan(input: PlanInput, now: Instant) -> LaunchPlan {
    let demand = if input.disposable {
        disposable_launches(
            input.queued,
            input.starting,
            input.alive,
            usize::MAX,
            usize::MAX,
        )
    } else {
        launches(
            ScaleInput {
                queued: input.queued,
                starting: input.starting,
                alive: input.alive,
                max_active: input.max_active,
                replica_limit: usize::MAX,
                reservation: input.reservation.max(input.rollout_target),
                expand_concurrency: usize::MAX,
            },
            input.action,
        )
    };
    if demand == 0 {
        return LaunchPlan::Idle;
    }
    if !input.backoff.may_launch(now) {
        return LaunchPlan::BackingOff {
            fail_queue: input.starting == 0 && input.alive == 0 && input.backoff.fails_fast(),
        };
    }
    let (admitted, cut) = admit_launches(
        demand,
        LaunchLimits {
            alive: input.alive,
            replica_limit: input.replica_limit,
            memory_per_worker: input.memory_per_worker,
            pool_used: input.pool_used,
            pool_size: input.pool_size,
        },
    );
    let blocked = cut.filter(|_| admitted == 0);
    let fatal = |block: LaunchBlock| match block {
        LaunchBlock::MemoryPool { .. } => true,
        LaunchBlock::ReplicaLimit { .. } => input.fast_fail,
    };
    let fail_queue = input.queued > 0 && input.starting == 0 && blocked.is_some_and(fatal);
    let slots = input
        .expand_concurrency
        .max(1)
        .saturating_sub(input.starting);
    LaunchPlan::Admitted {
        launch: admitted.min(slots),
        cut,
        blocked,
        fail_queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn scale(queued: usize, starting: usize, alive: usize) -> ScaleInput {
        ScaleInput {
            queued,
            starting,
            alive,
            max_active: 10,
            replica_limit: 4,
            reservation: 0,
            expand_concurrency: 4,
        }
    }

    #[test]
    fn launches_for_the_queue_counting_starting_workers() {
        assert_eq!(workers_to_launch(scale(0, 0, 0)), 0);
        assert_eq!(workers_to_launch(scale(1, 0, 0)), 1);
        assert_eq!(
            workers_to_launch(scale(10, 1, 1)),
            0,
            "one starting worker covers 10"
        );
        assert_eq!(workers_to_launch(scale(11, 1, 1)), 1);
        assert_eq!(workers_to_launch(scale(100, 0, 1)), 3, "replica limit 4");
        assert_eq!(workers_to_launch(scale(100, 0, 4)), 0);
    }

    #[test]
    fn launches_for_the_reservation_within_expand_concurrency() {
        let mut input = scale(0, 0, 0);
        input.reservation = 3;
        assert_eq!(workers_to_launch(input), 3);
        input.expand_concurrency = 2;
        assert_eq!(workers_to_launch(input), 2);
        input.starting = 2;
        input.alive = 2;
        assert_eq!(workers_to_launch(input), 0, "both launch slots busy");
    }

    fn merged(queued: usize, starting: usize, alive: usize) -> ScaleInput {
        ScaleInput {
            queued,
            starting,
            alive,
            max_active: 2,
            replica_limit: 5,
            reservation: 1,
            expand_concurrency: 3,
        }
    }

    #[test]
    fn launches_merge_the_scaler_with_the_queue() {
        assert_eq!(launches(merged(0, 0, 1), ScaleAction::Hold), 0);
        assert_eq!(launches(merged(3, 0, 1), ScaleAction::Hold), 2);
        assert_eq!(launches(merged(3, 0, 1), ScaleAction::Launch(1)), 2);
        assert_eq!(launches(merged(0, 0, 1), ScaleAction::Launch(2)), 2);
        assert_eq!(
            launches(merged(0, 1, 2), ScaleAction::Launch(9)),
            2,
            "three launch slots, one busy"
        );
        assert_eq!(
            launches(merged(0, 0, 4), ScaleAction::Launch(9)),
            1,
            "replica limit 5"
        );
        assert_eq!(
            launches(merged(0, 0, 0), ScaleAction::Drain(1)),
            1,
            "reservation"
        );
    }

    /// A function with room for everything: 8 replicas, 4 launch slots, 256 MiB workers in an
    /// empty 4 GiB pool, no back-off.
    fn input(queued: usize, starting: usize, alive: usize) -> PlanInput {
        PlanInput {
            queued,
            starting,
            alive,
            max_active: 2,
            replica_limit: 8,
            reservation: 0,
            rollout_target: 0,
            expand_concurrency: 4,
            disposable: false,
            backoff: Backoff::default(),
            memory_per_worker: 256 * MIB,
            pool_used: 0,
            pool_size: 4096 * MIB,
            fast_fail: false,
            action: ScaleAction::Hold,
        }
    }

    fn plan(input: PlanInput) -> LaunchPlan {
        launch_plan(input, Instant::now())
    }

    fn launching(launch: usize) -> LaunchPlan {
        LaunchPlan::Admitted {
            launch,
            cut: None,
            blocked: None,
            fail_queue: false,
        }
    }

    #[test]
    fn nothing_wanted_is_idle() {
        assert_eq!(plan(input(0, 0, 0)), LaunchPlan::Idle);
        assert_eq!(
            plan(input(4, 2, 2)),
            LaunchPlan::Idle,
            "two starting cover 4"
        );
        let mut full = input(0, 0, 8);
        full.replica_limit = 8;
        full.pool_used = full.pool_size;
        assert_eq!(
            plan(full),
            LaunchPlan::Idle,
            "no demand: limits are not consulted and the launch status stays"
        );
    }

    #[test]
    fn queue_demand_and_reservation_take_the_larger() {
        // 5 queued at 2 per worker: 3 workers, one of them already starting.
        assert_eq!(plan(input(5, 1, 1)), launching(2));
        let mut reserved = input(1, 0, 0);
        reserved.reservation = 3;
        assert_eq!(plan(reserved), launching(3), "the reservation's shortfall");
        reserved.alive = 3;
        reserved.queued = 7;
        assert_eq!(plan(reserved), launching(4), "the queue's, when larger");
    }

    #[test]
    fn expand_concurrency_caps_the_launches_after_admission() {
        let mut i = input(10, 1, 1);
        i.expand_concurrency = 3;
        assert_eq!(plan(i), launching(2), "three slots, one busy");
        i.starting = 3;
        i.alive = 3;
        i.queued = 12;
        assert_eq!(
            plan(i),
            launching(0),
            "every slot busy: nothing, nothing blocked"
        );
        i.expand_concurrency = 0;
        i.starting = 0;
        i.queued = 8;
        assert_eq!(plan(i), launching(1), "0 is taken as 1");
        // The replica limit cuts the whole demand even where the slots would have hidden it.
        i.queued = 30;
        assert!(matches!(
            plan(i),
            LaunchPlan::Admitted {
                launch: 1,
                cut: Some(LaunchBlock::ReplicaLimit { .. }),
                ..
            }
        ));
    }

    #[test]
    fn the_replica_limit_cuts_then_blocks() {
        let mut i = input(20, 0, 6);
        assert_eq!(
            plan(i),
            LaunchPlan::Admitted {
                launch: 2,
                cut: Some(LaunchBlock::ReplicaLimit {
                    current: 8,
                    limit: 8
                }),
                blocked: None,
                fail_queue: false,
            },
            "measured against the whole demand, then the launch slots"
        );
        i.alive = 8;
        let block = LaunchBlock::ReplicaLimit {
            current: 8,
            limit: 8,
        };
        let blocked = plan(i);
        assert_eq!(
            blocked,
            LaunchPlan::Admitted {
                launch: 0,
                cut: Some(block),
                blocked: Some(block),
                fail_queue: false,
            },
            "requests wait for a worker to free up"
        );
        assert_eq!(blocked.blocked_by(), Some(Blocker::Capacity(block)));
        assert_eq!(blocked.fail_queue(), None);
    }

    #[test]
    fn the_replica_limit_fails_the_queue_only_with_fast_fail_and_nothing_starting() {
        let mut i = input(20, 0, 8);
        i.fast_fail = true;
        let block = LaunchBlock::ReplicaLimit {
            current: 8,
            limit: 8,
        };
        assert_eq!(plan(i).fail_queue(), Some(Blocker::Capacity(block)));
        i.starting = 1;
        i.queued = 40;
        assert_eq!(
            plan(i).fail_queue(),
            None,
            "a starting worker will take some"
        );
        let mut reserved = input(0, 0, 8);
        reserved.fast_fail = true;
        reserved.reservation = 9;
        assert_eq!(plan(reserved).blocked_by(), Some(Blocker::Capacity(block)));
        assert_eq!(plan(reserved).fail_queue(), None, "no queue to fail");
    }

    #[test]
    fn the_memory_pool_blocks_and_fails_the_queue() {
        let mut i = input(3, 0, 2);
        i.pool_size = 1024 * MIB;
        i.pool_used = 768 * MIB;
        let cut = LaunchBlock::MemoryPool {
            used: 1024 * MIB,
            need: 256 * MIB,
            total: 1024 * MIB,
        };
        assert_eq!(
            plan(i),
            LaunchPlan::Admitted {
                launch: 1,
                cut: Some(cut),
                blocked: None,
                fail_queue: false,
            }
        );
        i.pool_used = 1024 * MIB;
        let p = plan(i);
        assert_eq!(p.launch(), 0);
        assert_eq!(p.fail_queue(), Some(Blocker::Capacity(cut)), "always fatal");
        i.starting = 1;
        i.alive = 3;
        i.queued = 5;
        assert_eq!(
            plan(i).fail_queue(),
            None,
            "a starting worker will take some"
        );
        // The replica limit is checked first.
        let mut both = input(3, 0, 8);
        both.pool_used = both.pool_size;
        assert!(matches!(
            plan(both).blocked_by(),
            Some(Blocker::Capacity(LaunchBlock::ReplicaLimit { .. }))
        ));
    }

    #[test]
    fn a_running_back_off_holds_launches_before_capacity() {
        let now = Instant::now();
        let later = now + Duration::from_millis(100);
        let mut i = input(3, 0, 0);
        i.backoff = Backoff {
            start_until: Some(later),
            respawn_until: None,
            start_failed: true,
        };
        i.pool_used = i.pool_size;
        let p = launch_plan(i, now);
        assert_eq!(p, LaunchPlan::BackingOff { fail_queue: true });
        assert_eq!(p.fail_queue(), Some(Blocker::Backoff));
        assert_eq!(p.launch(), 0);
        i.alive = 1;
        assert_eq!(
            launch_plan(i, now),
            LaunchPlan::BackingOff { fail_queue: false },
            "a running worker will serve the queue"
        );
        i.alive = 0;
        i.backoff = Backoff {
            start_until: None,
            respawn_until: Some(later),
            start_failed: false,
        };
        assert_eq!(
            launch_plan(i, now),
            LaunchPlan::BackingOff { fail_queue: false },
            "after crashes of ready workers requests wait"
        );
        i.pool_used = 0;
        assert_eq!(launch_plan(i, later), launching(2), "over at its instant");
    }

    #[test]
    fn disposable_functions_want_a_worker_per_request_and_no_reservation() {
        let mut i = input(3, 1, 2);
        i.disposable = true;
        i.reservation = 5;
        i.rollout_target = 5;
        i.max_active = 4;
        assert_eq!(
            plan(i),
            launching(2),
            "3 requests, one fresh worker starting"
        );
        i.queued = 0;
        assert_eq!(plan(i), LaunchPlan::Idle);
        i.queued = 6;
        assert_eq!(plan(i), launching(3), "four launch slots, one busy");
    }

    #[test]
    fn a_rollout_raises_the_reservation() {
        let mut i = input(0, 0, 1);
        i.reservation = 1;
        assert_eq!(plan(i), LaunchPlan::Idle);
        i.rollout_target = 3;
        assert_eq!(plan(i), launching(2));
        i.replica_limit = 2;
        assert_eq!(plan(i).launch(), 1, "still within the replica limit");
    }

    #[test]
    fn the_scaler_adds_to_the_demand_within_the_limits() {
        let mut i = input(0, 0, 2);
        i.action = ScaleAction::Launch(3);
        assert_eq!(plan(i), launching(3));
        i.action = ScaleAction::Drain(1);
        assert_eq!(plan(i), LaunchPlan::Idle, "a drain wants no launch");
        i.action = ScaleAction::Launch(9);
        i.replica_limit = 4;
        assert_eq!(plan(i).launch(), 2);
        assert!(matches!(
            plan(i),
            LaunchPlan::Admitted {
                cut: Some(LaunchBlock::ReplicaLimit { .. }),
                blocked: None,
                ..
            }
        ));
    }
}
