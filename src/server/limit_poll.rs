//! Limits enforced by the runtime itself where the kernel cannot enforce them (no writable
//! cgroup): the resident set size is polled every `LIMIT_POLL_INTERVAL`, and CPU use is accounted
//! per second with turf's rule. A worker over its limit has its whole process group killed and
//! its exit is accounted as `mem_overload` or `cpu_overload`. The decisions are in
//! `turf::poll`; this file applies them.

use super::{Server, Timer};
use crate::reactor::slab::Key;
use crate::turf::accounting::ExitReason;
use crate::turf::poll::{CPU_OVER_WINDOWS, LIMIT_POLL_INTERVAL, Verdict};
use crate::turf::stats;
use std::time::Instant;

impl Server {
    /// Arms the poll timer if some worker needs it and it is not armed.
    pub(super) fn arm_limit_poll(&mut self) {
        if !self.supervisor.limit_poll_armed
            && self.supervisor.workers.iter().any(|w| w.polled.any())
        {
            self.supervisor.limit_poll_armed = true;
            self.timers
                .schedule(Instant::now() + LIMIT_POLL_INTERVAL, Timer::LimitPoll);
        }
    }

    /// One poll round over every worker with polled limits.
    pub(super) fn on_limit_poll(&mut self) {
        self.supervisor.limit_poll_armed = false;
        let now = Instant::now();
        let mut over: Vec<(Key, String, ExitReason)> = Vec::new();
        for key in self.supervisor.workers.keys() {
            let Some(worker) = self.supervisor.workers.get_mut(key) else {
                continue;
            };
            if !worker.polled.any() || worker.imposed.is_some() {
                continue;
            }
            let Some(sample) = stats::read(worker.process.pid) else {
                continue;
            };
            match worker.polled.check(sample.rss_bytes, sample.cpu_ms, now) {
                Verdict::Ok => {}
                Verdict::Memory { rss, limit } => over.push((
                    key,
                    format!(
                        "worker {} exceeded its memory limit: resident {} bytes > \
                         resourceLimit.memory {} bytes",
                        worker.process.id, rss, limit
                    ),
                    ExitReason::MemOverload,
                )),
                Verdict::Cpu { used, share } => over.push((
                    key,
                    format!(
                        "worker {} used {:.2} of a CPU for more than {CPU_OVER_WINDOWS} s, over \
                         resourceLimit.cpu {share}",
                        worker.process.id, used
                    ),
                    ExitReason::CpuOverload,
                )),
            }
        }
        for (key, message, reason) in over {
            log::warn!("[turf] {message}; killing its process group");
            self.kill_worker(key, &message, reason);
        }
        self.arm_limit_poll();
    }
}
