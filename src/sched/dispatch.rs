//! Dispatch modes: least-request-count ([`pick_worker`], the default), round-robin and disposable,
//! as in Noslate's data plane.
//!
//! All modes share the queue rule of Noslate's least-request-count dispatcher: once a request
//! is queued, later ones queue behind it until the queue is empty, so requests are dispatched
//! in arrival order. The loop applies that rule; these functions only pick a worker.
//!
//! - **Least-request-count** ([`pick_worker`]): the ready worker with the fewest requests in
//!   flight below `maxActivateRequests`; the earliest-listed one wins ties, which keeps load on
//!   warm workers.
//! - **Round-robin** ([`RoundRobin`]): the ready workers in turn, skipping the ones at
//!   `maxActivateRequests`. Noslate's round-robin has only a pool-wide cap
//!   (`maxActivateRequests × replicaCountLimit`, fixed at creation) and overloads single
//!   workers; ours caps each worker like least-request-count does.
//! - **Disposable** ([`DisposableLife`], [`pick_disposable`]): one request per worker. A
//!   worker takes a request only while it is fresh; its one request ending — the response fully
//!   sent, a failure, or a client abort ([`StreamEnd`]) — retires it (drain, then stop). A
//!   streaming response holds the worker until the stream ends. Every queued request needs a
//!   worker of its own: [`disposable_launches`].

use super::plan::{ScaleInput, workers_to_launch};
use crate::config::DispatchMode;
use crate::ids::WorkerKey;
use crate::turf::worker::WorkerState;

/// What the dispatcher needs to know about one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLoad {
    /// The worker.
    pub key: WorkerKey,
    /// Its state.
    pub state: WorkerState,
    /// Invocations in flight.
    pub active: usize,
}

/// Least-request-count dispatch: the ready worker with the fewest in-flight invocations below
/// `max_active`; the earliest-listed one wins ties, which keeps load on warm workers.
pub fn pick_worker(workers: &[WorkerLoad], max_active: usize) -> Option<WorkerKey> {
    workers
        .iter()
        .filter(|w| w.state == WorkerState::Ready && w.active < max_active)
        .min_by_key(|w| w.active)
        .map(|w| w.key)
}

/// The round-robin cursor of one function.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// The last worker picked and its position in the list at the time.
    last: Option<(WorkerKey, usize)>,
}

impl RoundRobin {
    /// A cursor that starts with the first listed worker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next ready worker after the previous pick, in list order and wrapping around,
    /// that has fewer than `max_active` requests in flight. Workers may come and go between
    /// calls: the turn passes to whoever follows the previous pick in the list, or, if it is
    /// gone, to whoever now holds its position.
    pub fn pick(&mut self, workers: &[WorkerLoad], max_active: usize) -> Option<WorkerKey> {
        let n = workers.len();
        if n == 0 {
            return None;
        }
        let start = match self.last {
            None => 0,
            Some((key, at)) => match workers.iter().position(|w| w.key == key) {
                Some(pos) => pos + 1,
                None => at,
            },
        };
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| workers[i].state == WorkerState::Ready && workers[i].active < max_active)?;
        let key = workers[found].key;
        self.last = Some((key, found));
        Some(key)
    }
}

/// A worker for the next request under `mode` (not for disposable functions: see
/// [`pick_disposable`]).
pub fn pick(
    mode: DispatchMode,
    cursor: &mut RoundRobin,
    workers: &[WorkerLoad],
    max_active: usize,
) -> Option<WorkerKey> {
    match mode {
        DispatchMode::LeastRequestCount => pick_worker(workers, max_active),
        DispatchMode::RoundRobin => cursor.pick(workers, max_active),
    }
}

/// How a stream (one invocation on a worker) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The response was fully sent to the client.
    Completed,
    /// The worker failed it, or it timed out.
    Failed,
    /// The client went away.
    Aborted,
}

/// Where a disposable worker is in its one-request life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DisposableLife {
    /// Has not taken a request yet.
    #[default]
    Fresh,
    /// Serving its request.
    Serving,
    /// Its request ended: it takes no other and is to be drained and stopped.
    Spent,
}

impl DisposableLife {
    /// Whether it may take a request.
    pub fn is_fresh(self) -> bool {
        self == DisposableLife::Fresh
    }

    /// Hands it its request. `false` (and no change) if it is not fresh: the caller has a bug.
    pub fn take(&mut self) -> bool {
        if *self != DisposableLife::Fresh {
            return false;
        }
        *self = DisposableLife::Serving;
        true
    }

    /// Its request ended in any way: it is spent. Returns `true` when this call retired it, so
    /// the caller drains and stops it exactly once.
    pub fn finish(&mut self, _end: StreamEnd) -> bool {
        let retire = *self != DisposableLife::Spent;
        *self = DisposableLife::Spent;
        retire
    }
}

/// What disposable dispatch needs to know about one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisposableCandidate {
    /// The worker.
    pub key: WorkerKey,
    /// Its state.
    pub state: WorkerState,
    /// Where it is in its life.
    pub life: DisposableLife,
}

/// The first listed ready worker that is still fresh (Noslate: the oldest idle worker).
pub fn pick_disposable(workers: &[DisposableCandidate]) -> Option<WorkerKey> {
    workers
        .iter()
        .find(|w| w.state == WorkerState::Ready && w.life.is_fresh())
        .map(|w| w.key)
}

/// Workers to launch for a disposable function: one per queued request not covered by a
/// starting (hence fresh) worker, within `replicaCountLimit` and the launch slots. `alive` counts
/// starting and ready workers, serving ones included; spent ones are draining and do not count.
/// There is no reservation.
pub fn disposable_launches(
    queued: usize,
    starting: usize,
    alive: usize,
    replica_limit: usize,
    expand_concurrency: usize,
) -> usize {
    workers_to_launch(ScaleInput {
        queued,
        starting,
        alive,
        max_active: 1,
        replica_limit,
        reservation: 0,
        expand_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slab key with index `idx`.
    fn key(idx: u32) -> WorkerKey {
        WorkerKey(crate::reactor::slab::Key { idx, generation: 0 })
    }

    /// A worker's load for the dispatchers.
    fn load(idx: u32, state: WorkerState, active: usize) -> WorkerLoad {
        WorkerLoad {
            key: key(idx),
            state,
            active,
        }
    }

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

    fn ready(idx: u32, active: usize) -> WorkerLoad {
        load(idx, WorkerState::Ready, active)
    }

    fn picks(rr: &mut RoundRobin, workers: &[WorkerLoad], max: usize, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| rr.pick(workers, max).map_or(u32::MAX, |k| k.0.idx))
            .collect()
    }

    #[test]
    fn round_robin_alternates() {
        // Noslate's e2e: two reserved workers receive requests alternately.
        let mut rr = RoundRobin::new();
        let workers = [ready(0, 0), ready(1, 0)];
        assert_eq!(picks(&mut rr, &workers, 10, 5), [0, 1, 0, 1, 0]);
        let three = [ready(0, 0), ready(1, 0), ready(2, 0)];
        let mut rr = RoundRobin::new();
        assert_eq!(picks(&mut rr, &three, 10, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_skips_full_and_unready_workers() {
        let mut rr = RoundRobin::new();
        let workers = [
            ready(0, 0),
            ready(1, 2),
            load(2, WorkerState::Starting, 0),
            load(3, WorkerState::Draining, 0),
            ready(4, 1),
        ];
        assert_eq!(picks(&mut rr, &workers, 2, 4), [0, 4, 0, 4]);
        assert_eq!(rr.pick(&workers, 1), Some(key(0)), "4 is full at cap 1");
        assert_eq!(rr.pick(&[ready(0, 1), ready(1, 1)], 1), None);
        assert_eq!(rr.pick(&[], 1), None);
    }

    #[test]
    fn round_robin_survives_membership_changes() {
        let mut rr = RoundRobin::new();
        let workers = [ready(0, 0), ready(1, 0), ready(2, 0)];
        assert_eq!(picks(&mut rr, &workers, 10, 2), [0, 1]);
        // Worker 1 (the last pick) leaves: its successor 2 now holds its position.
        let without_1 = [ready(0, 0), ready(2, 0)];
        assert_eq!(picks(&mut rr, &without_1, 10, 3), [2, 0, 2]);
        // A worker joins at the end: it gets its turn after 2.
        let with_5 = [ready(0, 0), ready(2, 0), ready(5, 0)];
        assert_eq!(picks(&mut rr, &with_5, 10, 4), [5, 0, 2, 5]);
        // The last pick leaves from the end of the list: wrap to the start.
        let mut rr = RoundRobin::new();
        assert_eq!(picks(&mut rr, &with_5, 10, 3), [0, 2, 5]);
        assert_eq!(picks(&mut rr, &[ready(0, 0), ready(2, 0)], 10, 2), [0, 2]);
    }

    #[test]
    fn round_robin_every_worker_gets_a_turn_before_any_gets_two() {
        // Exhaustive over small pools and caps: among available workers, turns rotate.
        for n in 1..6u32 {
            let workers: Vec<WorkerLoad> = (0..n).map(|i| ready(i, 0)).collect();
            let mut rr = RoundRobin::new();
            let got = picks(&mut rr, &workers, 1, 3 * n as usize);
            let want: Vec<u32> = (0..3 * n).map(|i| i % n).collect();
            assert_eq!(got, want, "n {n}");
        }
    }

    #[test]
    fn pick_by_mode() {
        let workers = [ready(0, 3), ready(1, 1), ready(2, 2)];
        let mut rr = RoundRobin::new();
        assert_eq!(
            pick(DispatchMode::LeastRequestCount, &mut rr, &workers, 10),
            Some(key(1))
        );
        assert_eq!(
            pick(DispatchMode::RoundRobin, &mut rr, &workers, 10),
            Some(key(0))
        );
        assert_eq!(
            pick(DispatchMode::RoundRobin, &mut rr, &workers, 10),
            Some(key(1))
        );
    }

    #[test]
    fn disposable_life_is_one_request() {
        for end in [StreamEnd::Completed, StreamEnd::Failed, StreamEnd::Aborted] {
            let mut life = DisposableLife::default();
            assert!(life.is_fresh());
            assert!(life.take());
            assert!(!life.is_fresh());
            assert!(!life.take(), "no second request while serving");
            assert!(life.finish(end), "{end:?} retires it");
            assert_eq!(life, DisposableLife::Spent);
            assert!(!life.take(), "nor after");
            assert!(!life.finish(end), "retired once");
        }
        // A worker failing before it got its request is spent too.
        let mut life = DisposableLife::Fresh;
        assert!(life.finish(StreamEnd::Failed));
        assert!(!life.take());
    }

    #[test]
    fn pick_disposable_takes_the_first_fresh_ready_worker() {
        let c = |idx, state, life| DisposableCandidate {
            key: key(idx),
            state,
            life,
        };
        let workers = [
            c(0, WorkerState::Ready, DisposableLife::Serving),
            c(1, WorkerState::Starting, DisposableLife::Fresh),
            c(2, WorkerState::Draining, DisposableLife::Spent),
            c(3, WorkerState::Ready, DisposableLife::Fresh),
            c(4, WorkerState::Ready, DisposableLife::Fresh),
        ];
        assert_eq!(pick_disposable(&workers), Some(key(3)));
        assert_eq!(pick_disposable(&workers[..3]), None);
    }

    #[test]
    fn disposable_launches_one_per_uncovered_request() {
        assert_eq!(disposable_launches(0, 0, 0, 10, 4), 0);
        assert_eq!(disposable_launches(3, 0, 0, 10, 4), 3);
        assert_eq!(disposable_launches(3, 1, 1, 10, 4), 2);
        assert_eq!(disposable_launches(9, 0, 0, 10, 4), 4, "expandConcurrency");
        assert_eq!(disposable_launches(9, 0, 8, 10, 4), 2, "replicaCountLimit");
        assert_eq!(disposable_launches(3, 0, 10, 10, 4), 0);
    }
}
