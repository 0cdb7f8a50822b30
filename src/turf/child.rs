//! What every child process the runtime starts has in common, whatever it runs (a worker, a
//! warm seed or a spare): its name and pid, when it started, the cgroup and log directory it
//! holds, and where it is in the one stop sequence (SIGTERM to its process group, SIGKILL when
//! the grace period is over).

use crate::reactor::timer::TimerKey;
use crate::turf::cgroup::WorkerCgroup;
use crate::turf::spawn;
use std::path::PathBuf;
use std::time::Instant;

/// One child process and what it holds.
#[derive(Debug)]
pub struct ChildProc {
    /// Name used in logs and the log directory, e.g. `hello-3`.
    pub id: String,
    /// Process id (and process-group id); 0 for a forked worker its seed has not reported yet.
    pub pid: i32,
    /// When it was started.
    pub started_at: Instant,
    /// Its cgroup, when one enforces its limits.
    pub cgroup: Option<WorkerCgroup>,
    /// Its stdout/stderr directory, removed `worker.gcLogDelay` after it exits.
    pub log_dir: PathBuf,
    /// Armed once it was asked to exit: SIGKILL when the grace period is over.
    pub kill_timer: Option<TimerKey>,
}

/// What a reaped child leaves for the supervisor to clean up.
#[derive(Debug)]
pub struct Leftovers {
    /// Its SIGKILL timer, to cancel.
    pub kill_timer: Option<TimerKey>,
    /// Its cgroup, when it could not be removed yet (processes that escaped the group may still
    /// be dying): retried on the scheduler tick.
    pub busy_cgroup: Option<WorkerCgroup>,
    /// Its log directory, to delete later.
    pub log_dir: PathBuf,
}

impl ChildProc {
    /// A child started just now.
    pub fn new(id: String, pid: i32) -> ChildProc {
        ChildProc {
            id,
            pid,
            started_at: Instant::now(),
            cgroup: None,
            log_dir: PathBuf::new(),
            kill_timer: None,
        }
    }

    /// Asks the process group to exit (SIGTERM). Whether a SIGKILL timer is still to be armed:
    /// false when the stop sequence had already begun.
    pub fn terminate(&self) -> bool {
        spawn::kill(self.pid, libc::SIGTERM);
        self.kill_timer.is_none()
    }

    /// Kills the process group at once.
    pub fn kill(&self) {
        spawn::kill(self.pid, libc::SIGKILL);
    }

    /// The process is reaped: kills whatever it left in its group, removes its cgroup, and
    /// returns what is left to clean up.
    pub fn release(self) -> Leftovers {
        self.kill();
        let busy_cgroup = self.cgroup.and_then(|cg| cg.remove().err());
        Leftovers {
            kill_timer: self.kill_timer,
            busy_cgroup,
            log_dir: self.log_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::timer::Timers;
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    /// A `sleep` leading its own process group, as every child of the runtime does.
    fn group_leader() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    fn pid_of(child: &std::process::Child) -> i32 {
        i32::try_from(child.id()).expect("pid fits")
    }

    #[test]
    fn terminate_asks_once_for_a_kill_timer_and_ends_the_group() {
        let mut sleeper = group_leader();
        let mut process = ChildProc::new("t-1".into(), pid_of(&sleeper));
        assert!(process.terminate(), "the first request arms the kill timer");
        let mut timers: Timers<()> = Timers::default();
        process.kill_timer = Some(timers.schedule(Instant::now() + Duration::from_secs(5), ()));
        assert!(
            !process.terminate(),
            "a second request does not arm another"
        );
        let status = sleeper.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }

    #[test]
    fn release_kills_what_is_left_and_hands_back_the_timer_and_log_dir() {
        let mut sleeper = group_leader();
        let mut timers: Timers<()> = Timers::default();
        let timer = timers.schedule(Instant::now() + Duration::from_secs(5), ());
        let process = ChildProc {
            log_dir: PathBuf::from("/tmp/noslate-child-ut"),
            kill_timer: Some(timer),
            ..ChildProc::new("t-2".into(), pid_of(&sleeper))
        };
        let leftovers = process.release();
        assert_eq!(leftovers.kill_timer, Some(timer));
        assert!(leftovers.busy_cgroup.is_none());
        assert_eq!(leftovers.log_dir, PathBuf::from("/tmp/noslate-child-ut"));
        let status = sleeper.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn a_worker_not_forked_yet_has_no_process_to_signal() {
        // pid 0 would signal the runtime's own process group.
        let process = ChildProc::new("t-3".into(), 0);
        assert!(process.terminate());
        process.kill();
        let leftovers = process.release();
        assert!(leftovers.kill_timer.is_none());
    }
}
