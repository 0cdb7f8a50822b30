//! Forking a worker: fds 3/4 carry the protocol, stdout/stderr go to per-worker log files, the
//! environment is exactly what the caller lists, and the child gets its own session and dies
//! with the runtime. The unsafe part (what runs between fork and exec) is `sys::prepare_worker_exec`.

use crate::sys;
use mio::unix::pipe::{Receiver, Sender};
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Everything needed to start one worker process.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// Absolute path of the program to exec.
    pub program: &'a Path,
    /// Its arguments (without argv[0]).
    pub args: Vec<OsString>,
    /// The complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory (the function's code directory).
    pub cwd: &'a Path,
    /// Directory that receives `stdout` and `stderr`.
    pub log_dir: PathBuf,
}

/// A running worker process and the runtime's ends of its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process-group id.
    pub pid: i32,
    /// Runtime → worker (the worker reads it on fd 3).
    pub to_worker: Sender,
    /// Worker → runtime (the worker writes it on fd 4).
    pub from_worker: Receiver,
}

/// Why a worker could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The log directory could not be created.
    LogDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A log file could not be opened.
    LogFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating or configuring a pipe failed.
    Pipe(io::Error),
    /// fork or exec failed (for example, the program does not exist).
    Exec {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::LogDir { path, source } => {
                write!(
                    f,
                    "cannot create log directory {}: {source}",
                    path.display()
                )
            }
            SpawnError::LogFile { path, source } => {
                write!(f, "cannot open log file {}: {source}", path.display())
            }
            SpawnError::Pipe(source) => write!(f, "cannot create worker pipes: {source}"),
            SpawnError::Exec { program, source } => {
                write!(f, "cannot execute {}: {source}", program.display())
            }
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::LogDir { source, .. }
            | SpawnError::LogFile { source, .. }
            | SpawnError::Pipe(source)
            | SpawnError::Exec { source, .. } => Some(source),
        }
    }
}

fn open_log(dir: &Path, name: &str) -> Result<File, SpawnError> {
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| SpawnError::LogFile { path, source })
}

/// Makes one pipe whose worker end is blocking (workers may use plain blocking reads) and whose
/// runtime end is non-blocking for the event loop. Both are close-on-exec until the child's
/// `dup2` onto 3/4.
fn worker_pipe() -> Result<(Sender, Receiver), SpawnError> {
    let (sender, receiver) = mio::unix::pipe::new().map_err(SpawnError::Pipe)?;
    Ok((sender, receiver))
}

/// Forks and execs a worker.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    std::fs::create_dir_all(&spec.log_dir).map_err(|source| SpawnError::LogDir {
        path: spec.log_dir.clone(),
        source,
    })?;
    let stdout = open_log(&spec.log_dir, "stdout")?;
    let stderr = open_log(&spec.log_dir, "stderr")?;

    let (to_worker, worker_in) = worker_pipe()?;
    let (worker_out, from_worker) = worker_pipe()?;
    worker_in.set_nonblocking(false).map_err(SpawnError::Pipe)?;
    worker_out
        .set_nonblocking(false)
        .map_err(SpawnError::Pipe)?;
    let worker_in: OwnedFd = worker_in.into();
    let worker_out: OwnedFd = worker_out.into();

    let mut command = Command::new(spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    sys::prepare_worker_exec(&mut command, &worker_in, &worker_out);
    let child = command.spawn().map_err(|source| SpawnError::Exec {
        program: spec.program.to_path_buf(),
        source,
    })?;
    // The worker's ends now live in the child; closing ours lets EOF propagate when it dies.
    drop(worker_in);
    drop(worker_out);
    let pid = i32::try_from(child.id()).map_err(|_| SpawnError::Exec {
        program: spec.program.to_path_buf(),
        source: io::Error::other("pid out of range"),
    })?;
    // `Child` neither waits nor kills on drop: reaping is the event loop's SIGCHLD handler.
    drop(child);
    Ok(Spawned {
        pid,
        to_worker,
        from_worker,
    })
}

/// Finds `name` on `PATH` (the runtime's own), for runtime binaries such as `node`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Kills a worker's whole process group, so grandchildren die with it.
pub fn kill(pid: i32, signal: i32) {
    if let Err(err) = sys::kill_group(pid, signal) {
        log::warn!(
            "[turf pid={pid}] cannot send {}: {err}",
            sys::signal_name(signal)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn child_sees_only_given_env_and_fds_3_and_4() {
        let dir = std::env::temp_dir().join(format!("noslate-spawn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sh = find_on_path("sh").unwrap();
        // The child lists its open fds and environment on its protocol pipe (fd 4).
        let script = "{ ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; env | sort; } >&4";
        let spec = SpawnSpec {
            program: &sh,
            args: vec!["-c".into(), script.into()],
            env: vec![("ONLY".into(), "this".into())],
            cwd: &dir,
            log_dir: dir.join("logs"),
        };
        let spawned = spawn(&spec).unwrap();
        drop(spawned.to_worker);
        spawned.from_worker.set_nonblocking(false).unwrap();
        let mut out = String::new();
        let rx: OwnedFd = spawned.from_worker.into();
        File::from(rx).read_to_string(&mut out).unwrap();
        let mut lines = out.lines();
        // ls itself opens one directory fd while listing; everything else must be 0-4.
        let fds: Vec<i32> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(fds.starts_with(&[0, 1, 2, 3, 4]), "fds: {fds:?}");
        assert!(fds.len() <= 6, "unexpected inherited fds: {fds:?}");
        let env: Vec<&str> = lines.collect();
        assert!(env.contains(&"ONLY=this"), "env: {env:?}");
        assert!(
            !env.iter()
                .any(|l| l.starts_with("HOME=") || l.starts_with("CARGO"))
        );
        // Reap it so the test leaves no zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(r) = sys::reap_one().unwrap()
                && r.pid == spawned.pid
            {
                break r.exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child was never reaped"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(status, sys::ExitKind::Code(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
