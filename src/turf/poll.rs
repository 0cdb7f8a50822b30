//! The decisions behind limits the runtime enforces itself (see `server/limit_poll.rs`): is a
//! worker's resident set over its memory limit, and has it used more than its CPU share for too
//! long? Pure: samples and `now` come in, a verdict goes out.

use std::time::{Duration, Instant};

/// How often RSS is checked against the memory limit when no cgroup enforces it.
pub const LIMIT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// CPU use is evaluated over windows of this length.
const CPU_WINDOW: Duration = Duration::from_secs(1);
/// Consecutive windows over the CPU quota before the worker is killed (turf's rule: more than
/// 15 one-second ticks).
pub const CPU_OVER_WINDOWS: u32 = 15;

/// What the runtime polls for one worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolledLimits {
    /// Memory limit in bytes, when no cgroup enforces it.
    pub memory: Option<u64>,
    /// CPU share of one core, when no cgroup enforces it.
    pub cpu: Option<f64>,
    /// CPU time at the start of the current window, and when that window started.
    cpu_mark: Option<(u64, Instant)>,
    /// Consecutive windows over the quota.
    cpu_over: u32,
}

impl PolledLimits {
    /// Limits to poll.
    pub fn new(memory: Option<u64>, cpu: Option<f64>) -> Self {
        PolledLimits {
            memory,
            cpu,
            cpu_mark: None,
            cpu_over: 0,
        }
    }

    /// Whether anything needs polling.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpu.is_some()
    }

    /// Feeds one sample; returns the verdict.
    pub fn check(&mut self, rss_bytes: u64, cpu_ms: u64, now: Instant) -> Verdict {
        if let Some(limit) = self.memory
            && rss_bytes > limit
        {
            return Verdict::Memory {
                rss: rss_bytes,
                limit,
            };
        }
        let Some(share) = self.cpu else {
            return Verdict::Ok;
        };
        let Some((start_ms, start)) = self.cpu_mark else {
            self.cpu_mark = Some((cpu_ms, now));
            return Verdict::Ok;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < CPU_WINDOW {
            return Verdict::Ok;
        }
        let used = cpu_ms.saturating_sub(start_ms) as f64 / elapsed.as_millis().max(1) as f64;
        self.cpu_mark = Some((cpu_ms, now));
        if used > share {
            self.cpu_over += 1;
        } else {
            self.cpu_over = 0;
        }
        if self.cpu_over > CPU_OVER_WINDOWS {
            Verdict::Cpu { used, share }
        } else {
            Verdict::Ok
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Within limits.
    Ok,
    /// Resident set over the memory limit.
    Memory {
        /// Observed RSS in bytes.
        rss: u64,
        /// The limit.
        limit: u64,
    },
    /// CPU over its share for more than [`CPU_OVER_WINDOWS`] windows in a row.
    Cpu {
        /// Share of one core used in the last window.
        used: f64,
        /// The allowed share.
        share: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_over_the_limit_is_reported_at_once() {
        let mut limits = PolledLimits::new(Some(100), None);
        let now = Instant::now();
        assert_eq!(limits.check(100, 0, now), Verdict::Ok);
        assert_eq!(
            limits.check(101, 0, now),
            Verdict::Memory {
                rss: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn cpu_needs_more_than_fifteen_consecutive_windows_over_quota() {
        let mut limits = PolledLimits::new(None, Some(0.5));
        let start = Instant::now();
        let mut cpu = 0;
        assert_eq!(limits.check(0, cpu, start), Verdict::Ok);
        for window in 1..=CPU_OVER_WINDOWS {
            cpu += 900; // 0.9 of a core in each 1 s window
            let at = start + CPU_WINDOW * window;
            assert_eq!(limits.check(0, cpu, at), Verdict::Ok, "window {window}");
        }
        // One window under the quota resets the count.
        cpu += 100;
        let mut at = start + CPU_WINDOW * (CPU_OVER_WINDOWS + 1);
        assert_eq!(limits.check(0, cpu, at), Verdict::Ok);
        for _ in 0..CPU_OVER_WINDOWS {
            cpu += 900;
            at += CPU_WINDOW;
            assert_eq!(limits.check(0, cpu, at), Verdict::Ok);
        }
        cpu += 900;
        at += CPU_WINDOW;
        assert!(matches!(limits.check(0, cpu, at), Verdict::Cpu { .. }));
    }

    #[test]
    fn samples_inside_a_window_do_not_count() {
        let mut limits = PolledLimits::new(None, Some(0.1));
        let start = Instant::now();
        limits.check(0, 0, start);
        for i in 1..100 {
            let at = start + Duration::from_millis(i * 5);
            assert_eq!(limits.check(0, i * 1000, at), Verdict::Ok);
        }
    }
}
