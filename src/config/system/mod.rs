//! The system configuration: Noslate's config keys (and a few of ours) with their defaults, a
//! JSON file on top of them, then environment variable overrides. This module holds the
//! settings, their defaults, the environment overrides and the checks across fields; reading
//! the file's sections is `sections`.

mod gateway;
mod sections;

use std::path::Path;

use serde_json::Value;

use super::Problem;
use super::problems::{
    Int, Problems, byte_size, choice, describe, int, join, lookup, one_of, read_json_file, set,
};
use super::profile::MIN_MEMORY_LIMIT_BYTES;
pub use gateway::{
    DEFAULT_GATEWAY_SDK_PATH, DEFAULT_GATEWAY_STDERR_TAIL_BYTES, GATEWAY_SDK_PATH_ENV,
    GatewayConfig, RuntimePort,
};
use sections::apply_file;
pub(super) use sections::read_ema;

/// Default `http.maxRequestBodySize`, in bytes (32 MiB).
pub const DEFAULT_MAX_REQUEST_BODY_SIZE_BYTES: u64 = 32 << 20;
/// Default `http.maxHeaderBytes`: the largest request head, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest accepted `http.maxHeaderBytes`, in bytes.
pub const MIN_MAX_HEADER_BYTES: u64 = 1024;
/// Default `http.maxHeaders`: the most header lines in one request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default `http.maxConnections`: the most client connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `http.headerTimeoutMs`: how long a request head may take to arrive once its first
/// byte has, in milliseconds. Idle keep-alive connections are not timed.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;
/// Default `http.maxConnectionOutputBytes`: unsent response bytes above which a connection
/// stops starting pipelined requests (and so stops being read).
pub const DEFAULT_MAX_CONNECTION_OUTPUT_BYTES: usize = 16 * 1024;
/// Default `http.maxBufferedBytes`: request and response bytes all connections together may
/// hold in the runtime; past it, connections with unsent output are not read.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;
/// Default `http.lingerTimeoutMs`: after its last response, how long a closing connection's
/// input is still read and dropped (so that unread input does not turn the close into a reset
/// that destroys the response), in milliseconds.
pub const DEFAULT_LINGER_TIMEOUT_MS: u64 = 2_000;
/// Default `logger.workerOutputLineLimit`: lines longer than this are cut.
pub const DEFAULT_WORKER_OUTPUT_LINE_LIMIT: usize = 64 * 1024;
/// Default `logger.startFailureStderrBytes`: how much of the end of a worker's stderr the error
/// of a start that failed by exiting quotes (a node flag it refused, a module it could not load).
pub const DEFAULT_START_FAILURE_STDERR_BYTES: usize = 1024;
/// Largest accepted `logger.startFailureStderrBytes`: the quote goes into an error answer.
pub const MAX_START_FAILURE_STDERR_BYTES: usize = 64 * 1024;
/// Default `logger.consoleBufferSize`: output waiting for the runtime's stdout or stderr.
pub const DEFAULT_CONSOLE_BUFFER_SIZE: usize = 1024 * 1024;

/// Default `logger.accessLogMaxBytes`: the size at which `access.log` is rotated.
pub const DEFAULT_ACCESS_LOG_MAX_BYTES: u64 = 16 << 20;
/// Default `logger.accessLogFiles`: rotated access logs kept beside the current one.
pub const DEFAULT_ACCESS_LOG_FILES: u32 = 3;
/// Default `logger.accessLogBufferSize`: access-log lines waiting for the disk; past it, lines
/// are dropped and counted.
pub const DEFAULT_ACCESS_LOG_BUFFER_SIZE: usize = 1 << 20;

/// Where the access log goes (`logger.accessLog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogDestination {
    /// Not written.
    Off,
    /// `access.log` in the log directory, rotated by size.
    File,
    /// The runtime's stdout, which FC collects into the function's logs.
    Console,
}

impl AccessLogDestination {
    /// The config value that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogDestination::Off => "off",
            AccessLogDestination::File => "file",
            AccessLogDestination::Console => "console",
        }
    }
}

/// Default `http.lingerMaxBytes`: the most input a closing connection reads and drops.
pub const DEFAULT_LINGER_MAX_BYTES: u64 = 1 << 20;

/// Default `worker.maxActivateRequests`: concurrent requests per worker.
pub const DEFAULT_MAX_ACTIVATE_REQUESTS: u32 = 10;
/// Default `worker.replicaCountLimit`: most starting + active workers per function.
pub const DEFAULT_REPLICA_COUNT_LIMIT: u32 = 10;
/// Default `worker.reservationCountPerFunction`: warm workers kept per function.
pub const DEFAULT_RESERVATION_COUNT_PER_FUNCTION: u32 = 0;
/// Default `worker.defaultInitializerTimeout`, in milliseconds.
pub const DEFAULT_INITIALIZER_TIMEOUT_MS: u64 = 10_000;
/// Default `worker.defaultInvokeTimeout`, in milliseconds: the deadline of a request that has
/// no `x-fc-function-timeout` header.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 10_000;
/// Default `worker.defaultIdleTimeout`, in milliseconds: a worker idle this long is drained and
/// stopped, down to the function's reservation.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default `worker.defaultShrinkStrategy`.
pub const DEFAULT_SHRINK_STRATEGY: ShrinkStrategy = ShrinkStrategy::Lcc;
/// Default `worker.gcLogDelay`, in milliseconds: how long a stopped worker's logs are kept.
pub const DEFAULT_GC_LOG_DELAY_MS: u64 = 5 * 60 * 1000;
/// Default `worker.gcLogHighWaterMark`: queued log directories that force deletion at once.
pub const DEFAULT_GC_LOG_HIGH_WATER_MARK: usize = 100;
/// Default `worker.concurrencyStatsMode`.
pub const DEFAULT_CONCURRENCY_STATS_MODE: ConcurrencyStatsMode = ConcurrencyStatsMode::Instant;

/// Default `worker.concurrencySlidingWindowSize`, in milliseconds.
pub const DEFAULT_CONCURRENCY_SLIDING_WINDOW_SIZE_MS: u64 = 60_000;
/// Default `worker.concurrencySlidingBucketCount`.
pub const DEFAULT_CONCURRENCY_SLIDING_BUCKET_COUNT: u32 = 6;
/// Default `worker.emaConcurrencyAlpha`, a smoothing factor in (0, 1].
pub const DEFAULT_EMA_CONCURRENCY_ALPHA: f64 = 0.5;
/// Default `worker.concurrencyExpandThreshold`, a water level ratio.
pub const DEFAULT_CONCURRENCY_EXPAND_THRESHOLD: f64 = 0.7;
/// Default `worker.concurrencyShrinkThreshold`, a water level ratio.
pub const DEFAULT_CONCURRENCY_SHRINK_THRESHOLD: f64 = 0.3;
/// Default `worker.expandCooldown`, in milliseconds.
pub const DEFAULT_EXPAND_COOLDOWN_MS: u64 = 1_000;
/// Default `worker.shrinkCooldown`, in milliseconds.
pub const DEFAULT_SHRINK_COOLDOWN_MS: u64 = 60_000;
/// Default `worker.scaleFactor`, the water level ratio aimed at after scaling.
pub const DEFAULT_SCALE_FACTOR: f64 = 0.5;
/// Default `worker.precisionZeroThreshold`: EMA concurrency below it counts as 0.
pub const DEFAULT_PRECISION_ZERO_THRESHOLD: f64 = 0.01;
/// Default `worker.shrinkCooldownOnStartup`.
pub const DEFAULT_SHRINK_COOLDOWN_ON_STARTUP: bool = true;

/// Default `dataPlane.closeTrafficTimeout`, in milliseconds: the longest wait for a worker to
/// drain.
pub const DEFAULT_CLOSE_TRAFFIC_TIMEOUT_MS: u64 = 30_000;
/// Default `dataPlane.requestQueueLimit`: most queued requests per function.
pub const DEFAULT_REQUEST_QUEUE_LIMIT: usize = 1_000;
/// Default `dataPlane.cancelGracePeriod`, in milliseconds.
pub const DEFAULT_CANCEL_GRACE_PERIOD_MS: u64 = 1_000;
/// `dataPlane.streamWindow`: one protocol pipe's worth (1 MiB), so that a worker streaming a
/// large response always has bytes in flight while the runtime passes the last ones on.
pub const DEFAULT_STREAM_WINDOW: u32 = 1 << 20;
/// The smallest `dataPlane.streamWindow`: one response-body frame.
pub const MIN_STREAM_WINDOW: u32 = 64 * 1024;
/// Default `dataPlane.busyPollMicros`: about one worker's answer to a trivial request, so that
/// at low concurrency the answer usually arrives before the loop would have slept.
pub const DEFAULT_BUSY_POLL_MICROS: u64 = 100;
/// The largest `dataPlane.busyPollMicros`: past this, sleeping costs less than spinning.
pub const MAX_BUSY_POLL_MICROS: u64 = 10_000;
/// Default `dataPlane.busyPollMaxRequests`: a few requests in progress (FC's default instance
/// concurrency is 1); with more, events batch up while the loop sleeps.
pub const DEFAULT_BUSY_POLL_MAX_REQUESTS: usize = 4;
/// Default `dataPlane.busyPollMaxCpuPressure`: 100, the pressure is not watched. On two shared
/// vCPUs a limit of 25 % took the spin off a runtime behind a busy gateway, as meant (37 % there
/// at c=64), but the machine's own background pressure (12 to 19 %) and the second the sample
/// lags behind a burst also took it off half of the FC port's c=1 rounds.
pub const DEFAULT_BUSY_POLL_MAX_CPU_PRESSURE: u8 = 100;
/// Default `dataPlane.halveBatchesFrom`. Handing a worker the first half of a batch's requests
/// while the loop reads the rest kept both busy where whole batches made them take turns:
/// through one Node.js worker the machine's idle share fell from about 20-30 % to 8-14 %, and
/// throughput rose by 5-8 % at 8, 32 and 64 clients, and by about 25 % at 16. Fixed slices of 32
/// events did as well at 64 clients but not at 16; slices of 2 to 8 cost more hand-offs than
/// they won at 64. Below 8 events a batch is the busy poll's business.
pub const DEFAULT_HALVE_BATCHES_FROM: usize = 8;

/// Default `controlPlane.expandConcurrency`: concurrent worker launches.
pub const DEFAULT_EXPAND_CONCURRENCY: u32 = 4;
/// Default `controlPlane.codePackageMaxBytes`: the largest code package (zip) fetched.
pub const DEFAULT_CODE_PACKAGE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `controlPlane.codePackageMaxUnpackedBytes`: most bytes a package may unpack to.
pub const DEFAULT_CODE_PACKAGE_MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `controlPlane.codePackageMaxEntries`: most entries (files and directories) in a
/// package.
pub const DEFAULT_CODE_PACKAGE_MAX_ENTRIES: u32 = 100_000;
/// Default `controlPlane.codePackageFetchTimeoutMs`: the longest a download may take.
pub const DEFAULT_CODE_PACKAGE_FETCH_TIMEOUT_MS: u64 = 120_000;
/// Default `controlPlane.codePackageFetchConcurrency`: packages fetched at once.
pub const DEFAULT_CODE_PACKAGE_FETCH_CONCURRENCY: u32 = 2;
/// Default `controlPlane.workerTrafficStatsPullingMs`, in milliseconds.
pub const DEFAULT_WORKER_TRAFFIC_STATS_PULLING_MS: u64 = 10_000;
/// Default `controlPlane.workerTrafficStatsPullingMs` when `useEmaScaling` is on, in
/// milliseconds.
pub const DEFAULT_EMA_WORKER_TRAFFIC_STATS_PULLING_MS: u64 = 1_000;
/// Default `controlPlane.workerRedundantVictimSpareTimes`: redundant polls before a shrink.
pub const DEFAULT_WORKER_REDUNDANT_VICTIM_SPARE_TIMES: u32 = 6;
/// Default `controlPlane.capacityScalingStage`, the water level ratio the legacy scaler aims at.
pub const DEFAULT_CAPACITY_SCALING_STAGE: f64 = 0.7;
/// Default `controlPlane.scaler`: idle shrink, what this runtime has always done (README,
/// "Scaling", says why it stays the default).
pub const DEFAULT_SCALER: ScalerKind = ScalerKind::Idle;

/// Default `virtualMemoryPoolSize`, in bytes (1 GiB).
pub const DEFAULT_VIRTUAL_MEMORY_POOL_SIZE_BYTES: u64 = 1 << 30;

/// Default `readinessPath`.
pub const DEFAULT_READINESS_PATH: &str = "/ready";

/// Default `turf.gracefulExitPeriodMs`, in milliseconds: SIGTERM to SIGKILL.
pub const DEFAULT_GRACEFUL_EXIT_PERIOD_MS: u64 = 3_000;

/// Default `systemCircuitBreaker.requestCountLimit`: active + queued requests.
pub const DEFAULT_REQUEST_COUNT_LIMIT: usize = 10_000;
/// Default `systemCircuitBreaker.pendingRequestCountLimit`: queued requests.
pub const DEFAULT_PENDING_REQUEST_COUNT_LIMIT: usize = 1_000;
/// Default `systemCircuitBreaker.systemLoad1Limit`, a 1-minute load average.
pub const DEFAULT_SYSTEM_LOAD1_LIMIT: f64 = 10.0;

/// Default `logger.level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Which worker goes first when a function shrinks (`LCC`, `FIFO` or `FILO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShrinkStrategy {
    /// `LCC`: the worker with the least current concurrency.
    Lcc,
    /// `FIFO`: the oldest worker.
    Fifo,
    /// `FILO`: the newest worker.
    Filo,
}

/// The JSON names of [`ShrinkStrategy`].
pub(super) const SHRINK_STRATEGIES: &[(&str, ShrinkStrategy)] = &[
    ("LCC", ShrinkStrategy::Lcc),
    ("FIFO", ShrinkStrategy::Fifo),
    ("FILO", ShrinkStrategy::Filo),
];

/// Which scaler decides a pool's size between requests (`controlPlane.scaler`). Growth from
/// the queue and the reservation floor apply under every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalerKind {
    /// `idle`: a ready worker idle for `worker.idleTimeout` is drained; growth is the queue's.
    Idle,
    /// `waterLevel`: Noslate's default (its `useEmaScaling: false`), polled every
    /// `controlPlane.workerTrafficStatsPullingMs`.
    WaterLevel,
    /// `ema`: Noslate's EMA concurrency scaler (its `useEmaScaling: true`).
    Ema,
}

/// The JSON names of [`ScalerKind`].
pub(super) const SCALERS: &[(&str, ScalerKind)] = &[
    ("idle", ScalerKind::Idle),
    ("waterLevel", ScalerKind::WaterLevel),
    ("ema", ScalerKind::Ema),
];

impl ScalerKind {
    /// Its name in `controlPlane.scaler`.
    pub fn as_str(self) -> &'static str {
        SCALERS
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("idle", |(name, _)| name)
    }
}

/// How a function's concurrency is reported to the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyStatsMode {
    /// `instant`: the concurrency at the moment of the poll.
    Instant,
    /// `periodic_max`: the highest concurrency since the previous poll.
    PeriodicMax,
    /// `periodic_avg`: the average concurrency since the previous poll (QPS × RT).
    PeriodicAvg,
}

/// The JSON names of [`ConcurrencyStatsMode`].
pub(super) const CONCURRENCY_STATS_MODES: &[(&str, ConcurrencyStatsMode)] = &[
    ("instant", ConcurrencyStatsMode::Instant),
    ("periodic_max", ConcurrencyStatsMode::PeriodicMax),
    ("periodic_avg", ConcurrencyStatsMode::PeriodicAvg),
];

/// Accepted `logger.level` values (lowercase) and what they let through.
const LOG_LEVELS: &[(&str, log::LevelFilter)] = &[
    ("off", log::LevelFilter::Off),
    ("none", log::LevelFilter::Off),
    ("error", log::LevelFilter::Error),
    ("warn", log::LevelFilter::Warn),
    ("info", log::LevelFilter::Info),
    ("debug", log::LevelFilter::Debug),
    ("trace", log::LevelFilter::Trace),
    ("all", log::LevelFilter::Trace),
];

/// Settings of the EMA scaler (`controlPlane.useEmaScaling`). The system config holds the
/// defaults under `worker.*`; a function profile may override each under its own `worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmaSettings {
    /// `concurrencySlidingWindowSize`, in milliseconds.
    pub concurrency_sliding_window_size_ms: u64,
    /// `concurrencySlidingBucketCount`: buckets in the sliding window.
    pub concurrency_sliding_bucket_count: u32,
    /// `emaConcurrencyAlpha`: smoothing factor in (0, 1].
    pub ema_concurrency_alpha: f64,
    /// `concurrencyExpandThreshold`: water level ratio above which the function expands.
    pub concurrency_expand_threshold: f64,
    /// `concurrencyShrinkThreshold`: water level ratio below which the function shrinks; always
    /// below the expand threshold.
    pub concurrency_shrink_threshold: f64,
    /// `expandCooldown`, in milliseconds.
    pub expand_cooldown_ms: u64,
    /// `shrinkCooldown`, in milliseconds.
    pub shrink_cooldown_ms: u64,
    /// `scaleFactor`: water level ratio in (0, 1] aimed at after scaling.
    pub scale_factor: f64,
    /// `precisionZeroThreshold`: EMA concurrency below it counts as 0.
    pub precision_zero_threshold: f64,
    /// `shrinkCooldownOnStartup`: a new function starts inside a shrink cooldown.
    pub shrink_cooldown_on_startup: bool,
}

impl Default for EmaSettings {
    fn default() -> Self {
        Self {
            concurrency_sliding_window_size_ms: DEFAULT_CONCURRENCY_SLIDING_WINDOW_SIZE_MS,
            concurrency_sliding_bucket_count: DEFAULT_CONCURRENCY_SLIDING_BUCKET_COUNT,
            ema_concurrency_alpha: DEFAULT_EMA_CONCURRENCY_ALPHA,
            concurrency_expand_threshold: DEFAULT_CONCURRENCY_EXPAND_THRESHOLD,
            concurrency_shrink_threshold: DEFAULT_CONCURRENCY_SHRINK_THRESHOLD,
            expand_cooldown_ms: DEFAULT_EXPAND_COOLDOWN_MS,
            shrink_cooldown_ms: DEFAULT_SHRINK_COOLDOWN_MS,
            scale_factor: DEFAULT_SCALE_FACTOR,
            precision_zero_threshold: DEFAULT_PRECISION_ZERO_THRESHOLD,
            shrink_cooldown_on_startup: DEFAULT_SHRINK_COOLDOWN_ON_STARTUP,
        }
    }
}

/// `http.*` (ours): limits of the HTTP front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http.maxRequestBodySize`, in bytes (a number or a size string such as `"32mb"`).
    pub max_request_body_size: u64,
    /// `http.maxHeaderBytes`: the largest request head, in bytes.
    pub max_header_bytes: usize,
    /// `http.maxHeaders`: the most header lines in one request.
    pub max_headers: usize,
    /// `http.maxConnections`: the most client connections open at once.
    pub max_connections: usize,
    /// `http.headerTimeoutMs`: a started request head must complete within this time (408).
    pub header_timeout_ms: u64,
    /// `http.maxConnectionOutputBytes`: one connection's unsent output above which it starts no
    /// further pipelined request.
    pub max_connection_output_bytes: usize,
    /// `http.maxBufferedBytes`: what all connections together may buffer.
    pub max_buffered_bytes: usize,
    /// `http.lingerTimeoutMs`: how long a closing connection's input is drained.
    pub linger_timeout_ms: u64,
    /// `http.lingerMaxBytes`: the most input a closing connection drains.
    pub linger_max_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            max_connection_output_bytes: DEFAULT_MAX_CONNECTION_OUTPUT_BYTES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            linger_timeout_ms: DEFAULT_LINGER_TIMEOUT_MS,
            linger_max_bytes: DEFAULT_LINGER_MAX_BYTES,
        }
    }
}

/// `worker.*`: the defaults every function profile starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerDefaults {
    /// `worker.maxActivateRequests`: concurrent requests per worker.
    pub max_activate_requests: u32,
    /// `worker.replicaCountLimit`: most starting + active workers per function.
    pub replica_count_limit: u32,
    /// `worker.reservationCountPerFunction`: warm workers kept per function; never above
    /// `replica_count_limit`.
    pub reservation_count_per_function: u32,
    /// `worker.defaultInitializerTimeout`, in milliseconds.
    pub default_initializer_timeout_ms: u64,
    /// `worker.defaultInvokeTimeout` (ours), in milliseconds: the deadline of a request that
    /// has no `x-fc-function-timeout` header.
    pub default_invoke_timeout_ms: u64,
    /// `worker.defaultIdleTimeout` (ours), in milliseconds: how long a worker may idle before it
    /// is drained and stopped (never below the reservation).
    pub default_idle_timeout_ms: u64,
    /// `worker.defaultShrinkStrategy`.
    pub default_shrink_strategy: ShrinkStrategy,
    /// `worker.gcLogDelay`, in milliseconds: how long a stopped worker's logs are kept.
    pub gc_log_delay_ms: u64,
    /// `worker.gcLogHighWaterMark`: queued log directories that force deletion at once.
    pub gc_log_high_water_mark: usize,
    /// `worker.concurrencyStatsMode`.
    pub concurrency_stats_mode: ConcurrencyStatsMode,
    /// The EMA scaler defaults (`worker.concurrencySlidingWindowSize` and friends).
    pub ema: EmaSettings,
}

impl Default for WorkerDefaults {
    fn default() -> Self {
        Self {
            max_activate_requests: DEFAULT_MAX_ACTIVATE_REQUESTS,
            replica_count_limit: DEFAULT_REPLICA_COUNT_LIMIT,
            reservation_count_per_function: DEFAULT_RESERVATION_COUNT_PER_FUNCTION,
            default_initializer_timeout_ms: DEFAULT_INITIALIZER_TIMEOUT_MS,
            default_invoke_timeout_ms: DEFAULT_INVOKE_TIMEOUT_MS,
            default_idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            default_shrink_strategy: DEFAULT_SHRINK_STRATEGY,
            gc_log_delay_ms: DEFAULT_GC_LOG_DELAY_MS,
            gc_log_high_water_mark: DEFAULT_GC_LOG_HIGH_WATER_MARK,
            concurrency_stats_mode: DEFAULT_CONCURRENCY_STATS_MODE,
            ema: EmaSettings::default(),
        }
    }
}

/// `dataPlane.*`: request routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// `dataPlane.closeTrafficTimeout`, in milliseconds: the longest wait for a worker to drain.
    pub close_traffic_timeout_ms: u64,
    /// `dataPlane.requestQueueLimit` (ours): most queued requests per function.
    pub request_queue_limit: usize,
    /// `dataPlane.cancelGracePeriod` (ours), in milliseconds.
    pub cancel_grace_period_ms: u64,
    /// `dataPlane.streamWindow` (ours): the response-body credit each worker stream starts
    /// with (INIT's `responseWindow`), which is also the most the runtime holds for one slow
    /// client.
    pub stream_window: u32,
    /// `dataPlane.busyPollMicros` (ours): how long the loop keeps polling, yielding the CPU
    /// between polls, after it handled events and before it sleeps (0: never).
    pub busy_poll_micros: u64,
    /// `dataPlane.busyPollMaxRequests` (ours): the most requests in progress at which the loop
    /// still spins.
    pub busy_poll_max_requests: usize,
    /// `dataPlane.busyPollMaxCpuPressure` (ours): the share of time (percent) in which some task
    /// waited for a CPU at or above which the loop does not spin (100: any).
    pub busy_poll_max_cpu_pressure: u8,
    /// `dataPlane.spliceRequestBodies` (ours): whether a large Content-Length request body
    /// moves from the client's socket to its worker with splice(2), inside the kernel, rather
    /// than being copied through the runtime.
    pub splice_request_bodies: bool,
    /// `dataPlane.halveBatchesFrom` (ours): the fewest client events in one batch of events at
    /// which the loop handles them in two halves, carrying out the work the first half made
    /// (requests handed to workers, answers written) before it handles the second (0: never).
    pub halve_batches_from: usize,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            close_traffic_timeout_ms: DEFAULT_CLOSE_TRAFFIC_TIMEOUT_MS,
            request_queue_limit: DEFAULT_REQUEST_QUEUE_LIMIT,
            cancel_grace_period_ms: DEFAULT_CANCEL_GRACE_PERIOD_MS,
            stream_window: DEFAULT_STREAM_WINDOW,
            busy_poll_micros: DEFAULT_BUSY_POLL_MICROS,
            busy_poll_max_requests: DEFAULT_BUSY_POLL_MAX_REQUESTS,
            busy_poll_max_cpu_pressure: DEFAULT_BUSY_POLL_MAX_CPU_PRESSURE,
            splice_request_bodies: true,
            halve_batches_from: DEFAULT_HALVE_BATCHES_FROM,
        }
    }
}

/// `controlPlane.*`: worker launching and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPlaneConfig {
    /// `controlPlane.expandConcurrency`: concurrent worker launches.
    pub expand_concurrency: u32,
    /// `controlPlane.workerTrafficStatsPullingMs`, in milliseconds: how often the water-level
    /// and EMA scalers poll. Defaults to [`DEFAULT_EMA_WORKER_TRAFFIC_STATS_PULLING_MS`] under
    /// the EMA scaler when the key is not set.
    pub worker_traffic_stats_pulling_ms: u64,
    /// `controlPlane.workerRedundantVictimSpareTimes`: consecutive redundant ticks before the
    /// legacy scaler shrinks.
    pub worker_redundant_victim_spare_times: u32,
    /// `controlPlane.capacityScalingStage`: water level ratio in (0, 1] the legacy scaler aims at.
    pub capacity_scaling_stage: f64,
    /// `controlPlane.scaler`, or Noslate's `controlPlane.useEmaScaling: true` for `ema`.
    pub scaler: ScalerKind,
    /// `controlPlane.codePackage*`: fetching and unpacking code packages.
    pub code_packages: CodePackageLimits,
}

/// `controlPlane.codePackage*`: what a code package may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePackageLimits {
    /// `codePackageMaxBytes`: the largest zip downloaded or read.
    pub max_bytes: u64,
    /// `codePackageMaxUnpackedBytes`: most bytes a package unpacks to, counted as it inflates.
    pub max_unpacked_bytes: u64,
    /// `codePackageMaxEntries`: most entries in a package.
    pub max_entries: u32,
    /// `codePackageFetchTimeoutMs`: the longest one download may take.
    pub fetch_timeout_ms: u64,
    /// `codePackageFetchConcurrency`: packages fetched and unpacked at once (one helper
    /// thread each).
    pub fetch_concurrency: u32,
}

impl Default for CodePackageLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CODE_PACKAGE_MAX_BYTES,
            max_unpacked_bytes: DEFAULT_CODE_PACKAGE_MAX_UNPACKED_BYTES,
            max_entries: DEFAULT_CODE_PACKAGE_MAX_ENTRIES,
            fetch_timeout_ms: DEFAULT_CODE_PACKAGE_FETCH_TIMEOUT_MS,
            fetch_concurrency: DEFAULT_CODE_PACKAGE_FETCH_CONCURRENCY,
        }
    }
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            expand_concurrency: DEFAULT_EXPAND_CONCURRENCY,
            worker_traffic_stats_pulling_ms: DEFAULT_WORKER_TRAFFIC_STATS_PULLING_MS,
            worker_redundant_victim_spare_times: DEFAULT_WORKER_REDUNDANT_VICTIM_SPARE_TIMES,
            capacity_scaling_stage: DEFAULT_CAPACITY_SCALING_STAGE,
            scaler: DEFAULT_SCALER,
            code_packages: CodePackageLimits::default(),
        }
    }
}

/// `turf.*`: the process sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurfConfig {
    /// `turf.stopGracePeriod` (ours), or Noslate's `turf.gracefulExitPeriodMs`, in
    /// milliseconds: SIGTERM to SIGKILL when a worker is stopped.
    pub graceful_exit_period_ms: u64,
    /// `turf.isolation` (ours): on top of the worker user, run workers in their own pid, ipc,
    /// uts and mount namespaces (read-only code, private `/tmp`) with a seccomp filter,
    /// wherever the start-up probe says the machine allows it.
    pub isolation: bool,
    /// `turf.user` (ours): the user (name, uid, or uid:gid) every worker, warm seed and spare
    /// runs as, without supplementary groups or capabilities, whenever the runtime is root and
    /// may switch users (with or without `turf.isolation`). `nobody` where `/etc/passwd` has
    /// no such user is 65534:65534. Naming the runtime's own user (`root`) keeps workers as
    /// privileged as the runtime, which start-up and `serve --probe` report.
    pub user: String,
    /// `turf.enforceLimits` (ours): enforce each worker's memory, cpu and pids limits. Off when
    /// the container's own limits are the only ones wanted (nofile and core still apply).
    pub enforce_limits: bool,
    /// `turf.spareWorkers` (ours): Node.js bootstrap processes kept started and function-agnostic,
    /// taken by the next Node.js function that scales up (at most [`MAX_SPARE_WORKERS`]; 0 is
    /// off).
    pub spare_workers: u32,
    /// `turf.inheritEnv` (ours): which of the runtime's environment variables workers inherit
    /// (`config::InheritEnv`).
    pub inherit_env: crate::config::InheritEnv,
    /// `turf.workerChannel` (ours): what carries the protocol on a worker's fds 3 and 4.
    pub worker_channel: crate::turf::spawn::Channel,
}

/// Default `turf.spareWorkers`.
pub const DEFAULT_SPARE_WORKERS: u32 = 1;
/// The most `turf.spareWorkers` may ask for: each is a Node.js process (about 40 MiB) that
/// serves nobody until it is taken.
pub const MAX_SPARE_WORKERS: u32 = 16;

/// Default `turf.isolation`: off (opt-in).
pub const DEFAULT_ISOLATION: bool = false;
/// Default `turf.user`: the kernel's overflow user, which owns no file.
pub const DEFAULT_TURF_USER: &str = "nobody";

impl Default for TurfConfig {
    fn default() -> Self {
        Self {
            graceful_exit_period_ms: DEFAULT_GRACEFUL_EXIT_PERIOD_MS,
            isolation: DEFAULT_ISOLATION,
            user: DEFAULT_TURF_USER.to_owned(),
            enforce_limits: true,
            spare_workers: DEFAULT_SPARE_WORKERS,
            inherit_env: crate::config::InheritEnv::Fc,
            worker_channel: crate::turf::spawn::Channel::Socket,
        }
    }
}

/// `starter.*`: how workers of each runtime are started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StarterConfig {
    /// `starter.nodejs.bin` (ours): the `node` executable; `None` means look it up in `PATH`.
    pub nodejs_bin: Option<String>,
    /// `starter.python3.bin` (ours): the `python3` executable; `None` means look it up in `PATH`.
    pub python3_bin: Option<String>,
    /// `starter.aworker.defaultSeedScript`: script the aworker seed runs, if any.
    pub aworker_default_seed_script: Option<String>,
    /// `starter.aworker.defaultEnvirons`: extra environment of aworker workers, sorted by name.
    pub aworker_default_environs: Vec<(String, String)>,
}

/// `systemCircuitBreaker.*`: when the whole runtime stops accepting requests.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    /// `systemCircuitBreaker.requestCountLimit`: active + queued requests.
    pub request_count_limit: usize,
    /// `systemCircuitBreaker.pendingRequestCountLimit`: queued requests.
    pub pending_request_count_limit: usize,
    /// `systemCircuitBreaker.systemLoad1Limit`: 1-minute load average.
    pub system_load1_limit: f64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            request_count_limit: DEFAULT_REQUEST_COUNT_LIMIT,
            pending_request_count_limit: DEFAULT_PENDING_REQUEST_COUNT_LIMIT,
            system_load1_limit: DEFAULT_SYSTEM_LOAD1_LIMIT,
        }
    }
}

/// `logger.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerConfig {
    /// `logger.level`, lowercase: `off`, `none`, `error`, `warn`, `info`, `debug`, `trace` or
    /// `all`.
    pub level: String,
    /// `logger.dir`: where log files go; `None` means standard error only.
    pub dir: Option<String>,
    /// `logger.workerOutput` (ours): where workers' stdout and stderr go: `false` (the
    /// default) for per-worker files under `NOSLATE_LOGDIR`, `true` for the runtime's own stdout
    /// and stderr, which is what Function Compute collects into the function's logs.
    pub worker_output_to_console: bool,
    /// `logger.workerOutputLineLimit` (ours): the longest line of worker output relayed to the
    /// console in one piece; a longer one is cut into lines of this length.
    pub worker_output_line_limit: usize,
    /// `logger.startFailureStderrBytes` (ours): the end of its stderr, at most this many bytes,
    /// that the error of a worker which exited before it was ready quotes; 0 quotes nothing.
    pub start_failure_stderr_bytes: usize,
    /// `logger.consoleBufferSize` (ours): how much output may wait for the runtime's stdout or
    /// stderr. Beyond it workers' output waits in their pipes (they block, the runtime does
    /// not), and the runtime's own lines are dropped and counted.
    pub console_buffer_size: usize,
    /// `logger.accessLog` (ours): one JSON line per invocation and hook. `file` by default:
    /// Noslate writes `access.log` too, and stdout is the function's own log in FC (billed,
    /// and read by people looking for their function's output).
    pub access_log: AccessLogDestination,
    /// `logger.accessLogMaxBytes` (ours): `access.log` is rotated when it reaches this size.
    pub access_log_max_bytes: u64,
    /// `logger.accessLogFiles` (ours): rotated files kept (`access.log.1` is the newest).
    pub access_log_files: u32,
    /// `logger.accessLogBufferSize` (ours): lines that may wait for the disk or the console;
    /// beyond it they are dropped and counted, so a slow disk never stalls the loop.
    pub access_log_buffer_size: usize,
}

impl LoggerConfig {
    /// The `log` filter for [`LoggerConfig::level`] (`none` is `Off`, `all` is `Trace`).
    pub fn level_filter(&self) -> log::LevelFilter {
        lookup(LOG_LEVELS, &self.level).unwrap_or(log::LevelFilter::Info)
    }
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            dir: None,
            worker_output_to_console: false,
            worker_output_line_limit: DEFAULT_WORKER_OUTPUT_LINE_LIMIT,
            start_failure_stderr_bytes: DEFAULT_START_FAILURE_STDERR_BYTES,
            console_buffer_size: DEFAULT_CONSOLE_BUFFER_SIZE,
            access_log: AccessLogDestination::File,
            access_log_max_bytes: DEFAULT_ACCESS_LOG_MAX_BYTES,
            access_log_files: DEFAULT_ACCESS_LOG_FILES,
            access_log_buffer_size: DEFAULT_ACCESS_LOG_BUFFER_SIZE,
        }
    }
}

/// The whole system configuration. `Default` gives the built-in defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemConfig {
    /// `defaultFunction` (ours): the function that serves requests naming none.
    pub default_function: Option<String>,
    /// `readinessPath` (ours): the path on the FC port answered by the runtime's readiness check
    /// (GET/HEAD); it shadows that path for HTTP functions.
    pub readiness_path: String,
    /// `http.*` (ours).
    pub http: HttpConfig,
    /// `worker.*`.
    pub worker: WorkerDefaults,
    /// `dataPlane.*`.
    pub data_plane: DataPlaneConfig,
    /// `controlPlane.*`.
    pub control_plane: ControlPlaneConfig,
    /// `virtualMemoryPoolSize`, in bytes: the most memory the active workers' limits may add up
    /// to. Unless configured, the instance's memory (`config::size_pool_from_instance`).
    pub virtual_memory_pool_size: u64,
    /// Where `virtual_memory_pool_size` came from.
    pub pool_size_source: crate::config::PoolSizeSource,
    /// `turf.*`.
    pub turf: TurfConfig,
    /// `starter.*`.
    pub starter: StarterConfig,
    /// `systemCircuitBreaker.*`.
    pub system_circuit_breaker: CircuitBreakerConfig,
    /// `logger.*`.
    pub logger: LoggerConfig,
    /// `metrics.address` (ours): where to serve `GET /metrics` over TCP for Prometheus; off
    /// when unset. A port alone means `127.0.0.1:<port>`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `metrics.enabled` (ours): whether invocations are counted and timed for the metrics
    /// (their outcomes, durations and bytes). Off, the request path does none of that work and
    /// those families are left out; the gauges (workers, queues, connections) stay.
    pub metrics_enabled: bool,
    /// `gateway.*` (ours): the user's own HTTP server, run on the FC port; `None` (the default)
    /// when the runtime serves the FC port itself.
    pub gateway: Option<GatewayConfig>,
    /// Noslate keys and environment variables that were given but mean nothing to this runtime
    /// (file keys as dotted paths, variables by name), for the caller to log once.
    pub ignored_keys: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            default_function: None,
            readiness_path: DEFAULT_READINESS_PATH.to_owned(),
            http: HttpConfig::default(),
            worker: WorkerDefaults::default(),
            data_plane: DataPlaneConfig::default(),
            control_plane: ControlPlaneConfig::default(),
            virtual_memory_pool_size: DEFAULT_VIRTUAL_MEMORY_POOL_SIZE_BYTES,
            pool_size_source: crate::config::PoolSizeSource::Default,
            turf: TurfConfig::default(),
            starter: StarterConfig::default(),
            system_circuit_breaker: CircuitBreakerConfig::default(),
            logger: LoggerConfig::default(),
            metrics_address: None,
            metrics_enabled: true,
            gateway: None,
            ignored_keys: Vec::new(),
        }
    }
}

/// Loads the system configuration: the defaults, then the JSON object in `file` (if given),
/// then the environment overrides read through `env`.
///
/// Which file to load (Noslate: `NOSLATED_CONFIG_PATH`) is the caller's choice. Every problem
/// found is returned, not just the first. Unknown keys are problems; keys Noslate defines but
/// this runtime does not use are type-checked and listed in
/// [`SystemConfig::ignored_keys`].
///
/// Environment overrides (an empty value counts as unset): `NOSLATED_MAX_ACTIVATE_REQUESTS`,
/// `NOSLATED_REPLICA_COUNT_LIMIT_PER_FUNCTION`, `NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION`,
/// `NOSLATED_VIRTUAL_MEMORY_POOL_SIZE`, `NOSLATED_DEFAULT_SHRINK_STRATEGY`,
/// `NOSLATED_LOG_LEVEL` and `NOSLATE_LOGDIR`. Noslate's other variables are listed in
/// `ignored_keys` when set.
pub fn load_system_config(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SystemConfig, Vec<Problem>> {
    build_system_config(file.map(read_json_file).transpose(), env)
}

/// Builds the system configuration like [`load_system_config`], from the JSON text of a
/// configuration file instead of its path. Text that is not JSON is one problem at
/// [`ROOT_PATH`](super::ROOT_PATH).
pub fn parse_system_config(
    json: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SystemConfig, Vec<Problem>> {
    let root = serde_json::from_str(json)
        .map(Some)
        .map_err(|e| Problem::new(super::ROOT_PATH, format!("invalid JSON: {e}")));
    build_system_config(root, env)
}

/// The defaults, then the file's document (if any; a file that could not be read or parsed is
/// one more problem), then the environment overrides, then the checks across fields.
fn build_system_config(
    root: Result<Option<Value>, Problem>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SystemConfig, Vec<Problem>> {
    let mut p = Problems::default();
    let mut cfg = SystemConfig::default();
    match root {
        Ok(Some(root)) => apply_file(&mut cfg, &root, &mut p),
        Ok(None) => {}
        Err(problem) => p.add(problem.path, problem.reason),
    }
    apply_env(&mut cfg, env, &mut p);
    check(&cfg, &mut p);
    p.finish(cfg)
}

/// Checks the EMA settings of the `worker` object at `path` against each other.
pub(super) fn check_ema(ema: &EmaSettings, path: &str, p: &mut Problems) {
    if ema.concurrency_shrink_threshold >= ema.concurrency_expand_threshold {
        p.add(
            join(path, "concurrencyShrinkThreshold"),
            format!(
                "must be below concurrencyExpandThreshold ({}), got {}",
                ema.concurrency_expand_threshold, ema.concurrency_shrink_threshold
            ),
        );
    }
}

/// A `logger.level`, lowercased.
fn log_level(value: &Value, path: &str, p: &mut Problems) -> Option<String> {
    let level = value
        .as_str()
        .map(str::to_ascii_lowercase)
        .filter(|level| lookup(LOG_LEVELS, level).is_some());
    if level.is_none() {
        p.add(
            path,
            format!("expected {}, got {}", one_of(LOG_LEVELS), describe(value)),
        );
    }
    level
}

/// Environment variables Noslate reads that this runtime ignores.
const IGNORED_ENV: &[&str] = &[
    "NOSLATED_DATA_PLANE_COUNT",
    "NOSLATED_CONTROL_PLANE_COUNT",
    "NOSLATED_WORKDIR",
    "TURF_WORKDIR",
    "NOSLATED_LOG_CONSOLE",
    "NOSLATED_SOCK_CONN_TIMEOUT",
    "NOSLATED_DELEGATE_RAT",
    "NATIVE_DEBUG",
    "NOSLATED_WORKER_SHRINK_REDUNDANT_TIMES",
];

/// An integer from the environment variable `name`.
fn env_int<T: Int>(name: &str, text: &str, min: u64, p: &mut Problems) -> Option<T> {
    let value = text
        .trim()
        .parse::<u64>()
        .map_or_else(|_| Value::String(text.to_owned()), Value::from);
    int(&value, name, min, p)
}

/// Applies the environment overrides.
fn apply_env(cfg: &mut SystemConfig, env: &dyn Fn(&str) -> Option<String>, p: &mut Problems) {
    let get = |name: &str| env(name).filter(|value| !value.is_empty());
    const MAX_ACTIVATE: &str = "NOSLATED_MAX_ACTIVATE_REQUESTS";
    const REPLICA_LIMIT: &str = "NOSLATED_REPLICA_COUNT_LIMIT_PER_FUNCTION";
    const RESERVATION: &str = "NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION";
    const POOL_SIZE: &str = "NOSLATED_VIRTUAL_MEMORY_POOL_SIZE";
    const SHRINK: &str = "NOSLATED_DEFAULT_SHRINK_STRATEGY";
    const LOG_LEVEL: &str = "NOSLATED_LOG_LEVEL";
    const LOG_DIR: &str = "NOSLATE_LOGDIR";

    if let Some(text) = get(MAX_ACTIVATE) {
        set(
            &mut cfg.worker.max_activate_requests,
            env_int(MAX_ACTIVATE, &text, 1, p),
        );
    }
    if let Some(text) = get(REPLICA_LIMIT) {
        set(
            &mut cfg.worker.replica_count_limit,
            env_int(REPLICA_LIMIT, &text, 1, p),
        );
    }
    if let Some(text) = get(RESERVATION) {
        set(
            &mut cfg.worker.reservation_count_per_function,
            env_int(RESERVATION, &text, 0, p),
        );
    }
    if let Some(text) = get(POOL_SIZE) {
        let size = byte_size(&Value::String(text), POOL_SIZE, MIN_MEMORY_LIMIT_BYTES, p);
        if size.is_some() {
            cfg.pool_size_source = crate::config::PoolSizeSource::Environment;
        }
        set(&mut cfg.virtual_memory_pool_size, size);
    }
    if let Some(text) = get(SHRINK) {
        set(
            &mut cfg.worker.default_shrink_strategy,
            choice(&Value::String(text), SHRINK, SHRINK_STRATEGIES, p),
        );
    }
    if let Some(text) = get(LOG_LEVEL) {
        set(
            &mut cfg.logger.level,
            log_level(&Value::String(text), LOG_LEVEL, p),
        );
    }
    if let Some(text) = get(LOG_DIR) {
        cfg.logger.dir = Some(text);
    }
    if let (Some(gateway), Some(text)) = (cfg.gateway.as_mut(), get(GATEWAY_SDK_PATH_ENV)) {
        gateway.sdk_path = text;
    }
    for name in IGNORED_ENV {
        if get(name).is_some() {
            cfg.ignored_keys.push((*name).to_owned());
        }
    }
}

/// Checks settings against each other once everything is applied.
fn check(cfg: &SystemConfig, p: &mut Problems) {
    let w = &cfg.worker;
    if w.reservation_count_per_function > w.replica_count_limit {
        p.add(
            "worker.reservationCountPerFunction",
            format!(
                "must be <= worker.replicaCountLimit ({}), got {}",
                w.replica_count_limit, w.reservation_count_per_function
            ),
        );
    }
    check_ema(&w.ema, "worker", p);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::path::PathBuf;

    use super::super::bytes::parse_byte_size;
    use super::super::test_support::TempDir;
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn temp_file(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
        let file = dir.join(name);
        fs::write(&file, contents).unwrap();
        file
    }

    fn load_json(json: &str) -> Result<SystemConfig, Vec<Problem>> {
        let root: Value = serde_json::from_str(json).unwrap();
        let mut p = Problems::default();
        let mut cfg = SystemConfig::default();
        apply_file(&mut cfg, &root, &mut p);
        check(&cfg, &mut p);
        p.finish(cfg)
    }

    /// The one problem config `json` has, which names `path`.
    fn only_problem(json: &str, path: &str) -> Problem {
        let mut problems = load_json(json).unwrap_err();
        assert_eq!(problems.len(), 1, "{json}: {problems:?}");
        assert_eq!(problems[0].path, path, "{json}");
        problems.remove(0)
    }

    fn shown(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let cfg = load_system_config(None, &no_env).unwrap();
        assert_eq!(cfg, SystemConfig::default());
        assert_eq!(cfg.default_function, None);
        assert_eq!(cfg.http.max_request_body_size, 32 * 1024 * 1024);
        assert_eq!(cfg.http.max_header_bytes, 16384);
        assert_eq!(cfg.http.max_headers, 100);
        assert_eq!(cfg.http.max_connections, 10_000);
        assert_eq!(cfg.http.header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS);
        assert_eq!(cfg.http.max_connection_output_bytes, 16 * 1024);
        assert_eq!(cfg.http.max_buffered_bytes, 64 << 20);
        assert_eq!(cfg.http.linger_timeout_ms, DEFAULT_LINGER_TIMEOUT_MS);
        assert_eq!(cfg.http.linger_max_bytes, DEFAULT_LINGER_MAX_BYTES);
        assert_eq!(cfg.worker.max_activate_requests, 10);
        assert_eq!(cfg.worker.replica_count_limit, 10);
        assert_eq!(cfg.worker.reservation_count_per_function, 0);
        assert_eq!(cfg.worker.default_initializer_timeout_ms, 10_000);
        assert_eq!(cfg.worker.default_invoke_timeout_ms, 10_000);
        assert_eq!(cfg.worker.default_shrink_strategy, ShrinkStrategy::Lcc);
        assert_eq!(cfg.worker.gc_log_delay_ms, 300_000);
        assert_eq!(cfg.worker.gc_log_high_water_mark, 100);
        assert_eq!(
            cfg.worker.concurrency_stats_mode,
            ConcurrencyStatsMode::Instant
        );
        assert_eq!(cfg.worker.ema.concurrency_sliding_window_size_ms, 60_000);
        assert_eq!(cfg.worker.ema.concurrency_sliding_bucket_count, 6);
        assert!(cfg.worker.ema.shrink_cooldown_on_startup);
        assert_eq!(cfg.data_plane.close_traffic_timeout_ms, 30_000);
        assert_eq!(cfg.data_plane.request_queue_limit, 1000);
        assert_eq!(cfg.data_plane.cancel_grace_period_ms, 1000);
        assert_eq!(cfg.data_plane.stream_window, 1 << 20);
        assert_eq!(cfg.control_plane.expand_concurrency, 4);
        assert_eq!(cfg.control_plane.worker_traffic_stats_pulling_ms, 10_000);
        assert_eq!(cfg.control_plane.worker_redundant_victim_spare_times, 6);
        assert_eq!(cfg.control_plane.scaler, ScalerKind::Idle);
        assert_eq!(cfg.virtual_memory_pool_size, 1 << 30);
        assert_eq!(cfg.turf.graceful_exit_period_ms, 3000);
        assert_eq!(cfg.starter, StarterConfig::default());
        assert_eq!(cfg.system_circuit_breaker.request_count_limit, 10_000);
        assert_eq!(cfg.system_circuit_breaker.pending_request_count_limit, 1000);
        assert_eq!(cfg.logger.level, "info");
        assert_eq!(cfg.logger.level_filter(), log::LevelFilter::Info);
        assert!(cfg.ignored_keys.is_empty());
    }

    #[test]
    fn file_values_merge_over_defaults() {
        let cfg = load_json(
            r#"{
                "defaultFunction": "hello",
                "http": {"maxRequestBodySize": "1mb", "maxHeaders": 50},
                "worker": {"maxActivateRequests": 3, "defaultShrinkStrategy": "FIFO",
                           "emaConcurrencyAlpha": 0.25, "concurrencyStatsMode": "periodic_max"},
                "controlPlane": {"capacityScalingStage": 0.5},
                "dataPlane": {"requestQueueLimit": 7, "closeTrafficTimeout": 0},
                "virtualMemoryPoolSize": "2gb",
                "turf": {"gracefulExitPeriodMs": 500},
                "starter": {"nodejs": {"bin": "/usr/bin/node"},
                            "aworker": {"defaultSeedScript": null,
                                        "defaultEnvirons": {"B": "2", "A": "1"}}},
                "systemCircuitBreaker": {"systemLoad1Limit": 2.5},
                "logger": {"level": "DEBUG", "dir": "/var/log/noslate"}
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.default_function.as_deref(), Some("hello"));
        assert_eq!(cfg.http.max_request_body_size, 1 << 20);
        assert_eq!(cfg.http.max_headers, 50);
        assert_eq!(cfg.http.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(cfg.worker.max_activate_requests, 3);
        assert_eq!(cfg.worker.replica_count_limit, 10);
        assert_eq!(cfg.worker.default_shrink_strategy, ShrinkStrategy::Fifo);
        assert_eq!(cfg.worker.ema.ema_concurrency_alpha, 0.25);
        assert_eq!(cfg.worker.ema.scale_factor, DEFAULT_SCALE_FACTOR);
        assert_eq!(
            cfg.worker.concurrency_stats_mode,
            ConcurrencyStatsMode::PeriodicMax
        );
        assert_eq!(cfg.control_plane.capacity_scaling_stage, 0.5);
        assert_eq!(cfg.data_plane.request_queue_limit, 7);
        assert_eq!(cfg.data_plane.close_traffic_timeout_ms, 0);
        assert_eq!(cfg.virtual_memory_pool_size, 2 << 30);
        assert_eq!(cfg.turf.graceful_exit_period_ms, 500);
        assert_eq!(cfg.starter.nodejs_bin.as_deref(), Some("/usr/bin/node"));
        assert_eq!(cfg.starter.aworker_default_seed_script, None);
        assert_eq!(
            cfg.starter.aworker_default_environs,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(cfg.system_circuit_breaker.system_load1_limit, 2.5);
        assert_eq!(cfg.logger.level, "debug");
        assert_eq!(cfg.logger.level_filter(), log::LevelFilter::Debug);
        assert_eq!(cfg.logger.dir.as_deref(), Some("/var/log/noslate"));
    }

    #[test]
    fn code_package_limits_have_defaults_and_are_checked() {
        let cfg = load_json("{}").unwrap();
        assert_eq!(
            cfg.control_plane.code_packages,
            CodePackageLimits::default()
        );
        let cfg = load_json(
            r#"{"controlPlane": {"codePackageMaxBytes": "1mb", "codePackageMaxUnpackedBytes": 4096,
                "codePackageMaxEntries": 3, "codePackageFetchTimeoutMs": 500,
                "codePackageFetchConcurrency": 1}}"#,
        )
        .unwrap();
        let limits = cfg.control_plane.code_packages;
        assert_eq!(limits.max_bytes, 1 << 20);
        assert_eq!(limits.max_unpacked_bytes, 4096);
        assert_eq!(limits.max_entries, 3);
        assert_eq!(limits.fetch_timeout_ms, 500);
        assert_eq!(limits.fetch_concurrency, 1);
        let problems = load_json(
            r#"{"controlPlane": {"codePackageMaxEntries": 0, "codePackageFetchTimeoutMs": "x"}}"#,
        )
        .unwrap_err();
        let shown = shown(&problems);
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("controlPlane.codePackageMaxEntries: "),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("controlPlane.codePackageFetchTimeoutMs: "),
            "{shown:?}"
        );
    }

    #[test]
    fn worker_channel_defaults_to_sockets_and_names_its_options() {
        use crate::turf::spawn::Channel;
        assert_eq!(SystemConfig::default().turf.worker_channel, Channel::Socket);
        let cfg = load_json(r#"{"turf": {"workerChannel": "pipe"}}"#).unwrap();
        assert_eq!(cfg.turf.worker_channel, Channel::Pipe);
        let problem = only_problem(
            r#"{"turf": {"workerChannel": "shm"}}"#,
            "turf.workerChannel",
        );
        assert!(problem.reason.contains("\"socket\""), "{}", problem.reason);
    }

    #[test]
    fn spare_workers_default_to_one_and_are_bounded() {
        assert_eq!(SystemConfig::default().turf.spare_workers, 1);
        let cfg = load_json(r#"{"turf": {"spareWorkers": 0}}"#).unwrap();
        assert_eq!(cfg.turf.spare_workers, 0);
        let cfg = load_json(r#"{"turf": {"spareWorkers": 16}}"#).unwrap();
        assert_eq!(cfg.turf.spare_workers, 16);
        for bad in [
            r#"{"turf": {"spareWorkers": 17}}"#,
            r#"{"turf": {"spareWorkers": -1}}"#,
        ] {
            only_problem(bad, "turf.spareWorkers");
        }
    }

    #[test]
    fn request_bodies_are_spliced_unless_turned_off() {
        assert!(SystemConfig::default().data_plane.splice_request_bodies);
        let cfg = load_json(r#"{"dataPlane": {"spliceRequestBodies": false}}"#).unwrap();
        assert!(!cfg.data_plane.splice_request_bodies);
        only_problem(
            r#"{"dataPlane": {"spliceRequestBodies": "no"}}"#,
            "dataPlane.spliceRequestBodies",
        );
    }

    #[test]
    fn batches_of_8_client_events_or_more_are_halved_by_default() {
        assert_eq!(SystemConfig::default().data_plane.halve_batches_from, 8);
        let cfg = load_json(r#"{"dataPlane": {"halveBatchesFrom": 0}}"#).unwrap();
        assert_eq!(cfg.data_plane.halve_batches_from, 0);
        let cfg = load_json(r#"{"dataPlane": {"halveBatchesFrom": 64}}"#).unwrap();
        assert_eq!(cfg.data_plane.halve_batches_from, 64);
        for bad in [r#"-1"#, r#"1.5"#, r#""8""#] {
            let json = format!(r#"{{"dataPlane": {{"halveBatchesFrom": {bad}}}}}"#);
            only_problem(&json, "dataPlane.halveBatchesFrom");
        }
    }

    #[test]
    fn busy_polling_defaults_on_for_few_requests_and_is_bounded() {
        let dp = SystemConfig::default().data_plane;
        assert_eq!(dp.busy_poll_micros, 100);
        assert_eq!(dp.busy_poll_max_requests, 4);
        assert_eq!(dp.busy_poll_max_cpu_pressure, 100);
        let cfg = load_json(r#"{"dataPlane": {"busyPollMaxCpuPressure": 25}}"#).unwrap();
        assert_eq!(cfg.data_plane.busy_poll_max_cpu_pressure, 25);
        let cfg = load_json(r#"{"dataPlane": {"busyPollMicros": 0, "busyPollMaxRequests": 64}}"#)
            .unwrap();
        assert_eq!(cfg.data_plane.busy_poll_micros, 0);
        assert_eq!(cfg.data_plane.busy_poll_max_requests, 64);
        let cfg = load_json(r#"{"dataPlane": {"busyPollMicros": 10000}}"#).unwrap();
        assert_eq!(cfg.data_plane.busy_poll_micros, 10_000);
        for (bad, path) in [
            (
                r#"{"dataPlane": {"busyPollMicros": 10001}}"#,
                "dataPlane.busyPollMicros",
            ),
            (
                r#"{"dataPlane": {"busyPollMicros": -1}}"#,
                "dataPlane.busyPollMicros",
            ),
            (
                r#"{"dataPlane": {"busyPollMicros": "100us"}}"#,
                "dataPlane.busyPollMicros",
            ),
            (
                r#"{"dataPlane": {"busyPollMaxRequests": 1.5}}"#,
                "dataPlane.busyPollMaxRequests",
            ),
            (
                r#"{"dataPlane": {"busyPollMaxCpuPressure": 101}}"#,
                "dataPlane.busyPollMaxCpuPressure",
            ),
            (
                r#"{"dataPlane": {"busyPollMaxCpuPressure": -5}}"#,
                "dataPlane.busyPollMaxCpuPressure",
            ),
        ] {
            only_problem(bad, path);
        }
    }

    #[test]
    fn the_stream_window_takes_sizes_within_its_bounds() {
        let cfg = load_json(r#"{"dataPlane": {"streamWindow": "4mb"}}"#).unwrap();
        assert_eq!(cfg.data_plane.stream_window, 4 << 20);
        let cfg = load_json(r#"{"dataPlane": {"streamWindow": 65536}}"#).unwrap();
        assert_eq!(cfg.data_plane.stream_window, MIN_STREAM_WINDOW);
        for bad in [
            r#"{"dataPlane": {"streamWindow": 65535}}"#,
            r#"{"dataPlane": {"streamWindow": "17mb"}}"#,
            r#"{"dataPlane": {"streamWindow": "lots"}}"#,
        ] {
            only_problem(bad, "dataPlane.streamWindow");
        }
    }

    #[test]
    fn noslate_keys_we_do_not_use_are_accepted_and_listed() {
        let cfg = load_json(
            r#"{
                "projectRoot": "/opt/noslated",
                "plane": {"dataPlaneCount": 1, "controlPlaneCount": 1, "planeFirstConnectionTimeout": 10000},
                "controlPlane": {"dumpWorkerTrafficStats": true},
                "dataPlane": {"daprAdaptorModulePath": "/x.js", "daprAdaptorModuleOptions": {"a": 1}},
                "dirs": {"noslatedSock": "/s", "noslatedWork": "/w"},
                "turf": {"bin": "/bin/turf", "socketSession": true, "reconcilingInterval": 1000},
                "delegate": {"kvStoragePerNamespaceCapacity": 8},
                "logger": {"enableConsole": false, "timestampFormat": "YYYY"},
                "grpc": {"channelOptions": {"grpc.max_send_message_length": 10485760}},
                "noslatedAddonType": "Release"
            }"#,
        )
        .unwrap();
        assert_eq!(
            cfg.ignored_keys,
            [
                "plane.dataPlaneCount",
                "plane.controlPlaneCount",
                "plane.planeFirstConnectionTimeout",
                "controlPlane.dumpWorkerTrafficStats",
                "dataPlane.daprAdaptorModulePath",
                "dataPlane.daprAdaptorModuleOptions",
                "dirs.noslatedSock",
                "dirs.noslatedWork",
                "turf.bin",
                "turf.socketSession",
                "turf.reconcilingInterval",
                "delegate.kvStoragePerNamespaceCapacity",
                "logger.enableConsole",
                "logger.timestampFormat",
                "grpc.channelOptions",
                "noslatedAddonType",
                "projectRoot",
            ]
        );
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let cfg = load_json(
            r#"{"http": {"headerTimeoutMs": 500, "maxConnectionOutputBytes": "16kb",
                         "maxBufferedBytes": "8mb", "lingerTimeoutMs": 0, "lingerMaxBytes": 0}}"#,
        )
        .unwrap();
        assert_eq!(cfg.http.header_timeout_ms, 500);
        assert_eq!(cfg.http.max_connection_output_bytes, 16 * 1024);
        assert_eq!(cfg.http.max_buffered_bytes, 8 << 20);
        assert_eq!(
            (cfg.http.linger_timeout_ms, cfg.http.linger_max_bytes),
            (0, 0)
        );
        let problems = load_json(
            r#"{"http": {"headerTimeoutMs": 0, "maxConnectionOutputBytes": 10,
                         "maxBufferedBytes": "lots", "lingerTimeoutMs": -1}}"#,
        )
        .unwrap_err();
        let shown = shown(&problems);
        for key in [
            "http.headerTimeoutMs",
            "http.maxConnectionOutputBytes",
            "http.maxBufferedBytes",
            "http.lingerTimeoutMs",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
        }
    }

    #[test]
    fn access_log_settings_are_read_and_checked() {
        let cfg = load_json(r#"{}"#).unwrap();
        assert_eq!(cfg.logger.access_log, AccessLogDestination::File);
        let cfg = load_json(
            r#"{"logger": {"accessLog": "console", "accessLogMaxBytes": "1mb",
                           "accessLogFiles": 0, "accessLogBufferSize": "64kb"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.logger.access_log, AccessLogDestination::Console);
        assert_eq!(cfg.logger.access_log_max_bytes, 1 << 20);
        assert_eq!(cfg.logger.access_log_files, 0);
        assert_eq!(cfg.logger.access_log_buffer_size, 64 << 10);
        let problems = load_json(
            r#"{"logger": {"accessLog": "syslog", "accessLogMaxBytes": 10,
                           "accessLogFiles": -1, "accessLogBufferSize": "x"}}"#,
        )
        .unwrap_err();
        let shown = shown(&problems);
        assert!(
            shown.iter().any(|p| p.starts_with("logger.accessLog: ")
                && p.contains(r#"expected "off", "file" or "console", got "syslog""#)),
            "{shown:?}"
        );
        for key in [
            "logger.accessLogMaxBytes",
            "logger.accessLogFiles",
            "logger.accessLogBufferSize",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
        }
    }

    #[test]
    fn the_start_failure_stderr_quote_is_bounded() {
        let cfg = load_json(r#"{}"#).unwrap();
        assert_eq!(
            cfg.logger.start_failure_stderr_bytes,
            DEFAULT_START_FAILURE_STDERR_BYTES
        );
        let cfg = load_json(r#"{"logger": {"startFailureStderrBytes": 0}}"#).unwrap();
        assert_eq!(cfg.logger.start_failure_stderr_bytes, 0, "0 turns it off");
        for bad in ["65537", "-1", "\"1kb\""] {
            let text = format!(r#"{{"logger": {{"startFailureStderrBytes": {bad}}}}}"#);
            let shown = shown(&load_json(&text).unwrap_err());
            assert!(
                shown
                    .iter()
                    .any(|p| p.starts_with("logger.startFailureStderrBytes: ")),
                "{bad}: {shown:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = load_json(
            r#"{
                "foo": {"bar": 1},
                "http": {"maxHeaderBytes": 10, "maxHeaders": "many"},
                "worker": {"maxActivateRequests": 0, "replicaCountLimit": 2,
                           "reservationCountPerFunction": 3, "defaultShrinkStrategy": "lcc",
                           "concurrencyShrinkThreshold": 0.9, "maxActivateRequest": 5},
                "controlPlane": {"capacityScalingStage": 1.5, "expandInterval": 0},
                "plane": {"dataPlaneCount": "2"},
                "virtualMemoryPoolSize": "lots",
                "logger": {"level": "loud"},
                "systemCircuitBreaker": 5,
                "defaultFunction": "../etc"
            }"#,
        )
        .unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "defaultFunction: must be 1 to 64 characters of [A-Za-z0-9_.-], not \".\" or \"..\", \
                 got \"../etc\"",
                "http.maxHeaderBytes: expected an integer >= 1024, got 10",
                "http.maxHeaders: expected an integer >= 1, got \"many\"",
                "plane.dataPlaneCount: expected an integer >= 0, got \"2\"",
                "controlPlane.capacityScalingStage: expected a number in (0, 1], got 1.5",
                "controlPlane.expandInterval: unknown key",
                "virtualMemoryPoolSize: expected a size of at least 16777216 bytes (a number of \
                 bytes or a string such as \"512mb\"), got \"lots\"",
                "worker.maxActivateRequests: expected an integer >= 1, got 0",
                "worker.defaultShrinkStrategy: expected \"LCC\", \"FIFO\" or \"FILO\", got \"lcc\"",
                "worker.maxActivateRequest: unknown key (did you mean \"maxActivateRequests\"?)",
                "systemCircuitBreaker: expected an object, got 5",
                "logger.level: expected \"off\", \"none\", \"error\", \"warn\", \"info\", \
                 \"debug\", \"trace\" or \"all\", got \"loud\"",
                "foo: unknown key",
                "worker.reservationCountPerFunction: must be <= worker.replicaCountLimit (2), got 3",
                "worker.concurrencyShrinkThreshold: must be below concurrencyExpandThreshold \
                 (0.7), got 0.9",
            ]
        );
    }

    #[test]
    fn ema_scaling_defaults_the_pull_interval_to_one_second() {
        let cfg = load_json(r#"{"controlPlane": {"useEmaScaling": true}}"#).unwrap();
        assert_eq!(cfg.control_plane.worker_traffic_stats_pulling_ms, 1000);
        let cfg = load_json(
            r#"{"controlPlane": {"useEmaScaling": true, "workerTrafficStatsPullingMs": 2000}}"#,
        )
        .unwrap();
        assert_eq!(cfg.control_plane.worker_traffic_stats_pulling_ms, 2000);
        let cfg = load_json(r#"{"controlPlane": {"scaler": "ema"}}"#).unwrap();
        assert_eq!(cfg.control_plane.worker_traffic_stats_pulling_ms, 1000);
        let cfg = load_json(r#"{"controlPlane": {"scaler": "waterLevel"}}"#).unwrap();
        assert_eq!(cfg.control_plane.worker_traffic_stats_pulling_ms, 10_000);
    }

    #[test]
    fn the_scaler_is_named_or_implied_by_use_ema_scaling() {
        let scaler = |json: &str| load_json(json).map(|cfg| cfg.control_plane.scaler);
        for (json, want) in [
            (r#"{}"#, ScalerKind::Idle),
            (r#"{"controlPlane": {"scaler": "idle"}}"#, ScalerKind::Idle),
            (
                r#"{"controlPlane": {"scaler": "waterLevel"}}"#,
                ScalerKind::WaterLevel,
            ),
            (r#"{"controlPlane": {"scaler": "ema"}}"#, ScalerKind::Ema),
            (
                r#"{"controlPlane": {"useEmaScaling": true}}"#,
                ScalerKind::Ema,
            ),
            (
                r#"{"controlPlane": {"useEmaScaling": false}}"#,
                ScalerKind::Idle,
            ),
            (
                r#"{"controlPlane": {"useEmaScaling": true, "scaler": "ema"}}"#,
                ScalerKind::Ema,
            ),
            (
                r#"{"controlPlane": {"useEmaScaling": false, "scaler": "waterLevel"}}"#,
                ScalerKind::WaterLevel,
            ),
        ] {
            assert_eq!(scaler(json), Ok(want), "{json}");
        }
        for kind in [ScalerKind::Idle, ScalerKind::WaterLevel, ScalerKind::Ema] {
            assert_eq!(lookup(SCALERS, kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn a_conflicting_or_unknown_scaler_is_a_problem_naming_the_key() {
        for (json, want) in [
            (
                r#"{"controlPlane": {"useEmaScaling": true, "scaler": "waterLevel"}}"#,
                "controlPlane.scaler: \"waterLevel\" conflicts with \
                 controlPlane.useEmaScaling: true; set one of them (useEmaScaling: true means \
                 \"ema\")",
            ),
            (
                r#"{"controlPlane": {"useEmaScaling": false, "scaler": "ema"}}"#,
                "controlPlane.scaler: \"ema\" conflicts with controlPlane.useEmaScaling: \
                 false; set one of them (useEmaScaling: true means \"ema\")",
            ),
            (
                r#"{"controlPlane": {"scaler": "legacy"}}"#,
                "controlPlane.scaler: expected \"idle\", \"waterLevel\" or \"ema\", got \
                 \"legacy\"",
            ),
            (
                r#"{"controlPlane": {"scaler": true}}"#,
                "controlPlane.scaler: expected \"idle\", \"waterLevel\" or \"ema\", got true",
            ),
        ] {
            let problems = load_json(json).expect_err(json);
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert_eq!(text, [want], "{json}");
        }
    }

    #[test]
    fn env_overrides_file() {
        let dir = TempDir::new("system-env");
        let file = temp_file(
            &dir,
            "env_overrides.json",
            r#"{"worker": {"maxActivateRequests": 3, "replicaCountLimit": 4}, "logger": {"level": "warn"}}"#,
        );
        let vars: HashMap<&str, &str> = HashMap::from([
            ("NOSLATED_MAX_ACTIVATE_REQUESTS", "5"),
            ("NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION", "2"),
            ("NOSLATED_VIRTUAL_MEMORY_POOL_SIZE", "512MB"),
            ("NOSLATED_DEFAULT_SHRINK_STRATEGY", "FILO"),
            ("NOSLATED_LOG_LEVEL", "Trace"),
            ("NOSLATE_LOGDIR", "/tmp/logs"),
            ("NOSLATED_DATA_PLANE_COUNT", "2"),
            ("NOSLATED_CONTROL_PLANE_COUNT", ""),
        ]);
        let env = |name: &str| vars.get(name).map(|v| (*v).to_owned());
        let cfg = load_system_config(Some(&file), &env).unwrap();
        assert_eq!(cfg.worker.max_activate_requests, 5);
        assert_eq!(cfg.worker.replica_count_limit, 4);
        assert_eq!(cfg.worker.reservation_count_per_function, 2);
        assert_eq!(cfg.virtual_memory_pool_size, 512 << 20);
        assert_eq!(cfg.worker.default_shrink_strategy, ShrinkStrategy::Filo);
        assert_eq!(cfg.logger.level, "trace");
        assert_eq!(cfg.logger.dir.as_deref(), Some("/tmp/logs"));
        assert_eq!(cfg.ignored_keys, ["NOSLATED_DATA_PLANE_COUNT"]);
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("NOSLATED_MAX_ACTIVATE_REQUESTS", "ten"),
            ("NOSLATED_REPLICA_COUNT_LIMIT_PER_FUNCTION", "0"),
            ("NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION", "-1"),
            ("NOSLATED_VIRTUAL_MEMORY_POOL_SIZE", "1kb"),
            ("NOSLATED_DEFAULT_SHRINK_STRATEGY", "LIFO"),
            ("NOSLATED_LOG_LEVEL", "verbose"),
        ]);
        let env = |name: &str| vars.get(name).map(|v| (*v).to_owned());
        let problems = load_system_config(None, &env).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|q| q.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "NOSLATED_MAX_ACTIVATE_REQUESTS",
                "NOSLATED_REPLICA_COUNT_LIMIT_PER_FUNCTION",
                "NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION",
                "NOSLATED_VIRTUAL_MEMORY_POOL_SIZE",
                "NOSLATED_DEFAULT_SHRINK_STRATEGY",
                "NOSLATED_LOG_LEVEL",
            ]
        );
        assert_eq!(
            problems[0].to_string(),
            "NOSLATED_MAX_ACTIVATE_REQUESTS: expected an integer >= 1, got \"ten\""
        );
    }

    #[test]
    fn env_cross_check_uses_final_values() {
        let env = |name: &str| {
            (name == "NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION").then(|| "11".to_owned())
        };
        let problems = load_system_config(None, &env).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "worker.reservationCountPerFunction: must be <= worker.replicaCountLimit (10), got 11"
            ]
        );
    }

    #[test]
    fn unreadable_and_invalid_files_name_the_file() {
        let missing = std::env::temp_dir().join("noslate-config-does-not-exist.json");
        let problems = load_system_config(Some(&missing), &no_env).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, missing.display().to_string());
        assert!(
            problems[0].reason.starts_with("cannot read: "),
            "{}",
            problems[0]
        );

        let dir = TempDir::new("system-files");
        let broken = temp_file(&dir, "broken.json", "{\"worker\": ");
        let problems = load_system_config(Some(&broken), &no_env).unwrap_err();
        assert_eq!(problems[0].path, broken.display().to_string());
        assert!(
            problems[0].reason.starts_with("invalid JSON: "),
            "{}",
            problems[0]
        );

        let array = temp_file(&dir, "array.json", "[]");
        let problems = load_system_config(Some(&array), &no_env).unwrap_err();
        assert_eq!(
            shown(&problems),
            ["(root): expected an object, got an array"]
        );
    }

    #[test]
    fn text_parses_like_a_file() {
        let dir = TempDir::new("system-text");
        let json = r#"{"worker": {"maxActivateRequests": 3}, "http": {"maxHeaders": 0}}"#;
        let env = |name: &str| (name == "NOSLATED_LOG_LEVEL").then(|| "debug".to_owned());
        let file = temp_file(&dir, "config.json", json);
        assert_eq!(
            parse_system_config(json, &env),
            load_system_config(Some(&file), &env)
        );
        let ok = r#"{"worker": {"maxActivateRequests": 3}}"#;
        assert_eq!(
            parse_system_config(ok, &no_env)
                .unwrap()
                .worker
                .max_activate_requests,
            3
        );
        let problems = parse_system_config("{\"worker\": ", &no_env).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, crate::config::ROOT_PATH);
        assert!(problems[0].reason.starts_with("invalid JSON: "));
    }

    #[test]
    fn byte_size_strings_and_numbers() {
        for (json, bytes) in [
            (r#""1gb""#, 1u64 << 30),
            (r#""512mb""#, 512 << 20),
            (r#""1.5GiB""#, 3 << 29),
            (r#""16777216""#, 16 << 20),
            ("33554432", 32 << 20),
        ] {
            let cfg = load_json(&format!("{{\"virtualMemoryPoolSize\": {json}}}")).unwrap();
            assert_eq!(cfg.virtual_memory_pool_size, bytes, "{json}");
        }
        assert_eq!(
            parse_byte_size("1gb"),
            Some(DEFAULT_VIRTUAL_MEMORY_POOL_SIZE_BYTES)
        );
    }

    #[test]
    fn null_means_default() {
        let cfg =
            load_json(r#"{"worker": {"maxActivateRequests": null}, "logger": {"dir": null}}"#)
                .unwrap();
        assert_eq!(
            cfg.worker.max_activate_requests,
            DEFAULT_MAX_ACTIVATE_REQUESTS
        );
        assert_eq!(cfg.logger.dir, None);
    }

    #[test]
    fn empty_paths_are_rejected() {
        let problems = load_json(
            r#"{"starter": {"nodejs": {"bin": ""}, "aworker": {"defaultSeedScript": ""}},
                "logger": {"dir": ""}}"#,
        )
        .unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "starter.nodejs.bin: must not be empty",
                "starter.aworker.defaultSeedScript: must not be empty",
                "logger.dir: must not be empty",
            ]
        );
    }

    #[test]
    fn bad_default_environs_are_reported() {
        let problems =
            load_json(r#"{"starter": {"aworker": {"defaultEnvirons": {"1X": "a", "Y": 2}}}}"#)
                .unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "starter.aworker.defaultEnvirons.1X: not a valid environment variable name \
                 ([A-Za-z_][A-Za-z0-9_]*)",
                "starter.aworker.defaultEnvirons.Y: expected a string, got 2",
            ]
        );
    }
}
