//! The sandbox plan: the pure decisions of what to apply to one worker, made in the runtime
//! before the fork from the start-up probe's [`Capabilities`] and the worker's [`WorkerLimits`]
//! and [`Isolation`]. Which limits go to a cgroup and which fall back to an rlimit (or to polling,
//! see [`Enforcement::poll_fallback`]); which user to run as ([`resolve_user`]) and whether the
//! capabilities are dropped; whether the worker gets its own namespaces and which directories
//! need a mount point in its private `/tmp` ([`tmp_mount_points`]); whether the seccomp filter
//! is installed. Every feature the probe found unavailable is skipped with the probe's reason,
//! which [`Enforcement`] carries for `noslate ps`.
//!
//! Carrying the plan out (pipes, log files, the cgroup itself, the fork and exec) is
//! [`spawn`](crate::turf::spawn); what runs in the child is `sys::sandbox`.

use crate::sys::sandbox::{ChildSetup, Rlimit};
use crate::turf::cgroup::{CgroupPlan, Controller};
use crate::turf::probe::Capabilities;
use crate::turf::seccomp;
use serde::{Serialize, Serializer};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// The resource limits one worker process runs under (from its function profile's
/// `resourceLimit`); the plan decides how each is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerLimits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// CPU as a fraction of one CPU, in (0, 1].
    pub cpu: Option<f64>,
    /// Most tasks (processes and threads).
    pub pids: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
}

/// A uid and gid to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Group id (also the only supplementary group).
    pub gid: u32,
}

/// The default worker user's name (`turf.user`).
pub const NOBODY: &str = "nobody";
/// What [`NOBODY`] resolves to where `/etc/passwd` has no such user: the kernel's overflow uid
/// and gid, which own nothing.
pub const NOBODY_IDS: Credentials = Credentials {
    uid: 65534,
    gid: 65534,
};

/// Resolves `turf.user`: a name from `/etc/passwd`, a numeric uid (its passwd gid, or the same
/// number), or `uid:gid`. `nobody` without a passwd entry is [`NOBODY_IDS`].
pub fn resolve_user(spec: &str) -> Result<Credentials, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    resolve_user_in(spec, &passwd)
}

fn resolve_user_in(spec: &str, passwd: &str) -> Result<Credentials, String> {
    let spec = spec.trim();
    if let Some((u, g)) = spec.split_once(':') {
        return match (u.parse(), g.parse()) {
            (Ok(uid), Ok(gid)) => Ok(Credentials { uid, gid }),
            _ => Err(format!("{spec:?} is not uid:gid")),
        };
    }
    let entries = passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse::<u32>().ok()?,
            f.get(3)?.parse::<u32>().ok()?,
        ))
    });
    if let Ok(uid) = spec.parse::<u32>() {
        let gid = entries
            .filter(|(_, u, _)| *u == uid)
            .map(|(_, _, g)| g)
            .next()
            .unwrap_or(uid);
        return Ok(Credentials { uid, gid });
    }
    let found = entries
        .filter(|(name, _, _)| *name == spec)
        .map(|(_, uid, gid)| Credentials { uid, gid })
        .next();
    match found {
        Some(c) => Ok(c),
        // Images without a passwd entry for it still have the kernel's overflow ids free.
        None if spec == NOBODY => Ok(NOBODY_IDS),
        None => Err(format!("no user named {spec:?} in /etc/passwd")),
    }
}

/// The isolation asked for: by default a worker user and no capabilities (`turf.user`), and
/// with `turf.isolation` namespaces and seccomp too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Isolation {
    /// Run as this user (only when the runtime can switch users).
    pub user: Option<Credentials>,
    /// Why `user` is `None` (reported as the reason the user switch was skipped).
    pub no_user_reason: Option<String>,
    /// Drop every capability: the bounding set (where the runtime has `CAP_SETPCAP`), then the
    /// ambient, effective, permitted and inheritable sets.
    pub drop_caps: bool,
    /// New pid, ipc, uts and mount namespaces with a read-only working directory, a private
    /// `/tmp` and the namespace's own `/proc`.
    pub namespaces: bool,
    /// More directories that must stay visible (read-only) in the mount namespace, such as the
    /// bootstrap's directory when it lives under `/tmp`. The working directory always is.
    pub read_only_dirs: Vec<PathBuf>,
    /// Size of the private `/tmp` in bytes (`None`: tmpfs's default, half of RAM; the worker's
    /// memory cgroup is charged for what it writes there either way).
    pub tmp_size: Option<u64>,
    /// The seccomp deny-list (`turf/seccomp.rs`).
    pub seccomp: bool,
}

impl Isolation {
    /// Everything: user (when given), no capabilities, namespaces and seccomp.
    pub fn full(user: Option<Credentials>, read_only_dirs: Vec<PathBuf>) -> Isolation {
        Isolation {
            user,
            no_user_reason: None,
            drop_caps: true,
            namespaces: true,
            read_only_dirs,
            tmp_size: None,
            seccomp: true,
        }
    }

    /// What every worker gets without `turf.isolation`: `user` (when given; else
    /// `no_user_reason` says why not) and no capabilities.
    pub fn unprivileged(user: Option<Credentials>, no_user_reason: Option<String>) -> Isolation {
        Isolation {
            user,
            no_user_reason,
            drop_caps: true,
            ..Isolation::default()
        }
    }
}

/// How one limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// By the kernel, through the worker's cgroup.
    Cgroup,
    /// By the runtime polling `/proc` and killing the process group when over. Never set here:
    /// the supervisor upgrades memory and CPU from `None` to `Poll` when it polls them.
    Poll,
    /// By a resource limit of the process (`RLIMIT_NOFILE`, `RLIMIT_NPROC`).
    Rlimit,
    /// Not enforced (no limit configured, or no mechanism available).
    None,
}

impl Mechanism {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Cgroup => "cgroup",
            Mechanism::Poll => "poll",
            Mechanism::Rlimit => "rlimit",
            Mechanism::None => "none",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an isolation feature was applied. Serialises as `"applied"` or `"skipped: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied.
    Applied,
    /// Not applied, and why.
    Skipped(String),
}

impl Applied {
    /// Whether it was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, Applied::Applied)
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Applied => f.write_str("applied"),
            Applied::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

impl Serialize for Applied {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What was enforced on one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// Memory limit. `none` without a cgroup: the supervisor sets `poll` when it polls RSS.
    pub memory: Mechanism,
    /// CPU limit. `none` without a cgroup: the supervisor sets `poll` when it polls CPU time.
    pub cpu: Mechanism,
    /// pids: `cgroup`, else `rlimit` (`RLIMIT_NPROC`, which counts every process of the
    /// worker's real uid and which the kernel ignores for root: then `none`).
    pub pids: Mechanism,
    /// `RLIMIT_NOFILE`: `rlimit` whenever configured.
    pub nofile: Mechanism,
    /// Running as `turf.user`.
    pub user: Applied,
    /// Every capability dropped (bounding, ambient, effective, permitted, inheritable).
    pub caps: Applied,
    /// pid/ipc/uts/mount namespaces.
    pub namespaces: Applied,
    /// The seccomp filter.
    pub seccomp: Applied,
}

impl Enforcement {
    /// Marks memory and CPU limits that have no cgroup as `poll`: call it when the supervisor
    /// polls `/proc` for this worker's limits.
    pub fn poll_fallback(&mut self, limits: &WorkerLimits) {
        if self.memory == Mechanism::None && limits.memory.is_some() {
            self.memory = Mechanism::Poll;
        }
        if self.cpu == Mechanism::None && limits.cpu.is_some() {
            self.cpu = Mechanism::Poll;
        }
    }

    /// [`poll_fallback`](Self::poll_fallback), then the limits the supervisor must poll itself
    /// because no cgroup enforces them.
    pub fn polled_limits(&mut self, limits: &WorkerLimits) -> crate::turf::poll::PolledLimits {
        self.poll_fallback(limits);
        crate::turf::poll::PolledLimits::new(
            limits.memory.filter(|_| self.memory == Mechanism::Poll),
            limits.cpu.filter(|_| self.cpu == Mechanism::Poll),
        )
    }

    /// One short line for tables: `mem=cgroup cpu=poll pids=cgroup nofile=rlimit user=yes
    /// caps=yes ns=no seccomp=yes` (reasons are in the JSON form).
    pub fn summary(&self) -> String {
        let yn = |a: &Applied| if a.is_applied() { "yes" } else { "no" };
        format!(
            "mem={} cpu={} pids={} nofile={} user={} caps={} ns={} seccomp={}",
            self.memory,
            self.cpu,
            self.pids,
            self.nofile,
            yn(&self.user),
            yn(&self.caps),
            yn(&self.namespaces),
            yn(&self.seccomp)
        )
    }
}

impl Default for Enforcement {
    fn default() -> Self {
        let off = || Applied::Skipped("turf.isolation is off".into());
        Enforcement {
            memory: Mechanism::None,
            cpu: Mechanism::None,
            pids: Mechanism::None,
            nofile: Mechanism::None,
            user: off(),
            caps: Applied::Skipped("not requested".into()),
            namespaces: off(),
            seccomp: off(),
        }
    }
}

/// The decisions for one worker, made in the runtime from the probe's [`Capabilities`] before
/// the fork: which limits go to a cgroup, which fall back to rlimits, and which isolation
/// features apply. [`spawn`](crate::turf::spawn::spawn) carries it out.
#[derive(Debug, Clone, Default)]
pub struct SandboxPlan {
    limits: WorkerLimits,
    cgroup: Option<CgroupPlan>,
    credentials: Option<Credentials>,
    drop_bounding: bool,
    clear_caps: bool,
    namespaces: Option<NamespacePlan>,
    seccomp: Option<seccomp::Filter>,
    /// The uid the worker will run with (RLIMIT_NPROC is ignored for root).
    worker_uid: u32,
    enforcement: Enforcement,
}

impl SandboxPlan {
    /// Plans worker `worker_id` with `limits`, and `isolation` when `turf.isolation` is on.
    /// Every feature the probe found unavailable is skipped with the probe's reason.
    pub fn build(
        caps: &Capabilities,
        worker_id: &str,
        limits: WorkerLimits,
        isolation: Option<&Isolation>,
    ) -> SandboxPlan {
        let mut enforcement = Enforcement::default();
        let mut credentials = None;
        let mut namespaces = None;
        let mut filter = None;
        let mut drop_bounding = false;
        let mut clear_caps = false;
        if let Some(iso) = isolation {
            enforcement.user = match iso.user {
                None => Applied::Skipped(
                    iso.no_user_reason
                        .clone()
                        .unwrap_or_else(|| "no turf.user".into()),
                ),
                Some(_) if !caps.setuid.available => {
                    Applied::Skipped(caps.setuid.reason().to_owned())
                }
                Some(c) => {
                    credentials = Some(c);
                    Applied::Applied
                }
            };
            if iso.drop_caps {
                clear_caps = true;
                drop_bounding = caps.bounding.available;
                enforcement.caps = if drop_bounding {
                    Applied::Applied
                } else {
                    Applied::Skipped(format!(
                        "bounding set kept ({}); the other sets are emptied",
                        caps.bounding.reason()
                    ))
                };
            }
            enforcement.namespaces = if !iso.namespaces {
                Applied::Skipped("turf.isolation is off".into())
            } else if !caps.namespaces.available {
                Applied::Skipped(caps.namespaces.reason().to_owned())
            } else {
                namespaces = Some(NamespacePlan {
                    read_only_dirs: iso.read_only_dirs.clone(),
                    tmp_size: iso.tmp_size,
                });
                Applied::Applied
            };
            enforcement.seccomp = if !iso.seccomp {
                Applied::Skipped("turf.isolation is off".into())
            } else if !caps.seccomp.available {
                Applied::Skipped(caps.seccomp.reason().to_owned())
            } else {
                match seccomp::Filter::native() {
                    Some(f) => {
                        filter = Some(f);
                        Applied::Applied
                    }
                    None => Applied::Skipped(format!("no syscall table for {}", caps.arch)),
                }
            };
        }
        let cgroup = CgroupPlan::new(
            &caps.cgroup,
            worker_id,
            limits.memory,
            limits.cpu,
            limits.pids,
        );
        let worker_uid = credentials.map_or(caps.euid, |c| c.uid);
        let mut plan = SandboxPlan {
            limits,
            cgroup: (!cgroup.is_empty()).then_some(cgroup),
            credentials,
            drop_bounding,
            clear_caps,
            namespaces,
            seccomp: filter,
            worker_uid,
            enforcement,
        };
        let mut e = plan.enforcement.clone();
        plan.fill_limit_mechanisms(&mut e, |c| plan_has(plan.cgroup.as_ref(), c));
        plan.enforcement = e;
        plan
    }

    /// The enforcement this plan intends (before the cgroup is actually created).
    #[cfg(test)]
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// The cgroup to create for the worker, if any limit goes to one.
    pub(super) fn cgroup(&self) -> Option<&CgroupPlan> {
        self.cgroup.as_ref()
    }

    /// The namespaces to clone the worker into, if any.
    pub(super) fn namespaces(&self) -> Option<&NamespacePlan> {
        self.namespaces.as_ref()
    }

    /// The enforcement once the worker's cgroup exists: `in_cgroup` says which controllers it
    /// really has (a cgroup that could not be created has none).
    pub(super) fn enforcement_in(&self, in_cgroup: impl Fn(Controller) -> bool) -> Enforcement {
        let mut e = self.enforcement.clone();
        self.fill_limit_mechanisms(&mut e, in_cgroup);
        e
    }

    /// What the child applies between fork and exec: joining the cgroups whose `cgroup.procs`
    /// are `cgroup_procs`, the rlimits (`RLIMIT_NPROC` only when pids did not land in a
    /// cgroup), the user and capability changes, and the seccomp program. The mounts are the
    /// isolated path's to add.
    pub(super) fn child_setup(
        &self,
        cgroup_procs: Vec<OwnedFd>,
        pids_in_cgroup: bool,
    ) -> ChildSetup {
        ChildSetup {
            cgroup_procs,
            rlimits: self.rlimits(pids_in_cgroup),
            credentials: self.credentials.map(|c| (c.uid, c.gid)),
            drop_bounding: self.drop_bounding,
            clear_caps: self.clear_caps,
            mounts: None,
            seccomp: self.seccomp.as_ref().map(seccomp::Filter::sock_filters),
        }
    }

    /// Fills in the four limit mechanisms, given which controllers the worker's cgroup has.
    fn fill_limit_mechanisms(&self, e: &mut Enforcement, in_cgroup: impl Fn(Controller) -> bool) {
        let l = self.limits;
        let cg = |set: bool, c: Controller| {
            if set && in_cgroup(c) {
                Mechanism::Cgroup
            } else {
                Mechanism::None
            }
        };
        e.memory = cg(l.memory.is_some(), Controller::Memory);
        e.cpu = cg(l.cpu.is_some(), Controller::Cpu);
        e.pids = match l.pids {
            None => Mechanism::None,
            Some(_) if in_cgroup(Controller::Pids) => Mechanism::Cgroup,
            // RLIMIT_NPROC is set, but the kernel does not apply it to root.
            Some(_) if self.worker_uid == 0 => Mechanism::None,
            Some(_) => Mechanism::Rlimit,
        };
        e.nofile = if l.nofile.is_some() {
            Mechanism::Rlimit
        } else {
            Mechanism::None
        };
    }

    /// The rlimits the child sets, given whether pids landed in a cgroup.
    fn rlimits(&self, pids_in_cgroup: bool) -> Vec<Rlimit> {
        let mut out = vec![Rlimit::Core(0)];
        if let Some(n) = self.limits.nofile {
            out.push(Rlimit::Nofile(n));
        }
        if let Some(n) = self.limits.pids
            && !pids_in_cgroup
        {
            out.push(Rlimit::Nproc(n));
        }
        out
    }
}

/// A worker's own pid, ipc, uts and mount namespaces: what stays visible read-only, and the
/// size of its private `/tmp`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NamespacePlan {
    /// [`Isolation::read_only_dirs`] (the working directory is added at spawn time).
    pub(super) read_only_dirs: Vec<PathBuf>,
    /// [`Isolation::tmp_size`].
    pub(super) tmp_size: Option<u64>,
}

/// Whether the planned cgroup `cg` has controller `c`.
fn plan_has(cg: Option<&CgroupPlan>, c: Controller) -> bool {
    cg.is_some_and(|p| match c {
        Controller::Memory => p.memory.is_some(),
        Controller::Cpu => p.cpu.is_some(),
        Controller::Pids => p.pids.is_some(),
    })
}

/// The directories to create in the private `/tmp` so that each of `dirs` that lives under the
/// host's `/tmp` has a mount point: every ancestor below `/tmp`, and the directory itself,
/// parents first, without duplicates.
pub fn tmp_mount_points(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let tmp = Path::new("/tmp");
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let Ok(rest) = dir.strip_prefix(tmp) else {
            continue;
        };
        let mut at = tmp.to_path_buf();
        for part in rest.components() {
            if let Component::Normal(p) = part {
                at.push(p);
                if !out.contains(&at) {
                    out.push(at.clone());
                }
            }
        }
    }
    out.sort_by_key(|p| p.components().count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turf::cgroup::{self, Version};
    use crate::turf::probe::Feature;

    fn fake_caps() -> Capabilities {
        let mut caps = Capabilities::none("rt-1", "not here");
        let yes = |c: &str| cgroup::ControllerCaps {
            available: true,
            version: Some(Version::V2),
            path: Some(PathBuf::from(format!("/cg/noslate/rt-1/{c}"))),
            reason: None,
        };
        caps.cgroup.memory = yes("m");
        caps.cgroup.pids = yes("p");
        caps.seccomp = Feature::yes();
        caps.euid = 0;
        caps
    }

    #[test]
    fn plan_picks_a_mechanism_per_limit_and_says_why_isolation_is_skipped() {
        let caps = fake_caps();
        let l = WorkerLimits {
            memory: Some(1 << 30),
            cpu: Some(0.5),
            pids: Some(64),
            nofile: Some(1024),
        };
        let plan = SandboxPlan::build(&caps, "f-1", l, None);
        let e = plan.enforcement();
        assert_eq!(e.memory, Mechanism::Cgroup);
        assert_eq!(
            e.cpu,
            Mechanism::None,
            "no cpu controller: the supervisor polls"
        );
        assert_eq!(e.pids, Mechanism::Cgroup);
        assert_eq!(e.nofile, Mechanism::Rlimit);
        assert_eq!(e.seccomp, Applied::Skipped("turf.isolation is off".into()));
        assert_eq!(
            plan.rlimits(true),
            vec![Rlimit::Core(0), Rlimit::Nofile(1024)]
        );
        assert_eq!(
            plan.rlimits(false),
            vec![Rlimit::Core(0), Rlimit::Nofile(1024), Rlimit::Nproc(64)]
        );

        // Without a pids cgroup: RLIMIT_NPROC, which root ignores (so `none`), unless the
        // worker runs as another user.
        let mut caps = fake_caps();
        caps.cgroup.pids = cgroup::ControllerCaps::unavailable("no pids");
        let plan = SandboxPlan::build(&caps, "f-1", l, None);
        assert_eq!(plan.enforcement().pids, Mechanism::None);
        caps.setuid = Feature::yes();
        caps.bounding = Feature::yes();
        let iso = Isolation::full(
            Some(Credentials {
                uid: 65534,
                gid: 65534,
            }),
            Vec::new(),
        );
        let plan = SandboxPlan::build(&caps, "f-1", l, Some(&iso));
        let e = plan.enforcement();
        assert_eq!(e.pids, Mechanism::Rlimit);
        assert_eq!(e.user, Applied::Applied);
        assert_eq!(e.namespaces, Applied::Skipped("not here".into()));
        assert_eq!(e.seccomp, Applied::Applied);
        assert!(plan.seccomp.is_some() && plan.namespaces.is_none());

        let mut polled = e.clone();
        polled.poll_fallback(&l);
        assert_eq!(polled.cpu, Mechanism::Poll, "cpu has no cgroup here");
        assert_eq!(polled.memory, Mechanism::Cgroup);
        assert_eq!(
            polled.summary(),
            "mem=cgroup cpu=poll pids=rlimit nofile=rlimit user=yes caps=yes ns=no seccomp=yes"
        );
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "memory": "cgroup", "cpu": "none", "pids": "rlimit", "nofile": "rlimit",
                "user": "applied", "caps": "applied", "namespaces": "skipped: not here",
                "seccomp": "applied"
            })
        );
    }

    #[test]
    fn by_default_a_plan_switches_user_and_drops_caps_without_namespaces_or_seccomp() {
        let mut caps = fake_caps();
        caps.setuid = Feature::yes();
        caps.bounding = Feature::yes();
        let iso = Isolation::unprivileged(Some(NOBODY_IDS), None);
        let plan = SandboxPlan::build(&caps, "f-1", WorkerLimits::default(), Some(&iso));
        let e = plan.enforcement();
        assert_eq!(e.user, Applied::Applied);
        assert_eq!(e.caps, Applied::Applied);
        assert_eq!(
            e.namespaces,
            Applied::Skipped("turf.isolation is off".into())
        );
        assert_eq!(e.seccomp, Applied::Skipped("turf.isolation is off".into()));
        assert_eq!(plan.credentials, Some(NOBODY_IDS));
        assert!(plan.drop_bounding && plan.clear_caps);
        assert!(plan.namespaces.is_none() && plan.seccomp.is_none());

        // No CAP_SETPCAP: the bounding set stays, the other sets are still emptied. No user
        // switch: the reason travels into the report.
        caps.bounding = Feature::no("the runtime has no CAP_SETPCAP");
        let iso = Isolation::unprivileged(None, Some("the runtime is not root (euid 1000)".into()));
        let plan = SandboxPlan::build(&caps, "f-1", WorkerLimits::default(), Some(&iso));
        let e = plan.enforcement();
        assert_eq!(
            e.user,
            Applied::Skipped("the runtime is not root (euid 1000)".into())
        );
        assert!(matches!(&e.caps, Applied::Skipped(why) if why.contains("CAP_SETPCAP")));
        assert!(!plan.drop_bounding && plan.clear_caps);
        assert_eq!(plan.credentials, None);
    }
    #[test]
    fn users_resolve_by_name_number_or_pair() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/sbin/nologin\n\
                      app:x:1000:100::/home/app:/bin/sh\n";
        let r = |s| resolve_user_in(s, passwd);
        assert_eq!(
            r("nobody"),
            Ok(Credentials {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            r("app"),
            Ok(Credentials {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(
            r("1000"),
            Ok(Credentials {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(
            r("4242"),
            Ok(Credentials {
                uid: 4242,
                gid: 4242
            })
        );
        assert_eq!(r("7:8"), Ok(Credentials { uid: 7, gid: 8 }));
        assert!(r("ghost").unwrap_err().contains("ghost"));
        assert_eq!(
            resolve_user_in("nobody", "root:x:0:0::/:/bin/sh\n"),
            Ok(NOBODY_IDS),
            "nobody without a passwd entry"
        );
        assert!(r("a:b").is_err());
    }

    #[test]
    fn mount_points_cover_every_level_under_tmp_parents_first() {
        let dirs = vec![
            PathBuf::from("/tmp/a/b/code"),
            PathBuf::from("/srv/code"),
            PathBuf::from("/tmp/a/boot"),
            PathBuf::from("/tmpx/y"),
        ];
        assert_eq!(
            tmp_mount_points(&dirs),
            vec![
                PathBuf::from("/tmp/a"),
                PathBuf::from("/tmp/a/b"),
                PathBuf::from("/tmp/a/boot"),
                PathBuf::from("/tmp/a/b/code"),
            ]
        );
        assert!(tmp_mount_points(&[PathBuf::from("/tmp")]).is_empty());
    }
}
