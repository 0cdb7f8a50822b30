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

use super::client::InvokeError;
use super::effects::Effect;
use super::{Function, Server};
use crate::config::{self, FunctionProfile, ServiceKind};
use crate::sched::ratelimit::apply_rate_limit;
use crate::turf::worker::{ConnRef, WorkerState};
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

impl Server {
    /// `PUT /v1/functions`: validates and applies a whole profile set. `base_dir` resolves
    /// relative code urls (the CLI sends its file's directory).
    pub(super) fn set_functions(
        &mut self,
        body: &[u8],
        base_dir: Option<PathBuf>,
    ) -> Result<Value, InvokeError> {
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
        let set = config::parse_functions(text, &base, &self.config).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let mut err = bad_request("InvalidProfiles", lines.join("; "));
            err.stack = Some(lines);
            err
        })?;
        // Interpreters a new function needs are resolved now; an unsupported runtime rejects
        // the set, a missing interpreter fails only that function's requests (as at start-up).
        self.supervisor
            .runtimes
            .ensure(&set.functions)
            .map_err(|why| bad_request("InvalidProfiles", why))?;
        if set.functions.is_empty() {
            return Err(bad_request(
                "InvalidProfiles",
                "the set has no functions; a runtime needs at least one",
            ));
        }
        let (raw_functions, raw_services) = match &doc {
            Value::Array(items) => (items.clone(), None),
            other => (
                other
                    .get("functions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                other.get("services").and_then(Value::as_array).cloned(),
            ),
        };
        // Services that stay must still point at functions that exist.
        if raw_services.is_none() {
            for service in &self.scheduler.services {
                for target in service_targets(&service.kind) {
                    if !set.functions.iter().any(|f| f.name == target) {
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
        let use_ema = self.config.control_plane.use_ema_scaling;
        let mut restarted = Vec::new();
        let mut updated = Vec::new();
        let mut added = Vec::new();
        for profile in set.functions {
            let name = profile.name.clone();
            match self.scheduler.by_name.get(&name).copied() {
                Some(index) => {
                    let f = &mut self.scheduler.functions[index];
                    if needs_restart(&f.profile, &profile) {
                        restarted.push(name);
                        self.begin_rollout(index, profile);
                    } else {
                        apply_rate_limit(&mut f.bucket, profile.rate_limit.as_ref(), now);
                        f.profile = profile;
                        updated.push(name);
                    }
                }
                None => {
                    let function = Function::new(profile, use_ema, now);
                    let index = match self.retired_function() {
                        Some(index) => {
                            self.scheduler.functions[index] = function;
                            index
                        }
                        None => {
                            self.scheduler.functions.push(function);
                            self.scheduler.functions.len() - 1
                        }
                    };
                    self.scheduler.by_name.insert(name.clone(), index);
                    added.push(name);
                }
            }
        }
        let keep: Vec<String> = raw_functions
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut removed = Vec::new();
        for (name, index) in self.scheduler.by_name.clone() {
            if !keep.contains(&name) {
                self.scheduler.by_name.remove(&name);
                self.scheduler.functions[index].removed = true;
                removed.push(name);
                self.retire_if_removed(index);
                self.ensure_seed(index);
            }
        }
        if let Some(services) = raw_services {
            self.scheduler.services = set.services;
            self.scheduler.raw_services = services;
        }
        self.scheduler.raw_functions = raw_functions;
        self.scheduler.default_function = match &self.config.default_function {
            Some(name) => self.scheduler.by_name.get(name).copied(),
            None if self.scheduler.by_name.len() == 1 => {
                self.scheduler.by_name.values().next().copied()
            }
            None => None,
        };
        for index in 0..self.scheduler.functions.len() {
            if !self.scheduler.functions[index].removed {
                self.effects.push(Effect::Scale(index));
                self.effects.push(Effect::Dispatch(index));
            }
        }
        self.balance_spares();
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
    fn begin_rollout(&mut self, index: usize, profile: FunctionProfile) {
        let now = Instant::now();
        let old_ready = self.scheduler.functions[index]
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
        let f = &mut self.scheduler.functions[index];
        apply_rate_limit(&mut f.bucket, profile.rate_limit.as_ref(), now);
        let reservation = usize::try_from(profile.worker.reservation_count).unwrap_or(0);
        let limit = usize::try_from(profile.worker.replica_count_limit).unwrap_or(usize::MAX);
        f.profile = profile;
        f.generation += 1;
        f.rollout_target = reservation.max(old_ready).min(limit);
        // A fresh generation starts with a clean slate of start-up failures.
        f.pool.record_stable();
        f.pool.record_initialized();
        self.check_rollout(index);
    }

    /// Drains the previous generation once the current one has enough ready workers (or when
    /// the function needs none).
    pub(super) fn check_rollout(&mut self, index: usize) {
        let generation = self.scheduler.functions[index].generation;
        let target = self.scheduler.functions[index].rollout_target;
        let mut current_ready = 0;
        let mut outdated = Vec::new();
        for &key in &self.scheduler.functions[index].pool.workers {
            let Some(w) = self.supervisor.workers.get(key) else {
                continue;
            };
            if w.generation == generation {
                if w.state == WorkerState::Ready {
                    current_ready += 1;
                }
            } else if w.state <= WorkerState::Ready {
                outdated.push(key);
            }
        }
        if outdated.is_empty() || current_ready < target {
            return;
        }
        self.scheduler.functions[index].rollout_target = 0;
        for key in outdated {
            if self
                .supervisor
                .workers
                .get(key)
                .is_some_and(|w| w.state.is_starting())
            {
                self.stop_worker(key, "replaced by a new generation");
            } else {
                self.drain_worker(key, "replaced by a new generation");
            }
        }
    }

    /// A removed function whose record nothing refers to any more (no worker, seed, queued or
    /// running request), so that a new function can take its place: without reuse, every
    /// add-remove cycle over the admin socket would keep a record for ever. A timer still
    /// armed for the old function (a start or seed retry) only makes the new one re-check its
    /// pool early, which is harmless.
    fn retired_function(&self) -> Option<usize> {
        (0..self.scheduler.functions.len()).find(|&index| {
            let f = &self.scheduler.functions[index];
            f.removed
                && f.pool.workers.is_empty()
                && f.pool.queue.is_empty()
                && f.seed.key.is_none()
                && !self.supervisor.workers.iter().any(|w| w.function == index)
                && !self.supervisor.seeds.iter().any(|s| s.function == index)
                && !self
                    .front
                    .conns
                    .iter()
                    .any(|c| c.req.as_ref().is_some_and(|r| r.function == Some(index)))
        })
    }

    /// A removed function drains its workers once its queue is empty.
    pub(super) fn retire_if_removed(&mut self, index: usize) {
        if !self.scheduler.functions[index].removed
            || !self.scheduler.functions[index].pool.queue.is_empty()
        {
            return;
        }
        for key in self.scheduler.functions[index].pool.workers.clone() {
            match self.supervisor.workers.get(key).map(|w| w.state) {
                Some(WorkerState::Ready) => self.drain_worker(key, "function removed"),
                Some(s) if s.is_starting() => self.stop_worker(key, "function removed"),
                _ => {}
            }
        }
    }

    /// `PUT /v1/services`: validates the services against the current functions and replaces
    /// them.
    pub(super) fn set_services(&mut self, body: &[u8]) -> Result<Value, InvokeError> {
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
        // Validate with the profile parser, against the current functions.
        let doc = json!({ "functions": self.scheduler.raw_functions, "services": items });
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let set =
            config::parse_functions(&doc.to_string(), &base, &self.config).map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                let mut err = bad_request("InvalidServices", lines.join("; "));
                err.stack = Some(lines);
                err
            })?;
        self.scheduler.services = set.services;
        self.scheduler.raw_services = items;
        Ok(json!({ "services": self.scheduler.services.len() }))
    }

    /// `PUT /v1/env`: replaces the platform environment variables. Running workers cannot
    /// change their environment, so every function rolls to new workers.
    pub(super) fn set_platform_env(&mut self, body: &[u8]) -> Result<Value, InvokeError> {
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
        if env == self.supervisor.platform_env {
            return Ok(json!({ "changed": false }));
        }
        self.supervisor.platform_env = env;
        let live: Vec<usize> = (0..self.scheduler.functions.len())
            .filter(|&i| !self.scheduler.functions[i].removed)
            .collect();
        for index in live {
            let profile = self.scheduler.functions[index].profile.clone();
            self.begin_rollout(index, profile);
            self.effects.push(Effect::Scale(index));
        }
        self.balance_spares();
        Ok(json!({ "changed": true }))
    }

    /// Handles an admin request whose body has been collected.
    pub(super) fn on_admin_body(&mut self, client: ConnRef) {
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
            Some(crate::admin::Route::SetServices) => self.set_services(&body),
            Some(crate::admin::Route::SetEnv) => self.set_platform_env(&body),
            _ => return,
        };
        match result {
            Ok(answer) => self.respond_json(client, 200, &[], answer.to_string().as_bytes()),
            Err(err) => self.respond_error(client, &err, false),
        }
    }
}

fn service_targets(kind: &ServiceKind) -> Vec<&str> {
    match kind {
        ServiceKind::Default { function } => vec![function.as_str()],
        ServiceKind::Proportional(targets) => targets.iter().map(|(f, _)| f.as_str()).collect(),
    }
}
