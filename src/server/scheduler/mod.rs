//! The scheduler's state: the functions (profiles, queues, rate-limit buckets, scalers,
//! generations), the services, the default function, the system circuit breaker and the count
//! of invocations in flight.

pub(super) mod inspect;
pub(super) mod reconfig;
pub(super) mod schedule;

use crate::config::{CircuitBreakerConfig, FunctionProfile, ServiceProfile};
use crate::fc::{InvokeKind, Target};
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::pool::Pool;
use crate::rand::Rng;
use crate::reactor::slab::Slab;
use crate::sched::breaker::{BREAKER_ERROR_TYPE, CircuitBreaker, LoadSample};
use crate::sched::dispatch::RoundRobin;
use crate::sched::dispatch::{self, DisposableCandidate, WorkerLoad};
use crate::sched::ema::ConcurrencyMeter;
use crate::sched::ratelimit::TokenBucket;
use crate::sched::scaler::PoolScaler;
use crate::server::client::InvokeError;
use crate::server::seeds;
use crate::turf::worker::{Worker, WorkerState};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Everything the runtime knows about its functions and their demand.
/// A profile set as it was written: `GET /v1/functions` answers it, and a new service set is
/// checked against its functions.
#[derive(Debug, Default)]
pub(in crate::server) struct WrittenProfiles {
    pub functions: Vec<serde_json::Value>,
    pub services: Vec<serde_json::Value>,
    /// The directory their relative code urls were resolved against.
    pub base: PathBuf,
}

#[derive(Debug)]
pub(in crate::server) struct Scheduler {
    functions: Vec<Function>,
    by_name: HashMap<String, FunctionId>,
    default_function: Option<FunctionId>,
    services: Vec<ServiceProfile>,
    /// The function profiles as written (answered by `GET /v1/functions`).
    raw_functions: Vec<serde_json::Value>,
    /// The service profiles as written.
    raw_services: Vec<serde_json::Value>,
    /// The directory `raw_functions`' relative code urls were resolved against.
    functions_base: PathBuf,
    rng: Rng,
    /// Invocations accepted and not yet finished (queued or dispatched).
    inflight: usize,
    /// The system circuit breaker.
    breaker: CircuitBreaker,
    /// Whether the scheduler tick is scheduled.
    sched_tick_armed: bool,
    /// The worker loads a dispatch picks from, kept between dispatches so that picking a
    /// worker for a request does not allocate.
    loads: Vec<WorkerLoad>,
}

/// A configured function, its pool and its scheduling state.
#[derive(Debug)]
pub(in crate::server) struct Function {
    pub(in crate::server) profile: FunctionProfile,
    pub(in crate::server) pool: Pool,
    /// Its `rateLimit`, if any.
    pub(in crate::server) bucket: Option<TokenBucket>,
    /// Cursor for `dispatchMode: round-robin`.
    pub(in crate::server) round_robin: RoundRobin,
    /// Concurrency over time, for the EMA scaler and the stats.
    pub(in crate::server) meter: ConcurrencyMeter,
    /// Its scaler (`controlPlane.scaler`) and the scaler's state.
    pub(in crate::server) scaler: PoolScaler,
    /// Requests turned away, by cause.
    pub(in crate::server) rejected: schedule::Rejections,
    /// Removed from the profile set: takes no new requests; its workers drain.
    pub(in crate::server) removed: bool,
    /// Bumped when its code or resources change; older workers are replaced.
    pub(in crate::server) generation: u64,
    /// Ready workers of the current generation needed before the older ones are drained.
    pub(in crate::server) rollout_target: usize,
    /// Its invocations' outcomes, durations and bytes (`noslate metrics`).
    pub(in crate::server) invocations: crate::metrics::InvocationMetrics,
    /// Its workers' starts (`noslate metrics`).
    pub(in crate::server) starts: crate::metrics::StartMetrics,
    /// Its inspector is on (`PUT /v1/inspector/NAME`): its invocations go to its inspect
    /// worker (`inspect.rs`).
    pub(in crate::server) inspector: bool,
}

impl std::ops::Index<FunctionId> for Vec<Function> {
    type Output = Function;

    fn index(&self, id: FunctionId) -> &Function {
        &self[id.index()]
    }
}

impl std::ops::IndexMut<FunctionId> for Vec<Function> {
    fn index_mut(&mut self, id: FunctionId) -> &mut Function {
        &mut self[id.index()]
    }
}

impl Function {
    /// `worker.maxActivateRequests`: how many invocations one worker runs at once (at least 1).
    pub(in crate::server) fn max_active(&self) -> usize {
        usize::try_from(self.profile.worker.max_activate_requests)
            .unwrap_or(1)
            .max(1)
    }

    pub(in crate::server) fn new(
        profile: FunctionProfile,
        scaler: crate::config::ScalerKind,
        now: Instant,
    ) -> Function {
        Function {
            bucket: profile
                .rate_limit
                .as_ref()
                .map(|limit| TokenBucket::new(limit, now)),
            round_robin: RoundRobin::new(),
            meter: ConcurrencyMeter::new(now),
            scaler: PoolScaler::new(scaler, &profile.worker.ema, now),
            rejected: schedule::Rejections::default(),
            removed: false,
            generation: 0,
            rollout_target: 0,
            invocations: crate::metrics::InvocationMetrics::default(),
            starts: crate::metrics::StartMetrics::default(),
            inspector: false,
            pool: Pool::new(),
            profile,
        }
    }
}

/// An invocation the scheduler took: it is queued for its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) struct Admitted {
    /// The function it goes to.
    pub(in crate::server) function: FunctionId,
    /// Its time limit: `x-fc-invocation-timeout`'s when given, else the profile's.
    pub(in crate::server) timeout_ms: u64,
}

/// An invocation the scheduler turned away, with the answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::server) struct Refused {
    pub(in crate::server) error: InvokeError,
    /// Whether FC should count it as the function's failure (`x-fc-status: 404`).
    pub(in crate::server) function_error: bool,
}

impl Refused {
    fn new(error: InvokeError, function_error: bool) -> Refused {
        Refused {
            error,
            function_error,
        }
    }
}

/// What an invocation brings to admission.
#[derive(Debug, Clone)]
pub(in crate::server) struct Invocation {
    /// Its place on its connection.
    pub(in crate::server) client: ConnRef,
    pub(in crate::server) kind: InvokeKind,
    /// The function or service it names, if any.
    pub(in crate::server) target: Option<Target>,
    /// Its `x-fc-invocation-timeout`, if any.
    pub(in crate::server) timeout_header_ms: Option<u64>,
}

impl Scheduler {
    /// The functions, by id.
    pub(in crate::server) fn functions(&self) -> &Vec<Function> {
        &self.functions
    }

    /// The functions, to change one's pool or scaling state.
    pub(in crate::server) fn functions_mut(&mut self) -> &mut Vec<Function> {
        &mut self.functions
    }

    /// The function profiles as written.
    pub(in crate::server) fn raw_functions(&self) -> &[serde_json::Value] {
        &self.raw_functions
    }

    /// The service profiles as written.
    pub(in crate::server) fn raw_services(&self) -> &[serde_json::Value] {
        &self.raw_services
    }

    /// The system circuit breaker.
    pub(in crate::server) fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// What `function`'s seed needs to know of it; `running` is whether the runtime serves.
    pub(in crate::server) fn seed_target(
        &self,
        function: FunctionId,
        running: bool,
    ) -> seeds::SeedTarget<'_> {
        let f = &self.functions[function];
        seeds::SeedTarget {
            function,
            generation: f.generation,
            profile: &f.profile,
            live: running && !f.removed,
        }
    }

    /// The scheduler for `functions` and `services`; `default` names the function that takes
    /// invocations naming none (the only function when there is one and none is named).
    pub(in crate::server) fn new(
        functions: Vec<FunctionProfile>,
        services: Vec<ServiceProfile>,
        written: WrittenProfiles,
        default: Option<&str>,
        scaler: crate::config::ScalerKind,
        now: Instant,
    ) -> Result<Scheduler, crate::server::ServerError> {
        let by_name: HashMap<String, FunctionId> = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), FunctionId::new(i)))
            .collect();
        let default_function = match default {
            Some(name) => Some(
                *by_name
                    .get(name)
                    .ok_or_else(|| crate::server::ServerError::UnknownDefault(name.to_owned()))?,
            ),
            None if functions.len() == 1 => Some(FunctionId::new(0)),
            None => None,
        };
        Ok(Scheduler {
            functions: functions
                .into_iter()
                .map(|profile| Function::new(profile, scaler, now))
                .collect(),
            by_name,
            default_function,
            services,
            raw_functions: written.functions,
            raw_services: written.services,
            functions_base: written.base,
            rng: Rng::from_entropy(),
            inflight: 0,
            breaker: CircuitBreaker::new(),
            sched_tick_armed: false,
            loads: Vec::new(),
        })
    }

    /// Admission, in order: the target must resolve to a function, the runtime must be
    /// running, the breaker closed, the function's rate limit not exceeded and its queue not
    /// full. An admitted invocation is queued and counted in flight; what follows (dispatch,
    /// scaling) is the caller's to record.
    pub(in crate::server) fn admit(
        &mut self,
        invocation: Invocation,
        running: bool,
        queue_limit: usize,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        let function = self
            .resolve_target(invocation.target)
            .map_err(|err| Refused::new(err, true))?;
        if !running {
            return Err(Refused::new(
                InvokeError::new(
                    503,
                    "RuntimeStopped",
                    "the runtime is stopping (pre-stop or SIGTERM) and accepts no new invocations",
                ),
                true,
            ));
        }
        self.check_breaker_and_rate(function, invocation.kind, now)?;
        let f = &mut self.functions[function];
        let queued = f.pool.queue.len();
        if queued >= queue_limit {
            f.rejected.queue_full += 1;
            return Err(Refused::new(
                InvokeError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "too many requests: {queued} are already waiting for a worker of \
                         function {} (dataPlane.requestQueueLimit = {queue_limit})",
                        f.profile.name
                    ),
                ),
                true,
            ));
        }
        let timeout_ms = invocation
            .timeout_header_ms
            .unwrap_or(f.profile.worker.invoke_timeout_ms)
            .max(1);
        f.meter.start(now);
        f.pool.queue.push_back(invocation.client);
        self.inflight += 1;
        Ok(Admitted {
            function,
            timeout_ms,
        })
    }

    /// The breaker, then the function's rate limit.
    fn check_breaker_and_rate(
        &mut self,
        function: FunctionId,
        kind: InvokeKind,
        now: Instant,
    ) -> Result<(), Refused> {
        let function_error = kind == InvokeKind::Event;
        if self.breaker.is_open() {
            self.functions[function].rejected.breaker_open += 1;
            let message = self
                .breaker
                .open_trips()
                .map(|t| t.message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Refused::new(
                InvokeError::new(503, BREAKER_ERROR_TYPE, message),
                true,
            ));
        }
        let f = &mut self.functions[function];
        if let Some(bucket) = f.bucket.as_mut()
            && !bucket.try_acquire(now)
        {
            f.rejected.rate_limited += 1;
            let limit = bucket.limit();
            let show = |v: Option<u64>| v.map_or_else(|| "unset".to_owned(), |n| n.to_string());
            let message = format!(
                "function {} is rate limited (rateLimit: maxTokenCount {}, tokensPerFill {}, \
                 fillInterval {} ms)",
                f.profile.name,
                show(limit.max_token_count),
                show(limit.tokens_per_fill),
                show(limit.fill_interval_ms)
            );
            return Err(Refused::new(
                InvokeError::new(429, "RateLimitExceeded", message),
                function_error,
            ));
        }
        Ok(())
    }

    /// The next of `function`'s queued requests to dispatch and the worker to take it, as its
    /// dispatch mode picks among `workers`; the request leaves the queue. Entries whose client
    /// is not `waiting` any more (it closed or was answered) are dropped on the way. `None`
    /// when the queue is empty or no worker has room. Workers of an older generation take
    /// requests only until one of the current generation is ready. While the function's
    /// inspector is on only its inspect worker takes requests; while it is off, never one.
    pub(in crate::server) fn next_dispatch(
        &mut self,
        function: FunctionId,
        workers: &Slab<Worker, WorkerKey>,
        waiting: impl Fn(ConnRef) -> bool,
    ) -> Option<(ConnRef, WorkerKey)> {
        let f = &mut self.functions[function];
        let max_active = f.max_active();
        let client = loop {
            let &client = f.pool.queue.front()?;
            if waiting(client) {
                break client;
            }
            f.pool.queue.pop_front();
        };
        let generation = f.generation;
        let inspecting = f.inspector;
        let of_pool = || {
            (f.pool.workers.iter())
                .filter_map(|&key| workers.get(key).map(|w| (key, w)))
                .filter(|(_, w)| w.inspect == inspecting)
        };
        let current_ready =
            of_pool().any(|(_, w)| w.generation == generation && w.state == WorkerState::Ready);
        let picked = if f.profile.worker.disposable {
            let candidates: Vec<DisposableCandidate> = of_pool()
                .map(|(key, w)| DisposableCandidate {
                    key,
                    state: w.state,
                    life: w.life,
                })
                .collect();
            dispatch::pick_disposable(&candidates)
        } else {
            let loads = &mut self.loads;
            loads.clear();
            loads.extend(
                of_pool()
                    .filter(|(_, w)| !current_ready || w.generation == generation)
                    .map(|(key, w)| WorkerLoad {
                        key,
                        state: w.state,
                        active: w.active(),
                    }),
            );
            let mode = f.profile.worker.dispatch_mode;
            dispatch::pick(mode, &mut f.round_robin, loads, max_active)
        }?;
        f.pool.queue.pop_front();
        Some((client, picked))
    }

    /// Counts a finished invocation in its function's metrics.
    pub(in crate::server) fn record_finished(
        &mut self,
        function: FunctionId,
        finished: &crate::metrics::Finished,
    ) {
        if let Some(f) = self.functions.get_mut(function.index()) {
            f.invocations.record(finished);
        }
    }

    /// An admitted invocation ended (answered, failed or abandoned). It leaves its function's
    /// queue if it was still waiting there.
    pub(in crate::server) fn finish(
        &mut self,
        function: FunctionId,
        client: ConnRef,
        still_queued: bool,
        now: Instant,
    ) {
        self.inflight = self.inflight.saturating_sub(1);
        if let Some(f) = self.functions.get_mut(function.index()) {
            f.meter.finish(now);
            if still_queued {
                f.pool.queue.retain(|c| *c != client);
            }
        }
    }

    /// Takes `client` out of `function`'s queue (it was answered while waiting).
    pub(in crate::server) fn leave_queue(&mut self, function: FunctionId, client: ConnRef) {
        if let Some(f) = self.functions.get_mut(function.index()) {
            f.pool.queue.retain(|c| *c != client);
        }
    }

    /// Whether `function` answers invocations no worker can take at once instead of queueing
    /// them (`worker.disableRequestQueue`).
    pub(in crate::server) fn queue_disabled(&self, function: FunctionId) -> bool {
        self.functions
            .get(function.index())
            .is_some_and(|f| f.profile.worker.disable_request_queue)
    }

    /// Invocations accepted and not yet finished.
    pub(in crate::server) fn inflight(&self) -> usize {
        self.inflight
    }

    /// The function an invocation goes to: the named function, a function picked by the named
    /// service, or the default.
    fn resolve_target(&mut self, target: Option<Target>) -> Result<FunctionId, InvokeError> {
        let name = match target {
            Some(Target::Function(name)) => name,
            Some(Target::Service(service)) => {
                let draw = self.rng.next_f64();
                let Some(profile) = self.services.iter().find(|s| s.name == service) else {
                    return Err(InvokeError::new(
                        404,
                        "ServiceNotFound",
                        format!("service {service} not found"),
                    ));
                };
                match profile.select(draw) {
                    Some(function) => function.to_owned(),
                    None => {
                        return Err(InvokeError::new(
                            404,
                            "ServiceNotFound",
                            format!("service {service} routes to no function"),
                        ));
                    }
                }
            }
            None => {
                return self.default_function.ok_or_else(|| {
                    InvokeError::new(
                        404,
                        "FunctionNotFound",
                        format!(
                            "no function named in x-noslate-function, x-noslate-service or \
                             /invoke/NAME, and no default: set defaultFunction (functions: {})",
                            self.function_names()
                        ),
                    )
                });
            }
        };
        self.by_name.get(&name).copied().ok_or_else(|| {
            InvokeError::new(
                404,
                "FunctionNotFound",
                format!("function {name} not found"),
            )
        })
    }

    /// The configured functions' names, for error messages.
    pub(in crate::server) fn function_names(&self) -> String {
        self.functions
            .iter()
            .filter(|f| !f.removed)
            .map(|f| f.profile.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks the system circuit breaker against the current load, logging when it opens or
    /// closes.
    pub(in crate::server) fn check_breaker(
        &mut self,
        config: &CircuitBreakerConfig,
        load1: Option<f64>,
    ) {
        let pending: usize = self.functions.iter().map(|f| f.pool.queue.len()).sum();
        let sample = LoadSample {
            active: self.inflight.saturating_sub(pending),
            pending,
            load1,
        };
        let was_open = self.breaker.is_open();
        self.breaker.check(sample, config);
        match (was_open, self.breaker.is_open()) {
            (false, true) => {
                let why: Vec<String> = self.breaker.open_trips().map(|t| t.message()).collect();
                log::warn!("[dp] {}", why.join("; "));
            }
            (true, false) => log::info!("[dp] system circuit breaker closed"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SystemConfig, parse_functions};
    use crate::reactor::slab::Key;
    use crate::sched::ScaleAction;
    use crate::sched::shrink::WorkerSnapshot;
    use schedule::TickPlan;
    use std::path::Path;

    /// A scheduler for the profile document `json` (functions and services), over a
    /// throw-away code directory `code`.
    fn scheduler_for(json: &str, default: Option<&str>) -> Scheduler {
        scheduler_with(json, default, crate::config::ScalerKind::Idle)
    }

    /// [`scheduler_for`] with the functions' scaler.
    fn scheduler_with(
        json: &str,
        default: Option<&str>,
        scaler: crate::config::ScalerKind,
    ) -> Scheduler {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("noslate-sched-ut-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("code")).expect("code dir");
        std::fs::write(dir.join("code").join("index.js"), "").expect("code file");
        let set = parse_functions(json, &dir, &SystemConfig::default());
        let _ = std::fs::remove_dir_all(&dir);
        let set = set.expect("valid profiles");
        Scheduler::new(
            set.functions,
            set.services,
            WrittenProfiles::default(),
            default,
            scaler,
            Instant::now(),
        )
        .expect("scheduler")
    }

    fn function(name: &str, extra: &str) -> String {
        format!(
            r#"{{"name": "{name}", "runtime": "nodejs", "url": "code", "handler": "index.h",
                "signature": "s"{extra}}}"#
        )
    }

    /// Function `a` alone, with a rate limit of one token per minute.
    fn one_token_a_minute() -> Scheduler {
        let limited = function(
            "a",
            r#", "rateLimit": {"maxTokenCount": 1, "tokensPerFill": 1, "fillInterval": 60000}"#,
        );
        scheduler_for(&format!("[{limited}]"), None)
    }

    fn two_functions() -> Scheduler {
        scheduler_for(
            &format!(
                r#"{{"functions": [{}, {}],
                    "services": [{{"name": "svc", "selector": {{"functionName": "b"}}}}]}}"#,
                function("a", ""),
                function("b", "")
            ),
            None,
        )
    }

    fn client(conn: u32) -> ConnRef {
        ConnRef {
            conn: Key {
                idx: conn,
                generation: 0,
            },
            seq: 1,
        }
    }

    fn invocation(conn: u32, target: Option<Target>) -> Invocation {
        Invocation {
            client: client(conn),
            kind: InvokeKind::Event,
            target,
            timeout_header_ms: None,
        }
    }

    fn named(name: &str) -> Option<Target> {
        Some(Target::Function(name.to_owned()))
    }

    fn admit(s: &mut Scheduler, inv: Invocation) -> Result<Admitted, Refused> {
        s.admit(inv, true, 100, Instant::now())
    }

    fn error_type(result: Result<Admitted, Refused>) -> (u16, String, bool) {
        let refused = result.expect_err("refused");
        (
            refused.error.status,
            refused.error.error_type,
            refused.function_error,
        )
    }

    #[test]
    fn the_only_function_takes_invocations_that_name_none() {
        let mut s = scheduler_for(&format!("[{}]", function("only", "")), None);
        let admitted = admit(&mut s, invocation(1, None)).expect("admitted");
        assert_eq!(admitted.function, FunctionId::new(0));
        assert_eq!(s.functions[0].pool.queue.len(), 1);
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn with_several_functions_and_no_default_an_unnamed_invocation_is_not_found() {
        let mut s = two_functions();
        let refused = admit(&mut s, invocation(1, None)).expect_err("refused");
        assert_eq!(refused.error.status, 404);
        assert_eq!(refused.error.error_type, "FunctionNotFound");
        assert!(
            refused.error.message.contains("a, b"),
            "{:?}",
            refused.error
        );
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn the_default_function_takes_unnamed_invocations() {
        let json = format!("[{}, {}]", function("a", ""), function("b", ""));
        let mut s = scheduler_for(&json, Some("b"));
        assert_eq!(
            admit(&mut s, invocation(1, None)).map(|a| a.function),
            Ok(FunctionId::new(1))
        );
    }

    #[test]
    fn an_unknown_default_function_is_refused_at_start() {
        let json = format!("[{}]", function("a", ""));
        let err = Scheduler::new(
            parse_functions(&json, Path::new("/"), &SystemConfig::default())
                .map(|set| set.functions)
                .unwrap_or_default(),
            Vec::new(),
            WrittenProfiles::default(),
            Some("nope"),
            crate::config::ScalerKind::Idle,
            Instant::now(),
        );
        assert!(
            matches!(err, Err(crate::server::ServerError::UnknownDefault(name)) if name == "nope")
        );
    }

    #[test]
    fn a_named_function_is_found_by_name() {
        let mut s = two_functions();
        assert_eq!(
            admit(&mut s, invocation(1, named("b"))).map(|a| a.function),
            Ok(FunctionId::new(1))
        );
        assert_eq!(s.functions[1].pool.queue.front(), Some(&client(1)));
        assert!(s.functions[0].pool.queue.is_empty());
    }

    #[test]
    fn an_unknown_function_is_not_found_and_counts_as_a_function_error() {
        let mut s = two_functions();
        assert_eq!(
            error_type(admit(&mut s, invocation(1, named("zzz")))),
            (404, "FunctionNotFound".to_owned(), true)
        );
    }

    #[test]
    fn a_service_routes_to_its_function() {
        let mut s = two_functions();
        let target = Some(Target::Service("svc".to_owned()));
        assert_eq!(
            admit(&mut s, invocation(1, target)).map(|a| a.function),
            Ok(FunctionId::new(1))
        );
    }

    #[test]
    fn an_unknown_service_is_not_found() {
        let mut s = two_functions();
        let target = Some(Target::Service("nope".to_owned()));
        assert_eq!(
            error_type(admit(&mut s, invocation(1, target))),
            (404, "ServiceNotFound".to_owned(), true)
        );
    }

    #[test]
    fn a_stopping_runtime_refuses_after_resolving_the_target() {
        let mut s = two_functions();
        let stopped = s.admit(invocation(1, named("a")), false, 100, Instant::now());
        assert_eq!(
            error_type(stopped),
            (503, "RuntimeStopped".to_owned(), true)
        );
        // An invocation naming nothing that exists is still told so, not that the runtime stops.
        let unknown = s.admit(invocation(2, named("zzz")), false, 100, Instant::now());
        assert_eq!(error_type(unknown).1, "FunctionNotFound");
        assert_eq!(s.inflight(), 0);
        assert!(s.functions[0].pool.queue.is_empty());
    }

    #[test]
    fn the_rate_limit_refuses_past_the_bucket_and_counts_it() {
        let mut s = one_token_a_minute();
        assert!(admit(&mut s, invocation(1, None)).is_ok());
        assert_eq!(
            error_type(admit(&mut s, invocation(2, None))),
            (429, "RateLimitExceeded".to_owned(), true)
        );
        // Through an HTTP trigger, the rate limit is not the function's failure.
        let mut http = invocation(3, None);
        http.kind = InvokeKind::Http;
        assert_eq!(
            error_type(admit(&mut s, http)),
            (429, "RateLimitExceeded".to_owned(), false)
        );
        assert_eq!(s.functions[0].rejected.rate_limited, 2);
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn a_full_queue_refuses_and_counts_it_without_taking_a_place() {
        let mut s = two_functions();
        let now = Instant::now();
        assert!(s.admit(invocation(1, named("a")), true, 2, now).is_ok());
        assert!(s.admit(invocation(2, named("a")), true, 2, now).is_ok());
        let full = s.admit(invocation(3, named("a")), true, 2, now);
        let refused = full.expect_err("queue full");
        assert_eq!(refused.error.status, 429);
        assert_eq!(refused.error.error_type, "TooManyRequests");
        assert!(refused.error.message.contains("requestQueueLimit = 2"));
        assert_eq!(s.functions[0].rejected.queue_full, 1);
        assert_eq!(s.functions[0].pool.queue.len(), 2);
        assert_eq!(s.inflight(), 2);
        // The other function's queue is its own.
        assert!(s.admit(invocation(4, named("b")), true, 2, now).is_ok());
    }

    #[test]
    fn the_timeout_header_overrides_the_profile_and_is_at_least_one_ms() {
        let json = format!(
            "[{}]",
            function("a", r#", "worker": {"invokeTimeout": 5000}"#)
        );
        let mut s = scheduler_for(&json, None);
        assert_eq!(
            admit(&mut s, invocation(1, None)).map(|a| a.timeout_ms),
            Ok(5000)
        );
        let mut short = invocation(2, None);
        short.timeout_header_ms = Some(250);
        assert_eq!(admit(&mut s, short).map(|a| a.timeout_ms), Ok(250));
        let mut zero = invocation(3, None);
        zero.timeout_header_ms = Some(0);
        assert_eq!(admit(&mut s, zero).map(|a| a.timeout_ms), Ok(1));
    }

    #[test]
    fn invocations_queue_in_arrival_order() {
        let mut s = two_functions();
        for conn in 1..=3 {
            assert!(admit(&mut s, invocation(conn, named("a"))).is_ok());
        }
        let order: Vec<u32> = s.functions[0]
            .pool
            .queue
            .iter()
            .map(|c| c.conn.idx)
            .collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn finishing_a_queued_invocation_frees_its_place() {
        let mut s = two_functions();
        let now = Instant::now();
        assert!(admit(&mut s, invocation(1, named("a"))).is_ok());
        assert!(admit(&mut s, invocation(2, named("a"))).is_ok());
        s.finish(FunctionId::new(0), client(1), true, now);
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.functions[0].pool.queue.front(), Some(&client(2)));
        // A dispatched one has left the queue already: finishing it only ends the count.
        let dispatched = s.functions[0].pool.queue.pop_front();
        assert_eq!(dispatched, Some(client(2)));
        s.finish(FunctionId::new(0), client(2), false, now);
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn an_invocation_answered_while_waiting_leaves_the_queue() {
        let mut s = two_functions();
        assert!(admit(&mut s, invocation(1, named("b"))).is_ok());
        s.leave_queue(FunctionId::new(1), client(1));
        assert!(s.functions[1].pool.queue.is_empty());
        // Still in flight until its request ends.
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn the_open_breaker_refuses_before_the_rate_limit_is_charged() {
        let mut s = one_token_a_minute();
        let tight = CircuitBreakerConfig {
            pending_request_count_limit: 0,
            ..CircuitBreakerConfig::default()
        };
        // One invocation waits; the breaker opens after enough checks over the limit.
        s.functions[0].pool.queue.push_back(client(9));
        for _ in 0..crate::sched::breaker::OPEN_AFTER {
            s.check_breaker(&tight, None);
        }
        assert!(s.breaker.is_open());
        assert_eq!(
            error_type(admit(&mut s, invocation(1, None))),
            (503, BREAKER_ERROR_TYPE.to_owned(), true)
        );
        assert_eq!(s.functions[0].rejected.breaker_open, 1);
        assert_eq!(s.functions[0].rejected.rate_limited, 0);
        // It closes once the load is gone, and the bucket still has its token.
        s.functions[0].pool.queue.clear();
        for _ in 0..crate::sched::breaker::CLOSE_AFTER {
            s.check_breaker(&tight, None);
        }
        assert!(!s.breaker.is_open());
        assert!(admit(&mut s, invocation(2, None)).is_ok());
    }

    fn idle_worker(idx: u32, idle_for: std::time::Duration, now: Instant) -> WorkerSnapshot {
        WorkerSnapshot {
            key: crate::ids::WorkerKey(Key { idx, generation: 0 }),
            state: crate::turf::worker::WorkerState::Ready,
            active: 0,
            started_at: now - idle_for,
            last_active: now - idle_for,
        }
    }

    #[test]
    fn the_tick_drains_idle_workers_above_the_reservation_only() {
        let s = scheduler_for(
            &format!(
                "[{}]",
                function(
                    "a",
                    r#", "worker": {"reservationCount": 1, "idleTimeout": 1000}"#
                )
            ),
            None,
        );
        let now = Instant::now();
        let long = std::time::Duration::from_secs(5);
        let workers = [idle_worker(1, long, now), idle_worker(2, long, now)];
        let plan = s.tick_plan(FunctionId::new(0), &workers, &cp(), now);
        assert_eq!(plan.launch, None);
        assert_eq!(
            plan.drain.len(),
            1,
            "one stays for the reservation: {plan:?}"
        );
        // Workers idle for less than worker.idleTimeout stay.
        let short = std::time::Duration::from_millis(10);
        let fresh = [idle_worker(1, short, now), idle_worker(2, short, now)];
        assert_eq!(
            s.tick_plan(FunctionId::new(0), &fresh, &cp(), now),
            Default::default()
        );
    }

    fn cp() -> crate::config::ControlPlaneConfig {
        crate::config::ControlPlaneConfig::default()
    }

    fn busy_worker(idx: u32, active: usize, now: Instant) -> WorkerSnapshot {
        WorkerSnapshot {
            active,
            ..idle_worker(idx, std::time::Duration::from_secs(5), now)
        }
    }

    const ONE_SLOT_RESERVE_ONE: &str = r#", "worker": {"maxActivateRequests": 1, "reservationCount": 1, "replicaCountLimit": 10,
            "idleTimeout": 1000, "shrinkCooldownOnStartup": false, "shrinkCooldown": 0}"#;

    fn one_slot(scaler: crate::config::ScalerKind) -> Scheduler {
        let json = format!("[{}]", function("a", ONE_SLOT_RESERVE_ONE));
        scheduler_with(&json, None, scaler)
    }

    #[test]
    fn the_water_level_poll_grows_a_busy_pool_and_drains_it_after_the_spare_polls() {
        use crate::config::ScalerKind;
        let mut s = one_slot(ScalerKind::WaterLevel);
        assert_eq!(s.functions[0].scaler.kind(), ScalerKind::WaterLevel);
        let a = FunctionId::new(0);
        let now = Instant::now();
        let mut config = cp();
        config.worker_redundant_victim_spare_times = 3;
        // Four one-slot workers, all busy: 100 % ≥ 80 %, ⌈4 / 0.7 − 4⌉ = 2 more.
        let busy: Vec<_> = (0..4).map(|i| busy_worker(i, 1, now)).collect();
        let plan = s.poll_plan(a, &busy, &config, now);
        assert_eq!(plan.launch, Some(ScaleAction::Launch(2)));
        assert!(plan.drain.is_empty());
        // Six idle: two low polls hold, the third drains down to the reservation.
        let idle: Vec<_> = (0..6).map(|i| busy_worker(i, 0, now)).collect();
        for poll in 1..3 {
            assert_eq!(
                s.poll_plan(a, &idle, &config, now),
                TickPlan::default(),
                "{poll}"
            );
        }
        let plan = s.poll_plan(a, &idle, &config, now);
        assert_eq!((plan.launch, plan.drain.len()), (None, 5));
        // The one-second tick leaves them to the poll, however long they idle.
        assert_eq!(s.tick_plan(a, &idle, &config, now), TickPlan::default());
        match &s.functions[0].scaler {
            PoolScaler::WaterLevel(w) => assert_eq!(w.redundant_times(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_poll_with_queued_requests_or_during_a_rollout_drains_nothing() {
        let mut s = one_slot(crate::config::ScalerKind::WaterLevel);
        let a = FunctionId::new(0);
        let now = Instant::now();
        let mut config = cp();
        config.worker_redundant_victim_spare_times = 1;
        let idle: Vec<_> = (0..3).map(|i| busy_worker(i, 0, now)).collect();
        s.functions[0].pool.queue.push_back(client(1));
        assert_eq!(s.poll_plan(a, &idle, &config, now), TickPlan::default());
        s.functions[0].pool.queue.clear();
        s.functions[0].rollout_target = 3;
        assert_eq!(s.poll_plan(a, &idle, &config, now), TickPlan::default());
        s.functions[0].rollout_target = 0;
        assert_eq!(s.poll_plan(a, &idle, &config, now).drain.len(), 2);
    }

    #[test]
    fn the_ema_poll_samples_admitted_requests_and_the_idle_scaler_decides_nothing_on_a_poll() {
        use crate::config::ScalerKind;
        let mut idle = one_slot(ScalerKind::Idle);
        let busy: Vec<_> = (0..4).map(|i| busy_worker(i, 1, Instant::now())).collect();
        let polled = idle.poll_plan(FunctionId::new(0), &busy, &cp(), Instant::now());
        assert_eq!(
            polled,
            TickPlan::default(),
            "the idle scaler decides nothing on a poll"
        );
        let mut s = one_slot(ScalerKind::Ema);
        let a = FunctionId::new(0);
        let now = Instant::now();
        for conn in 1..=4 {
            assert!(s.admit(invocation(conn, None), true, 100, now).is_ok());
        }
        // One busy worker, four in flight, polled every 10 s (default window: 60 s in six
        // buckets, alpha 0.5). First poll: buckets hold 4 once, EMA 0.5 × 4/6 = 0.33, below
        // 0.7. Second: 0.5 × 8/6 + 0.5 × 0.33 = 0.83, above: ⌈0.83 / 0.5⌉ = 2 workers.
        let one = [busy_worker(0, 1, now)];
        let ten = std::time::Duration::from_secs(10);
        let t = now + ten;
        assert_eq!(s.poll_plan(a, &one, &cp(), t), TickPlan::default());
        let t = t + ten;
        assert_eq!(
            s.poll_plan(a, &one, &cp(), t).launch,
            Some(ScaleAction::Launch(1))
        );
        // Idle workers are the EMA's to drain, not the tick's.
        let idle: Vec<_> = (0..3).map(|i| busy_worker(i, 0, now)).collect();
        assert_eq!(s.tick_plan(a, &idle, &cp(), t), TickPlan::default());
    }

    #[test]
    fn a_removed_or_disposable_function_is_never_shrunk_by_the_tick() {
        let s = scheduler_for(
            &format!(
                "[{}]",
                function("a", r#", "worker": {"disposable": true, "idleTimeout": 1}"#)
            ),
            None,
        );
        let now = Instant::now();
        let long = std::time::Duration::from_secs(5);
        assert_eq!(
            s.tick_plan(FunctionId::new(0), &[idle_worker(1, long, now)], &cp(), now),
            Default::default()
        );
    }

    #[test]
    fn only_a_still_queued_invocation_is_refused_and_counted() {
        let mut s = two_functions();
        let client = ConnRef {
            conn: Key {
                idx: 7,
                generation: 1,
            },
            seq: 1,
        };
        assert_eq!(s.refusal_if_still_queued(FunctionId::new(0), client), None);
        assert_eq!(s.functions[0].rejected.no_free_worker, 0);
        s.functions[0].pool.queue.push_back(client);
        let err = s
            .refusal_if_still_queued(FunctionId::new(0), client)
            .expect("refused");
        assert_eq!(
            (err.status, err.error_type.as_str()),
            (503, "NoAvailableWorker")
        );
        assert!(
            err.message.contains("disableRequestQueue"),
            "{}",
            err.message
        );
        assert_eq!(s.functions[0].rejected.no_free_worker, 1);
    }
}
