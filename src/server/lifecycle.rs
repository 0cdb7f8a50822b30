//! FC's lifecycle hooks and the runtime's own shutdown.
//!
//! ```text
//!  Running ──/pre-stop or SIGTERM──▶ Draining ──in-flight = 0──▶ StoppingWorkers ──all reaped──▶ Stopped
//! ```
//!
//! Draining refuses new invocations (503 `RuntimeStopped`) while accepted ones finish, each
//! bounded by its own deadline. Hooks never answer 500: FC restarts the instance on a 500.

use super::client::InvokeError;
use super::{Lifecycle, Server};
use crate::fc::{self, Phase};
use crate::turf::worker::{ConnRef, WorkerState};
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
    pub(super) init_waiters: Vec<ConnRef>,
    /// The `/initialize` call being answered: workers initialized meanwhile run their
    /// initializers in its name.
    pub(super) initialize_call: Option<InitializeCall>,
    /// `/pre-stop` requests waiting for the drain.
    pub(super) stop_waiters: Vec<ConnRef>,
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
enum InitStatus {
    Ready,
    Pending,
    Failed(InvokeError),
}

impl Server {
    fn begin_hook(&mut self, client: ConnRef, phase: Phase) {
        if let Some(req) = super::client::request_in(&mut self.front.conns, client) {
            req.phase = Some(phase);
            self.front.fc_log.start(phase, &req.id);
        }
    }

    /// `POST /initialize`: answers once every function's reserved workers are up and their
    /// initializers succeeded, or with the start error (404) when one failed.
    pub(super) fn on_initialize(&mut self, client: ConnRef) {
        self.begin_hook(client, Phase::Initialize);
        if self.lifecycle.phase != Lifecycle::Running {
            let err = InvokeError::new(404, "RuntimeStopped", "the runtime is stopping");
            self.respond_error(client, &err, true);
            return;
        }
        let call =
            super::client::request_in(&mut self.front.conns, client).map(|req| InitializeCall {
                request_id: req.id.clone(),
                timeout_ms: req.head.as_ref().and_then(|head| {
                    fc::seconds_header_ms(&head.headers, "x-fc-initialization-timeout")
                }),
            });
        if call.is_some() {
            self.lifecycle.initialize_call = call;
        }
        self.lifecycle.init_waiters.push(client);
        self.maybe_start_background();
        self.answer_init_waiters();
    }

    fn init_status(&mut self) -> InitStatus {
        let mut pending = false;
        for index in 0..self.scheduler.functions.len() {
            let f = &self.scheduler.functions[index];
            let reservation = usize::try_from(f.profile.worker.reservation_count).unwrap_or(0);
            let mut ready = 0;
            let mut starting = 0;
            for &key in &f.pool.workers {
                match self.supervisor.workers.get(key).map(|w| w.state) {
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

    /// Starts the background work (warm seeds, spare Node.js workers) once the reserved workers
    /// have settled (all ready, or a start failed): until then it would only compete with them
    /// for the CPU, and delay the container's first invocation.
    pub(super) fn maybe_start_background(&mut self) {
        if self.supervisor.background_started || matches!(self.init_status(), InitStatus::Pending) {
            return;
        }
        self.supervisor.background_started = true;
        log::debug!("reserved workers settled: starting seeds and spares");
        for index in 0..self.scheduler.functions.len() {
            self.ensure_seed(index);
        }
        self.balance_spares();
    }

    /// Answers waiting `/initialize` calls if the outcome is known.
    pub(super) fn answer_init_waiters(&mut self) {
        if self.lifecycle.init_waiters.is_empty() {
            return;
        }
        let status = self.init_status();
        let waiters = match status {
            InitStatus::Pending => return,
            _ => std::mem::take(&mut self.lifecycle.init_waiters),
        };
        self.lifecycle.initialize_call = None;
        for client in waiters {
            match &status {
                InitStatus::Ready => self.respond_json(client, 200, &[], br#"{"status":"ok"}"#),
                InitStatus::Failed(err) => self.respond_error(client, err, true),
                InitStatus::Pending => {}
            }
            self.mark_conn_dirty(client.conn);
        }
    }

    /// `GET <readinessPath>`: 200 when the runtime serves and every function has its reserved
    /// workers ready; otherwise 503 with the reasons.
    pub(super) fn on_ready(&mut self, client: ConnRef) {
        let mut reasons = Vec::new();
        if self.lifecycle.phase != Lifecycle::Running {
            reasons.push("the runtime is stopping".to_owned());
        }
        reasons.extend(self.scheduler.breaker.open_trips().map(|t| t.message()));
        for f in &self.scheduler.functions {
            let reservation = usize::try_from(f.profile.worker.reservation_count).unwrap_or(0);
            let ready = f
                .pool
                .workers
                .iter()
                .filter(|&&k| {
                    self.supervisor
                        .workers
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
        if reasons.is_empty() {
            self.respond_json(client, 200, &[], br#"{"ready":true}"#);
        } else {
            let body = serde_json::json!({
                "ready": false,
                "errorType": "NotReady",
                "errorMessage": reasons.join("; "),
                "reasons": reasons,
            });
            self.respond_json(client, 503, &[], body.to_string().as_bytes());
        }
    }

    /// `GET /pre-freeze`: nothing to flush in the runtime; FC freezes the instance after it.
    pub(super) fn on_pre_freeze(&mut self, client: ConnRef) {
        self.begin_hook(client, Phase::PreFreeze);
        self.respond_json(client, 200, &[], br#"{"status":"ok"}"#);
    }

    /// `GET /pre-stop`: drain, stop the workers, then answer.
    pub(super) fn on_pre_stop(&mut self, client: ConnRef) {
        self.begin_hook(client, Phase::PreStop);
        if self.lifecycle.phase == Lifecycle::Stopped {
            self.respond_json(client, 200, &[], br#"{"status":"stopped"}"#);
            return;
        }
        self.lifecycle.stop_waiters.push(client);
        self.begin_drain("pre-stop");
    }

    /// SIGTERM or SIGINT: drain like `/pre-stop`, then exit. A second signal exits at once.
    pub(super) fn on_shutdown_signal(&mut self, signo: i32) {
        let name = crate::sys::signal_name(signo);
        if self.lifecycle.exit_when_stopped {
            log::warn!("{name} again: killing workers and exiting now");
            self.kill_all_workers();
            self.lifecycle.phase = Lifecycle::Stopped;
            self.lifecycle.exit_by = Some(std::time::Instant::now());
            return;
        }
        log::info!("{name}: draining in-flight invocations, then exiting");
        self.lifecycle.exit_when_stopped = true;
        // Connections keep being accepted until the exit, so that a request racing the drain
        // is refused with 503 RuntimeStopped rather than reset. Idle ones are closed now with
        // a FIN, which clients take as "open a new connection".
        self.close_idle_conns();
        self.begin_drain(&name);
        self.check_workers_stopped();
    }

    /// Closes (gracefully) every connection that is between requests.
    pub(super) fn close_idle_conns(&mut self) {
        for key in self.front.conns.keys() {
            let idle =
                self.front.conns.get(key).is_some_and(|c| {
                    c.req.is_none() && c.linger.is_none() && !c.has_parsable_input()
                });
            if idle {
                if let Some(conn) = self.front.conns.get_mut(key) {
                    conn.close_when_flushed = true;
                }
                self.mark_conn_dirty(key);
            }
        }
    }

    fn begin_drain(&mut self, why: &str) {
        if self.lifecycle.phase == Lifecycle::Running {
            log::info!(
                "draining ({why}): {} invocation(s) in flight",
                self.scheduler.inflight
            );
            self.lifecycle.phase = Lifecycle::Draining;
            // /initialize callers would wait for workers that will never come.
            self.lifecycle.initialize_call = None;
            for client in std::mem::take(&mut self.lifecycle.init_waiters) {
                let err = InvokeError::new(404, "RuntimeStopped", "the runtime is stopping");
                self.respond_error(client, &err, true);
            }
        }
        if self.lifecycle.phase == Lifecycle::Draining && self.scheduler.inflight == 0 {
            self.on_drained();
        }
    }

    /// No invocation is in flight any more: stop every worker.
    pub(super) fn on_drained(&mut self) {
        if self.lifecycle.phase != Lifecycle::Draining {
            return;
        }
        self.lifecycle.phase = Lifecycle::StoppingWorkers;
        self.stop_all_seeds();
        self.stop_all_spares();
        for key in self.supervisor.workers.keys() {
            self.stop_worker(key, "runtime stopping");
        }
        self.check_workers_stopped();
    }

    /// Answers `/pre-stop` once every worker has been reaped.
    pub(super) fn check_workers_stopped(&mut self) {
        if self.lifecycle.phase != Lifecycle::StoppingWorkers
            || !self.supervisor.workers.is_empty()
            || !self.supervisor.seeds.is_empty()
            || !self.supervisor.spares.is_empty()
        {
            return;
        }
        log::info!("all workers stopped");
        self.lifecycle.phase = Lifecycle::Stopped;
        for client in std::mem::take(&mut self.lifecycle.stop_waiters) {
            self.respond_json(client, 200, &[], br#"{"status":"stopped"}"#);
            self.mark_conn_dirty(client.conn);
        }
    }
}
