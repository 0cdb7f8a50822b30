//! What every child process the runtime starts has in common, whatever it runs (a worker, a
//! warm seed or a spare): its name and pid, when it started, the cgroup and log directory it
//! holds, and where it is in the one stop sequence (SIGTERM to its process group, SIGKILL when
//! the grace period is over).

use crate::reactor::slab::Key;
use crate::reactor::timer::TimerKey;
use crate::turf::cgroup::WorkerCgroup;
use crate::turf::spawn;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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
    /// The console relay of its stderr while the console keeps that relay's tail for a start
    /// failure's error: from its start until it is ready (its output relayed to the console).
    pub stderr_relay: Option<Key>,
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
            stderr_relay: None,
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

/// The last lines of `bytes` (a stderr tail), decoded lossily and trimmed of a cut first line
/// when there is more than one. `full`: `bytes` is all the output there was, not a cut.
pub fn tail_text(bytes: &[u8], full: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if full {
        return text.to_owned();
    }
    // The tail was cut at its size limit: drop the partial first line if whole ones follow.
    match text.split_once('\n') {
        Some((_, rest)) if !rest.is_empty() => rest.to_owned(),
        _ => text.to_owned(),
    }
}

/// The text of the last `bytes` (at most) of the `stderr` file in a child's log directory;
/// `None` when there is no such file or it is empty.
pub fn stderr_file_tail(log_dir: &Path, bytes: usize) -> Option<String> {
    let mut file = File::open(log_dir.join("stderr")).ok()?;
    let len = file.metadata().ok()?.len();
    let want = u64::try_from(bytes).unwrap_or(u64::MAX).min(len);
    file.seek(SeekFrom::Start(len - want)).ok()?;
    let mut tail = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut tail).ok()?;
    let text = tail_text(&tail, want == len);
    (!text.is_empty()).then_some(text)
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

    #[test]
    fn tails_drop_a_cut_first_line() {
        assert_eq!(
            tail_text(b"ial line\nError: x\n  at y\n", false),
            "Error: x\n  at y"
        );
        assert_eq!(tail_text(b"whole\nError: x\n", true), "whole\nError: x");
        assert_eq!(tail_text(b"only a piece", false), "only a piece");
        assert_eq!(tail_text(b"", true), "");
    }

    #[test]
    fn a_stderr_file_tail_is_its_last_whole_lines() {
        let dir = std::env::temp_dir().join(format!("noslate-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(stderr_file_tail(&dir, 64), None, "no file");
        std::fs::write(dir.join("stderr"), "").unwrap();
        assert_eq!(stderr_file_tail(&dir, 64), None, "empty");
        std::fs::write(dir.join("stderr"), "first line\nnode: bad option: --x\n").unwrap();
        assert_eq!(
            stderr_file_tail(&dir, 64).as_deref(),
            Some("first line\nnode: bad option: --x")
        );
        assert_eq!(
            stderr_file_tail(&dir, 24).as_deref(),
            Some("node: bad option: --x"),
            "the cut first line goes"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
