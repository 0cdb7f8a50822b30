//! One function's worker pool as the data plane sees it: its request queue, its workers, and the
//! counts behind its launch back-off. The decisions (which worker takes the next request, how
//! many workers to launch, how long to back off) are in [`crate::sched`]; nothing here does I/O.

use crate::ids::ConnRef;
use crate::ids::WorkerKey;
use crate::sched::backoff::{self, Backoff};
use std::collections::VecDeque;
use std::time::Instant;

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
    pub workers: Vec<WorkerKey>,
    /// Requests waiting for a worker, oldest first.
    pub queue: VecDeque<ConnRef>,
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
            start_failures: 0,
            backoff_until: None,
            last_start_error: None,
            crashes: 0,
            respawn_after: None,
            launch_blocked: None,
        }
    }

    /// Records a failed start and returns when the next launch may happen
    /// ([`backoff::backoff`]).
    pub fn record_start_failure(&mut self, error: StartError, now: Instant) -> Instant {
        self.start_failures = self.start_failures.saturating_add(1);
        let until = now + backoff::backoff(self.start_failures);
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
    /// after it started ([`backoff::CRASH_LOOP_WINDOW`]): no request is to blame, so nothing
    /// but a back-off would bound the respawns. Returns when the next launch may happen
    /// ([`backoff::respawn_backoff`]). Waiting requests keep waiting (the code starts; it is
    /// not a start failure). A worker that dies *while serving* is not recorded: its own
    /// requests fail and the replacement starts at once, so that a function dying on some
    /// inputs costs each such request itself and nothing more.
    pub fn record_crash(&mut self, now: Instant) -> Instant {
        self.crashes = self.crashes.saturating_add(1);
        let until = now + backoff::respawn_backoff(self.crashes);
        self.respawn_after = Some(until);
        until
    }

    /// An invocation completed: the function runs, and its respawn back-off is over.
    pub fn record_stable(&mut self) {
        self.crashes = 0;
        self.respawn_after = None;
    }

    /// The back-off as the launch decision reads it.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            start_until: self.backoff_until,
            respawn_until: self.respawn_after,
            start_failed: self.last_start_error.is_some(),
        }
    }

    /// Whether waiting requests should be failed with the last start error instead of waiting
    /// for the next launch ([`Backoff::fails_fast`]).
    pub fn fails_fast(&self) -> bool {
        self.backoff().fails_fast()
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn start_failures_gate_launches_until_a_start_succeeds() {
        let now = Instant::now();
        let mut pool = Pool::new();
        assert!(pool.backoff().may_launch(now));
        let error = StartError {
            error_type: "Error".into(),
            message: "boom".into(),
            stack: vec![],
        };
        let until = pool.record_start_failure(error.clone(), now);
        assert!(!pool.backoff().may_launch(now));
        assert!(
            pool.fails_fast(),
            "a start-up error fails waiting requests at once"
        );
        assert!(pool.backoff().may_launch(until));
        pool.record_start_failure(error, until);
        assert_eq!(pool.start_failures, 2);
        pool.record_initialized();
        assert!(pool.last_start_error.is_none());
        assert!(!pool.fails_fast());
        assert_eq!(pool.start_failures, 0);
        assert!(
            pool.backoff().may_launch(now),
            "a start that succeeded ends the back-off"
        );
    }

    #[test]
    fn crashes_of_ready_workers_back_off_respawns_without_failing_requests() {
        let now = Instant::now();
        let mut pool = Pool::new();
        let first = pool.record_crash(now);
        assert_eq!(first, now + Duration::from_millis(100));
        assert!(!pool.backoff().may_launch(now));
        assert!(!pool.fails_fast(), "the code starts: requests wait");
        assert!(pool.backoff().may_launch(first));
        let second = pool.record_crash(first);
        assert_eq!(second, first + Duration::from_millis(200));
        pool.record_initialized();
        assert!(
            !pool.backoff().may_launch(first),
            "a start proves nothing about dying on its own"
        );
        pool.record_stable();
        assert_eq!(pool.crashes, 0);
        assert!(
            pool.backoff().may_launch(first),
            "a completed invocation ends it"
        );
    }
}
