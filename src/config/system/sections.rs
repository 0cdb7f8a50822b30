//! Reading the system configuration file: one function per section of the JSON document, each
//! applying its object's keys over the matching part of [`SystemConfig`]. [`apply_file`] calls
//! them in a fixed order, which is also the order of the problems they report.
//!
//! Keys Noslate defines but this runtime does not use are type-checked and noted in
//! [`SystemConfig::ignored_keys`]; any other key is an unknown-key problem.

use serde_json::Value;

use super::{
    AccessLogDestination, CONCURRENCY_STATS_MODES, CircuitBreakerConfig, ControlPlaneConfig,
    DEFAULT_EMA_WORKER_TRAFFIC_STATS_PULLING_MS, DataPlaneConfig, EmaSettings, HttpConfig,
    LoggerConfig, MAX_BUSY_POLL_MICROS, MAX_SPARE_WORKERS, MAX_START_FAILURE_STDERR_BYTES,
    MIN_MAX_HEADER_BYTES, MIN_STREAM_WINDOW, SCALERS, SHRINK_STRATEGIES, ScalerKind, StarterConfig,
    SystemConfig, TurfConfig, WorkerDefaults, log_level,
};
use crate::config::problems::{
    Fields, Problems, boolean, describe, in_unit_interval, int, join, set, string,
};
use crate::config::profile::{MIN_MEMORY_LIMIT_BYTES, check_name, is_env_name};

/// Applies the configuration file's object over `cfg`, section by section.
pub(super) fn apply_file(cfg: &mut SystemConfig, root: &Value, p: &mut Problems) {
    let Some(mut f) = Fields::new(root, "", p) else {
        return;
    };
    apply_default_function(&mut cfg.default_function, &mut f, p);
    apply_readiness_path(&mut cfg.readiness_path, &mut f, p);
    section(&mut f, "http", p, |s, p| apply_http(&mut cfg.http, s, p));
    section(&mut f, "plane", p, |s, p| {
        apply_plane(&mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "controlPlane", p, |s, p| {
        apply_control_plane(&mut cfg.control_plane, &mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "dataPlane", p, |s, p| {
        apply_data_plane(&mut cfg.data_plane, &mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "dirs", p, |s, p| {
        apply_dirs(&mut cfg.ignored_keys, s, p);
    });
    apply_virtual_memory_pool_size(cfg, &mut f, p);
    section(&mut f, "worker", p, |s, p| {
        apply_worker(&mut cfg.worker, s, p);
    });
    section(&mut f, "starter", p, |s, p| {
        apply_starter(&mut cfg.starter, s, p);
    });
    section(&mut f, "turf", p, |s, p| {
        apply_turf(&mut cfg.turf, &mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "delegate", p, |s, p| {
        apply_delegate(&mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "systemCircuitBreaker", p, |s, p| {
        apply_circuit_breaker(&mut cfg.system_circuit_breaker, s, p);
    });
    section(&mut f, "logger", p, |s, p| {
        apply_logger(&mut cfg.logger, &mut cfg.ignored_keys, s, p);
    });
    section(&mut f, "metrics", p, |s, p| {
        apply_metrics(&mut cfg.metrics_address, s, p);
        if let Some((value, path)) = s.get("enabled") {
            set(&mut cfg.metrics_enabled, boolean(value, &path, p));
        }
    });
    section(&mut f, "gateway", p, |s, p| {
        super::gateway::apply_gateway(&mut cfg.gateway, s, p);
    });
    section(&mut f, "grpc", p, |s, p| {
        apply_grpc(&mut cfg.ignored_keys, s, p);
    });
    apply_top_level_ignored(&mut cfg.ignored_keys, &mut f, p);
    f.finish(p);
}

/// Runs `apply` on the object under `key` of `f`, if there is one, then reports its unknown
/// keys. A value that is not an object is one problem and `apply` is not run.
fn section<'a>(
    f: &mut Fields<'a>,
    key: &'static str,
    p: &mut Problems,
    apply: impl FnOnce(&mut Fields<'a>, &mut Problems),
) {
    if let Some(mut s) = f.object(key, p) {
        apply(&mut s, p);
        s.finish(p);
    }
}

/// What an ignored key must hold.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A non-negative integer.
    Int,
    /// A boolean.
    Bool,
    /// A string.
    Str,
    /// An object with any content.
    Object,
    /// Anything.
    Any,
}

/// Reads each of `keys`, checks its type and notes it in `ignored`.
fn ignore(
    f: &mut Fields<'_>,
    keys: &[(&'static str, Kind)],
    ignored: &mut Vec<String>,
    p: &mut Problems,
) {
    for &(key, kind) in keys {
        let Some((value, path)) = f.get(key) else {
            continue;
        };
        let expected = match kind {
            Kind::Int => int::<u64>(value, &path, 0, p).is_some(),
            Kind::Bool => boolean(value, &path, p).is_some(),
            Kind::Str => string(value, &path, p).is_some(),
            Kind::Object => Fields::new(value, &path, p).is_some(),
            Kind::Any => true,
        };
        if expected {
            ignored.push(path);
        }
    }
}

/// The top-level `defaultFunction`: a function name.
fn apply_default_function(slot: &mut Option<String>, f: &mut Fields<'_>, p: &mut Problems) {
    if let Some((value, path)) = f.get("defaultFunction")
        && let Some(name) = string(value, &path, p)
        && check_name(&name, &path, p)
    {
        *slot = Some(name);
    }
}

/// `metrics.address`: `host:port`, or a port alone for `127.0.0.1:<port>` (metrics are not
/// for the world unless an address says so).
fn apply_metrics(slot: &mut Option<std::net::SocketAddr>, f: &mut Fields<'_>, p: &mut Problems) {
    let Some((value, path)) = f.get("address") else {
        return;
    };
    let Some(text) = string(value, &path, p) else {
        return;
    };
    let parsed = text.parse::<std::net::SocketAddr>().ok().or_else(|| {
        let port = text.parse::<u16>().ok()?;
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    });
    match parsed {
        Some(addr) => *slot = Some(addr),
        None => p.add(
            path,
            format!("must be host:port (such as 127.0.0.1:9464) or a port, got {text:?}"),
        ),
    }
}

/// The top-level `readinessPath`: an absolute path without query, fragment or spaces.
fn apply_readiness_path(slot: &mut String, f: &mut Fields<'_>, p: &mut Problems) {
    if let Some((value, path)) = f.get("readinessPath")
        && let Some(ready) = string(value, &path, p)
    {
        if ready.starts_with('/') && !ready.contains(['?', '#', ' ']) && ready.len() > 1 {
            *slot = ready;
        } else {
            p.add(
                path,
                format!("must be an absolute path such as /ready, got {ready:?}"),
            );
        }
    }
}

/// The top-level `virtualMemoryPoolSize`: a byte size of at least one worker's smallest limit.
fn apply_virtual_memory_pool_size(cfg: &mut SystemConfig, f: &mut Fields<'_>, p: &mut Problems) {
    let size = f.byte_size("virtualMemoryPoolSize", MIN_MEMORY_LIMIT_BYTES, p);
    if size.is_some() {
        cfg.pool_size_source = crate::config::PoolSizeSource::ConfigFile;
    }
    set(&mut cfg.virtual_memory_pool_size, size);
}

/// The top-level keys Noslate defines that mean nothing here. `projectRoot` is not documented,
/// but Noslate's defaults have it, so every config it dumps (`run/*.config.json`) does too.
fn apply_top_level_ignored(ignored: &mut Vec<String>, f: &mut Fields<'_>, p: &mut Problems) {
    ignore(
        f,
        &[("noslatedAddonType", Kind::Str), ("projectRoot", Kind::Str)],
        ignored,
        p,
    );
}

/// A byte count as `usize`, saturating where `u64` is wider.
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `http.*` (ours): the HTTP front end's limits.
fn apply_http(http: &mut HttpConfig, s: &mut Fields<'_>, p: &mut Problems) {
    set(
        &mut http.max_request_body_size,
        s.byte_size("maxRequestBodySize", 0, p),
    );
    set(
        &mut http.max_header_bytes,
        s.int("maxHeaderBytes", MIN_MAX_HEADER_BYTES, p),
    );
    set(&mut http.max_headers, s.int("maxHeaders", 1, p));
    set(&mut http.max_connections, s.int("maxConnections", 1, p));
    set(&mut http.header_timeout_ms, s.int("headerTimeoutMs", 1, p));
    set(
        &mut http.max_connection_output_bytes,
        s.byte_size("maxConnectionOutputBytes", 1024, p)
            .map(saturating_usize),
    );
    set(
        &mut http.max_buffered_bytes,
        s.byte_size("maxBufferedBytes", 64 * 1024, p)
            .map(saturating_usize),
    );
    set(&mut http.linger_timeout_ms, s.int("lingerTimeoutMs", 0, p));
    set(
        &mut http.linger_max_bytes,
        s.byte_size("lingerMaxBytes", 0, p),
    );
}

/// `plane.*`: Noslate's process layout, which a single process has no use for.
fn apply_plane(ignored: &mut Vec<String>, s: &mut Fields<'_>, p: &mut Problems) {
    ignore(
        s,
        &[
            ("dataPlaneCount", Kind::Int),
            ("controlPlaneCount", Kind::Int),
            ("planeFirstConnectionTimeout", Kind::Int),
        ],
        ignored,
        p,
    );
}

/// `controlPlane.*`: worker launching and scaling.
fn apply_control_plane(
    cp: &mut ControlPlaneConfig,
    ignored: &mut Vec<String>,
    s: &mut Fields<'_>,
    p: &mut Problems,
) {
    set(&mut cp.expand_concurrency, s.int("expandConcurrency", 1, p));
    let pulling = s.int("workerTrafficStatsPullingMs", 1, p);
    set(
        &mut cp.worker_redundant_victim_spare_times,
        s.int("workerRedundantVictimSpareTimes", 1, p),
    );
    set(
        &mut cp.capacity_scaling_stage,
        s.number(
            "capacityScalingStage",
            "a number in (0, 1]",
            in_unit_interval,
            p,
        ),
    );
    let scaler = s.choice("scaler", SCALERS, p);
    let use_ema = s.boolean("useEmaScaling", p);
    set(&mut cp.scaler, resolve_scaler(scaler, use_ema, p));
    let code = &mut cp.code_packages;
    set(
        &mut code.max_bytes,
        s.byte_size("codePackageMaxBytes", 1, p),
    );
    set(
        &mut code.max_unpacked_bytes,
        s.byte_size("codePackageMaxUnpackedBytes", 1, p),
    );
    set(&mut code.max_entries, s.int("codePackageMaxEntries", 1, p));
    set(
        &mut code.fetch_timeout_ms,
        s.int("codePackageFetchTimeoutMs", 1, p),
    );
    set(
        &mut code.fetch_concurrency,
        s.int("codePackageFetchConcurrency", 1, p),
    );
    // Noslate forces 1 s under EMA scaling even when the key is set; we only default it.
    if cp.scaler == ScalerKind::Ema {
        cp.worker_traffic_stats_pulling_ms = DEFAULT_EMA_WORKER_TRAFFIC_STATS_PULLING_MS;
    }
    set(&mut cp.worker_traffic_stats_pulling_ms, pulling);
    ignore(s, &[("dumpWorkerTrafficStats", Kind::Bool)], ignored, p);
}

/// `controlPlane.scaler` (ours) and Noslate's `controlPlane.useEmaScaling`: `useEmaScaling:
/// true` alone means `ema`, as in Noslate; `false` alone keeps the default, because this
/// runtime's default was idle shrink before `scaler` existed and a config Noslate dumped
/// carries `false` whether or not its author chose anything. Both set and disagreeing is a
/// problem at `controlPlane.scaler`.
fn resolve_scaler(
    scaler: Option<ScalerKind>,
    use_ema: Option<bool>,
    p: &mut Problems,
) -> Option<ScalerKind> {
    match (scaler, use_ema) {
        (Some(kind), Some(ema)) if (kind == ScalerKind::Ema) != ema => {
            p.add(
                "controlPlane.scaler",
                format!(
                    "{:?} conflicts with controlPlane.useEmaScaling: {ema}; set one of them \
                     (useEmaScaling: true means \"ema\")",
                    kind.as_str()
                ),
            );
            None
        }
        (Some(kind), _) => Some(kind),
        (None, Some(true)) => Some(ScalerKind::Ema),
        (None, _) => None,
    }
}

/// `dataPlane.*`: request routing.
fn apply_data_plane(
    dp: &mut DataPlaneConfig,
    ignored: &mut Vec<String>,
    s: &mut Fields<'_>,
    p: &mut Problems,
) {
    set(
        &mut dp.close_traffic_timeout_ms,
        s.int("closeTrafficTimeout", 0, p),
    );
    set(
        &mut dp.request_queue_limit,
        s.int("requestQueueLimit", 1, p),
    );
    set(
        &mut dp.cancel_grace_period_ms,
        s.int("cancelGracePeriod", 0, p),
    );
    if let Some(bytes) = s.byte_size("streamWindow", u64::from(MIN_STREAM_WINDOW), p) {
        match u32::try_from(bytes) {
            Ok(window) if window <= crate::wire::MAX_WINDOW => dp.stream_window = window,
            _ => p.add(
                "dataPlane.streamWindow",
                format!(
                    "expected at most {} bytes (16 MiB), got {bytes}",
                    crate::wire::MAX_WINDOW
                ),
            ),
        }
    }
    set(
        &mut dp.busy_poll_micros,
        s.int_at_most("busyPollMicros", 0, MAX_BUSY_POLL_MICROS, p),
    );
    set(
        &mut dp.busy_poll_max_requests,
        s.int("busyPollMaxRequests", 0, p),
    );
    set(
        &mut dp.busy_poll_max_cpu_pressure,
        s.int_at_most("busyPollMaxCpuPressure", 0, 100u8, p),
    );
    set(
        &mut dp.splice_request_bodies,
        s.boolean("spliceRequestBodies", p),
    );
    set(&mut dp.halve_batches_from, s.int("halveBatchesFrom", 0, p));
    ignore(
        s,
        &[
            ("daprAdaptorModulePath", Kind::Str),
            ("daprAdaptorModuleOptions", Kind::Any),
            ("beaconHostModulePath", Kind::Str),
        ],
        ignored,
        p,
    );
}

/// `dirs.*`: Noslate's socket and work directories; ours come from the environment.
fn apply_dirs(ignored: &mut Vec<String>, s: &mut Fields<'_>, p: &mut Problems) {
    ignore(
        s,
        &[("noslatedSock", Kind::Str), ("noslatedWork", Kind::Str)],
        ignored,
        p,
    );
}

/// `worker.*`: the defaults every function profile starts from.
fn apply_worker(w: &mut WorkerDefaults, s: &mut Fields<'_>, p: &mut Problems) {
    set(
        &mut w.max_activate_requests,
        s.int("maxActivateRequests", 1, p),
    );
    set(&mut w.replica_count_limit, s.int("replicaCountLimit", 1, p));
    set(
        &mut w.reservation_count_per_function,
        s.int("reservationCountPerFunction", 0, p),
    );
    set(
        &mut w.default_initializer_timeout_ms,
        s.int("defaultInitializerTimeout", 1, p),
    );
    set(
        &mut w.default_invoke_timeout_ms,
        s.int("defaultInvokeTimeout", 1, p),
    );
    set(
        &mut w.default_idle_timeout_ms,
        s.int("defaultIdleTimeout", 1, p),
    );
    set(
        &mut w.default_shrink_strategy,
        s.choice("defaultShrinkStrategy", SHRINK_STRATEGIES, p),
    );
    set(&mut w.gc_log_delay_ms, s.int("gcLogDelay", 0, p));
    set(
        &mut w.gc_log_high_water_mark,
        s.int("gcLogHighWaterMark", 0, p),
    );
    set(
        &mut w.concurrency_stats_mode,
        s.choice("concurrencyStatsMode", CONCURRENCY_STATS_MODES, p),
    );
    read_ema(s, &mut w.ema, p);
}

/// Reads the EMA settings found in a `worker` object over `ema` (the system config's
/// `worker.*` and a function profile's `worker` alike).
pub(in crate::config) fn read_ema(f: &mut Fields<'_>, ema: &mut EmaSettings, p: &mut Problems) {
    set(
        &mut ema.concurrency_sliding_window_size_ms,
        f.int("concurrencySlidingWindowSize", 1, p),
    );
    set(
        &mut ema.concurrency_sliding_bucket_count,
        f.int("concurrencySlidingBucketCount", 1, p),
    );
    set(
        &mut ema.ema_concurrency_alpha,
        f.number(
            "emaConcurrencyAlpha",
            "a number in (0, 1]",
            in_unit_interval,
            p,
        ),
    );
    set(
        &mut ema.concurrency_expand_threshold,
        f.number("concurrencyExpandThreshold", "a number > 0", |x| x > 0.0, p),
    );
    set(
        &mut ema.concurrency_shrink_threshold,
        f.number(
            "concurrencyShrinkThreshold",
            "a number >= 0",
            |x| x >= 0.0,
            p,
        ),
    );
    set(&mut ema.expand_cooldown_ms, f.int("expandCooldown", 0, p));
    set(&mut ema.shrink_cooldown_ms, f.int("shrinkCooldown", 0, p));
    set(
        &mut ema.scale_factor,
        f.number("scaleFactor", "a number in (0, 1]", in_unit_interval, p),
    );
    set(
        &mut ema.precision_zero_threshold,
        f.number("precisionZeroThreshold", "a number >= 0", |x| x >= 0.0, p),
    );
    set(
        &mut ema.shrink_cooldown_on_startup,
        f.boolean("shrinkCooldownOnStartup", p),
    );
}

/// `starter.*`: the interpreters (`nodejs.bin`, `python3.bin`) and the aworker settings.
fn apply_starter(starter: &mut StarterConfig, s: &mut Fields<'_>, p: &mut Problems) {
    section(s, "nodejs", p, |n, p| {
        set(
            &mut starter.nodejs_bin,
            n.non_empty_string("bin", p).map(Some),
        );
    });
    section(s, "python3", p, |n, p| {
        set(
            &mut starter.python3_bin,
            n.non_empty_string("bin", p).map(Some),
        );
    });
    section(s, "aworker", p, |a, p| {
        set(
            &mut starter.aworker_default_seed_script,
            a.non_empty_string("defaultSeedScript", p).map(Some),
        );
        if let Some((value, path)) = a.get("defaultEnvirons") {
            set(
                &mut starter.aworker_default_environs,
                env_map(value, &path, p),
            );
        }
    });
}

/// A JSON object of string values, each named like an environment variable
/// (`starter.aworker.defaultEnvirons`, `gateway.env`), as sorted pairs.
pub(super) fn env_map(
    value: &Value,
    path: &str,
    p: &mut Problems,
) -> Option<Vec<(String, String)>> {
    let map = value.as_object();
    if map.is_none() {
        p.add(
            path,
            format!(
                "expected an object of string values, got {}",
                describe(value)
            ),
        );
    }
    let mut pairs = Vec::new();
    let mut all_ok = true;
    for (key, item) in map? {
        let item_path = join(path, key);
        if !is_env_name(key) {
            all_ok = false;
            p.add(
                &item_path,
                "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
            );
        }
        match string(item, &item_path, p) {
            Some(s) => pairs.push((key.clone(), s)),
            None => all_ok = false,
        }
    }
    pairs.sort();
    all_ok.then_some(pairs)
}

/// `turf.workerChannel`'s values.
const WORKER_CHANNELS: &[(&str, crate::turf::spawn::Channel)] = &[
    ("socket", crate::turf::spawn::Channel::Socket),
    ("pipe", crate::turf::spawn::Channel::Pipe),
];

/// `turf.*`: the process sandbox. `stopGracePeriod` is ours for Noslate's
/// `gracefulExitPeriodMs`; setting both is a problem.
fn apply_turf(
    turf: &mut TurfConfig,
    ignored: &mut Vec<String>,
    s: &mut Fields<'_>,
    p: &mut Problems,
) {
    if s.has("stopGracePeriod") && s.has("gracefulExitPeriodMs") {
        p.add(
            s.child("stopGracePeriod"),
            "set either turf.stopGracePeriod or its Noslate name turf.gracefulExitPeriodMs, \
             not both",
        );
    }
    set(
        &mut turf.graceful_exit_period_ms,
        s.int("gracefulExitPeriodMs", 0, p),
    );
    set(
        &mut turf.graceful_exit_period_ms,
        s.int("stopGracePeriod", 0, p),
    );
    set(&mut turf.isolation, s.boolean("isolation", p));
    set(&mut turf.enforce_limits, s.boolean("enforceLimits", p));
    set(&mut turf.user, s.non_empty_string("user", p));
    if let Some((value, path)) = s.get("inheritEnv") {
        set(
            &mut turf.inherit_env,
            crate::config::inherit::parse_inherit_env(value, &path, p),
        );
    }
    set(
        &mut turf.spare_workers,
        s.int_at_most("spareWorkers", 0, MAX_SPARE_WORKERS, p),
    );
    set(
        &mut turf.worker_channel,
        s.choice("workerChannel", WORKER_CHANNELS, p),
    );
    ignore(
        s,
        &[
            ("bin", Kind::Str),
            ("socketPath", Kind::Str),
            ("socketSession", Kind::Bool),
            ("reconcilingInterval", Kind::Int),
        ],
        ignored,
        p,
    );
}

/// `delegate.*`: Noslate's worker delegate, which this runtime does not have.
fn apply_delegate(ignored: &mut Vec<String>, s: &mut Fields<'_>, p: &mut Problems) {
    ignore(
        s,
        &[
            ("sockConnectTimeout", Kind::Int),
            ("resourceAcquisitionTimeout", Kind::Int),
            ("kvStoragePerNamespaceCapacity", Kind::Int),
            ("kvStoragePerNamespaceMaxSize", Kind::Int),
            ("kvStoragePerNamespaceMaxByteLength", Kind::Int),
        ],
        ignored,
        p,
    );
}

/// `systemCircuitBreaker.*`: when the whole runtime stops accepting requests.
fn apply_circuit_breaker(cb: &mut CircuitBreakerConfig, s: &mut Fields<'_>, p: &mut Problems) {
    set(
        &mut cb.request_count_limit,
        s.int("requestCountLimit", 1, p),
    );
    set(
        &mut cb.pending_request_count_limit,
        s.int("pendingRequestCountLimit", 1, p),
    );
    set(
        &mut cb.system_load1_limit,
        s.number("systemLoad1Limit", "a number > 0", |x| x > 0.0, p),
    );
}

/// `logger.*`: the level, the log directory and where workers' output goes.
fn apply_logger(
    logger: &mut LoggerConfig,
    ignored: &mut Vec<String>,
    s: &mut Fields<'_>,
    p: &mut Problems,
) {
    if let Some((value, path)) = s.get("level") {
        set(&mut logger.level, log_level(value, &path, p));
    }
    set(&mut logger.dir, s.non_empty_string("dir", p).map(Some));
    if let Some((value, path)) = s.get("workerOutput") {
        match value.as_str() {
            Some("files") => logger.worker_output_to_console = false,
            Some("console") => logger.worker_output_to_console = true,
            _ => p.add(
                path,
                format!("expected \"files\" or \"console\", got {value}"),
            ),
        }
    }
    set(
        &mut logger.worker_output_line_limit,
        s.int("workerOutputLineLimit", 80, p),
    );
    set(
        &mut logger.start_failure_stderr_bytes,
        s.int_at_most(
            "startFailureStderrBytes",
            0,
            MAX_START_FAILURE_STDERR_BYTES,
            p,
        ),
    );
    set(
        &mut logger.console_buffer_size,
        s.int("consoleBufferSize", 64 * 1024, p),
    );
    if let Some((value, path)) = s.get("accessLog") {
        let destination = [
            AccessLogDestination::Off,
            AccessLogDestination::File,
            AccessLogDestination::Console,
        ]
        .into_iter()
        .find(|d| value.as_str() == Some(d.as_str()));
        match destination {
            Some(d) => logger.access_log = d,
            None => p.add(
                path,
                format!("expected \"off\", \"file\" or \"console\", got {value}"),
            ),
        }
    }
    set(
        &mut logger.access_log_max_bytes,
        s.byte_size("accessLogMaxBytes", 4096, p),
    );
    set(&mut logger.access_log_files, s.int("accessLogFiles", 0, p));
    set(
        &mut logger.access_log_buffer_size,
        s.byte_size("accessLogBufferSize", 4096, p)
            .map(saturating_usize),
    );
    ignore(
        s,
        &[
            ("enableConsole", Kind::Bool),
            ("timestampFormat", Kind::Str),
            ("customFactoryPath", Kind::Str),
        ],
        ignored,
        p,
    );
}

/// `grpc.*`: Noslate's plane connections, which a single process does not have.
fn apply_grpc(ignored: &mut Vec<String>, s: &mut Fields<'_>, p: &mut Problems) {
    ignore(s, &[("channelOptions", Kind::Object)], ignored, p);
}
