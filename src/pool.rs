//! One function's worker pool as the data plane sees it: its request queue, its workers, and the
//! pure decisions (which worker takes the next request, how many workers to launch, how long to
//! back off after failed starts and after workers that die on their own). Nothing here does I/O;
//! the server applies the decisions.

use crate::reactor::slab::Key;
use crate::turf::worker::{ConnRef, WorkerState};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First back-off after a failed worker start.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Back-off ceiling for a function whose workers keep failing to start.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Ceiling of the respawn back-off after ready workers that die on their own ([`Pool::record_crash`]).
/// Lower than the start back-off's: requests wait for the respawn rather than fail, and code that
/// starts is worth retrying soon.
pub const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A ready worker that dies on its own this soon after it was started, before serving any
/// request, counts toward the respawn back-off: nothing but the back-off bounds such a loop.
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
    /// No launches before this instant: the start back-off.
    pub backoff_until: Option<Instant>,
    /// The most recent start failure, until a start succeeds.
    pub last_start_error: Option<StartError>,
    /// Consecutive ready workers that died on their own before serving any request; reset when
    /// an invocation completes.
    pub crashes: u32,
    /// No launches before this instant: the respawn back-off after such deaths.
    pub respawn_after: Option<Instant>,
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
            crashes: 0,
            respawn_after: None,
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

    /// A worker finished initializing: the function can start, so the start-up failures and
    /// their back-off are over. What its workers do later (dying on some request, or on their
    /// own) is no start failure: see [`Pool::record_crash`].
    pub fn record_initialized(&mut self) {
        self.last_start_error = None;
        self.start_failures = 0;
        self.backoff_until = None;
    }

    /// A ready worker died on its own before serving any request, with none in flight, soon
    /// after it started: no request is to blame, so nothing but a back-off would bound the
    /// respawns. Returns when the next launch may happen. Waiting requests keep waiting (the
    /// code starts; it is not a start failure). A worker that dies *while serving* is not
    /// recorded: its own requests fail and the replacement starts at once, so that a function
    /// dying on some inputs costs each such request itself and nothing more.
    pub fn record_crash(&mut self, now: Instant) -> Instant {
        self.crashes = self.crashes.saturating_add(1);
        let until = now + respawn_backoff(self.crashes);
        self.respawn_after = Some(until);
        until
    }

    /// An invocation completed: the function runs, and its respawn back-off is over.
    pub fn record_stable(&mut self) {
        self.crashes = 0;
        self.respawn_after = None;
    }

    /// Whether waiting requests should be failed with the last start error instead of waiting
    /// for the next launch: only while the function's workers fail to start.
    pub fn fails_fast(&self) -> bool {
        self.last_start_error.is_some()
    }

    /// Whether a launch is allowed at `now` (neither back-off is running).
    pub fn may_launch(&self, now: Instant) -> bool {
        self.backoff_until.is_none_or(|until| now >= until)
            && self.respawn_after.is_none_or(|until| now >= until)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// Exponential start back-off: 100 ms, 200 ms, 400 ms, ... capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    DEFAULT_BACKOFF_MIN
        .saturating_mul(1u32 << exp)
        .min(DEFAULT_BACKOFF_MAX)
}

/// Exponential respawn back-off: 100 ms, 200 ms, 400 ms, ... capped at 5 s.
pub fn respawn_backoff(crashes: u32) -> Duration {
    backoff(crashes).min(RESPAWN_BACKOFF_MAX)
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
    fn respawn_backoff_doubles_and_caps_lower() {
        assert_eq!(respawn_backoff(1), Duration::from_millis(100));
        assert_eq!(respawn_backoff(3), Duration::from_millis(400));
        assert_eq!(respawn_backoff(40), RESPAWN_BACKOFF_MAX);
    }

    #[test]
    fn start_failures_gate_launches_until_a_start_succeeds() {
        let now = Instant::now();
        let mut pool = Pool::new();
        assert!(pool.may_launch(now));
        let error = StartError {
            error_type: "Error".into(),
            message: "boom".into(),
            stack: vec![],
        };
        let until = pool.record_start_failure(error.clone(), now);
        assert!(!pool.may_launch(now));
        assert!(
            pool.fails_fast(),
            "a start-up error fails waiting requests at once"
        );
        assert!(pool.may_launch(until));
        pool.record_start_failure(error, until);
        assert_eq!(pool.start_failures, 2);
        pool.record_initialized();
        assert!(pool.last_start_error.is_none());
        assert!(!pool.fails_fast());
        assert_eq!(pool.start_failures, 0);
        assert!(
            pool.may_launch(now),
            "a start that succeeded ends the back-off"
        );
    }

    #[test]
    fn crashes_of_ready_workers_back_off_respawns_without_failing_requests() {
        let now = Instant::now();
        let mut pool = Pool::new();
        let first = pool.record_crash(now);
        assert_eq!(first, now + Duration::from_millis(100));
        assert!(!pool.may_launch(now));
        assert!(!pool.fails_fast(), "the code starts: requests wait");
        assert!(pool.may_launch(first));
        let second = pool.record_crash(first);
        assert_eq!(second, first + Duration::from_millis(200));
        pool.record_initialized();
        assert!(
            !pool.may_launch(first),
            "a start proves nothing about dying on its own"
        );
        pool.record_stable();
        assert_eq!(pool.crashes, 0);
        assert!(pool.may_launch(first), "a completed invocation ends it");
    }
}
