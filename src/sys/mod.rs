//! The only place with `unsafe`: thin wrappers over the libc calls the runtime needs.
//!
//! Each wrapper turns the C return convention into `io::Result` and documents why the call is
//! sound. Everything above this module is safe Rust.

pub mod sandbox;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Maps a `-1` return value to the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The write end of the signal self-pipe; -1 until [`install_signal_pipe`] ran.
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int) {
    let fd = SIGNAL_PIPE_WRITE.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // Signal numbers fit in a byte on Linux (at most 64).
    let byte = signo as u8;
    // SAFETY: write(2) is async-signal-safe; `byte` lives on this stack frame for the call, and
    // `fd` is the non-blocking write end of a pipe that stays open for the life of the process.
    // A full pipe (EAGAIN) loses nothing: the loop drains all signals on any single wake-up.
    // errno is saved and restored so the interrupted code never sees it change.
    unsafe {
        let saved = *libc::__errno_location();
        libc::write(fd, std::ptr::addr_of!(byte).cast(), 1);
        *libc::__errno_location() = saved;
    }
}

/// Routes SIGCHLD, SIGTERM and SIGINT into a non-blocking pipe, so that the event loop
/// sees signals as ordinary readable events. Returns the read end.
pub fn install_signal_pipe() -> io::Result<mio::unix::pipe::Receiver> {
    let (sender, receiver) = mio::unix::pipe::new()?;
    let write_fd: OwnedFd = sender.into();
    // The write end must live for the whole process: the handler may run at any time.
    SIGNAL_PIPE_WRITE.store(write_fd.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write_fd);
    for signo in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `action` is fully initialised (zeroed, then the handler, mask and flags set)
        // before sigaction reads it. `on_signal` only calls async-signal-safe functions.
        // SA_RESTART keeps blocking syscalls elsewhere from failing with EINTR. SIGCHLD also
        // comes when a child is stopped (no SA_NOCLDSTOP): a frozen worker is found at once.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            cvt(libc::sigaction(signo, &action, std::ptr::null_mut()))?;
        }
    }
    Ok(receiver)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(sig) => write!(f, "signal {}", signal_name(*sig)),
        }
    }
}

/// A reaped child: its pid, how it ended and what it used.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The child's pid.
    pub pid: i32,
    /// Exit code or signal.
    pub exit: ExitKind,
    /// User CPU time in microseconds.
    pub user_cpu_us: u64,
    /// System CPU time in microseconds.
    pub system_cpu_us: u64,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
}

/// What waiting for a child found.
#[derive(Debug, Clone, Copy)]
pub enum Waited {
    /// It exited, and is reaped.
    Exited(Reaped),
    /// It was stopped by a signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) and lives on, frozen.
    Stopped {
        /// The child's pid.
        pid: i32,
        /// The signal that stopped it.
        signal: i32,
    },
}

/// Reaps one exited child of the calling thread without blocking, or reports one that a signal
/// stopped. `Ok(None)` when no child is waiting to be reaped or newly stopped (or there are no
/// children at all).
///
/// Only the children this thread forked are reaped, and the orphans the kernel hands to the
/// process (as PID 1 or a child subreaper), which become the main thread's. A child that a
/// helper thread started (curl fetching a code package) is that thread's to wait for: reaped
/// here, its exit status was lost to the helper, and `std`'s `Command::spawn`, which waits
/// for a child whose exec failed and asserts that the wait succeeds, panicked the helper.
/// So the loop that forks workers must run on the main thread and reap from there.
pub fn reap_one() -> io::Result<Option<Waited>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that the kernel fills in; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let options = libc::WNOHANG | libc::WUNTRACED | libc::__WNOTHREAD;
    // SAFETY: both out-pointers point to live, properly aligned locals for the whole call.
    let pid = unsafe { libc::wait4(-1, &mut status, options, &mut usage) };
    if pid == 0 {
        return Ok(None);
    }
    if pid < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ECHILD) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    if libc::WIFSTOPPED(status) {
        return Ok(Some(Waited::Stopped {
            pid,
            signal: libc::WSTOPSIG(status),
        }));
    }
    let exit = if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    };
    let micros = |tv: libc::timeval| {
        u64::try_from(tv.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(tv.tv_usec).unwrap_or(0)
    };
    Ok(Some(Waited::Exited(Reaped {
        pid,
        exit,
        user_cpu_us: micros(usage.ru_utime),
        system_cpu_us: micros(usage.ru_stime),
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })))
}

/// Sends `signal` to every process in the group `pgid`. A group that is already gone is not an
/// error.
pub fn kill_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
    match cvt(unsafe { libc::kill(-pgid, signal) }) {
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map(drop),
    }
}

/// The runtime's own pid.
pub fn getpid() -> i32 {
    // SAFETY: getpid(2) cannot fail and touches no memory.
    unsafe { libc::getpid() }
}

/// Makes `command`'s child get SIGKILL when the thread that spawns it ends (the runtime
/// exiting included): a helper process, such as the curl a code-package thread waits for,
/// never outlives the work it was started for.
pub fn kill_with_spawning_thread(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe syscalls with integer arguments; it allocates nothing and takes no
    // lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
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

/// The fd numbers a worker finds its protocol pipes on (see docs/PROTOCOL.md).
pub const WORKER_FD_IN: RawFd = 3;
/// See [`WORKER_FD_IN`].
pub const WORKER_FD_OUT: RawFd = 4;

/// Marks `fd` close-on-exec, so that programs this process starts do not inherit it. An fd
/// that is not open is not an error.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFD/F_SETFD) only reads and writes the descriptor's flags; it touches no
    // memory, and an invalid fd fails with EBADF, which is reported, not undefined.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EBADF) {
            Ok(())
        } else {
            Err(err)
        };
    }
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) }).map(drop)
}

/// A new close-on-exec descriptor for what `fd` refers to, owned by the caller: how a process
/// takes a descriptor it inherited (which no object of its own owns) without `unsafe` at the
/// call site, and without reopening it through `/proc`, which sockets refuse.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) touches no memory; an fd that is not open fails with EBADF.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `new` was just created by the kernel for this call and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Asks the kernel to make the pipe `fd` belongs to hold `bytes` (it rounds up to a power of
/// two pages, and refuses more than `/proc/sys/fs/pipe-max-size` to unprivileged users).
/// Returns the size the pipe now has.
pub fn set_pipe_size(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl(F_SETPIPE_SZ) resizes the pipe's kernel buffer; it touches no memory of
    // ours, and a descriptor that is not a pipe fails with EBADF or EINVAL.
    let size = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) })?;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// A new pipe, both ends close-on-exec and non-blocking: `(read end, write end)`.
pub fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2(2) writes two descriptors into `fds`, a live array of exactly two c_ints;
    // on failure it writes nothing and returns -1.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: both descriptors were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel with splice(2); one of them
/// must be a pipe. Never blocks on the pipe (`SPLICE_F_NONBLOCK`); a socket end blocks or not
/// as its own `O_NONBLOCK` says. Returns the bytes moved: 0 at the end of `from`'s stream.
pub fn splice(
    from: std::os::fd::BorrowedFd<'_>,
    to: std::os::fd::BorrowedFd<'_>,
    len: usize,
) -> io::Result<usize> {
    loop {
        // SAFETY: splice(2) with null offsets reads and writes no memory of ours; it only moves
        // buffers between the kernel objects behind two live descriptors.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf touches no memory.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Clock ticks per second, the unit of CPU times in /proc.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Reads up to 8 bytes of kernel randomness for seeding request-id generation.
pub fn random_u64() -> u64 {
    let mut value: u64 = 0;
    // SAFETY: the buffer is the 8 bytes of `value`, valid and writable for the call.
    let n = unsafe { libc::getrandom(std::ptr::addr_of_mut!(value).cast(), 8, 0) };
    if n != 8 {
        // getrandom cannot fail on a modern kernel; fall back to time and pid just in case.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        value = nanos ^ (u64::from(getpid().unsigned_abs()) << 32);
    }
    value
}

/// A short name for a signal number, for logs and error messages.
pub fn signal_name(signo: i32) -> String {
    match signo {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGALRM => "SIGALRM".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGCHLD => "SIGCHLD".into(),
        libc::SIGXCPU => "SIGXCPU".into(),
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGTSTP => "SIGTSTP".into(),
        libc::SIGTTIN => "SIGTTIN".into(),
        libc::SIGTTOU => "SIGTTOU".into(),
        other => format!("signal {other}"),
    }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, both close-on-exec: message boundaries
/// are kept and descriptors can travel with a message (the warm-seed control channel).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    unix_socket_pair(libc::SOCK_SEQPACKET)
}

/// A connected pair of Unix sockets of `kind`, both close-on-exec.
fn unix_socket_pair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: socketpair(2) writes two descriptors into `fds`, which is a live array of exactly
    // two c_ints; on failure it writes nothing and returns -1.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created by socketpair and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of `SOCK_STREAM` Unix sockets, both close-on-exec, made one-way: bytes
/// written to the first are read from the second, and neither carries anything the other way
/// (the first is shut for reading, the second for writing).
pub fn one_way_stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (sending, receiving) = unix_socket_pair(libc::SOCK_STREAM)?;
    // SAFETY: shutdown(2) only changes the state of the sockets behind these live descriptors.
    cvt(unsafe { libc::shutdown(sending.as_raw_fd(), libc::SHUT_RD) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::shutdown(receiving.as_raw_fd(), libc::SHUT_WR) })?;
    Ok((sending, receiving))
}

/// Sets the kernel buffer of socket `fd` for `option` (`SO_SNDBUF` or `SO_RCVBUF`) to `bytes`;
/// the kernel doubles it for its bookkeeping and caps it at `net.core.wmem_max` / `rmem_max`.
pub fn set_socket_buffer(
    fd: std::os::fd::BorrowedFd<'_>,
    option: libc::c_int,
    bytes: usize,
) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from `&bytes`, a live c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of!(bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The most descriptors one [`send_with_fds`] carries.
pub const MAX_PASSED_FDS: usize = 16;

/// Sends one message on a Unix socket, with `fds` attached as `SCM_RIGHTS`, without blocking
/// and without raising SIGPIPE. The whole message goes or nothing does (`SOCK_SEQPACKET`).
pub fn send_with_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // A u64 array keeps the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: CMSG_SPACE is a pure computation on its argument.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no data, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg_control` points at `control`, which is aligned and at least `space`
        // bytes (16 fds × 4 bytes plus a header fit in 128), so CMSG_FIRSTHDR returns a
        // pointer inside it, and CMSG_DATA leaves room for `fd_bytes` bytes after the header.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
    }
    // SAFETY: `msg` points at `iov` (which points at `bytes`) and at `control`, all alive for
    // the call; sendmsg only reads them.
    let sent = unsafe {
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message was truncated",
        ));
    }
    Ok(())
}

/// Receives one message from a Unix socket without blocking. Descriptors a peer might attach
/// are discarded by the kernel, since no control buffer is given. Returns the message length
/// (a longer message is truncated to `buf`); 0 means the peer closed the socket.
pub fn recv_message(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`, a live mutable slice.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so a
/// worker forked by a warm seed's short-lived intermediate becomes the runtime's child.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) }).map(drop)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every client connection is an fd), and
/// returns the limit in force afterwards.
pub fn raise_nofile_soft_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only raises the soft limit to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// The pid of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
pub fn unix_peer_pid(sock: &impl AsRawFd) -> io::Result<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid and writable, and `len` is the size of `cred`, as
    // getsockopt(SO_PEERCRED) requires.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.pid)
}

/// A non-blocking descriptor of its own for the pipe that `fd` writes to, or `None` when `fd` is
/// not a pipe (a terminal, a file, a socket) or cannot be reopened. Opening `/proc/self/fd/N`
/// of a pipe makes a new open file description, so `O_NONBLOCK` set on it does not change the
/// writes of whoever else holds `fd` (the runtime's stdout and stderr come from its parent):
/// writes to it then never block, without a poll(2) before each one.
pub fn reopen_pipe_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if !std::fs::metadata(&path).ok()?.file_type().is_fifo() {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    Some(OwnedFd::from(file))
}

/// The most bytes [`write_if_ready`] writes at once: a pipe that polls writable has room for
/// at least this much, so a blocking descriptor never blocks on such a write.
pub const ATOMIC_WRITE: usize = libc::PIPE_BUF;

/// Writes up to [`ATOMIC_WRITE`] bytes of `buf` to `fd` if `fd` can take them now, without
/// changing the descriptor's blocking mode (the runtime's stdout and stderr are shared with
/// whoever started it, so setting `O_NONBLOCK` on them would change their writes too).
/// `Ok(None)` when it cannot take anything now.
pub fn write_if_ready(fd: std::os::fd::BorrowedFd<'_>, buf: &[u8]) -> io::Result<Option<usize>> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid array of one element that lives across the call; a zero
    // timeout makes poll(2) return at once.
    let ready = match cvt(unsafe { libc::poll(&mut pollfd, 1, 0) }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
        Err(e) => return Err(e),
    };
    if ready == 0 {
        return Ok(None);
    }
    if pollfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
        && pollfd.revents & libc::POLLOUT == 0
    {
        return Err(io::Error::from_raw_os_error(libc::EPIPE));
    }
    let len = buf.len().min(ATOMIC_WRITE);
    // SAFETY: `buf[..len]` is valid for reads of `len` bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), len) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(usize::try_from(n).unwrap_or(0)))
}

/// Waits up to `timeout` until `fd` has bytes (or an end of stream) to read. Returns whether it
/// has. (The loop never waits; tests driving it do.)
#[cfg(test)]
pub fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is a valid array of one element that lives across the call.
    let ready = cvt(unsafe { libc::poll(&mut pollfd, 1, ms) })?;
    Ok(ready > 0)
}

/// Makes closing `sock` send a reset (SO_LINGER 0) instead of an orderly FIN. (The loop never
/// does; tests playing a client that vanishes do.)
#[cfg(test)]
pub fn reset_on_close(sock: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let size = libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(0);
    // SAFETY: setsockopt on an open socket the caller holds, with a valid `linger` struct that
    // lives across the call and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            size,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Whether `pid` has exited and waits to be reaped (a zombie), from /proc.
    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    }

    #[test]
    fn a_child_of_another_thread_is_left_for_that_thread_to_wait_for() {
        let (pid_tx, pid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let mut child = Command::new("sh")
                .args(["-c", "exit 3"])
                .stdin(Stdio::null())
                .spawn()
                .expect("sh");
            pid_tx.send(child.id()).expect("send the pid");
            let _ = go_rx.recv();
            child.wait().map(|status| status.code())
        });
        let pid = pid_rx.recv().expect("the helper's child");
        let until = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) && Instant::now() < until {
            std::thread::yield_now();
        }
        assert!(is_zombie(pid), "the helper's child exited and waits");
        // The loop's reaping, from another thread, must leave it alone.
        for _ in 0..3 {
            let waited = reap_one().expect("wait4");
            assert!(
                !matches!(waited, Some(Waited::Exited(r)) if r.pid == pid as i32),
                "reaped a child of another thread"
            );
        }
        go_tx.send(()).expect("let the helper wait");
        let status = helper.join().expect("the helper thread");
        assert_eq!(
            status.ok(),
            Some(Some(3)),
            "the helper sees its child's exit"
        );
    }

    /// Starts `sh -c script` from this thread; its pid. Reaped by `reap_one`, not by
    /// `Child::wait`: only the pid is kept.
    fn spawn_sh(script: &str) -> i32 {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("sh")
            .id() as i32
    }

    /// The next thing `reap_one` reports about child `pid` (a report of another child of this
    /// thread is dropped), polling for up to 10 s.
    fn next_report(pid: i32) -> Option<Waited> {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match reap_one().expect("wait4") {
                Some(Waited::Exited(r)) if r.pid == pid => return Some(Waited::Exited(r)),
                Some(stopped @ Waited::Stopped { pid: p, .. }) if p == pid => return Some(stopped),
                _ => std::thread::yield_now(),
            }
        }
        None
    }

    fn exit_of(report: Option<Waited>) -> Option<ExitKind> {
        match report {
            Some(Waited::Exited(r)) => Some(r.exit),
            _ => None,
        }
    }

    #[test]
    fn a_child_of_this_thread_is_reaped_with_its_exit() {
        let pid = spawn_sh("exit 5");
        assert_eq!(exit_of(next_report(pid)), Some(ExitKind::Code(5)));
    }

    #[test]
    fn a_child_stopped_by_a_signal_is_reported_and_then_reaped_once_killed() {
        let pid = spawn_sh("kill -STOP $$; exit 0");
        let stopped = match next_report(pid) {
            Some(Waited::Stopped { signal, .. }) => Some(signal),
            _ => None,
        };
        assert_eq!(stopped, Some(libc::SIGSTOP));
        // SAFETY: kill(2) touches no memory; `pid` is this test's own child, still unreaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert_eq!(
            exit_of(next_report(pid)),
            Some(ExitKind::Signal(libc::SIGKILL))
        );
    }
}
