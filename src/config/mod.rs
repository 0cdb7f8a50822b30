//! Configuration in Noslate's JSON formats: the system configuration (defaults, a JSON file,
//! environment overrides) and the profile file (function profiles and service profiles).
//!
//! Loading never stops at the first mistake: every loader returns all the [`Problem`]s it
//! found, each with a path such as `functions[1].worker.maxActivateRequests` and a reason.
//! Unknown keys are problems, so typos are caught, while keys Noslate defines but this runtime
//! does not use are accepted and listed in [`SystemConfig::ignored_keys`].
//!
//! ```text
//! load_system_config(file, env) ─► SystemConfig ─┐
//!                                                ├─► load_functions(file, &sys) ─► ProfileSet
//!                             profile file ──────┘     (functions with defaults, services)
//! ```

mod bytes;
mod inherit;
mod problems;
mod profile;
mod service;
mod sizing;
mod system;

pub use bytes::parse_byte_size;
pub use inherit::{EnvPattern, InheritEnv};
pub use problems::{Problem, ROOT_PATH};
pub use profile::{
    CodePackage, DEFAULT_DISABLE_REQUEST_QUEUE, DEFAULT_DISABLE_SEED, DEFAULT_DISPATCH_MODE,
    DEFAULT_DISPOSABLE, DEFAULT_FAST_FAIL_REQUESTS_ON_STARTING, DEFAULT_MEMORY_LIMIT_BYTES,
    DEFAULT_NOFILE_LIMIT, DEFAULT_PIDS_LIMIT, DispatchMode, FunctionProfile, HandlerStyle,
    MAX_NAME_CHARS, MIN_MEMORY_LIMIT_BYTES, PackageLocation, ProfileSet, RESERVED_ENV_PREFIXES,
    RateLimit, ResourceLimit, Runtime, WorkerProfile, load_functions, parse_functions,
    profile_base_dir,
};
pub use service::{PROPORTION_SUM_TOLERANCE, ServiceKind, ServiceProfile};
pub use sizing::{HostMemory, PoolSizeSource, instance_memory, size_pool_from_instance};
pub use system::{
    AccessLogDestination, CircuitBreakerConfig, CodePackageLimits, ConcurrencyStatsMode,
    ControlPlaneConfig, DEFAULT_CANCEL_GRACE_PERIOD_MS, DEFAULT_CAPACITY_SCALING_STAGE,
    DEFAULT_CLOSE_TRAFFIC_TIMEOUT_MS, DEFAULT_CONCURRENCY_EXPAND_THRESHOLD,
    DEFAULT_CONCURRENCY_SHRINK_THRESHOLD, DEFAULT_CONCURRENCY_SLIDING_BUCKET_COUNT,
    DEFAULT_CONCURRENCY_SLIDING_WINDOW_SIZE_MS, DEFAULT_CONCURRENCY_STATS_MODE,
    DEFAULT_EMA_CONCURRENCY_ALPHA, DEFAULT_EMA_WORKER_TRAFFIC_STATS_PULLING_MS,
    DEFAULT_EXPAND_CONCURRENCY, DEFAULT_EXPAND_COOLDOWN_MS, DEFAULT_GATEWAY_SDK_PATH,
    DEFAULT_GATEWAY_STDERR_TAIL_BYTES, DEFAULT_GC_LOG_DELAY_MS, DEFAULT_GC_LOG_HIGH_WATER_MARK,
    DEFAULT_GRACEFUL_EXIT_PERIOD_MS, DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_INITIALIZER_TIMEOUT_MS, DEFAULT_INVOKE_TIMEOUT_MS, DEFAULT_LINGER_MAX_BYTES,
    DEFAULT_LINGER_TIMEOUT_MS, DEFAULT_LOG_LEVEL, DEFAULT_MAX_ACTIVATE_REQUESTS,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTION_OUTPUT_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, DEFAULT_MAX_REQUEST_BODY_SIZE_BYTES,
    DEFAULT_PENDING_REQUEST_COUNT_LIMIT, DEFAULT_PRECISION_ZERO_THRESHOLD,
    DEFAULT_REPLICA_COUNT_LIMIT, DEFAULT_REQUEST_COUNT_LIMIT, DEFAULT_REQUEST_QUEUE_LIMIT,
    DEFAULT_RESERVATION_COUNT_PER_FUNCTION, DEFAULT_SCALE_FACTOR, DEFAULT_SCALER,
    DEFAULT_SHRINK_COOLDOWN_MS, DEFAULT_SHRINK_COOLDOWN_ON_STARTUP, DEFAULT_SHRINK_STRATEGY,
    DEFAULT_SYSTEM_LOAD1_LIMIT, DEFAULT_VIRTUAL_MEMORY_POOL_SIZE_BYTES,
    DEFAULT_WORKER_REDUNDANT_VICTIM_SPARE_TIMES, DEFAULT_WORKER_TRAFFIC_STATS_PULLING_MS,
    DataPlaneConfig, EmaSettings, GATEWAY_SDK_PATH_ENV, GatewayConfig, HttpConfig, LoggerConfig,
    MIN_MAX_HEADER_BYTES, RuntimePort, ScalerKind, ShrinkStrategy, StarterConfig, SystemConfig,
    TurfConfig, WorkerDefaults, load_system_config, parse_system_config,
};

/// Helpers shared by the tests of this module.
#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    /// A directory under the system temp dir, created empty and removed on drop.
    #[derive(Debug)]
    pub(super) struct TempDir(PathBuf);

    impl TempDir {
        /// A fresh directory named after the test and this process.
        pub(super) fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("noslate-config-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
