//! The system circuit breaker (`systemCircuitBreaker`, as in Noslate's
//! `circuit_breaker.ts`).
//!
//! Three sub-breakers are checked on a periodic tick (Noslate: every second):
//!
//! | sub-breaker | value | limit |
//! |---|---|---|
//! | [`BreakerLimit::RequestCount`] | in-flight + queued requests, all functions | `requestCountLimit` |
//! | [`BreakerLimit::PendingRequestCount`] | queued requests, all functions | `pendingRequestCountLimit` |
//! | [`BreakerLimit::SystemLoad1`] | the 1-minute load average | `systemLoad1Limit` |
//!
//! A closed sub-breaker opens after [`OPEN_AFTER`] **consecutive** checks strictly above its
//! limit; an open one closes after [`CLOSE_AFTER`] **consecutive** checks strictly below it. A
//! check on the other side (including one exactly at the limit) restarts the count. Noslate
//! never resets its counters, so five over-limit checks spread over an hour open it.
//! Two refinements: a value of 0 counts as below the limit even when the limit is 0 (otherwise
//! such a breaker could never close), and a missing load reading counts as below the limit.
//!
//! The breaker is open while any sub-breaker is open. While open, invocations are answered with
//! 503 [`BREAKER_ERROR_TYPE`] and [`Trip::message`], and `/ready` is 503 with the same reason.
//! Limits are read at each check, so a changed system configuration applies at the next tick.

use crate::config::CircuitBreakerConfig;
use std::fmt;

/// Consecutive over-limit checks that open a sub-breaker (Noslate: 5).
pub const OPEN_AFTER: u32 = 5;
/// Consecutive healthy checks that close an open sub-breaker (Noslate: 3).
pub const CLOSE_AFTER: u32 = 3;
/// The `errorType` of invocations refused while the breaker is open.
pub const BREAKER_ERROR_TYPE: &str = "SystemCircuitBreakerOpen";

/// One check's readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Invocations dispatched to a worker and not finished, over all functions.
    pub active: usize,
    /// Invocations waiting in a queue, over all functions.
    pub pending: usize,
    /// The 1-minute load average, if it could be read.
    pub load1: Option<f64>,
}

/// Which limit a sub-breaker watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerLimit {
    /// `requestCountLimit`: active + pending.
    RequestCount,
    /// `pendingRequestCountLimit`: pending.
    PendingRequestCount,
    /// `systemLoad1Limit`: the load average.
    SystemLoad1,
}

impl BreakerLimit {
    /// All of them, in the order they are reported.
    pub const ALL: [BreakerLimit; 3] = [
        BreakerLimit::RequestCount,
        BreakerLimit::PendingRequestCount,
        BreakerLimit::SystemLoad1,
    ];

    /// Noslate's sub-breaker name (`request-count`, `pending-request-count`, `system-load`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerLimit::RequestCount => "request-count",
            BreakerLimit::PendingRequestCount => "pending-request-count",
            BreakerLimit::SystemLoad1 => "system-load",
        }
    }

    /// The configuration key of the limit.
    pub fn config_key(self) -> &'static str {
        match self {
            BreakerLimit::RequestCount => "systemCircuitBreaker.requestCountLimit",
            BreakerLimit::PendingRequestCount => "systemCircuitBreaker.pendingRequestCountLimit",
            BreakerLimit::SystemLoad1 => "systemCircuitBreaker.systemLoad1Limit",
        }
    }

    /// What is measured, for messages.
    fn what(self) -> &'static str {
        match self {
            BreakerLimit::RequestCount => "active + queued requests",
            BreakerLimit::PendingRequestCount => "queued requests",
            BreakerLimit::SystemLoad1 => "1-minute load average",
        }
    }

    fn index(self) -> usize {
        match self {
            BreakerLimit::RequestCount => 0,
            BreakerLimit::PendingRequestCount => 1,
            BreakerLimit::SystemLoad1 => 2,
        }
    }
}

/// An open sub-breaker: its limit, the latest reading and the limit's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    /// Which limit.
    pub limit: BreakerLimit,
    /// The latest reading (`None`: the load could not be read).
    pub value: Option<f64>,
    /// The configured limit at the latest check.
    pub threshold: f64,
}

impl Trip {
    /// The reason given with the 503 and by `/ready`, e.g. "system circuit breaker is open:
    /// queued requests 1200 over systemCircuitBreaker.pendingRequestCountLimit 1000".
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "system circuit breaker is open: {} ", self.limit.what())?;
        match self.value {
            Some(v) => write!(f, "{v}")?,
            None => f.write_str("unknown")?,
        }
        write!(f, " over {} {}", self.limit.config_key(), self.threshold)
    }
}

/// The breaker as a whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerState {
    /// Invocations are accepted.
    Closed,
    /// Invocations are refused; the first open sub-breaker in [`BreakerLimit::ALL`] order.
    Open(Trip),
}

impl BreakerState {
    /// Whether invocations are refused.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerState::Open(_))
    }
}

/// One sub-breaker.
#[derive(Debug, Clone, Copy, Default)]
struct Sub {
    open: bool,
    /// Consecutive checks on the far side: over the limit while closed, under it while open.
    streak: u32,
    value: Option<f64>,
    threshold: f64,
}

impl Sub {
    fn check(&mut self, value: Option<f64>, threshold: f64, open_after: u32, close_after: u32) {
        self.value = value;
        self.threshold = threshold;
        let (over, under) = match value {
            Some(v) => (v > threshold, v < threshold || v <= 0.0),
            None => (false, true),
        };
        let (toward_flip, needed) = if self.open {
            (under, close_after)
        } else {
            (over, open_after)
        };
        if !toward_flip {
            self.streak = 0;
            return;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak >= needed {
            self.open = !self.open;
            self.streak = 0;
        }
    }
}

/// The system circuit breaker. Call [`CircuitBreaker::check`] on every tick.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    subs: [Sub; 3],
    open_after: u32,
    close_after: u32,
}

impl CircuitBreaker {
    /// A closed breaker with Noslate's thresholds ([`OPEN_AFTER`], [`CLOSE_AFTER`]).
    pub fn new() -> Self {
        Self::with_thresholds(OPEN_AFTER, CLOSE_AFTER)
    }

    /// A closed breaker that opens after `open_after` and closes after `close_after`
    /// consecutive checks (each at least 1).
    pub fn with_thresholds(open_after: u32, close_after: u32) -> Self {
        CircuitBreaker {
            subs: [Sub::default(); 3],
            open_after: open_after.max(1),
            close_after: close_after.max(1),
        }
    }

    /// One periodic check against the current limits; returns the new state. Compare
    /// [`BreakerState::is_open`] with the previous state's to log a change.
    pub fn check(&mut self, sample: LoadSample, limits: &CircuitBreakerConfig) -> BreakerState {
        let readings = [
            (
                Some(sample.active.saturating_add(sample.pending) as f64),
                limits.request_count_limit as f64,
            ),
            (
                Some(sample.pending as f64),
                limits.pending_request_count_limit as f64,
            ),
            (sample.load1, limits.system_load1_limit),
        ];
        for (sub, (value, threshold)) in self.subs.iter_mut().zip(readings) {
            sub.check(value, threshold, self.open_after, self.close_after);
        }
        self.state()
    }

    /// The state after the latest check.
    pub fn state(&self) -> BreakerState {
        self.open_trips()
            .next()
            .map_or(BreakerState::Closed, BreakerState::Open)
    }

    /// Whether invocations are refused.
    pub fn is_open(&self) -> bool {
        self.subs.iter().any(|s| s.open)
    }

    /// Every open sub-breaker, in [`BreakerLimit::ALL`] order (for logs and `/ready`).
    pub fn open_trips(&self) -> impl Iterator<Item = Trip> + '_ {
        BreakerLimit::ALL.into_iter().filter_map(|limit| {
            let sub = &self.subs[limit.index()];
            sub.open.then_some(Trip {
                limit,
                value: sub.value,
                threshold: sub.threshold,
            })
        })
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            request_count_limit: 10,
            pending_request_count_limit: 5,
            system_load1_limit: 4.0,
        }
    }

    fn sample(active: usize, pending: usize, load1: f64) -> LoadSample {
        LoadSample {
            active,
            pending,
            load1: Some(load1),
        }
    }

    const OVER: LoadSample = LoadSample {
        active: 11,
        pending: 0,
        load1: Some(0.0),
    };
    const AT: LoadSample = LoadSample {
        active: 10,
        pending: 0,
        load1: Some(0.0),
    };
    const UNDER: LoadSample = LoadSample {
        active: 9,
        pending: 0,
        load1: Some(0.0),
    };

    /// Runs a sequence of samples, returning the open/closed state after each.
    fn run(b: &mut CircuitBreaker, seq: &[LoadSample]) -> Vec<bool> {
        seq.iter()
            .map(|s| b.check(*s, &limits()).is_open())
            .collect()
    }

    #[test]
    fn opens_after_five_consecutive_over_limit_checks() {
        let mut b = CircuitBreaker::new();
        assert_eq!(run(&mut b, &[OVER; 5]), [false, false, false, false, true]);
        assert!(b.is_open());
    }

    #[test]
    fn a_check_at_or_under_the_limit_restarts_the_open_count() {
        for interruption in [AT, UNDER] {
            let mut b = CircuitBreaker::new();
            let seq = [OVER, OVER, OVER, OVER, interruption, OVER, OVER, OVER, OVER];
            assert!(
                run(&mut b, &seq).iter().all(|open| !open),
                "{interruption:?}: not consecutive, must stay closed"
            );
            assert!(b.check(OVER, &limits()).is_open(), "the fifth in a row");
        }
    }

    #[test]
    fn closes_after_three_consecutive_healthy_checks() {
        let mut b = CircuitBreaker::new();
        run(&mut b, &[OVER; 5]);
        assert_eq!(run(&mut b, &[UNDER; 3]), [true, true, false]);
        // Equal is not healthy, and an over-limit check restarts the count.
        let mut b = CircuitBreaker::new();
        run(&mut b, &[OVER; 5]);
        assert_eq!(
            run(
                &mut b,
                &[UNDER, UNDER, AT, UNDER, UNDER, OVER, UNDER, UNDER, UNDER]
            ),
            [true, true, true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn reopening_needs_five_fresh_checks() {
        let mut b = CircuitBreaker::new();
        run(&mut b, &[OVER; 5]);
        run(&mut b, &[UNDER; 3]);
        assert!(!b.is_open());
        assert_eq!(run(&mut b, &[OVER; 5]), [false, false, false, false, true]);
    }

    #[test]
    fn each_limit_trips_on_its_own_and_is_named() {
        let cases = [
            (sample(6, 5, 0.0), BreakerLimit::RequestCount, 11.0, 10.0),
            (
                sample(0, 6, 0.0),
                BreakerLimit::PendingRequestCount,
                6.0,
                5.0,
            ),
            (sample(0, 0, 4.5), BreakerLimit::SystemLoad1, 4.5, 4.0),
        ];
        for (s, limit, value, threshold) in cases {
            let mut b = CircuitBreaker::new();
            let states: Vec<BreakerState> = (0..5).map(|_| b.check(s, &limits())).collect();
            assert_eq!(states[3], BreakerState::Closed);
            assert_eq!(
                states[4],
                BreakerState::Open(Trip {
                    limit,
                    value: Some(value),
                    threshold
                }),
                "{limit:?}"
            );
        }
    }

    #[test]
    fn sub_breakers_count_independently() {
        let mut b = CircuitBreaker::new();
        // Pending over its limit 3 times, then the request count over its limit: neither has
        // 5 in a row on its own until the 5th check of pending.
        let seq = [
            sample(0, 6, 0.0),
            sample(0, 6, 0.0),
            sample(0, 6, 0.0),
            sample(6, 6, 0.0),
            sample(6, 6, 0.0),
        ];
        let states: Vec<BreakerState> = seq.iter().map(|s| b.check(*s, &limits())).collect();
        assert!(!states[3].is_open());
        match states[4] {
            BreakerState::Open(trip) => assert_eq!(trip.limit, BreakerLimit::PendingRequestCount),
            BreakerState::Closed => panic!("pending-request-count must be open"),
        }
        // Request count trips too three checks later; both are listed, first by order.
        for _ in 0..3 {
            b.check(sample(6, 6, 0.0), &limits());
        }
        let open: Vec<BreakerLimit> = b.open_trips().map(|t| t.limit).collect();
        assert_eq!(
            open,
            [
                BreakerLimit::RequestCount,
                BreakerLimit::PendingRequestCount
            ]
        );
        assert_eq!(
            b.state(),
            BreakerState::Open(Trip {
                limit: BreakerLimit::RequestCount,
                value: Some(12.0),
                threshold: 10.0
            })
        );
        // Only when all are closed is the breaker closed.
        for _ in 0..3 {
            b.check(sample(0, 6, 0.0), &limits());
        }
        let open: Vec<BreakerLimit> = b.open_trips().map(|t| t.limit).collect();
        assert_eq!(
            open,
            [BreakerLimit::PendingRequestCount],
            "request count closed after 3"
        );
        b.check(sample(0, 6, 0.0), &limits());
        assert!(b.is_open());
        run(&mut b, &[UNDER; 3]);
        assert!(!b.is_open());
    }

    #[test]
    fn the_trip_follows_the_latest_reading_and_limit() {
        let mut b = CircuitBreaker::new();
        run(&mut b, &[OVER; 5]);
        let mut raised = limits();
        raised.request_count_limit = 100;
        // A raised limit applies at the next check: 3 healthy checks close it.
        let state = b.check(sample(50, 0, 0.0), &raised);
        assert_eq!(
            state,
            BreakerState::Open(Trip {
                limit: BreakerLimit::RequestCount,
                value: Some(50.0),
                threshold: 100.0
            })
        );
        b.check(sample(50, 0, 0.0), &raised);
        assert!(!b.check(sample(50, 0, 0.0), &raised).is_open());
    }

    #[test]
    fn messages_name_the_limit_and_numbers() {
        let trip = Trip {
            limit: BreakerLimit::PendingRequestCount,
            value: Some(1200.0),
            threshold: 1000.0,
        };
        assert_eq!(
            trip.message(),
            "system circuit breaker is open: queued requests 1200 over \
             systemCircuitBreaker.pendingRequestCountLimit 1000"
        );
        let trip = Trip {
            limit: BreakerLimit::SystemLoad1,
            value: Some(12.5),
            threshold: 10.0,
        };
        assert_eq!(
            trip.message(),
            "system circuit breaker is open: 1-minute load average 12.5 over \
             systemCircuitBreaker.systemLoad1Limit 10"
        );
        assert_eq!(BreakerLimit::RequestCount.as_str(), "request-count");
        assert_eq!(BreakerLimit::SystemLoad1.as_str(), "system-load");
    }

    #[test]
    fn an_unreadable_load_counts_as_healthy() {
        let mut b = CircuitBreaker::new();
        let unknown = LoadSample {
            active: 0,
            pending: 0,
            load1: None,
        };
        for _ in 0..4 {
            b.check(sample(0, 0, 9.0), &limits());
        }
        b.check(unknown, &limits());
        assert!(
            !b.check(sample(0, 0, 9.0), &limits()).is_open(),
            "restarted"
        );
        for _ in 0..4 {
            b.check(sample(0, 0, 9.0), &limits());
        }
        assert!(b.is_open());
        assert_eq!(run(&mut b, &[unknown; 3]), [true, true, false]);
    }

    #[test]
    fn a_zero_limit_can_close_again() {
        let zero = CircuitBreakerConfig {
            request_count_limit: 0,
            pending_request_count_limit: 0,
            system_load1_limit: 4.0,
        };
        let mut b = CircuitBreaker::new();
        for _ in 0..5 {
            b.check(sample(1, 0, 0.0), &zero);
        }
        assert!(b.is_open());
        for _ in 0..3 {
            b.check(sample(0, 0, 0.0), &zero);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn custom_thresholds() {
        let mut b = CircuitBreaker::with_thresholds(1, 1);
        assert!(b.check(OVER, &limits()).is_open());
        assert!(!b.check(UNDER, &limits()).is_open());
        let mut b = CircuitBreaker::with_thresholds(0, 0);
        assert!(b.check(OVER, &limits()).is_open(), "0 is taken as 1");
    }
}
