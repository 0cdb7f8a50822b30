//! The sandbox's syscalls: rlimits, `no_new_privs`, seccomp, credentials, namespaces and mounts,
//! joining cgroups from the child, and the raw `clone` path that a new PID namespace needs.
//!
//! Everything a child runs between fork and exec is here, in two flavours that share their steps:
//!
//! - [`prepare_command`]: a `pre_exec` hook for `std::process::Command` (no namespaces). std has
//!   already set up stdio, the working directory and the signal mask when the hook runs.
//! - [`spawn_isolated`]: a raw `clone(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS)` followed
//!   by every step and `execve`, with a close-on-exec error pipe that reports the failing step
//!   and errno to the parent. std cannot create a process in a new PID namespace (`unshare` only
//!   moves the caller's *future* children), hence this path.
//!
//! The order of the steps is documented in `turf/spawn.rs`. Between fork and exec the child only
//! makes raw syscalls on data the parent prepared (C strings, pointer arrays, BPF instructions,
//! open descriptors): no allocation, no lock, nothing that can panic. Credentials are changed with
//! the raw `setgroups`/`setgid`/`setuid` syscalls, not glibc's wrappers: those broadcast the
//! change to every thread glibc believes exists, and after a raw `clone` glibc's thread list is a
//! stale copy of the parent's.

use super::{ExitKind, cvt};
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Descriptors the parent prepares for a child are moved to this number or above, so that the
/// child's `dup2` onto 0–4 can never clobber one of them.
pub const HIGH_FD: RawFd = 10;

/// One step of the child's set-up: the name reported when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// Unblocking all signals and restoring SIGPIPE's default action.
    ResetSignals = 1,
    /// Writing "0" to a cgroup's `cgroup.procs`.
    JoinCgroup,
    /// `setsid`.
    Setsid,
    /// Making `/` recursively private in the new mount namespace.
    MountPrivate,
    /// Mounting the private tmpfs on `/tmp`.
    MountTmp,
    /// Opening a read-only directory again inside the new mount namespace.
    OpenReadOnly,
    /// Creating a directory in the private `/tmp` for a read-only bind.
    MkdirTmp,
    /// Bind-mounting a directory onto itself.
    BindMount,
    /// Remounting that bind read-only.
    RemountReadOnly,
    /// Mounting the new PID namespace's `/proc`.
    MountProc,
    /// Placing stdio and the protocol pipes on fds 0–4.
    Dup2,
    /// Marking every other descriptor close-on-exec.
    CloseRange,
    /// `setrlimit(RLIMIT_CORE)`.
    RlimitCore,
    /// `setrlimit(RLIMIT_NOFILE)`.
    RlimitNofile,
    /// `setrlimit(RLIMIT_NPROC)`.
    RlimitNproc,
    /// Emptying the capability bounding set (`prctl(PR_CAPBSET_DROP)`).
    DropBounding,
    /// `setgroups`.
    Setgroups,
    /// `setgid`.
    Setgid,
    /// `setuid`.
    Setuid,
    /// Clearing the ambient capabilities.
    ClearAmbient,
    /// `capset`: empty effective, permitted and inheritable sets.
    ClearCaps,
    /// `prctl(PR_SET_PDEATHSIG)`.
    ParentDeathSignal,
    /// The runtime exited while the child was being set up.
    ParentGone,
    /// `chdir` to the working directory.
    Chdir,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// Installing the seccomp filter.
    Seccomp,
    /// `execve`.
    Execve,
    /// Parent side: creating the error pipe.
    Pipe,
    /// Parent side: `clone`.
    Clone,
    /// Parent side: reading the error pipe.
    ReadReport,
}

const STEPS: [Step; 30] = [
    Step::ResetSignals,
    Step::JoinCgroup,
    Step::Setsid,
    Step::MountPrivate,
    Step::OpenReadOnly,
    Step::MountTmp,
    Step::MkdirTmp,
    Step::BindMount,
    Step::RemountReadOnly,
    Step::MountProc,
    Step::Dup2,
    Step::CloseRange,
    Step::RlimitCore,
    Step::RlimitNofile,
    Step::RlimitNproc,
    Step::DropBounding,
    Step::Setgroups,
    Step::Setgid,
    Step::Setuid,
    Step::ClearAmbient,
    Step::ClearCaps,
    Step::ParentDeathSignal,
    Step::ParentGone,
    Step::Chdir,
    Step::NoNewPrivs,
    Step::Seccomp,
    Step::Execve,
    Step::Pipe,
    Step::Clone,
    Step::ReadReport,
];

impl Step {
    /// The name used in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Step::ResetSignals => "reset signal mask",
            Step::JoinCgroup => "join cgroup (write cgroup.procs)",
            Step::Setsid => "setsid",
            Step::MountPrivate => "make / private (mount MS_REC|MS_PRIVATE)",
            Step::OpenReadOnly => "open read-only directory in the mount namespace",
            Step::MountTmp => "mount private tmpfs on /tmp",
            Step::MkdirTmp => "mkdir under the private /tmp",
            Step::BindMount => "bind-mount read-only directory",
            Step::RemountReadOnly => "remount bind read-only",
            Step::MountProc => "mount /proc",
            Step::Dup2 => "dup2 stdio and protocol pipes",
            Step::CloseRange => "close_range",
            Step::RlimitCore => "setrlimit(RLIMIT_CORE)",
            Step::RlimitNofile => "setrlimit(RLIMIT_NOFILE)",
            Step::RlimitNproc => "setrlimit(RLIMIT_NPROC)",
            Step::DropBounding => "drop capability bounding set (prctl(PR_CAPBSET_DROP))",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::ClearAmbient => "clear ambient capabilities",
            Step::ClearCaps => "clear capabilities (capset)",
            Step::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Step::ParentGone => "runtime exited during worker spawn",
            Step::Chdir => "chdir",
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Step::Seccomp => "install seccomp filter",
            Step::Execve => "execve",
            Step::Pipe => "create error pipe",
            Step::Clone => "clone",
            Step::ReadReport => "read child's error report",
        }
    }

    fn from_u8(byte: u8) -> Option<Step> {
        STEPS.iter().copied().find(|s| *s as u8 == byte)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed child step: which one, and the errno it failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    /// The step.
    pub step: Step,
    /// Its errno (0 when the step failed without one).
    pub errno: i32,
}

impl ChildFailure {
    /// The errno as an `io::Error`.
    pub fn error(&self) -> io::Error {
        if self.errno == 0 {
            io::Error::other(self.step.name())
        } else {
            io::Error::from_raw_os_error(self.errno)
        }
    }
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.error())
    }
}

/// The resource limits the child sets (soft = hard = the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    /// `RLIMIT_CORE`.
    Core(u64),
    /// `RLIMIT_NOFILE`.
    Nofile(u64),
    /// `RLIMIT_NPROC`.
    Nproc(u64),
}

/// One directory that stays visible, read-only, inside the worker's mount namespace.
///
/// A bind source must be a mount of the caller's own mount namespace, so the runtime's descriptor
/// of the directory cannot be the source. It reserves a descriptor number instead: in the new
/// namespace the child opens the directory again (before the private `/tmp` can hide it) and
/// `dup3`s it onto that number, then binds from `/proc/self/fd/<number>`.
#[derive(Debug)]
pub struct ReadOnlyDir {
    /// An `O_PATH` descriptor of the directory at [`HIGH_FD`] or above: checks that it exists
    /// and reserves the number the child reuses.
    slot: OwnedFd,
    /// `/proc/self/fd/<slot>`: the bind source.
    source: CString,
    /// The directory's own path: the bind target.
    target: CString,
    /// `MS_NOSUID`, `MS_NOEXEC`, ... of the mount it lives on, kept on the read-only bind.
    flags: libc::c_ulong,
}

impl ReadOnlyDir {
    /// Opens `dir` (an absolute, canonical path) for a later read-only bind.
    pub fn open(dir: &Path) -> io::Result<ReadOnlyDir> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)?;
        let slot = fd_above(OwnedFd::from(file))?;
        let source = CString::new(format!("/proc/self/fd/{}", slot.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let target = c_path(dir.as_os_str())?;
        let flags = mount_flags(&target)?;
        Ok(ReadOnlyDir {
            slot,
            source,
            target,
            flags,
        })
    }
}

/// The mount namespace's set-up.
#[derive(Debug)]
pub struct Mounts {
    /// Options of the private tmpfs on `/tmp` (`mode=1777`, optionally `size=`).
    tmp_options: CString,
    /// Directories to create in the private `/tmp` (parents first) so that read-only dirs that
    /// lived under the host's `/tmp` have a mount point.
    mkdirs: Vec<CString>,
    /// Read-only binds, outermost first.
    read_only: Vec<ReadOnlyDir>,
}

impl Mounts {
    /// Prepares the mounts: `mkdirs` are created in the private `/tmp` (parents first), then each
    /// of `read_only` (outermost first) is bound read-only onto its own path.
    pub fn new(
        tmp_size: Option<u64>,
        mkdirs: &[&Path],
        read_only: Vec<ReadOnlyDir>,
    ) -> io::Result<Mounts> {
        let tmp_options = match tmp_size {
            Some(bytes) => format!("mode=1777,size={bytes}"),
            None => "mode=1777".to_owned(),
        };
        Ok(Mounts {
            tmp_options: CString::new(tmp_options)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            mkdirs: mkdirs
                .iter()
                .map(|p| c_path(p.as_os_str()))
                .collect::<io::Result<_>>()?,
            read_only,
        })
    }
}

/// What the child applies on top of the plain spawn. Owned, so it can move into a `pre_exec`
/// closure; its descriptors close in the parent when it is dropped.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` of each cgroup the worker joins (written "0" by the child).
    pub cgroup_procs: Vec<OwnedFd>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// `(uid, gid)` to switch to, with no supplementary group.
    pub credentials: Option<(u32, u32)>,
    /// Empty the capability bounding set (before the user switch: it needs `CAP_SETPCAP`).
    pub drop_bounding: bool,
    /// Empty the ambient, effective, permitted and inheritable capability sets (after the user
    /// switch, which clears effective and permitted but keeps inheritable).
    pub clear_caps: bool,
    /// The mount namespace (only with [`spawn_isolated`]).
    pub mounts: Option<Mounts>,
    /// A seccomp program, installed last.
    pub seccomp: Option<Vec<libc::sock_filter>>,
}

/// `argv`, `envp`, program and working directory as C data, built before the fork.
#[derive(Debug)]
pub struct ExecImage {
    program: CString,
    cwd: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecImage {
    /// Builds the image; a NUL byte anywhere is `InvalidInput`.
    pub fn new<'a>(
        program: &Path,
        args: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
    ) -> io::Result<ExecImage> {
        let program_c = c_path(program.as_os_str())?;
        let mut argv = vec![program_c.clone()];
        for arg in args {
            argv.push(c_path(arg)?);
        }
        let mut envp = Vec::new();
        for (k, v) in env {
            envp.push(
                CString::new(format!("{k}={v}"))
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            );
        }
        // The CStrings' heap buffers do not move when the Vecs or the image move, so these
        // pointers stay valid for the image's life.
        let argv_ptrs = argv
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(ExecImage {
            program: program_c,
            cwd: c_path(cwd.as_os_str())?,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }
}

/// The five descriptors a worker starts with, all at [`HIGH_FD`] or above in the parent.
#[derive(Debug)]
pub struct ChildFds {
    /// Becomes fd 0 (`/dev/null`).
    pub stdin: OwnedFd,
    /// Becomes fd 1.
    pub stdout: OwnedFd,
    /// Becomes fd 2.
    pub stderr: OwnedFd,
    /// Becomes fd 3 (runtime → worker).
    pub worker_in: RawFd,
    /// Becomes fd 4 (worker → runtime).
    pub worker_out: RawFd,
}

fn c_path(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Moves `fd` to a close-on-exec descriptor numbered [`HIGH_FD`] or above.
pub fn fd_above(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= HIGH_FD {
        return Ok(fd);
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own touches no memory; on success the
    // returned descriptor is new and owned by nobody else, so wrapping it in OwnedFd is sound.
    let high = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) })?;
    // SAFETY: see above: `high` is a fresh descriptor that only this OwnedFd will close.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// The runtime's effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Sets the process's umask and returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and touches no memory.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Adds `bits` to the process's umask (never loosens it) and returns the previous mask.
pub fn tighten_umask(bits: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and touches no memory. The runtime has one thread, so no
    // file is created between the two calls.
    let old = unsafe { libc::umask(0) };
    // SAFETY: as above.
    unsafe { libc::umask(old | bits as libc::mode_t) };
    old as u32
}

/// The runtime's own `RLIMIT_NOFILE` as `(soft, hard)`. A worker's `nofile` above `hard` fails
/// at spawn (step `setrlimit(RLIMIT_NOFILE)`, `EPERM`) unless the runtime is root.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rlim` is a live local the kernel fills in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) })?;
    Ok((rlim.rlim_cur, rlim.rlim_max))
}

/// Sends `signal` to the single process `pid`. A process that is already gone is not an error.
pub fn kill_pid(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid <= 1",
        ));
    }
    // SAFETY: kill(2) of one positive pid touches no memory.
    match cvt(unsafe { libc::kill(pid, signal) }) {
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map(drop),
    }
}

/// Waits for the child `pid` (and only it). `Ok(None)` when `block` is false and it has not
/// exited yet.
pub fn wait_pid(pid: i32, block: bool) -> io::Result<Option<ExitKind>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a live local for the whole call.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret == 0 {
            return Ok(None);
        }
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(Some(if libc::WIFSIGNALED(status) {
            ExitKind::Signal(libc::WTERMSIG(status))
        } else {
            ExitKind::Code(libc::WEXITSTATUS(status))
        }));
    }
}

/// `prctl(PR_GET_SECCOMP)`: 0 when the runtime runs without seccomp, 2 under a filter. An error
/// (`EINVAL`) means the kernel has no seccomp.
pub fn seccomp_mode() -> io::Result<i32> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    cvt(unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) })
}

/// The Landlock ABI version (`landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`).
/// `ENOSYS`: not built into the kernel; `EOPNOTSUPP`: built in but disabled at boot.
pub fn landlock_abi() -> io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer and size 0, the kernel reads no memory; it only
    // returns the ABI version.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        i32::try_from(ret).map_err(|_| io::Error::other("landlock ABI out of range"))
    }
}

/// The per-mount flags of the file system holding `path`, as `MS_*` bits to keep on a bind.
fn mount_flags(path: &CString) -> io::Result<libc::c_ulong> {
    // SAFETY: statvfs is plain data; zeroed is a valid value for the kernel to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a live local, both valid for the call.
    cvt(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

// ---------------------------------------------------------------------------------------------
// Child steps. Each is `unsafe` only in that it must run in a freshly forked child (it changes
// process-wide state that the runtime itself must never have changed); the syscalls themselves
// receive only pointers to data the parent prepared.
// ---------------------------------------------------------------------------------------------

type ChildResult = Result<(), ChildFailure>;

fn fail(step: Step) -> ChildFailure {
    ChildFailure {
        step,
        errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}

fn check(step: Step, ret: libc::c_long) -> ChildResult {
    if ret < 0 { Err(fail(step)) } else { Ok(()) }
}

fn join_cgroups(setup: &ChildSetup) -> ChildResult {
    for fd in &setup.cgroup_procs {
        // SAFETY: a 1-byte write from a static buffer to a descriptor the setup owns. "0" means
        // "the writing process" in both cgroup versions.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        check(Step::JoinCgroup, n as libc::c_long)?;
    }
    Ok(())
}

fn set_rlimits(setup: &ChildSetup) -> ChildResult {
    for limit in &setup.rlimits {
        let (resource, value, step) = match *limit {
            Rlimit::Core(v) => (libc::RLIMIT_CORE, v, Step::RlimitCore),
            Rlimit::Nofile(v) => (libc::RLIMIT_NOFILE, v, Step::RlimitNofile),
            Rlimit::Nproc(v) => (libc::RLIMIT_NPROC, v, Step::RlimitNproc),
        };
        let rlim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `rlim` is a live local read by the call.
        check(step, unsafe { libc::setrlimit(resource, &rlim) }.into())?;
    }
    Ok(())
}

fn set_credentials(setup: &ChildSetup) -> ChildResult {
    if setup.drop_bounding {
        drop_bounding_set()?;
    }
    if let Some((uid, gid)) = setup.credentials {
        // The protocol pipes were made by the runtime's user: hand them to the worker's, so
        // that a worker may reopen them through /proc/self/fd as well as use them. A missing
        // descriptor or a refusal only leaves them as they were.
        for fd in [super::WORKER_FD_IN, super::WORKER_FD_OUT] {
            // SAFETY: fchown on a descriptor number changes only that inode's owner; no memory
            // is touched.
            unsafe { libc::fchown(fd, uid, gid) };
        }
        // SAFETY: raw syscalls on this (the only) thread; setgroups with a count of 0 reads no
        // memory (the list pointer is NULL).
        unsafe {
            check(
                Step::Setgroups,
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
            )?;
            check(Step::Setgid, libc::syscall(libc::SYS_setgid, gid))?;
            check(Step::Setuid, libc::syscall(libc::SYS_setuid, uid))?;
        }
    }
    if setup.clear_caps {
        clear_capabilities()?;
    }
    Ok(())
}

/// The highest capability number the loop below tries; `PR_CAPBSET_DROP` answers `EINVAL` past
/// the kernel's last capability, which ends it earlier.
const MAX_CAP: libc::c_ulong = 63;

fn drop_bounding_set() -> ChildResult {
    for cap in 0..=MAX_CAP {
        // SAFETY: integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if ret < 0 {
            let err = fail(Step::DropBounding);
            if err.errno == libc::EINVAL {
                break;
            }
            return Err(err);
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them (capabilities 0–31, 32–63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn clear_capabilities() -> ChildResult {
    // SAFETY: integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3), so there are none to clear.
    if ret < 0 {
        let err = fail(Step::ClearAmbient);
        if err.errno != libc::EINVAL {
            return Err(err);
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are live locals of the layout the kernel expects for version 3
    // (one header, two data structs); lowering capabilities needs no privilege.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    check(Step::ClearCaps, ret)
}

/// The calling process's capability sets as `(effective | permitted | inheritable)` bits, and
/// whether any capability is left in its bounding set.
fn own_capabilities() -> (u64, bool) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are live locals of the layout capget fills for version 3.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    let sets = if ret < 0 {
        u64::MAX
    } else {
        let half = |d: &CapData| u64::from(d.effective | d.permitted | d.inheritable);
        half(&data[0]) | (half(&data[1]) << 32)
    };
    let mut bounding = false;
    for cap in 0..=MAX_CAP {
        // SAFETY: integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        if ret < 0 {
            break;
        }
        if ret > 0 {
            bounding = true;
            break;
        }
    }
    (sets, bounding)
}

fn no_new_privs() -> ChildResult {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(Step::NoNewPrivs, ret.into())
}

fn install_seccomp(setup: &ChildSetup) -> ChildResult {
    if let Some(program) = &setup.seccomp {
        let len = u16::try_from(program.len()).map_err(|_| ChildFailure {
            step: Step::Seccomp,
            errno: libc::EINVAL,
        })?;
        let fprog = libc::sock_fprog {
            len,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies the
        // instructions and keeps no reference.
        let ret = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
                0,
                0,
            )
        };
        check(Step::Seccomp, ret.into())?;
    }
    Ok(())
}

fn mark_cloexec_from_5() -> ChildResult {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            5u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(Step::CloseRange, ret)
}

/// Places `fds` (in order) on 0, 1, 2, ... after first moving every one above [`HIGH_FD`], so
/// that no placement clobbers a descriptor still to be placed.
fn place_fds<const N: usize>(fds: [RawFd; N]) -> ChildResult {
    let mut high = [0; N];
    for (slot, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on an open descriptor; touches no memory.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        check(Step::Dup2, new.into())?;
        *slot = new;
    }
    for (target, fd) in (0..).zip(high) {
        // SAFETY: dup2 onto a small fixed number; clears FD_CLOEXEC on the target.
        check(Step::Dup2, unsafe { libc::dup2(fd, target) }.into())?;
    }
    Ok(())
}

fn set_parent_death_signal() -> ChildResult {
    // SAFETY: integer arguments only. This must follow any credential change, which clears it.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    check(Step::ParentDeathSignal, ret.into())
}

fn mount(
    step: Step,
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> ChildResult {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(step, ret.into())
}

fn set_up_mounts(m: &Mounts) -> ChildResult {
    mount(
        Step::MountPrivate,
        None,
        c"/",
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // Pin each read-only directory in this namespace before /tmp is covered.
    for ro in &m.read_only {
        // SAFETY: open/dup3/close on a NUL-terminated path and descriptors; the reserved slot
        // is replaced atomically by dup3.
        unsafe {
            let fd = libc::open(
                ro.target.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            check(Step::OpenReadOnly, fd.into())?;
            let placed = libc::dup3(fd, ro.slot.as_raw_fd(), libc::O_CLOEXEC);
            let saved = fail(Step::OpenReadOnly);
            libc::close(fd);
            if placed < 0 {
                return Err(saved);
            }
        }
    }
    mount(
        Step::MountTmp,
        Some(c"tmpfs"),
        c"/tmp",
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(m.tmp_options.as_c_str()),
    )?;
    for dir in &m.mkdirs {
        // SAFETY: a NUL-terminated path prepared by the parent.
        let ret = unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(fail(Step::MkdirTmp));
        }
    }
    for ro in &m.read_only {
        mount(
            Step::BindMount,
            Some(ro.source.as_c_str()),
            &ro.target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
        mount(
            Step::RemountReadOnly,
            None,
            &ro.target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | ro.flags,
            None,
        )?;
    }
    mount(
        Step::MountProc,
        Some(c"proc"),
        c"/proc",
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// The std::process::Command path.
// ---------------------------------------------------------------------------------------------

/// After a failed `Command::spawn`, tells which step of the hook failed.
#[derive(Debug)]
pub struct StepReport {
    receiver: mio::unix::pipe::Receiver,
}

impl StepReport {
    /// The step that failed in the child; `None` when the hook finished, i.e. `execve` itself
    /// failed (or the failure came from std's own set-up before the hook).
    pub fn failed_step(mut self) -> Option<Step> {
        let mut byte = [0u8; 1];
        match self.receiver.read(&mut byte) {
            Ok(1) => Step::from_u8(byte[0]),
            _ => None,
        }
    }
}

/// Arranges for `command`'s child to find `fd_in`/`fd_out` on fds 3 and 4 with every other
/// inherited descriptor closed at exec, to run in its own session, and to apply `setup` (every
/// field except `mounts`, which needs [`spawn_isolated`]). Returns the pipe that names the
/// failing step if `spawn` fails.
///
/// `fd_in` and `fd_out` must stay open until `spawn` returns; `setup` is owned by the hook and
/// closed in the parent when `command` is dropped.
pub fn prepare_command(
    command: &mut Command,
    fd_in: &OwnedFd,
    fd_out: &OwnedFd,
    setup: ChildSetup,
) -> io::Result<StepReport> {
    let (sender, receiver) = mio::unix::pipe::new()?;
    let report = fd_above(OwnedFd::from(sender))?;
    let fd_in = fd_in.as_raw_fd();
    let fd_out = fd_out.as_raw_fd();
    let parent = super::getpid();
    // SAFETY: the closure runs in the forked child before exec (std has already placed stdio,
    // changed directory and reset the signal mask) and makes only async-signal-safe syscalls on
    // data prepared here: it allocates nothing and takes no lock. On failure it writes one byte
    // (the step) to a pipe at fd >= 10 and returns the errno, which std reports to `spawn`.
    unsafe {
        command.pre_exec(move || {
            let result = (|| {
                join_cgroups(&setup)?;
                place_fds_3_4(fd_in, fd_out)?;
                check(Step::Setsid, libc::setsid().into())?;
                mark_cloexec_from_5()?;
                set_rlimits(&setup)?;
                set_credentials(&setup)?;
                set_parent_death_signal()?;
                // The runtime may have died between fork and prctl; then nobody would kill us.
                if libc::getppid() != parent {
                    return Err(ChildFailure {
                        step: Step::ParentGone,
                        errno: 0,
                    });
                }
                no_new_privs()?;
                install_seccomp(&setup)
            })();
            result.map_err(|failure| {
                let byte = failure.step as u8;
                libc::write(report.as_raw_fd(), std::ptr::addr_of!(byte).cast(), 1);
                if failure.errno == 0 {
                    io::Error::from_raw_os_error(libc::ESRCH)
                } else {
                    io::Error::from_raw_os_error(failure.errno)
                }
            })
        });
    }
    Ok(StepReport { receiver })
}

/// Arranges for `command`'s child to run in its own session (so that its process group can be
/// signalled as a whole) and to be killed when the runtime dies, and nothing else: the user's
/// gateway runs outside the worker sandbox, as the runtime's own user.
pub fn prepare_unsandboxed_command(command: &mut Command) {
    let parent = super::getpid();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe syscalls (setsid, prctl, getppid) on integers: it allocates nothing
    // and takes no lock. A failure is returned as an errno, which std reports to `spawn`.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The runtime may have died between fork and prctl; then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Moves the two protocol pipes onto 3 and 4 (stdio is std's business on this path).
fn place_fds_3_4(fd_in: RawFd, fd_out: RawFd) -> ChildResult {
    // SAFETY: fcntl/dup2 on open descriptors; no memory is touched.
    unsafe {
        let high_in = libc::fcntl(fd_in, libc::F_DUPFD_CLOEXEC, HIGH_FD);
        check(Step::Dup2, high_in.into())?;
        let high_out = libc::fcntl(fd_out, libc::F_DUPFD_CLOEXEC, HIGH_FD);
        check(Step::Dup2, high_out.into())?;
        check(Step::Dup2, libc::dup2(high_in, super::WORKER_FD_IN).into())?;
        check(
            Step::Dup2,
            libc::dup2(high_out, super::WORKER_FD_OUT).into(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The raw clone path.
// ---------------------------------------------------------------------------------------------

/// The namespaces of an isolated worker.
pub const WORKER_NAMESPACES: libc::c_int =
    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// Clones a child with `flags` (plus SIGCHLD) and runs `child` in it. `child` either execs
/// (success: the close-on-exec pipe reaches EOF and the pid is returned) or returns: `Ok` exits
/// 0 (for probes; the pid is returned after EOF), `Err` is written to the error pipe as
/// `[step, errno (4 bytes, native endian)]`, then the child exits 127 and is reaped here.
///
/// # Safety
///
/// `child` runs in a copy of this process made by a raw `clone`: it must only make
/// async-signal-safe syscalls on memory that already exists, and must not panic.
unsafe fn clone_and_run<F>(flags: libc::c_int, child: F) -> Result<i32, ChildFailure>
where
    F: FnOnce(RawFd) -> ChildResult,
{
    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: `pipe` is a live array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(fail(Step::Pipe));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let write_end = fd_above(write_end).map_err(|e| ChildFailure {
        step: Step::Pipe,
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    let report_fd = write_end.as_raw_fd();
    let clone_flags = libc::c_ulong::try_from(flags | libc::SIGCHLD).unwrap_or(0);
    // SAFETY: clone without CLONE_VM and with a NULL stack behaves like fork: the child gets a
    // copy of the address space and continues on its copy of this stack.
    let pid =
        unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(fail(Step::Clone));
    }
    if pid == 0 {
        // In the child. Never return from here: run the body and _exit. First drop our copy of
        // the read end, so that POLLERR on the write end means the runtime's copy is gone.
        // SAFETY: closes a descriptor this child owns a copy of; the OwnedFd is never dropped
        // here (the child leaves through _exit), so it is not closed twice.
        unsafe { libc::close(read_end.as_raw_fd()) };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(report_fd)));
        let code = match outcome {
            Ok(Ok(())) => 0,
            Ok(Err(failure)) => {
                let mut msg = [0u8; 5];
                msg[0] = failure.step as u8;
                msg[1..].copy_from_slice(&failure.errno.to_ne_bytes());
                // SAFETY: a write of a live local buffer to our pipe.
                unsafe { libc::write(report_fd, msg.as_ptr().cast(), msg.len()) };
                127
            }
            Err(_) => 126,
        };
        // SAFETY: _exit ends the child at once, without running the parent's atexit handlers
        // or destructors (whose state the child only copied).
        unsafe { libc::_exit(code) };
    }
    let pid = i32::try_from(pid).unwrap_or(-1);
    drop(write_end);
    let mut msg = [0u8; 5];
    let mut got = 0;
    let mut reader = std::fs::File::from(read_end);
    while got < msg.len() {
        match reader.read(&mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = wait_pid(pid, true);
                return Err(ChildFailure {
                    step: Step::ReadReport,
                    errno: e.raw_os_error().unwrap_or(0),
                });
            }
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child failed and is exiting: reap it here, so the event loop never sees a pid it
    // does not know.
    let _ = wait_pid(pid, true);
    let step = Step::from_u8(msg[0]).unwrap_or(Step::ReadReport);
    let errno = if got == msg.len() {
        i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]])
    } else {
        0
    };
    Err(ChildFailure { step, errno })
}

/// Forks an isolated worker with raw `clone(flags)` (normally [`WORKER_NAMESPACES`]) and execs
/// it, applying every step of `setup`; returns its pid (as seen by the runtime). On failure the
/// child has already been reaped.
pub fn spawn_isolated(
    image: &ExecImage,
    fds: &ChildFds,
    setup: &ChildSetup,
    flags: libc::c_int,
) -> Result<i32, ChildFailure> {
    let stdio = [
        fds.stdin.as_raw_fd(),
        fds.stdout.as_raw_fd(),
        fds.stderr.as_raw_fd(),
        fds.worker_in,
        fds.worker_out,
    ];
    // SAFETY: the closure makes only raw syscalls on data prepared above (C strings, pointer
    // arrays, descriptors, BPF instructions) and cannot panic: no indexing, no allocation.
    unsafe {
        clone_and_run(flags, |report_fd| {
            reset_signals()?;
            join_cgroups(setup)?;
            check(Step::Setsid, libc::setsid().into())?;
            if let Some(m) = &setup.mounts {
                set_up_mounts(m)?;
            }
            place_fds(stdio)?;
            mark_cloexec_from_5()?;
            set_rlimits(setup)?;
            set_credentials(setup)?;
            set_parent_death_signal()?;
            parent_alive(report_fd)?;
            check(Step::Chdir, libc::chdir(image.cwd.as_ptr()).into())?;
            no_new_privs()?;
            install_seccomp(setup)?;
            libc::execve(
                image.program.as_ptr(),
                image.argv_ptrs.as_ptr(),
                image.envp_ptrs.as_ptr(),
            );
            Err(fail(Step::Execve))
        })
    }
}

/// Unblocks every signal and restores SIGPIPE (ignored by Rust programs) to its default, as std
/// does for its own children.
fn reset_signals() -> ChildResult {
    // SAFETY: `set` is a live local initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(fail(Step::ResetSignals));
        }
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            return Err(fail(Step::ResetSignals));
        }
    }
    Ok(())
}

/// In a new PID namespace `getppid()` is 0 whether the runtime lives or not, so the error pipe
/// tells instead: its read end is held by the runtime, blocked in `read`, until the exec; once
/// the runtime is gone, `poll` reports POLLERR on the write end.
fn parent_alive(report_fd: RawFd) -> ChildResult {
    let mut pfd = libc::pollfd {
        fd: report_fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: `pfd` is a live local; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n > 0 && pfd.revents & libc::POLLERR != 0 {
        return Err(ChildFailure {
            step: Step::ParentGone,
            errno: 0,
        });
    }
    Ok(())
}

/// Start-up probe: can a child be created in new pid, mount, ipc and uts namespaces, make `/`
/// private, and mount a tmpfs on `/tmp` and a fresh `/proc`? The child does exactly what an
/// isolated worker's set-up does, minus the binds, then exits.
pub fn probe_namespaces() -> Result<(), ChildFailure> {
    let mounts = Mounts {
        tmp_options: CString::from(c"mode=1777,size=1m"),
        mkdirs: Vec::new(),
        read_only: Vec::new(),
    };
    // SAFETY: the closure makes only mount(2) calls on C strings built above.
    let pid = unsafe { clone_and_run(WORKER_NAMESPACES, |_| set_up_mounts(&mounts)) }?;
    expect_clean_exit(pid)
}

/// Start-up probe: can a child set `no_new_privs` and install `program`? The child exits 0 right
/// after, under the filter.
pub fn probe_seccomp(program: &[libc::sock_filter]) -> Result<(), ChildFailure> {
    let setup = ChildSetup {
        seccomp: Some(program.to_vec()),
        ..ChildSetup::default()
    };
    // SAFETY: the closure makes two prctl calls on data built above.
    let pid = unsafe {
        clone_and_run(0, |_| {
            no_new_privs()?;
            install_seccomp(&setup)
        })
    }?;
    expect_clean_exit(pid)
}

/// What [`probe_worker_view`] tries from a child that has dropped to a worker's credentials.
#[derive(Debug)]
pub struct WorkerView {
    /// The process whose signals and `/proc` entries must be out of reach (the caller).
    parent: libc::pid_t,
    environ: CString,
    fd_dir: CString,
    socket: Option<libc::sockaddr_un>,
    read_files: Vec<CString>,
    write_dirs: Vec<CString>,
}

impl WorkerView {
    /// Checks against the calling process: signalling it, reading `/proc/<pid>/environ` and
    /// listing `/proc/<pid>/fd`; connecting to `socket`; opening each of `read_files` for
    /// reading; `access(W_OK)` on each of `write_dirs`.
    pub fn new(
        socket: Option<&Path>,
        read_files: &[&Path],
        write_dirs: &[&Path],
    ) -> io::Result<WorkerView> {
        let parent = super::getpid();
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        let socket = match socket {
            None => None,
            Some(path) => {
                // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
                let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                let bytes = path.as_os_str().as_bytes();
                if bytes.len() >= addr.sun_path.len() {
                    return Err(invalid());
                }
                for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
                    *dst = *src as libc::c_char;
                }
                Some(addr)
            }
        };
        let paths = |list: &[&Path]| -> io::Result<Vec<CString>> {
            list.iter().map(|p| c_path(p.as_os_str())).collect()
        };
        Ok(WorkerView {
            parent,
            environ: CString::new(format!("/proc/{parent}/environ")).map_err(|_| invalid())?,
            fd_dir: CString::new(format!("/proc/{parent}/fd")).map_err(|_| invalid())?,
            socket,
            read_files: paths(read_files)?,
            write_dirs: paths(write_dirs)?,
        })
    }
}

/// [`probe_worker_view`]: the worker could signal the caller.
pub const VIEW_SIGNAL_PARENT: u32 = 1;
/// It could open the caller's `/proc/<pid>/environ`.
pub const VIEW_READ_ENVIRON: u32 = 1 << 1;
/// It could open the caller's `/proc/<pid>/fd`.
pub const VIEW_LIST_FDS: u32 = 1 << 2;
/// It could connect to the socket.
pub const VIEW_CONNECT: u32 = 1 << 3;
/// It could open one of the files for reading.
pub const VIEW_READ_FILE: u32 = 1 << 4;
/// One of the directories was writable for it.
pub const VIEW_WRITE_DIR: u32 = 1 << 5;
/// It kept an effective, permitted, inheritable or ambient capability.
pub const VIEW_HAS_CAPS: u32 = 1 << 6;
/// Its bounding set was not empty.
pub const VIEW_HAS_BOUNDING: u32 = 1 << 7;
/// It ran with the caller's uid.
pub const VIEW_SAME_UID: u32 = 1 << 8;

/// Start-up probe: forks a child that applies `setup`'s credential and capability steps (as a
/// worker's set-up does) and `no_new_privs`, then tries everything in `view`. Returns the
/// `VIEW_*` bits of what succeeded.
pub fn probe_worker_view(setup: &ChildSetup, view: &WorkerView) -> Result<u32, ChildFailure> {
    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: `pipe` is a live array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(fail(Step::Pipe));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let out = write_end.as_raw_fd();
    // SAFETY: `getuid` is a plain syscall.
    let parent_uid = unsafe { libc::getuid() };
    // SAFETY: the closure makes only raw syscalls on data prepared by the caller and above (C
    // strings, a socket address, descriptors) and cannot panic: no indexing, no allocation.
    let pid = unsafe {
        clone_and_run(0, |_| {
            set_credentials(setup)?;
            no_new_privs()?;
            let mut bits = 0u32;
            let opens = |path: &CString, flags: libc::c_int| {
                let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd >= 0
            };
            if libc::kill(view.parent, 0) == 0 {
                bits |= VIEW_SIGNAL_PARENT;
            }
            if opens(&view.environ, libc::O_RDONLY) {
                bits |= VIEW_READ_ENVIRON;
            }
            if opens(&view.fd_dir, libc::O_RDONLY | libc::O_DIRECTORY) {
                bits |= VIEW_LIST_FDS;
            }
            if let Some(addr) = &view.socket {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd >= 0 {
                    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                    let addr = (addr as *const libc::sockaddr_un).cast::<libc::sockaddr>();
                    if libc::connect(fd, addr, len) == 0 {
                        bits |= VIEW_CONNECT;
                    }
                    libc::close(fd);
                }
            }
            if view.read_files.iter().any(|f| opens(f, libc::O_RDONLY)) {
                bits |= VIEW_READ_FILE;
            }
            if view
                .write_dirs
                .iter()
                .any(|d| libc::access(d.as_ptr(), libc::W_OK) == 0)
            {
                bits |= VIEW_WRITE_DIR;
            }
            let (sets, bounding) = own_capabilities();
            if sets != 0 {
                bits |= VIEW_HAS_CAPS;
            }
            if bounding {
                bits |= VIEW_HAS_BOUNDING;
            }
            if libc::getuid() == parent_uid {
                bits |= VIEW_SAME_UID;
            }
            let bytes = bits.to_ne_bytes();
            libc::write(out, bytes.as_ptr().cast(), bytes.len());
            Ok(())
        })
    }?;
    expect_clean_exit(pid)?;
    drop(write_end);
    let mut bytes = [0u8; 4];
    std::fs::File::from(read_end)
        .read_exact(&mut bytes)
        .map_err(|e| ChildFailure {
            step: Step::ReadReport,
            errno: e.raw_os_error().unwrap_or(0),
        })?;
    Ok(u32::from_ne_bytes(bytes))
}

fn expect_clean_exit(pid: i32) -> Result<(), ChildFailure> {
    match wait_pid(pid, true) {
        Ok(Some(ExitKind::Code(0))) => Ok(()),
        Ok(_) => Err(ChildFailure {
            step: Step::ReadReport,
            errno: 0,
        }),
        Err(e) => Err(ChildFailure {
            step: Step::ReadReport,
            errno: e.raw_os_error().unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_their_byte() {
        for step in STEPS {
            assert_eq!(Step::from_u8(step as u8), Some(step));
            assert!(!step.name().is_empty());
        }
        assert_eq!(Step::from_u8(0), None);
        assert_eq!(Step::from_u8(200), None);
    }

    #[test]
    fn exec_image_refuses_nul_bytes() {
        let err = ExecImage::new(
            Path::new("/bin/sh"),
            [OsStr::new("a\0b")],
            [],
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let ok = ExecImage::new(
            Path::new("/bin/sh"),
            [OsStr::new("-c")],
            [("A", "b")],
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(ok.argv_ptrs.len(), 3);
        assert!(ok.argv_ptrs[2].is_null());
        assert_eq!(ok.envp_ptrs.len(), 2);
    }

    #[test]
    fn a_closed_read_end_means_the_parent_is_gone() {
        let (sender, receiver) = mio::unix::pipe::new().unwrap();
        let write = OwnedFd::from(sender);
        assert_eq!(parent_alive(write.as_raw_fd()), Ok(()));
        drop(receiver);
        assert_eq!(
            parent_alive(write.as_raw_fd()).map_err(|f| f.step),
            Err(Step::ParentGone)
        );
    }

    #[test]
    fn nofile_limit_reads_soft_below_hard() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft <= hard && soft > 0);
    }

    #[test]
    fn fd_above_moves_low_descriptors_up() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = fd_above(OwnedFd::from(file)).unwrap();
        assert!(fd.as_raw_fd() >= HIGH_FD);
    }
}
