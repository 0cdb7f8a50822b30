//! Requests on the admin socket (see `crate::admin` for the routes), decided over a read-only
//! view of the owners: an answer built from the live state, or what the loop must do (collect a
//! body, start an invocation). Nothing here blocks the loop beyond reading a few `/proc` files.

use super::Lifecycle;
use super::access_log::AccessLogStats;
use super::client::InvokeError;
use super::console::ConsoleStats;
use super::lifecycle::LifecycleState;
use super::scheduler::{Function, Scheduler};
use super::supervisor::Supervisor;
use crate::admin::{self, Route};
use crate::config::SystemConfig;
use crate::fc::Target;
use crate::ids::FunctionId;
use crate::metrics::{Exposition, StartKind};
use crate::sched::scaler::PoolScaler;
use crate::turf::accounting::ExitReason;
use crate::turf::stats;
use crate::turf::worker::WorkerState;
use serde_json::{Value, json};

/// What an admin request asks of the loop.
#[derive(Debug)]
pub(super) enum AdminAction {
    /// Answer 200 with this JSON.
    Answer(Value),
    /// Answer 200 with this text in Prometheus' exposition format.
    Metrics(String),
    /// Collect the request body, then apply it (`reconfig`).
    CollectBody(Route),
    /// Invoke this function or service as an event.
    Invoke(Target),
    /// Refuse with this error.
    Refuse(InvokeError),
}

/// A metric family with one sample per function: its name, type, help and value.
type PerFunction = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Function) -> u64,
);

/// What admin answers read: the owners, borrowed for the time of one request.
pub(super) struct AdminView<'a> {
    pub(super) config: &'a SystemConfig,
    pub(super) supervisor: &'a Supervisor,
    pub(super) scheduler: &'a Scheduler,
    pub(super) connections: usize,
    /// Clients refused with 503 `TooManyConnections` so far.
    pub(super) refused_connections: u64,
    /// Loop iterations so far.
    pub(super) loop_iterations: u64,
    pub(super) console: ConsoleStats,
    pub(super) access_log: AccessLogStats,
    pub(super) lifecycle: &'a LifecycleState,
    /// How the loop waits: whether it may spin, and the CPU pressure it last saw.
    pub(super) busy_poll: &'a crate::reactor::busy_poll::BusyPoll,
}

impl AdminView<'_> {
    /// Decides one admin request.
    pub(super) fn action(&self, method: &str, path: &str) -> AdminAction {
        match admin::route(method, path) {
            Route::Workers => AdminAction::Answer(self.workers_view()),
            Route::Stats => AdminAction::Answer(self.stats_view()),
            Route::Health => AdminAction::Answer(self.health_view()),
            Route::Metrics => AdminAction::Metrics(self.metrics_text()),
            Route::GetFunctions => AdminAction::Answer(json!({
                "functions": self.scheduler.raw_functions(),
                "services": self.scheduler.raw_services(),
            })),
            Route::GetServices => {
                AdminAction::Answer(json!({ "services": self.scheduler.raw_services() }))
            }
            Route::GetEnv => AdminAction::Answer(Value::Object(
                self.supervisor
                    .platform_env()
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )),
            route @ (Route::SetFunctions
            | Route::SetServices
            | Route::SetEnv
            | Route::SetInspector(_)) => AdminAction::CollectBody(route),
            Route::Inspectors => {
                let on = FunctionId::all(self.scheduler.functions().len())
                    .filter(|&f| self.scheduler.inspecting(f))
                    .filter(|&f| !self.scheduler.functions()[f].removed)
                    .map(|f| self.inspector_view(f))
                    .collect();
                AdminAction::Answer(json!({ "functions": Value::Array(on) }))
            }
            Route::InspectorOf(name) => match self.scheduler.function_id(&name) {
                Some(function) => AdminAction::Answer(self.inspector_view(function)),
                None => AdminAction::Refuse(InvokeError::new(
                    404,
                    "FunctionNotFound",
                    format!("function {name} not found"),
                )),
            },
            Route::Invoke(target) => AdminAction::Invoke(target),
            Route::MethodNotAllowed(allowed) => AdminAction::Refuse(InvokeError::new(
                405,
                "MethodNotAllowed",
                format!("{path} accepts {allowed}, not {method}"),
            )),
            Route::NotFound => AdminAction::Refuse(InvokeError::new(
                404,
                "NotFound",
                format!(
                    "no admin route {method} {path}; see /v1/health, /v1/workers, /v1/stats, \
                     /v1/functions, /v1/services, /v1/env, /v1/invoke/NAME, /v1/inspector"
                ),
            )),
        }
    }

    /// Whether the runtime serves invocations now, and if not why; and who it is. Cheap: a
    /// client may ask often (`checkDataPlaneHealth`, and the SDK's watch for restarts).
    fn health_view(&self) -> Value {
        let breaker_open = self.scheduler.breaker().is_open();
        let running = self.lifecycle.phase == Lifecycle::Running;
        let reason = if !running {
            Some(format!("the runtime is {}", self.lifecycle.name()))
        } else if breaker_open {
            // Noslate's words, which its clients may compare.
            Some("Circuit Breaker Enabled".to_owned())
        } else {
            None
        };
        json!({
            "health": reason.is_none(),
            "reason": reason,
            "lifecycle": self.lifecycle.name(),
            "breakerOpen": breaker_open,
            "instance": self.lifecycle.instance(),
        })
    }

    /// A function's inspector: whether it is on, and its inspect workers (those still
    /// draining after it was turned off included) with where their debugger listens.
    fn inspector_view(&self, function: FunctionId) -> Value {
        let f = &self.scheduler.functions()[function];
        let workers: Vec<Value> = (f.pool.workers.iter())
            .filter_map(|&k| self.supervisor.workers().get(k))
            .filter(|w| w.inspect)
            .map(|w| {
                let endpoint = w.inspector.as_ref();
                json!({
                    "id": w.process.id,
                    "pid": w.process.pid,
                    "state": w.state.as_str(),
                    "host": endpoint.map(|_| "127.0.0.1"),
                    "port": endpoint.map(|e| e.port),
                    "webSocketDebuggerUrl": endpoint.map(crate::inspector::Endpoint::ws_url),
                    "devtoolsFrontendUrl": endpoint.map(crate::inspector::Endpoint::devtools_url),
                    "jsonList": endpoint.map(crate::inspector::Endpoint::list_url),
                    "memoryLimitBytes": crate::inspector::relaxed_memory(f.profile.resource_limit.memory),
                })
            })
            .collect();
        json!({
            "function": f.profile.name,
            "use": f.inspector,
            "supported": crate::inspector::supports(f.profile.runtime),
            "workers": workers,
        })
    }

    /// One object per worker, as `noslate ps` shows it.
    fn workers_view(&self) -> Value {
        let mut rows: Vec<(&str, Value)> = self
            .supervisor
            .workers()
            .iter()
            .map(|w| {
                let live = stats::read(w.process.pid);
                let view = json!({
                    "id": w.process.id,
                    "function": self.scheduler.functions()[w.function].profile.name,
                    "pid": w.process.pid,
                    "state": w.state.as_str(),
                    "start": if w.forked {
                        "forked"
                    } else if w.from_spare {
                        "spare"
                    } else {
                        "cold"
                    },
                    "inflight": w.active(),
                    "served": w.served,
                    "inspector": w.inspect,
                    "rssBytes": live.map(|s| s.rss_bytes),
                    "cpuMs": live.map(|s| s.cpu_ms),
                    "ageMs": u64::try_from(w.process.started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "enforcement": w.enforcement,
                });
                (w.process.id.as_str(), view)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        Value::Array(rows.into_iter().map(|(_, v)| v).collect())
    }

    /// A function's warm seed: `null` when it has none and no error to tell.
    fn seed_view(&self, function: FunctionId) -> Value {
        let slot = self.supervisor.seed_slot(function);
        let seed = (slot.and_then(|s| s.key)).and_then(|k| self.supervisor.seeds().get(k));
        let last_error = slot.and_then(|s| s.last_error.as_ref());
        if seed.is_none() && last_error.is_none() {
            return Value::Null;
        }
        json!({
            "id": seed.map(|s| &s.process.id),
            "pid": seed.map(|s| s.process.pid),
            "state": seed.map_or("none", |s| s.state.as_str()),
            "forks": seed.map(|s| s.forks),
            "rssBytes": seed.and_then(|s| stats::read(s.process.pid)).map(|l| l.rss_bytes),
            "lastError": last_error,
        })
    }

    /// The families of ended invocations (`metrics.enabled`): outcomes, durations and bytes.
    fn invocation_families(&self, out: &mut Exposition) {
        let live = || self.scheduler.functions().iter().filter(|f| !f.removed);
        out.family(
            "noslate_invocations_total",
            "counter",
            "Invocations that ended, by status class and error type (a function's own error \
             types count as FunctionError).",
        );
        for f in live() {
            out.invocations(&f.profile.name, &f.invocations);
        }
        let histograms = [
            ("queue wait: admission to dispatch to a worker", 0),
            ("time from admission to the response head", 1),
            ("time from admission to the end of the response", 2),
        ];
        for (help, index) in histograms {
            let name = crate::metrics::InvocationMetrics::default().histograms()[index].0;
            out.family(
                name,
                "histogram",
                &format!("Invocations' {help}, in seconds."),
            );
            for f in live() {
                let (_, h) = f.invocations.histograms()[index];
                out.histogram(name, &[("function", &f.profile.name)], h);
            }
        }
        let bytes: [PerFunction; 2] = [
            (
                "noslate_request_bytes_total",
                "counter",
                "Request body bytes sent to workers.",
                |f| f.invocations.bytes().0,
            ),
            (
                "noslate_response_bytes_total",
                "counter",
                "Response body bytes written to clients.",
                |f| f.invocations.bytes().1,
            ),
        ];
        self.per_function(out, &bytes);
    }

    /// Families with one sample per live function.
    fn per_function(&self, out: &mut Exposition, families: &[PerFunction]) {
        let live = self.scheduler.functions().iter().filter(|f| !f.removed);
        for &(name, kind, help, value) in families {
            out.family(name, kind, help);
            for f in live.clone() {
                out.sample(name, &[("function", &f.profile.name)], value(f));
            }
        }
    }

    /// Every metric in Prometheus' text format: invocations by outcome, their durations and
    /// bytes, in-flight and queued requests, workers by state, rejections by cause, worker
    /// exits by reason, and the runtime's own connections, memory and breaker.
    pub(super) fn metrics_text(&self) -> String {
        let mut out = Exposition::default();
        let functions = self.scheduler.functions();
        let live = || functions.iter().filter(|f| !f.removed);
        if self.config.metrics_enabled {
            self.invocation_families(&mut out);
        }
        // The families with one sample per function.
        let per_function: [PerFunction; 2] = [
            (
                "noslate_inflight_requests",
                "gauge",
                "Invocations admitted and not finished (queued or running).",
                |f| f.meter.current() as u64,
            ),
            (
                "noslate_queued_requests",
                "gauge",
                "Invocations waiting for a worker.",
                |f| f.pool.queue.len() as u64,
            ),
        ];
        self.per_function(&mut out, &per_function);
        out.family(
            "noslate_workers",
            "gauge",
            "Workers, by state and by how they started (cold, forked from a seed, a spare).",
        );
        for f in live() {
            // One pass over the pool, then every (state, kind) pair, zeros included.
            let mut counts = [[0u64; StartKind::ALL.len()]; WorkerState::ALL.len()];
            for w in (f.pool.workers.iter()).filter_map(|&k| self.supervisor.workers().get(k)) {
                counts[w.state as usize][w.start_kind() as usize] += 1;
            }
            for state in WorkerState::ALL {
                for kind in StartKind::ALL {
                    let labels = [
                        ("function", f.profile.name.as_str()),
                        ("state", state.as_str()),
                        ("kind", kind.as_str()),
                    ];
                    let count = counts[state as usize][kind as usize];
                    out.sample("noslate_workers", &labels, count);
                }
            }
        }
        out.family(
            "noslate_worker_starts_total",
            "counter",
            "Workers that became ready, by how they started.",
        );
        for f in live() {
            for kind in StartKind::ALL {
                let labels = [
                    ("function", f.profile.name.as_str()),
                    ("kind", kind.as_str()),
                ];
                out.sample("noslate_worker_starts_total", &labels, f.starts.ready(kind));
            }
        }
        let name = "noslate_worker_start_to_ready_seconds";
        out.family(
            name,
            "histogram",
            "From a worker's launch decision to its INIT_DONE, in seconds.",
        );
        for f in live() {
            let labels = [("function", f.profile.name.as_str())];
            out.histogram(name, &labels, f.starts.start_to_ready());
        }
        out.family(
            "noslate_rejections_total",
            "counter",
            "Invocations turned away, by cause.",
        );
        for f in live() {
            let r = &f.rejected;
            let causes = [
                ("rate_limit", r.rate_limited),
                ("breaker", r.breaker_open),
                ("queue_full", r.queue_full),
                ("no_free_worker", r.no_free_worker),
                ("no_memory", r.no_memory),
                ("replica_limit", r.replica_limit),
            ];
            for (cause, n) in causes {
                let labels = [("function", f.profile.name.as_str()), ("cause", cause)];
                out.sample("noslate_rejections_total", &labels, n);
            }
        }
        out.family(
            "noslate_worker_exits_total",
            "counter",
            "Worker exits, by the reason resource_usage.log records.",
        );
        for reason in ExitReason::ALL {
            let labels = [("reason", reason.as_str())];
            let n = self.supervisor.accounting().count(reason);
            out.sample("noslate_worker_exits_total", &labels, n);
        }
        out.family(
            "noslate_connections",
            "gauge",
            "Client connections open (FC port and admin socket).",
        );
        out.sample("noslate_connections", &[], self.connections);
        out.family(
            "noslate_connections_refused_total",
            "counter",
            "Clients refused with 503 TooManyConnections (http.maxConnections, or out of fds).",
        );
        out.sample(
            "noslate_connections_refused_total",
            &[],
            self.refused_connections,
        );
        out.family(
            "noslate_open_fds",
            "gauge",
            "File descriptors the runtime holds.",
        );
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
        out.sample("noslate_open_fds", &[], fds);
        out.family(
            "noslate_loop_iterations_total",
            "counter",
            "Iterations of the event loop.",
        );
        out.sample("noslate_loop_iterations_total", &[], self.loop_iterations);
        out.family(
            "noslate_access_log_lines_total",
            "counter",
            "Access-log lines written (logger.accessLog).",
        );
        out.sample("noslate_access_log_lines_total", &[], self.access_log.lines);
        out.family(
            "noslate_access_log_dropped_lines_total",
            "counter",
            "Access-log lines dropped: the buffer was full, or the disk or console failed.",
        );
        out.sample(
            "noslate_access_log_dropped_lines_total",
            &[],
            self.access_log.dropped,
        );
        out.family(
            "noslate_resident_memory_bytes",
            "gauge",
            "The runtime's own resident memory (its workers not included).",
        );
        let rss = stats::read(crate::sys::getpid()).map_or(0, |s| s.rss_bytes);
        out.sample("noslate_resident_memory_bytes", &[], rss);
        out.family(
            "noslate_circuit_breaker_open",
            "gauge",
            "1 while the system circuit breaker refuses invocations.",
        );
        let open = u8::from(self.scheduler.breaker().is_open());
        out.sample("noslate_circuit_breaker_open", &[], open);
        out.finish()
    }

    /// Exit counters and per-function counts.
    fn stats_view(&self) -> Value {
        let exits: serde_json::Map<String, Value> = ExitReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    json!(self.supervisor.accounting().count(*r)),
                )
            })
            .collect();
        let now = std::time::Instant::now();
        let functions: serde_json::Map<String, Value> = self
            .scheduler
            .functions()
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let mut states = serde_json::Map::new();
                for &key in &f.pool.workers {
                    if let Some(w) = self.supervisor.workers().get(key) {
                        let n = states
                            .entry(w.state.as_str())
                            .or_insert(json!(0))
                            .as_u64()
                            .unwrap_or(0);
                        states.insert(w.state.as_str().to_owned(), json!(n + 1));
                    }
                }
                (
                    f.profile.name.clone(),
                    json!({
                        "workers": states,
                        "queued": f.pool.queue.len(),
                        "inflight": f.meter.current(),
                        "removed": f.removed,
                        "startFailures": f.pool.start_failures,
                        "lastStartError": f.pool.last_start_error.as_ref().map(|e| json!({
                            "errorType": e.error_type,
                            "errorMessage": e.message,
                        })),
                        "nextStartInMs": f.pool.backoff_until.and_then(|until| {
                            let left = until.checked_duration_since(now)?;
                            Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
                        }),
                        "scaler": scaler_view(&f.scaler),
                        "seed": self.seed_view(FunctionId::new(index)),
                        "rejected": {
                            "rateLimited": f.rejected.rate_limited,
                            "breakerOpen": f.rejected.breaker_open,
                            "queueFull": f.rejected.queue_full,
                            "noFreeWorker": f.rejected.no_free_worker,
                            "noEnoughVirtualMemory": f.rejected.no_memory,
                            "replicaLimitExceeded": f.rejected.replica_limit,
                        },
                    }),
                )
            })
            .collect();
        let spares: Vec<Value> = self
            .supervisor
            .spares()
            .iter()
            .map(|s| {
                json!({
                    "id": s.process.id,
                    "pid": s.process.pid,
                    "state": s.state.as_str(),
                    "rssBytes": stats::read(s.process.pid).map(|l| l.rss_bytes),
                })
            })
            .collect();
        let console = self.console;
        json!({
            "spares": {
                "wanted": self.config.turf.spare_workers,
                "taken": self.supervisor.spare_pool().taken,
                "off": self.supervisor.spare_support().as_ref().err(),
                "processes": spares,
            },
            "breakerOpen": self.scheduler.breaker().is_open(),
            "inflight": self.scheduler.inflight(),
            "connections": self.connections,
            // Function records held, current and removed-but-still-draining: reused once a
            // removed function has nothing left, so profile changes cannot grow it for ever.
            "functionRecords": self.scheduler.functions().len(),
            "console": {
                "relayedPipes": console.relays,
                "cutLines": console.cut_lines,
                "droppedBytes": console.dropped_bytes,
                "waitingBytes": console.waiting_bytes,
            },
            "accessLog": {
                "destination": self.config.logger.access_log.as_str(),
                "lines": self.access_log.lines,
                "droppedLines": self.access_log.dropped,
            },
            "busyPoll": {
                "off": self.busy_poll.off_reason(),
                "paused": self.busy_poll.paused_reason(),
                "cpuPressurePercent": self.busy_poll.cpu_pressure(),
            },
            "gateway": self.gateway_view(),
            "exits": exits,
            "functions": functions,
        })
    }

    /// The gateway in `noslate stats`: `null` without one; otherwise its command, state, pid,
    /// restarts and how its last run ended on its own (with its stderr tail).
    fn gateway_view(&self) -> Value {
        let Some((gateway, launch)) = self.supervisor.gateway() else {
            return Value::Null;
        };
        json!({
            "command": launch.command_line,
            "state": gateway.state().as_str(),
            "pid": gateway.process.as_ref().map(|p| p.pid),
            "restarts": gateway.restarts(),
            "lastFailure": gateway.last_failure().map(|f| json!({
                "reason": f.reason,
                "uptimeMs": f.uptime_ms,
                "stderrTail": f.stderr_tail,
            })),
        })
    }
}

/// A function's scaler for `noslate stats`: its name and the state behind its next decision.
fn scaler_view(scaler: &PoolScaler) -> Value {
    let kind = scaler.kind().as_str();
    match scaler {
        PoolScaler::Idle => json!({ "kind": kind }),
        PoolScaler::WaterLevel(w) => json!({ "kind": kind, "redundantPolls": w.redundant_times() }),
        PoolScaler::Ema(e) => json!({ "kind": kind, "ema": e.ema() }),
    }
}
