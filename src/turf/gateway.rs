//! The user's gateway process (`gateway.*`): its record and its state machine. The runtime keeps
//! one gateway alive beside its workers, restarts it with the restart back-off of the processes
//! it keeps alive by itself (`sched::backoff::RestartBackoff`), and stops it first when it
//! stops. Decisions here are pure (times and exits are passed in); `server/supervisor/gateway.rs`
//! spawns, signals and reaps.
//!
//! ```text
//!  (start) ──spawned──▶ Running ──exit / spawn failed──▶ BackingOff ──retry due──▶ (start)
//!                          │                                  │
//!                          └── runtime stopping: SIGTERM ──▶ Stopping ──reaped──▶ Stopped
//!                                                             (SIGKILL after the grace period;
//!                                                              BackingOff goes straight to Stopped)
//! ```

use crate::reactor::slab::Key;
use crate::sched::backoff::{CRASH_LOOP_WINDOW, RestartBackoff};
use crate::turf::child::ChildProc;
use std::time::Duration;

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayState {
    /// Its process runs.
    Running,
    /// It died or could not be started; a restart is armed.
    BackingOff,
    /// The runtime is stopping: it was sent SIGTERM and is waited for.
    Stopping,
    /// It is gone and will not be started again.
    Stopped,
}

impl GatewayState {
    /// The name `noslate stats` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayState::Running => "running",
            GatewayState::BackingOff => "backoff",
            GatewayState::Stopping => "stopping",
            GatewayState::Stopped => "stopped",
        }
    }
}

/// How the gateway's last run ended, when it ended on its own (or never began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFailure {
    /// What happened: `exit code 1`, `signal SIGKILL`, or why it could not be started.
    pub reason: String,
    /// The last bytes of its stderr (at most `gateway.stderrTailBytes`), lossily decoded.
    pub stderr_tail: String,
    /// How long it ran, in milliseconds (0 when it never started).
    pub uptime_ms: u64,
}

/// What to do after the gateway's process ended or could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again after this delay.
    RestartIn(Duration),
    /// The runtime is stopping: the gateway is done.
    Done,
}

/// The gateway's record: its process while it runs, and what `noslate stats` reports.
#[derive(Debug)]
pub struct Gateway {
    /// The running process, if any.
    pub process: Option<ChildProc>,
    /// The console relay of its stderr, whose tail explains its end.
    pub stderr_relay: Option<Key>,
    state: GatewayState,
    /// Processes started so far.
    starts: u64,
    backoff: RestartBackoff,
    last_failure: Option<GatewayFailure>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            process: None,
            stderr_relay: None,
            // Before the first start, as after a death: the loop starts it at once.
            state: GatewayState::BackingOff,
            starts: 0,
            backoff: RestartBackoff::default(),
            last_failure: None,
        }
    }
}

impl Gateway {
    /// Its state.
    pub fn state(&self) -> GatewayState {
        self.state
    }

    /// Restarts so far: every start after the first.
    pub fn restarts(&self) -> u64 {
        self.starts.saturating_sub(1)
    }

    /// How its last run ended on its own, if one did.
    pub fn last_failure(&self) -> Option<&GatewayFailure> {
        self.last_failure.as_ref()
    }

    /// Whether a (re)start may happen now: it is backing off, its delay is over (or it never
    /// started), and the runtime is not stopping.
    pub fn may_start(&self) -> bool {
        self.state == GatewayState::BackingOff && !self.backoff.is_armed()
    }

    /// Its process was started.
    pub fn started(&mut self, process: ChildProc, stderr_relay: Option<Key>) {
        self.process = Some(process);
        self.stderr_relay = stderr_relay;
        self.starts += 1;
        self.state = GatewayState::Running;
    }

    /// Its process ended (`uptime` after its start) or could not be started (`uptime` zero):
    /// the failure is kept for `noslate stats` unless the runtime stopped it, and a restart is
    /// armed unless the runtime is stopping. A run longer than the crash-loop window starts
    /// the back-off again from its shortest delay.
    pub fn ended(&mut self, failure: GatewayFailure, uptime: Duration) -> AfterExit {
        self.process = None;
        self.stderr_relay = None;
        if matches!(self.state, GatewayState::Stopping | GatewayState::Stopped) {
            self.state = GatewayState::Stopped;
            return AfterExit::Done;
        }
        self.last_failure = Some(failure);
        if uptime >= CRASH_LOOP_WINDOW {
            self.backoff.succeeded();
        }
        self.state = GatewayState::BackingOff;
        match self.backoff.arm() {
            Some(delay) => AfterExit::RestartIn(delay),
            // Already armed: the armed retry starts it.
            None => AfterExit::RestartIn(Duration::ZERO),
        }
    }

    /// The armed restart is due.
    pub fn retry_due(&mut self) {
        self.backoff.fired();
    }

    /// The runtime is stopping. Whether a process runs that must be waited for (the caller
    /// sends it SIGTERM); otherwise the gateway is stopped at once and no restart happens.
    pub fn stop(&mut self) -> bool {
        match self.state {
            GatewayState::Running => {
                self.state = GatewayState::Stopping;
                true
            }
            GatewayState::Stopping => true,
            GatewayState::BackingOff | GatewayState::Stopped => {
                self.state = GatewayState::Stopped;
                false
            }
        }
    }

    /// Whether the runtime may proceed with its own drain: the gateway is gone for good.
    pub fn is_stopped(&self) -> bool {
        self.state == GatewayState::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reason: &str) -> GatewayFailure {
        GatewayFailure {
            reason: reason.into(),
            stderr_tail: "boom".into(),
            uptime_ms: 5,
        }
    }

    fn started(g: &mut Gateway) {
        g.started(ChildProc::new("gateway".into(), 0), None);
    }

    #[test]
    fn a_new_gateway_starts_at_once() {
        let g = Gateway::default();
        assert!(g.may_start());
        assert_eq!(g.restarts(), 0);
        assert_eq!(g.state(), GatewayState::BackingOff);
    }

    #[test]
    fn deaths_back_off_doubling_and_count_restarts() {
        let mut g = Gateway::default();
        started(&mut g);
        assert_eq!(g.state(), GatewayState::Running);
        assert!(!g.may_start());
        let mut delays = Vec::new();
        for _ in 0..4 {
            match g.ended(failure("exit code 1"), Duration::from_millis(5)) {
                AfterExit::RestartIn(d) => delays.push(d),
                AfterExit::Done => panic!("the runtime is not stopping"),
            }
            assert!(!g.may_start(), "the restart waits for its delay");
            g.retry_due();
            assert!(g.may_start());
            started(&mut g);
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        assert_eq!(g.restarts(), 4);
        assert_eq!(g.last_failure(), Some(&failure("exit code 1")));
    }

    #[test]
    fn a_long_run_starts_the_back_off_over() {
        let mut g = Gateway::default();
        started(&mut g);
        for _ in 0..3 {
            g.ended(failure("exit code 1"), Duration::ZERO);
            g.retry_due();
            started(&mut g);
        }
        assert_eq!(
            g.ended(failure("signal SIGKILL"), CRASH_LOOP_WINDOW),
            AfterExit::RestartIn(Duration::from_millis(100))
        );
    }

    #[test]
    fn a_spawn_failure_is_a_death_without_a_process() {
        let mut g = Gateway::default();
        let after = g.ended(
            failure("cannot execute /nope: No such file or directory"),
            Duration::ZERO,
        );
        assert_eq!(after, AfterExit::RestartIn(Duration::from_millis(100)));
        assert_eq!(g.restarts(), 0, "nothing was started");
        assert!(
            g.last_failure()
                .unwrap()
                .reason
                .starts_with("cannot execute")
        );
    }

    #[test]
    fn stopping_a_running_gateway_waits_for_it_and_never_restarts_it() {
        let mut g = Gateway::default();
        started(&mut g);
        assert!(g.stop());
        assert!(g.stop(), "a second stop still waits");
        assert_eq!(g.state(), GatewayState::Stopping);
        assert!(!g.may_start());
        assert_eq!(
            g.ended(failure("signal SIGTERM"), Duration::ZERO),
            AfterExit::Done
        );
        assert!(g.is_stopped());
        assert_eq!(g.last_failure(), None, "a stop is not a failure");
        assert!(!g.may_start());
    }

    #[test]
    fn stopping_a_backing_off_gateway_is_immediate() {
        let mut g = Gateway::default();
        g.ended(failure("exit code 1"), Duration::ZERO);
        assert!(!g.stop());
        assert!(g.is_stopped());
        g.retry_due();
        assert!(!g.may_start(), "the armed retry starts nothing");
    }
}
