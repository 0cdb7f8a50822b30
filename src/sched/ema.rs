//! The EMA concurrency scaler (`controlPlane.useEmaScaling`; Noslate's `ema_concurrency.ts` and
//! `evaluateWaterLevelByEMAConcurrency`), and the concurrency statistics that feed it
//! (`worker.concurrencyStatsMode`).
//!
//! On every scaling tick (`controlPlane.workerTrafficStatsPullingMs`, 1 s with EMA):
//!
//! 1. [`ConcurrencyMeter::sample`] turns the function's request count into one concurrency
//!    sample: `instant` (now), `periodic_max` (highest since the last tick) or `periodic_avg`
//!    (time-weighted mean since the last tick; Noslate estimates it as mean RT × QPS).
//! 2. [`EmaConcurrency::record`] stores the sample in a sliding window of
//!    `concurrencySlidingBucketCount` buckets spanning `concurrencySlidingWindowSize`: the
//!    current bucket is overwritten, buckets skipped since the previous sample are cleared (all
//!    of them after a gap of a whole window), and
//!    `ema = α · mean(buckets) + (1 − α) · ema`, with values below `precisionZeroThreshold`
//!    taken as 0.
//! 3. [`EmaScaler::decide`] compares `waterLevel = ema / (maxActivateRequests × ready)` with
//!    the thresholds; `required = ⌈ema / scaleFactor / maxActivateRequests⌉`:
//!    - above `concurrencyExpandThreshold` (or below the reservation), outside the
//!      `expandCooldown`: grow to `max(required, reservation)`;
//!    - below `concurrencyShrinkThreshold` with more ready workers than required, outside the
//!      `shrinkCooldown`: drain down to `max(required, reservation)`, but keep the last worker
//!      while the EMA is above 0.
//!
//! With `shrinkCooldownOnStartup` the scaler starts inside a shrink cooldown.
//!
//! Where this differs from Noslate, on purpose:
//! - Bucket positions count from the scaler's creation and the skipped buckets are exactly the
//!   ones between two samples (Noslate derives them from the wall clock and may clear one
//!   bucket too many).
//! - Starting workers count: growth is net of them and the target is capped at
//!   `replicaCountLimit` (Noslate over-launches and lets the launcher refuse).
//! - No shrinking while requests are queued or workers are starting: that demand has not
//!   reached the EMA yet.
//! - A cooldown restarts only when workers are actually launched or drained.
//! - The startup cooldown lasts one `shrinkCooldown` (Noslate sets the last shrink to
//!   `now + shrinkCooldown`, i.e. two).
//! - The history lives as long as the scaler, which the loop keeps per function; Noslate loses
//!   it whenever a function scales to zero.

use super::{ScaleAction, ScalerInput};
use crate::config::{ConcurrencyStatsMode, EmaSettings};
use std::time::{Duration, Instant};

/// Counts a function's requests in flight (admitted, not yet ended: queued or running) and
/// turns them into one sample per scaling tick. Rate-limited or otherwise refused requests must
/// never be counted.
#[derive(Debug, Clone)]
pub struct ConcurrencyMeter {
    current: usize,
    /// The highest count since the last sample.
    peak: usize,
    /// ∫ count dt since the last sample, in count·nanoseconds.
    area: f64,
    last_change: Instant,
    period_start: Instant,
}

impl ConcurrencyMeter {
    /// A meter at 0, its first period starting at `now`.
    pub fn new(now: Instant) -> Self {
        ConcurrencyMeter {
            current: 0,
            peak: 0,
            area: 0.0,
            last_change: now,
            period_start: now,
        }
    }

    /// A request was admitted (queued or dispatched).
    pub fn start(&mut self, now: Instant) {
        self.integrate(now);
        self.current = self.current.saturating_add(1);
        self.peak = self.peak.max(self.current);
    }

    /// An admitted request ended (answered, failed, timed out or cancelled).
    pub fn finish(&mut self, now: Instant) {
        self.integrate(now);
        self.current = self.current.saturating_sub(1);
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The sample for this tick in `mode`, then a new period starts at `now`. A period of zero
    /// length averages to the current count.
    pub fn sample(&mut self, mode: ConcurrencyStatsMode, now: Instant) -> f64 {
        self.integrate(now);
        let span = now.saturating_duration_since(self.period_start).as_nanos() as f64;
        let value = match mode {
            ConcurrencyStatsMode::Instant => self.current as f64,
            ConcurrencyStatsMode::PeriodicMax => self.peak as f64,
            ConcurrencyStatsMode::PeriodicAvg if span > 0.0 => self.area / span,
            ConcurrencyStatsMode::PeriodicAvg => self.current as f64,
        };
        self.peak = self.current;
        self.area = 0.0;
        self.period_start = now;
        value
    }

    fn integrate(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_change).as_nanos() as f64;
        self.area += self.current as f64 * dt;
        if now > self.last_change {
            self.last_change = now;
        }
    }
}

/// Noslate's exponential moving average of a function's concurrency over a bucketed sliding
/// window.
#[derive(Debug, Clone)]
pub struct EmaConcurrency {
    origin: Instant,
    window: Duration,
    buckets: Vec<f64>,
    /// The bucket number (counted from `origin`) of the latest sample.
    last_bucket: Option<u128>,
    value: f64,
}

impl EmaConcurrency {
    /// An empty window (EMA 0); bucket boundaries are counted from `origin`.
    pub fn new(settings: &EmaSettings, origin: Instant) -> Self {
        let (window, count) = geometry(settings);
        EmaConcurrency {
            origin,
            window,
            buckets: vec![0.0; count],
            last_bucket: None,
            value: 0.0,
        }
    }

    /// The current EMA.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Records one concurrency sample taken at `now` and updates the EMA. The settings are read
    /// live; a changed window size or bucket count empties the window but keeps the EMA.
    pub fn record(&mut self, concurrency: f64, settings: &EmaSettings, now: Instant) {
        let (window, count) = geometry(settings);
        if window != self.window || count != self.buckets.len() {
            self.window = window;
            self.buckets = vec![0.0; count];
            self.last_bucket = None;
        }
        let bucket_ns = (window.as_nanos() / count as u128).max(1);
        let bucket = now.saturating_duration_since(self.origin).as_nanos() / bucket_ns;
        if let Some(last) = self.last_bucket {
            let gap = bucket.saturating_sub(last);
            if gap >= count as u128 {
                self.buckets.fill(0.0);
            } else {
                for skipped in last + 1..bucket {
                    self.buckets[(skipped % count as u128) as usize] = 0.0;
                }
            }
        }
        let concurrency = if concurrency.is_finite() {
            concurrency.max(0.0)
        } else {
            0.0
        };
        self.buckets[(bucket % count as u128) as usize] = concurrency;
        let mean = self.buckets.iter().sum::<f64>() / count as f64;
        let alpha = settings.ema_concurrency_alpha.clamp(0.0, 1.0);
        self.value = alpha * mean + (1.0 - alpha) * self.value;
        if self.value < settings.precision_zero_threshold {
            self.value = 0.0;
        }
        self.last_bucket = Some(self.last_bucket.map_or(bucket, |last| last.max(bucket)));
    }
}

/// Window length and bucket count, each at least 1.
fn geometry(settings: &EmaSettings) -> (Duration, usize) {
    (
        Duration::from_millis(settings.concurrency_sliding_window_size_ms.max(1)),
        settings.concurrency_sliding_bucket_count.max(1) as usize,
    )
}

/// What the EMA scaler decided on one tick, with the numbers behind it (for logs and stats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaDecision {
    /// The EMA concurrency.
    pub ema: f64,
    /// `ema / (maxActivateRequests × ready)`; 0 without ready workers.
    pub water_level: f64,
    /// `⌈ema / scaleFactor / maxActivateRequests⌉`.
    pub required: usize,
    /// Workers (starting + ready) the pool will have once `action` is applied.
    pub desired: usize,
    /// What to do.
    pub action: ScaleAction,
}

/// The EMA scaler of one function: the EMA and the two cooldowns.
#[derive(Debug, Clone)]
pub struct EmaScaler {
    ema: EmaConcurrency,
    last_expand: Option<Instant>,
    last_shrink: Option<Instant>,
}

impl EmaScaler {
    /// A scaler for a function that appears at `now`; with `shrinkCooldownOnStartup` it
    /// starts inside a shrink cooldown.
    pub fn new(settings: &EmaSettings, now: Instant) -> Self {
        EmaScaler {
            ema: EmaConcurrency::new(settings, now),
            last_expand: None,
            last_shrink: settings.shrink_cooldown_on_startup.then_some(now),
        }
    }

    /// The current EMA concurrency.
    pub fn ema(&self) -> f64 {
        self.ema.value()
    }

    /// Records a concurrency sample (see [`EmaConcurrency::record`]).
    pub fn record(&mut self, concurrency: f64, settings: &EmaSettings, now: Instant) {
        self.ema.record(concurrency, settings, now);
    }

    /// Records `concurrency` and decides: one scaling tick.
    pub fn tick(
        &mut self,
        concurrency: f64,
        input: ScalerInput,
        settings: &EmaSettings,
        now: Instant,
    ) -> EmaDecision {
        self.record(concurrency, settings, now);
        self.decide(input, settings, now)
    }

    /// The scaling decision at `now` from the current EMA (module docs). Without ready workers
    /// the EMA decides nothing (the queue scales from zero); the reservation is always topped
    /// up, cooldown or not.
    pub fn decide(
        &mut self,
        input: ScalerInput,
        settings: &EmaSettings,
        now: Instant,
    ) -> EmaDecision {
        let ema = self.ema.value();
        let max_active = input.max_active.max(1) as f64;
        let scale_factor = if settings.scale_factor > 0.0 {
            settings.scale_factor
        } else {
            1.0
        };
        let required = (ema / scale_factor / max_active).ceil() as usize;
        let water_level = if input.ready > 0 {
            ema / (max_active * input.ready as f64)
        } else {
            0.0
        };
        let floor = required.max(input.reservation);
        let mut action = ScaleAction::Hold;
        if input.ready > 0 {
            if water_level > settings.concurrency_expand_threshold
                || input.ready < input.reservation
            {
                let cooling = cooling(self.last_expand, settings.expand_cooldown_ms, now);
                let target = floor.min(input.replica_limit);
                let launch = target.saturating_sub(input.alive());
                if !cooling && launch > 0 {
                    action = ScaleAction::Launch(launch);
                    self.last_expand = Some(now);
                }
            } else if water_level < settings.concurrency_shrink_threshold
                && input.ready > required
                && input.queued == 0
                && input.starting == 0
            {
                let cooling = cooling(self.last_shrink, settings.shrink_cooldown_ms, now);
                let keep_last = input.ready == 1 && ema > 0.0;
                let drain = input.ready.saturating_sub(floor);
                if !cooling && !keep_last && drain > 0 {
                    action = ScaleAction::Drain(drain);
                    self.last_shrink = Some(now);
                }
            }
        }
        let action = input.with_reservation_floor(action);
        let desired = match action {
            ScaleAction::Hold => input.alive(),
            ScaleAction::Launch(n) => input.alive().saturating_add(n),
            ScaleAction::Drain(n) => input.alive().saturating_sub(n),
        };
        EmaDecision {
            ema,
            water_level,
            required,
            desired,
            action,
        }
    }
}

/// Whether a cooldown of `ms` that started at `since` is still running at `now`.
fn cooling(since: Option<Instant>, ms: u64, now: Instant) -> bool {
    since.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELTA: f64 = 1e-10;

    fn settings() -> EmaSettings {
        EmaSettings {
            concurrency_sliding_window_size_ms: 60_000,
            concurrency_sliding_bucket_count: 6,
            ema_concurrency_alpha: 0.5,
            concurrency_expand_threshold: 0.7,
            concurrency_shrink_threshold: 0.3,
            expand_cooldown_ms: 1_000,
            shrink_cooldown_ms: 60_000,
            scale_factor: 0.5,
            precision_zero_threshold: 0.01,
            shrink_cooldown_on_startup: true,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < DELTA
    }

    // Noslate's lib/__test__/ema_concurrency.test.ts, case by case.

    #[test]
    fn starts_at_zero() {
        let ema = EmaConcurrency::new(&settings(), Instant::now());
        assert_eq!(ema.value(), 0.0);
    }

    #[test]
    fn samples_in_one_bucket_overwrite_it() {
        let t0 = Instant::now();
        let mut ema = EmaConcurrency::new(&settings(), t0);
        ema.record(10.0, &settings(), t0);
        assert!(close(ema.value(), 10.0 / 6.0 * 0.5));
        ema.record(20.0, &settings(), t0 + ms(5_000));
        let want = 0.5 * (20.0 / 6.0) + 0.5 * (10.0 / 6.0 * 0.5);
        assert!(close(ema.value(), want), "{}", ema.value());
    }

    /// Noslate's test expects 20/6 here: at 20 s it clears ⌈20 s / 10 s⌉ = 2 buckets back,
    /// the sample at 0 s included, although that sample is still inside the 60 s window.
    #[test]
    fn a_later_bucket_keeps_earlier_ones_within_the_window() {
        let t0 = Instant::now();
        let mut ema = EmaConcurrency::new(&settings(), t0);
        ema.record(10.0, &settings(), t0);
        ema.record(20.0, &settings(), t0 + ms(20_000));
        // Buckets 10 0 20 0 0 0.
        let want = 0.5 * (30.0 / 6.0) + 0.5 * (10.0 / 6.0 * 0.5);
        assert!(close(ema.value(), want), "{}", ema.value());
    }

    #[test]
    fn a_whole_window_gap_clears_the_buckets_but_not_the_ema() {
        for gap in [60_000, 300_000] {
            let t0 = Instant::now();
            let mut ema = EmaConcurrency::new(&settings(), t0);
            ema.record(10.0, &settings(), t0);
            ema.record(20.0, &settings(), t0 + ms(gap));
            let want = 0.5 * (20.0 / 6.0) + 0.5 * (10.0 / 6.0 * 0.5);
            assert!(close(ema.value(), want), "gap {gap}: {}", ema.value());
        }
    }

    #[test]
    fn decays_to_exactly_zero_with_prolonged_idleness() {
        let t0 = Instant::now();
        let mut ema = EmaConcurrency::new(&settings(), t0);
        ema.record(1.0, &settings(), t0);
        for i in 1..=5 {
            ema.record(0.0, &settings(), t0 + ms(60_000 * i));
        }
        assert_eq!(ema.value(), 0.0);
    }

    #[test]
    fn only_the_skipped_buckets_are_cleared() {
        let t0 = Instant::now();
        let s = settings();
        let mut ema = EmaConcurrency::new(&s, t0);
        ema.record(6.0, &s, t0); // bucket 0
        ema.record(6.0, &s, t0 + ms(10_000)); // bucket 1
        ema.record(6.0, &s, t0 + ms(20_000)); // bucket 2
        // 35 s is bucket 3: nothing skipped; the window holds 6 6 6 6 0 0.
        ema.record(6.0, &s, t0 + ms(35_000));
        assert_eq!(ema.buckets, [6.0, 6.0, 6.0, 6.0, 0.0, 0.0]);
        // 65 s is bucket 6 = slot 0; buckets 4 and 5 were skipped (already 0).
        ema.record(1.0, &s, t0 + ms(65_000));
        assert_eq!(ema.buckets, [1.0, 6.0, 6.0, 6.0, 0.0, 0.0]);
        // 95 s is bucket 9 = slot 3; slots 1 and 2 (buckets 7, 8) are cleared.
        ema.record(2.0, &s, t0 + ms(95_000));
        assert_eq!(ema.buckets, [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn a_changed_geometry_empties_the_window_and_keeps_the_ema() {
        let t0 = Instant::now();
        let mut s = settings();
        let mut ema = EmaConcurrency::new(&s, t0);
        ema.record(12.0, &s, t0);
        let before = ema.value();
        s.concurrency_sliding_bucket_count = 3;
        ema.record(0.0, &s, t0 + ms(1));
        assert_eq!(ema.buckets.len(), 3);
        assert!(close(ema.value(), 0.5 * before));
    }

    #[test]
    fn bad_samples_count_as_zero() {
        let t0 = Instant::now();
        let mut ema = EmaConcurrency::new(&settings(), t0);
        for bad in [f64::NAN, f64::INFINITY, -3.0] {
            ema.record(bad, &settings(), t0);
            assert_eq!(ema.value(), 0.0);
        }
    }

    fn input(ready: usize) -> ScalerInput {
        ScalerInput {
            ready,
            starting: 0,
            queued: 0,
            active_requests: 0,
            max_active: 10,
            reservation: 0,
            replica_limit: 10,
        }
    }

    /// A scaler whose EMA is (about) `ema`: one sample filling the window with alpha 1.
    fn scaler_at(ema: f64, s: &EmaSettings, t0: Instant) -> EmaScaler {
        let mut one = s.clone();
        one.ema_concurrency_alpha = 1.0;
        one.concurrency_sliding_bucket_count = 1;
        let mut scaler = EmaScaler::new(&one, t0);
        scaler.record(ema, &one, t0);
        scaler
    }

    #[test]
    fn expands_above_the_threshold_to_the_scale_factor() {
        let t0 = Instant::now();
        let s = settings();
        let mut sc = scaler_at(8.0, &s, t0);
        // 8 / (10 × 1) = 0.8 > 0.7; required = ⌈8 / 0.5 / 10⌉ = 2.
        let d = sc.decide(input(1), &s, t0);
        assert!(close(d.water_level, 0.8));
        assert_eq!(d.required, 2);
        assert_eq!(d.action, ScaleAction::Launch(1));
        assert_eq!(d.desired, 2);
        // Inside the 1 s expand cooldown nothing more happens.
        assert_eq!(
            sc.decide(input(1), &s, t0 + ms(999)).action,
            ScaleAction::Hold
        );
        assert_eq!(
            sc.decide(input(1), &s, t0 + ms(1000)).action,
            ScaleAction::Launch(1)
        );
    }

    #[test]
    fn expansion_is_net_of_starting_workers_and_capped_by_the_replica_limit() {
        let t0 = Instant::now();
        let s = settings();
        let mut sc = scaler_at(70.0, &s, t0); // required 14
        let mut i = input(2);
        i.starting = 3;
        i.replica_limit = 8;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Launch(3));
        // Starting workers already cover the target: hold, and no cooldown starts.
        let mut sc = scaler_at(20.0, &s, t0); // required 4
        let mut i = input(2);
        i.starting = 2;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Hold);
        i.starting = 1;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Launch(1));
    }

    #[test]
    fn a_scale_factor_above_the_expand_threshold_never_shrinks_when_expanding() {
        let t0 = Instant::now();
        let mut s = settings();
        s.scale_factor = 0.9;
        let mut sc = scaler_at(8.0, &s, t0); // water 0.8 > 0.7, required ⌈0.89⌉ = 1
        assert_eq!(sc.decide(input(1), &s, t0).action, ScaleAction::Hold);
    }

    #[test]
    fn shrinks_below_the_threshold_after_the_startup_cooldown() {
        let t0 = Instant::now();
        let s = settings();
        let mut sc = scaler_at(4.0, &s, t0); // required ⌈0.8⌉ = 1
        // 4 / 40 = 0.1 < 0.3, 4 ready > 1 required, but the startup cooldown runs 60 s.
        assert_eq!(
            sc.decide(input(4), &s, t0 + ms(59_999)).action,
            ScaleAction::Hold
        );
        let d = sc.decide(input(4), &s, t0 + ms(60_000));
        assert_eq!(d.action, ScaleAction::Drain(3));
        assert_eq!(d.desired, 1);
        // The cooldown restarted.
        assert_eq!(
            sc.decide(input(3), &s, t0 + ms(119_999)).action,
            ScaleAction::Hold
        );
        assert_eq!(
            sc.decide(input(3), &s, t0 + ms(120_000)).action,
            ScaleAction::Drain(2)
        );
    }

    #[test]
    fn without_the_startup_cooldown_an_idle_worker_goes_at_once() {
        let t0 = Instant::now();
        let mut s = settings();
        s.shrink_cooldown_on_startup = false;
        let mut sc = EmaScaler::new(&s, t0);
        let d = sc.tick(0.0, input(1), &s, t0);
        assert_eq!(d.action, ScaleAction::Drain(1));
        assert_eq!(d.desired, 0);
    }

    #[test]
    fn keeps_the_last_worker_while_the_ema_is_above_zero() {
        let t0 = Instant::now();
        let mut s = settings();
        s.shrink_cooldown_on_startup = false;
        // Water 0.05, but any EMA above 0 requires one worker, so the last one stays.
        let mut sc = scaler_at(0.5, &s, t0);
        let d = sc.decide(input(1), &s, t0);
        assert_eq!((d.required, d.action), (1, ScaleAction::Hold));
        let mut sc = scaler_at(0.005, &s, t0); // below precision: 0
        assert_eq!(sc.ema(), 0.0);
        assert_eq!(sc.decide(input(1), &s, t0).action, ScaleAction::Drain(1));
    }

    #[test]
    fn never_shrinks_below_the_reservation_and_tops_it_up_in_any_cooldown() {
        let t0 = Instant::now();
        let mut s = settings();
        s.shrink_cooldown_on_startup = false;
        let mut sc = scaler_at(0.0, &s, t0);
        let mut i = input(5);
        i.reservation = 2;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Drain(3));
        // Below the reservation (a crash): launch even inside the expand cooldown, and even
        // without any ready worker.
        let mut i = input(1);
        i.reservation = 3;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Launch(2));
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Launch(2));
        let mut i = input(0);
        i.reservation = 3;
        i.starting = 1;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Launch(2));
    }

    #[test]
    fn no_ready_workers_means_no_ema_decision() {
        let t0 = Instant::now();
        let s = settings();
        let mut sc = scaler_at(50.0, &s, t0);
        let d = sc.decide(input(0), &s, t0);
        assert_eq!(d.action, ScaleAction::Hold);
        assert_eq!(d.water_level, 0.0);
        assert_eq!(d.required, 10);
    }

    #[test]
    fn no_shrinking_while_demand_is_queued_or_starting() {
        let t0 = Instant::now();
        let mut s = settings();
        s.shrink_cooldown_on_startup = false;
        let mut sc = scaler_at(0.0, &s, t0);
        let mut i = input(3);
        i.queued = 1;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Hold);
        i.queued = 0;
        i.starting = 1;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Hold);
        i.starting = 0;
        assert_eq!(sc.decide(i, &s, t0).action, ScaleAction::Drain(3));
    }

    #[test]
    fn between_the_thresholds_nothing_happens() {
        let t0 = Instant::now();
        let mut s = settings();
        s.shrink_cooldown_on_startup = false;
        let mut sc = scaler_at(5.0, &s, t0); // 5 / 10 = 0.5
        assert_eq!(sc.decide(input(1), &s, t0).action, ScaleAction::Hold);
        let mut sc = scaler_at(7.0, &s, t0); // exactly 0.7: not above
        assert_eq!(sc.decide(input(1), &s, t0).action, ScaleAction::Hold);
    }

    #[test]
    fn scaling_contrast_a_burst_of_ten_on_one_worker_adds_one() {
        // Noslate's scaling_contrast_ema: maxActivateRequests 1, a burst of 10 concurrent
        // requests seen for one tick. The EMA over a 6-bucket window with alpha 0.5 is
        // 10/6/2 ≈ 0.83 → required ⌈1.67⌉ = 2 → one more worker.
        let t0 = Instant::now();
        let s = settings();
        let mut sc = EmaScaler::new(&s, t0);
        let mut i = input(1);
        i.max_active = 1;
        let d = sc.tick(10.0, i, &s, t0);
        assert_eq!(d.required, 2);
        assert_eq!(d.action, ScaleAction::Launch(1));
    }

    #[test]
    fn meter_samples_in_each_mode() {
        let t0 = Instant::now();
        let mut m = ConcurrencyMeter::new(t0);
        m.start(t0);
        m.start(t0 + ms(250));
        m.start(t0 + ms(250));
        m.finish(t0 + ms(500));
        m.finish(t0 + ms(750));
        assert_eq!(m.current(), 1);
        let mut max = m.clone();
        let mut avg = m.clone();
        assert_eq!(m.sample(ConcurrencyStatsMode::Instant, t0 + ms(1000)), 1.0);
        assert_eq!(
            max.sample(ConcurrencyStatsMode::PeriodicMax, t0 + ms(1000)),
            3.0
        );
        // 1 × 250 + 3 × 250 + 2 × 250 + 1 × 250 over 1000 ms.
        let a = avg.sample(ConcurrencyStatsMode::PeriodicAvg, t0 + ms(1000));
        assert!(close(a, 1.75), "{a}");
        // The next period starts fresh from the current count.
        assert_eq!(
            max.sample(ConcurrencyStatsMode::PeriodicMax, t0 + ms(2000)),
            1.0
        );
        assert!(close(
            avg.sample(ConcurrencyStatsMode::PeriodicAvg, t0 + ms(2000)),
            1.0
        ));
        assert_eq!(
            avg.sample(ConcurrencyStatsMode::PeriodicAvg, t0 + ms(2000)),
            1.0
        );
        // Finishing more than started does not underflow.
        avg.finish(t0 + ms(2000));
        avg.finish(t0 + ms(2000));
        assert_eq!(avg.current(), 0);
    }
}
