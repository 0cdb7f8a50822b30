//! The per-function token bucket of `rateLimit` (as in Noslate's `token_bucket.ts`).
//!
//! - The bucket starts full with `maxTokenCount` tokens; without `maxTokenCount` it is
//!   unlimited and every request passes.
//! - Each admitted request takes one token; with none left it is rejected (429). The check runs
//!   before the request is queued or counted anywhere, so a rejected request leaves no trace in
//!   the concurrency statistics (Noslate leaks one count per rejection).
//! - With `fillInterval`, every interval adds `tokensPerFill` tokens, capped at `maxTokenCount`,
//!   or fills the bucket to the top when `tokensPerFill` is absent. Without `fillInterval` the
//!   bucket never refills. An interval of 0 is taken as 1 ms.
//! - Fills happen on a fixed schedule that starts when the bucket is created: at
//!   `created + k × fillInterval`, whether or not requests arrive. The bucket applies the fills
//!   that are due lazily, when it is next asked, so no timer is needed.
//! - [`TokenBucket::reconfigure`] applies a changed `rateLimit` at once (Noslate never
//!   does): tokens already earned under the old limit are credited, then the content is
//!   clamped to the new maximum. A bucket that was unlimited starts full.

use crate::config::RateLimit;
use std::time::{Duration, Instant};

/// One function's token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// The limit in force.
    limit: RateLimit,
    /// Tokens in the bucket; meaningless when `limit.max_token_count` is `None`.
    tokens: u64,
    /// The instant of the last fill on the schedule (or the schedule's start): fills are due at
    /// `anchor + k × interval`, k ≥ 1.
    anchor: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit`, its fill schedule starting at `now`.
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit: limit.clone(),
            tokens: limit.max_token_count.unwrap_or(0),
            anchor: now,
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Takes one token if there is one (applying the fills due by `now` first). `false` means
    /// the request is rate limited. An unlimited bucket always answers `true`.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if self.limit.max_token_count.is_none() {
            return true;
        }
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Tokens available at `now` (fills due by then included) without taking any; `None` when
    /// unlimited.
    pub fn available(&self, now: Instant) -> Option<u64> {
        self.limit.max_token_count?;
        let mut copy = self.clone();
        copy.refill(now);
        Some(copy.tokens)
    }

    /// The first fill strictly after `now`, or `None` when no fill can ever add a token: the
    /// bucket is unlimited, has no `fillInterval`, or has a maximum of 0. A rejected request's
    /// `Retry-After` can be derived from it.
    pub fn next_refill(&self, now: Instant) -> Option<Instant> {
        let max = self.limit.max_token_count?;
        let interval = self.interval()?;
        if max == 0 {
            return None;
        }
        let due = self.fills_due(now);
        let next = due.checked_add(1)?;
        checked_add_times(self.anchor, interval, next)
    }

    /// Applies a changed limit at `now`. Fills due under the old limit are applied first; then
    /// the tokens are clamped to the new maximum (a bucket that was unlimited starts full). The
    /// fill schedule keeps its phase when `fillInterval` is unchanged and restarts at `now`
    /// when it changed. Reconfiguring with an equal limit changes nothing.
    pub fn reconfigure(&mut self, new: &RateLimit, now: Instant) {
        if *new == self.limit {
            return;
        }
        let was_unlimited = self.limit.max_token_count.is_none();
        if !was_unlimited {
            self.refill(now);
        }
        if new.fill_interval_ms != self.limit.fill_interval_ms {
            self.anchor = now;
        }
        self.tokens = match new.max_token_count {
            None => 0,
            Some(max) if was_unlimited => max,
            Some(max) => self.tokens.min(max),
        };
        self.limit = new.clone();
    }

    /// The fill interval, if the bucket refills at all.
    fn interval(&self) -> Option<Duration> {
        self.limit
            .fill_interval_ms
            .map(|ms| Duration::from_millis(ms.max(1)))
    }

    /// How many whole fill intervals lie between the anchor and `now`.
    fn fills_due(&self, now: Instant) -> u128 {
        match self.interval() {
            Some(interval) => {
                now.saturating_duration_since(self.anchor).as_nanos() / interval.as_nanos()
            }
            None => 0,
        }
    }

    /// Applies the fills due by `now` and moves the anchor to the last of them.
    fn refill(&mut self, now: Instant) {
        let (Some(max), Some(interval)) = (self.limit.max_token_count, self.interval()) else {
            return;
        };
        let due = self.fills_due(now);
        if due == 0 {
            return;
        }
        self.tokens = match self.limit.tokens_per_fill {
            None => max,
            Some(per_fill) => {
                let added = u64::try_from(due)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(per_fill);
                self.tokens.saturating_add(added).min(max)
            }
        };
        self.anchor = checked_add_times(self.anchor, interval, due).unwrap_or(now);
    }
}

/// `start + interval × times`, or `None` on overflow.
fn checked_add_times(start: Instant, interval: Duration, times: u128) -> Option<Instant> {
    let nanos = interval.as_nanos().checked_mul(times)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits a u32.
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    start.checked_add(Duration::new(secs, sub))
}

/// Brings a function's optional bucket in line with its (possibly changed) `rateLimit` at
/// `now`: creates a full bucket when a limit appears, drops it when the limit is removed, and
/// [`TokenBucket::reconfigure`]s it otherwise. Call it when a profile set is applied.
pub fn apply_rate_limit(bucket: &mut Option<TokenBucket>, new: Option<&RateLimit>, now: Instant) {
    match (bucket.as_mut(), new) {
        (_, None) => *bucket = None,
        (None, Some(limit)) => *bucket = Some(TokenBucket::new(limit, now)),
        (Some(b), Some(limit)) => b.reconfigure(limit, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: Option<u64>, per_fill: Option<u64>, interval: Option<u64>) -> RateLimit {
        RateLimit {
            max_token_count: max,
            tokens_per_fill: per_fill,
            fill_interval_ms: interval,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Takes tokens until refused, returning how many were granted (at most 1000).
    fn drain(bucket: &mut TokenBucket, now: Instant) -> u64 {
        let mut n = 0;
        while n < 1000 && bucket.try_acquire(now) {
            n += 1;
        }
        n
    }

    #[test]
    fn empty_config_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(None, None, None), t0);
        assert_eq!(drain(&mut b, t0), 1000);
        assert_eq!(b.available(t0), None);
        assert_eq!(b.next_refill(t0), None);
        // Without a maximum the other fields do not matter.
        let mut b = TokenBucket::new(&limit(None, Some(1), Some(10)), t0);
        assert_eq!(drain(&mut b, t0 + ms(5)), 1000);
    }

    #[test]
    fn starts_full_and_never_refills_without_an_interval() {
        let t0 = Instant::now();
        for max in 0..5 {
            let mut b = TokenBucket::new(&limit(Some(max), None, None), t0);
            assert_eq!(b.available(t0), Some(max));
            assert_eq!(drain(&mut b, t0), max, "max {max}");
            assert_eq!(drain(&mut b, t0 + Duration::from_secs(3600)), 0);
            assert_eq!(b.next_refill(t0), None);
        }
    }

    #[test]
    fn noslate_integration_case_one_token_per_ten_seconds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(1), Some(1), Some(10_000)), t0);
        assert!(b.try_acquire(t0));
        assert!(!b.try_acquire(t0 + ms(1)), "second call is rate limited");
        assert_eq!(b.next_refill(t0 + ms(1)), Some(t0 + ms(10_000)));
        assert!(!b.try_acquire(t0 + ms(9_999)));
        assert!(b.try_acquire(t0 + ms(10_000)), "refilled after 10 s");
        assert!(!b.try_acquire(t0 + ms(10_001)));
    }

    #[test]
    fn fills_add_tokens_per_fill_capped_at_max() {
        let t0 = Instant::now();
        // Exhaustive small cases: max × per_fill × elapsed whole intervals.
        for max in 0..5u64 {
            for per_fill in 1..4u64 {
                for intervals in 0..5u64 {
                    let mut b = TokenBucket::new(&limit(Some(max), Some(per_fill), Some(100)), t0);
                    assert_eq!(drain(&mut b, t0), max);
                    // Just before a boundary counts only the completed intervals.
                    let at = t0 + ms(100 * intervals + 99);
                    let want = (per_fill * intervals).min(max);
                    assert_eq!(
                        b.available(at),
                        Some(want),
                        "max {max} per_fill {per_fill} intervals {intervals}"
                    );
                    assert_eq!(drain(&mut b, at), want);
                }
            }
        }
    }

    #[test]
    fn a_partial_drain_is_topped_up_not_overfilled() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(5), Some(2), Some(100)), t0);
        assert!(b.try_acquire(t0));
        assert!(b.try_acquire(t0));
        assert_eq!(b.available(t0 + ms(100)), Some(5), "3 + 2");
        assert_eq!(b.available(t0 + ms(500)), Some(5), "capped");
        assert!(b.try_acquire(t0 + ms(150)));
        assert_eq!(b.available(t0 + ms(150)), Some(4));
        assert_eq!(b.available(t0 + ms(199)), Some(4), "next fill is at 200");
        assert_eq!(b.available(t0 + ms(200)), Some(5));
    }

    #[test]
    fn without_tokens_per_fill_each_fill_tops_the_bucket_up() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(3), None, Some(50)), t0);
        assert_eq!(drain(&mut b, t0), 3);
        assert_eq!(drain(&mut b, t0 + ms(49)), 0);
        assert_eq!(drain(&mut b, t0 + ms(50)), 3);
        assert!(b.try_acquire(t0 + ms(100)));
        assert_eq!(b.available(t0 + ms(149)), Some(2));
        assert_eq!(b.available(t0 + ms(150)), Some(3));
    }

    #[test]
    fn the_fill_schedule_keeps_its_phase() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(1), Some(1), Some(100)), t0);
        assert!(b.try_acquire(t0 + ms(30)));
        // Fills are at 100, 200, ... regardless of when tokens were taken.
        assert_eq!(b.next_refill(t0 + ms(30)), Some(t0 + ms(100)));
        assert!(b.try_acquire(t0 + ms(170)));
        assert_eq!(b.next_refill(t0 + ms(170)), Some(t0 + ms(200)));
        assert_eq!(
            b.next_refill(t0 + ms(200)),
            Some(t0 + ms(300)),
            "strictly after now"
        );
        assert!(!b.try_acquire(t0 + ms(199)));
        assert!(b.try_acquire(t0 + ms(200)));
    }

    #[test]
    fn next_refill_is_none_when_no_fill_can_add_a_token() {
        let t0 = Instant::now();
        assert_eq!(
            TokenBucket::new(&limit(Some(0), Some(1), Some(100)), t0).next_refill(t0),
            None
        );
        assert_eq!(
            TokenBucket::new(&limit(Some(2), Some(1), Some(0)), t0).next_refill(t0),
            Some(t0 + ms(1)),
            "an interval of 0 is 1 ms"
        );
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(&limit(Some(1), Some(1), Some(100)), t0);
        assert!(b.try_acquire(t0));
        assert!(!b.try_acquire(t0 - ms(500)));
        assert_eq!(b.available(t0 - ms(500)), Some(0));
    }

    #[test]
    fn a_very_long_gap_saturates() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(u64::MAX), Some(u64::MAX), Some(1)), t0);
        assert!(b.try_acquire(t0));
        assert_eq!(
            b.available(t0 + Duration::from_secs(86_400 * 365)),
            Some(u64::MAX)
        );
    }

    #[test]
    fn reconfigure_clamps_to_the_new_maximum_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(10), Some(1), Some(1000)), t0);
        assert!(b.try_acquire(t0));
        b.reconfigure(&limit(Some(3), Some(1), Some(1000)), t0 + ms(1));
        assert_eq!(b.available(t0 + ms(1)), Some(3), "9 clamped to 3");
        assert_eq!(drain(&mut b, t0 + ms(2)), 3);
        // Raising the maximum does not mint tokens.
        b.reconfigure(&limit(Some(100), Some(1), Some(1000)), t0 + ms(3));
        assert_eq!(b.available(t0 + ms(3)), Some(0));
        // Same interval: the schedule keeps its phase (fill at 1000).
        assert_eq!(b.available(t0 + ms(1000)), Some(1));
    }

    #[test]
    fn reconfigure_credits_fills_earned_under_the_old_limit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(5), Some(2), Some(100)), t0);
        assert_eq!(drain(&mut b, t0), 5);
        // At 250 two fills (4 tokens) were due under the old limit.
        b.reconfigure(&limit(Some(5), Some(2), Some(1000)), t0 + ms(250));
        assert_eq!(b.available(t0 + ms(250)), Some(4));
        // The new interval restarts the schedule at the change.
        assert_eq!(b.next_refill(t0 + ms(250)), Some(t0 + ms(1250)));
        assert_eq!(b.available(t0 + ms(1249)), Some(4));
        assert_eq!(b.available(t0 + ms(1250)), Some(5));
    }

    #[test]
    fn reconfigure_between_limited_and_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(2), None, None), t0);
        assert_eq!(drain(&mut b, t0), 2);
        b.reconfigure(&limit(None, None, None), t0);
        assert_eq!(drain(&mut b, t0), 1000, "now unlimited");
        b.reconfigure(&limit(Some(4), None, None), t0);
        assert_eq!(
            drain(&mut b, t0),
            4,
            "an unlimited bucket becomes a full one"
        );
        // An equal limit is a no-op, even for the schedule.
        let mut b = TokenBucket::new(&limit(Some(1), Some(1), Some(100)), t0);
        assert!(b.try_acquire(t0));
        b.reconfigure(&limit(Some(1), Some(1), Some(100)), t0 + ms(90));
        assert_eq!(b.next_refill(t0 + ms(90)), Some(t0 + ms(100)));
    }

    #[test]
    fn adding_an_interval_starts_refilling_from_the_change() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(Some(2), None, None), t0);
        assert_eq!(drain(&mut b, t0), 2);
        b.reconfigure(&limit(Some(2), Some(1), Some(100)), t0 + ms(1000));
        assert_eq!(b.available(t0 + ms(1099)), Some(0));
        assert_eq!(b.available(t0 + ms(1100)), Some(1));
        // And removing it stops refilling.
        b.reconfigure(&limit(Some(2), None, None), t0 + ms(1100));
        assert_eq!(b.available(t0 + ms(9000)), Some(1));
    }

    #[test]
    fn apply_rate_limit_creates_updates_and_drops() {
        let t0 = Instant::now();
        let mut slot = None;
        apply_rate_limit(&mut slot, Some(&limit(Some(1), None, None)), t0);
        assert!(slot.as_mut().is_some_and(|b| b.try_acquire(t0)));
        assert!(slot.as_mut().is_some_and(|b| !b.try_acquire(t0)));
        apply_rate_limit(&mut slot, Some(&limit(Some(3), None, None)), t0);
        assert_eq!(slot.as_ref().and_then(|b| b.available(t0)), Some(0));
        assert_eq!(
            slot.as_ref().map(|b| b.limit().max_token_count),
            Some(Some(3))
        );
        apply_rate_limit(&mut slot, None, t0);
        assert!(slot.is_none());
    }
}
