//! Scheduling decisions, as pure code: launches, back-off, dispatch, rate limiting, the system
//! circuit breaker and the scalers (idle shrink, Noslate's legacy water level, EMA concurrency).
//!
//! Nothing here does I/O or reads a clock: every function that depends on time takes `now`, and
//! every decision is returned for the event loop to apply. The pieces and the events that drive
//! them:
//!
//! | module | state kept per | driven by |
//! |---|---|---|
//! | [`plan`] | none | every scale-up: the one launch decision ([`plan::launch_plan`]) |
//! | [`backoff`] | function (counted in `crate::pool::Pool`) | failed starts, crashes of ready workers, every launch decision |
//! | [`capacity`] | none (the loop sums reserved memory) | every launch decision |
//! | [`ratelimit`] | function (`rateLimit`) | each invocation, before it is queued or counted |
//! | [`breaker`] | runtime (`systemCircuitBreaker`) | a periodic check (1 s) |
//! | [`ema`] | function | each request start/end ([`ema::ConcurrencyMeter`]) and the poll |
//! | [`scaler`] | function (`controlPlane.scaler`: idle, water level or EMA) | the one-second tick (idle) or the poll (`workerTrafficStatsPullingMs`) |
//! | [`shrink`] | function (the water-level counter) | the poll; victims for every scaler |
//! | [`dispatch`] | function (round-robin cursor) | every dispatch; every stream end (disposable) |
//!
//! [`plan::launch_plan`] composes the queue's and the reservation's demand, a scaler's
//! [`ScaleAction`], the back-off, [`capacity::admit_launches`] and `expandConcurrency` in one
//! order; the event loop and the simulation both call it.

pub mod backoff;
pub mod breaker;
pub mod capacity;
pub mod dispatch;
pub mod ema;
pub mod plan;
pub mod ratelimit;
pub mod scaler;
pub mod shrink;

#[cfg(test)]
mod sim;

/// What a scaler wants done to a function's pool on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleAction {
    /// Nothing.
    Hold,
    /// Start this many more workers. Already net of workers that are starting and within
    /// `replicaCountLimit`; [`plan::launch_plan`] also bounds it by `expandConcurrency`.
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
