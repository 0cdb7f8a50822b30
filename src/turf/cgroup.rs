//! Per-worker cgroups: memory, CPU and pids limits that the kernel enforces.
//!
//! # Layout
//!
//! Each controller (memory, cpu, pids) is found in `/proc/self/mountinfo`: in the cgroup v2
//! (unified) hierarchy when that hierarchy offers it (its `cgroup.controllers`), otherwise in the
//! v1 hierarchy mounted with it. Per hierarchy, our cgroups are
//!
//! ```text
//! <mount point>/noslate/<instance>/<worker id>
//! ```
//!
//! where `<instance>` is `rt-<runtime pid>` (see [`instance_name`]), so runtimes running side by
//! side (tests run in parallel) never touch each other's cgroups. On a v1 machine a worker has one
//! directory per hierarchy (memory, cpu and pids are usually separate mounts); on v2 it has one.
//!
//! The cgroups are placed at the mount point, not under the runtime's own cgroup, so that a
//! restarted runtime finds a crashed predecessor's leftovers at a fixed place
//! ([`cleanup_stale`]). The consequence: workers are not counted in the runtime's own cgroup;
//! each has its own limits instead.
//!
//! # Limits
//!
//! | limit | v2 | v1 |
//! |---|---|---|
//! | memory | `memory.max`; `memory.swap.max = 0` and `memory.oom.group = 1` where present | `memory.limit_in_bytes`; `memory.memsw.limit_in_bytes` (same value: no swap) where present |
//! | cpu (fraction of one CPU) | `cpu.max = "<quota> 100000"` | `cpu.cfs_period_us = 100000`, `cpu.cfs_quota_us = <quota>` |
//! | pids | `pids.max` | `pids.max` |
//!
//! The quota is `fraction × 100000` µs, at least 1000 µs (the kernel's minimum).
//!
//! # Joining
//!
//! The runtime opens each directory's `cgroup.procs` (`O_WRONLY|O_CLOEXEC`, [`WorkerCgroup::
//! open_procs`]); the child writes "0" to each before exec (see `turf/spawn.rs`), so the worker
//! is limited from its first instruction and every process it forks stays inside.
//!
//! # Removal
//!
//! [`WorkerCgroup::try_remove`] kills whatever is left (v2 `cgroup.kill` when present, otherwise
//! SIGKILL to every pid in `cgroup.procs`) and removes the directories. It never waits: a cgroup
//! whose processes have not finished dying yet stays, and the caller retries later.

use crate::sys;
use serde::Serialize;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The directory every runtime's cgroups live under, in each hierarchy.
pub const PARENT: &str = "noslate";

/// The CPU period, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CPU quota the kernel accepts, in microseconds.
pub const CPU_MIN_QUOTA_US: u64 = 1_000;

/// The instance name of this runtime: `rt-<pid>`.
pub fn instance_name() -> String {
    format!("rt-{}", sys::getpid())
}

/// A cgroup hierarchy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A controller we set limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// Memory.
    Memory,
    /// CPU bandwidth.
    Cpu,
    /// Number of tasks.
    Pids,
}

impl Controller {
    /// All three.
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    /// A file every cgroup with this controller has, written with "no limit" by the probe.
    fn probe_file(self, version: Version) -> (&'static str, &'static str) {
        match (self, version) {
            (Controller::Memory, Version::V2) => ("memory.max", "max"),
            (Controller::Memory, Version::V1) => ("memory.limit_in_bytes", "-1"),
            (Controller::Cpu, Version::V2) => ("cpu.max", "max"),
            (Controller::Cpu, Version::V1) => ("cpu.cfs_quota_us", "-1"),
            (Controller::Pids, _) => ("pids.max", "max"),
        }
    }
}

/// What the probe found for one controller.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerCaps {
    /// Whether worker cgroups with this controller can be created.
    pub available: bool,
    /// The hierarchy it is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// This runtime's instance directory in that hierarchy (created with the first worker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ControllerCaps {
    /// Not available, because of `reason`.
    pub fn unavailable(reason: impl Into<String>) -> ControllerCaps {
        ControllerCaps {
            available: false,
            version: None,
            path: None,
            reason: Some(reason.into()),
        }
    }

    fn place(&self) -> Option<(Version, &Path)> {
        if self.available {
            Some((self.version?, self.path.as_deref()?))
        } else {
            None
        }
    }
}

/// What the probe found for the three controllers.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupCaps {
    /// Memory.
    pub memory: ControllerCaps,
    /// CPU.
    pub cpu: ControllerCaps,
    /// pids.
    pub pids: ControllerCaps,
}

impl CgroupCaps {
    /// None available, for the same reason.
    pub fn unavailable(reason: &str) -> CgroupCaps {
        CgroupCaps {
            memory: ControllerCaps::unavailable(reason),
            cpu: ControllerCaps::unavailable(reason),
            pids: ControllerCaps::unavailable(reason),
        }
    }

    /// One controller's entry.
    pub fn get(&self, c: Controller) -> &ControllerCaps {
        match c {
            Controller::Memory => &self.memory,
            Controller::Cpu => &self.cpu,
            Controller::Pids => &self.pids,
        }
    }

    /// Every distinct `<mount>/noslate` directory of the available controllers.
    fn parents(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in Controller::ALL {
            if let Some((_, inst)) = self.get(c).place()
                && let Some(parent) = inst.parent()
                && !out.iter().any(|p| p == parent)
            {
                out.push(parent.to_path_buf());
            }
        }
        out
    }

    /// Every distinct instance directory.
    fn instance_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in Controller::ALL {
            if let Some((_, inst)) = self.get(c).place()
                && !out.iter().any(|p| p == inst)
            {
                out.push(inst.to_path_buf());
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

/// A cgroup mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// v1 or v2.
    pub version: Version,
    /// v1: the controllers in its super options (`memory`, `cpu`, `cpuacct`, ...). Empty for v2.
    pub controllers: Vec<String>,
}

/// v1 super options that are not controller names.
const NOT_CONTROLLERS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
];

/// Parses `/proc/self/mountinfo` text into its cgroup mounts.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(options)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
        else {
            continue;
        };
        let version = match *fstype {
            "cgroup2" => Version::V2,
            "cgroup" => Version::V1,
            _ => continue,
        };
        let controllers = if version == Version::V1 {
            options
                .split(',')
                .filter(|o| !o.contains('=') && !NOT_CONTROLLERS.contains(o))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        out.push(Mount {
            point: PathBuf::from(unescape_mount_path(point)),
            version,
            controllers,
        });
    }
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where `c` lives: the v2 mount if its `cgroup.controllers` lists it, else the v1 mount that
/// carries it.
fn locate(c: Controller, mounts: &[Mount]) -> Result<(Version, PathBuf), String> {
    for m in mounts.iter().filter(|m| m.version == Version::V2) {
        if let Ok(list) = fs::read_to_string(m.point.join("cgroup.controllers"))
            && list.split_whitespace().any(|x| x == c.name())
        {
            return Ok((Version::V2, m.point.clone()));
        }
    }
    for m in mounts.iter().filter(|m| m.version == Version::V1) {
        if m.controllers.iter().any(|x| x == c.name()) {
            return Ok((Version::V1, m.point.clone()));
        }
    }
    Err(format!(
        "no mounted cgroup hierarchy offers the {} controller",
        c.name()
    ))
}

/// Finds and tests each controller by creating (and removing) a probe cgroup under
/// `<mount>/noslate/<instance>`. Nothing is left behind but the shared `noslate` directory.
pub fn probe(instance: &str) -> CgroupCaps {
    if let Err(reason) = check_name(instance) {
        return CgroupCaps::unavailable(&format!("instance name: {reason}"));
    }
    let mounts = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            return CgroupCaps::unavailable(&format!("cannot read /proc/self/mountinfo: {e}"));
        }
    };
    let one = |c: Controller| match locate(c, &mounts) {
        Err(reason) => ControllerCaps::unavailable(reason),
        Ok((version, point)) => {
            let inst = point.join(PARENT).join(instance);
            match test_controller(c, version, &point, &inst) {
                Ok(()) => ControllerCaps {
                    available: true,
                    version: Some(version),
                    path: Some(inst),
                    reason: None,
                },
                Err(reason) => ControllerCaps {
                    available: false,
                    version: Some(version),
                    path: None,
                    reason: Some(reason),
                },
            }
        }
    };
    CgroupCaps {
        memory: one(Controller::Memory),
        cpu: one(Controller::Cpu),
        pids: one(Controller::Pids),
    }
}

fn test_controller(
    c: Controller,
    version: Version,
    point: &Path,
    inst: &Path,
) -> Result<(), String> {
    let created = ensure_instance(version, point, inst, &[c]).map_err(|e| e.to_string())?;
    let probe = inst.join("probe");
    let result = (|| {
        mkdir_fresh(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
        let (file, value) = c.probe_file(version);
        let res = write_file(&probe.join(file), value)
            .map_err(|e| format!("cannot write {}: {e}", probe.join(file).display()))
            .and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .open(probe.join("cgroup.procs"))
                    .map(drop)
                    .map_err(|e| {
                        format!("cannot open {}: {e}", probe.join("cgroup.procs").display())
                    })
            });
        let _ = fs::remove_dir(&probe);
        res
    })();
    if created {
        let _ = fs::remove_dir(inst);
    }
    result
}

/// Creates `dir`; an existing one (left by a crashed probe) is removed and created again.
fn mkdir_fresh(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            kill_procs(dir);
            fs::remove_dir(dir)?;
            fs::create_dir(dir)
        }
        other => other,
    }
}

/// An error while creating or configuring a cgroup: what was done to which path.
#[derive(Debug)]
pub struct CgroupError {
    /// What we tried ("create", "write memory.max", ...).
    pub action: String,
    /// The path.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cgroup: cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for CgroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let action = action.to_owned();
    let path = path.to_path_buf();
    move |source| CgroupError {
        action,
        path,
        source,
    }
}

/// Makes sure `<point>/noslate/<instance>` exists and, on v2, that `controllers` are enabled
/// down to it. Returns whether the instance directory was created now.
fn ensure_instance(
    version: Version,
    point: &Path,
    inst: &Path,
    controllers: &[Controller],
) -> Result<bool, CgroupError> {
    // v1: nothing to enable, so an existing instance directory is all we need.
    if version == Version::V1 && inst.is_dir() {
        return Ok(false);
    }
    let parent = point.join(PARENT);
    if version == Version::V2 {
        enable(point, controllers)?;
    }
    match fs::create_dir(&parent) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(err("create", &parent)(e));
        }
        _ => {}
    }
    if version == Version::V2 {
        enable(&parent, controllers)?;
    }
    let created = match fs::create_dir(inst) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(err("create", inst)(e)),
    };
    if version == Version::V2 {
        enable(inst, controllers)?;
    }
    Ok(created)
}

/// v2: enables `controllers` for `dir`'s children, unless already enabled.
fn enable(dir: &Path, controllers: &[Controller]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).map_err(err("read", &file))?;
    for c in controllers {
        if current.split_whitespace().any(|x| x == c.name()) {
            continue;
        }
        write_file(&file, &format!("+{}", c.name())).map_err(|e| CgroupError {
            action: format!("enable {} in", c.name()),
            path: file.clone(),
            source: if e.raw_os_error() == Some(libc::EBUSY) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e} (a v2 cgroup that holds processes cannot enable controllers for \
                         children: run the runtime in a delegated cgroup)"
                    ),
                )
            } else {
                e
            },
        })?;
    }
    Ok(())
}

/// Writes `value` in one `write`, as cgroupfs expects.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Checks a cgroup directory name: 1–128 bytes of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("{name:?} must be 1 to 128 bytes long"));
    }
    if name.starts_with('.') {
        return Err(format!("{name:?} must not start with a dot"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{name:?} contains {bad:?}"));
    }
    Ok(())
}

/// A worker id turned into a valid cgroup directory name: other characters become `_`.
pub fn dir_name(worker: &str) -> String {
    let mut name: String = worker
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, 'w');
        name.truncate(128);
    }
    name
}

// ---------------------------------------------------------------------------------------------
// Worker cgroups
// ---------------------------------------------------------------------------------------------

/// The limits one worker's cgroup should carry, and where (from the probe).
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupPlan {
    /// The worker's directory name (see [`dir_name`]).
    pub name: String,
    /// Memory limit in bytes, with the controller's version and instance directory.
    pub memory: Option<(Version, PathBuf, u64)>,
    /// CPU limit as a fraction of one CPU.
    pub cpu: Option<(Version, PathBuf, f64)>,
    /// Most tasks.
    pub pids: Option<(Version, PathBuf, u64)>,
}

impl CgroupPlan {
    /// The plan for `worker` with whichever of the limits `caps` can carry.
    pub fn new(
        caps: &CgroupCaps,
        worker: &str,
        memory: Option<u64>,
        cpu: Option<f64>,
        pids: Option<u64>,
    ) -> CgroupPlan {
        let at = |c: Controller| caps.get(c).place().map(|(v, p)| (v, p.to_path_buf()));
        CgroupPlan {
            name: dir_name(worker),
            memory: memory.and_then(|m| at(Controller::Memory).map(|(v, p)| (v, p, m))),
            cpu: cpu.and_then(|f| at(Controller::Cpu).map(|(v, p)| (v, p, f))),
            pids: pids.and_then(|n| at(Controller::Pids).map(|(v, p)| (v, p, n))),
        }
    }

    /// Whether it sets any limit at all.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }
}

/// The CPU quota for `fraction` of one CPU, in microseconds per [`CPU_PERIOD_US`].
pub fn cpu_quota_us(fraction: f64) -> u64 {
    let quota = (fraction * CPU_PERIOD_US as f64).round();
    if quota.is_nan() || quota < CPU_MIN_QUOTA_US as f64 {
        CPU_MIN_QUOTA_US
    } else {
        // Clamped above, so the cast cannot truncate meaningfully.
        (quota as u64).max(CPU_MIN_QUOTA_US)
    }
}

/// One directory of a worker's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    version: Version,
    path: PathBuf,
    controllers: Vec<Controller>,
}

/// A worker's cgroup: one directory per hierarchy it has limits in.
///
/// Dropping it leaves the directories in place (no I/O in `Drop`): call [`remove`](Self::remove)
/// once the worker is reaped (after checking [`oom_killed`](Self::oom_killed)), and keep it for a
/// later retry when it comes back. [`remove_instance`] at shutdown and [`cleanup_stale`] at the
/// next start sweep up anything missed.
#[derive(Debug)]
pub struct WorkerCgroup {
    dirs: Vec<Dir>,
    memory_limit: Option<u64>,
}

impl WorkerCgroup {
    /// Creates the worker's directories and writes the limits. All or nothing: on any error
    /// what was created is removed again.
    pub fn create(plan: &CgroupPlan) -> Result<WorkerCgroup, CgroupError> {
        let mut dirs: Vec<Dir> = Vec::new();
        let mut add = |c: Controller, version: Version, inst: &Path| {
            let path = inst.join(&plan.name);
            if let Some(d) = dirs.iter_mut().find(|d| d.path == path) {
                d.controllers.push(c);
            } else {
                dirs.push(Dir {
                    version,
                    path,
                    controllers: vec![c],
                });
            }
        };
        if let Some((v, inst, _)) = &plan.memory {
            add(Controller::Memory, *v, inst);
        }
        if let Some((v, inst, _)) = &plan.cpu {
            add(Controller::Cpu, *v, inst);
        }
        if let Some((v, inst, _)) = &plan.pids {
            add(Controller::Pids, *v, inst);
        }
        let mut cg = WorkerCgroup {
            dirs: Vec::new(),
            memory_limit: plan.memory.as_ref().map(|(_, _, m)| *m),
        };
        for dir in dirs {
            if let Err(e) = make_dir(&dir) {
                cg.discard();
                return Err(e);
            }
            cg.dirs.push(dir.clone());
            if let Err(e) = configure(&dir, plan) {
                cg.discard();
                return Err(e);
            }
        }
        Ok(cg)
    }

    /// Removes what exists, ignoring errors (used when creation fails half-way).
    fn discard(&self) {
        for d in &self.dirs {
            let _ = fs::remove_dir(&d.path);
        }
    }

    /// The directories (for reports).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.path.as_path())
    }

    /// Whether `c` is limited by this cgroup.
    pub fn has(&self, c: Controller) -> bool {
        self.dirs.iter().any(|d| d.controllers.contains(&c))
    }

    /// Opens every directory's `cgroup.procs` for the child to join (close-on-exec, at fd 10 or
    /// above so the child's fd shuffling cannot clobber them).
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| sys::sandbox::fd_above(OwnedFd::from(f)))
                    .map_err(err("open", &path))
            })
            .collect()
    }

    /// Moves process `pid` into every directory of this cgroup: how a worker forked by a warm
    /// seed joins its own cgroup (a cold worker joins itself, before exec).
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let path = d.path.join("cgroup.procs");
            fs::write(&path, pid.to_string()).map_err(err("write", &path))?;
        }
        Ok(())
    }

    fn memory_dir(&self) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&Controller::Memory))
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup.
    ///
    /// v2: `memory.events` `oom_kill` > 0. v1: `memory.oom_control` `oom_kill` > 0 (Linux ≥
    /// 4.13); on older kernels, a heuristic: `memory.failcnt` > 0 and `memory.max_usage_in_bytes`
    /// within 64 KiB of the limit (the cgroup hit its limit; a kill is then likely, not certain).
    pub fn oom_killed(&self) -> bool {
        let Some(d) = self.memory_dir() else {
            return false;
        };
        match d.version {
            Version::V2 => read_key(&d.path.join("memory.events"), "oom_kill").unwrap_or(0) > 0,
            Version::V1 => {
                if let Some(n) = read_key(&d.path.join("memory.oom_control"), "oom_kill") {
                    return n > 0;
                }
                let failcnt = read_u64(&d.path.join("memory.failcnt")).unwrap_or(0);
                let peak = read_u64(&d.path.join("memory.max_usage_in_bytes")).unwrap_or(0);
                let limit = self.memory_limit.unwrap_or(u64::MAX);
                failcnt > 0 && peak.saturating_add(64 << 10) >= limit
            }
        }
    }

    /// The pids in the cgroup (union over its directories).
    #[cfg(test)]
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = Vec::new();
        for d in &self.dirs {
            for pid in read_procs(&d.path) {
                if !out.contains(&pid) {
                    out.push(pid);
                }
            }
        }
        out
    }

    /// Kills every process left in the cgroup and removes its directories, without waiting.
    /// Returns true when every directory is gone; false when a process has not finished dying
    /// yet, in which case call again later.
    pub fn try_remove(&self) -> bool {
        let mut all = true;
        for d in &self.dirs {
            if !d.path.exists() {
                continue;
            }
            let kill = d.path.join("cgroup.kill");
            if d.version == Version::V2 && kill.exists() {
                let _ = write_file(&kill, "1");
            } else {
                kill_procs(&d.path);
            }
            match fs::remove_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => all = false,
            }
        }
        all
    }

    /// [`try_remove`](Self::try_remove) up to three times, 1 ms apart (at most ~3 ms in the
    /// event loop). Gives the cgroup back when it is still there, to be retried later.
    pub fn remove(self) -> Result<(), WorkerCgroup> {
        for attempt in 0..3 {
            if self.try_remove() {
                return Ok(());
            }
            if attempt < 2 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Err(self)
    }
}

fn make_dir(dir: &Dir) -> Result<(), CgroupError> {
    let Some(inst) = dir.path.parent() else {
        return Err(err("create", &dir.path)(io::Error::from(
            io::ErrorKind::InvalidInput,
        )));
    };
    let point = inst.parent().and_then(Path::parent).unwrap_or(inst);
    ensure_instance(dir.version, point, inst, &dir.controllers)?;
    mkdir_fresh(&dir.path).map_err(err("create", &dir.path))
}

fn configure(dir: &Dir, plan: &CgroupPlan) -> Result<(), CgroupError> {
    let w = |file: &str, value: &str| {
        let path = dir.path.join(file);
        write_file(&path, value).map_err(|e| CgroupError {
            action: format!("write {value:?} to"),
            path,
            source: e,
        })
    };
    // Optional files: absent (no swap accounting, older kernel) is fine.
    let optional = |file: &str, value: &str| {
        let path = dir.path.join(file);
        if path.exists() {
            let _ = write_file(&path, value);
        }
    };
    for c in &dir.controllers {
        match (c, dir.version) {
            (Controller::Memory, v) => {
                let Some((_, _, bytes)) = plan.memory else {
                    continue;
                };
                let bytes = bytes.to_string();
                if v == Version::V2 {
                    w("memory.max", &bytes)?;
                    optional("memory.swap.max", "0");
                    optional("memory.oom.group", "1");
                } else {
                    w("memory.limit_in_bytes", &bytes)?;
                    // memsw (memory + swap) must be >= the memory limit, so it goes second.
                    if dir.path.join("memory.memsw.limit_in_bytes").exists() {
                        w("memory.memsw.limit_in_bytes", &bytes)?;
                    }
                }
            }
            (Controller::Cpu, v) => {
                let Some((_, _, fraction)) = plan.cpu else {
                    continue;
                };
                let quota = cpu_quota_us(fraction);
                if v == Version::V2 {
                    w("cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                } else {
                    w("cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    w("cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
            (Controller::Pids, _) => {
                let Some((_, _, n)) = plan.pids else {
                    continue;
                };
                w("pids.max", &n.to_string())?;
            }
        }
    }
    Ok(())
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads `key N` from a flat-keyed file such as `memory.events`.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    parse_key(&text, key)
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn read_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process listed in `dir/cgroup.procs`, a few rounds (a process may fork
/// between the read and the kill; the pids limit bounds how many it can make).
fn kill_procs(dir: &Path) {
    for _ in 0..4 {
        let pids = read_procs(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = sys::sandbox::kill_pid(pid, libc::SIGKILL);
        }
    }
}

/// Kills and removes `dir` and every cgroup below it (deepest first). Returns what remains.
fn remove_tree(dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                left.extend(remove_tree(&e.path()));
            }
        }
    }
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        let _ = write_file(&kill, "1");
    }
    kill_procs(dir);
    let mut removed = false;
    for attempt in 0..3 {
        match fs::remove_dir(dir) {
            Ok(()) => {
                removed = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                removed = true;
                break;
            }
            Err(_) if attempt < 2 => std::thread::sleep(std::time::Duration::from_millis(2)),
            Err(_) => {}
        }
    }
    if !removed {
        left.push(dir.to_path_buf());
    }
    left
}

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Cleanup {
    /// Instance directories removed.
    pub removed: Vec<PathBuf>,
    /// Directories that could not be removed.
    pub left: Vec<PathBuf>,
}

/// The pid in an instance directory name: `rt-<pid>` or `rt-<pid>-<suffix>`.
pub fn instance_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("rt-")?;
    let digits = rest.split('-').next()?;
    digits.parse().ok().filter(|p| *p > 0)
}

/// Whether `pid` is a live noslate process: `/proc/<pid>/exe` is our own binary, or its `comm`
/// starts with "noslate".
fn is_live_noslate(pid: i32) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return false;
    }
    if let (Ok(theirs), Ok(ours)) = (
        fs::read_link(proc_dir.join("exe")),
        fs::read_link("/proc/self/exe"),
    ) && theirs == ours
    {
        return true;
    }
    fs::read_to_string(proc_dir.join("comm"))
        .map(|c| c.starts_with("noslate"))
        .unwrap_or(false)
}

/// At start-up: removes every `noslate/rt-<pid>*` cgroup tree whose runtime is gone (its pid is
/// not a live noslate process), and our own instance's if a predecessor with our pid left one,
/// killing the processes still in them first.
pub fn cleanup_stale(caps: &crate::turf::probe::Capabilities) -> Cleanup {
    let mut out = Cleanup::default();
    for parent in caps.cgroup.parents() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = instance_pid(&name) else {
                continue;
            };
            let stale = name == caps.instance || !is_live_noslate(pid);
            if !stale {
                continue;
            }
            let left = remove_tree(&e.path());
            if left.is_empty() {
                out.removed.push(e.path());
            } else {
                out.left.extend(left);
            }
        }
    }
    out
}

/// At shutdown: removes this runtime's instance directories (and kills anything still in
/// them). Returns what could not be removed.
pub fn remove_instance(caps: &CgroupCaps) -> Vec<PathBuf> {
    caps.instance_dirs()
        .iter()
        .filter(|d| d.exists())
        .flat_map(|d| remove_tree(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:5 - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn mountinfo_yields_cgroup_mounts_with_their_controllers() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m[0].version, Version::V1);
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            m[3].controllers,
            vec!["pids"],
            "optional fields are skipped"
        );
        assert!(m[4].controllers.is_empty(), "name=systemd is no controller");
        assert_eq!(m[5].version, Version::V2);
        assert_eq!(m[5].point, PathBuf::from("/sys/fs/cgroup/un ified"));
        let (v, p) = locate(Controller::Memory, &m).unwrap();
        assert_eq!(
            (v, p),
            (Version::V1, PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert!(locate(Controller::Pids, &m[..3]).is_err());
    }

    #[test]
    fn names_are_checked_and_worker_ids_sanitised() {
        assert!(check_name("rt-123").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        assert_eq!(dir_name("hello-1"), "hello-1");
        assert_eq!(dir_name("a/b c"), "a_b_c");
        assert_eq!(dir_name(".x"), "w.x");
        assert_eq!(dir_name(""), "w");
        assert!(check_name(&dir_name(&"é".repeat(300))).is_ok());
        assert_eq!(instance_pid("rt-42"), Some(42));
        assert_eq!(instance_pid("rt-42-oom"), Some(42));
        assert_eq!(instance_pid("rt-x"), None);
        assert_eq!(instance_pid("probe"), None);
        assert_eq!(instance_pid("rt-0"), None);
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period_with_a_floor() {
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(0.001), CPU_MIN_QUOTA_US);
        assert_eq!(cpu_quota_us(f64::NAN), CPU_MIN_QUOTA_US);
    }

    #[test]
    fn plan_keeps_only_limits_with_an_available_controller() {
        let mut caps = CgroupCaps::unavailable("no");
        caps.memory = ControllerCaps {
            available: true,
            version: Some(Version::V1),
            path: Some(PathBuf::from("/cg/memory/noslate/rt-1")),
            reason: None,
        };
        let plan = CgroupPlan::new(&caps, "fn/1", Some(64 << 20), Some(0.5), Some(16));
        assert_eq!(plan.name, "fn_1");
        assert_eq!(
            plan.memory,
            Some((
                Version::V1,
                PathBuf::from("/cg/memory/noslate/rt-1"),
                64 << 20
            ))
        );
        assert_eq!(plan.cpu, None);
        assert_eq!(plan.pids, None);
        assert!(!plan.is_empty());
        assert!(CgroupPlan::new(&caps, "w", None, None, None).is_empty());
        assert_eq!(caps.parents(), vec![PathBuf::from("/cg/memory/noslate")]);
    }

    #[test]
    fn flat_keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_key(events, "oom_kill"), Some(1));
        assert_eq!(parse_key(events, "oom"), Some(1));
        assert_eq!(
            parse_key("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            None
        );
    }
}
