//! The server: one `mio` event loop that owns the FC listener, every client connection, every
//! worker's pipes, the signal pipe and all deadlines.
//!
//! The loop body is: poll → handle each event → fire due timers → flush everything that has
//! output. Flushing once per iteration batches all frames for a worker (and all bytes for a
//! client) produced by one batch of events into a single `write`.
//!
//! The state is split among three owners: the front end ([`front`]: listeners and
//! connections), the supervisor ([`supervisor`]: child processes and the sandbox) and the
//! scheduler ([`scheduler`]: functions, queues, admission). The handlers split the work by
//! side: [`client`] drives HTTP connections, [`bridge`] moves invocations between connections
//! and workers, [`supervise`] starts, stops and reaps workers, [`lifecycle`] answers FC's hooks
//! and handles shutdown.

/// The loop's parts lent to the supervisor for one call (`supervisor::Lent`), borrowed field
/// by field so that the scheduler and the front end stay usable beside it.
macro_rules! lent {
    ($server:expr) => {
        $crate::server::Lent {
            registry: $server.poll.registry(),
            timers: &mut $server.timers,
            clock: &$server.clock,
            console: &mut $server.console,
            config: &$server.config,
            effects: &mut $server.effects,
        }
    };
}

mod access_log;
mod admin;
mod bridge;
mod console;
mod effects;
mod front;
#[cfg(test)]
mod glue_tests;
mod lifecycle;
mod scheduler;
mod supervisor;

use front::{client, conn};
use scheduler::{reconfig, schedule};
use supervisor::{seeds, spares, supervise};

use crate::config::{FunctionProfile, ServiceProfile, SystemConfig};
use crate::fc::{InvokeKind, Phase, Route, Target};
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::pool::StartError;
use crate::reactor::busy_poll::{self, BusyPoll};
use crate::reactor::clock::LoopClock;
use crate::reactor::slab::Key;
use crate::reactor::timer::Timers;
use crate::reactor::token::{self, Source};
use crate::sched::ScaleAction;
use crate::turf::cgroup;
use crate::turf::worker::ReadResult;
use crate::wire;
use client::InvokeError;
use effects::{Effect, Effects};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Events handled per poll call.
const EVENTS_CAPACITY: usize = 1024;

/// What a poll event says about a client connection: a value the loop's handling of it takes,
/// so that tests can give it events the poller never made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientReadiness {
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    error: bool,
}

impl ClientReadiness {
    fn of(event: &mio::event::Event) -> Self {
        ClientReadiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            error: event.is_error(),
        }
    }
}

/// Framed request-body bytes for one worker above which they are written to its pipe at once
/// rather than at the end of the iteration: a quarter of the default window.
const WORKER_WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Upper bound on how long the loop sleeps with nothing scheduled, so that housekeeping (idle
/// buffer release, the RSS of an idle runtime) still happens.
const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// How soon to try the console again when its reader was not keeping up.
const CONSOLE_RETRY: Duration = Duration::from_millis(10);
/// How long an exiting runtime waits for the access log's last lines to reach the disk.
const ACCESS_LOG_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Everything the server needs to start.
#[derive(Debug)]
pub struct ServerOptions {
    /// Address to bind (0.0.0.0:port; FC cannot reach loopback).
    pub addr: SocketAddr,
    /// System configuration.
    pub config: SystemConfig,
    /// Validated function profiles.
    pub functions: Vec<FunctionProfile>,
    /// Validated service profiles (their targets exist among `functions`).
    pub services: Vec<ServiceProfile>,
    /// The function profiles as written (answered by `GET /v1/functions`).
    pub raw_functions: Vec<serde_json::Value>,
    /// The service profiles as written.
    pub raw_services: Vec<serde_json::Value>,
    /// The directory the profiles' relative code urls were resolved against (their file's).
    pub functions_base: PathBuf,
    /// Work directory (bootstraps are written here).
    pub workdir: PathBuf,
    /// Log directory (worker stdout/stderr live under it).
    pub logdir: PathBuf,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug)]
pub enum ServerError {
    /// The admin socket could not be created.
    Admin(String),
    /// Binding the FC port failed.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Binding `metrics.address` failed.
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Preparing the worker runtimes failed (for example, writing the bootstrap).
    Runtime(String),
    /// The event loop itself failed.
    Poll(io::Error),
    /// The runtime's own stdout or stderr cannot be used (closed at start).
    Console(io::Error),
    /// `defaultFunction` names no function.
    UnknownDefault(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::MetricsBind { addr, source } => {
                write!(
                    f,
                    "cannot serve metrics on {addr} (metrics.address): {source}"
                )
            }
            ServerError::Runtime(msg) | ServerError::Admin(msg) => write!(f, "{msg}"),
            ServerError::Poll(source) => write!(f, "event loop failed: {source}"),
            ServerError::Console(source) => write!(f, "cannot use stdout/stderr: {source}"),
            ServerError::UnknownDefault(name) => {
                write!(
                    f,
                    "defaultFunction {name:?} is not one of the configured functions"
                )
            }
        }
    }
}

impl std::error::Error for ServerError {}

/// A deadline's purpose.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// An invocation's deadline.
    Request(ConnRef),
    /// A worker has not finished starting in time.
    WorkerInit(WorkerKey),
    /// A starting worker whose channel closed has not been reaped in time.
    ExitStatusWait(WorkerKey),
    /// A stopping child process's grace period is over: SIGKILL.
    Kill(Child),
    /// A cancelled stream was not closed by its worker in time.
    CancelGrace {
        /// The worker.
        worker: WorkerKey,
        /// The stream.
        stream: u32,
    },
    /// A function's start back-off has passed.
    SpawnRetry(FunctionId),
    /// Poll the limits the runtime enforces itself.
    LimitPoll,
    /// Delete exited workers' log directories that are due.
    LogGc,
    /// The scheduler's tick: breaker and idle shrink.
    SchedTick,
    /// The water-level and EMA scalers' poll (`controlPlane.workerTrafficStatsPullingMs`).
    ScalerPoll,
    /// A draining worker's `dataPlane.closeTrafficTimeout` passed.
    DrainTimeout(WorkerKey),
    /// A function's seed restart back-off has passed.
    SeedRetry(FunctionId),
    /// The spare restart back-off has passed.
    SpareRetry,
    /// Start the replacement of a taken spare.
    SpareRefill,
    /// A connection's request head did not complete in `http.headerTimeoutMs`.
    HeadTimeout(Key),
    /// A closing connection's lingering time is over.
    Linger(Key),
    /// The console had output it could not write yet: try again.
    ConsoleRetry,
    /// Pending access-log lines are to be handed on.
    AccessLogHandoff,
    /// The gateway's restart back-off is over.
    GatewayRetry,
}

/// The record a child process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    /// A worker (`workers`).
    Worker(WorkerKey),
    /// A warm seed (`seeds`).
    Seed(Key),
    /// A spare worker (`spares`).
    Spare(Key),
    /// The user's gateway (`supervisor/gateway.rs`).
    Gateway,
}

/// The loop's parts an owner borrows for a call that registers sources, arms timers or
/// relays output: the poll registry, the timers and the loop's clock, the console, the
/// configuration, and the effect queue for what the call means for the other owners.
struct Lent<'a> {
    registry: &'a mio::Registry,
    timers: &'a mut Timers<Timer>,
    clock: &'a LoopClock,
    console: &'a mut console::Console,
    config: &'a SystemConfig,
    effects: &'a mut Effects,
}

/// Where the runtime is in its own life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Serving.
    Running,
    /// `/pre-stop` or a signal: no new invocations; in-flight ones finish, then workers stop.
    Draining,
    /// Workers are being stopped.
    StoppingWorkers,
    /// Everything is stopped.
    Stopped,
}

/// The server state. All of it is owned by the one thread running [`Server::run`].
///
/// It keeps only what the loop itself needs (poll, signals, timers, the effect queue, the
/// configuration, the lifecycle and the console that every part writes to) and the three
/// owners of everything else: the front end (listener and connections), the supervisor (child
/// processes and the sandbox) and the scheduler (functions, queues and admission).
pub struct Server {
    poll: Poll,
    signals: Receiver,
    timers: Timers<Timer>,
    /// The time as of this iteration's wake-up, read once for all its handlers.
    clock: LoopClock,
    /// How the loop waits: whether it spins before it sleeps.
    busy_poll: BusyPoll,
    /// Work recorded by handlers, carried out after each event batch (`effects`).
    effects: Effects,
    config: SystemConfig,
    lifecycle: lifecycle::LifecycleState,
    /// The runtime's stdout and stderr, and the relays of children's output into them.
    console: console::Console,
    /// Whether `Timer::ConsoleRetry` is scheduled.
    console_retry_armed: bool,
    /// One line per invocation and hook, handed on with the console's output.
    access_log: access_log::AccessLog,
    /// The requests that ended in this iteration, taken from the front end for the access log
    /// (kept, empty, between iterations).
    ended: Vec<conn::EndedRequest>,
    front: front::FrontEnd,
    supervisor: supervisor::Supervisor,
    scheduler: scheduler::Scheduler,
    /// The code-package cache: builds on helper threads, the keys ready to run from.
    packages: crate::code::Packages,
    /// Whether large request bodies are spliced to workers: `dataPlane.spliceRequestBodies`,
    /// turned off for good when the kernel refuses a splice.
    splice_bodies: bool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.front.local_addr())
            .field("conns", &self.front.connection_count())
            .field("workers", &self.supervisor.workers().len())
            .field("lifecycle", &self.lifecycle.phase)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the FC port, writes the worker bootstraps and installs signal handling. Workers are
    /// started by [`Server::run`].
    pub fn bind(options: ServerOptions) -> Result<Server, ServerError> {
        let ServerOptions {
            addr,
            config,
            mut functions,
            services,
            raw_functions,
            raw_services,
            functions_base,
            workdir,
            logdir,
        } = options;
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let package_root = crate::code::cache_root(&workdir);
        crate::code::place(&package_root, &mut functions);
        let waker = mio::Waker::new(poll.registry(), token::token(Source::Packages))
            .map_err(ServerError::Poll)?;
        let packages =
            crate::code::Packages::new(package_root, config.control_plane.code_packages, waker);
        let mut signals = crate::sys::install_signal_pipe().map_err(ServerError::Poll)?;
        poll.registry()
            .register(
                &mut signals,
                token::token(Source::Signals),
                Interest::READABLE,
            )
            .map_err(ServerError::Poll)?;
        let access_log = access_log::AccessLog::new(&config.logger, &logdir);
        let mut supervisor =
            supervisor::Supervisor::new(&config, &workdir, logdir.clone(), &functions)?;
        let admin_path = crate::admin::socket_path(&workdir);
        // A gateway owns the FC port: the runtime's HTTP listener moves to loopback, or is off.
        let listen = match config.gateway.as_ref().map(|g| g.runtime_port) {
            None => Some(addr),
            Some(crate::config::RuntimePort::Off) => None,
            Some(crate::config::RuntimePort::Loopback(port)) => {
                Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
            }
        };
        let front = front::FrontEnd::bind(listen, admin_path.clone(), &config, poll.registry())?;
        if let Some(gateway) = &config.gateway {
            let fc_port = supervisor::gateway::fc_port_for(addr)
                .map_err(|source| ServerError::Bind { addr, source })?;
            let places = supervisor::gateway::RuntimePlaces {
                fc_port,
                runtime_addr: front.local_addr(),
                workdir: &workdir,
                logdir: &logdir,
                admin_socket: &admin_path,
            };
            supervisor.configure_gateway(supervisor::gateway::GatewayLaunch::new(
                gateway,
                config.turf.graceful_exit_period_ms,
                places,
                supervisor::runtime_env(),
            ));
        }
        let scheduler = scheduler::Scheduler::new(
            functions,
            services,
            scheduler::WrittenProfiles {
                functions: raw_functions,
                services: raw_services,
                base: functions_base,
            },
            config.default_function.as_deref(),
            config.control_plane.scaler,
            Instant::now(),
        )?;
        let console = console::Console::new(
            config.logger.worker_output_line_limit,
            config.logger.console_buffer_size,
        )
        .map_err(ServerError::Console)?;
        Ok(Server {
            poll,
            signals,
            timers: Timers::default(),
            clock: LoopClock::new(),
            busy_poll: BusyPoll::new(
                Duration::from_micros(config.data_plane.busy_poll_micros),
                config.data_plane.busy_poll_max_requests,
                BusyPoll::available_cpus(),
            )
            .with_max_cpu_pressure(config.data_plane.busy_poll_max_cpu_pressure),
            effects: Effects::with_halved_batches_from(config.data_plane.halve_batches_from),
            splice_bodies: config.data_plane.splice_request_bodies,
            config,
            lifecycle: lifecycle::LifecycleState::default(),
            console,
            console_retry_armed: false,
            access_log,
            ended: Vec::new(),
            front,
            supervisor,
            scheduler,
            packages,
        })
    }

    /// The address the HTTP listener actually bound (useful with port 0); `None` when a
    /// gateway owns the FC port and `gateway.runtimePort` is off.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.front.local_addr()
    }

    /// The FC port the gateway serves, when one is configured (a free port when asked for 0).
    pub fn gateway_fc_port(&self) -> Option<u16> {
        self.supervisor.gateway().map(|(_, launch)| launch.fc_port)
    }

    /// Starts the reserved workers and runs the event loop until a signal-initiated shutdown
    /// has completed.
    pub fn run(mut self) -> Result<(), ServerError> {
        if let Err(why) = &self.supervisor.warm_fork()
            && self.scheduler.functions().iter().any(|f| {
                f.profile.runtime == crate::config::Runtime::Python3
                    && !f.profile.worker.disable_seed
            })
        {
            log::warn!("[turf] warm fork is off ({why}): Python workers start cold");
        }
        if let Err(why) = &self.supervisor.spare_support()
            && self.config.turf.spare_workers > 0
        {
            log::info!("[turf] no spare Node.js workers: {why}");
        }
        // Entries of packages no profile uses go first (builds wait for the sweep).
        self.sweep_packages();
        for index in FunctionId::all(self.scheduler.functions().len()) {
            self.scale(index);
        }
        self.supervisor.start_gateway_if_due(&mut lent!(self));
        self.maybe_start_background();
        self.arm_sched_tick();
        self.arm_scaler_poll();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if let Some(why) = self.busy_poll.off_reason() {
            log::debug!("[loop] no busy polling: {why}");
        }
        loop {
            // Read afresh: the iteration's work since the wake-up counts against the timeout.
            let now = self.clock.tick();
            let timeout = if !self.effects.has_next_iteration() {
                self.timers
                    .next_timeout(now)
                    .map_or(MAX_POLL_TIMEOUT, |t| t.min(MAX_POLL_TIMEOUT))
            } else {
                Duration::ZERO
            };
            // `events` still holds the batch just handled.
            let handled = events.iter().count();
            let requests = self.scheduler.inflight();
            if let Err(err) = self.busy_poll.wait(
                &mut self.poll,
                &mut events,
                timeout,
                (handled, requests),
                now,
            ) && err.kind() != io::ErrorKind::Interrupted
            {
                self.supervisor.kill_all_workers();
                return Err(ServerError::Poll(err));
            }
            self.clock.tick();
            self.effects.begin_iteration();
            self.effects.begin_batch(
                events
                    .iter()
                    .filter(|event| matches!(token::source(event.token()), Some(Source::Conn(_))))
                    .count(),
            );
            // Worker and signal events first: a worker that died before a request arrived in
            // the same batch must be out of service before that request is dispatched.
            for event in events.iter() {
                match token::source(event.token()) {
                    Some(Source::Signals) => self.on_signals(),
                    Some(Source::WorkerOut(key)) => self.on_worker_readable(WorkerKey(key)),
                    Some(Source::WorkerIn(key)) => self.mark_worker_dirty(WorkerKey(key)),
                    Some(Source::Seed(key)) => {
                        self.supervisor.on_seed_readable(key, &mut lent!(self));
                    }
                    Some(Source::Spare(key)) => {
                        let mut lp = lent!(self);
                        self.supervisor.on_spare_readable(key, &mut lp);
                    }
                    Some(Source::Output(key)) => {
                        self.console.on_readable(self.poll.registry(), key)
                    }
                    Some(Source::Packages) => self.on_packages_built(),
                    _ => {}
                }
            }
            for event in events.iter() {
                match token::source(event.token()) {
                    Some(Source::Listener) => self.accept(),
                    Some(Source::Admin) => self.accept_admin(),
                    Some(Source::Metrics) => {
                        for key in self.front.accept_metrics(self.poll.registry()) {
                            self.drive_conn(key);
                        }
                    }
                    Some(Source::Conn(key)) => {
                        self.on_client_event(key, ClientReadiness::of(event));
                    }
                    Some(
                        Source::Signals
                        | Source::WorkerOut(_)
                        | Source::WorkerIn(_)
                        | Source::Seed(_)
                        | Source::Spare(_)
                        | Source::Output(_)
                        | Source::Packages,
                    ) => {}
                    None => log::trace!("event for unknown token {:?}", event.token()),
                }
            }
            self.fire_timers();
            self.drain_effects();
            self.flush_console();
            if self.stopped_for_exit() {
                // Answers still being written or lingering closes finish first (bounded by
                // http.lingerTimeoutMs), so that no client sees a reset at exit.
                self.close_idle_conns();
                self.drain_effects();
                if self.front.connection_count() > 0 && !self.exit_deadline_passed() {
                    continue;
                }
                log::info!("stopped; exiting");
                self.log_access();
                self.access_log
                    .close(&mut self.console, ACCESS_LOG_EXIT_WAIT);
                self.flush_console();
                let _ = std::fs::remove_file(self.front.admin_path());
                cgroup::remove_instance(&self.supervisor.caps().cgroup);
                return Ok(());
            }
        }
    }

    /// Whether a signal asked the runtime to exit and everything has stopped: the workers and
    /// the gateway, which may still be stopping when a `/pre-stop` had already stopped the
    /// rest (it is killed after its grace period, and reaped).
    fn stopped_for_exit(&self) -> bool {
        self.lifecycle.phase == Lifecycle::Stopped
            && self.lifecycle.exit_when_stopped
            && self.supervisor.gateway_stopped()
    }

    // ---- FC's lifecycle hooks and shutdown (`lifecycle` decides) ----

    fn begin_hook(&mut self, client: ConnRef, phase: Phase) {
        self.front.begin_hook(client, phase);
    }

    /// `POST /initialize`: answers once every function's reserved workers are up and their
    /// initializers succeeded, or with the start error (404) when one failed. `timeout_ms` is
    /// the `x-fc-initialization-timeout` FC sent, as the route read it.
    fn on_initialize(&mut self, client: ConnRef, timeout_ms: Option<u64>) {
        self.begin_hook(client, Phase::Initialize);
        let call = self
            .front
            .request_mut(client)
            .map(|req| lifecycle::InitializeCall {
                request_id: req.id.clone(),
                timeout_ms,
            });
        match self.lifecycle.wait_initialize(client, call) {
            Err(err) => self.respond_error(client, &err, true),
            Ok(()) => {
                self.maybe_start_background();
                self.answer_init_waiters();
            }
        }
    }

    /// Starts the background work (warm seeds, spare Node.js workers) once the reserved workers
    /// have settled (all ready, or a start failed): until then it would only compete with them
    /// for the CPU, and delay the container's first invocation.
    fn maybe_start_background(&mut self) {
        if self.supervisor.background_started()
            || matches!(
                lifecycle::init_status(&self.scheduler, &self.supervisor),
                lifecycle::InitStatus::Pending
            )
        {
            return;
        }
        self.supervisor.start_background();
        log::debug!("reserved workers settled: starting seeds and spares");
        for index in FunctionId::all(self.scheduler.functions().len()) {
            self.follow_seed(index);
        }
        self.balance_spares();
    }

    /// Answers waiting `/initialize` calls if the outcome is known.
    fn answer_init_waiters(&mut self) {
        if !self.lifecycle.has_init_waiters() {
            return;
        }
        let status = lifecycle::init_status(&self.scheduler, &self.supervisor);
        for client in self.lifecycle.init_waiters_answered(&status) {
            match &status {
                lifecycle::InitStatus::Ready => {
                    self.respond_json(client, 200, &[], br#"{"status":"ok"}"#);
                }
                lifecycle::InitStatus::Failed(err) => self.respond_error(client, err, true),
                lifecycle::InitStatus::Pending => {}
            }
            self.mark_conn_dirty(client.conn);
        }
    }

    /// `GET <readinessPath>`: 200 when the runtime serves and every function has its reserved
    /// workers ready; otherwise 503 with the reasons.
    fn on_ready(&mut self, client: ConnRef) {
        let reasons =
            lifecycle::unready_reasons(&self.lifecycle, &self.scheduler, &self.supervisor);
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
    fn on_pre_freeze(&mut self, client: ConnRef) {
        self.begin_hook(client, Phase::PreFreeze);
        self.respond_json(client, 200, &[], br#"{"status":"ok"}"#);
    }

    /// `GET /pre-stop`: drain, stop the workers, then answer.
    fn on_pre_stop(&mut self, client: ConnRef) {
        self.begin_hook(client, Phase::PreStop);
        if !self.lifecycle.wait_stop(client) {
            self.respond_json(client, 200, &[], br#"{"status":"stopped"}"#);
            return;
        }
        self.begin_drain("pre-stop");
    }

    /// SIGTERM or SIGINT: stop the gateway (if any) and wait for it, then drain like
    /// `/pre-stop` and exit. A second signal exits at once.
    fn on_shutdown_signal(&mut self, signo: i32) {
        let name = crate::sys::signal_name(signo);
        match self.lifecycle.on_signal(Instant::now()) {
            lifecycle::SignalStep::ExitNow => {
                log::warn!("{name} again: killing workers and exiting now");
                self.supervisor.kill_all_workers();
            }
            lifecycle::SignalStep::Drain => {
                if self.supervisor.stop_gateway(&mut lent!(self)) {
                    log::info!("{name}: stopping the gateway first, then draining");
                    self.lifecycle.drain_after_gateway(name);
                    return;
                }
                self.drain_on_signal(&name);
            }
        }
    }

    /// The gateway (if any) is gone: the drain a shutdown signal asked for begins.
    fn drain_on_signal(&mut self, name: &str) {
        log::info!("{name}: draining in-flight invocations, then exiting");
        // Connections keep being accepted until the exit, so that a request racing the drain
        // is refused with 503 RuntimeStopped rather than reset. Idle ones are closed now with a
        // FIN, which clients take as "open a new connection".
        self.close_idle_conns();
        self.begin_drain(name);
        self.check_workers_stopped();
    }

    /// Goes on with a shutdown that waited for the gateway, once it is gone.
    fn after_gateway_reaped(&mut self) {
        if self.supervisor.gateway_stopped()
            && let Some(name) = self.lifecycle.gateway_gone()
        {
            self.drain_on_signal(&name);
        }
    }

    /// Closes (gracefully) every connection that is between requests.
    fn close_idle_conns(&mut self) {
        for key in self.front.close_idle() {
            self.mark_conn_dirty(key);
        }
    }

    fn begin_drain(&mut self, why: &str) {
        if let Some(refused) = self.lifecycle.begin_drain() {
            log::info!(
                "draining ({why}): {} invocation(s) in flight",
                self.scheduler.inflight()
            );
            for client in refused {
                let err = InvokeError::new(404, "RuntimeStopped", "the runtime is stopping");
                self.respond_error(client, &err, true);
            }
        }
        if self.lifecycle.phase == Lifecycle::Draining && self.scheduler.inflight() == 0 {
            self.on_drained();
        }
    }

    /// No invocation is in flight any more: stop every worker.
    fn on_drained(&mut self) {
        if !self.lifecycle.drained() {
            return;
        }
        let mut lp = lent!(self);
        self.supervisor.stop_all_seeds(&mut lp);
        self.supervisor.stop_all_spares(&mut lp);
        self.supervisor.stop_all_workers(&mut lp);
        self.check_workers_stopped();
    }

    /// Answers `/pre-stop` once every worker has been reaped.
    fn check_workers_stopped(&mut self) {
        if !self.supervisor.workers().is_empty()
            || !self.supervisor.seeds().is_empty()
            || !self.supervisor.spares().is_empty()
        {
            return;
        }
        let Some(waiters) = self.lifecycle.all_stopped() else {
            return;
        };
        log::info!("all workers stopped");
        for client in waiters {
            self.respond_json(client, 200, &[], br#"{"status":"stopped"}"#);
            self.mark_conn_dirty(client.conn);
        }
    }

    /// A read-only view of the owners for admin answers and metrics.
    fn admin_view(&self) -> admin::AdminView<'_> {
        admin::AdminView {
            config: &self.config,
            supervisor: &self.supervisor,
            scheduler: &self.scheduler,
            connections: self.front.connection_count(),
            refused_connections: self.front.refused_connections(),
            loop_iterations: self.effects.iterations(),
            console: self.console.stats(),
            access_log: self.access_log.stats(),
            lifecycle: &self.lifecycle,
            busy_poll: &self.busy_poll,
        }
    }

    /// A request on the metrics listener: `GET /metrics` (or `HEAD`), nothing else.
    fn on_metrics_request(&mut self, client: ConnRef, method: &str, path: &str) {
        if path != "/metrics" {
            let err = InvokeError::new(
                404,
                "NotFound",
                format!("{path}: the metrics are at /metrics"),
            );
            self.respond_error(client, &err, false);
            return;
        }
        if method != "GET" && method != "HEAD" {
            let err = InvokeError::new(405, "MethodNotAllowed", "/metrics answers GET and HEAD");
            self.respond_error(client, &err, false);
            return;
        }
        let text = self.admin_view().metrics_text();
        self.respond_metrics(client, &text);
    }

    /// Answers `client` with a scrape of the metrics.
    fn respond_metrics(&mut self, client: ConnRef, text: &str) {
        let content_type = crate::metrics::CONTENT_TYPE;
        let mut lp = lent!(self);
        (self.front).respond(client, 200, content_type, &[], text.as_bytes(), &mut lp);
    }

    /// Answers one admin request, or starts what it asks for.
    fn on_admin_request(&mut self, client: ConnRef, method: &str, path: &str) {
        let view = self.admin_view();
        match view.action(method, path) {
            admin::AdminAction::Answer(body) => {
                self.respond_json(client, 200, &[], body.to_string().as_bytes());
            }
            admin::AdminAction::Metrics(text) => self.respond_metrics(client, &text),
            admin::AdminAction::CollectBody(route) => {
                // The body is collected first; `on_admin_body` answers.
                if let Some(req) = self.request_mut(client) {
                    req.admin = Some(route);
                    req.sink = conn::Sink::Collect;
                }
                self.schedule_drive(client.conn);
            }
            admin::AdminAction::Invoke(target) => self.start_admin_invocation(client, target),
            admin::AdminAction::Refuse(err) => self.respond_error(client, &err, false),
        }
    }

    /// An invocation on the admin socket: its `x-noslate-*` headers say what the function sees
    /// (method, url, headers, baggage, request id) and how long the head may take; the request
    /// is rewritten to that and then invoked like one from the FC port.
    fn start_admin_invocation(&mut self, client: ConnRef, target: Target) {
        let Some(req) = self.request_mut(client) else {
            return;
        };
        let Some(head) = req.head.as_mut() else {
            return;
        };
        let metadata = match crate::admin::invocation::Metadata::parse_now(&head.headers) {
            Ok(metadata) => metadata,
            Err(why) => {
                let err = InvokeError::new(400, "InvalidInvokeMetadata", why.0);
                self.respond_error(client, &err, false);
                return;
            }
        };
        let crate::admin::invocation::Metadata {
            kind,
            method,
            url,
            headers,
            baggage,
            head_timeout_ms,
            request_id,
        } = metadata;
        // Without an id of its own, an invocation that forwards FC's request id (a gateway
        // passing on FC's call with its headers) takes that one, as a call on the FC port does:
        // the function's context and the FC log lines then name the platform's request.
        let forwarded_id = || crate::fc::call_request_id(&headers).map(str::to_owned);
        if let Some(id) = request_id.or_else(forwarded_id) {
            req.id = id;
        }
        head.method = method;
        head.target = url;
        head.headers = headers;
        req.baggage = baggage;
        req.head_deadline = head_timeout_ms.is_some();
        // A gateway forwarding FC's call brings FC's latest credentials, as the call would
        // have on the FC port. The admin socket already refuses the runtime's own workers.
        self.take_platform_headers(client.conn);
        self.start_invocation_within(client, kind, Some(target), head_timeout_ms);
    }

    // ---- Live reconfiguration (`reconfig` validates; the scheduler applies) ----

    /// Handles an admin request whose body has been collected: a profile set, services or
    /// the platform environment.
    fn on_admin_body(&mut self, client: ConnRef) {
        let Some(req) = self.request_mut(client) else {
            return;
        };
        let body = std::mem::take(&mut req.collected);
        let route = req.admin.clone();
        let base_dir = req
            .head
            .as_ref()
            .and_then(|h| h.header("x-noslate-base-dir"))
            .map(PathBuf::from);
        let result = match route {
            Some(crate::admin::Route::SetFunctions) => self.set_functions(&body, base_dir),
            Some(crate::admin::Route::SetServices) => {
                self.scheduler.set_services(&body, &self.config)
            }
            Some(crate::admin::Route::SetEnv) => self.set_platform_env(&body),
            Some(crate::admin::Route::SetInspector(name)) => self.set_inspector(&name, &body),
            _ => return,
        };
        match result {
            Ok(answer) => self.respond_json(client, 200, &[], answer.to_string().as_bytes()),
            Err(err) => self.respond_error(client, &err, false),
        }
    }

    /// `PUT /v1/functions`: validates a whole profile set, resolves the interpreters its
    /// functions need (an unsupported runtime rejects the set; a missing interpreter fails only
    /// that function's requests, as at start-up), and applies it.
    fn set_functions(
        &mut self,
        body: &[u8],
        base_dir: Option<PathBuf>,
    ) -> Result<serde_json::Value, InvokeError> {
        let mut set = reconfig::FunctionSet::parse(body, base_dir, &self.config)?;
        set.place_packages(self.packages.root());
        self.supervisor
            .runtimes_mut()
            .ensure(set.profiles())
            .map_err(|why| InvokeError::new(400, "InvalidProfiles", why))?;
        let in_use = self.functions_in_use();
        for (index, f) in self.scheduler.functions().iter().enumerate() {
            if f.removed && !in_use[index] {
                self.supervisor.forget_seed_slot(FunctionId::new(index));
            }
        }
        let answer = self.scheduler.apply_functions(
            set,
            &self.config,
            self.supervisor.workers(),
            &in_use,
            &mut self.effects,
        );
        if answer.is_ok() {
            self.sweep_packages();
        }
        answer
    }

    /// Removes the cache entries of packages no live function and no live worker uses.
    fn sweep_packages(&mut self) {
        let live = (self.scheduler.functions().iter()).filter(|f| !f.removed);
        self.packages.sweep(live.map(|f| &f.profile));
    }

    /// Package builds finished: the functions waiting for a built one launch their workers;
    /// those whose package failed fail their starts (and their queued requests) with
    /// `CodeFetchFailed`, backing off like any failed start; a later start fetches again.
    fn on_packages_built(&mut self) {
        for built in self.packages.take_built() {
            let waiting: Vec<FunctionId> = FunctionId::all(self.scheduler.functions().len())
                .filter(|&id| {
                    let f = &self.scheduler.functions()[id];
                    !f.removed
                        && f.profile
                            .package
                            .as_ref()
                            .is_some_and(|p| p.key == built.key)
                })
                .collect();
            match built.result {
                Ok(()) => {
                    for function in waiting {
                        self.effects.push(Effect::Scale(function));
                    }
                }
                Err(cause) => {
                    for function in waiting {
                        let profile = &self.scheduler.functions()[function].profile;
                        let message = format!(
                            "Failed to ensure (or download) code of function {} from {}: {cause}",
                            profile.name, profile.url
                        );
                        log::error!("[code] {message}");
                        let error = StartError {
                            error_type: "CodeFetchFailed".into(),
                            message,
                            stack: Vec::new(),
                        };
                        self.on_start_failure(function, error);
                    }
                }
            }
        }
    }

    /// Which function records a worker, a seed or a request still refers to.
    fn functions_in_use(&self) -> Vec<bool> {
        let mut in_use = vec![false; self.scheduler.functions().len()];
        let workers = self.supervisor.workers().iter().map(|w| w.function);
        let seeds = self.supervisor.seeds().iter().map(|s| s.function);
        let requests = (self.front.connections()).filter_map(|c| c.req.as_ref()?.function);
        for index in workers.chain(seeds).chain(requests) {
            if let Some(slot) = in_use.get_mut(index.index()) {
                *slot = true;
            }
        }
        in_use
    }

    /// `PUT /v1/env`: replaces the platform environment variables; every function rolls to new
    /// workers, which get them.
    fn set_platform_env(&mut self, body: &[u8]) -> Result<serde_json::Value, InvokeError> {
        let env = reconfig::parse_platform_env(body)?;
        if !self.supervisor.set_platform_env(env) {
            return Ok(serde_json::json!({ "changed": false }));
        }
        self.scheduler
            .roll_all(self.supervisor.workers(), &mut self.effects);
        Ok(serde_json::json!({ "changed": true }))
    }

    /// `PUT /v1/inspector/NAME`: turns the function's inspector on or off (`{"use": bool}`).
    fn set_inspector(&mut self, name: &str, body: &[u8]) -> Result<serde_json::Value, InvokeError> {
        let function = self.scheduler.function_id(name).ok_or_else(|| {
            InvokeError::new(
                404,
                "FunctionNotFound",
                format!("function {name} not found"),
            )
        })?;
        let on = crate::inspector::parse_use(body)
            .map_err(|why| InvokeError::new(400, "InvalidInspectorRequest", why))?;
        let changed = (self.scheduler).use_inspector(
            function,
            on,
            self.supervisor.workers(),
            &mut self.effects,
        )?;
        Ok(serde_json::json!({ "function": name, "use": on, "changed": changed }))
    }

    /// A worker leaves because the profiles changed (or its inspector was turned off):
    /// stopped while it starts, drained once ready.
    fn retire_worker(&mut self, key: WorkerKey, why: reconfig::Retirement) {
        match self.supervisor.workers().get(key).map(|w| w.state) {
            Some(state) if state.is_starting() => {
                self.supervisor
                    .stop_worker(key, why.reason(), &mut lent!(self))
            }
            Some(crate::turf::worker::WorkerState::Ready) => {
                self.supervisor
                    .drain_worker(key, why.reason(), &mut lent!(self))
            }
            _ => {}
        }
    }

    // ---- Warm seeds (`seeds`, on the supervisor; the profiles come from the scheduler) ----

    /// Starts, replaces or stops `function`'s seed as its profile and state require.
    fn follow_seed(&mut self, function: FunctionId) {
        let running = self.lifecycle.phase == Lifecycle::Running;
        let mut target = self.scheduler.seed_target(function, running);
        // A seed imports the function's code: none before its package is unpacked.
        if let Some(package) = &target.profile.package
            && !self.packages.is_ready(package)
        {
            target.live = false;
        }
        self.supervisor.ensure_seed(&target, &mut lent!(self));
    }

    // ---- Connections (the front end's) and where their requests go ----

    /// A readiness event of client connection `key`. When it ends the first half of a batch
    /// that is handled in two (`dataPlane.halveBatchesFrom`), the work recorded so far is
    /// carried out before the next event is handled.
    fn on_client_event(&mut self, key: Key, ready: ClientReadiness) {
        if ready.writable {
            self.mark_conn_dirty(key);
        }
        if ready.readable || ready.read_closed || ready.error {
            if let Some(conn) = self.front.conn_mut(key) {
                conn.maybe_readable = true;
                conn.hung_up |= ready.read_closed || ready.error;
                conn.reset |= ready.error || ready.write_closed;
            }
            self.drive_conn(key);
        }
        if self.effects.client_event_ends_half() {
            self.drain_effects();
        }
    }

    /// Makes all the progress a connection can make: parse requests, forward body bytes,
    /// finish requests, and read more when (and only when) the current state can use more
    /// input. Bounded rounds per event, so one connection cannot starve the loop (a client
    /// pipelining thousands of tiny requests is served in slices).
    fn drive_conn(&mut self, key: Key) {
        if self.front.is_lingering(key) {
            self.front.drain_lingering(key, &mut lent!(self));
            return;
        }
        for _ in 0..client::MAX_ROUNDS_PER_EVENT {
            self.step_conn(key);
            if !self.front.read_more(key, self.supervisor.workers()) {
                break;
            }
        }
        self.front.end_drive(key, &mut lent!(self));
    }

    /// Steps a connection's buffered input until it must wait, routing what it started and
    /// moving body bytes to workers.
    fn step_conn(&mut self, key: Key) {
        loop {
            let serving = self.lifecycle.phase == Lifecycle::Running;
            match self.front.step(key, serving, &mut lent!(self)) {
                client::Step::Wait => return,
                client::Step::Continue => {}
                client::Step::Started(started) => {
                    (self.busy_poll).note_client(key, self.clock.now());
                    self.route_request(key, started)
                }
                client::Step::AdminBody(client) => self.on_admin_body(client),
                client::Step::Pump { worker, stream } => {
                    if !self.pump_body_to_worker(key, worker, stream)
                        || !self.front.try_complete(key, serving, &mut lent!(self))
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Routes a request whose head was just parsed on `key`: the admin socket's routes, FC's
    /// hooks, the runtime's own paths, or an invocation.
    fn route_request(&mut self, key: Key, started: client::Started) {
        let client::Started {
            client,
            route,
            target,
            admin,
            metrics,
        } = started;
        if let Some((method, path)) = admin {
            self.on_admin_request(client, &method, &path);
            return;
        }
        if let Some((method, path)) = metrics {
            self.on_metrics_request(client, &method, &path);
            return;
        }
        if matches!(
            route,
            Ok(Route::Initialize | Route::PreFreeze | Route::PreStop | Route::Invoke { .. })
        ) {
            self.take_platform_headers(key);
        }
        // The timeout FC sent, read once, and refused before anything starts when it is not one.
        let timeout_header_ms = match self.timeout_header_ms(key, &route) {
            Ok(ms) => ms,
            Err(problem) => {
                if matches!(route, Ok(Route::Initialize))
                    && let Some(req) = self.request_mut(client)
                {
                    // A hook answer, with the `x-fc-status` every hook answer carries.
                    req.phase = Some(Phase::Initialize);
                }
                let err = InvokeError::new(400, "InvalidTimeout", problem);
                self.respond_error(client, &err, false);
                return;
            }
        };
        match route {
            Err(message) => {
                let err = InvokeError::new(400, "InvalidControlPath", message);
                self.respond_error(client, &err, false);
            }
            Ok(Route::Healthz) => {
                // A runtime that is stopping serves no invocation, so it is not healthy.
                let running = self.lifecycle.phase == Lifecycle::Running;
                let body = serde_json::json!({
                    "status": if running { "ok" } else { "stopping" },
                    "lifecycle": self.lifecycle.name(),
                    "workers": self.supervisor.workers().len(),
                });
                let status = if running { 200 } else { 503 };
                self.respond_json(client, status, &[], body.to_string().as_bytes());
            }
            Ok(Route::Initialize | Route::PreFreeze | Route::PreStop)
                if self
                    .front
                    .client_is_descendant(key, self.supervisor.gateway_pid()) =>
            {
                log::warn!(
                    "[http conn={}] refusing a lifecycle hook from a process of the runtime's \
                     own workers",
                    key.idx
                );
                // Still a hook answer, with the `x-fc-status` every hook answer carries.
                if let Some(req) = self.request_mut(client) {
                    req.phase = Some(Phase::Initialize);
                }
                let err = InvokeError::new(
                    403,
                    "HookForbidden",
                    "lifecycle hooks are honoured only from the platform, not from the \
                     runtime's own workers",
                );
                self.respond_error(client, &err, false);
            }
            Ok(Route::Ready) => self.on_ready(client),
            Ok(Route::Initialize) => self.on_initialize(client, timeout_header_ms),
            Ok(Route::PreFreeze) => self.on_pre_freeze(client),
            Ok(Route::PreStop) => self.on_pre_stop(client),
            Ok(Route::Invoke {
                kind,
                function_from_path,
            }) => match target {
                Ok(target) => self.start_invocation_within(
                    client,
                    kind,
                    target.or(function_from_path),
                    timeout_header_ms,
                ),
                Err(message) => {
                    let err = InvokeError::new(400, "AmbiguousTarget", message);
                    self.respond_error(client, &err, false);
                }
            },
        }
    }

    /// The timeout header of the request on `key`, in milliseconds, for the routes that read
    /// one (an invocation's `x-fc-function-timeout`, `/initialize`'s
    /// `x-fc-initialization-timeout`), or why its value is refused.
    fn timeout_header_ms(
        &self,
        key: Key,
        route: &Result<Route, String>,
    ) -> Result<Option<u64>, String> {
        let name = match route {
            Ok(Route::Invoke { .. }) => crate::fc::FUNCTION_TIMEOUT_HEADER,
            Ok(Route::Initialize) => crate::fc::INITIALIZATION_TIMEOUT_HEADER,
            _ => return Ok(None),
        };
        match (self.front.conn(key)).and_then(|c| c.req.as_ref()?.head.as_ref()) {
            Some(head) => crate::fc::seconds_header_ms(&head.headers, name),
            None => Ok(None),
        }
    }

    /// Keeps the instance headers (credentials, function identity) of a platform call, made on
    /// the FC port or forwarded on the admin socket, for the initializers that run outside any
    /// call. A worker could send FC's headers too, to hand other functions' initializers
    /// credentials of its choosing: its calls are ignored.
    fn take_platform_headers(&mut self, key: Key) {
        let news = (self.front.conn(key))
            .and_then(|c| c.req.as_ref()?.head.as_ref())
            .is_some_and(|head| self.supervisor.platform().is_news(&head.headers));
        if !news {
            return;
        }
        if self
            .front
            .client_is_descendant(key, self.supervisor.gateway_pid())
        {
            log::warn!(
                "[http conn={}] ignoring FC credentials sent by the runtime's own workers",
                key.idx
            );
            return;
        }
        if let Some(head) = (self.front.conn(key)).and_then(|c| c.req.as_ref()?.head.as_ref()) {
            self.supervisor.platform_mut().take_from(&head.headers);
            log::debug!("platform credentials and identity updated from a call");
        }
    }

    /// Accepts an invocation: the scheduler admits it (or it is refused), its deadline is
    /// armed, and its function's queue is dispatched and its launches re-planned. `timeout_ms`
    /// is the one its caller chose or FC sent; without one, FC's header among the headers a
    /// gateway forwarded, if it parses, or else the profile's.
    fn start_invocation_within(
        &mut self,
        client: ConnRef,
        kind: InvokeKind,
        target: Option<Target>,
        timeout_ms: Option<u64>,
    ) {
        if !self.front.begin_invocation(client, kind) {
            return;
        }
        let timeout_header_ms = timeout_ms.or_else(|| {
            let head = self.request_mut(client)?.head.as_ref()?;
            crate::fc::timeout_header_ms(&head.headers)
        });
        if let Some(Target::Service(service)) = &target
            && let Some(facts) = self.request_mut(client).and_then(|r| r.access.as_mut())
        {
            facts.service = Some(service.clone());
        }
        let invocation = scheduler::Invocation {
            client,
            kind,
            target,
            timeout_header_ms,
        };
        let now = self.clock.now();
        let admitted = self.scheduler.admit(
            invocation,
            self.lifecycle.phase == Lifecycle::Running,
            self.config.data_plane.request_queue_limit,
            now,
        );
        let scheduler::Admitted {
            function,
            timeout_ms,
        } = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.respond_error(client, &refused.error, refused.function_error);
                return;
            }
        };
        let deadline = now + Duration::from_millis(timeout_ms);
        let timer = self.timers.schedule(deadline, Timer::Request(client));
        if let Some(req) = self.request_mut(client) {
            req.function = Some(function);
            req.timeout_ms = timeout_ms;
            req.deadline = deadline;
            req.counted = true;
            req.deadline_timer = Some(timer);
            req.timing.admitted = Some(now);
        }
        // A worker may take it now; if none can and the function has no queue, it is refused;
        // either way the function's launches are re-planned for the new demand.
        self.effects.push(Effect::Dispatch(function));
        if self.scheduler.queue_disabled(function) {
            self.effects
                .push(Effect::RefuseIfStillQueued { function, client });
        }
        self.effects.push(Effect::Scale(function));
    }

    /// A request ended: its place in flight (and in the queue, if it never left it) is freed;
    /// the last one to end lets a draining runtime stop its workers.
    fn on_request_ended(
        &mut self,
        function: FunctionId,
        client: ConnRef,
        still_queued: bool,
        finished: Option<crate::metrics::Finished>,
    ) {
        (self.scheduler).finish(function, client, still_queued, self.clock.now());
        if let Some(finished) = finished {
            self.scheduler.record_finished(function, &finished);
        }
        if self.lifecycle.phase == Lifecycle::Draining && self.scheduler.inflight() == 0 {
            self.on_drained();
        }
    }

    /// The request `client` refers to, if it is still its connection's current one.
    fn request_mut(&mut self, client: ConnRef) -> Option<&mut conn::Request> {
        self.front.request_mut(client)
    }

    /// Answers `client` with a JSON body (`FrontEnd::respond_json`).
    fn respond_json(&mut self, client: ConnRef, status: u16, extra: &[(&str, &str)], body: &[u8]) {
        (self.front).respond_json(client, status, extra, body, &mut lent!(self));
    }

    /// Answers `client` with an error (`FrontEnd::respond_error`).
    fn respond_error(&mut self, client: ConnRef, err: &InvokeError, function_error: bool) {
        (self.front).respond_error(client, err, function_error, &mut lent!(self));
    }

    /// Writes a worker's response head to `client` (`FrontEnd::write_response_head`).
    fn write_response_head(
        &mut self,
        client: ConnRef,
        status: u16,
        headers: Vec<(String, String)>,
        no_body: bool,
    ) {
        (self.front).write_response_head(client, status, headers, no_body, &mut lent!(self));
    }

    /// Writes a worker's response body bytes to `client` (`FrontEnd::write_response_body`).
    fn write_response_body(&mut self, client: ConnRef, data: &[u8], end: bool) -> bool {
        (self.front).write_response_body(client, data, end, &mut lent!(self))
    }

    /// Fails an invocation for a fault of its function or worker (`FrontEnd::fail_invocation`).
    fn fail_invocation(&mut self, client: ConnRef, err: &InvokeError) {
        self.front
            .fail_invocation(client, err, true, &mut lent!(self));
    }

    // ---- Invocations between connections and workers (`bridge` moves the bytes) ----

    /// Hands `function`'s queued requests to workers with room, oldest first.
    fn dispatch_queue(&mut self, function: FunctionId) {
        loop {
            let front = &self.front;
            let waiting = |client: ConnRef| {
                (front.conn(client.conn))
                    .and_then(|c| c.req.as_ref())
                    .is_some_and(|r| {
                        r.seq == client.seq
                            && matches!(r.sink, conn::Sink::Hold)
                            && r.resp == conn::Resp::NotStarted
                    })
            };
            let Some((client, worker)) =
                (self.scheduler).next_dispatch(function, self.supervisor.workers(), waiting)
            else {
                return;
            };
            self.dispatch(client, worker, function);
        }
    }

    /// Opens a stream on `worker_key` for `client`'s request and sends its head.
    fn dispatch(&mut self, client: ConnRef, worker_key: WorkerKey, function: FunctionId) {
        let profile = &self.scheduler.functions()[function].profile;
        let Some(worker) = self.supervisor.worker_mut(worker_key) else {
            return;
        };
        if profile.worker.disposable {
            worker.life.take();
        }
        let Some(conn) = self.front.conn_mut(client.conn) else {
            return;
        };
        let splice = self.splice_bodies;
        match bridge::open_stream(
            conn,
            client,
            worker,
            worker_key,
            profile,
            &self.clock,
            splice,
        ) {
            None => {}
            Some(Err(err)) => self.respond_error(client, &err, false),
            Some(Ok(opened)) => {
                if opened.sent_continue {
                    self.effects.push(Effect::FlushConn(client.conn));
                }
                self.effects.push(Effect::FlushWorker(worker_key));
                // Body bytes may already be buffered.
                self.effects.push(Effect::DriveConn(client.conn));
            }
        }
    }

    /// Moves connection `key`'s buffered body bytes to its worker stream, within its credit.
    /// Returns whether the body is all sent (or refused, and answered).
    fn pump_body_to_worker(&mut self, key: Key, worker_key: WorkerKey, stream: u32) -> bool {
        let Some(conn) = self.front.conn_mut(key) else {
            return false;
        };
        let Some(seq) = conn.req.as_ref().map(|r| r.seq) else {
            return false;
        };
        let Some(worker) = self.supervisor.worker_mut(worker_key) else {
            return conn.req.as_ref().is_some_and(|r| r.body.is_done());
        };
        match bridge::pump_body(conn, worker, stream) {
            bridge::Pumped::Sent { done } => {
                // A large body is written to the pipe as it is framed, a batch at a time, so
                // that the worker starts on it while the rest is read from the client, and
                // the write buffer never grows to a whole window (and is freed again after).
                if worker.wbuf.len() >= WORKER_WRITE_BATCH_BYTES {
                    self.supervisor.flush_worker(worker_key, &mut lent!(self));
                }
                self.effects.push(Effect::FlushWorker(worker_key));
                done || self.splice_body_to_worker(key, worker_key, stream)
            }
            bridge::Pumped::Idle { done } => {
                done || self.splice_body_to_worker(key, worker_key, stream)
            }
            bridge::Pumped::Refused(err) => {
                log::debug!(
                    "[http conn={} req={}] request body refused: {}",
                    key.idx,
                    conn.req.as_ref().map_or("-", |r| r.id.as_str()),
                    err.message
                );
                let mut lp = lent!(self);
                (self.supervisor).cancel_stream(worker_key, stream, &err.message, &mut lp);
                // The client's framing or size is at fault, not the function.
                (self.front).fail_invocation(ConnRef { conn: key, seq }, &err, false, &mut lp);
                true
            }
        }
    }

    /// Splices connection `key`'s request body from its socket to its worker stream while the
    /// socket has bytes, the stream credit, and the worker room: each piece goes through the
    /// worker's body pipe, which is emptied into its channel before the next. Returns whether
    /// the body is all sent.
    fn splice_body_to_worker(&mut self, key: Key, worker_key: WorkerKey, stream: u32) -> bool {
        loop {
            let (Some(conn), Some(worker)) = (
                self.front.conn_mut(key),
                self.supervisor.worker_mut(worker_key),
            ) else {
                return false;
            };
            match bridge::splice_body(conn, worker, stream) {
                bridge::Spliced::Moved { done } => {
                    self.supervisor.flush_worker(worker_key, &mut lent!(self));
                    if done {
                        return true;
                    }
                }
                bridge::Spliced::Idle => return false,
                bridge::Spliced::Unsupported(err) => {
                    log::warn!(
                        "[http conn={}] request bodies cannot be spliced here ({err}): they \
                         are copied from now on",
                        key.idx
                    );
                    self.splice_bodies = false;
                    // The rest of this body is read into the buffer and copied.
                    self.effects.push(Effect::DriveConn(key));
                    return false;
                }
            }
        }
    }

    /// Reads and handles one bite of what a worker sent: its read buffer's worth. When more
    /// is waiting, the rest is read on the next iteration, after this one's flushes, so that
    /// the bytes just read reach their clients, and the credit they free reaches the worker,
    /// while the worker writes more: a large response flows instead of stopping and starting
    /// once per window. It also keeps one busy worker from holding the loop.
    fn on_worker_readable(&mut self, key: WorkerKey) {
        let Some(result) = self.supervisor.fill_worker(key) else {
            return;
        };
        if !self.decode_worker_frames(key) {
            return;
        }
        match result {
            Ok(ReadResult::More) => self.effects.read_next_iteration(key),
            Ok(ReadResult::Drained) => {}
            Ok(ReadResult::Closed) => {
                self.supervisor.on_worker_pipe_closed(key, &mut lent!(self));
            }
            Err(err) => {
                log::warn!("[turf] reading worker pipe failed: {err}");
                self.supervisor.on_worker_pipe_closed(key, &mut lent!(self));
            }
        }
    }

    /// Handles every complete frame in the worker's read buffer. Returns false when the worker
    /// is gone (killed for a protocol error, or while handling a frame).
    fn decode_worker_frames(&mut self, key: WorkerKey) -> bool {
        // Frames are handled straight from the read buffer, which is taken out of the worker
        // record meanwhile so that handlers may touch the worker (and any connection) freely.
        let Some(mut buf) = self.supervisor.take_frames(key) else {
            return false;
        };
        loop {
            let frame = match wire::decode_frame(wire::Direction::ToRuntime, buf.data()) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    let detail = err.to_string();
                    (self.supervisor).worker_protocol_error(key, &detail, &mut lent!(self));
                    return false;
                }
            };
            let used = frame.wire_len();
            self.on_frame(key, frame);
            buf.consume(used);
            if !self.supervisor.worker_reads(key) {
                return false;
            }
        }
        self.supervisor.put_back_frames(key, buf);
        true
    }

    /// One frame from worker `key`.
    fn on_frame(&mut self, key: WorkerKey, frame: wire::Frame<'_>) {
        let wire::Frame { header, payload } = frame;
        match header.kind {
            wire::Kind::Ready => self.on_worker_ready(key, payload),
            wire::Kind::InitDone => self.on_worker_init_done(key, payload),
            wire::Kind::InitError => self.on_worker_init_error(key, payload),
            wire::Kind::ResponseHead => {
                let head = wire::ResponseHead::parse(payload);
                self.on_response_head(key, header, head);
            }
            wire::Kind::CompactResponseHead => {
                let head = wire::ResponseHead::parse_compact(payload);
                self.on_response_head(key, header, head);
            }
            wire::Kind::ResponseBody => self.on_response_body(key, header, payload),
            wire::Kind::ResponseError => self.on_response_error(key, header.stream, payload),
            wire::Kind::WindowToRuntime => {
                let mut lp = lent!(self);
                match wire::window_credit(payload) {
                    Ok(credit) => {
                        (self.supervisor).on_request_window(key, header.stream, credit, &mut lp);
                    }
                    Err(err) => {
                        let detail = err.to_string();
                        self.supervisor.worker_protocol_error(key, &detail, &mut lp);
                    }
                }
            }
            wire::Kind::Init
            | wire::Kind::RequestHead
            | wire::Kind::CompactHead
            | wire::Kind::RequestBody
            | wire::Kind::Cancel
            | wire::Kind::WindowToWorker => {
                // decode_frame only yields runtime-bound kinds; nothing to do.
            }
        }
    }

    fn on_response_head(
        &mut self,
        key: WorkerKey,
        header: wire::Header,
        head: Result<wire::ResponseHead, wire::WireError>,
    ) {
        let head = match head {
            Ok(h) => h,
            Err(err) => {
                let detail = err.to_string();
                (self.supervisor).worker_protocol_error(key, &detail, &mut lent!(self));
                return;
            }
        };
        if let Some(client) = self.supervisor.stream_client(key, header.stream) {
            self.write_response_head(client, head.status, head.headers, header.is_end());
            if header.is_end() {
                self.write_response_body(client, &[], true);
            }
        }
        if header.is_end() {
            self.close_stream(key, header.stream);
        }
    }

    fn on_response_body(&mut self, key: WorkerKey, header: wire::Header, payload: &[u8]) {
        if let Some(client) = self.supervisor.stream_client(key, header.stream) {
            let started = self
                .request_mut(client)
                .is_some_and(|r| matches!(r.resp, conn::Resp::Streaming { .. }));
            if !started {
                let detail = "RESPONSE_BODY before RESPONSE_HEAD";
                (self.supervisor).worker_protocol_error(key, detail, &mut lent!(self));
                return;
            }
            if !self.write_response_body(client, payload, header.is_end()) {
                let why = "response exceeded its Content-Length";
                (self.supervisor).cancel_stream(key, header.stream, why, &mut lent!(self));
                let err = InvokeError::new(
                    502,
                    "InvalidResponse",
                    "the function wrote more bytes than its Content-Length",
                );
                self.fail_invocation(client, &err);
                return;
            }
        }
        if header.is_end() {
            self.close_stream(key, header.stream);
        }
    }

    fn on_response_error(&mut self, key: WorkerKey, stream: u32, payload: &[u8]) {
        if let Some(client) = self.supervisor.stream_client(key, stream) {
            let error = wire::ErrorPayload::parse_lenient(payload, "Error", "");
            let err = InvokeError {
                status: 404,
                error_type: error.error_type,
                message: error.error_message,
                stack: Some(error.stack_trace),
            };
            self.log_invocation_failure(client, &err);
            self.fail_invocation(client, &err);
        }
        self.close_stream(key, stream);
    }

    /// The worker sent a stream's terminal frame: its request stops feeding it, its slot goes
    /// to the next queued request, and a disposable or draining worker leaves.
    fn close_stream(&mut self, key: WorkerKey, stream: u32) {
        let Some(function) = self.supervisor.workers().get(key).map(|w| w.function) else {
            return;
        };
        let disposable = self.scheduler.functions()[function]
            .profile
            .worker
            .disposable;
        let mut lp = lent!(self);
        let Some(closed) = self
            .supervisor
            .close_stream(key, stream, disposable, &mut lp)
        else {
            return;
        };
        if closed.first {
            // A completed invocation proves the function can run: forgive start-up failures.
            self.scheduler.functions_mut()[function]
                .pool
                .record_stable();
        }
        if let Some(client) = closed.client {
            // The response may be complete while the request body is still arriving: keep the
            // connection in sync by discarding the rest.
            if let Some(req) = self.request_mut(client)
                && matches!(req.sink, conn::Sink::Worker { .. })
            {
                req.sink = conn::Sink::Discard;
            }
            self.effects.push(Effect::DriveConn(client.conn));
        }
        let mut lp = lent!(self);
        if closed.spent {
            // Disposable: one request per worker; it goes once that request is done.
            let why = "disposable worker served its request";
            self.supervisor.drain_worker(key, why, &mut lp);
        } else if closed.drained {
            self.supervisor.stop_worker(key, "drained", &mut lp);
        }
        // The freed slot takes the next queued request once this event is handled.
        self.effects.push(Effect::Dispatch(function));
        (self.scheduler).retire_if_removed(function, self.supervisor.workers(), &mut self.effects);
    }

    /// An invocation's deadline passed: its worker stream is cancelled and it fails with
    /// `FunctionTimeout`.
    fn on_request_deadline(&mut self, client: ConnRef) {
        let Some(req) = self.request_mut(client) else {
            return;
        };
        req.deadline_timer = None;
        let timeout_ms = req.timeout_ms;
        let sink = req.sink;
        let name = (req.function)
            .map(|f| self.scheduler.functions()[f].profile.name.as_str())
            .unwrap_or_default();
        let message = if matches!(sink, conn::Sink::Hold) {
            format!("waiting for a worker of function {name} timed out after {timeout_ms} ms")
        } else {
            format!("function {name} did not answer within its timeout of {timeout_ms} ms")
        };
        if let conn::Sink::Worker { worker, stream } = sink {
            let why = "deadline exceeded";
            (self.supervisor).cancel_stream(worker, stream, why, &mut lent!(self));
        }
        let err = InvokeError::new(404, "FunctionTimeout", message);
        self.log_invocation_failure(client, &err);
        self.fail_invocation(client, &err);
    }

    /// One warn line in the runtime's own log for an invocation that failed with a timeout, a
    /// function error or its worker's death, so that such failures are not only in the
    /// worker's own files. Runs on failure paths only; a multi-line message stays on one line.
    fn log_invocation_failure(&self, client: ConnRef, err: &InvokeError) {
        if !log::log_enabled!(log::Level::Warn) {
            return;
        }
        let Some(req) = (self.front.conn(client.conn))
            .and_then(|c| c.req.as_ref())
            .filter(|r| r.seq == client.seq)
        else {
            return;
        };
        let function = (req.function)
            .and_then(|f| self.scheduler.functions().get(f.index()))
            .map_or("-", |f| f.profile.name.as_str());
        let message = err.message.trim_end().replace('\n', "\\n");
        log::warn!(
            "[dp req={}] function {function} failed: {}: {message}",
            req.id,
            err.error_type
        );
    }

    // ---- Workers' lives (the supervisor's) and what they mean for their functions ----

    /// Launches workers for `function` as the queue and the reservation need.
    fn scale(&mut self, function: FunctionId) {
        self.scale_with(function, ScaleAction::Hold);
    }

    /// Launches the workers the scheduler's plan for `function` asks for, and fails the
    /// queued requests it says no worker can come for. The seed follows the function: started
    /// with it, replaced with its code, stopped when it is removed or the runtime stops. While
    /// the function's inspector is on, its inspect worker is planned too.
    fn scale_with(&mut self, function: FunctionId, action: ScaleAction) {
        self.follow_seed(function);
        if self.lifecycle.phase != Lifecycle::Running
            || self.scheduler.functions()[function].removed
        {
            return;
        }
        let counts = self.worker_counts(function, false);
        let now = self.clock.now();
        let decision = (self.scheduler).plan_launches(function, counts, &self.config, action, now);
        self.carry_out(function, decision, false);
        if self.scheduler.inspecting(function) {
            let counts = self.worker_counts(function, true);
            // After `carry_out`, which may have started a worker and read the clock again.
            let now = self.clock.now();
            let decision =
                (self.scheduler).plan_inspect_launch(function, counts, &self.config, now);
            self.carry_out(function, decision, true);
        }
    }

    /// What a launch plan needs of `function`'s ordinary or inspect workers.
    fn worker_counts(&self, function: FunctionId, inspect: bool) -> schedule::WorkerCounts {
        let f = &self.scheduler.functions()[function];
        let (starting, alive) =
            (self.supervisor).worker_counts(&f.pool.workers, f.generation, inspect);
        schedule::WorkerCounts {
            starting,
            alive,
            pool_used: self.supervisor.memory_reserved(),
        }
    }

    /// Fails the requests a launch decision gives up on and starts the workers it asks for.
    fn carry_out(
        &mut self,
        function: FunctionId,
        decision: schedule::LaunchDecision,
        inspect: bool,
    ) {
        if let Some((clients, err)) = decision.fail {
            for client in clients {
                self.fail_invocation(client, &err);
            }
        }
        if decision.launch > 0 && !self.ensure_package(function) {
            // Requests wait in the queue, as for a cold start; the build's end re-plans.
            return;
        }
        for _ in 0..decision.launch {
            let started = if inspect {
                self.spawn_inspect_worker(function)
            } else {
                self.spawn_worker(function)
            };
            if !started {
                break;
            }
        }
    }

    /// Whether `function`'s code is on disk: always for a directory; for a package, once it
    /// is unpacked (a build is started if none is under way).
    fn ensure_package(&mut self, function: FunctionId) -> bool {
        let profile = &self.scheduler.functions()[function].profile;
        match &profile.package {
            None => true,
            Some(package) => (self.packages).ensure(package, &profile.url, &profile.signature),
        }
    }

    /// Starts one worker: forked from the function's warm seed when it has a ready one, taken
    /// from the spares when one has its shape, else cold. Returns false when it could not be
    /// started (the failure is recorded).
    fn spawn_worker(&mut self, function: FunctionId) -> bool {
        // Start-up is timed from here, the launch decision, through fork/exec to INIT_DONE.
        let decided = self.clock.tick();
        let started = match self.fork_worker(function, decided) {
            Some(started) => started,
            None => match self.take_spare(function, decided) {
                Some(started) => started,
                None => self.spawn_cold(function, false, decided),
            },
        };
        // A fork (and an exec) can take milliseconds: the rest of the iteration reads the
        // time after it, so that a deadline armed next is not early by that much.
        self.clock.tick();
        started
    }

    /// Starts `function`'s inspect worker: always a fresh process (never a seed's fork or a
    /// spare, whose V8 started without the debugger), and never a second one.
    fn spawn_inspect_worker(&mut self, function: FunctionId) -> bool {
        let decided = self.clock.tick();
        let counts = self.worker_counts(function, true);
        let name = &self.scheduler.functions()[function].profile.name;
        if let Err(message) = crate::inspector::may_launch(name, counts.alive) {
            log::error!("[cp] {message}");
            return false;
        }
        let started = self.spawn_cold(function, true, decided);
        self.clock.tick();
        started
    }

    /// Cold-starts a worker (an inspect worker when `inspect`).
    fn spawn_cold(&mut self, function: FunctionId, inspect: bool, decided: Instant) -> bool {
        let profile = &self.scheduler.functions()[function].profile;
        match (self.supervisor).spawn_cold(function, profile, inspect, decided, &mut lent!(self)) {
            Ok(worker) => self.install_worker(worker).is_some(),
            Err(message) => {
                self.worker_start_failed(function, message);
                false
            }
        }
    }

    /// Asks `function`'s seed to fork a worker, if it has a ready one. `None` when it has none
    /// (the caller cold-starts); otherwise whether a worker is coming.
    fn fork_worker(&mut self, function: FunctionId, decided: Instant) -> Option<bool> {
        let running = self.lifecycle.phase == Lifecycle::Running;
        let target = self.scheduler.seed_target(function, running);
        let fork = (self.supervisor).request_fork(&target, decided, &mut lent!(self))?;
        let id = fork.worker.process.id.clone();
        let Some(key) = self.install_worker(fork.worker) else {
            return Some(false);
        };
        self.supervisor.note_pending_fork(fork.seed, id, key);
        Some(true)
    }

    /// Takes a started worker into the loop (`Supervisor::install_worker`) and into its
    /// function's pool.
    fn install_worker(&mut self, worker: crate::turf::worker::Worker) -> Option<WorkerKey> {
        let function = worker.function;
        let f = &self.scheduler.functions()[function];
        let key =
            (self.supervisor).install_worker(worker, f.generation, &f.profile, &mut lent!(self))?;
        if let Some(package) = &f.profile.package {
            self.packages.note_worker(key, package);
        }
        self.scheduler.functions_mut()[function]
            .pool
            .workers
            .push(key);
        self.arm_limit_poll();
        Some(key)
    }

    /// READY: the worker's INIT carries `/initialize`'s request id and bound when it answers
    /// one, else a fresh id.
    fn on_worker_ready(&mut self, key: WorkerKey, payload: &[u8]) {
        let Some(w) = self.supervisor.workers().get(key) else {
            return;
        };
        let function = w.function;
        let sends_init =
            w.state == crate::turf::worker::WorkerState::Starting && w.process.pid != 0;
        let (request_id, platform_bound_ms) = match &self.lifecycle.initialize_call {
            Some(call) => (call.request_id.clone(), call.timeout_ms),
            None if sends_init => (self.front.next_request_id(), None),
            None => (String::new(), None),
        };
        let init = supervise::InitParams {
            profile: &self.scheduler.functions()[function].profile,
            request_id,
            platform_bound_ms,
        };
        (self.supervisor).on_worker_ready(key, payload, &init, &mut lent!(self));
    }

    /// INIT_DONE: the worker serves; its function's rollout, queue and the waiters follow.
    fn on_worker_init_done(&mut self, key: WorkerKey, payload: &[u8]) {
        let Some((function, kind, after)) =
            (self.supervisor).on_worker_init_done(key, payload, &mut lent!(self))
        else {
            return;
        };
        let f = &mut self.scheduler.functions_mut()[function];
        f.pool.record_initialized();
        f.starts.record(kind, after);
        (self.scheduler).check_rollout(function, self.supervisor.workers(), &mut self.effects);
        self.effects.push(Effect::Dispatch(function));
        self.effects.push(Effect::Waiters);
    }

    /// INIT_ERROR: a failed start for the function; the worker stops.
    fn on_worker_init_error(&mut self, key: WorkerKey, payload: &[u8]) {
        let Some((function, error)) = self.supervisor.init_error(key, payload) else {
            return;
        };
        let reason = format!("initialization failed: {}", error.message);
        self.on_start_failure(function, error);
        self.supervisor.stop_worker(key, &reason, &mut lent!(self));
    }

    /// The init deadline passed: a failed start for the function; the worker is killed, and a
    /// seed that never reported its pid is replaced.
    fn on_worker_init_timeout(&mut self, key: WorkerKey) {
        let Some(function) = self.supervisor.workers().get(key).map(|w| w.function) else {
            return;
        };
        let profile = &self.scheduler.functions()[function].profile;
        let Some(error) = self.supervisor.init_timed_out(key, profile) else {
            return;
        };
        let message = error.message.clone();
        self.on_start_failure(function, error);
        let mut lp = lent!(self);
        let accounted = crate::turf::accounting::ExitReason::TimeoutKill;
        self.supervisor
            .kill_worker(key, &message, accounted, &mut lp);
        self.supervisor
            .fail_seed_of_unforked(key, &message, &mut lp);
    }

    /// A seed reported a forked worker's pid; its READY may have been waiting for it.
    fn on_worker_forked(&mut self, key: WorkerKey, pid: i32) {
        if (self.supervisor).worker_forked(key, pid, &mut lent!(self)) {
            self.on_worker_ready(key, b"(forked)");
        }
    }

    /// A worker of `function` could not even be started: `WorkerStartFailed` with `message`.
    fn worker_start_failed(&mut self, function: FunctionId, message: String) {
        let error = StartError {
            error_type: "WorkerStartFailed".into(),
            message,
            stack: Vec::new(),
        };
        self.on_start_failure(function, error);
    }

    /// Records a failed start, schedules the retry and tells waiting requests.
    fn on_start_failure(&mut self, function: FunctionId, error: StartError) {
        let f = &mut self.scheduler.functions_mut()[function];
        let until = f.pool.record_start_failure(error, Instant::now());
        self.timers.schedule(until, Timer::SpawnRetry(function));
        // The queue waits for the workers that serve it: the inspect worker while the
        // inspector is on.
        let inspect = f.inspector;
        let (starting, alive) =
            (self.supervisor).worker_counts(&f.pool.workers, f.generation, inspect);
        // Only the dying worker may still be counted; nothing else will serve the queue soon.
        if starting <= 1 && alive <= 1 && f.pool.fails_fast() {
            self.fail_queue_with_start_error(function);
        }
        self.effects.push(Effect::Waiters);
    }

    /// Fails `function`'s queue with its last start error.
    fn fail_queue_with_start_error(&mut self, function: FunctionId) {
        if let Some((clients, err)) = self.scheduler.take_queue_with_start_error(function) {
            for client in clients {
                self.fail_invocation(client, &err);
            }
        }
    }

    /// Deals with the workers that left service: their invocations fail with the cause, their
    /// pools lose them, a failed start or a crash loop backs the function off, and the
    /// function is re-planned and its queue dispatched.
    fn on_workers_gone(&mut self) {
        for gone in self.supervisor.take_departures() {
            if let Some(&client) = gone.clients.first()
                && let Some(id) = self.request_mut(client).map(|r| r.id.clone())
            {
                self.supervisor.note_request_at_exit(gone.worker, id);
            }
            for &client in &gone.clients {
                self.log_invocation_failure(client, &gone.error);
                self.fail_invocation(client, &gone.error);
            }
            if !gone.first {
                continue;
            }
            let function = gone.function;
            let pool = &mut self.scheduler.functions_mut()[function].pool;
            pool.workers.retain(|k| *k != gone.worker);
            if gone.start_failed {
                let message = match &gone.stderr_tail {
                    Some(tail) => format!(
                        "{} while starting; the end of its stderr: {tail:?}",
                        gone.error.message
                    ),
                    None => format!("{} while starting", gone.error.message),
                };
                log::warn!("[turf w={}] failed to start: {message}", gone.id);
                let error = StartError {
                    error_type: "WorkerStartFailed".into(),
                    message,
                    stack: Vec::new(),
                };
                self.on_start_failure(function, error);
            } else if let Some(lifetime) = gone.crash_loop {
                // A ready worker that dies on its own, serving nothing, would respawn as fast
                // as it starts: back the respawn off. Waiting requests keep waiting. A worker
                // that dies while serving is replaced at once: only its requests failed.
                let until = pool.record_crash(Instant::now());
                log::warn!(
                    "[turf w={}] died {} ms after it started, before serving any request; \
                     respawning after {} ms",
                    gone.id,
                    lifetime.as_millis(),
                    until.saturating_duration_since(Instant::now()).as_millis()
                );
                self.timers.schedule(until, Timer::SpawnRetry(function));
            }
            self.effects.push(Effect::Scale(function));
            self.effects.push(Effect::Dispatch(function));
            self.effects.push(Effect::Waiters);
        }
    }

    /// Reaped workers' records go, once their departures are dealt with.
    fn on_workers_reaped(&mut self) {
        self.on_workers_gone();
        let functions = &self.scheduler.functions();
        let name = |function: FunctionId| functions[function].profile.name.clone();
        self.supervisor.finish_reaped(name, &mut lent!(self));
        let workers = self.supervisor.workers();
        if self
            .packages
            .forget_workers(|key| workers.get(key).is_none())
        {
            self.sweep_packages();
        }
    }

    // ---- Spare Node.js workers (`spares` decides; the shapes come from the profiles) ----

    /// The spare shape function `function`'s workers need, if they can take spares.
    fn spare_shape_of(&self, function: FunctionId) -> Option<crate::turf::spare::SpareShape> {
        let f = &self.scheduler.functions()[function];
        // A spare starts in the code directory: a package's exists once it is unpacked.
        let unpacked = (f.profile.package.as_ref()).is_none_or(|p| self.packages.is_ready(p));
        if f.removed || !unpacked {
            return None;
        }
        self.supervisor.spare_shape(
            &f.profile,
            self.supervisor.worker_limits(&f.profile, &self.config),
            &self.config,
        )
    }

    /// Brings the spares to `turf.spareWorkers` of the wanted shape, once the runtime serves
    /// and its reserved workers have settled.
    fn balance_spares(&mut self) {
        if self.lifecycle.phase != Lifecycle::Running || !self.supervisor.background_started() {
            return;
        }
        let shapes: Vec<crate::turf::spare::SpareShape> =
            FunctionId::all(self.scheduler.functions().len())
                .filter_map(|i| self.spare_shape_of(i))
                .collect();
        let mut lp = lent!(self);
        self.supervisor.balance_spares(&shapes, &mut lp);
    }

    /// Hands a spare of the right shape to a scale-up of `function`. `None` when there is none
    /// (the caller starts cold); otherwise whether a worker is coming.
    fn take_spare(&mut self, function: FunctionId, decided: Instant) -> Option<bool> {
        let shape = self.spare_shape_of(function)?;
        if self.supervisor.spare_pool().shape.as_ref() != Some(&shape) {
            // A miss: spares follow the function that scaled up last.
            self.supervisor.set_spare_shape(shape);
            self.balance_spares();
            return None;
        }
        let spare_key = self.supervisor.find_spare(&shape)?;
        let f = &self.scheduler.functions()[function];
        let (id, log_dir) =
            (self.supervisor).next_process_id(function, &f.profile.name, "", &self.config);
        let env = match self.supervisor.runtimes().launch_spec(&f.profile, &id) {
            Ok(launch) => self.supervisor.with_platform_env(launch.env),
            Err(_) => return None,
        };
        let cwd = f.profile.code_dir.clone();
        let mut lp = lent!(self);
        let taken = self.supervisor.take_spare(spare_key, &mut lp)?;
        let spares::TakenSpare {
            mut spare,
            to_worker,
            from_worker,
            was_ready,
        } = taken;
        let pid = spare.process.pid;
        let log_dir = spares::move_log_dir(&spare.process.log_dir, log_dir);
        let mut worker =
            crate::turf::worker::Worker::new(id.clone(), function, pid, to_worker, from_worker);
        worker.process.cgroup = spare.process.cgroup.take();
        worker.enforcement = spare.enforcement.clone();
        worker.polled = std::mem::take(&mut spare.polled);
        worker.process.log_dir = log_dir;
        worker.process.stderr_relay = spare.process.stderr_relay.take();
        worker.process.started_at = decided;
        worker.from_spare = true;
        worker.compact_head = spare.compact_head;
        worker.spare_init = Some(crate::turf::worker::SpareInit { env, cwd });
        let key = self.install_worker(worker)?;
        self.supervisor.spare_handed_over(&mut self.timers);
        log::info!(
            "[turf w={id} pid={pid}] taken from {} ({})",
            spare.process.id,
            if was_ready { "ready" } else { "still starting" }
        );
        if was_ready {
            self.on_worker_ready(key, b"(spare)");
            // INIT leaves now, before the refill forks and execs a new spare.
            self.supervisor.flush_worker(key, &mut lent!(self));
        }
        Some(true)
    }

    /// Arms the scheduler tick if it is not armed.
    fn arm_sched_tick(&mut self) {
        if self.scheduler.claim_sched_tick() {
            self.timers
                .schedule(Instant::now() + schedule::SCHED_TICK, Timer::SchedTick);
        }
    }

    /// What the scalers see of `function`'s workers.
    fn worker_snapshots(&self, function: FunctionId) -> Vec<crate::sched::shrink::WorkerSnapshot> {
        (self.supervisor).snapshots(&self.scheduler.functions()[function].pool.workers)
    }

    /// The scheduler tick: the breaker, stale cgroups, then each function's scaling.
    fn on_sched_tick(&mut self) {
        self.scheduler.sched_tick_fired();
        self.sample_cpu_pressure();
        self.scheduler
            .check_breaker(&self.config.system_circuit_breaker, schedule::load1());
        self.supervisor.retry_stale_cgroups();
        if self.lifecycle.phase == Lifecycle::Running {
            let now = Instant::now();
            for function in FunctionId::all(self.scheduler.functions().len()) {
                let snapshots = self.worker_snapshots(function);
                let plan = (self.scheduler).tick_plan(
                    function,
                    &snapshots,
                    &self.config.control_plane,
                    now,
                );
                for victim in plan.drain {
                    self.supervisor
                        .drain_worker(victim, "idle", &mut lent!(self));
                }
            }
        }
        self.arm_sched_tick();
    }

    /// Samples the CPU pressure that decides whether the loop may spin, and logs when it stops
    /// or resumes spinning because of it.
    fn sample_cpu_pressure(&mut self) {
        if self.busy_poll.off_reason().is_some() || !self.busy_poll.watches_cpu_pressure() {
            return;
        }
        let was = self.busy_poll.paused_reason().is_some();
        (self.busy_poll)
            .sample_cpu_pressure(Path::new(busy_poll::CPU_PRESSURE_PATH), self.clock.now());
        match (was, self.busy_poll.paused_reason()) {
            (false, Some(why)) => log::debug!("[loop] no busy polling for now: {why}"),
            (true, None) => log::debug!("[loop] busy polling again"),
            _ => {}
        }
    }

    /// Arms the scaler poll when the configured scaler polls (`waterLevel`, `ema`); functions
    /// added later by a reconfiguration get the same scaler, so the poll runs with or without
    /// functions.
    fn arm_scaler_poll(&mut self) {
        if self.config.control_plane.scaler != crate::config::ScalerKind::Idle {
            let every =
                Duration::from_millis(self.config.control_plane.worker_traffic_stats_pulling_ms);
            self.timers
                .schedule(Instant::now() + every, Timer::ScalerPoll);
        }
    }

    /// The scaler poll: each function's water-level or EMA decision, carried out.
    fn on_scaler_poll(&mut self) {
        if self.lifecycle.phase == Lifecycle::Running {
            let now = Instant::now();
            for function in FunctionId::all(self.scheduler.functions().len()) {
                let snapshots = self.worker_snapshots(function);
                let plan = (self.scheduler).poll_plan(
                    function,
                    &snapshots,
                    &self.config.control_plane,
                    now,
                );
                if let Some(action) = plan.launch {
                    self.scale_with(function, action);
                }
                let kind = self.scheduler.functions()[function].scaler.kind();
                let why = format!("{} scaler", kind.as_str());
                for victim in plan.drain {
                    self.supervisor.drain_worker(victim, &why, &mut lent!(self));
                }
            }
        }
        self.arm_scaler_poll();
    }

    /// Arms the limit poll timer if some worker needs it and it is not armed.
    fn arm_limit_poll(&mut self) {
        if self.supervisor.claim_limit_poll() {
            self.timers.schedule(
                Instant::now() + crate::turf::poll::LIMIT_POLL_INTERVAL,
                Timer::LimitPoll,
            );
        }
    }

    /// One limit poll round: kills the workers over a limit.
    fn on_limit_poll(&mut self) {
        for over in self.supervisor.poll_limits(Instant::now()) {
            log::warn!("[turf] {}; killing its process group", over.message);
            self.supervisor
                .kill_worker(over.worker, &over.message, over.reason, &mut lent!(self));
        }
        self.arm_limit_poll();
    }

    /// Writes the FC log's lines and relayed output to the console as far as it takes them
    /// now, and tries again shortly if some must wait.
    fn flush_console(&mut self) {
        self.log_access();
        let fc_lines = self.front.fc_log_mut().take();
        if !fc_lines.is_empty() {
            // Dropped lines are counted by the console.
            let _ = self.console.write_own(console::Stream::Out, fc_lines);
        }
        self.front.fc_log_mut().clear();
        if self.console.flush(self.poll.registry()) && !self.console_retry_armed {
            self.console_retry_armed = true;
            self.timers
                .schedule(Instant::now() + CONSOLE_RETRY, Timer::ConsoleRetry);
        }
    }

    /// The scheduled access-log hand-off is due.
    fn on_access_log_handoff(&mut self) {
        self.access_log.handoff_due();
        self.log_access();
    }

    /// Takes the access-log lines of the requests that ended in this iteration, and hands
    /// them on when enough are waiting or the oldest has waited long enough.
    fn log_access(&mut self) {
        self.front.take_ended(&mut self.ended);
        for ended in self.ended.drain(..) {
            let function = (ended.function)
                .and_then(|f| self.scheduler.functions().get(f.index()))
                .map(|f| f.profile.name.as_str());
            self.access_log
                .append(&access_log::Entry::of(&ended, function), self.clock.now());
        }
        if let Some(due) = self.access_log.flush(&mut self.console, self.clock.now()) {
            self.timers.schedule(due, Timer::AccessLogHandoff);
        }
    }

    /// Whether a stopped runtime has waited long enough for its connections to close.
    fn exit_deadline_passed(&mut self) -> bool {
        let linger = Duration::from_millis(self.config.http.linger_timeout_ms);
        let now = Instant::now();
        now >= *self.lifecycle.exit_by.get_or_insert(now + linger)
    }

    fn fire_timers(&mut self) {
        let now = self.clock.now();
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Request(client) => self.on_request_deadline(client),
                Timer::WorkerInit(worker) => self.on_worker_init_timeout(worker),
                Timer::ExitStatusWait(worker) => {
                    (self.supervisor).exit_status_wait_over(worker, &mut lent!(self));
                }
                Timer::Kill(child) => self.supervisor.grace_period_over(child),
                Timer::CancelGrace { worker, stream } => {
                    (self.supervisor).on_cancel_grace(worker, stream, &mut lent!(self));
                }
                Timer::SpawnRetry(function) => self.scale(function),
                Timer::LimitPoll => self.on_limit_poll(),
                Timer::LogGc => self.supervisor.collect_logs(&mut self.timers),
                Timer::SchedTick => self.on_sched_tick(),
                Timer::ScalerPoll => self.on_scaler_poll(),
                Timer::DrainTimeout(worker) => {
                    self.supervisor.on_drain_timeout(worker, &mut lent!(self))
                }
                Timer::SeedRetry(function) => {
                    self.supervisor.seed_retry_due(function);
                    self.follow_seed(function);
                }
                Timer::SpareRetry => {
                    self.supervisor.spare_retry_fired();
                    self.balance_spares();
                }
                Timer::SpareRefill => {
                    self.supervisor.spare_refill_fired();
                    self.balance_spares();
                }
                Timer::HeadTimeout(conn) => self.front.on_head_timeout(conn, &mut lent!(self)),
                Timer::AccessLogHandoff => self.on_access_log_handoff(),
                Timer::GatewayRetry => self.supervisor.gateway_retry_due(&mut lent!(self)),
                Timer::ConsoleRetry => {
                    self.console_retry_armed = false;
                    self.flush_console();
                }
                Timer::Linger(conn) => {
                    if let Some(c) = self.front.conn_mut(conn) {
                        c.linger = None;
                    }
                    self.front.close_conn(conn, &mut lent!(self));
                }
            }
        }
    }

    /// Carries out the work recorded while handling this iteration's events and timers, and
    /// whatever that work records in turn, until none is left (`effects`). Worker frames are
    /// written before client bytes, so that workers start on new requests while the client
    /// writes happen.
    fn drain_effects(&mut self) {
        while let Some(effect) = self.effects.pop() {
            self.run_effect(effect);
        }
    }

    /// Carries out one recorded piece of work, by the part of the server that owns it.
    fn run_effect(&mut self, effect: Effect) {
        match effect {
            Effect::DriveConn(key) => self.drive_conn(key),
            Effect::Scale(function) => self.scale(function),
            Effect::Dispatch(function) => self.dispatch_queue(function),
            Effect::RefuseIfStillQueued { function, client } => {
                if let Some(err) = self.scheduler.refusal_if_still_queued(function, client) {
                    self.respond_error(client, &err, true);
                }
            }
            Effect::Retire { worker, why } => self.retire_worker(worker, why),
            Effect::FollowSeed(function) => self.follow_seed(function),
            Effect::WorkerForked { worker, pid } => self.on_worker_forked(worker, pid),
            Effect::WorkersGone => self.on_workers_gone(),
            Effect::WorkersReaped => self.on_workers_reaped(),
            Effect::BalanceSpares => self.balance_spares(),
            Effect::Waiters => {
                self.maybe_start_background();
                self.answer_init_waiters();
                self.check_workers_stopped();
            }
            Effect::ReadWorker(key) => self.on_worker_readable(key),
            Effect::FlushWorker(key) => {
                self.busy_poll.note_worker_fed();
                self.supervisor.flush_worker(key, &mut lent!(self));
            }
            Effect::FlushConn(key) => self.front.flush_conn(key, &mut lent!(self)),
            Effect::LeftQueue { function, client } => {
                self.scheduler.leave_queue(function, client);
            }
            Effect::RequestEnded {
                function,
                client,
                still_queued,
                finished,
            } => {
                (self.busy_poll).note_client(client.conn, self.clock.now());
                self.on_request_ended(function, client, still_queued, finished)
            }
            Effect::CancelStream {
                worker,
                stream,
                why,
            } => (self.supervisor).cancel_stream(worker, stream, why, &mut lent!(self)),
            Effect::ReturnCredit {
                worker,
                stream,
                bytes,
            } => (self.supervisor).return_credit(worker, stream, bytes, &mut lent!(self)),
        }
    }

    /// Runs [`Server::drive_conn`] for `key` later in this iteration, instead of recursing
    /// into it from a worker event or a timer.
    fn schedule_drive(&mut self, key: Key) {
        self.effects.push(Effect::DriveConn(key));
    }

    fn mark_conn_dirty(&mut self, key: Key) {
        self.effects.push(Effect::FlushConn(key));
    }

    fn mark_worker_dirty(&mut self, key: WorkerKey) {
        self.effects.push(Effect::FlushWorker(key));
    }

    /// Accepts what the FC listener has waiting and serves what each new client may already
    /// have sent (its readiness edge may have come before registration).
    fn accept(&mut self) {
        let max = self.config.http.max_connections;
        for key in self.front.accept(max, self.poll.registry()) {
            self.drive_conn(key);
        }
    }

    /// Accepts what the admin socket has waiting, and serves it.
    fn accept_admin(&mut self) {
        let trusted = self.supervisor.gateway_pid();
        for key in self.front.accept_admin(self.poll.registry(), trusted) {
            self.drive_conn(key);
        }
    }

    fn on_signals(&mut self) {
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        loop {
            match io::Read::read(&mut self.signals, &mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Reap first: a SIGTERM handled below may wait for workers that already exited.
        if seen.contains(&(libc::SIGCHLD as u8)) {
            self.supervisor.reap_children(&mut lent!(self));
            self.after_gateway_reaped();
        }
        for signo in [libc::SIGTERM, libc::SIGINT] {
            if seen.contains(&(signo as u8)) {
                self.on_shutdown_signal(signo);
            }
        }
    }
}
