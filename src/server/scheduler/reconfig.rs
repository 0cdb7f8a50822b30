//! Live reconfiguration over the admin socket: replacing the function profile set, the service
//! profiles and the platform environment, Noslate's `setFunctionProfile`, `setServiceProfile`
//! and `setPlatformEnvironmentVariables` without its bugs:
//!
//! - A set is validated whole before anything changes; an invalid one is rejected with every
//!   problem and the running set stays as it was.
//! - Updates are applied in arrival order on the loop's one thread; each caller gets its
//!   answer, and the last one wins.
//! - Only changes to the code, runtime, handler, initializer, handler style, resources, node
//!   arguments or environment restart workers, and they restart by rolling: a new generation
//!   of workers starts while the old one keeps serving, and the old workers are drained (never
//!   killed under a request) once enough new ones are ready. Everything else (rate limit,
//!   concurrency, queue and scaling settings) applies in place at once.
//! - A function missing from the new set takes no new requests, finishes its queue, and its
//!   workers are drained.

use super::{Function, Scheduler};
use crate::config::{self, FunctionProfile, ServiceKind, ServiceProfile, SystemConfig};
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::inspector::{debugger_flag_in, debugger_flag_problem};
use crate::reactor::slab::Slab;
use crate::sched::ratelimit::apply_rate_limit;
use crate::server::client::InvokeError;
use crate::server::effects::{Effect, Effects};
use crate::turf::worker::{Worker, WorkerState};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

/// Whether moving from `old` to `new` needs new worker processes.
fn needs_restart(old: &FunctionProfile, new: &FunctionProfile) -> bool {
    old.runtime != new.runtime
        || old.code_dir != new.code_dir
        || old.signature != new.signature
        || old.handler != new.handler
        || old.initializer != new.initializer
        || old.source_file != new.source_file
        || old.handler_style != new.handler_style
        || old.environments != new.environments
        || old.resource_limit != new.resource_limit
        || old.worker.exec_argv != new.worker.exec_argv
}

fn bad_request(error_type: &str, message: impl Into<String>) -> InvokeError {
    InvokeError::new(400, error_type, message)
}

/// A function profile set that passed validation, ready to apply.
pub(in crate::server) struct FunctionSet {
    profiles: Vec<FunctionProfile>,
    services: Vec<ServiceProfile>,
    /// The functions as written (answered by `GET /v1/functions`).
    raw_functions: Vec<Value>,
    /// The services as written, when the set replaces them.
    raw_services: Option<Vec<Value>>,
    /// The directory its relative code urls were resolved against.
    base: PathBuf,
}

impl FunctionSet {
    /// Parses and validates `PUT /v1/functions`'s body. `base_dir` resolves relative code urls
    /// (the CLI sends its file's directory).
    pub(in crate::server) fn parse(
        body: &[u8],
        base_dir: Option<PathBuf>,
        config: &SystemConfig,
    ) -> Result<FunctionSet, InvokeError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| bad_request("InvalidProfiles", "the profile set is not UTF-8"))?;
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            bad_request(
                "InvalidProfiles",
                format!("the profile set is not JSON: {e}"),
            )
        })?;
        let base = base_dir
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let set = config::parse_functions(text, &base, config).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let mut err = bad_request("InvalidProfiles", lines.join("; "));
            err.stack = Some(lines);
            err
        })?;
        if set.functions.is_empty() {
            return Err(bad_request(
                "InvalidProfiles",
                "the set has no functions; a runtime needs at least one",
            ));
        }
        let (raw_functions, raw_services) = match doc {
            Value::Array(items) => (items, None),
            mut other => {
                let functions = match other.get_mut("functions").map(Value::take) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                let services = match other.get_mut("services").map(Value::take) {
                    Some(Value::Array(items)) => Some(items),
                    _ => None,
                };
                (functions, services)
            }
        };
        Ok(FunctionSet {
            profiles: set.functions,
            services: set.services,
            raw_functions,
            raw_services,
            base,
        })
    }

    /// The profiles, for resolving their interpreters before the set is applied.
    pub(in crate::server) fn profiles(&self) -> &[FunctionProfile] {
        &self.profiles
    }

    /// Points packaged functions at their place in the package cache under `root`.
    pub(in crate::server) fn place_packages(&mut self, root: &std::path::Path) {
        crate::code::place(root, &mut self.profiles);
    }
}

/// Why a worker leaves when the profiles change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Retirement {
    /// Its function's code or resources changed and a new generation is ready.
    NewGeneration,
    /// Its function left the profile set.
    FunctionRemoved,
    /// It was its function's inspect worker and the inspector was turned off.
    InspectorOff,
}

impl Retirement {
    pub(in crate::server) fn reason(self) -> &'static str {
        match self {
            Retirement::NewGeneration => "replaced by a new generation",
            Retirement::FunctionRemoved => "function removed",
            Retirement::InspectorOff => "inspector turned off",
        }
    }
}

impl Scheduler {
    /// Applies a validated profile set. `in_use` says which function records something still
    /// refers to (a worker, a seed, a request), so that a removed one is reused only when
    /// nothing does. Workers to retire and functions to re-plan are recorded in `effects`.
    pub(in crate::server) fn apply_functions(
        &mut self,
        set: FunctionSet,
        config: &SystemConfig,
        workers: &Slab<Worker, WorkerKey>,
        in_use: &[bool],
        effects: &mut Effects,
    ) -> Result<Value, InvokeError> {
        // Services that stay must still point at functions that exist.
        if set.raw_services.is_none() {
            for service in &self.services {
                for target in service_targets(&service.kind) {
                    if !set.profiles.iter().any(|f| f.name == target) {
                        return Err(bad_request(
                            "InvalidProfiles",
                            format!(
                                "service {} routes to function {target}, which this set removes; \
                                 update the services in the same call",
                                service.name
                            ),
                        ));
                    }
                }
            }
        }

        let now = Instant::now();
        let scaler = config.control_plane.scaler;
        let mut restarted = Vec::new();
        let mut updated = Vec::new();
        let mut added = Vec::new();
        for profile in set.profiles {
            let name = profile.name.clone();
            match self.by_name.get(&name).copied() {
                Some(index) => {
                    let f = &mut self.functions[index];
                    if needs_restart(&f.profile, &profile) {
                        restarted.push(name);
                        self.begin_rollout(index, profile, workers, effects);
                    } else {
                        apply_rate_limit(&mut f.bucket, profile.rate_limit.as_ref(), now);
                        f.profile = profile;
                        updated.push(name);
                    }
                    self.drop_unsupported_inspector(index, workers, effects);
                }
                None => {
                    let function = Function::new(profile, scaler, now);
                    let index = match self.retired_function(in_use) {
                        Some(index) => {
                            self.functions[index] = function;
                            index
                        }
                        None => {
                            self.functions.push(function);
                            FunctionId::new(self.functions.len() - 1)
                        }
                    };
                    self.by_name.insert(name.clone(), index);
                    added.push(name);
                }
            }
        }
        let keep: Vec<&str> = set
            .raw_functions
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .collect();
        let gone: Vec<(String, FunctionId)> = self
            .by_name
            .iter()
            .filter(|(name, _)| !keep.contains(&name.as_str()))
            .map(|(name, &index)| (name.clone(), index))
            .collect();
        let mut removed = Vec::new();
        for (name, index) in gone {
            self.by_name.remove(&name);
            self.functions[index].removed = true;
            removed.push(name);
            self.retire_if_removed(index, workers, effects);
            effects.push(Effect::FollowSeed(index));
        }
        if let Some(services) = set.raw_services {
            self.services = set.services;
            self.raw_services = services;
        }
        self.raw_functions = set.raw_functions;
        self.functions_base = set.base;
        self.default_function = match &config.default_function {
            Some(name) => self.by_name.get(name).copied(),
            None if self.by_name.len() == 1 => self.by_name.values().next().copied(),
            None => None,
        };
        for index in FunctionId::all(self.functions.len()) {
            if !self.functions[index].removed {
                effects.push(Effect::Scale(index));
                effects.push(Effect::Dispatch(index));
            }
        }
        effects.push(Effect::BalanceSpares);
        for list in [&mut restarted, &mut updated, &mut added, &mut removed] {
            list.sort();
        }
        log::info!(
            "[cp] function profiles set: added {added:?}, restarted {restarted:?}, updated in \
             place {updated:?}, removed {removed:?}"
        );
        Ok(json!({
            "added": added,
            "restarted": restarted,
            "updated": updated,
            "removed": removed,
        }))
    }

    /// Starts a new generation of workers for changed code or resources; the old workers keep
    /// serving until enough new ones are ready.
    fn begin_rollout(
        &mut self,
        index: FunctionId,
        profile: FunctionProfile,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        let now = Instant::now();
        let f = &mut self.functions[index];
        let old_ready = f
            .pool
            .workers
            .iter()
            .filter(|&&k| {
                workers
                    .get(k)
                    .is_some_and(|w| w.state == WorkerState::Ready && !w.inspect)
            })
            .count();
        apply_rate_limit(&mut f.bucket, profile.rate_limit.as_ref(), now);
        let reservation = usize::try_from(profile.worker.reservation_count).unwrap_or(0);
        let limit = usize::try_from(profile.worker.replica_count_limit).unwrap_or(usize::MAX);
        f.profile = profile;
        f.generation += 1;
        f.rollout_target = reservation.max(old_ready).min(limit);
        // A fresh generation starts with a clean slate of start-up failures.
        f.pool.record_stable();
        f.pool.record_initialized();
        self.check_rollout(index, workers, effects);
    }

    /// Retires the previous generation once the current one has enough ready workers (or when
    /// the function needs none).
    pub(in crate::server) fn check_rollout(
        &mut self,
        index: FunctionId,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        let f = &mut self.functions[index];
        let mut current_ready = 0;
        let mut outdated = Vec::new();
        for &key in &f.pool.workers {
            let Some(w) = workers.get(key) else {
                continue;
            };
            if w.generation == f.generation {
                // The target counts ordinary workers; an inspect worker is wanted on its own.
                if w.state == WorkerState::Ready && !w.inspect {
                    current_ready += 1;
                }
            } else if w.state <= WorkerState::Ready {
                outdated.push(key);
            }
        }
        if outdated.is_empty() || current_ready < f.rollout_target {
            return;
        }
        f.rollout_target = 0;
        for worker in outdated {
            effects.push(Effect::Retire {
                worker,
                why: Retirement::NewGeneration,
            });
        }
    }

    /// A removed function whose record nothing refers to any more (no worker, seed, queued or
    /// running request), so that a new function can take its place: without reuse, every
    /// add-remove cycle over the admin socket would keep a record for ever. A timer still
    /// armed for the old function (a start or seed retry) only makes the new one re-check its
    /// pool early, which is harmless.
    fn retired_function(&self, in_use: &[bool]) -> Option<FunctionId> {
        FunctionId::all(self.functions.len()).find(|&index| {
            let f = &self.functions[index];
            f.removed
                && f.pool.workers.is_empty()
                && f.pool.queue.is_empty()
                && !in_use.get(index.index()).copied().unwrap_or(false)
        })
    }

    /// A removed function retires its workers once its queue is empty.
    pub(in crate::server) fn retire_if_removed(
        &mut self,
        index: FunctionId,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        let f = &self.functions[index];
        if !f.removed || !f.pool.queue.is_empty() {
            return;
        }
        for &worker in &f.pool.workers {
            if workers
                .get(worker)
                .is_some_and(|w| w.state <= WorkerState::Ready)
            {
                effects.push(Effect::Retire {
                    worker,
                    why: Retirement::FunctionRemoved,
                });
            }
        }
    }

    /// `PUT /v1/services`: validates the services against the current functions and replaces
    /// them.
    pub(in crate::server) fn set_services(
        &mut self,
        body: &[u8],
        config: &SystemConfig,
    ) -> Result<Value, InvokeError> {
        let services: Value = serde_json::from_slice(body).map_err(|e| {
            bad_request(
                "InvalidServices",
                format!("the service set is not JSON: {e}"),
            )
        })?;
        let items = match services {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("services") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(bad_request(
                        "InvalidServices",
                        "expected an array of service profiles or {\"services\": [...]}",
                    ));
                }
            },
            _ => {
                return Err(bad_request(
                    "InvalidServices",
                    "expected an array of service profiles",
                ));
            }
        };
        // Validate with the profile parser, against the current functions as they were resolved
        // (relative code urls against their own file's or caller's directory, not this
        // process's).
        let doc = json!({ "functions": self.raw_functions, "services": items });
        let set = config::parse_functions(&doc.to_string(), &self.functions_base, config).map_err(
            |problems| {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                let mut err = bad_request("InvalidServices", lines.join("; "));
                err.stack = Some(lines);
                err
            },
        )?;
        self.services = set.services;
        self.raw_services = items;
        Ok(json!({ "services": self.services.len() }))
    }

    /// Every live function rolls to new workers: running workers cannot change their
    /// environment, and the platform's has changed.
    pub(in crate::server) fn roll_all(
        &mut self,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        for index in FunctionId::all(self.functions.len()) {
            if self.functions[index].removed {
                continue;
            }
            let profile = self.functions[index].profile.clone();
            self.begin_rollout(index, profile, workers, effects);
            effects.push(Effect::Scale(index));
        }
        effects.push(Effect::BalanceSpares);
    }
}

/// `PUT /v1/env`'s body: the platform environment variables, sorted, with Noslate's checks
/// (valid names, none of the reserved prefixes, string values without NUL), every problem
/// reported at once.
pub(in crate::server) fn parse_platform_env(
    body: &[u8],
) -> Result<Vec<(String, String)>, InvokeError> {
    let map: serde_json::Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        bad_request(
            "InvalidEnvironment",
            format!("expected a JSON object of string values: {e}"),
        )
    })?;
    let mut env = Vec::with_capacity(map.len());
    let mut problems = Vec::new();
    for (key, value) in map {
        let valid_name = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            problems.push(format!("{key}: not a valid environment variable name"));
        } else if key.starts_with("NOSLATE_")
            || key.starts_with("NOSLATED_")
            || key.starts_with("FC_")
        {
            problems.push(format!(
                "{key}: NOSLATE_*, NOSLATED_* and FC_* are reserved"
            ));
        }
        match value {
            Value::String(v) if key == "NODE_OPTIONS" && debugger_flag_in(&v).is_some() => {
                let flag = debugger_flag_in(&v).unwrap_or_default();
                problems.push(format!("{key}: {}", debugger_flag_problem(flag)));
            }
            Value::String(v) if !v.contains('\0') => env.push((key, v)),
            _ => problems.push(format!("{key}: the value must be a string without NUL")),
        }
    }
    if !problems.is_empty() {
        let mut err = bad_request("InvalidEnvironment", problems.join("; "));
        err.stack = Some(problems);
        return Err(err);
    }
    env.sort();
    Ok(env)
}

fn service_targets(kind: &ServiceKind) -> Vec<&str> {
    match kind {
        ServiceKind::Default { function } => vec![function.as_str()],
        ServiceKind::Proportional(targets) => targets.iter().map(|(f, _)| f.as_str()).collect(),
    }
}
