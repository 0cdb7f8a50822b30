//! Scheduling decisions of issue 4, as pure code: rate limiting, the system circuit breaker, the
//! scalers (idle shrink, Noslate's legacy water level, EMA concurrency) and the dispatch modes
//! that [`crate::pool`] does not already cover.
//!
//! Nothing here does I/O or reads a clock: every function that depends on time takes `now`, and
//! every decision is returned for the event loop to apply. The pieces and the events that drive
//! them:
//!
//! | module | state kept per | driven by |
//! |---|---|---|
//! | [`ratelimit`] | function (`rateLimit`) | each invocation, before it is queued or counted |
//! | [`capacity`] | none (the loop sums reserved memory) | every launch decision |
//! | [`breaker`] | runtime (`systemCircuitBreaker`) | a periodic check (1 s) |
//! | [`ema`] | function | each request start/end ([`ema::ConcurrencyMeter`]) and the scaling tick |
//! | [`shrink`] | function (legacy counter) | the scaling tick |
//! | [`dispatch`] | function (round-robin cursor) | every dispatch; every stream end (disposable) |
//!
//! Scale-up from the queue and least-request-count dispatch are [`crate::pool::workers_to_launch`]
//! and [`crate::pool::pick_worker`]; [`launches`] merges a scaler's wish with the former, and
//! [`capacity::admit_launches`] bounds the result by the replica limit and the memory pool.

pub mod breaker;
pub mod capacity;
pub mod dispatch;
pub mod ema;
pub mod ratelimit;
pub mod shrink;

#[cfg(test)]
mod sim;

use crate::pool::{ScaleInput, workers_to_launch};

/// What a scaler wants done to a function's pool on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleAction {
    /// Nothing.
    Hold,
    /// Start this many more workers. Already net of workers that are starting and within
    /// `replicaCountLimit`; [`launches`] also bounds it by `expandConcurrency`.
    Launch(usize),
    /// Drain this many ready workers, chosen by [`shrink::pick_victims`] with the function's
    /// `shrinkStrategy`. Never takes the ready count below the reservation.
    Drain(usize),
}

/// One function's pool as the scalers ([`ema::EmaScaler`], [`shrink::LegacyScaler`]) see it on a
/// scaling tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalerInput {
    /// Workers serving (`Ready`); draining and stopping ones do not count.
    pub ready: usize,
    /// Workers starting or initializing.
    pub starting: usize,
    /// Requests waiting in the function's queue.
    pub queued: usize,
    /// Requests in flight on the ready workers.
    pub active_requests: usize,
    /// `worker.maxActivateRequests` (0 is taken as 1).
    pub max_active: usize,
    /// `worker.reservationCount` (0 for disposable functions).
    pub reservation: usize,
    /// `worker.replicaCountLimit`.
    pub replica_limit: usize,
}

impl ScalerInput {
    /// Workers starting or serving.
    pub fn alive(&self) -> usize {
        self.ready.saturating_add(self.starting)
    }

    /// The launches that bring the pool up to the reservation, if it is short.
    fn reservation_shortfall(&self) -> usize {
        self.reservation
            .min(self.replica_limit)
            .saturating_sub(self.alive())
    }

    /// `action`, raised to at least the reservation's shortfall.
    fn with_reservation_floor(&self, action: ScaleAction) -> ScaleAction {
        let short = self.reservation_shortfall();
        match action {
            _ if short == 0 => action,
            ScaleAction::Launch(n) => ScaleAction::Launch(n.max(short)),
            ScaleAction::Hold | ScaleAction::Drain(_) => ScaleAction::Launch(short),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(queued: usize, starting: usize, alive: usize) -> ScaleInput {
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
        assert_eq!(launches(input(0, 0, 1), ScaleAction::Hold), 0);
        assert_eq!(launches(input(3, 0, 1), ScaleAction::Hold), 2);
        assert_eq!(launches(input(3, 0, 1), ScaleAction::Launch(1)), 2);
        assert_eq!(launches(input(0, 0, 1), ScaleAction::Launch(2)), 2);
        assert_eq!(
            launches(input(0, 1, 2), ScaleAction::Launch(9)),
            2,
            "three launch slots, one busy"
        );
        assert_eq!(
            launches(input(0, 0, 4), ScaleAction::Launch(9)),
            1,
            "replica limit 5"
        );
        assert_eq!(
            launches(input(0, 0, 0), ScaleAction::Drain(1)),
            1,
            "reservation"
        );
    }
}
