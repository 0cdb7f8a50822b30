//! The end of every child process, whichever record it belongs to (worker, seed or spare): the
//! stop sequence's SIGKILL timer, the clean-up once it is reaped, and the deferred deletion of
//! its log directory. The supervisor owns the records and the deletion queue; the loop's timers
//! are lent to it for the call.

use super::Supervisor;
use crate::config::WorkerDefaults;
use crate::reactor::timer::Timers;
use crate::server::{Child, Timer};
use crate::turf::child::ChildProc;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl Supervisor {
    /// Asks a child process to exit: SIGTERM to its process group now, and SIGKILL once `grace`
    /// (`turf.gracefulExitPeriodMs`) has passed, by a timer its process record keeps (and that
    /// is cancelled if the child is reaped first).
    pub(in crate::server) fn terminate(
        &mut self,
        child: Child,
        grace: Duration,
        timers: &mut Timers<Timer>,
    ) {
        let Some(process) = self.process_mut(child) else {
            return;
        };
        if process.terminate() {
            process.kill_timer = Some(timers.schedule(Instant::now() + grace, Timer::Kill(child)));
        }
    }

    /// A stopping child's grace period is over: SIGKILL its process group.
    pub(in crate::server) fn grace_period_over(&mut self, child: Child) {
        if let Some(process) = self.process_mut(child) {
            process.kill_timer = None;
            let period = if child == Child::Gateway {
                "its grace period (gateway.stopGracePeriod)"
            } else {
                "turf.gracefulExitPeriodMs"
            };
            log::warn!(
                "[turf {} pid={}] still running after {period}; killing",
                process.id,
                process.pid
            );
            process.kill();
        }
    }

    /// Cleans up after a reaped child process: what is left of its group is killed, its kill
    /// timer cancelled, its cgroup removed (or retried on the tick while its processes are
    /// still dying) and its log directory queued for deletion.
    pub(in crate::server) fn release_process(
        &mut self,
        process: ChildProc,
        timers: &mut Timers<Timer>,
        policy: &WorkerDefaults,
    ) {
        let leftovers = process.release();
        if let Some(timer) = leftovers.kill_timer {
            timers.cancel(timer);
        }
        if let Some(busy) = leftovers.busy_cgroup {
            self.stale_cgroups.push(busy);
        }
        self.schedule_log_gc(leftovers.log_dir, timers, policy);
    }

    /// Queues an exited child's log directory for deletion after `worker.gcLogDelay`; beyond
    /// `worker.gcLogHighWaterMark` pending directories, the oldest go at once, so a crash loop
    /// cannot fill the disk.
    fn schedule_log_gc(
        &mut self,
        dir: PathBuf,
        timers: &mut Timers<Timer>,
        policy: &WorkerDefaults,
    ) {
        if dir.as_os_str().is_empty() {
            return;
        }
        let delay = Duration::from_millis(policy.gc_log_delay_ms);
        self.log_gc.push_back((Instant::now() + delay, dir));
        while self.log_gc.len() > policy.gc_log_high_water_mark {
            if let Some((_, oldest)) = self.log_gc.pop_front() {
                remove_log_dir(&oldest);
            }
        }
        self.arm_log_gc(timers);
    }

    /// Deletes the log directories that are due.
    pub(in crate::server) fn collect_logs(&mut self, timers: &mut Timers<Timer>) {
        self.log_gc_armed = false;
        let now = Instant::now();
        while self.log_gc.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, dir)) = self.log_gc.pop_front() {
                remove_log_dir(&dir);
            }
        }
        self.arm_log_gc(timers);
    }

    /// Schedules the next deletion, if one is pending and none is scheduled.
    fn arm_log_gc(&mut self, timers: &mut Timers<Timer>) {
        if !self.log_gc_armed
            && let Some((at, _)) = self.log_gc.front()
        {
            self.log_gc_armed = true;
            timers.schedule(*at, Timer::LogGc);
        }
    }
}

fn remove_log_dir(dir: &Path) {
    if let Err(err) = std::fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!(
            "[turf] cannot remove log directory {}: {err}",
            dir.display()
        );
    }
}
