//! A seccomp deny-list for isolated workers, written as a classic-BPF program by hand (no
//! dependency). The program is built in the runtime before the fork; the child installs it as its
//! very last step before `execve` (see `turf/spawn.rs`), so the runtime's own set-up syscalls
//! (mount, setuid, ...) are never filtered.
//!
//! # What the filter does
//!
//! The kernel runs the program on a `struct seccomp_data` (`nr` at offset 0, `arch` at 4, the
//! instruction pointer at 8, `args[6]` from 16; every field little-endian on both supported
//! architectures):
//!
//! 1. **Architecture check.** `arch` must be the runtime's own audit architecture
//!    (`AUDIT_ARCH_X86_64` or `AUDIT_ARCH_AARCH64`). Any other value means the worker entered the
//!    kernel through another ABI (for example `int 0x80`, the i386 compat table, on x86_64), for
//!    which the syscall numbers below mean nothing: the whole process is killed
//!    (`SECCOMP_RET_KILL_PROCESS`). On a build for any other architecture there is no table:
//!    [`Arch::native`] is `None`, and the sandbox reports seccomp as skipped.
//! 2. **x32 (x86_64 only).** Syscall numbers with bit 30 (`__X32_SYSCALL_BIT`) set come from the
//!    x32 ABI, which shares `AUDIT_ARCH_X86_64`, so they would slip past a deny-list by number.
//!    All of them fail with `EPERM`.
//! 3. **`clone3` fails with `ENOSYS`.** Its flags live in a struct in user memory, which a seccomp
//!    filter cannot read. `ENOSYS` (not `EPERM`) makes glibc and other libcs fall back to `clone`,
//!    whose flags the filter can check (step 5).
//! 4. **The deny-list ([`DENIED`]) fails with `EPERM`.** Each entry names why it is denied.
//! 5. **`clone` with any namespace flag fails with `EPERM`** (the flags are `args[0]` on both
//!    architectures; the namespace bits are in its low 32 bits). Plain `fork`, `vfork` and
//!    thread creation are allowed.
//! 6. Everything else is allowed.
//!
//! A deny-list is a hardening layer on top of the other limits, not a complete policy: it removes
//! the kernel interfaces a function has no business calling and that have a history of privilege
//! escalation (module loading, keyrings, bpf, userfaultfd, perf, io_uring), and the ones that would
//! undo the rest of the sandbox (mount, namespaces, ptrace of other workers, chroot).

/// The seccomp action that kills the whole process (`SECCOMP_RET_KILL_PROCESS`, Linux ≥ 4.14).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// The seccomp action that fails the syscall with the errno in its low 16 bits.
pub const RET_ERRNO: u32 = 0x0005_0000;
/// The seccomp action that lets the syscall run.
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) | 64-bit | little-endian.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` (183) | 64-bit | little-endian.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `__X32_SYSCALL_BIT`: marks x32 syscall numbers on x86_64.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The namespace flags of `clone`: `CLONE_NEWTIME`, `CLONE_NEWNS`, `CLONE_NEWCGROUP`,
/// `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`, `CLONE_NEWNET`.
pub const CLONE_NAMESPACE_FLAGS: u32 = 0x0000_0080
    | 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// `A = seccomp_data[k]` (a 32-bit load).
pub const OP_LOAD: u16 = BPF_LD | BPF_W | BPF_ABS;
/// `if A == k`.
pub const OP_JEQ: u16 = BPF_JMP | BPF_JEQ | BPF_K;
/// `if A >= k`.
pub const OP_JGE: u16 = BPF_JMP | BPF_JGE | BPF_K;
/// `if A & k != 0`.
pub const OP_JSET: u16 = BPF_JMP | BPF_JSET | BPF_K;
/// `return k`.
pub const OP_RET: u16 = BPF_RET | BPF_K;

/// Offset of `nr` in `struct seccomp_data`.
pub const DATA_NR: u32 = 0;
/// Offset of `arch`.
pub const DATA_ARCH: u32 = 4;
/// Offset of the low 32 bits of `args[0]` (little-endian).
pub const DATA_ARG0_LOW: u32 = 16;

/// One classic-BPF instruction, laid out exactly as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when the condition holds (relative to the next instruction).
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// The architectures we carry syscall tables for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (the native 64-bit ABI; i386 and x32 entries are refused).
    X86_64,
    /// aarch64 (the native 64-bit ABI; 32-bit compat entries are refused).
    Aarch64,
}

impl Arch {
    /// The architecture this binary was built for, when we have a table for it.
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// Its `AUDIT_ARCH_*` value.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// One denied syscall: its name, its number on x86_64 and on aarch64 (`None` where it does not
/// exist), and why it is denied.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    /// The syscall.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "names the entry in the table; the tests read it")
    )]
    pub name: &'static str,
    /// Its number on x86_64.
    pub x86_64: Option<u32>,
    /// Its number on aarch64 (the asm-generic table).
    pub aarch64: Option<u32>,
    /// Why a worker may not call it.
    #[allow(
        dead_code,
        reason = "documents the entry in the table; nothing reads it"
    )]
    pub why: &'static str,
}

const fn d(name: &'static str, x86_64: u32, aarch64: u32, why: &'static str) -> Denied {
    Denied {
        name,
        x86_64: Some(x86_64),
        aarch64: Some(aarch64),
        why,
    }
}

const fn x86_only(name: &'static str, x86_64: u32, why: &'static str) -> Denied {
    Denied {
        name,
        x86_64: Some(x86_64),
        aarch64: None,
        why,
    }
}

const MOUNTS: &str = "changes the mount table: could undo the read-only code directory";
const NAMESPACES: &str = "enters or creates namespaces: could leave the sandbox's";
const HOST: &str = "changes host-wide state";
const MODULES: &str = "loads or removes kernel code";
const PEEK: &str = "reads or writes other processes' memory";
const KEYS: &str = "the kernel keyring is shared across the host";
const SURFACE: &str = "a large kernel attack surface no function needs";

/// The syscalls an isolated worker may not make (they fail with `EPERM`). Numbers are from the
/// kernel's `arch/x86/entry/syscalls/syscall_64.tbl` and `include/uapi/asm-generic/unistd.h`.
pub const DENIED: &[Denied] = &[
    d("mount", 165, 40, MOUNTS),
    d("umount2", 166, 39, MOUNTS),
    d("pivot_root", 155, 41, MOUNTS),
    d("chroot", 161, 51, MOUNTS),
    d("open_tree", 428, 428, MOUNTS),
    d("move_mount", 429, 429, MOUNTS),
    d("fsopen", 430, 430, MOUNTS),
    d("fsconfig", 431, 431, MOUNTS),
    d("fsmount", 432, 432, MOUNTS),
    d("fspick", 433, 433, MOUNTS),
    d("mount_setattr", 442, 442, MOUNTS),
    d("setns", 308, 268, NAMESPACES),
    d("unshare", 272, 97, NAMESPACES),
    d("swapon", 167, 224, HOST),
    d("swapoff", 168, 225, HOST),
    d("reboot", 169, 142, HOST),
    d("acct", 163, 89, HOST),
    d("quotactl", 179, 60, HOST),
    d("quotactl_fd", 443, 443, HOST),
    d("settimeofday", 164, 170, HOST),
    d("clock_settime", 227, 112, HOST),
    d("clock_adjtime", 305, 266, HOST),
    d("sethostname", 170, 161, HOST),
    d("setdomainname", 171, 162, HOST),
    d("syslog", 103, 116, HOST),
    d("vhangup", 153, 58, HOST),
    d("nfsservctl", 180, 42, HOST),
    d("kexec_load", 246, 104, MODULES),
    d("kexec_file_load", 320, 294, MODULES),
    d("init_module", 175, 105, MODULES),
    d("finit_module", 313, 273, MODULES),
    d("delete_module", 176, 106, MODULES),
    x86_only("uselib", 134, MODULES),
    d("ptrace", 101, 117, PEEK),
    d("process_vm_readv", 310, 270, PEEK),
    d("process_vm_writev", 311, 271, PEEK),
    d("kcmp", 312, 272, PEEK),
    d("pidfd_getfd", 438, 438, PEEK),
    d("add_key", 248, 217, KEYS),
    d("request_key", 249, 218, KEYS),
    d("keyctl", 250, 219, KEYS),
    d("bpf", 321, 280, SURFACE),
    d("perf_event_open", 298, 241, SURFACE),
    d("userfaultfd", 323, 282, SURFACE),
    d("io_uring_setup", 425, 425, SURFACE),
    d(
        "open_by_handle_at",
        304,
        265,
        "opens files by handle, bypassing the path (and so the mount namespace)",
    ),
    d("fanotify_init", 300, 262, SURFACE),
    d("lookup_dcookie", 212, 18, SURFACE),
    x86_only(
        "iopl",
        172,
        "raises the I/O privilege level (raw port access)",
    ),
    x86_only("ioperm", 173, "raw I/O port access"),
    x86_only("_sysctl", 156, HOST),
];

/// `clone3`'s number (the same on both architectures).
pub const NR_CLONE3: u32 = 435;

/// `clone`'s number.
pub fn nr_clone(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 56,
        Arch::Aarch64 => 220,
    }
}

/// A finished filter program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    arch: Arch,
    insns: Vec<Insn>,
}

impl Filter {
    /// The deny-list filter for the native architecture, or `None` when we have no table for it.
    pub fn native() -> Option<Filter> {
        Arch::native().map(Filter::deny_list)
    }

    /// The deny-list filter for `arch` (see the module documentation for its shape).
    pub fn deny_list(arch: Arch) -> Filter {
        let mut asm = Asm::default();
        asm.op(OP_LOAD, DATA_ARCH);
        asm.jump(OP_JEQ, arch.audit_arch(), Target::Skip(1), Target::Next);
        asm.ret(RET_KILL_PROCESS);
        asm.op(OP_LOAD, DATA_NR);
        if arch == Arch::X86_64 {
            asm.jump(OP_JGE, X32_SYSCALL_BIT, Target::Eperm, Target::Next);
        }
        asm.jump(OP_JEQ, NR_CLONE3, Target::Enosys, Target::Next);
        for entry in DENIED {
            let nr = match arch {
                Arch::X86_64 => entry.x86_64,
                Arch::Aarch64 => entry.aarch64,
            };
            if let Some(nr) = nr {
                asm.jump(OP_JEQ, nr, Target::Eperm, Target::Next);
            }
        }
        asm.jump(OP_JEQ, nr_clone(arch), Target::Next, Target::Allow);
        asm.op(OP_LOAD, DATA_ARG0_LOW);
        asm.jump(OP_JSET, CLONE_NAMESPACE_FLAGS, Target::Eperm, Target::Allow);
        Filter {
            arch,
            insns: asm.finish(),
        }
    }

    /// The instructions, ready for `struct sock_fprog`.
    #[cfg(test)]
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The program as the kernel's `struct sock_filter` array.
    pub fn sock_filters(&self) -> Vec<libc::sock_filter> {
        self.insns
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    }

    /// The denied syscalls' names on this filter's architecture.
    #[cfg(test)]
    pub fn denied_names(&self) -> Vec<&'static str> {
        DENIED
            .iter()
            .filter(|e| match self.arch {
                Arch::X86_64 => e.x86_64.is_some(),
                Arch::Aarch64 => e.aarch64.is_some(),
            })
            .map(|e| e.name)
            .collect()
    }
}

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// Skip this many instructions.
    Skip(u8),
    /// The shared `return ALLOW`.
    Allow,
    /// The shared `return ERRNO(EPERM)`.
    Eperm,
    /// The shared `return ERRNO(ENOSYS)`.
    Enosys,
}

/// A tiny assembler: straight-line code followed by three shared return instructions.
#[derive(Debug, Default)]
struct Asm {
    code: Vec<(Insn, Target, Target)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.code
            .push((Insn::plain(code, k), Target::Next, Target::Next));
    }

    fn ret(&mut self, k: u32) {
        self.op(OP_RET, k);
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.code.push((Insn::plain(code, k), jt, jf));
    }

    /// Resolves the jumps and appends the shared returns: ALLOW, EPERM, ENOSYS.
    fn finish(self) -> Vec<Insn> {
        let body = self.code.len();
        let allow = body;
        let eperm = body + 1;
        let enosys = body + 2;
        let offset = |at: usize, target: Target| -> u8 {
            let to = match target {
                Target::Next => return 0,
                Target::Skip(n) => return n,
                Target::Allow => allow,
                Target::Eperm => eperm,
                Target::Enosys => enosys,
            };
            // Jumps go forward and land within 255 instructions: the list is far shorter than
            // that, and the unit tests check every offset against the program's length.
            u8::try_from(to - at - 1).unwrap_or(u8::MAX)
        };
        let mut out: Vec<Insn> = self
            .code
            .iter()
            .enumerate()
            .map(|(at, (insn, jt, jf))| Insn {
                jt: offset(at, *jt),
                jf: offset(at, *jf),
                ..*insn
            })
            .collect();
        out.push(Insn::plain(OP_RET, RET_ALLOW));
        out.push(Insn::plain(OP_RET, RET_ERRNO | EPERM));
        out.push(Insn::plain(OP_RET, RET_ERRNO | ENOSYS));
        out
    }
}

impl Insn {
    const fn plain(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` the way the kernel would on one `seccomp_data`, for the opcodes the builder
    /// emits. Any other opcode, a jump out of the program or falling off its end fails the test.
    fn run(prog: &[Insn], nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = prog.get(pc).expect("pc inside the program");
            pc += 1;
            let cond = match insn.code {
                OP_LOAD => {
                    let k = insn.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    continue;
                }
                OP_RET => return insn.k,
                OP_JEQ => a == insn.k,
                OP_JGE => a >= insn.k,
                OP_JSET => a & insn.k != 0,
                other => panic!("unexpected opcode {other:#x}"),
            };
            pc += usize::from(if cond { insn.jt } else { insn.jf });
        }
    }

    fn nr_of(arch: Arch, name: &str) -> u32 {
        let e = DENIED.iter().find(|e| e.name == name).unwrap();
        match arch {
            Arch::X86_64 => e.x86_64,
            Arch::Aarch64 => e.aarch64,
        }
        .unwrap()
    }

    #[test]
    fn program_starts_with_the_arch_check_and_ends_with_the_shared_returns() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let f = Filter::deny_list(arch);
            let p = f.insns();
            assert_eq!(p[0], Insn::plain(OP_LOAD, DATA_ARCH));
            assert_eq!(
                p[1],
                Insn {
                    code: OP_JEQ,
                    jt: 1,
                    jf: 0,
                    k: arch.audit_arch()
                }
            );
            assert_eq!(p[2], Insn::plain(OP_RET, RET_KILL_PROCESS));
            assert_eq!(p[3], Insn::plain(OP_LOAD, DATA_NR));
            let n = p.len();
            assert_eq!(p[n - 3], Insn::plain(OP_RET, RET_ALLOW));
            assert_eq!(p[n - 2], Insn::plain(OP_RET, RET_ERRNO | 1));
            assert_eq!(p[n - 1], Insn::plain(OP_RET, RET_ERRNO | 38));
            // Every jump lands inside the program (forward only, by construction).
            for (i, insn) in p.iter().enumerate() {
                if insn.code & 0x07 == 0x05 {
                    assert!(
                        i + 1 + usize::from(insn.jt) < n,
                        "jt of {i} leaves the program"
                    );
                    assert!(
                        i + 1 + usize::from(insn.jf) < n,
                        "jf of {i} leaves the program"
                    );
                }
            }
            assert!(n < 256, "short enough for 8-bit jump offsets: {n}");
            // One comparison per denied syscall that exists on this architecture.
            let compares = p.iter().filter(|i| i.code == OP_JEQ).count();
            // arch, clone3, clone, and the list.
            assert_eq!(compares, 3 + f.denied_names().len());
        }
    }

    #[test]
    fn interpreted_program_denies_the_list_and_allows_the_rest() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let p = Filter::deny_list(arch);
            let p = p.insns();
            let aa = arch.audit_arch();
            for e in DENIED {
                let nr = match arch {
                    Arch::X86_64 => e.x86_64,
                    Arch::Aarch64 => e.aarch64,
                };
                if let Some(nr) = nr {
                    assert_eq!(run(p, nr, aa, 0), RET_ERRNO | 1, "{} on {arch:?}", e.name);
                }
            }
            // read, write, openat, execve, exit_group, mmap stay allowed.
            let allowed: &[u32] = match arch {
                Arch::X86_64 => &[0, 1, 257, 59, 231, 9],
                Arch::Aarch64 => &[63, 64, 56, 221, 94, 222],
            };
            for &nr in allowed {
                assert_eq!(run(p, nr, aa, 0), RET_ALLOW, "nr {nr} on {arch:?}");
            }
            // Another ABI is killed outright.
            assert_eq!(run(p, 0, 0x4000_0003, 0), RET_KILL_PROCESS);
            // clone3 falls back to clone; clone is checked for namespace flags.
            assert_eq!(run(p, NR_CLONE3, aa, 0), RET_ERRNO | 38);
            let clone = nr_clone(arch);
            // fork: CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD.
            assert_eq!(run(p, clone, aa, 0x0120_0011), RET_ALLOW);
            // a thread: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | ...
            assert_eq!(run(p, clone, aa, 0x003d_0f00), RET_ALLOW);
            for flag in [0x1000_0000u64, 0x2000_0000, 0x0002_0000, 0x4000_0000, 0x80] {
                assert_eq!(run(p, clone, aa, flag | 0x11), RET_ERRNO | 1, "{flag:#x}");
            }
        }
        // x32 numbers on x86_64 are refused; the bit means nothing on aarch64.
        let x86 = Filter::deny_list(Arch::X86_64);
        assert_eq!(
            run(x86.insns(), X32_SYSCALL_BIT | 1, AUDIT_ARCH_X86_64, 0),
            RET_ERRNO | 1
        );
        assert_eq!(
            run(
                x86.insns(),
                nr_of(Arch::X86_64, "iopl"),
                AUDIT_ARCH_X86_64,
                0
            ),
            RET_ERRNO | 1
        );
        // aarch64's 172 is getpid, not iopl.
        let arm = Filter::deny_list(Arch::Aarch64);
        assert_eq!(run(arm.insns(), 172, AUDIT_ARCH_AARCH64, 0), RET_ALLOW);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_match_libc() {
        let a = Arch::X86_64;
        assert_eq!(nr_of(a, "mount"), libc::SYS_mount as u32);
        assert_eq!(nr_of(a, "unshare"), libc::SYS_unshare as u32);
        assert_eq!(nr_of(a, "setns"), libc::SYS_setns as u32);
        assert_eq!(nr_of(a, "ptrace"), libc::SYS_ptrace as u32);
        assert_eq!(nr_of(a, "bpf"), libc::SYS_bpf as u32);
        assert_eq!(nr_of(a, "keyctl"), libc::SYS_keyctl as u32);
        assert_eq!(nr_of(a, "userfaultfd"), libc::SYS_userfaultfd as u32);
        assert_eq!(nr_of(a, "io_uring_setup"), libc::SYS_io_uring_setup as u32);
        assert_eq!(nr_clone(a), libc::SYS_clone as u32);
        assert_eq!(NR_CLONE3, libc::SYS_clone3 as u32);
        for e in DENIED {
            assert!(e.x86_64.is_some(), "{} exists on x86_64", e.name);
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_numbers_match_libc() {
        let a = Arch::Aarch64;
        assert_eq!(nr_of(a, "mount"), libc::SYS_mount as u32);
        assert_eq!(nr_of(a, "unshare"), libc::SYS_unshare as u32);
        assert_eq!(nr_of(a, "ptrace"), libc::SYS_ptrace as u32);
        assert_eq!(nr_clone(a), libc::SYS_clone as u32);
    }

    #[test]
    fn insn_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(
            std::mem::size_of::<Insn>(),
            std::mem::size_of::<libc::sock_filter>()
        );
        assert_eq!(Arch::native().map(Arch::name), {
            if cfg!(target_arch = "x86_64") {
                Some("x86_64")
            } else if cfg!(target_arch = "aarch64") {
                Some("aarch64")
            } else {
                None
            }
        });
    }
}
