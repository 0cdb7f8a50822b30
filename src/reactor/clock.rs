//! The loop's clock: the monotonic clock read when the loop wakes, and once more before it
//! waits, instead of by every handler that wants the time.
//!
//! A quick invocation used to read the clock about twenty times between its request and its
//! answer (admission, dispatch, the answer, the access line, the `Date` header, the deadline,
//! the scaler's view of it). Each read is a vDSO call of 25 to 35 ns here, a twentieth of the
//! runtime's own user time on that path. Handlers of one wake-up now share one reading, as
//! event loops commonly do: a timestamp taken in an iteration is early by at most the time the
//! iteration has run so far, which for a deadline in milliseconds is nothing, and for the
//! metrics is below their resolution.
//!
//! Wall-clock time (the `Date` header, access-log timestamps) is derived from the monotonic
//! reading and an anchor read from the system clock at most once per [`WALL_ANCHOR_EVERY`], so a
//! step of the system clock shows within that period.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the wall clock is read again to anchor derived wall-clock times.
pub const WALL_ANCHOR_EVERY: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch at `time` (0 before it).
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time as the loop last read it.
#[derive(Debug, Clone, Copy)]
pub struct LoopClock {
    now: Instant,
    /// A monotonic instant and the wall-clock time read right after it.
    anchor: (Instant, SystemTime),
}

impl Default for LoopClock {
    fn default() -> Self {
        LoopClock::new()
    }
}

impl LoopClock {
    /// A clock holding the current time.
    pub fn new() -> LoopClock {
        let now = Instant::now();
        LoopClock {
            now,
            anchor: (now, SystemTime::now()),
        }
    }

    /// Reads the monotonic clock (and the wall clock, when the anchor is due), and returns
    /// the reading.
    pub fn tick(&mut self) -> Instant {
        self.advance_to(Instant::now(), SystemTime::now)
    }

    /// The reading the last [`LoopClock::tick`] took.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The wall-clock time of the last reading.
    pub fn wall(&self) -> SystemTime {
        self.wall_at(self.now)
    }

    /// The wall-clock time of the monotonic instant `at` (a deadline, say), as of the anchor.
    pub fn wall_at(&self, at: Instant) -> SystemTime {
        let (anchor, wall) = self.anchor;
        if at >= anchor {
            wall + (at - anchor)
        } else {
            wall.checked_sub(anchor - at).unwrap_or(UNIX_EPOCH)
        }
    }

    /// Moves the clock to `now`, reading the wall clock with `read_wall` when the anchor is
    /// at least [`WALL_ANCHOR_EVERY`] old. Readings never go backwards.
    fn advance_to(&mut self, now: Instant, read_wall: impl FnOnce() -> SystemTime) -> Instant {
        self.now = self.now.max(now);
        if self.now.saturating_duration_since(self.anchor.0) >= WALL_ANCHOR_EVERY {
            self.anchor = (self.now, read_wall());
        }
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_epoch_plus(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn clock_at(now: Instant, wall: SystemTime) -> LoopClock {
        LoopClock {
            now,
            anchor: (now, wall),
        }
    }

    #[test]
    fn a_reading_holds_until_the_next_tick() {
        let mut clock = LoopClock::new();
        let first = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.now(), first, "now() does not read the clock");
        let second = clock.tick();
        assert!(second >= first + Duration::from_millis(2));
        assert_eq!(clock.now(), second);
    }

    #[test]
    fn wall_time_follows_the_monotonic_reading_between_anchors() {
        let start = Instant::now();
        let mut clock = clock_at(start, at_epoch_plus(1000));
        let step = Duration::from_millis(300);
        clock.advance_to(start + step, || panic!("the anchor is not due yet"));
        assert_eq!(clock.wall(), at_epoch_plus(1000) + step);
    }

    #[test]
    fn the_wall_clock_is_read_again_once_the_anchor_is_due() {
        let start = Instant::now();
        let mut clock = clock_at(start, at_epoch_plus(1000));
        // The system clock was stepped back by a minute meanwhile: the next anchor shows it.
        let later = start + WALL_ANCHOR_EVERY;
        clock.advance_to(later, || at_epoch_plus(941));
        assert_eq!(clock.wall(), at_epoch_plus(941));
        clock.advance_to(later + Duration::from_millis(5), || {
            panic!("anchored just now")
        });
        assert_eq!(clock.wall(), at_epoch_plus(941) + Duration::from_millis(5));
    }

    #[test]
    fn instants_before_and_after_the_anchor_map_to_wall_clock_times() {
        let start = Instant::now() + Duration::from_secs(10);
        let clock = clock_at(start, at_epoch_plus(1000));
        let ahead = start + Duration::from_millis(1500);
        assert_eq!(unix_millis(clock.wall_at(ahead)), 1_001_500);
        let behind = start - Duration::from_millis(250);
        assert_eq!(unix_millis(clock.wall_at(behind)), 999_750);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn readings_never_go_backwards() {
        let start = Instant::now();
        let mut clock = clock_at(start + Duration::from_millis(10), at_epoch_plus(5));
        assert_eq!(
            clock.advance_to(start, || at_epoch_plus(0)),
            start + Duration::from_millis(10)
        );
    }
}
