//! Keeping workers away from the runtime and from each other's files, by default.
//!
//! When the runtime is root and may switch users, every process it spawns through turf (cold
//! workers, warm seeds and the workers they fork, spare workers) runs as `turf.user` (default
//! `nobody`, or 65534:65534 where no such user exists) with no supplementary group, no
//! capability and `no_new_privs`. The kernel then refuses the worker:
//!
//! - signalling the runtime (`kill(2)` needs a matching uid or `CAP_KILL`);
//! - reading `/proc/<runtime>/environ` or `/proc/<runtime>/fd` (the ptrace access check needs a
//!   matching uid or `CAP_SYS_PTRACE`);
//! - connecting to the admin socket (mode 0600, owned by the runtime; connecting needs write
//!   permission on the socket file);
//! - opening other workers' log files (0600 in 0700 directories, owned by the runtime; each
//!   worker writes its own through descriptors the runtime opened);
//! - writing function code that the worker's user does not own.
//!
//! This module decides the worker user ([`worker_user`]), tightens the runtime's own files at
//! start-up ([`harden`]), and checks every guarantee for real ([`check`]): a child of the
//! runtime drops to the worker's credentials exactly as a worker does and tries each of the
//! above (`sys::sandbox::probe_worker_view`). `noslate serve --probe` prints the result, and
//! start-up logs a warning for each guarantee that does not hold.
//!
//! Not covered: workers of different functions share the worker user, so they can signal or
//! inspect each other's processes; a worker can read any function's code that is readable by
//! others. `turf.isolation` adds PID namespaces (other processes are invisible), a read-only
//! code directory, a private `/tmp` and seccomp.

use crate::sys::sandbox::{self as sb, ChildSetup, WorkerView};
use crate::turf::plan::{self, Credentials, Isolation};
use crate::turf::probe::{Capabilities, Feature};
use crate::turf::spawn;
use serde::Serialize;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The user workers run as, or why they keep the runtime's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUser {
    /// The credentials to switch to.
    pub credentials: Option<Credentials>,
    /// Why there are none.
    pub reason: Option<String>,
}

/// Decides the worker user from `turf.user` (`spec`): switching needs the runtime to be root
/// with `CAP_SETUID`/`CAP_SETGID` (`setuid`), and a user other than the runtime's own. An
/// unknown user is an error only when the switch is possible.
pub fn worker_user(spec: &str, setuid: &Feature, euid: u32) -> Result<WorkerUser, String> {
    if !setuid.available {
        return Ok(WorkerUser {
            credentials: None,
            reason: Some(format!(
                "workers keep the runtime's user: {}",
                setuid.reason()
            )),
        });
    }
    let creds = plan::resolve_user(spec).map_err(|e| format!("turf.user {spec:?}: {e}"))?;
    if creds.uid == euid {
        return Ok(WorkerUser {
            credentials: None,
            reason: Some(format!(
                "turf.user {spec:?} is the runtime's own user (uid {euid})"
            )),
        });
    }
    Ok(WorkerUser {
        credentials: Some(creds),
        reason: None,
    })
}

/// Whether a user (`uid`, primary group `gid`, no supplementary group, no capability) may
/// write a file of `mode` owned by `owner:group`. Access control lists are not considered.
pub fn may_write(mode: u32, owner: u32, group: u32, uid: u32, gid: u32) -> bool {
    permitted(mode, owner, group, uid, gid, 0o2)
}

/// Like [`may_write`], for execute (search, on a directory) permission.
pub fn may_exec(mode: u32, owner: u32, group: u32, uid: u32, gid: u32) -> bool {
    permitted(mode, owner, group, uid, gid, 0o1)
}

fn permitted(mode: u32, owner: u32, group: u32, uid: u32, gid: u32, bit: u32) -> bool {
    let shift = if owner == uid {
        6
    } else if group == gid {
        3
    } else {
        0
    };
    mode & (bit << shift) != 0
}

fn writable_by(meta: &std::fs::Metadata, c: Credentials) -> bool {
    may_write(meta.mode(), meta.uid(), meta.gid(), c.uid, c.gid)
}

/// Whether `c` can execute `path`: every directory on its canonical path is searchable, and the
/// file itself executable, for that user.
pub fn executable_by(path: &Path, c: Credentials) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    real.ancestors().all(|p| {
        std::fs::metadata(p).is_ok_and(|m| may_exec(m.mode(), m.uid(), m.gid(), c.uid, c.gid))
    })
}

/// The worker user as the runtime would choose it now (the cheap part of the probe: no fork),
/// for choosing interpreters that user can run.
pub fn current_worker_credentials(spec: &str) -> Option<Credentials> {
    let euid = sb::geteuid();
    worker_user(spec, &crate::turf::probe::probe_setuid(euid), euid)
        .ok()
        .and_then(|u| u.credentials)
}

/// Strips `bits` from the mode of `dir` when the runtime owns it; otherwise says why it may be
/// unsafe when `c` (the worker user) could write it.
fn tighten_dir(dir: &Path, bits: u32, c: Option<Credentials>, what: &str) -> Option<String> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("{what} {}: {e}", dir.display())),
    };
    if meta.uid() == sb::geteuid() {
        let mode = meta.mode() & 0o7777;
        if mode & bits != 0
            && let Err(e) =
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !bits))
        {
            return Some(format!("cannot chmod {what} {}: {e}", dir.display()));
        }
        return None;
    }
    match c {
        Some(c) if writable_by(&meta, c) => Some(format!(
            "{what} {} is owned by uid {} and writable by the worker user (uid {})",
            dir.display(),
            meta.uid(),
            c.uid
        )),
        _ => None,
    }
}

/// Name of the accounting file in the log directory (`turf::accounting`).
const RESOURCE_USAGE_LOG: &str = "resource_usage.log";

/// Start-up: makes everything the runtime creates from now on unwritable by others (umask
/// 022 at least), removes group and other write permission from the work directory, the
/// bootstraps' directory and the log directory (when the runtime owns them), and makes the
/// accounting log 0600. Returns a warning per directory that stays writable by the worker user.
pub fn harden(workdir: &Path, logdir: &Path, worker: Option<Credentials>) -> Vec<String> {
    sb::tighten_umask(0o022);
    let mut warnings = Vec::new();
    warnings.extend(tighten_dir(workdir, 0o022, worker, "work directory"));
    warnings.extend(let_worker_through(workdir, worker));
    let runtime_dir = workdir.join("runtime");
    if runtime_dir.is_dir() {
        // Bootstraps written by a runtime that ran with a looser umask.
        let entries = walk(&runtime_dir, 1024);
        for path in std::iter::once(runtime_dir.clone()).chain(entries) {
            warnings.extend(tighten_dir_or_file(&path, worker));
        }
    }
    warnings.extend(tighten_dir(logdir, 0o022, worker, "log directory"));
    let usage = logdir.join(RESOURCE_USAGE_LOG);
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(spawn::LOG_FILE_MODE)
            .open(&usage)
    };
    if let Err(e) = opened
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(spawn::LOG_FILE_MODE)))
    {
        warnings.push(format!("cannot make {} private: {e}", usage.display()));
    }
    warnings
}

/// Workers load their bootstraps from the work directory: a private one (say, from `mktemp
/// -d`, mode 0700) would stop every worker at start. When the runtime owns it, the directory
/// gets search permission for others (0711-style: entries can be opened by name, not listed);
/// otherwise a directory on the way that the worker user cannot search is reported.
fn let_worker_through(workdir: &Path, worker: Option<Credentials>) -> Option<String> {
    let c = worker?;
    let meta = std::fs::metadata(workdir).ok()?;
    let mode = meta.mode() & 0o7777;
    if meta.uid() == sb::geteuid()
        && !may_exec(mode, meta.uid(), meta.gid(), c.uid, c.gid)
        && let Err(e) =
            std::fs::set_permissions(workdir, std::fs::Permissions::from_mode(mode | 0o001))
    {
        return Some(format!(
            "cannot let the worker user search the work directory {}: {e}",
            workdir.display()
        ));
    }
    let blocked = std::fs::canonicalize(workdir)
        .ok()?
        .ancestors()
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| !may_exec(m.mode(), m.uid(), m.gid(), c.uid, c.gid))
        })?
        .to_path_buf();
    Some(format!(
        "the worker user (uid {}) cannot search {}, on the way to the bootstraps in {}: workers \
         will fail to start; choose a NOSLATE_WORKDIR it can reach",
        c.uid,
        blocked.display(),
        workdir.display()
    ))
}

fn tighten_dir_or_file(path: &Path, worker: Option<Credentials>) -> Option<String> {
    tighten_dir(path, 0o022, worker, "runtime file")
}

/// Up to `limit` paths below `dir` (files and directories, not following symlinks).
fn walk(dir: &Path, limit: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if out.len() >= limit {
                return out;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| !t.is_symlink()) {
                out.push(path);
            }
        }
    }
    out
}

/// Why a function's code directory may be modified by the worker user, if it may: the user
/// owns it (and could chmod it), or may write it.
pub fn code_dir_problem(dir: &Path, c: Credentials) -> Option<String> {
    let meta = std::fs::metadata(dir).ok()?;
    if meta.uid() == c.uid {
        return Some(format!(
            "code directory {} is owned by the worker user (uid {})",
            dir.display(),
            c.uid
        ));
    }
    writable_by(&meta, c).then(|| {
        format!(
            "code directory {} is writable by the worker user (uid {}, mode {:o})",
            dir.display(),
            c.uid,
            meta.mode() & 0o7777
        )
    })
}

/// Binds a Unix socket at `path` that only the runtime's user can connect to: created under a
/// umask of 077 (so it is never connectable by others, not even before the chmod) and then set
/// to mode 0600.
pub fn bind_private_socket(path: &Path) -> io::Result<mio::net::UnixListener> {
    let old = sb::set_umask(0o077);
    let bound = mio::net::UnixListener::bind(path);
    sb::set_umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// One guarantee: enforced, or not and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guarantee {
    /// Whether it holds on this machine with this configuration.
    pub enforced: bool,
    /// What was checked, or why it does not hold.
    pub reason: String,
}

impl Guarantee {
    fn new(enforced: bool, yes: impl Into<String>, no: impl Into<String>) -> Guarantee {
        Guarantee {
            enforced,
            reason: if enforced { yes.into() } else { no.into() },
        }
    }
}

/// What a worker cannot do to the runtime and to other functions, as checked by a child that
/// drops to the worker's credentials.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Guarantees {
    /// The worker user.
    pub worker_uid: Option<u32>,
    /// Workers run with another uid than the runtime.
    pub worker_uid_differs: Guarantee,
    /// Workers have no capability (bounding, ambient, effective, permitted, inheritable).
    pub caps_dropped: Guarantee,
    /// Workers cannot connect to the admin socket.
    pub admin_socket_unreachable: Guarantee,
    /// Workers cannot open `/proc/<runtime>/environ` nor `/proc/<runtime>/fd`.
    pub runtime_proc_unreadable: Guarantee,
    /// Workers cannot signal the runtime.
    pub cannot_signal_runtime: Guarantee,
    /// Workers cannot read other workers' log files.
    pub logs_private: Guarantee,
    /// Workers cannot write the functions' code directories.
    pub code_not_writable: Guarantee,
}

impl Guarantees {
    /// The guarantees that do not hold, one line each.
    pub fn not_enforced(&self) -> Vec<String> {
        [
            ("worker uid differs", &self.worker_uid_differs),
            ("capabilities dropped", &self.caps_dropped),
            ("admin socket unreachable", &self.admin_socket_unreachable),
            ("runtime /proc unreadable", &self.runtime_proc_unreadable),
            ("cannot signal the runtime", &self.cannot_signal_runtime),
            ("logs private", &self.logs_private),
            ("code not writable", &self.code_not_writable),
        ]
        .into_iter()
        .filter(|(_, g)| !g.enforced)
        .map(|(name, g)| format!("{name}: not enforced ({})", g.reason))
        .collect()
    }
}

/// What [`check`] works on.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// The probe's result.
    pub caps: &'a Capabilities,
    /// The worker user.
    pub user: &'a WorkerUser,
    /// `NOSLATE_WORKDIR` (where the admin socket lives).
    pub workdir: &'a Path,
    /// `NOSLATE_LOGDIR`.
    pub logdir: &'a Path,
    /// Worker output goes to the runtime's console (`logger.workerOutput: console`): no files.
    pub console_output: bool,
    /// The functions' code directories.
    pub code_dirs: &'a [PathBuf],
}

/// Checks every guarantee for real: binds a private socket in the work directory and creates a
/// log file in the log directory the way the runtime does for the admin socket and for worker
/// logs, then forks a child that takes the worker's credentials and tries the socket, the log
/// file, the code directories, and the calling process's signals and `/proc` entries. The
/// socket and the file are removed again.
pub fn check(input: &CheckInput<'_>) -> Guarantees {
    let pid = std::process::id();
    let socket = input.workdir.join(format!(".probe-{pid}.sock"));
    let log_dir = input.logdir.join(format!(".probe-{pid}"));
    let listener = bind_private_socket(&socket).map_err(|e| e.to_string());
    let log = spawn::open_log_files(&log_dir)
        .map(|_| log_dir.join("stdout"))
        .map_err(|e| e.to_string());
    let code: Vec<&Path> = input.code_dirs.iter().map(PathBuf::as_path).collect();
    let log_path = log.as_ref().ok().map(PathBuf::as_path);
    let setup = ChildSetup {
        credentials: input.user.credentials.map(|c| (c.uid, c.gid)),
        drop_bounding: input.caps.bounding.available,
        clear_caps: true,
        ..ChildSetup::default()
    };
    let bits = WorkerView::new(
        listener.as_ref().ok().map(|_| socket.as_path()),
        log_path.as_slice(),
        &code,
    )
    .map_err(|e| e.to_string())
    .and_then(|view| sb::probe_worker_view(&setup, &view).map_err(|f| f.to_string()));
    let socket_err = listener.as_ref().err().cloned();
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir_all(&log_dir);
    evaluate(input, bits, socket_err, log.err())
}

/// Start-up: decides the worker user, hardens the work and log directories, checks every
/// guarantee (logging a warning for each that does not hold) and returns the isolation every
/// spawned process gets: the worker user and no capabilities, plus namespaces and seccomp with
/// `turf.isolation`.
pub fn worker_isolation(
    config: &crate::config::SystemConfig,
    caps: &Capabilities,
    workdir: &Path,
    logdir: &Path,
    code_dirs: &[PathBuf],
) -> Result<Isolation, String> {
    let user = worker_user(&config.turf.user, &caps.setuid, caps.euid)?;
    for warning in harden(workdir, logdir, user.credentials) {
        log::warn!("[turf] {warning}");
    }
    let guarantees = check(&CheckInput {
        caps,
        user: &user,
        workdir,
        logdir,
        console_output: config.logger.worker_output_to_console,
        code_dirs,
    });
    match user.credentials {
        Some(c) => log::info!(
            "[turf] workers run as uid {} gid {} (turf.user {:?}) without capabilities",
            c.uid,
            c.gid,
            config.turf.user
        ),
        None => log::warn!(
            "[turf] workers run as the runtime's own user: {}",
            user.reason.as_deref().unwrap_or("no worker user")
        ),
    }
    for line in guarantees.not_enforced() {
        log::warn!("[turf] {line}");
    }
    Ok(if config.turf.isolation {
        // The bootstraps live in the work directory; isolated workers must still see them.
        let mut iso = Isolation::full(user.credentials, vec![workdir.join("runtime")]);
        iso.no_user_reason = user.reason;
        iso
    } else {
        Isolation::unprivileged(user.credentials, user.reason)
    })
}

/// [`check`] for `noslate serve --probe`: the worker user `serve` would choose (an unknown
/// `turf.user` leaves workers with the runtime's user, and says so), without changing any
/// directory's mode.
pub fn report(
    caps: &Capabilities,
    config: &crate::config::SystemConfig,
    workdir: &Path,
    logdir: &Path,
    code_dirs: &[PathBuf],
) -> Guarantees {
    let user =
        worker_user(&config.turf.user, &caps.setuid, caps.euid).unwrap_or_else(|e| WorkerUser {
            credentials: None,
            reason: Some(e),
        });
    let old = sb::tighten_umask(0o022);
    let guarantees = check(&CheckInput {
        caps,
        user: &user,
        workdir,
        logdir,
        console_output: config.logger.worker_output_to_console,
        code_dirs,
    });
    sb::set_umask(old);
    guarantees
}

/// Turns the child's `VIEW_*` bits (what the worker managed) into guarantees.
fn evaluate(
    input: &CheckInput<'_>,
    bits: Result<u32, String>,
    socket_err: Option<String>,
    log_err: Option<String>,
) -> Guarantees {
    let creds = input.user.credentials;
    let worker_uid = creds.map(|c| c.uid);
    let b = match bits {
        Ok(b) => b,
        Err(e) => {
            let g = Guarantee::new(false, "", format!("the check could not run: {e}"));
            return Guarantees {
                worker_uid,
                worker_uid_differs: g.clone(),
                caps_dropped: g.clone(),
                admin_socket_unreachable: g.clone(),
                runtime_proc_unreadable: g.clone(),
                cannot_signal_runtime: g.clone(),
                logs_private: g.clone(),
                code_not_writable: g,
            };
        }
    };
    let has = |bit: u32| b & bit != 0;
    let euid = input.caps.euid;
    let who = match creds {
        Some(c) => format!("workers run as uid {} (the runtime as uid {euid})", c.uid),
        None => format!("workers run as the runtime's uid {euid}"),
    };
    let user_reason = input
        .user
        .reason
        .clone()
        .unwrap_or_else(|| "workers keep the runtime's user".into());
    let open_to_worker = |dir: &Path| {
        creds.is_some_and(|c| std::fs::metadata(dir).is_ok_and(|m| writable_by(&m, c)))
    };

    let worker_uid_differs = Guarantee::new(!has(sb::VIEW_SAME_UID), &who, &user_reason);
    let caps_dropped = Guarantee::new(
        !has(sb::VIEW_HAS_CAPS) && !has(sb::VIEW_HAS_BOUNDING),
        "no capability in any set, the bounding set included",
        if has(sb::VIEW_HAS_CAPS) {
            "a worker keeps capabilities".to_owned()
        } else {
            format!(
                "the bounding set is kept ({}); the other sets are empty and no_new_privs is                  set",
                input.caps.bounding.reason()
            )
        },
    );
    let admin_socket_unreachable = match socket_err {
        Some(e) => Guarantee::new(
            false,
            "",
            format!(
                "cannot create a test socket in {}: {e}",
                input.workdir.display()
            ),
        ),
        None if has(sb::VIEW_CONNECT) => {
            Guarantee::new(false, "", format!("a worker can connect: {user_reason}"))
        }
        None if open_to_worker(input.workdir) => Guarantee::new(
            false,
            "",
            format!(
                "the work directory {} is writable by the worker user, who could replace the                  socket",
                input.workdir.display()
            ),
        ),
        None => Guarantee::new(
            true,
            format!("the socket is 0600 and owned by uid {euid}; {who}"),
            "",
        ),
    };
    let runtime_proc_unreadable = Guarantee::new(
        !has(sb::VIEW_READ_ENVIRON) && !has(sb::VIEW_LIST_FDS),
        format!("the ptrace access check refuses /proc/<runtime>/environ and fd: {who}"),
        format!("a worker can open /proc/<runtime>/environ or fd: {user_reason}"),
    );
    let cannot_signal_runtime = Guarantee::new(
        !has(sb::VIEW_SIGNAL_PARENT),
        format!("kill(2) is refused: {who} and without CAP_KILL"),
        format!("a worker can signal the runtime: {user_reason}"),
    );
    let logs_private = if input.console_output {
        Guarantee::new(
            true,
            "worker output goes to the runtime's stdout/stderr (logger.workerOutput: console):              there are no log files",
            "",
        )
    } else if let Some(e) = log_err {
        Guarantee::new(
            false,
            "",
            format!(
                "cannot create a test log in {}: {e}",
                input.logdir.display()
            ),
        )
    } else if has(sb::VIEW_READ_FILE) {
        Guarantee::new(
            false,
            "",
            format!("a worker can open another worker's log file: {user_reason}"),
        )
    } else if open_to_worker(input.logdir) {
        Guarantee::new(
            false,
            "",
            format!(
                "the log directory {} is writable by the worker user",
                input.logdir.display()
            ),
        )
    } else {
        Guarantee::new(
            true,
            format!("log files are 0600 in 0700 directories owned by uid {euid}; {who}"),
            "",
        )
    };
    let problems: Vec<String> = match creds {
        Some(c) => input
            .code_dirs
            .iter()
            .filter_map(|d| code_dir_problem(d, c))
            .collect(),
        None => Vec::new(),
    };
    let code_not_writable = if input.code_dirs.is_empty() {
        Guarantee::new(
            false,
            "",
            "not checked: no function profiles (pass --functions or set NOSLATE_FUNCTIONS)",
        )
    } else if !problems.is_empty() {
        Guarantee::new(false, "", problems.join("; "))
    } else {
        Guarantee::new(
            !has(sb::VIEW_WRITE_DIR),
            format!(
                "no code directory ({}) is writable by the worker user or owned by it",
                input.code_dirs.len()
            ),
            format!("a worker can write a code directory: {user_reason}"),
        )
    };
    Guarantees {
        worker_uid,
        worker_uid_differs,
        caps_dropped,
        admin_socket_unreachable,
        runtime_proc_unreadable,
        cannot_signal_runtime,
        logs_private,
        code_not_writable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("noslate-priv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["work", "logs", "code"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    #[test]
    fn the_check_finds_every_guarantee_as_the_worker_user_and_none_as_the_runtime_user() {
        let caps = crate::turf::probe::probe(&format!("rt-{}-priv", std::process::id()));
        let dir = scratch("check");
        let code = vec![dir.join("code")];
        let run = |user: &WorkerUser| {
            check(&CheckInput {
                caps: &caps,
                user,
                workdir: &dir.join("work"),
                logdir: &dir.join("logs"),
                console_output: false,
                code_dirs: &code,
            })
        };
        let same = WorkerUser {
            credentials: None,
            reason: Some("kept on purpose".into()),
        };
        let g = run(&same);
        assert!(!g.worker_uid_differs.enforced);
        assert_eq!(g.worker_uid_differs.reason, "kept on purpose");
        assert!(!g.cannot_signal_runtime.enforced, "same uid: {g:?}");
        assert!(g.not_enforced().len() >= 2, "{g:?}");
        if caps.setuid.available {
            let nobody = worker_user("nobody", &caps.setuid, caps.euid).unwrap();
            let g = run(&nobody);
            assert!(
                g.not_enforced().is_empty() || !caps.bounding.available,
                "{g:?}"
            );
            assert!(g.worker_uid_differs.enforced && g.cannot_signal_runtime.enforced);
            assert!(g.admin_socket_unreachable.enforced && g.logs_private.enforced);
            assert!(g.runtime_proc_unreadable.enforced && g.code_not_writable.enforced);

            // A code directory others may write is reported, not silently accepted.
            let open = dir.join("code");
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
            let g = run(&nobody);
            assert!(!g.code_not_writable.enforced, "{g:?}");
            assert!(g.code_not_writable.reason.contains("writable"), "{g:?}");
        }
        // The check leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.join("work")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.join("logs")).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_worker_user_is_never_the_runtimes_and_needs_setuid() {
        let no = Feature::no("the runtime is not root (euid 1000)");
        let u = worker_user("nobody", &no, 1000).unwrap();
        assert_eq!(u.credentials, None);
        assert!(u.reason.unwrap().contains("not root"));
        let yes = Feature::yes();
        let u = worker_user("0:0", &yes, 0).unwrap();
        assert_eq!(u.credentials, None);
        assert!(u.reason.unwrap().contains("own user"));
        let u = worker_user("4242:4243", &yes, 0).unwrap();
        assert_eq!(
            u.credentials,
            Some(Credentials {
                uid: 4242,
                gid: 4243
            })
        );
        assert!(worker_user("no-such-user-here", &yes, 0).is_err());
    }

    #[test]
    fn permissions_follow_owner_then_group_then_others() {
        // Owner bits apply to the owner even when others have more.
        assert!(!may_write(0o077, 7, 7, 7, 7));
        assert!(may_write(0o200, 7, 0, 7, 9));
        assert!(may_write(0o020, 0, 9, 7, 9));
        assert!(
            !may_write(0o020, 0, 0, 7, 9),
            "not in the group: the other bits decide"
        );
        assert!(may_write(0o002, 0, 0, 7, 9));
        assert!(may_exec(0o711, 0, 0, 65534, 65534));
        assert!(!may_exec(0o700, 0, 0, 65534, 65534));
        assert!(
            !may_exec(0o701, 0, 65534, 65534, 65534),
            "the group bits decide"
        );
    }
}
