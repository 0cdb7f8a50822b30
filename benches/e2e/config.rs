//! Configuration of a run, from the environment (the `BENCH_*` knobs).

use std::time::Duration;

use crate::common::*;

pub struct Config {
    pub secs: f64,
    pub conns: usize,
    pub threads: usize,
    pub rounds: usize,
    pub warmup: f64,
    pub targets: String,
    pub pin: bool,
    pub spawns: usize,
    pub native_spawns: usize,
    /// Starts per runtime of the per-runtime start-to-ready rows (`r`).
    pub runtime_spawns: usize,
    pub bursts: usize,
    /// Fresh servers (runtimes, workers, node) for every round.
    pub fresh: bool,
    /// Connections of each phase of the memory-per-connection rows (`m`): idle, then stalled.
    pub mem_conns: usize,
    /// Stalled connections of the second, smaller stalled run (a fresh runtime).
    pub mem_small_conns: usize,
    /// `GET /healthz` requests each stalled connection pipelines.
    pub mem_pipeline: usize,
    /// Rounds of the large-body rows, each with fresh servers.
    pub body_rounds: usize,
    /// Transfers per side and mode of the large-body rows in each round.
    pub body_runs: usize,
    /// Untimed transfers per side and mode before them.
    pub body_warmup: usize,
    /// Generated files in the package of the unpacking rows (`p`), besides its `index.js`.
    pub package_files: usize,
    /// Unpackings per tool of those rows.
    pub package_runs: usize,
}

impl Config {
    pub fn from_env() -> Config {
        let c = Config {
            secs: env_num("BENCH_SECS", 5.0f64).max(0.1),
            conns: env_num("BENCH_CONNS", 64usize).max(1),
            threads: env_num("BENCH_THREADS", 2usize).max(1),
            rounds: env_num("BENCH_ROUNDS", 6usize).max(1),
            warmup: env_num("BENCH_WARMUP", 0.5f64).max(0.0),
            targets: std::env::var("BENCH_TARGETS").unwrap_or_else(|_| "abcdefwxysrzmlgp".into()),
            pin: env_num("BENCH_PIN", 0u8) != 0,
            spawns: env_num("BENCH_SPAWNS", 60usize),
            native_spawns: env_num("BENCH_NATIVE_SPAWNS", 200usize),
            runtime_spawns: env_num("BENCH_RUNTIME_SPAWNS", 100usize),
            bursts: env_num("BENCH_BURSTS", 5usize),
            fresh: env_num("BENCH_FRESH", 1u8) != 0,
            mem_conns: env_num("BENCH_MEM_CONNS", 2000usize).max(1),
            mem_small_conns: env_num("BENCH_MEM_SMALL_CONNS", 500usize).max(1),
            mem_pipeline: env_num("BENCH_MEM_PIPELINE", 2000usize).max(1),
            body_rounds: env_num("BENCH_BODY_ROUNDS", 5usize).max(1),
            body_runs: env_num("BENCH_BODY_RUNS", 5usize).max(1),
            body_warmup: env_num("BENCH_BODY_WARMUP", 3usize),
            package_files: env_num("BENCH_PACKAGE_FILES", 3000usize),
            package_runs: env_num("BENCH_PACKAGE_RUNS", 5usize).max(1),
        };
        Config {
            threads: c.threads.min(c.conns),
            ..c
        }
    }
    pub fn segment(&self) -> Duration {
        Duration::from_secs_f64(self.secs / self.rounds as f64)
    }
}
