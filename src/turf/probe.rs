//! The start-up capability probe: what this machine lets the sandbox enforce.
//!
//! Every entry is tested for real, never assumed: cgroups by creating and removing a probe
//! cgroup per controller, namespaces by cloning a child into new pid/mount/ipc/uts namespaces
//! that makes `/` private and mounts a tmpfs and a `/proc` (what an isolated worker's set-up
//! does), seccomp by a child that installs the actual deny-list filter, Landlock by asking the
//! kernel for its ABI version. Unavailable entries carry the reason (usually the errno of the
//! step that failed).
//!
//! The result is printed as one log line ([`Capabilities::summary`]) and, for
//! `noslate serve --probe`, as JSON (it implements `Serialize`).

use crate::sys;
use crate::turf::cgroup::{self, CgroupCaps};
use crate::turf::seccomp;
use serde::Serialize;

/// One capability: available, or not and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Whether the sandbox can use it.
    pub available: bool,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Feature {
    /// Available.
    pub fn yes() -> Feature {
        Feature {
            available: true,
            reason: None,
        }
    }

    /// Not available, because of `reason`.
    pub fn no(reason: impl Into<String>) -> Feature {
        Feature {
            available: false,
            reason: Some(reason.into()),
        }
    }

    /// The reason, or "" when available.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or("")
    }
}

/// Landlock: available with an ABI version, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Landlock {
    /// Whether the kernel offers Landlock.
    pub available: bool,
    /// Its ABI version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi: Option<i32>,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the machine gives the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// This runtime's instance name (`rt-<pid>`): its cgroups live under `noslate/<instance>`.
    pub instance: String,
    /// The CPU architecture (the seccomp filter's syscall table).
    pub arch: &'static str,
    /// The runtime's effective uid.
    pub euid: u32,
    /// Whether workers can run as another user (root with CAP_SETUID and CAP_SETGID).
    pub setuid: Feature,
    /// Whether a worker's capability bounding set can be emptied (`CAP_SETPCAP`).
    pub bounding: Feature,
    /// Per-controller cgroup support.
    pub cgroup: CgroupCaps,
    /// New pid, mount, ipc and uts namespaces with the mounts an isolated worker needs.
    pub namespaces: Feature,
    /// The seccomp deny-list filter.
    pub seccomp: Feature,
    /// Landlock (reported only; the sandbox does not use it yet).
    pub landlock: Landlock,
    /// `curl` on `PATH`: what downloads `http(s)://` code packages (`code::fetch`).
    pub curl: Feature,
}

/// Probes the machine for the runtime instance `instance` (normally
/// [`cgroup::instance_name`]). Takes a few milliseconds: two short-lived children are forked.
pub fn probe(instance: &str) -> Capabilities {
    let euid = sys::sandbox::geteuid();
    Capabilities {
        instance: instance.to_owned(),
        arch: seccomp::Arch::native().map_or(std::env::consts::ARCH, seccomp::Arch::name),
        euid,
        setuid: probe_setuid(euid),
        bounding: probe_bounding(),
        cgroup: cgroup::probe(instance),
        namespaces: probe_namespaces(),
        seccomp: probe_seccomp(),
        landlock: probe_landlock(),
        curl: probe_curl(),
    }
}

/// Whether an executable `curl` is on `PATH` (looked up, not run: the probe forks nothing for
/// it).
fn probe_curl() -> Feature {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("curl"))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    match found {
        Some(_) => Feature::yes(),
        None => Feature::no("no executable curl on PATH; http(s):// code urls cannot be fetched"),
    }
}

impl Capabilities {
    /// Nothing available, for `reason`.
    #[cfg(test)]
    pub fn none(instance: &str, reason: &str) -> Capabilities {
        Capabilities {
            instance: instance.to_owned(),
            arch: std::env::consts::ARCH,
            euid: sys::sandbox::geteuid(),
            setuid: Feature::no(reason),
            bounding: Feature::no(reason),
            cgroup: CgroupCaps::unavailable(reason),
            namespaces: Feature::no(reason),
            seccomp: Feature::no(reason),
            landlock: Landlock {
                available: false,
                abi: None,
                reason: Some(reason.to_owned()),
            },
            curl: Feature::no(reason),
        }
    }

    /// One log line: what will be enforced, and why not where not.
    pub fn summary(&self) -> String {
        let cg = |c: &cgroup::ControllerCaps| match (c.available, c.version) {
            (true, Some(v)) => format!("{v:?}").to_lowercase(),
            _ => format!("no ({})", c.reason.as_deref().unwrap_or("unknown")),
        };
        let f = |f: &Feature| {
            if f.available {
                "yes".to_owned()
            } else {
                format!("no ({})", f.reason())
            }
        };
        let landlock = match (self.landlock.available, self.landlock.abi) {
            (true, Some(abi)) => format!("abi {abi} (not used)"),
            _ => format!(
                "no ({})",
                self.landlock.reason.as_deref().unwrap_or("unknown")
            ),
        };
        format!(
            "sandbox: instance {}, cgroup memory={} cpu={} pids={}; namespaces={}; seccomp={}; \
             setuid={}; landlock={}; curl={}",
            self.instance,
            cg(&self.cgroup.memory),
            cg(&self.cgroup.cpu),
            cg(&self.cgroup.pids),
            f(&self.namespaces),
            f(&self.seccomp),
            f(&self.setuid),
            landlock,
            f(&self.curl),
        )
    }
}

/// CapEff from `/proc/self/status`.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// `CAP_SETPCAP` in the effective set: needed to drop capabilities from the bounding set.
fn probe_bounding() -> Feature {
    const CAP_SETPCAP: u64 = 1 << 8;
    match effective_caps() {
        Some(caps) if caps & CAP_SETPCAP != 0 => Feature::yes(),
        Some(_) => Feature::no("the runtime has no CAP_SETPCAP"),
        None => Feature::no("cannot read CapEff from /proc/self/status"),
    }
}

/// Whether workers can run as another user: root with `CAP_SETUID` and `CAP_SETGID`.
pub fn probe_setuid(euid: u32) -> Feature {
    const CAP_SETGID: u64 = 1 << 6;
    const CAP_SETUID: u64 = 1 << 7;
    if euid != 0 {
        return Feature::no(format!("the runtime is not root (euid {euid})"));
    }
    match effective_caps() {
        Some(caps) if caps & CAP_SETUID != 0 && caps & CAP_SETGID != 0 => Feature::yes(),
        Some(_) => Feature::no("root without CAP_SETUID/CAP_SETGID"),
        None => Feature::no("cannot read CapEff from /proc/self/status"),
    }
}

fn probe_namespaces() -> Feature {
    match sys::sandbox::probe_namespaces() {
        Ok(()) => Feature::yes(),
        Err(failure) => Feature::no(failure.to_string()),
    }
}

fn probe_seccomp() -> Feature {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Feature::no("the kernel has no seccomp (no Seccomp field in /proc/self/status)");
    }
    if let Err(e) = sys::sandbox::seccomp_mode() {
        return Feature::no(format!("prctl(PR_GET_SECCOMP): {e}"));
    }
    let Some(filter) = seccomp::Filter::native() else {
        return Feature::no(format!("no syscall table for {}", std::env::consts::ARCH));
    };
    match sys::sandbox::probe_seccomp(&filter.sock_filters()) {
        Ok(()) => Feature::yes(),
        Err(failure) => Feature::no(failure.to_string()),
    }
}

fn probe_landlock() -> Landlock {
    match sys::sandbox::landlock_abi() {
        Ok(abi) => Landlock {
            available: true,
            abi: Some(abi),
            reason: None,
        },
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOSYS) => "not built into the kernel (ENOSYS)".to_owned(),
                Some(libc::EOPNOTSUPP) => "disabled at boot (EOPNOTSUPP)".to_owned(),
                _ => e.to_string(),
            };
            Landlock {
                available: false,
                abi: None,
                reason: Some(why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_every_entry_and_serialises() {
        let instance = format!("rt-{}-probe", sys::getpid());
        let caps = probe(&instance);
        // Never a silent "no": every unavailable entry says why.
        for (name, f) in [
            ("setuid", &caps.setuid),
            ("namespaces", &caps.namespaces),
            ("seccomp", &caps.seccomp),
        ] {
            assert!(f.available || !f.reason().is_empty(), "{name}: {f:?}");
        }
        for c in cgroup::Controller::ALL {
            let e = caps.cgroup.get(c);
            assert!(e.available || e.reason.is_some(), "{}: {e:?}", c.name());
            if e.available {
                // The probe leaves no instance directory behind.
                assert!(!e.path.as_ref().unwrap().exists(), "{e:?}");
            }
        }
        if caps.setuid.available {
            assert_eq!(caps.euid, 0);
        }
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(json["instance"], instance.as_str());
        assert!(json["cgroup"]["memory"]["available"].is_boolean());
        assert!(json["namespaces"]["available"].is_boolean());
        let line = caps.summary();
        assert!(
            line.contains("namespaces=") && line.contains("seccomp="),
            "{line}"
        );
        eprintln!("{line}");
    }

    #[test]
    fn none_has_reasons_everywhere() {
        let caps = Capabilities::none("rt-1", "disabled");
        assert!(!caps.namespaces.available);
        assert_eq!(caps.cgroup.pids.reason.as_deref(), Some("disabled"));
        assert!(caps.summary().contains("no (disabled)"));
    }
}
