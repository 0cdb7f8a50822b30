//! The scaler that sizes a function's pool between requests (`controlPlane.scaler`): one
//! [`PoolScaler`] per function, which the event loop and the simulation drive the same way.
//!
//! | scaler | decides on | grows | shrinks |
//! |---|---|---|---|
//! | `idle` | the one-second tick ([`PoolScaler::on_tick`]) | never itself | ready workers idle for `worker.idleTimeout` ([`idle_victims`]) |
//! | `waterLevel` | every `controlPlane.workerTrafficStatsPullingMs` ([`PoolScaler::poll`]) | [`LegacyScaler`] | [`LegacyScaler`]'s count, victims by `shrinkStrategy` |
//! | `ema` | every poll | [`EmaScaler`] | [`EmaScaler`]'s count, victims by `shrinkStrategy` |
//!
//! Under every scaler the queue's demand and the reservation floor still launch workers
//! ([`crate::sched::plan::launch_plan`], which also takes the poll's launch), and nothing
//! drains below the reservation.

use super::ema::{ConcurrencyMeter, EmaScaler};
use super::shrink::{LegacyScaler, WorkerSnapshot, idle_victims, pick_victims};
use super::{ScaleAction, ScalerInput};
use crate::config::{ConcurrencyStatsMode, EmaSettings, ScalerKind, ShrinkStrategy};
use crate::ids::WorkerKey;
use std::time::{Duration, Instant};

/// What the scalers read of a function's profile and the system config on a tick or poll.
#[derive(Debug, Clone, Copy)]
pub struct ScalerSettings<'a> {
    /// `worker.shrinkStrategy`: which ready workers go first.
    pub strategy: ShrinkStrategy,
    /// `worker.idleTimeout` (the idle scaler).
    pub idle_after: Duration,
    /// `worker.concurrencyStatsMode` (the EMA scaler's samples).
    pub stats_mode: ConcurrencyStatsMode,
    /// The EMA settings of the function.
    pub ema: &'a EmaSettings,
    /// `controlPlane.workerRedundantVictimSpareTimes` (the water-level scaler).
    pub spare_times: u32,
    /// `controlPlane.capacityScalingStage` (the water-level scaler).
    pub scaling_stage: f64,
}

/// The function's demand and bounds beside its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBounds {
    /// Requests waiting in its queue.
    pub queued: usize,
    /// `worker.maxActivateRequests` (0 is taken as 1).
    pub max_active: usize,
    /// `worker.reservationCount`.
    pub reservation: usize,
    /// `worker.replicaCountLimit`.
    pub replica_limit: usize,
}

/// What a poll decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScalerDecision {
    /// Workers to start: handed to the launch plan, which bounds it again.
    pub launch: usize,
    /// Ready workers to drain, in `shrinkStrategy` order.
    pub drain: Vec<WorkerKey>,
}

/// One function's scaler and its state (module docs).
#[derive(Debug, Clone)]
pub enum PoolScaler {
    /// Idle shrink: no state; the workers' own idle times decide.
    Idle,
    /// Noslate's water level, with its count of consecutive redundant polls.
    WaterLevel(LegacyScaler),
    /// Noslate's EMA concurrency, with its window and cooldowns.
    Ema(EmaScaler),
}

impl PoolScaler {
    /// The scaler of `kind` for a function that appears at `now`.
    pub fn new(kind: ScalerKind, ema: &EmaSettings, now: Instant) -> PoolScaler {
        match kind {
            ScalerKind::Idle => PoolScaler::Idle,
            ScalerKind::WaterLevel => PoolScaler::WaterLevel(LegacyScaler::new()),
            ScalerKind::Ema => PoolScaler::Ema(EmaScaler::new(ema, now)),
        }
    }

    /// Which scaler this is.
    pub fn kind(&self) -> ScalerKind {
        match self {
            PoolScaler::Idle => ScalerKind::Idle,
            PoolScaler::WaterLevel(_) => ScalerKind::WaterLevel,
            PoolScaler::Ema(_) => ScalerKind::Ema,
        }
    }

    /// The one-second tick: the idle scaler's victims (ready workers idle for
    /// `worker.idleTimeout`, above the reservation). The polling scalers drain only on a poll.
    pub fn on_tick(
        &self,
        workers: &[WorkerSnapshot],
        reservation: usize,
        settings: &ScalerSettings<'_>,
        now: Instant,
    ) -> Vec<WorkerKey> {
        match self {
            PoolScaler::Idle => idle_victims(
                workers,
                reservation,
                settings.idle_after,
                settings.strategy,
                now,
            ),
            PoolScaler::WaterLevel(_) | PoolScaler::Ema(_) => Vec::new(),
        }
    }

    /// One poll (`controlPlane.workerTrafficStatsPullingMs`) over the function's `workers`:
    /// the water-level or EMA decision, its drain count turned into victims. The EMA scaler
    /// takes its concurrency sample from `meter` here; the idle scaler decides nothing.
    pub fn poll(
        &mut self,
        workers: &[WorkerSnapshot],
        bounds: PoolBounds,
        meter: &mut ConcurrencyMeter,
        settings: &ScalerSettings<'_>,
        now: Instant,
    ) -> ScalerDecision {
        let input = scaler_input(workers, bounds);
        let action = match self {
            PoolScaler::Idle => ScaleAction::Hold,
            PoolScaler::WaterLevel(scaler) => {
                scaler.evaluate(input, settings.spare_times, settings.scaling_stage)
            }
            PoolScaler::Ema(scaler) => {
                let sample = meter.sample(settings.stats_mode, now);
                scaler.tick(sample, input, settings.ema, now).action
            }
        };
        match action {
            ScaleAction::Hold => ScalerDecision::default(),
            ScaleAction::Launch(n) => ScalerDecision {
                launch: n,
                drain: Vec::new(),
            },
            ScaleAction::Drain(n) => ScalerDecision {
                launch: 0,
                drain: pick_victims(workers, n, settings.strategy),
            },
        }
    }
}

/// The pool as the scalers see it: ready and starting workers from `workers`, the requests in
/// flight on the ready ones, and `bounds`.
pub fn scaler_input(workers: &[WorkerSnapshot], bounds: PoolBounds) -> ScalerInput {
    let ready = || {
        workers
            .iter()
            .filter(|w| w.state == crate::turf::worker::WorkerState::Ready)
    };
    ScalerInput {
        ready: ready().count(),
        starting: workers.iter().filter(|w| w.state.is_starting()).count(),
        queued: bounds.queued,
        active_requests: ready().map(|w| w.active).sum(),
        max_active: bounds.max_active,
        reservation: bounds.reservation,
        replica_limit: bounds.replica_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::slab::Key;
    use crate::turf::worker::WorkerState;

    fn worker(idx: u32, state: WorkerState, active: usize, t0: Instant) -> WorkerSnapshot {
        WorkerSnapshot {
            key: WorkerKey(Key { idx, generation: 0 }),
            state,
            active,
            started_at: t0 + Duration::from_millis(u64::from(idx)),
            last_active: t0,
        }
    }

    fn settings(ema: &EmaSettings) -> ScalerSettings<'_> {
        ScalerSettings {
            strategy: ShrinkStrategy::Lcc,
            idle_after: Duration::from_secs(1),
            stats_mode: ConcurrencyStatsMode::Instant,
            ema,
            spare_times: 2,
            scaling_stage: 0.7,
        }
    }

    fn bounds(reservation: usize) -> PoolBounds {
        PoolBounds {
            queued: 0,
            max_active: 1,
            reservation,
            replica_limit: 10,
        }
    }

    fn keys(keys: &[WorkerKey]) -> Vec<u32> {
        keys.iter().map(|k| k.0.idx).collect()
    }

    #[test]
    fn the_input_counts_ready_and_starting_workers_and_requests_on_ready_ones() {
        let t0 = Instant::now();
        let workers = [
            worker(0, WorkerState::Ready, 2, t0),
            worker(1, WorkerState::Ready, 1, t0),
            worker(2, WorkerState::Starting, 0, t0),
            worker(3, WorkerState::Initializing, 0, t0),
            worker(4, WorkerState::Draining, 5, t0),
        ];
        let input = scaler_input(&workers, bounds(1));
        assert_eq!(
            (input.ready, input.starting, input.active_requests),
            (2, 2, 3)
        );
    }

    #[test]
    fn only_the_idle_scaler_drains_on_the_tick_and_only_the_others_on_a_poll() {
        let t0 = Instant::now();
        let ema = EmaSettings {
            shrink_cooldown_on_startup: false,
            ..EmaSettings::default()
        };
        let s = settings(&ema);
        let idle = [
            worker(0, WorkerState::Ready, 0, t0),
            worker(1, WorkerState::Ready, 0, t0),
        ];
        let later = t0 + Duration::from_secs(5);
        let mut meter = ConcurrencyMeter::new(t0);
        for kind in [ScalerKind::Idle, ScalerKind::WaterLevel, ScalerKind::Ema] {
            let mut scaler = PoolScaler::new(kind, &ema, t0);
            assert_eq!(scaler.kind(), kind);
            let ticked = scaler.on_tick(&idle, 0, &s, later);
            assert_eq!(
                ticked.len(),
                usize::from(kind == ScalerKind::Idle) * 2,
                "{kind:?}"
            );
            let mut drained = Vec::new();
            for _ in 0..2 {
                drained.extend(scaler.poll(&idle, bounds(0), &mut meter, &s, later).drain);
            }
            let want = if kind == ScalerKind::Idle { 0 } else { 2 };
            assert_eq!(drained.len(), want, "{kind:?}");
        }
    }

    #[test]
    fn water_level_grows_to_the_scaling_stage_and_drains_by_strategy_after_spare_polls() {
        let t0 = Instant::now();
        let ema = EmaSettings::default();
        let mut s = settings(&ema);
        let mut scaler = PoolScaler::new(ScalerKind::WaterLevel, &ema, t0);
        let mut meter = ConcurrencyMeter::new(t0);
        // Four workers of one slot each, all busy: ⌈4 / 0.7 − 4⌉ = 2 more.
        let busy: Vec<_> = (0..4)
            .map(|i| worker(i, WorkerState::Ready, 1, t0))
            .collect();
        let d = scaler.poll(&busy, bounds(1), &mut meter, &s, t0);
        assert_eq!(
            d,
            ScalerDecision {
                launch: 2,
                drain: vec![]
            }
        );
        // Six workers, one still busy: two low polls, then ⌊(6 − 1 / 0.7) / 1⌋ = 4 go; the
        // busy one is last in LCC order, so it stays.
        let mut six: Vec<_> = (0..6)
            .map(|i| worker(i, WorkerState::Ready, 0, t0))
            .collect();
        six[0].active = 1;
        assert_eq!(
            scaler.poll(&six, bounds(1), &mut meter, &s, t0),
            ScalerDecision::default()
        );
        let d = scaler.poll(&six, bounds(1), &mut meter, &s, t0);
        assert_eq!(d.launch, 0);
        assert_eq!(d.drain.len(), 4);
        assert!(!keys(&d.drain).contains(&0), "{:?}", keys(&d.drain));
        // FIFO drains the oldest first, busy or not.
        s.strategy = ShrinkStrategy::Fifo;
        scaler.poll(&six, bounds(1), &mut meter, &s, t0);
        let d = scaler.poll(&six, bounds(1), &mut meter, &s, t0);
        assert_eq!(keys(&d.drain), [0, 1, 2, 3]);
    }

    #[test]
    fn ema_samples_the_meter_on_each_poll() {
        let t0 = Instant::now();
        let ema = EmaSettings {
            concurrency_sliding_bucket_count: 1,
            ema_concurrency_alpha: 1.0,
            ..EmaSettings::default()
        };
        let s = settings(&ema);
        let mut scaler = PoolScaler::new(ScalerKind::Ema, &ema, t0);
        let mut meter = ConcurrencyMeter::new(t0);
        for _ in 0..4 {
            meter.start(t0);
        }
        let busy: Vec<_> = (0..4)
            .map(|i| worker(i, WorkerState::Ready, 1, t0))
            .collect();
        // EMA 4, scale factor 0.5: 8 workers wanted.
        let d = scaler.poll(&busy, bounds(0), &mut meter, &s, t0);
        assert_eq!(d.launch, 4);
        let PoolScaler::Ema(inner) = &scaler else {
            panic!("an EMA scaler");
        };
        assert_eq!(inner.ema(), 4.0);
    }
}
