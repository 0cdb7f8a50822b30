//! Deadlines for the event loop: request deadlines, worker init/stop timeouts, cancel grace
//! periods and spawn back-off all live here, and the earliest one sets the poll timeout.
//!
//! Entries are cancellable by key (a `BTreeMap` ordered by instant), so completed requests do not
//! leave dead entries behind: the set only ever holds live deadlines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Identifies a scheduled deadline, for cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerKey {
    at: Instant,
    seq: u64,
}

/// A set of deadlines carrying a payload `T`.
#[derive(Debug)]
pub struct Timers<T> {
    entries: BTreeMap<TimerKey, T>,
    seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            entries: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Schedules `payload` to fire at `at`.
    pub fn schedule(&mut self, at: Instant, payload: T) -> TimerKey {
        self.seq += 1;
        let key = TimerKey { at, seq: self.seq };
        self.entries.insert(key, payload);
        key
    }

    /// Cancels a deadline; cancelling one that already fired is a no-op.
    pub fn cancel(&mut self, key: TimerKey) {
        self.entries.remove(&key);
    }

    /// How long until the earliest deadline, if any.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.entries
            .keys()
            .next()
            .map(|key| key.at.saturating_duration_since(now))
    }

    /// Removes and returns the earliest deadline that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let entry = self.entries.first_entry()?;
        if entry.key().at <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// Number of scheduled deadlines.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is scheduled.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_honours_cancellation() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(now + Duration::from_millis(30), "c");
        let b = timers.schedule(now + Duration::from_millis(20), "b");
        timers.schedule(now + Duration::from_millis(10), "a");
        timers.cancel(b);
        assert_eq!(timers.next_timeout(now), Some(Duration::from_millis(10)));
        assert_eq!(timers.pop_due(now), None);
        let later = now + Duration::from_millis(40);
        assert_eq!(timers.pop_due(later), Some("a"));
        assert_eq!(timers.pop_due(later), Some("c"));
        assert_eq!(timers.pop_due(later), None);
        assert!(timers.is_empty());
    }

    #[test]
    fn equal_instants_are_distinct_entries() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(now, 1);
        timers.schedule(now, 2);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.pop_due(now), Some(1));
        assert_eq!(timers.pop_due(now), Some(2));
    }
}
