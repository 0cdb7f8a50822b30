//! Launch back-off: how long a function waits after failed starts and after ready workers that
//! die on their own, and whether it may launch at `now`.
//!
//! Two back-offs, each counted in the function's pool (`crate::pool::Pool`):
//!
//! - **Start back-off** ([`backoff`]): a start that fails (crash before `INIT_DONE`,
//!   `INIT_ERROR`, init timeout, a spawn that fails) waits 100 ms doubling to 30 s. While it
//!   holds and nothing runs or starts, waiting requests fail with the start error
//!   ([`Backoff::fails_fast`]). An `INIT_DONE` ends it.
//! - **Respawn back-off** ([`respawn_backoff`]): a ready worker that dies on its own before
//!   serving anything within [`CRASH_LOOP_WINDOW`] of its start waits 100 ms doubling to 5 s.
//!   Requests keep waiting: the code does start. A completed invocation ends it. A worker that
//!   dies while serving is no crash loop and backs nothing off.

use std::time::{Duration, Instant};

/// First back-off after a failed worker start.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Back-off ceiling for a function whose workers keep failing to start.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Ceiling of the respawn back-off after ready workers that die on their own. Lower than the
/// start back-off's: requests wait for the respawn rather than fail, and code that starts is
/// worth retrying soon.
pub const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A ready worker that dies on its own this soon after it was started, before serving any
/// request, counts toward the respawn back-off: nothing but the back-off bounds such a loop.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);

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

/// One function's back-off as the launch decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// No launches before this instant: the start back-off.
    pub start_until: Option<Instant>,
    /// No launches before this instant: the respawn back-off.
    pub respawn_until: Option<Instant>,
    /// Whether the last start failed and no start has succeeded since.
    pub start_failed: bool,
}

impl Backoff {
    /// Whether a launch is allowed at `now` (neither back-off is running).
    pub fn may_launch(&self, now: Instant) -> bool {
        self.start_until.is_none_or(|until| now >= until)
            && self.respawn_until.is_none_or(|until| now >= until)
    }

    /// Whether waiting requests should be failed with the last start error instead of waiting
    /// for the next launch: only while the function's workers fail to start.
    pub fn fails_fast(&self) -> bool {
        self.start_failed
    }
}

/// The restart back-off of a process the runtime keeps alive by itself (a function's warm seed,
/// the spare workers): the start back-off's delays (100 ms doubling to 30 s) per consecutive
/// death, with at most one restart armed at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartBackoff {
    failures: u32,
    armed: bool,
}

impl RestartBackoff {
    /// Another death: the delay before the restart, or `None` when one is already armed.
    pub fn arm(&mut self) -> Option<Duration> {
        if self.armed {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        self.armed = true;
        Some(backoff(self.failures))
    }

    /// The armed restart is due.
    pub fn fired(&mut self) {
        self.armed = false;
    }

    /// Whether a restart is armed (starting now would jump the back-off).
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// The process came up: the next death starts from the shortest delay again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn either_back_off_holds_launches_until_it_ends() {
        let now = Instant::now();
        let later = now + Duration::from_millis(100);
        assert!(Backoff::default().may_launch(now));
        let start = Backoff {
            start_until: Some(later),
            start_failed: true,
            ..Backoff::default()
        };
        assert!(!start.may_launch(now));
        assert!(start.may_launch(later));
        assert!(start.fails_fast());
        let respawn = Backoff {
            respawn_until: Some(later),
            ..Backoff::default()
        };
        assert!(!respawn.may_launch(now));
        assert!(respawn.may_launch(later));
        assert!(!respawn.fails_fast(), "requests wait for a respawn");
    }

    #[test]
    fn a_restart_backoff_doubles_per_death_and_arms_once() {
        let mut restart = RestartBackoff::default();
        assert_eq!(restart.arm(), Some(Duration::from_millis(100)));
        assert!(restart.is_armed());
        assert_eq!(restart.arm(), None, "one restart at a time");
        restart.fired();
        assert_eq!(restart.arm(), Some(Duration::from_millis(200)));
        restart.fired();
        restart.succeeded();
        assert_eq!(restart.arm(), Some(Duration::from_millis(100)));
        for _ in 0..40 {
            restart.fired();
            restart.arm();
        }
        restart.fired();
        assert_eq!(restart.arm(), Some(DEFAULT_BACKOFF_MAX));
    }
}
