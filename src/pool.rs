//! One function's worker pool as the data plane sees it: its request queue, its workers, and the
//! pure decisions (which worker takes the next request, how many workers to launch, how long to
//! back off after failed starts). Nothing here does I/O; the server applies the decisions.

use crate::reactor::slab::Key;
use crate::turf::worker::{ConnRef, WorkerState};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First back-off after a failed worker start.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Back-off ceiling for a function whose workers keep failing to start.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A worker that dies this soon after it was forked counts as a failed start, even if it had
/// finished initializing: a crash loop must back off like a start-up failure.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);

/// An error that a worker start produced, kept to answer requests and `/initialize` with.
#[derive(Debug, Clone)]
pub struct StartError {
    /// FC-style error type, e.g. `InitializationTimeout` or the initializer's JS error name.
    pub error_type: String,
    /// What happened.
    pub message: String,
    /// Stack trace lines, when the initializer threw.
    pub stack: Vec<String>,
    /// The worker had finished initializing before it died (a crash, not a start-up error).
    pub after_ready: bool,
}

/// The pool state of one function.
#[derive(Debug)]
pub struct Pool {
    /// Its workers that are not yet `Exited` (stopping ones included until they exit).
    pub workers: Vec<Key>,
    /// Requests waiting for a worker, oldest first.
    pub queue: VecDeque<ConnRef>,
    /// Number used for the next worker's id.
    pub next_worker_no: u64,
    /// Consecutive failed starts; reset by a successful one.
    pub start_failures: u32,
    /// No launches before this instant.
    pub backoff_until: Option<Instant>,
    /// The most recent start failure, until a start succeeds.
    pub last_start_error: Option<StartError>,
    /// Why the last wanted launch could not happen (replica limit, memory pool), until a launch
    /// succeeds: `/initialize` and `/ready` report it instead of waiting.
    pub launch_blocked: Option<String>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool {
            workers: Vec::new(),
            queue: VecDeque::new(),
            next_worker_no: 0,
            start_failures: 0,
            backoff_until: None,
            last_start_error: None,
            launch_blocked: None,
        }
    }

    /// Records a failed start and returns when the next launch may happen.
    pub fn record_start_failure(&mut self, error: StartError, now: Instant) -> Instant {
        self.start_failures = self.start_failures.saturating_add(1);
        let until = now + backoff(self.start_failures);
        self.backoff_until = Some(until);
        self.last_start_error = Some(error);
        until
    }

    /// A worker finished initializing: the function can start, so the last error no longer
    /// describes it. The failure count stays until a worker proves stable, so that a worker
    /// crashing right after start-up still backs the function off.
    pub fn record_initialized(&mut self) {
        self.last_start_error = None;
    }

    /// A worker proved stable (it completed an invocation, or lived past
    /// [`CRASH_LOOP_WINDOW`]): start-up failures are forgiven.
    pub fn record_stable(&mut self) {
        self.start_failures = 0;
        self.backoff_until = None;
    }

    /// Whether waiting requests should be failed with the last error instead of waiting for the
    /// next launch: always after a start-up error (the code cannot start), and after a crash
    /// only once it repeats (one crash is an accident; a replacement is coming).
    pub fn fails_fast(&self) -> bool {
        self.last_start_error
            .as_ref()
            .is_some_and(|e| !e.after_ready || self.start_failures >= 2)
    }

    /// Whether a launch is allowed at `now`.
    pub fn may_launch(&self, now: Instant) -> bool {
        self.backoff_until.is_none_or(|until| now >= until)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// Exponential back-off: 100 ms, 200 ms, 400 ms, ... capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    DEFAULT_BACKOFF_MIN
        .saturating_mul(1u32 << exp)
        .min(DEFAULT_BACKOFF_MAX)
}

/// What the dispatcher needs to know about one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLoad {
    /// The worker.
    pub key: Key,
    /// Its state.
    pub state: WorkerState,
    /// Invocations in flight.
    pub active: usize,
}

/// Least-request-count dispatch: the ready worker with the fewest in-flight invocations below
/// `max_active`; the earliest-listed one wins ties, which keeps load on warm workers.
pub fn pick_worker(workers: &[WorkerLoad], max_active: usize) -> Option<Key> {
    workers
        .iter()
        .filter(|w| w.state == WorkerState::Ready && w.active < max_active)
        .min_by_key(|w| w.active)
        .map(|w| w.key)
}

/// Inputs of the scale-up decision.
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

/// Builders shared by the unit tests of the pool and the scheduler.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A slab key with index `idx`.
    pub(crate) fn key(idx: u32) -> Key {
        Key { idx, generation: 0 }
    }

    /// A worker's load for the dispatchers.
    pub(crate) fn load(idx: u32, state: WorkerState, active: usize) -> WorkerLoad {
        WorkerLoad {
            key: key(idx),
            state,
            active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{key, load};
    use super::*;

    #[test]
    fn picks_least_loaded_ready_worker_below_the_cap() {
        let workers = [
            load(0, WorkerState::Ready, 3),
            load(1, WorkerState::Starting, 0),
            load(2, WorkerState::Ready, 1),
            load(3, WorkerState::Draining, 0),
            load(4, WorkerState::Ready, 1),
        ];
        assert_eq!(pick_worker(&workers, 10), Some(key(2)));
        assert_eq!(pick_worker(&workers, 1), None);
        assert_eq!(pick_worker(&[], 10), None);
    }

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

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(40), DEFAULT_BACKOFF_MAX);
    }

    #[test]
    fn start_failures_gate_launches_until_a_success() {
        let now = Instant::now();
        let mut pool = Pool::new();
        assert!(pool.may_launch(now));
        let error = StartError {
            error_type: "Error".into(),
            message: "boom".into(),
            stack: vec![],
            after_ready: false,
        };
        let until = pool.record_start_failure(error.clone(), now);
        assert!(!pool.may_launch(now));
        assert!(
            pool.fails_fast(),
            "a start-up error fails waiting requests at once"
        );
        assert!(pool.may_launch(until));
        pool.record_initialized();
        assert!(pool.last_start_error.is_none());
        assert!(!pool.may_launch(now), "initialized is not yet stable");
        pool.record_stable();
        assert!(pool.may_launch(now));
        let crash = StartError {
            after_ready: true,
            ..error
        };
        pool.record_start_failure(crash.clone(), now);
        assert!(
            !pool.fails_fast(),
            "one crash after start-up lets requests wait"
        );
        pool.record_start_failure(crash, now);
        assert!(pool.fails_fast(), "a crash loop fails them");
    }
}
