//! The supervisor's state: every child process the runtime starts (workers, warm seeds, spare
//! workers), the one pid map, the sandbox every child gets, the worker runtimes, accounting,
//! log GC and the platform environment.

mod children;
pub(super) mod gateway;
pub(super) mod limit_poll;
pub(super) mod seeds;
pub(super) mod spares;
mod streams;
pub(super) mod supervise;

use super::seeds::SeedSlot;
use crate::config::{FunctionProfile, SystemConfig};
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::reactor::slab::Slab;
use crate::runtime::LaunchSpec;
use crate::runtime::Runtimes;
use crate::sched::shrink::WorkerSnapshot;
use crate::server::Child;
use crate::server::ServerError;
use crate::turf::accounting::Accounting;
use crate::turf::cgroup;
use crate::turf::cgroup::WorkerCgroup;
use crate::turf::child::ChildProc;
use crate::turf::probe;
use crate::turf::probe::Capabilities;
use crate::turf::seed::Seed;
use crate::turf::spare::Spare;
use crate::turf::spawn;
use crate::turf::spawn::Isolation;
use crate::turf::worker::Worker;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The child processes and what they run in.
pub(in crate::server) struct Supervisor {
    workers: Slab<Worker, WorkerKey>,
    /// Every child process the runtime waits for, by pid: workers, seeds and spares.
    children: HashMap<i32, Child>,
    /// Warm seeds (`turf::seed`).
    seeds: Slab<Seed>,
    /// Workers that left service and what that means elsewhere, until the loop deals with
    /// them (`Effect::WorkersGone`).
    departures: Vec<super::supervise::Departure>,
    /// Reaped workers whose records wait for their departure to be dealt with
    /// (`Effect::WorkersReaped`).
    reaped: Vec<(WorkerKey, Option<crate::sys::Reaped>)>,
    /// Each function's seed slot, by function index (`seeds`).
    seed_slots: Vec<SeedSlot>,
    /// The last process number given to each function's children, by function index.
    process_numbers: Vec<u64>,
    /// Exits of children no record claims (yet): see `seeds::MAX_UNCLAIMED_EXITS`.
    unclaimed_exits: VecDeque<(i32, crate::sys::Reaped)>,
    /// Whether seeds can fork workers here, or why not.
    warm_fork: Result<(), String>,
    /// Spare Node.js workers (`turf::spare`) and the pool's bookkeeping.
    spares: Slab<Spare>,
    spare_pool: spares::SparePool,
    /// Whether spares can be used here, or why not.
    spare_support: Result<(), String>,
    /// Seeds and spares have been started (after the reserved workers settled).
    background_started: bool,
    /// Platform environment variables given to every new worker (after its own).
    platform_env: Vec<(String, String)>,
    /// The runtime's own variables that `turf.inheritEnv` passes to workers (after the
    /// platform's).
    inherited_env: Vec<(String, String)>,
    /// The platform's latest credentials and function identity, for initializer contexts.
    platform: crate::fc::PlatformHeaders,
    runtimes: Runtimes,
    /// Log directory (worker stdout/stderr live under it).
    logdir: PathBuf,
    accounting: Accounting,
    /// Whether the limit poll timer is scheduled.
    limit_poll_armed: bool,
    /// Exited workers' log directories and when to delete them, oldest first.
    log_gc: VecDeque<(Instant, PathBuf)>,
    /// Whether the log GC timer is scheduled.
    log_gc_armed: bool,
    /// What the machine lets the sandbox enforce (probed once at start-up).
    caps: Capabilities,
    /// The isolation every worker gets (`turf.isolation`), where the probe allows it.
    isolation: Option<Isolation>,
    /// What carries every worker's protocol (`turf.workerChannel`).
    channel: spawn::Channel,
    /// The runtime's own hard `RLIMIT_NOFILE`: workers cannot get more.
    nofile_cap: Option<u64>,
    /// Worker cgroups that could not be removed at reap time, retried every tick.
    stale_cgroups: Vec<WorkerCgroup>,
    /// The user's gateway (`gateway.*`) and how it is started, when one is configured.
    gateway: Option<(crate::turf::gateway::Gateway, gateway::GatewayLaunch)>,
}

impl Supervisor {
    /// The supervisor for `functions` under `config`: raises the fd limit, probes and
    /// prepares the sandbox, decides whether warm seeds and spares can be used here, writes the
    /// worker bootstraps, and takes what workers inherit of the runtime's environment.
    pub(in crate::server) fn new(
        config: &SystemConfig,
        workdir: &Path,
        logdir: PathBuf,
        functions: &[FunctionProfile],
    ) -> Result<Supervisor, ServerError> {
        check_fd_limit(config, functions);
        let (caps, isolation, nofile_cap) = prepare_sandbox(config, workdir, &logdir, functions)?;
        let warm_fork = become_subreaper_for_seeds(&caps, isolation.as_ref());
        let spare_support = spare_support(&caps, isolation.as_ref());
        let runtimes =
            Runtimes::prepare(workdir, config, functions).map_err(ServerError::Runtime)?;
        let mut inherited_env = config.turf.inherit_env.inherited(runtime_env());
        // Only the runtime opens debuggers (`crate::inspector`): an inherited NODE_OPTIONS that
        // would open one in every Node.js worker, on any address, is not passed on.
        inherited_env.retain(|(key, value)| {
            let flag = (key == "NODE_OPTIONS")
                .then(|| crate::inspector::debugger_flag_in(value))
                .flatten();
            if let Some(flag) = flag {
                log::warn!(
                    "workers do not inherit NODE_OPTIONS: {}",
                    crate::inspector::debugger_flag_problem(flag)
                );
            }
            flag.is_none()
        });
        // Names only: the values are the function's credentials.
        let names: Vec<&str> = inherited_env.iter().map(|(k, _)| k.as_str()).collect();
        log::info!(
            "workers inherit {} of the runtime's environment variables (turf.inheritEnv {}): {}",
            names.len(),
            config.turf.inherit_env.describe(),
            names.join(" ")
        );
        Ok(Supervisor {
            workers: Slab::default(),
            children: HashMap::new(),
            seeds: Slab::default(),
            departures: Vec::new(),
            reaped: Vec::new(),
            seed_slots: Vec::new(),
            process_numbers: Vec::new(),
            unclaimed_exits: VecDeque::new(),
            warm_fork,
            spares: Slab::default(),
            spare_pool: spares::SparePool::default(),
            spare_support,
            background_started: false,
            platform_env: Vec::new(),
            inherited_env,
            platform: crate::fc::PlatformHeaders::from_env(runtime_env()),
            runtimes,
            accounting: Accounting::new(&logdir),
            logdir,
            limit_poll_armed: false,
            log_gc: VecDeque::new(),
            log_gc_armed: false,
            caps,
            isolation,
            channel: config.turf.worker_channel,
            nofile_cap,
            stale_cgroups: Vec::new(),
            gateway: None,
        })
    }

    /// The workers, for reading.
    pub(in crate::server) fn workers(&self) -> &Slab<Worker, WorkerKey> {
        &self.workers
    }

    /// Takes a worker record with no process (the loop's glue tests drive it by hand).
    #[cfg(test)]
    pub(in crate::server) fn adopt_worker(&mut self, worker: Worker) -> WorkerKey {
        self.workers.insert(worker)
    }

    /// Worker `key`, to change its record.
    pub(in crate::server) fn worker_mut(&mut self, key: WorkerKey) -> Option<&mut Worker> {
        self.workers.get_mut(key)
    }

    /// The warm seeds.
    pub(in crate::server) fn seeds(&self) -> &Slab<Seed> {
        &self.seeds
    }

    /// The spare workers.
    pub(in crate::server) fn spares(&self) -> &Slab<Spare> {
        &self.spares
    }

    /// The spare pool's bookkeeping.
    pub(in crate::server) fn spare_pool(&self) -> &spares::SparePool {
        &self.spare_pool
    }

    /// Spares follow `shape` from now on (the function that scaled up last).
    pub(in crate::server) fn set_spare_shape(&mut self, shape: crate::turf::spare::SpareShape) {
        self.spare_pool.shape = Some(shape);
    }

    /// Whether spares can be used here, or why not.
    pub(in crate::server) fn spare_support(&self) -> &Result<(), String> {
        &self.spare_support
    }

    /// Whether seeds can fork workers here, or why not.
    pub(in crate::server) fn warm_fork(&self) -> &Result<(), String> {
        &self.warm_fork
    }

    /// Whether seeds and spares have been started (once the reserved workers settled).
    pub(in crate::server) fn background_started(&self) -> bool {
        self.background_started
    }

    /// Seeds and spares may start from now on.
    pub(in crate::server) fn start_background(&mut self) {
        self.background_started = true;
    }

    /// The worker runtimes.
    pub(in crate::server) fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    /// The worker runtimes, to resolve the interpreters a new profile set needs.
    pub(in crate::server) fn runtimes_mut(&mut self) -> &mut Runtimes {
        &mut self.runtimes
    }

    /// The platform environment variables new workers get.
    pub(in crate::server) fn platform_env(&self) -> &[(String, String)] {
        &self.platform_env
    }

    /// Replaces the platform environment; whether it changed.
    pub(in crate::server) fn set_platform_env(&mut self, env: Vec<(String, String)>) -> bool {
        if env == self.platform_env {
            return false;
        }
        self.platform_env = env;
        true
    }

    /// The platform's latest credentials and function identity.
    pub(in crate::server) fn platform(&self) -> &crate::fc::PlatformHeaders {
        &self.platform
    }

    /// The platform's latest credentials and function identity, to take a call's.
    pub(in crate::server) fn platform_mut(&mut self) -> &mut crate::fc::PlatformHeaders {
        &mut self.platform
    }

    /// What the machine lets the sandbox enforce.
    pub(in crate::server) fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Exit counters.
    pub(in crate::server) fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// The next id of a process of function `function` named `name` (`<name>-<kind><n>`:
    /// `hello-3`, `py-seed-4`) and its log directory (empty when children's output goes to the
    /// console).
    pub(in crate::server) fn next_process_id(
        &mut self,
        function: FunctionId,
        name: &str,
        kind: &str,
        config: &SystemConfig,
    ) -> (String, PathBuf) {
        if self.process_numbers.len() <= function.index() {
            self.process_numbers.resize(function.index() + 1, 0);
        }
        self.process_numbers[function.index()] += 1;
        let id = format!("{name}-{kind}{}", self.process_numbers[function.index()]);
        let log_dir = if config.logger.worker_output_to_console {
            PathBuf::new()
        } else {
            self.logdir.join(name).join(&id)
        };
        (id, log_dir)
    }

    /// The limits a worker (or seed) of a function with `profile` runs under.
    pub(in crate::server) fn worker_limits(
        &self,
        profile: &FunctionProfile,
        config: &SystemConfig,
    ) -> spawn::WorkerLimits {
        let rl = &profile.resource_limit;
        let enforce = config.turf.enforce_limits;
        spawn::WorkerLimits {
            memory: Some(rl.memory).filter(|_| enforce),
            cpu: rl.cpu.filter(|_| enforce),
            pids: Some(rl.pids).filter(|_| enforce),
            nofile: Some(self.nofile_cap.map_or(rl.nofile, |cap| rl.nofile.min(cap))),
        }
    }

    /// How to spawn process `id` of a function (a worker or its seed) as `launch` says: in the
    /// function's code directory, with the platform's variables and the function's limits.
    pub(in crate::server) fn spawn_spec<'a>(
        &'a self,
        profile: &'a FunctionProfile,
        launch: &'a LaunchSpec,
        id: &str,
        log_dir: &std::path::Path,
        config: &SystemConfig,
    ) -> spawn::SpawnSpec<'a> {
        let limits = self.worker_limits(profile, config);
        self.spawn_spec_with(profile, launch, id, log_dir, limits)
    }

    /// [`Supervisor::spawn_spec`] under `limits` rather than the function's own.
    pub(in crate::server) fn spawn_spec_with<'a>(
        &'a self,
        profile: &'a FunctionProfile,
        launch: &'a LaunchSpec,
        id: &str,
        log_dir: &std::path::Path,
        limits: spawn::WorkerLimits,
    ) -> spawn::SpawnSpec<'a> {
        spawn::SpawnSpec {
            program: &launch.program,
            args: launch.args.clone(),
            env: self.with_platform_env(launch.env.clone()),
            cwd: &profile.code_dir,
            log_dir: log_dir.to_path_buf(),
            sandbox: spawn::SandboxPlan::build(&self.caps, id, limits, self.isolation.as_ref()),
            channel: self.channel,
        }
    }

    /// The process record of `child`, whichever kind of child it is.
    pub(in crate::server) fn process_mut(&mut self, child: Child) -> Option<&mut ChildProc> {
        match child {
            Child::Worker(key) => self.workers.get_mut(key).map(|w| &mut w.process),
            Child::Seed(key) => self.seeds.get_mut(key).map(|s| &mut s.process),
            Child::Spare(key) => self.spares.get_mut(key).map(|s| &mut s.process),
            Child::Gateway => self.gateway_process_mut(),
        }
    }

    /// A launch environment plus the platform's variables, then what the worker inherits
    /// from the runtime's (`turf.inheritEnv`); the function's own win, then the platform's.
    pub(in crate::server) fn with_platform_env(
        &self,
        mut env: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        for (key, value) in self.platform_env.iter().chain(&self.inherited_env) {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.clone(), value.clone()));
            }
        }
        env
    }

    /// What the scheduler's tick needs to know of `workers`. Inspect workers are left out:
    /// they are never shrunk.
    pub(in crate::server) fn snapshots(&self, workers: &[WorkerKey]) -> Vec<WorkerSnapshot> {
        workers
            .iter()
            .filter_map(|&key| {
                let w = self.workers.get(key).filter(|w| !w.inspect);
                w.map(|w| WorkerSnapshot {
                    key,
                    state: w.state,
                    active: w.active(),
                    started_at: w.process.started_at,
                    last_active: w.last_active,
                })
            })
            .collect()
    }

    /// Removes the cgroups whose processes were still dying at reap time, where it can now.
    pub(in crate::server) fn retry_stale_cgroups(&mut self) {
        self.stale_cgroups.retain(|cg| !cg.try_remove());
    }

    /// Every child process: workers, seeds, spares and the gateway.
    pub(in crate::server) fn processes(&self) -> impl Iterator<Item = &ChildProc> {
        let workers = self.workers.iter().map(|w| &w.process);
        let seeds = self.seeds.iter().map(|s| &s.process);
        let spares = self.spares.iter().map(|s| &s.process);
        let gateway = self.gateway.iter().filter_map(|(g, _)| g.process.as_ref());
        workers.chain(seeds).chain(spares).chain(gateway)
    }
}

/// The runtime's own environment (variables whose name or value is not UTF-8 are left out:
/// nothing the runtime passes on or reads is).
pub(super) fn runtime_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Raises the fd limit as far as allowed, and warns when it still cannot hold
/// `http.maxConnections` clients beside the runtime's own fds and its workers' pipes.
fn check_fd_limit(config: &SystemConfig, functions: &[FunctionProfile]) {
    let limit = match crate::sys::raise_nofile_soft_limit() {
        Ok(limit) => limit,
        Err(err) => {
            log::warn!("[http] cannot read RLIMIT_NOFILE: {err}");
            return;
        }
    };
    // Each worker holds two pipe ends and, briefly at spawn, its log files; the runtime itself
    // needs a few dozen (listener, admin socket, signal pipe, poll, logs).
    let workers: u64 = functions
        .iter()
        .map(|f| u64::from(f.worker.replica_count_limit))
        .sum();
    let needed = config.http.max_connections as u64 + 4 * workers + 64;
    if limit < needed {
        log::warn!(
            "[http] RLIMIT_NOFILE is {limit}, below http.maxConnections ({}) plus what up to \
             {workers} workers need ({needed} in all): clients past the limit get 503 \
             TooManyConnections",
            config.http.max_connections
        );
    }
}

/// Probes what the sandbox can enforce, logs it in one line, removes cgroups left by a runtime
/// that crashed, and decides what every worker gets: the worker user (`turf.user`) without
/// capabilities by default, and `turf.isolation` on top (`turf::privilege`).
fn prepare_sandbox(
    config: &SystemConfig,
    workdir: &std::path::Path,
    logdir: &std::path::Path,
    functions: &[crate::config::FunctionProfile],
) -> Result<(Capabilities, Option<Isolation>, Option<u64>), ServerError> {
    let caps = probe::probe(&cgroup::instance_name());
    log::info!("{}", caps.summary());
    let remote = (functions.iter())
        .filter(|f| {
            let package = f.package.as_ref().map(|p| &p.location);
            matches!(package, Some(crate::config::PackageLocation::Remote(_)))
        })
        .map(|f| f.name.as_str());
    let remote: Vec<&str> = remote.collect();
    if !caps.curl.available && !remote.is_empty() {
        log::warn!(
            "[code] functions {remote:?} have http(s):// code urls, but {}: their starts fail",
            caps.curl.reason()
        );
    }
    let cleanup = cgroup::cleanup_stale(&caps);
    for dir in &cleanup.removed {
        log::info!(
            "[turf] removed cgroup {} left by a runtime that is gone",
            dir.display()
        );
    }
    for dir in &cleanup.left {
        log::warn!("[turf] cannot remove stale cgroup {}", dir.display());
    }
    // A package's directory exists only once it is unpacked: only code directories given as
    // such are checked.
    let code_dirs: Vec<std::path::PathBuf> = (functions.iter())
        .filter(|f| f.package.is_none())
        .map(|f| f.code_dir.clone())
        .collect();
    let isolation =
        crate::turf::privilege::worker_isolation(config, &caps, workdir, logdir, &code_dirs)
            .map_err(ServerError::Runtime)?;
    // Raising RLIMIT_NOFILE above the runtime's own hard limit needs CAP_SYS_RESOURCE, which
    // even root lacks in many containers: workers get at most what the runtime has.
    let nofile_cap = crate::sys::sandbox::nofile_limit()
        .ok()
        .map(|(_, hard)| hard);
    Ok((caps, Some(isolation), nofile_cap))
}

/// Makes the runtime a child subreaper, so that the workers warm seeds fork become the
/// runtime's own children (the runtime reaps and accounts for them), and returns whether seeds
/// can fork workers here. They cannot, and the runtime is left as it is, when `turf.isolation`
/// gives every process its own PID namespace, whose init would adopt a seed's workers; nor when
/// the runtime cannot become a child subreaper. The error says why.
fn become_subreaper_for_seeds(
    caps: &Capabilities,
    isolation: Option<&Isolation>,
) -> Result<(), String> {
    if isolation.is_some_and(|i| i.namespaces) && caps.namespaces.available {
        return Err(
            "turf.isolation gives every process its own PID namespace, whose init would adopt \
             a seed's workers"
                .into(),
        );
    }
    crate::sys::set_child_subreaper().map_err(|e| format!("cannot become a child subreaper: {e}"))
}

/// Whether spare Node.js workers can be used here: not under `turf.isolation`'s namespaces,
/// whose mount namespace is made at spawn for one function's code directory.
fn spare_support(caps: &Capabilities, isolation: Option<&Isolation>) -> Result<(), String> {
    if isolation.is_some_and(|i| i.namespaces) && caps.namespaces.available {
        return Err(
            "turf.isolation makes each worker's mount namespace for its function's code at spawn"
                .into(),
        );
    }
    Ok(())
}
