//! Exit accounting: every worker exit becomes one JSON line in
//! `NOSLATE_LOGDIR/resource_usage.log` (how it ended, why, what it used, which request was in
//! flight) and bumps a counter per reason.

use crate::sys::{ExitKind, Reaped};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the accounting log inside the log directory (Noslate's name).
pub const LOG_NAME: &str = "resource_usage.log";

/// Why a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It exited by itself with status 0.
    Exited,
    /// It died unexpectedly: a non-zero exit, a signal, or a protocol violation.
    Crashed,
    /// Killed for exceeding its memory limit (by the cgroup OOM killer or the RSS poller).
    MemOverload,
    /// Killed for exceeding its CPU limit.
    CpuOverload,
    /// Killed because it did not finish starting, or ignored a cancellation, in time.
    TimeoutKill,
    /// Stopped by the runtime (drain, shutdown, failed initializer).
    Stopped,
}

impl ExitReason {
    /// Every reason, for counters.
    pub const ALL: [ExitReason; 6] = [
        ExitReason::Exited,
        ExitReason::Crashed,
        ExitReason::MemOverload,
        ExitReason::CpuOverload,
        ExitReason::TimeoutKill,
        ExitReason::Stopped,
    ];

    fn index(self) -> usize {
        match self {
            ExitReason::Exited => 0,
            ExitReason::Crashed => 1,
            ExitReason::MemOverload => 2,
            ExitReason::CpuOverload => 3,
            ExitReason::TimeoutKill => 4,
            ExitReason::Stopped => 5,
        }
    }

    /// The name used in logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "exited",
            ExitReason::Crashed => "crashed",
            ExitReason::MemOverload => "mem_overload",
            ExitReason::CpuOverload => "cpu_overload",
            ExitReason::TimeoutKill => "timeout_kill",
            ExitReason::Stopped => "stopped",
        }
    }

    /// Decides the reason of an exit: what the runtime did to the worker wins, then the
    /// kernel's OOM kill, then how the process ended.
    pub fn decide(imposed: Option<ExitReason>, oom_killed: bool, exit: ExitKind) -> ExitReason {
        if oom_killed {
            return ExitReason::MemOverload;
        }
        if let Some(reason) = imposed {
            return reason;
        }
        match exit {
            ExitKind::Code(0) => ExitReason::Exited,
            _ => ExitReason::Crashed,
        }
    }
}

/// One line of `resource_usage.log`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord<'a> {
    /// Wall-clock time of the exit, milliseconds since the Unix epoch.
    pub time: u64,
    /// The worker's id.
    pub worker: &'a str,
    /// Its function.
    pub function: &'a str,
    /// Its pid.
    pub pid: i32,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal name, if it was killed by one.
    pub signal: Option<String>,
    /// Why it ended.
    pub reason: ExitReason,
    /// User CPU time in milliseconds.
    pub user_cpu_ms: u64,
    /// System CPU time in milliseconds.
    pub system_cpu_ms: u64,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
    /// The request in flight when it ended, if any.
    pub request_id: Option<&'a str>,
    /// Invocations it completed.
    pub served: u64,
}

impl<'a> ExitRecord<'a> {
    /// Builds a record from a reaped child.
    pub fn new(
        reaped: &Reaped,
        worker: &'a str,
        function: &'a str,
        reason: ExitReason,
        request_id: Option<&'a str>,
        served: u64,
    ) -> Self {
        let (exit_code, signal) = match reaped.exit {
            ExitKind::Code(code) => (Some(code), None),
            ExitKind::Signal(sig) => (None, Some(crate::sys::signal_name(sig))),
        };
        ExitRecord {
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            worker,
            function,
            pid: reaped.pid,
            exit_code,
            signal,
            reason,
            user_cpu_ms: reaped.user_cpu_us / 1000,
            system_cpu_ms: reaped.system_cpu_us / 1000,
            max_rss_kib: reaped.max_rss_kib,
            request_id,
            served,
        }
    }
}

/// The accounting log and the counters.
#[derive(Debug)]
pub struct Accounting {
    path: PathBuf,
    file: Option<File>,
    counts: [u64; 6],
}

impl Accounting {
    /// Accounting into `logdir/resource_usage.log`, opened now so that an unwritable log
    /// directory is reported at start-up (and retried at the next exit).
    pub fn new(logdir: &Path) -> Self {
        let path = logdir.join(LOG_NAME);
        let file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => Some(file),
            Err(err) => {
                log::warn!("[turf] cannot open {}: {err}", path.display());
                None
            }
        };
        Accounting {
            path,
            file,
            counts: [0; 6],
        }
    }

    /// Counts the exit and appends its line. A log that cannot be written is reported once per
    /// failure and never stops the runtime.
    pub fn record(&mut self, record: &ExitRecord<'_>) {
        self.counts[record.reason.index()] += 1;
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(err) => {
                log::warn!("[turf] cannot encode exit record: {err}");
                return;
            }
        };
        line.push(b'\n');
        if self.file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(file) => self.file = Some(file),
                Err(err) => {
                    log::warn!("[turf] cannot open {}: {err}", self.path.display());
                    return;
                }
            }
        }
        if let Some(file) = self.file.as_mut() {
            // One write per line in append mode: lines never interleave or tear.
            if let Err(err) = file.write_all(&line) {
                log::warn!("[turf] cannot write {}: {err}", self.path.display());
                self.file = None;
            }
        }
    }

    /// Exits counted for `reason`.
    pub fn count(&self, reason: ExitReason) -> u64 {
        self.counts[reason.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_prefers_what_was_imposed_then_oom_then_status() {
        use ExitKind::{Code, Signal};
        assert_eq!(ExitReason::decide(None, false, Code(0)), ExitReason::Exited);
        assert_eq!(
            ExitReason::decide(None, false, Code(1)),
            ExitReason::Crashed
        );
        assert_eq!(
            ExitReason::decide(None, false, Signal(9)),
            ExitReason::Crashed
        );
        assert_eq!(
            ExitReason::decide(None, true, Signal(9)),
            ExitReason::MemOverload
        );
        assert_eq!(
            ExitReason::decide(Some(ExitReason::Stopped), false, Signal(15)),
            ExitReason::Stopped
        );
        assert_eq!(
            ExitReason::decide(Some(ExitReason::TimeoutKill), true, Signal(9)),
            ExitReason::MemOverload
        );
    }

    #[test]
    fn records_one_json_line_per_exit_and_counts() {
        let dir = std::env::temp_dir().join(format!("noslate-acct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut acct = Accounting::new(&dir);
        let reaped = Reaped {
            pid: 7,
            exit: ExitKind::Signal(9),
            user_cpu_us: 12_000,
            system_cpu_us: 3_000,
            max_rss_kib: 2048,
        };
        let rec = ExitRecord::new(&reaped, "f-1", "f", ExitReason::MemOverload, Some("r1"), 3);
        acct.record(&rec);
        acct.record(&ExitRecord::new(
            &reaped,
            "f-2",
            "f",
            ExitReason::Stopped,
            None,
            0,
        ));
        let text = std::fs::read_to_string(dir.join(LOG_NAME)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "mem_overload");
        assert_eq!(lines[0]["signal"], "SIGKILL");
        assert_eq!(lines[0]["requestId"], "r1");
        assert_eq!(lines[0]["userCpuMs"], 12);
        assert_eq!(acct.count(ExitReason::MemOverload), 1);
        assert_eq!(acct.count(ExitReason::Stopped), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
