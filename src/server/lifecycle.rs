//! FC's lifecycle hooks and the runtime's own shutdown: the state, its transitions and the
//! answers, decided here over read-only views of the owners; the loop applies them.
//!
//! ```text
//!  Running ──/pre-stop or SIGTERM──▶ Draining ──in-flight = 0──▶ StoppingWorkers ──all reaped──▶ Stopped
//! ```
//!
//! Draining refuses new invocations (503 `RuntimeStopped`) while accepted ones finish, each
//! bounded by its own deadline. Hooks never answer 500: FC restarts the instance on a 500.

use super::Lifecycle;
use super::client::InvokeError;
use super::scheduler::Scheduler;
use super::supervisor::Supervisor;
use crate::ids::ConnRef;
use crate::turf::worker::WorkerState;
use std::time::Instant;

/// The runtime's own life: where it is, and the hooks waiting on it.
#[derive(Debug)]
pub(super) struct LifecycleState {
    pub(super) phase: Lifecycle,
    /// Exit the loop once stopped (a signal asked for it, not just `/pre-stop`).
    pub(super) exit_when_stopped: bool,
    /// Once stopped, the latest time to exit even if connections are still closing.
    pub(super) exit_by: Option<Instant>,
    /// `/initialize` requests waiting for reserved workers.
    init_waiters: Vec<ConnRef>,
    /// The `/initialize` call being answered: workers initialized meanwhile run their
    /// initializers in its name.
    pub(super) initialize_call: Option<InitializeCall>,
    /// `/pre-stop` requests waiting for the drain.
    stop_waiters: Vec<ConnRef>,
    /// Who this runtime is (its pid and start time): a client of the admin socket that sees it
    /// change knows the runtime restarted and its configuration must be sent again.
    instance: String,
    /// A shutdown signal's name while its drain waits for the gateway to exit: the gateway is
    /// stopped first, so that requests it accepted still reach a runtime that serves them.
    drain_after_gateway: Option<String>,
}

impl Default for LifecycleState {
    fn default() -> LifecycleState {
        LifecycleState {
            phase: Lifecycle::Running,
            exit_when_stopped: false,
            exit_by: None,
            init_waiters: Vec::new(),
            initialize_call: None,
            stop_waiters: Vec::new(),
            instance: {
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("{}-{}", std::process::id(), started.as_millis())
            },
            drain_after_gateway: None,
        }
    }
}

/// What FC's `/initialize` said about the initializers it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InitializeCall {
    /// Its request id, which the initializers' contexts and log lines carry.
    pub(super) request_id: String,
    /// `x-fc-initialization-timeout`, when it sent one: a bound on each initializer.
    pub(super) timeout_ms: Option<u64>,
}

/// What `/initialize` can say right now.
#[derive(Debug)]
pub(super) enum InitStatus {
    Ready,
    Pending,
    Failed(InvokeError),
}

/// What a shutdown signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignalStep {
    /// The first: drain like `/pre-stop`, then exit.
    Drain,
    /// A second one: kill the workers and exit now.
    ExitNow,
}

impl LifecycleState {
    /// Who this runtime is: its pid and start time.
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// The phase's name, for `/healthz`.
    pub(super) fn name(&self) -> &'static str {
        match self.phase {
            Lifecycle::Running => "running",
            Lifecycle::Draining => "draining",
            Lifecycle::StoppingWorkers => "stopping",
            Lifecycle::Stopped => "stopped",
        }
    }

    /// An `/initialize` call: waits for the reserved workers, or is refused while stopping.
    pub(super) fn wait_initialize(
        &mut self,
        client: ConnRef,
        call: Option<InitializeCall>,
    ) -> Result<(), InvokeError> {
        if self.phase != Lifecycle::Running {
            return Err(InvokeError::new(
                404,
                "RuntimeStopped",
                "the runtime is stopping",
            ));
        }
        if call.is_some() {
            self.initialize_call = call;
        }
        self.init_waiters.push(client);
        Ok(())
    }

    /// The `/initialize` calls that `status` answers (none while it is pending).
    pub(super) fn init_waiters_answered(&mut self, status: &InitStatus) -> Vec<ConnRef> {
        if matches!(status, InitStatus::Pending) || self.init_waiters.is_empty() {
            return Vec::new();
        }
        self.initialize_call = None;
        std::mem::take(&mut self.init_waiters)
    }

    /// Whether `/initialize` calls wait.
    pub(super) fn has_init_waiters(&self) -> bool {
        !self.init_waiters.is_empty()
    }

    /// A `/pre-stop` call: false when the runtime has stopped already (answer it at once).
    pub(super) fn wait_stop(&mut self, client: ConnRef) -> bool {
        if self.phase == Lifecycle::Stopped {
            return false;
        }
        self.stop_waiters.push(client);
        true
    }

    /// A shutdown signal.
    pub(super) fn on_signal(&mut self, now: Instant) -> SignalStep {
        if self.exit_when_stopped {
            self.phase = Lifecycle::Stopped;
            self.exit_by = Some(now);
            return SignalStep::ExitNow;
        }
        self.exit_when_stopped = true;
        SignalStep::Drain
    }

    /// The drain the signal `name` asked for waits until the gateway has exited.
    pub(super) fn drain_after_gateway(&mut self, name: String) {
        self.drain_after_gateway = Some(name);
    }

    /// The gateway is gone for good: the name of the signal whose drain now begins, if one
    /// was waiting for it.
    pub(super) fn gateway_gone(&mut self) -> Option<String> {
        self.drain_after_gateway.take()
    }

    /// Starts draining if running. Returns the `/initialize` calls to refuse: they would wait
    /// for workers that will never come. `None` when it was not running.
    pub(super) fn begin_drain(&mut self) -> Option<Vec<ConnRef>> {
        if self.phase != Lifecycle::Running {
            return None;
        }
        self.phase = Lifecycle::Draining;
        self.initialize_call = None;
        Some(std::mem::take(&mut self.init_waiters))
    }

    /// No invocation is in flight: whether the workers must now be stopped.
    pub(super) fn drained(&mut self) -> bool {
        if self.phase != Lifecycle::Draining {
            return false;
        }
        self.phase = Lifecycle::StoppingWorkers;
        true
    }

    /// Every child is reaped: the `/pre-stop` calls to answer, once, on the way to Stopped.
    pub(super) fn all_stopped(&mut self) -> Option<Vec<ConnRef>> {
        if self.phase != Lifecycle::StoppingWorkers {
            return None;
        }
        self.phase = Lifecycle::Stopped;
        Some(std::mem::take(&mut self.stop_waiters))
    }
}

/// Whether every function's reserved workers are ready, still starting, or cannot start.
pub(super) fn init_status(scheduler: &Scheduler, supervisor: &Supervisor) -> InitStatus {
    let mut pending = false;
    for f in scheduler.functions() {
        let reservation = usize::try_from(f.profile.worker.reservation_count).unwrap_or(0);
        let mut ready = 0;
        let mut starting = 0;
        for &key in &f.pool.workers {
            match supervisor.workers().get(key).map(|w| w.state) {
                Some(WorkerState::Ready) => ready += 1,
                Some(s) if s.is_starting() => starting += 1,
                _ => {}
            }
        }
        if ready >= reservation {
            continue;
        }
        if starting == 0
            && let Some(block) = &f.pool.launch_blocked
        {
            return InitStatus::Failed(InvokeError::new(
                404,
                "WorkerStartFailed",
                format!(
                    "function {} cannot start its reserved workers: {block}",
                    f.profile.name
                ),
            ));
        }
        if starting == 0
            && f.pool.fails_fast()
            && let Some(error) = &f.pool.last_start_error
        {
            return InitStatus::Failed(InvokeError {
                status: 404,
                error_type: error.error_type.clone(),
                message: format!(
                    "function {} failed to initialize: {}",
                    f.profile.name, error.message
                ),
                stack: (!error.stack.is_empty()).then(|| error.stack.clone()),
            });
        }
        pending = true;
    }
    if pending {
        InitStatus::Pending
    } else {
        InitStatus::Ready
    }
}

/// Why the runtime is not ready to serve (`readinessPath`); empty when it is.
pub(super) fn unready_reasons(
    lifecycle: &LifecycleState,
    scheduler: &Scheduler,
    supervisor: &Supervisor,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if lifecycle.phase != Lifecycle::Running {
        reasons.push("the runtime is stopping".to_owned());
    }
    reasons.extend(scheduler.breaker().open_trips().map(|t| t.message()));
    for f in scheduler.functions() {
        let reservation = usize::try_from(f.profile.worker.reservation_count).unwrap_or(0);
        let ready = f
            .pool
            .workers
            .iter()
            .filter(|&&k| {
                supervisor
                    .workers()
                    .get(k)
                    .is_some_and(|w| w.state == WorkerState::Ready)
            })
            .count();
        if ready < reservation {
            let why = f
                .pool
                .launch_blocked
                .as_deref()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default();
            reasons.push(format!(
                "function {} has {ready} of its {reservation} reserved workers ready{why}",
                f.profile.name
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::slab::Key;

    fn client(idx: u32) -> ConnRef {
        ConnRef {
            conn: Key { idx, generation: 0 },
            seq: 1,
        }
    }

    #[test]
    fn the_lifecycle_goes_through_its_phases_once_and_answers_its_waiters() {
        let mut l = LifecycleState::default();
        assert_eq!(l.name(), "running");
        let call = InitializeCall {
            request_id: "init-1".into(),
            timeout_ms: Some(1000),
        };
        assert!(l.wait_initialize(client(1), Some(call.clone())).is_ok());
        assert_eq!(l.initialize_call, Some(call));
        assert!(l.init_waiters_answered(&InitStatus::Pending).is_empty());
        assert!(l.wait_stop(client(2)));
        // Draining refuses the /initialize calls that would wait for ever.
        assert_eq!(l.begin_drain(), Some(vec![client(1)]));
        assert_eq!(l.initialize_call, None);
        assert_eq!(l.begin_drain(), None, "only once");
        assert!(l.wait_initialize(client(3), None).is_err());
        assert!(l.drained());
        assert!(!l.drained());
        assert_eq!(l.name(), "stopping");
        assert_eq!(l.all_stopped(), Some(vec![client(2)]));
        assert_eq!(l.all_stopped(), None);
        assert_eq!(l.name(), "stopped");
        assert!(!l.wait_stop(client(4)), "answered at once once stopped");
    }

    #[test]
    fn a_second_signal_exits_at_once() {
        let mut l = LifecycleState::default();
        let now = Instant::now();
        assert_eq!(l.on_signal(now), SignalStep::Drain);
        assert!(l.exit_when_stopped);
        assert_eq!(l.on_signal(now), SignalStep::ExitNow);
        assert_eq!(l.phase, Lifecycle::Stopped);
        assert_eq!(l.exit_by, Some(now));
    }

    #[test]
    fn init_waiters_are_answered_once_the_status_is_known() {
        let mut l = LifecycleState::default();
        assert!(l.wait_initialize(client(1), None).is_ok());
        assert!(l.wait_initialize(client(2), None).is_ok());
        assert!(l.has_init_waiters());
        assert_eq!(
            l.init_waiters_answered(&InitStatus::Ready),
            vec![client(1), client(2)]
        );
        assert!(!l.has_init_waiters());
        assert!(l.init_waiters_answered(&InitStatus::Ready).is_empty());
    }
}
