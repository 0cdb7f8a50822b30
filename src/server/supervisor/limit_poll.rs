//! Limits enforced by the runtime itself where the kernel cannot enforce them (no writable
//! cgroup): the resident set size is polled every `LIMIT_POLL_INTERVAL`, and CPU use is accounted
//! per second with turf's rule. A worker over its limit has its whole process group killed and
//! its exit is accounted as `mem_overload` or `cpu_overload`. The decisions are in
//! `turf::poll`; the supervisor applies them to its workers and says which are over, and the
//! loop kills those.

use super::Supervisor;
use crate::ids::WorkerKey;
use crate::turf::accounting::ExitReason;
use crate::turf::poll::{CPU_OVER_WINDOWS, Verdict};
use crate::turf::stats;
use std::time::Instant;

/// A worker found over one of its polled limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::server) struct OverLimit {
    /// The worker.
    pub(in crate::server) worker: WorkerKey,
    /// What it exceeded, for its failed invocations and the log.
    pub(in crate::server) message: String,
    /// How its exit is accounted.
    pub(in crate::server) reason: ExitReason,
}

impl Supervisor {
    /// Whether a poll round must be scheduled now: some worker has polled limits and no round
    /// is scheduled. Returning true marks the round scheduled.
    pub(in crate::server) fn claim_limit_poll(&mut self) -> bool {
        if self.limit_poll_armed || !self.workers.iter().any(|w| w.polled.any()) {
            return false;
        }
        self.limit_poll_armed = true;
        true
    }

    /// One poll round over every worker with polled limits: the workers over a limit.
    pub(in crate::server) fn poll_limits(&mut self, now: Instant) -> Vec<OverLimit> {
        self.limit_poll_armed = false;
        let mut over = Vec::new();
        for key in self.workers.keys() {
            let Some(worker) = self.workers.get_mut(key) else {
                continue;
            };
            if !worker.polled.any() || worker.imposed.is_some() {
                continue;
            }
            let Some(sample) = stats::read(worker.process.pid) else {
                continue;
            };
            let (message, reason) = match worker.polled.check(sample.rss_bytes, sample.cpu_ms, now)
            {
                Verdict::Ok => continue,
                Verdict::Memory { rss, limit } => (
                    format!(
                        "worker {} exceeded its memory limit: resident {} bytes > \
                         resourceLimit.memory {} bytes",
                        worker.process.id, rss, limit
                    ),
                    ExitReason::MemOverload,
                ),
                Verdict::Cpu { used, share } => (
                    format!(
                        "worker {} used {:.2} of a CPU for more than {CPU_OVER_WINDOWS} s, over \
                         resourceLimit.cpu {share}",
                        worker.process.id, used
                    ),
                    ExitReason::CpuOverload,
                ),
            };
            over.push(OverLimit {
                worker: key,
                message,
                reason,
            });
        }
        over
    }
}
