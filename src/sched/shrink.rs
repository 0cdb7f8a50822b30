//! Scale-down: which workers to drain.
//!
//! - [`idle_victims`]: our default scale-down. A ready worker is *idle* when it has no request
//!   in flight and has had none for at least the idle threshold: `active == 0` and
//!   `now − last_active ≥ idle_after`, where `last_active` is when its last request ended (or
//!   when it became ready, if it never served). Idle workers are drained, but never so many
//!   that fewer ready workers than the reservation remain; when the reservation stops some,
//!   the function's `shrinkStrategy` decides which go.
//! - [`LegacyScaler`]: Noslate's default water-level algorithm (`controlPlane.scaler:
//!   "waterLevel"`), driven by [`crate::sched::scaler::PoolScaler`].
//! - [`pick_victims`]: the `count` first ready workers in `shrinkStrategy` order, for the
//!   [`LegacyScaler`] and [`crate::sched::ema::EmaScaler`] [`ScaleAction::Drain`] counts.
//!
//! Victim order ([`victim_order`]), over ready workers only, every tie broken down to the slab
//! key so the result is deterministic:
//!
//! | strategy | order | then | then |
//! |---|---|---|---|
//! | `LCC` | fewest in flight | idle longest (earliest `last_active`) | newest (latest `started_at`) |
//! | `FIFO` | oldest `started_at` | key | |
//! | `FILO` | newest `started_at` | key | |
//!
//! Noslate breaks LCC ties by credential, a random UUID. Ours drains the worker idle longest
//! first, which least-request-count dispatch (earliest-listed wins ties) tends to leave cold,
//! and among equals the newest one, keeping the workers that have been warm longest.

use super::{ScaleAction, ScalerInput};
use crate::config::ShrinkStrategy;
use crate::ids::WorkerKey;
use crate::turf::worker::WorkerState;
use std::cmp::{Ordering, Reverse};
use std::time::{Duration, Instant};

/// Noslate's legacy shrink water level: at or below it a poll is "redundant".
pub const LEGACY_SHRINK_WATER_LEVEL: f64 = 0.6;
/// Noslate's legacy expand water level: at or above it the function grows.
pub const LEGACY_EXPAND_WATER_LEVEL: f64 = 0.8;

/// What scale-down needs to know about one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// The worker.
    pub key: WorkerKey,
    /// Its state; only `Ready` workers are ever chosen or counted for the reservation.
    pub state: WorkerState,
    /// Requests in flight on it.
    pub active: usize,
    /// When it was launched (Noslate's `registerTime`).
    pub started_at: Instant,
    /// When its last request ended, or when it became ready if it never served one.
    pub last_active: Instant,
}

impl WorkerSnapshot {
    fn is_ready(&self) -> bool {
        self.state == WorkerState::Ready
    }

    /// Whether it is idle at `now` for `idle_after` (module docs).
    pub fn is_idle(&self, idle_after: Duration, now: Instant) -> bool {
        self.is_ready()
            && self.active == 0
            && now.saturating_duration_since(self.last_active) >= idle_after
    }
}

/// Compares two workers by victim preference under `strategy` (`Less`: drained first).
fn compare(a: &WorkerSnapshot, b: &WorkerSnapshot, strategy: ShrinkStrategy) -> Ordering {
    match strategy {
        ShrinkStrategy::Lcc => (a.active, a.last_active, Reverse(a.started_at), a.key).cmp(&(
            b.active,
            b.last_active,
            Reverse(b.started_at),
            b.key,
        )),
        ShrinkStrategy::Fifo => (a.started_at, a.key).cmp(&(b.started_at, b.key)),
        ShrinkStrategy::Filo => (Reverse(a.started_at), a.key).cmp(&(Reverse(b.started_at), b.key)),
    }
}

/// Every ready worker, in the order `strategy` drains them (module docs).
pub fn victim_order(workers: &[WorkerSnapshot], strategy: ShrinkStrategy) -> Vec<WorkerKey> {
    let mut ready: Vec<&WorkerSnapshot> = workers.iter().filter(|w| w.is_ready()).collect();
    ready.sort_by(|a, b| compare(a, b, strategy));
    ready.into_iter().map(|w| w.key).collect()
}

/// The first `count` ready workers in `strategy` order: the victims of a
/// [`ScaleAction::Drain`]`(count)`.
pub fn pick_victims(
    workers: &[WorkerSnapshot],
    count: usize,
    strategy: ShrinkStrategy,
) -> Vec<WorkerKey> {
    let mut order = victim_order(workers, strategy);
    order.truncate(count);
    order
}

/// Idle ready workers to drain at `now`, in `strategy` order, leaving at least `reservation`
/// ready workers.
pub fn idle_victims(
    workers: &[WorkerSnapshot],
    reservation: usize,
    idle_after: Duration,
    strategy: ShrinkStrategy,
    now: Instant,
) -> Vec<WorkerKey> {
    let ready = workers.iter().filter(|w| w.is_ready()).count();
    let removable = ready.saturating_sub(reservation);
    if removable == 0 {
        return Vec::new();
    }
    let mut idle: Vec<&WorkerSnapshot> = workers
        .iter()
        .filter(|w| w.is_idle(idle_after, now))
        .collect();
    idle.sort_by(|a, b| compare(a, b, strategy));
    idle.into_iter().take(removable).map(|w| w.key).collect()
}

/// When [`idle_victims`] may next find a victim, for a timer: the earliest instant an idle
/// ready worker reaches `idle_after`. `None` when no worker is idle or the ready workers do not
/// exceed the reservation (a request ending or a worker becoming ready changes that; check
/// again then). The instant may be in the past: check at once.
pub fn next_idle_deadline(
    workers: &[WorkerSnapshot],
    reservation: usize,
    idle_after: Duration,
) -> Option<Instant> {
    let ready = workers.iter().filter(|w| w.is_ready()).count();
    if ready <= reservation {
        return None;
    }
    workers
        .iter()
        .filter(|w| w.is_ready() && w.active == 0)
        .map(|w| {
            w.last_active
                .checked_add(idle_after)
                .unwrap_or(w.last_active)
        })
        .min()
}

/// Noslate's legacy water-level scaler, one per function, evaluated on every poll
/// (`controlPlane.workerTrafficStatsPullingMs`).
///
/// `waterLevel = active requests / (maxActivateRequests × ready)`.
/// - At or above [`LEGACY_EXPAND_WATER_LEVEL`]: grow so that the load would sit at
///   `capacityScalingStage`: `⌈(active / stage − capacity) / maxActivateRequests⌉` more,
///   within `replicaCountLimit`, net of starting workers.
/// - At or below [`LEGACY_SHRINK_WATER_LEVEL`] with more ready workers than the reservation
///   (but not the last worker while it serves), the poll is redundant. After
///   `workerRedundantVictimSpareTimes` consecutive redundant polls, drain
///   `⌊(capacity − active / stage) / maxActivateRequests⌋`, never below the reservation, and
///   start counting again.
/// - Any other poll resets the count. So does one with queued requests or starting workers
///   (ours: that demand is not in the water level yet).
/// - Without ready workers nothing is decided; the reservation is always topped up.
///
/// Where this differs from Noslate, on purpose:
/// - Growth is net of the workers already starting. Noslate launches the same shortfall again
///   on every poll until the earlier launches are ready, and only its launcher's replica check
///   stops the excess; with slow starts it over-launches up to `replicaCountLimit`.
/// - The reservation floor counts starting workers too (Noslate counts only active ones, so a
///   reservation still starting is launched again).
/// - The count lives as long as the function. Noslate keeps it on a broker it deletes when
///   the function has no worker, so a function that scales to zero starts counting afresh.
#[derive(Debug, Clone, Default)]
pub struct LegacyScaler {
    redundant_times: u32,
}

impl LegacyScaler {
    /// A scaler with no redundant polls counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consecutive redundant polls so far (Noslate's `redundantTimes`, for stats).
    pub fn redundant_times(&self) -> u32 {
        self.redundant_times
    }

    /// One poll. `spare_times` is `controlPlane.workerRedundantVictimSpareTimes` (0 is taken
    /// as 1) and `scaling_stage` is `controlPlane.capacityScalingStage` (in (0, 1]).
    pub fn evaluate(
        &mut self,
        input: ScalerInput,
        spare_times: u32,
        scaling_stage: f64,
    ) -> ScaleAction {
        let action = self.water_level_action(input, spare_times, scaling_stage);
        input.with_reservation_floor(action)
    }

    fn water_level_action(
        &mut self,
        input: ScalerInput,
        spare_times: u32,
        scaling_stage: f64,
    ) -> ScaleAction {
        if input.ready == 0 {
            return ScaleAction::Hold;
        }
        let max_active = input.max_active.max(1) as f64;
        let stage = if scaling_stage > 0.0 {
            scaling_stage
        } else {
            1.0
        };
        let active = input.active_requests as f64;
        let capacity = max_active * input.ready as f64;
        let water_level = active / capacity;
        let redundant = water_level <= LEGACY_SHRINK_WATER_LEVEL
            && input.ready > input.reservation
            && !(input.ready == 1 && input.active_requests > 0)
            && input.queued == 0
            && input.starting == 0;
        if redundant {
            self.redundant_times = self.redundant_times.saturating_add(1);
            if self.redundant_times < spare_times.max(1) {
                return ScaleAction::Hold;
            }
            self.redundant_times = 0;
            let surplus = ((capacity - active / stage) / max_active).floor().max(0.0) as usize;
            let drain = surplus.min(input.ready - input.reservation);
            return if drain > 0 {
                ScaleAction::Drain(drain)
            } else {
                ScaleAction::Hold
            };
        }
        self.redundant_times = 0;
        if water_level < LEGACY_EXPAND_WATER_LEVEL {
            return ScaleAction::Hold;
        }
        let more = ((active / stage - capacity) / max_active).ceil().max(0.0) as usize;
        let target = input.ready.saturating_add(more).min(input.replica_limit);
        match target.saturating_sub(input.alive()) {
            0 => ScaleAction::Hold,
            n => ScaleAction::Launch(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(idx: u32) -> WorkerKey {
        WorkerKey(crate::reactor::slab::Key { idx, generation: 0 })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A ready worker: key, in flight, started at t0 + `started` ms, last active at
    /// t0 + `last` ms.
    fn w(t0: Instant, idx: u32, active: usize, started: u64, last: u64) -> WorkerSnapshot {
        WorkerSnapshot {
            key: key(idx),
            state: WorkerState::Ready,
            active,
            started_at: t0 + ms(started),
            last_active: t0 + ms(last),
        }
    }

    fn idx(keys: &[WorkerKey]) -> Vec<u32> {
        keys.iter().map(|k| k.0.idx).collect()
    }

    #[test]
    fn only_ready_workers_are_ordered() {
        let t0 = Instant::now();
        let mut workers = vec![w(t0, 0, 0, 0, 0)];
        for (i, state) in [
            WorkerState::Starting,
            WorkerState::Initializing,
            WorkerState::Draining,
            WorkerState::Stopping,
            WorkerState::Exited,
        ]
        .into_iter()
        .enumerate()
        {
            let mut x = w(t0, i as u32 + 1, 0, 0, 0);
            x.state = state;
            workers.push(x);
        }
        for s in [
            ShrinkStrategy::Lcc,
            ShrinkStrategy::Fifo,
            ShrinkStrategy::Filo,
        ] {
            assert_eq!(idx(&victim_order(&workers, s)), [0], "{s:?}");
        }
    }

    #[test]
    fn lcc_orders_by_concurrency_then_idleness_then_newest_then_key() {
        let t0 = Instant::now();
        let workers = [
            w(t0, 0, 2, 0, 0),
            w(t0, 1, 0, 10, 50),
            w(t0, 2, 1, 0, 0),
            w(t0, 3, 0, 10, 20), // idle longer than 1
            w(t0, 4, 0, 30, 20), // same idleness as 3, newer
            w(t0, 5, 0, 30, 20), // full tie with 4: key decides
        ];
        assert_eq!(
            idx(&victim_order(&workers, ShrinkStrategy::Lcc)),
            [4, 5, 3, 1, 2, 0]
        );
    }

    #[test]
    fn fifo_and_filo_order_by_start_then_key() {
        let t0 = Instant::now();
        let workers = [
            w(t0, 3, 0, 20, 0),
            w(t0, 1, 5, 10, 0),
            w(t0, 2, 0, 20, 0),
            w(t0, 0, 0, 30, 0),
        ];
        assert_eq!(
            idx(&victim_order(&workers, ShrinkStrategy::Fifo)),
            [1, 2, 3, 0]
        );
        assert_eq!(
            idx(&victim_order(&workers, ShrinkStrategy::Filo)),
            [0, 2, 3, 1]
        );
    }

    #[test]
    fn noslate_down_scaling_cases_two_workers_one_idle() {
        // e2e/down_scaling.test.ts: an older busy worker and a newer idle one.
        let t0 = Instant::now();
        let workers = [w(t0, 0, 1, 0, 0), w(t0, 1, 0, 100, 100)];
        assert_eq!(
            idx(&pick_victims(&workers, 1, ShrinkStrategy::Lcc)),
            [1],
            "keeps the busy"
        );
        assert_eq!(
            idx(&pick_victims(&workers, 1, ShrinkStrategy::Filo)),
            [1],
            "keeps the older"
        );
        assert_eq!(
            idx(&pick_victims(&workers, 1, ShrinkStrategy::Fifo)),
            [0],
            "keeps the newer"
        );
        assert_eq!(pick_victims(&workers, 0, ShrinkStrategy::Lcc), []);
        assert_eq!(idx(&pick_victims(&workers, 9, ShrinkStrategy::Lcc)), [1, 0]);
    }

    #[test]
    fn the_order_does_not_depend_on_the_input_order() {
        let t0 = Instant::now();
        let base = [
            w(t0, 0, 1, 0, 5),
            w(t0, 1, 0, 0, 5),
            w(t0, 2, 0, 5, 5),
            w(t0, 3, 1, 5, 0),
            w(t0, 4, 0, 0, 0),
        ];
        for s in [
            ShrinkStrategy::Lcc,
            ShrinkStrategy::Fifo,
            ShrinkStrategy::Filo,
        ] {
            let want = victim_order(&base, s);
            // Every rotation and the reversal.
            for r in 0..base.len() {
                let mut v = base.to_vec();
                v.rotate_left(r);
                assert_eq!(victim_order(&v, s), want, "{s:?} rotation {r}");
                v.reverse();
                assert_eq!(victim_order(&v, s), want, "{s:?} reversed rotation {r}");
            }
        }
    }

    #[test]
    fn idle_means_nothing_in_flight_for_the_whole_threshold() {
        let t0 = Instant::now();
        let idle_after = ms(1000);
        let worker = w(t0, 0, 0, 0, 500);
        assert!(!worker.is_idle(idle_after, t0 + ms(1499)));
        assert!(worker.is_idle(idle_after, t0 + ms(1500)));
        let busy = w(t0, 0, 1, 0, 0);
        assert!(!busy.is_idle(idle_after, t0 + ms(9999)));
        let mut draining = worker;
        draining.state = WorkerState::Draining;
        assert!(!draining.is_idle(idle_after, t0 + ms(9999)));
    }

    #[test]
    fn idle_victims_respect_the_reservation_and_the_strategy() {
        let t0 = Instant::now();
        let idle_after = ms(100);
        let now = t0 + ms(1000);
        let workers = [
            w(t0, 0, 0, 0, 0),    // idle, oldest
            w(t0, 1, 0, 10, 800), // idle, started 10
            w(t0, 2, 0, 20, 950), // not idle long enough
            w(t0, 3, 3, 30, 0),   // busy
            w(t0, 4, 0, 40, 500), // idle, newest
        ];
        // Five ready workers; three idle.
        for (reservation, strategy, want) in [
            (0, ShrinkStrategy::Lcc, vec![0, 4, 1]),
            (0, ShrinkStrategy::Fifo, vec![0, 1, 4]),
            (0, ShrinkStrategy::Filo, vec![4, 1, 0]),
            (2, ShrinkStrategy::Lcc, vec![0, 4, 1]),
            (3, ShrinkStrategy::Lcc, vec![0, 4]),
            (3, ShrinkStrategy::Fifo, vec![0, 1]),
            (3, ShrinkStrategy::Filo, vec![4, 1]),
            (4, ShrinkStrategy::Filo, vec![4]),
            (5, ShrinkStrategy::Lcc, vec![]),
            (9, ShrinkStrategy::Lcc, vec![]),
        ] {
            assert_eq!(
                idx(&idle_victims(
                    &workers,
                    reservation,
                    idle_after,
                    strategy,
                    now
                )),
                want,
                "reservation {reservation} {strategy:?}"
            );
        }
    }

    #[test]
    fn only_ready_workers_count_for_the_reservation() {
        let t0 = Instant::now();
        let mut starting = w(t0, 1, 0, 0, 0);
        starting.state = WorkerState::Starting;
        let mut draining = w(t0, 2, 0, 0, 0);
        draining.state = WorkerState::Draining;
        let workers = [w(t0, 0, 0, 0, 0), starting, draining];
        let now = t0 + ms(10_000);
        assert_eq!(
            idle_victims(&workers, 1, ms(1), ShrinkStrategy::Lcc, now),
            [],
            "one ready worker, reservation 1"
        );
        assert_eq!(
            idx(&idle_victims(&workers, 0, ms(1), ShrinkStrategy::Lcc, now)),
            [0]
        );
    }

    #[test]
    fn next_idle_deadline_is_the_earliest_idle_expiry() {
        let t0 = Instant::now();
        let workers = [w(t0, 0, 0, 0, 300), w(t0, 1, 0, 0, 200), w(t0, 2, 2, 0, 0)];
        assert_eq!(next_idle_deadline(&workers, 0, ms(100)), Some(t0 + ms(300)));
        assert_eq!(next_idle_deadline(&workers, 2, ms(100)), Some(t0 + ms(300)));
        assert_eq!(
            next_idle_deadline(&workers, 3, ms(100)),
            None,
            "at the reservation"
        );
        assert_eq!(
            next_idle_deadline(&workers[2..], 0, ms(100)),
            None,
            "all busy"
        );
    }

    fn poll(ready: usize, active_requests: usize) -> ScalerInput {
        ScalerInput {
            ready,
            starting: 0,
            queued: 0,
            active_requests,
            max_active: 10,
            reservation: 0,
            replica_limit: 10,
        }
    }

    #[test]
    fn legacy_shrinks_after_six_consecutive_low_polls() {
        let mut s = LegacyScaler::new();
        // 4 workers × 10 = 40; 10 active = 25 %.
        for i in 1..6 {
            assert_eq!(s.evaluate(poll(4, 10), 6, 0.7), ScaleAction::Hold);
            assert_eq!(s.redundant_times(), i);
        }
        // ⌊(40 − 10 / 0.7) / 10⌋ = ⌊2.57⌋ = 2.
        assert_eq!(s.evaluate(poll(4, 10), 6, 0.7), ScaleAction::Drain(2));
        assert_eq!(s.redundant_times(), 0, "counting starts again");
    }

    #[test]
    fn legacy_low_polls_must_be_consecutive() {
        let mut s = LegacyScaler::new();
        for _ in 0..5 {
            s.evaluate(poll(4, 10), 6, 0.7);
        }
        // 70 %: neither low nor high, resets.
        assert_eq!(s.evaluate(poll(4, 28), 6, 0.7), ScaleAction::Hold);
        assert_eq!(s.redundant_times(), 0);
        for _ in 0..5 {
            assert_eq!(s.evaluate(poll(4, 10), 6, 0.7), ScaleAction::Hold);
        }
        // Queued requests or starting workers reset it too.
        let mut queued = poll(4, 10);
        queued.queued = 1;
        assert_eq!(s.evaluate(queued, 6, 0.7), ScaleAction::Hold);
        assert_eq!(s.redundant_times(), 0);
        let mut starting = poll(4, 10);
        starting.starting = 1;
        s.evaluate(starting, 6, 0.7);
        assert_eq!(s.redundant_times(), 0);
    }

    #[test]
    fn legacy_shrink_keeps_the_reservation_and_a_busy_last_worker() {
        let mut s = LegacyScaler::new();
        let mut p = poll(5, 0);
        p.reservation = 2;
        assert_eq!(
            s.evaluate(p, 1, 0.7),
            ScaleAction::Drain(3),
            "⌊50/10⌋ = 5, clamped"
        );
        p.ready = 2;
        assert_eq!(
            s.evaluate(p, 1, 0.7),
            ScaleAction::Hold,
            "at the reservation"
        );
        assert_eq!(s.redundant_times(), 0);
        // The last worker, serving: not redundant.
        assert_eq!(s.evaluate(poll(1, 1), 1, 0.7), ScaleAction::Hold);
        assert_eq!(s.redundant_times(), 0);
        // The last worker, idle: goes.
        assert_eq!(s.evaluate(poll(1, 0), 1, 0.7), ScaleAction::Drain(1));
    }

    #[test]
    fn legacy_shrink_boundary_is_sixty_percent_inclusive() {
        let mut s = LegacyScaler::new();
        s.evaluate(poll(5, 30), 2, 0.7); // exactly 60 %
        assert_eq!(s.redundant_times(), 1);
        // ⌊(50 − 30 / 0.7) / 10⌋ = ⌊0.71⌋ = 0: nothing to drain, counter restarts.
        assert_eq!(s.evaluate(poll(5, 30), 2, 0.7), ScaleAction::Hold);
        assert_eq!(s.redundant_times(), 0);
        s.evaluate(poll(5, 31), 2, 0.7);
        assert_eq!(s.redundant_times(), 0, "62 % is not low");
    }

    #[test]
    fn legacy_expands_at_eighty_percent_to_the_scaling_stage() {
        let mut s = LegacyScaler::new();
        assert_eq!(s.evaluate(poll(1, 7), 6, 0.7), ScaleAction::Hold, "70 %");
        // 80 %: ⌈(8 / 0.7 − 10) / 10⌉ = ⌈0.14⌉ = 1.
        assert_eq!(s.evaluate(poll(1, 8), 6, 0.7), ScaleAction::Launch(1));
        // 100 % on 4: ⌈(40 / 0.7 − 40) / 10⌉ = ⌈1.71⌉ = 2.
        assert_eq!(s.evaluate(poll(4, 40), 6, 0.7), ScaleAction::Launch(2));
        // Capped by the replica limit, net of starting workers.
        let mut p = poll(4, 40);
        p.replica_limit = 5;
        assert_eq!(s.evaluate(p, 6, 0.7), ScaleAction::Launch(1));
        p.starting = 1;
        assert_eq!(s.evaluate(p, 6, 0.7), ScaleAction::Hold);
        p.replica_limit = 4;
        p.starting = 0;
        assert_eq!(s.evaluate(p, 6, 0.7), ScaleAction::Hold);
    }

    #[test]
    fn legacy_scaling_contrast_burst_on_one_worker() {
        // scaling_contrast_legacy: maxActivateRequests 1, 10 requests counted on 1 worker:
        // ⌈(10 / 0.7 − 1) / 1⌉ = 14, capped at the replica limit 10: 9 more.
        let mut s = LegacyScaler::new();
        let mut p = poll(1, 10);
        p.max_active = 1;
        assert_eq!(s.evaluate(p, 6, 0.7), ScaleAction::Launch(9));
    }

    #[test]
    fn legacy_without_ready_workers_only_tops_up_the_reservation() {
        let mut s = LegacyScaler::new();
        assert_eq!(s.evaluate(poll(0, 0), 1, 0.7), ScaleAction::Hold);
        let mut p = poll(0, 0);
        p.reservation = 2;
        p.starting = 1;
        assert_eq!(s.evaluate(p, 1, 0.7), ScaleAction::Launch(1));
        // The floor also raises a smaller launch.
        let mut p = poll(1, 10);
        p.reservation = 4;
        assert_eq!(s.evaluate(p, 6, 0.7), ScaleAction::Launch(3));
    }

    #[test]
    fn legacy_odd_parameters_are_tamed() {
        let mut s = LegacyScaler::new();
        // spare times 0 acts as 1; a stage of 0 acts as 1.
        assert_eq!(s.evaluate(poll(3, 0), 0, 0.0), ScaleAction::Drain(3));
        // A small stage makes the "surplus" negative: no drain and no growth.
        assert_eq!(s.evaluate(poll(2, 10), 1, 0.2), ScaleAction::Hold);
        // maxActivateRequests 0 acts as 1.
        let mut p = poll(1, 1);
        p.max_active = 0;
        assert_eq!(s.evaluate(p, 1, 0.7), ScaleAction::Launch(1));
    }
}
