//! Forking a worker inside its sandbox: fds 3/4 carry the protocol, stdout/stderr go to
//! per-worker log files, the environment is exactly what the caller lists, the child gets its own
//! session and dies with the runtime. What the sandbox applies (limits, cgroup, user and
//! capabilities, namespaces, seccomp) is decided beforehand by the [`SandboxPlan`]
//! (`turf::plan`); this module prepares what the plan needs and forks. The unsafe part (what
//! runs between fork and exec) is `sys::sandbox`.
//!
//! # Two paths
//!
//! - **Plain** (no namespaces): `std::process::Command` with a `pre_exec` hook
//!   (`sys::sandbox::prepare_command`). std places stdio, changes directory and resets the signal
//!   mask before the hook runs, and reports an exec failure as an error.
//! - **Isolated** (namespaces): a raw `clone(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS)`
//!   (`sys::sandbox::spawn_isolated`), because a process can only be created *in* a new PID
//!   namespace by the clone that makes it. A close-on-exec error pipe carries `[step, errno]` to
//!   the parent when a step fails; EOF without a report means the exec succeeded.
//!
//! # Before the fork (in the runtime)
//!
//! 1. The log directory and files, the two protocol pipes; the working directory must exist.
//! 2. The worker's cgroup: `<hierarchy>/noslate/<instance>/<worker>` per hierarchy, limits
//!    written, `cgroup.procs` opened close-on-exec at fd ≥ 10 ([`WorkerCgroup`]). If that fails
//!    the worker starts without a cgroup (logged; those limits fall back, see [`Enforcement`]).
//! 3. Everything the child needs, built now because the child may not allocate: rlimits, the
//!    seccomp program, and on the isolated path the C strings of argv/envp/program/cwd, `O_PATH`
//!    descriptors of the read-only directories and the list of mount points to create.
//!
//! # In the child, in this order (each failure names its step)
//!
//! Plain path (std has already placed stdio on 0–2, changed to the working directory, unblocked
//! signals and restored SIGPIPE):
//!
//! 1. `join cgroup (write cgroup.procs)`: "0" to each pre-opened `cgroup.procs`, so everything
//!    from here on (and every process the worker forks) is limited;
//! 2. `dup2 stdio and protocol pipes`: the pipes onto fds 3 and 4;
//! 3. `setsid`: its own session and process group;
//! 4. `close_range`: every fd from 5 up close-on-exec;
//! 5. `setrlimit(RLIMIT_CORE)` = 0, `setrlimit(RLIMIT_NOFILE)`, and `setrlimit(RLIMIT_NPROC)`
//!    when pids has no cgroup;
//! 6. `setgroups`, `setgid`, `setuid` to `turf.user` (raw syscalls);
//! 7. `prctl(PR_SET_PDEATHSIG)` — after 6, because a credential change clears it — then
//!    `runtime exited during worker spawn` if `getppid` is no longer the runtime;
//! 8. `prctl(PR_SET_NO_NEW_PRIVS)`;
//! 9. `install seccomp filter`: last, so none of the set-up above is filtered;
//! 10. `execve` (by std).
//!
//! Isolated path (a raw clone into new pid, mount, ipc and uts namespaces):
//!
//! 1. `reset signal mask` (and SIGPIPE back to its default);
//! 2. `join cgroup (write cgroup.procs)`;
//! 3. `setsid`;
//! 4. mounts: `make / private (mount MS_REC|MS_PRIVATE)`; `open read-only directory in the mount
//!    namespace` for each read-only directory (before /tmp is covered); `mount private tmpfs on
//!    /tmp`; `mkdir under the private /tmp` for read-only directories that lived under the
//!    host's /tmp; `bind-mount read-only directory` and `remount bind read-only` for each;
//!    `mount /proc` (the namespace's own);
//! 5. `dup2 stdio and protocol pipes`: `/dev/null` and the two log files onto 0–2, the pipes
//!    onto 3 and 4;
//! 6. `close_range`;
//! 7. the rlimits, as above;
//! 8. `setgroups`, `setgid`, `setuid`;
//! 9. `prctl(PR_SET_PDEATHSIG)`, then `runtime exited during worker spawn` if the error pipe
//!    reports POLLERR (its read end, held by the runtime until the exec, is gone; `getppid` is
//!    0 across a PID namespace and tells nothing);
//! 10. `chdir` — after the mounts, so the cwd is inside the read-only bind;
//! 11. `prctl(PR_SET_NO_NEW_PRIVS)`;
//! 12. `install seccomp filter`;
//! 13. `execve`.
//!
//! A failed step is [`SpawnError::Sandbox`] with the step's name and errno; a failed `execve` is
//! [`SpawnError::Exec`] naming the program. The failed child is reaped before `spawn` returns,
//! and a cgroup created for it is removed.
//!
//! # Consequences of a PID namespace
//!
//! The worker is PID 1 of its namespace. The kernel delivers a signal from outside the namespace
//! to its PID 1 only if PID 1 has a handler for it (SIGKILL and SIGSTOP excepted). So the
//! runtime's stop sequence — close fd 3 (the bootstrap exits on EOF), SIGTERM to the process
//! group, SIGKILL after `turf.gracefulExitPeriodMs` — works as follows: EOF is the graceful path;
//! SIGTERM reaches the worker only if it installed a SIGTERM handler (Node.js does not by
//! default), but still reaches its other processes; SIGKILL always works. When PID 1 exits, the
//! kernel SIGKILLs everything else in the namespace, so no grandchild outlives the worker. PID 1
//! also inherits orphaned grandchildren: a worker that does not reap them accumulates zombies
//! until it exits.
//!
//! The private `/tmp` hides the host's `/tmp`: any directory the worker needs from there (its
//! code, the bootstrap's directory) must be in [`Isolation::read_only_dirs`] (the working
//! directory always is). `/proc` is the namespace's own, so host processes are invisible.

use crate::sys;
use crate::sys::sandbox::{self as sb, ChildFailure, ChildSetup, Step};
use crate::turf::cgroup::{Controller, WorkerCgroup};
use mio::unix::pipe::{Receiver, Sender};
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// The plan's types that a spawn takes ([`SpawnSpec::sandbox`], [`find_on_path_for`]) and
// returns ([`Spawned::enforcement`]), so that callers can name them here.
use crate::turf::plan::tmp_mount_points;
pub use crate::turf::plan::{Credentials, Enforcement, Isolation, SandboxPlan, WorkerLimits};

/// Everything needed to start one worker process.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// Absolute path of the program to exec.
    pub program: &'a Path,
    /// Its arguments (without `argv[0]`).
    pub args: Vec<OsString>,
    /// The complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory (the function's code directory).
    pub cwd: &'a Path,
    /// Directory that receives `stdout` and `stderr`; empty to share the runtime's own stdout
    /// and stderr instead (what Function Compute collects as the function's logs).
    pub log_dir: PathBuf,
    /// Limits and isolation ([`SandboxPlan::build`]; [`SandboxPlan::default`] for the minimum).
    pub sandbox: SandboxPlan,
    /// What carries the protocol on fds 3 and 4.
    pub channel: Channel,
}

/// A running worker process and the runtime's ends of its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (in the runtime's PID namespace), which is also its process-group id.
    pub pid: i32,
    /// Runtime → worker (the worker reads it on fd 3).
    pub to_worker: Sender,
    /// Worker → runtime (the worker writes it on fd 4).
    pub from_worker: Receiver,
    /// Its cgroup, to check for an OOM kill when it exits and to remove once it is reaped.
    pub cgroup: Option<WorkerCgroup>,
    /// What was actually enforced.
    pub enforcement: Enforcement,
    /// The runtime's ends of its stdout and stderr, when they are relayed to the console.
    pub output: Option<OutputPipes>,
}

/// The runtime's ends of a child's stdout and stderr when its output goes to the runtime's
/// console (`logger.workerOutput: console`). Each child writes to pipes of its own, and only
/// the runtime writes the console, whole lines at a time: lines of different workers cannot
/// mix, and a child that writes faster than the console takes blocks itself, not the runtime.
#[derive(Debug)]
pub struct OutputPipes {
    /// Its stdout.
    pub stdout: Receiver,
    /// Its stderr.
    pub stderr: Receiver,
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
    /// The working directory is missing or not a directory.
    Cwd {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Preparing the sandbox in the runtime failed (a read-only directory, `/dev/null`, a C
    /// string).
    Prepare {
        /// What was being prepared.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// A sandbox step failed in the child (see the module documentation for the steps).
    Sandbox {
        /// The step's name.
        step: &'static str,
        /// Its errno.
        source: io::Error,
    },
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
            SpawnError::Cwd { path, source } => {
                write!(
                    f,
                    "code directory {} is not usable: {source}",
                    path.display()
                )
            }
            SpawnError::Prepare { what, source } => {
                write!(f, "cannot prepare the worker sandbox ({what}): {source}")
            }
            SpawnError::Sandbox { step, source } => {
                write!(f, "worker sandbox step failed: {step}: {source}")
            }
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
            | SpawnError::Cwd { source, .. }
            | SpawnError::Prepare { source, .. }
            | SpawnError::Sandbox { source, .. }
            | SpawnError::Exec { source, .. } => Some(source),
        }
    }
}

/// Canonical read-only directories, outermost first, without duplicates.
fn read_only_dirs(cwd: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>, SpawnError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in std::iter::once(cwd).chain(extra.iter().map(PathBuf::as_path)) {
        let real = std::fs::canonicalize(dir).map_err(|source| SpawnError::Prepare {
            what: format!("read-only directory {}", dir.display()),
            source,
        })?;
        if !out.contains(&real) {
            out.push(real);
        }
    }
    out.sort_by_key(|p| p.components().count());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Spawning
// ---------------------------------------------------------------------------------------------

/// Opens (appending) one of a worker's log files, readable and writable by the runtime's user
/// only: the worker writes it through the descriptor it inherits, and no worker (which runs as
/// another user) can open it by name.
fn open_log(dir: &Path, name: &str) -> Result<File, SpawnError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(&path)
        .map_err(|source| SpawnError::LogFile {
            path: path.clone(),
            source,
        })?;
    // A file left by an earlier run keeps its old mode unless it is set again.
    file.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))
        .map_err(|source| SpawnError::LogFile { path, source })?;
    Ok(file)
}

/// Mode of a worker's log files (`stdout`, `stderr`).
pub const LOG_FILE_MODE: u32 = 0o600;
/// Mode of the directories the runtime creates for worker logs.
pub const LOG_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with [`LOG_DIR_MODE`], and sets that mode on `dir`
/// itself if it already existed.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(LOG_DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(LOG_DIR_MODE))
}

/// What carries the protocol on a worker's fds 3 and 4 (`turf.workerChannel`). Both are
/// one-way byte streams with end-of-file on close, which is all the protocol asks of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A Unix stream socket pair, shut down in the unused direction. It moves bulk bytes two
    /// to three times faster than a pipe on the same machine (a pipe allocates, charges and
    /// frees a page per 4 KiB that passes; a socket queues large buffers), at about 1.5 µs
    /// more per small message and hop.
    Socket,
    /// A pipe: a little cheaper per small message, and what worker code that reopens its
    /// descriptors through `/proc/self/fd` needs (a socket cannot be opened by path).
    Pipe,
}

/// Makes one channel of `kind`, both ends non-blocking and close-on-exec
/// ([`protocol_channels`] makes the worker's end blocking; the child's `dup2` onto 3/4 clears
/// close-on-exec).
fn worker_channel(kind: Channel) -> Result<(Sender, Receiver), SpawnError> {
    Ok(match kind {
        Channel::Pipe => {
            let (sender, receiver) = mio::unix::pipe::new().map_err(SpawnError::Pipe)?;
            if let Err(err) = sys::set_pipe_size(sender.as_fd(), PROTOCOL_CHANNEL_BYTES) {
                log::debug!(
                    "[turf] cannot grow a worker pipe to {PROTOCOL_CHANNEL_BYTES} bytes: {err}"
                );
            }
            (sender, receiver)
        }
        Channel::Socket => {
            let (sending, receiving) = sys::one_way_stream_pair().map_err(SpawnError::Pipe)?;
            // A stream socket's sender holds what is in flight: its send buffer is the bound.
            if let Err(err) =
                sys::set_socket_buffer(sending.as_fd(), libc::SO_SNDBUF, PROTOCOL_CHANNEL_BYTES)
            {
                log::debug!(
                    "[turf] cannot grow a worker socket to {PROTOCOL_CHANNEL_BYTES} bytes: {err}"
                );
            }
            let (sender, receiver) = (Sender::from(sending), Receiver::from(receiving));
            sender.set_nonblocking(true).map_err(SpawnError::Pipe)?;
            receiver.set_nonblocking(true).map_err(SpawnError::Pipe)?;
            (sender, receiver)
        }
    })
}

/// What a protocol channel is asked to hold: a whole credit window (docs/PROTOCOL.md) plus a
/// frame, so that a sender with credit never waits for the reader, where a default 64 KiB pipe
/// would take a quarter of a window per wake-up. Where the kernel refuses (an unprivileged
/// runtime past `pipe-max-size` or `net.core.wmem_max`) the channel keeps a smaller size: only
/// large bodies get slower.
pub const PROTOCOL_CHANNEL_BYTES: usize = 1 << 20;

fn prepare_err(what: &str) -> impl FnOnce(io::Error) -> SpawnError {
    let what = what.to_owned();
    move |source| SpawnError::Prepare { what, source }
}

/// The runtime's ends of a worker's two protocol channels (non-blocking, for the loop) and the
/// worker's (blocking: workers may use plain blocking reads), all close-on-exec.
fn protocol_channels(kind: Channel) -> Result<(Sender, Receiver, OwnedFd, OwnedFd), SpawnError> {
    let (to_worker, worker_in) = worker_channel(kind)?;
    let (worker_out, from_worker) = worker_channel(kind)?;
    worker_in.set_nonblocking(false).map_err(SpawnError::Pipe)?;
    worker_out
        .set_nonblocking(false)
        .map_err(SpawnError::Pipe)?;
    Ok((to_worker, from_worker, worker_in.into(), worker_out.into()))
}

/// Forks and execs a worker in its sandbox.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let (to_worker, from_worker, worker_in, worker_out) = protocol_channels(spec.channel)?;
    let started = start(spec, &worker_in, &worker_out);
    // The worker's ends now live in the child; closing ours lets EOF propagate when it dies.
    drop(worker_in);
    drop(worker_out);
    let (pid, cgroup, enforcement, output) = started?;
    Ok(Spawned {
        pid,
        to_worker,
        from_worker,
        cgroup,
        enforcement,
        output,
    })
}

/// A running warm seed (`turf::seed`) and the runtime's end of its control socket.
#[derive(Debug)]
pub struct SpawnedSeed {
    /// Its pid, which is also its process-group id.
    pub pid: i32,
    /// The runtime's end of the `SOCK_SEQPACKET` control socket (the seed has it on fds 3
    /// and 4).
    pub control: OwnedFd,
    /// Its cgroup (the function's limits apply to the seed too).
    pub cgroup: Option<WorkerCgroup>,
    /// The runtime's ends of its stdout and stderr, when they are relayed to the console.
    pub output: Option<OutputPipes>,
}

/// Forks and execs a warm seed in its sandbox: like [`spawn`], except that fds 3 and 4 are one
/// Unix `SOCK_SEQPACKET` socket, because the seed receives each new worker's descriptors
/// (`SCM_RIGHTS`) with the request to fork it. Namespaces are refused: a seed is PID 1 of its
/// namespace, so the workers it forks could not be reparented to the runtime, and would all
/// die with it.
pub fn spawn_seed(spec: &SpawnSpec<'_>) -> Result<SpawnedSeed, SpawnError> {
    if spec.sandbox.namespaces().is_some() {
        return Err(SpawnError::Prepare {
            what: "a warm seed".into(),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "a seed cannot run in its own PID namespace (turf.isolation)",
            ),
        });
    }
    let (control, theirs) = sys::seqpacket_pair().map_err(SpawnError::Pipe)?;
    let theirs_out = theirs.try_clone().map_err(SpawnError::Pipe)?;
    let started = start(spec, &theirs, &theirs_out);
    drop(theirs);
    drop(theirs_out);
    let (pid, cgroup, _enforcement, output) = started?;
    Ok(SpawnedSeed {
        pid,
        control,
        cgroup,
        output,
    })
}

/// What the runtime prepares for a worker that a warm seed forks (`turf::seed`): the protocol
/// pipes, the log files and the cgroup, exactly as [`spawn`] prepares them for a cold worker.
/// The seed's fork inherits the rest of the sandbox (rlimits, user, no-new-privs, seccomp)
/// from the seed, which was spawned with the same plan.
#[derive(Debug)]
pub struct ForkParts {
    /// Runtime → worker.
    pub to_worker: Sender,
    /// Worker → runtime.
    pub from_worker: Receiver,
    /// The worker's ends, in the order the seed places them: fd 3, fd 4, stdout, stderr.
    pub child_fds: [OwnedFd; 4],
    /// The cgroup the worker is moved into once its pid is known ([`WorkerCgroup::attach`]).
    pub cgroup: Option<WorkerCgroup>,
    /// What will be enforced.
    pub enforcement: Enforcement,
    /// The runtime's ends of its stdout and stderr, when they are relayed to the console.
    pub output: Option<OutputPipes>,
}

/// Prepares a forked worker's pipes, log files and cgroup (see [`ForkParts`]).
pub fn prepare_fork(
    log_dir: &Path,
    plan: &SandboxPlan,
    channel: Channel,
) -> Result<ForkParts, SpawnError> {
    let (stdout, stderr, output) = log_files(log_dir)?;
    let (to_worker, from_worker, worker_in, worker_out) = protocol_channels(channel)?;
    let cgroup = plan.cgroup().and_then(|p| match WorkerCgroup::create(p) {
        Ok(cg) => Some(cg),
        Err(e) => {
            log::warn!("[turf] {e}; the worker starts without a cgroup");
            None
        }
    });
    let enforcement = plan.enforcement_in(|c| cgroup.as_ref().is_some_and(|cg| cg.has(c)));
    Ok(ForkParts {
        to_worker,
        from_worker,
        child_fds: [worker_in, worker_out, stdout.into(), stderr.into()],
        cgroup,
        enforcement,
        output,
    })
}

/// Opens the worker's stdout and stderr files in `log_dir`.
pub fn open_log_files(log_dir: &Path) -> Result<(File, File), SpawnError> {
    let (stdout, stderr, _) = log_files(log_dir)?;
    Ok((stdout, stderr))
}

/// The worker's stdout and stderr: files in `log_dir`, or, when `log_dir` is empty, pipes
/// whose other ends the runtime relays to its console.
fn log_files(log_dir: &Path) -> Result<(File, File, Option<OutputPipes>), SpawnError> {
    if log_dir.as_os_str().is_empty() {
        let (stdout, stdout_relay) = output_pipe()?;
        let (stderr, stderr_relay) = output_pipe()?;
        let relay = OutputPipes {
            stdout: stdout_relay,
            stderr: stderr_relay,
        };
        return Ok((stdout, stderr, Some(relay)));
    }
    create_private_dir(log_dir).map_err(|source| SpawnError::LogDir {
        path: log_dir.to_path_buf(),
        source,
    })?;
    Ok((
        open_log(log_dir, "stdout")?,
        open_log(log_dir, "stderr")?,
        None,
    ))
}

/// One output pipe: the child's end blocking (as a terminal or file would be), the runtime's
/// non-blocking, both close-on-exec until the child's `dup2` onto 1/2.
fn output_pipe() -> Result<(File, Receiver), SpawnError> {
    let (theirs, ours) = mio::unix::pipe::new().map_err(SpawnError::Pipe)?;
    theirs.set_nonblocking(false).map_err(SpawnError::Pipe)?;
    Ok((File::from(OwnedFd::from(theirs)), ours))
}

/// A started child: its pid, cgroup, what is enforced, and its relayed output, if any.
type Started = (i32, Option<WorkerCgroup>, Enforcement, Option<OutputPipes>);

/// The common part of [`spawn`] and [`spawn_seed`]: checks the working directory, opens the
/// logs, creates the cgroup and forks with `worker_in`/`worker_out` as the child's fds 3/4.
fn start(
    spec: &SpawnSpec<'_>,
    worker_in: &OwnedFd,
    worker_out: &OwnedFd,
) -> Result<Started, SpawnError> {
    match std::fs::metadata(spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        Err(source) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.to_path_buf(),
                source,
            });
        }
    }
    let (stdout, stderr, output) = log_files(&spec.log_dir)?;
    let plan = &spec.sandbox;
    let mut cgroup = plan.cgroup().and_then(|p| match WorkerCgroup::create(p) {
        Ok(cg) => Some(cg),
        Err(e) => {
            log::warn!("[turf] {e}; the worker starts without a cgroup");
            None
        }
    });
    let mut procs = Vec::new();
    if let Some(cg) = cgroup.take() {
        match cg.open_procs() {
            Ok(fds) => {
                procs = fds;
                cgroup = Some(cg);
            }
            Err(e) => {
                log::warn!("[turf] {e}; the worker starts without a cgroup");
                let _ = cg.remove();
            }
        }
    }
    let enforcement = plan.enforcement_in(|c| cgroup.as_ref().is_some_and(|cg| cg.has(c)));
    let pids_in_cgroup = cgroup.as_ref().is_some_and(|cg| cg.has(Controller::Pids));
    let setup = plan.child_setup(procs, pids_in_cgroup);

    let result = match plan.namespaces() {
        Some(ns) => spawn_isolated(
            spec,
            setup,
            &ns.read_only_dirs,
            ns.tmp_size,
            stdout,
            stderr,
            worker_in,
            worker_out,
        ),
        None => spawn_plain(spec, setup, stdout, stderr, worker_in, worker_out),
    };
    match result {
        Ok(pid) => Ok((pid, cgroup, enforcement, output)),
        Err(e) => {
            if let Some(cg) = cgroup
                && let Err(cg) = cg.remove()
            {
                log::warn!(
                    "[turf] cannot remove the cgroup of a worker that failed to start: {:?}",
                    cg.paths().collect::<Vec<_>>()
                );
            }
            Err(e)
        }
    }
}

fn spawn_plain(
    spec: &SpawnSpec<'_>,
    setup: ChildSetup,
    stdout: File,
    stderr: File,
    worker_in: &OwnedFd,
    worker_out: &OwnedFd,
) -> Result<i32, SpawnError> {
    let mut command = Command::new(spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let report = sb::prepare_command(&mut command, worker_in, worker_out, setup)
        .map_err(SpawnError::Pipe)?;
    let spawned = command.spawn();
    // Drop the hook (and the report pipe's write end it owns) before reading the report.
    drop(command);
    let child = match spawned {
        Ok(child) => child,
        Err(source) => {
            return Err(match report.failed_step() {
                Some(step) => SpawnError::Sandbox {
                    step: step.name(),
                    source,
                },
                None => SpawnError::Exec {
                    program: spec.program.to_path_buf(),
                    source,
                },
            });
        }
    };
    let pid = i32::try_from(child.id()).map_err(|_| SpawnError::Exec {
        program: spec.program.to_path_buf(),
        source: io::Error::other("pid out of range"),
    })?;
    // `Child` neither waits nor kills on drop: reaping is the event loop's SIGCHLD handler.
    drop(child);
    Ok(pid)
}

#[allow(clippy::too_many_arguments)]
fn spawn_isolated(
    spec: &SpawnSpec<'_>,
    mut setup: ChildSetup,
    extra: &[PathBuf],
    tmp_size: Option<u64>,
    stdout: File,
    stderr: File,
    worker_in: &OwnedFd,
    worker_out: &OwnedFd,
) -> Result<i32, SpawnError> {
    let dirs = read_only_dirs(spec.cwd, extra)?;
    let points = tmp_mount_points(&dirs);
    let opened = dirs
        .iter()
        .map(|d| sb::ReadOnlyDir::open(d))
        .collect::<io::Result<Vec<_>>>()
        .map_err(prepare_err("open read-only directories"))?;
    let points: Vec<&Path> = points.iter().map(PathBuf::as_path).collect();
    setup.mounts =
        Some(sb::Mounts::new(tmp_size, &points, opened).map_err(prepare_err("mount options"))?);
    let image = sb::ExecImage::new(
        spec.program,
        spec.args.iter().map(OsString::as_os_str),
        spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        spec.cwd,
    )
    .map_err(prepare_err("argv, environment and paths as C strings"))?;
    let high = |f: File, what: &str| sb::fd_above(OwnedFd::from(f)).map_err(prepare_err(what));
    let null = File::open("/dev/null").map_err(prepare_err("/dev/null"))?;
    let fds = sb::ChildFds {
        stdin: high(null, "/dev/null")?,
        stdout: high(stdout, "stdout log")?,
        stderr: high(stderr, "stderr log")?,
        worker_in: std::os::fd::AsRawFd::as_raw_fd(worker_in),
        worker_out: std::os::fd::AsRawFd::as_raw_fd(worker_out),
    };
    sb::spawn_isolated(&image, &fds, &setup, sb::WORKER_NAMESPACES)
        .map_err(|failure| child_error(spec.program, failure))
}

fn child_error(program: &Path, failure: ChildFailure) -> SpawnError {
    match failure.step {
        Step::Execve | Step::Clone | Step::Pipe => SpawnError::Exec {
            program: program.to_path_buf(),
            source: failure.error(),
        },
        step => SpawnError::Sandbox {
            step: step.name(),
            source: failure.error(),
        },
    }
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

/// [`find_on_path`], preferring a program that `worker` can execute (see
/// [`candidates_on_path`]).
pub fn find_on_path_for(name: &str, worker: Option<Credentials>) -> Option<PathBuf> {
    candidates_on_path(name, worker).into_iter().next()
}

/// Every executable `name` on `PATH`, in `PATH` order, except that those `worker` (the user
/// workers run as) can execute come first.
pub fn candidates_on_path(name: &str, worker: Option<Credentials>) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = if name.contains('/') {
        find_on_path(name).into_iter().collect()
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .filter(|c| is_executable(c))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(c) = worker {
        // A stable sort keeps PATH order within each half.
        all.sort_by_key(|p| !crate::turf::privilege::executable_by(p, c));
    }
    all
}

/// Whether `path` is an executable regular file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Kills a worker's whole process group, so grandchildren die with it. A pid of 0 is a worker
/// whose seed has not reported its pid yet: nothing to signal (the runtime kills it when the
/// pid arrives if it is stopping by then).
pub fn kill(pid: i32, signal: i32) {
    if pid == 0 {
        return;
    }
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
    use crate::turf::cgroup::{self, CgroupPlan, Version};
    use crate::turf::plan::{Applied, Mechanism, NOBODY_IDS, resolve_user};
    use crate::turf::probe::{self, Capabilities};
    use std::io::Read;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("noslate-spawn-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Stated, not left to the umask: other tests bind the admin socket under a umask of 077
        // at the same time, and a worker user must enter this directory.
        std::fs::set_permissions(
            &dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
        dir
    }

    fn instance(name: &str) -> String {
        format!("rt-{}-{name}", sys::getpid())
    }

    /// The real interpreter (PATH may hold a pyenv shim, a shell script that needs its own
    /// environment).
    fn python() -> PathBuf {
        ["/usr/bin/python3", "/usr/local/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
            .or_else(|| find_on_path("python3"))
            .expect("python3 is installed")
    }

    fn spec<'a>(
        program: &'a Path,
        args: &[&str],
        dir: &'a Path,
        sandbox: SandboxPlan,
    ) -> SpawnSpec<'a> {
        SpawnSpec {
            program,
            args: args.iter().map(OsString::from).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: dir,
            log_dir: dir.join("logs"),
            sandbox,
            channel: Channel::Socket,
        }
    }

    /// Reads the worker's fd 4 until EOF or until `lines` lines have arrived.
    fn read_lines(spawned: &mut Spawned, lines: usize) -> String {
        spawned.from_worker.set_nonblocking(false).unwrap();
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while out.iter().filter(|b| **b == b'\n').count() < lines {
            match spawned.from_worker.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => out.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read from worker: {e}"),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn wait(pid: i32) -> sys::ExitKind {
        sb::wait_pid(pid, true).unwrap().expect("exited")
    }

    fn wait_timeout(pid: i32, timeout: Duration) -> Option<sys::ExitKind> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = sb::wait_pid(pid, false).unwrap() {
                return Some(exit);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn remove_cgroup(cg: Option<WorkerCgroup>) {
        if let Some(cg) = cg {
            let paths: Vec<PathBuf> = cg.paths().map(Path::to_path_buf).collect();
            let mut cg = cg;
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match cg.remove() {
                    Ok(()) => break,
                    Err(back) => cg = back,
                }
                assert!(Instant::now() < deadline, "cgroup not removable: {paths:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
            for p in paths {
                assert!(!p.exists(), "{} was removed", p.display());
            }
        }
    }

    /// Removes this test's instance cgroups and scratch directory.
    fn finish(caps: &Capabilities, dir: &Path) {
        let left = cgroup::remove_instance(&caps.cgroup);
        assert!(left.is_empty(), "cgroups left: {left:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn limits(memory: Option<u64>, pids: Option<u64>, nofile: Option<u64>) -> WorkerLimits {
        WorkerLimits {
            memory,
            cpu: None,
            pids,
            nofile,
        }
    }

    #[test]
    fn child_sees_only_given_env_and_fds_3_and_4() {
        for (channel, kind) in [(Channel::Socket, "socket:"), (Channel::Pipe, "pipe:")] {
            child_sees_only_given_env_and_fds_3_and_4_on(channel, kind);
        }
    }

    fn child_sees_only_given_env_and_fds_3_and_4_on(channel: Channel, kind: &str) {
        let dir = scratch("env");
        let sh = find_on_path("sh").unwrap();
        // The child lists its open fds, what its fds 3 and 4 are, and its environment on its
        // protocol channel (fd 4).
        let script = "{ ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
                      readlink /proc/self/fd/3 /proc/self/fd/4 | tr '\\n' ' '; echo; \
                      env | sort; } >&4";
        let spec = SpawnSpec {
            program: &sh,
            args: vec!["-c".into(), script.into()],
            env: vec![("ONLY".into(), "this".into())],
            cwd: &dir,
            log_dir: dir.join("logs"),
            sandbox: SandboxPlan::default(),
            channel,
        };
        let spawned = spawn(&spec).unwrap();
        assert!(spawned.cgroup.is_none());
        assert_eq!(spawned.enforcement, Enforcement::default());
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
        let kinds: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(
            kinds.iter().all(|k| k.starts_with(kind)),
            "{kind} {kinds:?}"
        );
        let env: Vec<&str> = lines.collect();
        assert!(env.contains(&"ONLY=this"), "env: {env:?}");
        assert!(
            !env.iter()
                .any(|l| l.starts_with("HOME=") || l.starts_with("CARGO"))
        );
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn core_nofile_and_no_new_privs_always_apply() {
        let dir = scratch("rlimits");
        let caps = Capabilities::none(&instance("rlimits"), "not probed");
        let plan = SandboxPlan::build(&caps, "w1", limits(None, None, Some(64)), None);
        let sh = find_on_path("sh").unwrap();
        let script = "{ ulimit -n; ulimit -Hn; ulimit -c; grep NoNewPrivs /proc/self/status; } >&4";
        let mut spawned = spawn(&spec(&sh, &["-c", script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 4);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "64", "{out}");
        assert_eq!(lines[1], "64", "{out}");
        assert_eq!(lines[2], "0", "{out}");
        assert!(lines[3].ends_with("\t1"), "{out}");
        assert_eq!(spawned.enforcement.nofile, Mechanism::Rlimit);
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_cgroup_oom_kills_the_worker_and_says_so() {
        let dir = scratch("oom");
        let caps = probe::probe(&instance("oom"));
        let plan = SandboxPlan::build(&caps, "oom-1", limits(Some(32 << 20), None, None), None);
        let py = python();
        let script = "import os\nos.write(4, b'started\\n')\nx = b'x' * (100 << 20)\nos.write(4, b'survived\\n')\n";
        let mut spawned = spawn(&spec(&py, &["-c", script], &dir, plan)).unwrap();
        if !caps.cgroup.memory.available {
            // No memory cgroup here: the limit is left to the supervisor's polling.
            eprintln!(
                "memory cgroup unavailable ({:?}): checking the fallback report",
                caps.cgroup.memory.reason
            );
            assert_eq!(spawned.enforcement.memory, Mechanism::None);
            assert!(spawned.cgroup.is_none());
            let _ = read_lines(&mut spawned, 2);
            let _ = wait(spawned.pid);
            finish(&caps, &dir);
            return;
        }
        assert_eq!(spawned.enforcement.memory, Mechanism::Cgroup);
        let cg = spawned.cgroup.take().expect("a cgroup");
        assert!(cg.has(Controller::Memory));
        let out = read_lines(&mut spawned, 2);
        assert_eq!(out, "started\n", "the allocation must not succeed");
        assert_eq!(wait(spawned.pid), sys::ExitKind::Signal(libc::SIGKILL));
        assert!(cg.oom_killed(), "oom_killed() after an OOM kill");
        remove_cgroup(Some(cg));
        finish(&caps, &dir);
    }

    #[test]
    fn a_worker_within_its_memory_limit_is_not_reported_as_oom_killed() {
        let dir = scratch("nooom");
        let caps = probe::probe(&instance("nooom"));
        if !caps.cgroup.memory.available {
            eprintln!("memory cgroup unavailable: {:?}", caps.cgroup.memory.reason);
            finish(&caps, &dir);
            return;
        }
        let plan = SandboxPlan::build(&caps, "ok-1", limits(Some(64 << 20), None, None), None);
        let sh = find_on_path("sh").unwrap();
        let mut spawned = spawn(&spec(&sh, &["-c", "echo ok >&4"], &dir, plan)).unwrap();
        assert_eq!(read_lines(&mut spawned, 1), "ok\n");
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0));
        let cg = spawned.cgroup.take().unwrap();
        assert!(!cg.oom_killed());
        remove_cgroup(Some(cg));
        finish(&caps, &dir);
    }

    #[test]
    fn pids_limit_stops_a_fork_loop() {
        let dir = scratch("pids");
        let caps = probe::probe(&instance("pids"));
        let plan = SandboxPlan::build(&caps, "pids-1", limits(None, Some(16), None), None);
        let py = python();
        // Fork sleepers (which close fd 4 at once) until fork fails; report count and errno.
        let script = r#"
import os, time
n = 0
err = 0
for i in range(64):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(4)
        time.sleep(30)
        os._exit(0)
    n += 1
os.write(4, ('%d %d\n' % (n, err)).encode())
"#;
        let mut spawned = spawn(&spec(&py, &["-c", script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 1);
        let mut words = out.split_whitespace().map(|w| w.parse::<i32>().unwrap());
        let (n, err) = (words.next().unwrap(), words.next().unwrap());
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0));
        if caps.cgroup.pids.available {
            assert_eq!(spawned.enforcement.pids, Mechanism::Cgroup);
            assert!(n < 16, "forks: {n}");
            assert_eq!(err, libc::EAGAIN, "{out}");
            // Removing the cgroup kills the orphaned sleepers it still holds.
            let cg = spawned.cgroup.take().unwrap();
            assert!(!cg.pids().is_empty(), "the sleepers are in the cgroup");
            remove_cgroup(Some(cg));
        } else if caps.euid != 0 {
            eprintln!("pids cgroup unavailable: RLIMIT_NPROC fallback");
            assert_eq!(spawned.enforcement.pids, Mechanism::Rlimit);
            assert_eq!(err, libc::EAGAIN, "{out}");
        } else {
            // Root ignores RLIMIT_NPROC: the report must say so rather than claim a limit.
            eprintln!("pids cgroup unavailable and root: pids reported as none");
            assert_eq!(spawned.enforcement.pids, Mechanism::None);
        }
        finish(&caps, &dir);
    }

    #[test]
    fn cpu_quota_is_written_when_a_cpu_cgroup_exists() {
        let dir = scratch("cpu");
        let caps = probe::probe(&instance("cpu"));
        let l = WorkerLimits {
            cpu: Some(0.25),
            ..WorkerLimits::default()
        };
        let plan = SandboxPlan::build(&caps, "cpu-1", l, None);
        let sh = find_on_path("sh").unwrap();
        let mut spawned = spawn(&spec(&sh, &["-c", "echo ok >&4"], &dir, plan)).unwrap();
        assert_eq!(read_lines(&mut spawned, 1), "ok\n");
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0));
        if !caps.cgroup.cpu.available {
            eprintln!("cpu cgroup unavailable: {:?}", caps.cgroup.cpu.reason);
            assert_eq!(spawned.enforcement.cpu, Mechanism::None);
            finish(&caps, &dir);
            return;
        }
        assert_eq!(spawned.enforcement.cpu, Mechanism::Cgroup);
        let cg = spawned.cgroup.take().unwrap();
        let d = cg.paths().next().unwrap().to_path_buf();
        let quota = match caps.cgroup.cpu.version {
            Some(Version::V2) => std::fs::read_to_string(d.join("cpu.max")).unwrap(),
            _ => std::fs::read_to_string(d.join("cpu.cfs_quota_us")).unwrap(),
        };
        assert!(quota.starts_with("25000"), "quota: {quota}");
        remove_cgroup(Some(cg));
        finish(&caps, &dir);
    }

    #[test]
    fn seccomp_denies_listed_syscalls_with_eperm() {
        let dir = scratch("seccomp");
        let caps = probe::probe(&instance("seccomp"));
        let iso = Isolation {
            seccomp: true,
            ..Isolation::default()
        };
        let plan = SandboxPlan::build(&caps, "sc-1", WorkerLimits::default(), Some(&iso));
        let py = python();
        // unshare(CLONE_NEWUTS) and ptrace(PTRACE_TRACEME) succeed for root without the filter.
        let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r1 = libc.unshare(0x04000000); e1 = ctypes.get_errno()
r2 = libc.ptrace(0, 0, 0, 0); e2 = ctypes.get_errno()
mode = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]
os.write(4, ('%d %d %d %d %s %d\n' % (r1, e1, r2, e2, mode, os.getpid() > 0)).encode())
"#;
        let mut spawned = spawn(&spec(&py, &["-c", script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 1);
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0), "{out}");
        if !caps.seccomp.available {
            eprintln!("seccomp unavailable: {:?}", caps.seccomp.reason);
            assert!(matches!(spawned.enforcement.seccomp, Applied::Skipped(_)));
            finish(&caps, &dir);
            return;
        }
        assert_eq!(spawned.enforcement.seccomp, Applied::Applied);
        assert_eq!(
            out, "-1 1 -1 1 2 1\n",
            "unshare and ptrace fail with EPERM under the filter"
        );
        finish(&caps, &dir);
    }

    #[test]
    fn namespaces_give_pid_1_a_private_tmp_and_a_read_only_code_dir() {
        let dir = scratch("ns");
        std::fs::write(dir.join("handler.js"), "code").unwrap();
        std::fs::set_permissions(
            dir.join("handler.js"),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
        )
        .unwrap();
        let caps = probe::probe(&instance("ns"));
        let nobody = resolve_user("nobody").ok();
        let iso = Isolation::full(nobody, Vec::new());
        let plan = SandboxPlan::build(
            &caps,
            "ns-1",
            limits(Some(64 << 20), Some(32), Some(128)),
            Some(&iso),
        );
        let marker = format!("noslate-ns-marker-{}", std::process::id());
        let sh = find_on_path("sh").unwrap();
        let script = format!(
            "{{ echo $$; id -u; cat handler.js; echo; \
             if touch ./w 2>/dev/null; then echo code=rw; else echo code=ro; fi; \
             if echo x > /tmp/{marker}; then echo tmp=rw; else echo tmp=ro; fi; \
             ls /proc | grep -c '^[0-9]'; }} >&4; echo to-stdout; echo to-stderr >&2"
        );
        let mut spawned = spawn(&spec(&sh, &["-c", &script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 7);
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0), "{out}");
        let cg = spawned.cgroup.take();
        if !caps.namespaces.available {
            eprintln!("namespaces unavailable: {:?}", caps.namespaces.reason);
            assert!(matches!(
                spawned.enforcement.namespaces,
                Applied::Skipped(_)
            ));
            remove_cgroup(cg);
            finish(&caps, &dir);
            return;
        }
        assert_eq!(spawned.enforcement.namespaces, Applied::Applied);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "1", "the worker is pid 1: {out}");
        if caps.setuid.available && nobody.is_some() {
            assert_eq!(spawned.enforcement.user, Applied::Applied);
            assert_eq!(lines[1], "65534", "{out}");
        } else {
            assert!(matches!(spawned.enforcement.user, Applied::Skipped(_)));
        }
        assert_eq!(lines[2], "code", "the code dir is visible: {out}");
        assert_eq!(lines[3], "code=ro", "{out}");
        assert_eq!(lines[4], "tmp=rw", "{out}");
        let visible: u32 = lines[5].parse().unwrap();
        assert!(
            visible <= 4,
            "only the namespace's processes in /proc: {out}"
        );
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "the private /tmp is not the host's"
        );
        assert!(!dir.join("w").exists());
        let log = |name: &str| std::fs::read_to_string(dir.join("logs").join(name)).unwrap();
        assert_eq!(log("stdout"), "to-stdout\n");
        assert_eq!(log("stderr"), "to-stderr\n");
        remove_cgroup(cg);
        finish(&caps, &dir);
    }

    #[test]
    fn node_runs_under_every_limit_and_all_isolation() {
        let dir = scratch("node");
        let caps = probe::probe(&instance("node"));
        let node = find_on_path("node").expect("node is installed");
        let iso = Isolation::full(resolve_user("nobody").ok(), Vec::new());
        let l = WorkerLimits {
            memory: Some(256 << 20),
            cpu: Some(1.0),
            pids: Some(64),
            nofile: Some(256),
        };
        let plan = SandboxPlan::build(&caps, "node-1", l, Some(&iso));
        // Threads, a child process, timers and file I/O: what a bootstrap needs.
        let script = r#"
const fs = require('fs');
const cp = require('child_process');
fs.writeFileSync('/tmp/x', 'y');
const child = cp.spawnSync('sh', ['-c', 'echo hi']).stdout.toString().trim();
setTimeout(() => fs.writeSync(4, `${process.pid} ${child} ${fs.readFileSync('/tmp/x')}\n`), 10);
"#;
        let mut spawned = spawn(&spec(&node, &["-e", script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 1);
        let exit = wait(spawned.pid);
        let stderr = std::fs::read_to_string(dir.join("logs/stderr")).unwrap_or_default();
        assert_eq!(exit, sys::ExitKind::Code(0), "{out} {stderr}");
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words[1..], ["hi", "y"], "{out} {stderr}");
        let e = &spawned.enforcement;
        eprintln!("node enforcement: {}", e.summary());
        if caps.namespaces.available {
            assert_eq!(words[0], "1", "{out}");
        }
        assert_eq!(e.seccomp.is_applied(), caps.seccomp.available);
        remove_cgroup(spawned.cgroup.take());
        finish(&caps, &dir);
    }

    #[test]
    fn pid_1_in_a_namespace_ignores_sigterm_but_not_sigkill() {
        let dir = scratch("pid1");
        let caps = probe::probe(&instance("pid1"));
        if !caps.namespaces.available {
            eprintln!("namespaces unavailable: {:?}", caps.namespaces.reason);
            finish(&caps, &dir);
            return;
        }
        let iso = Isolation {
            namespaces: true,
            ..Isolation::default()
        };
        let plan = SandboxPlan::build(&caps, "pid1-1", WorkerLimits::default(), Some(&iso));
        let sh = find_on_path("sh").unwrap();
        let mut spawned = spawn(&spec(
            &sh,
            &["-c", "echo up >&4; exec sleep 30"],
            &dir,
            plan,
        ))
        .unwrap();
        assert_eq!(read_lines(&mut spawned, 1), "up\n");
        kill(spawned.pid, libc::SIGTERM);
        assert_eq!(
            wait_timeout(spawned.pid, Duration::from_millis(200)),
            None,
            "PID 1 without a SIGTERM handler ignores SIGTERM from outside"
        );
        kill(spawned.pid, libc::SIGKILL);
        assert_eq!(
            wait_timeout(spawned.pid, Duration::from_secs(5)),
            Some(sys::ExitKind::Signal(libc::SIGKILL))
        );
        finish(&caps, &dir);
    }

    #[test]
    fn failures_name_the_step_or_the_program_and_leave_no_cgroup() {
        let dir = scratch("fail");
        let caps = probe::probe(&instance("fail"));
        let sh = find_on_path("sh").unwrap();
        // Above the kernel's nr_open: setrlimit fails even for root.
        let too_many = limits(Some(32 << 20), None, Some(1 << 40));
        let plain = SandboxPlan::build(&caps, "fail-1", too_many, None);
        let err = spawn(&spec(&sh, &["-c", "true"], &dir, plain)).unwrap_err();
        assert!(
            matches!(
                err,
                SpawnError::Sandbox {
                    step: "setrlimit(RLIMIT_NOFILE)",
                    ..
                }
            ),
            "{err}"
        );
        let missing = Path::new("/nonexistent/program");
        let err = spawn(&spec(
            missing,
            &[],
            &dir,
            SandboxPlan::build(&caps, "fail-2", WorkerLimits::default(), None),
        ))
        .unwrap_err();
        assert!(
            matches!(&err, SpawnError::Exec { program, .. } if program == missing),
            "{err}"
        );
        let gone = dir.join("no-such-dir");
        let err = spawn(&spec(&sh, &[], &gone, SandboxPlan::default())).unwrap_err();
        assert!(matches!(err, SpawnError::Cwd { .. }), "{err}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        if caps.namespaces.available {
            let iso = Isolation {
                namespaces: true,
                ..Isolation::default()
            };
            let plan = SandboxPlan::build(&caps, "fail-3", too_many, Some(&iso));
            let err = spawn(&spec(&sh, &["-c", "true"], &dir, plan)).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpawnError::Sandbox {
                        step: "setrlimit(RLIMIT_NOFILE)",
                        ..
                    }
                ),
                "{err}"
            );
            let plan = SandboxPlan::build(&caps, "fail-4", WorkerLimits::default(), Some(&iso));
            let err = spawn(&spec(missing, &[], &dir, plan)).unwrap_err();
            assert!(matches!(err, SpawnError::Exec { .. }), "{err}");
            assert_eq!(
                match &err {
                    SpawnError::Exec { source, .. } => source.raw_os_error(),
                    _ => None,
                },
                Some(libc::ENOENT)
            );
        }
        // No cgroup of a failed start is left behind.
        if let Some(inst) = &caps.cgroup.memory.path {
            for w in ["fail-1", "fail-2", "fail-3", "fail-4"] {
                assert!(!inst.join(w).exists(), "{w}");
            }
        }
        finish(&caps, &dir);
    }

    #[test]
    fn stale_instances_are_cleaned_up_and_live_ones_kept() {
        let caps = probe::probe(&instance("stale"));
        let Some(inst) = caps.cgroup.pids.path.clone() else {
            eprintln!("pids cgroup unavailable: {:?}", caps.cgroup.pids.reason);
            let report = cgroup::cleanup_stale(&caps);
            assert!(report.removed.is_empty());
            return;
        };
        let parent = inst.parent().unwrap().to_path_buf();
        // A dead runtime's instance (pids above pid_max never run), holding a worker cgroup.
        let dead = parent.join("rt-2147483646-stale");
        let mut fake = caps.cgroup.clone();
        fake.pids.path = Some(dead.clone());
        let plan = CgroupPlan::new(&fake, "w-1", None, None, Some(8));
        let cg = WorkerCgroup::create(&plan).unwrap();
        assert!(dead.join("w-1").is_dir());
        // Our own live instance (another name for this pid) must survive.
        let live = parent.join(instance("stale-live"));
        std::fs::create_dir_all(&live).unwrap();
        let report = cgroup::cleanup_stale(&caps);
        assert!(report.removed.contains(&dead), "{report:?}");
        assert!(!dead.exists());
        assert!(live.exists(), "a live runtime's instance is kept");
        std::fs::remove_dir(&live).unwrap();
        drop(cg);
    }

    #[test]
    fn a_worker_spawned_as_nobody_has_no_capability_and_no_group() {
        let caps = probe::probe(&instance("nocaps"));
        if !caps.setuid.available {
            eprintln!("setuid unavailable: {:?}", caps.setuid.reason);
            return;
        }
        let dir = scratch("nocaps");
        let iso = Isolation::unprivileged(Some(NOBODY_IDS), None);
        let plan = SandboxPlan::build(&caps, "nocaps-1", WorkerLimits::default(), Some(&iso));
        let sh = find_on_path("sh").unwrap();
        let script = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' \
                      /proc/self/status | tr -s ' \t' ' ' >&4";
        let mut spawned = spawn(&spec(&sh, &["-c", script], &dir, plan)).unwrap();
        let out = read_lines(&mut spawned, 9);
        assert_eq!(wait(spawned.pid), sys::ExitKind::Code(0), "{out}");
        for line in [
            "Uid: 65534 65534 65534 65534",
            "Gid: 65534 65534 65534 65534",
            "CapInh: 0000000000000000",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1",
        ] {
            assert!(out.lines().any(|l| l.trim_end() == line), "{line}: {out}");
        }
        assert!(
            out.lines().any(|l| l.trim_end() == "Groups:"),
            "no supplementary group: {out}"
        );
        if caps.bounding.available {
            assert!(out.contains("CapBnd: 0000000000000000"), "{out}");
            assert_eq!(spawned.enforcement.caps, Applied::Applied);
        }
        remove_cgroup(spawned.cgroup.take());
        finish(&caps, &dir);
    }
}
