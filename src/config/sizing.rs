//! `virtualMemoryPoolSize` when the configuration does not set it: the instance's memory.
//!
//! Noslate's default is 1 GiB whatever the machine, so on a 4 GB FC instance three functions
//! with default limits could not all start, and on a 512 MB one the pool promised memory that
//! was not there. Here the default is the memory the instance actually has: FC's
//! `FC_FUNCTION_MEMORY_SIZE` (MB) when set, else the container's cgroup memory limit, else the
//! machine's memory. Setting the key (or `NOSLATED_VIRTUAL_MEMORY_POOL_SIZE`) keeps Noslate's
//! behaviour, `1gb` included.

use super::MIN_MEMORY_LIMIT_BYTES;
use super::system::SystemConfig;
use std::path::Path;

/// Where `virtualMemoryPoolSize` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSizeSource {
    /// Noslate's default (1 GiB): nothing about the instance was known.
    Default,
    /// The configuration file's `virtualMemoryPoolSize`.
    ConfigFile,
    /// `NOSLATED_VIRTUAL_MEMORY_POOL_SIZE`.
    Environment,
    /// FC's `FC_FUNCTION_MEMORY_SIZE` (MB).
    FcFunctionMemory,
    /// The container's cgroup memory limit.
    CgroupLimit,
    /// The machine's memory (`MemTotal`).
    MachineMemory,
}

impl PoolSizeSource {
    /// How logs, `noslate check` and the probe name it.
    pub fn describe(self) -> &'static str {
        match self {
            PoolSizeSource::Default => "Noslate's default",
            PoolSizeSource::ConfigFile => "the config file's virtualMemoryPoolSize",
            PoolSizeSource::Environment => "NOSLATED_VIRTUAL_MEMORY_POOL_SIZE",
            PoolSizeSource::FcFunctionMemory => "FC_FUNCTION_MEMORY_SIZE",
            PoolSizeSource::CgroupLimit => "the container's cgroup memory limit",
            PoolSizeSource::MachineMemory => "the machine's memory",
        }
    }

    /// Whether the configuration set it (then the instance is not asked).
    pub fn is_configured(self) -> bool {
        matches!(
            self,
            PoolSizeSource::ConfigFile | PoolSizeSource::Environment
        )
    }
}

/// What the host says about its memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// The runtime's cgroup memory limit, or the tightest of its ancestors'; `None` when
    /// there is none (or it cannot be read).
    pub cgroup_limit: Option<u64>,
    /// `MemTotal` from `/proc/meminfo`.
    pub machine: Option<u64>,
}

impl HostMemory {
    /// Reads the runtime's cgroup (v2, else v1) and `/proc/meminfo`.
    pub fn read() -> HostMemory {
        let machine = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| meminfo_total(&text));
        let cgroup_limit = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| cgroup_limit(&text, Path::new("/sys/fs/cgroup")));
        HostMemory {
            cgroup_limit: cgroup_limit.filter(|&limit| machine.is_none_or(|m| limit < m)),
            machine,
        }
    }
}

/// The instance's memory and where it came from, if anything says.
pub fn instance_memory(
    fc_function_memory_mb: Option<&str>,
    host: HostMemory,
) -> Option<(u64, PoolSizeSource)> {
    let fc = fc_function_memory_mb
        .and_then(|mb| mb.trim().parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .and_then(|mb| mb.checked_mul(1 << 20));
    fc.map(|bytes| (bytes, PoolSizeSource::FcFunctionMemory))
        .or(host
            .cgroup_limit
            .map(|bytes| (bytes, PoolSizeSource::CgroupLimit)))
        .or(host
            .machine
            .map(|bytes| (bytes, PoolSizeSource::MachineMemory)))
}

/// Sizes the pool from the instance unless the configuration set it.
pub fn size_pool_from_instance(
    cfg: &mut SystemConfig,
    env: &dyn Fn(&str) -> Option<String>,
    host: HostMemory,
) {
    if cfg.pool_size_source.is_configured() {
        return;
    }
    let fc = env("FC_FUNCTION_MEMORY_SIZE");
    if let Some((bytes, source)) = instance_memory(fc.as_deref(), host) {
        cfg.virtual_memory_pool_size = bytes.max(MIN_MEMORY_LIMIT_BYTES);
        cfg.pool_size_source = source;
    }
}

/// `MemTotal` in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The tightest memory limit on the runtime's cgroup and its ancestors under `root`, from
/// `/proc/self/cgroup`'s text: cgroup v2's `memory.max` ("max" is none), else v1's
/// `memory.limit_in_bytes` (values near `u64::MAX`, v1's "unlimited", are none).
fn cgroup_limit(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    let mut take = |limit: Option<u64>| {
        if let Some(limit) = limit {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
    };
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            take(read_limit(&dir.join(file)));
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    tightest
}

fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "unlimited" as the largest page-aligned i64.
    (value < 1 << 60).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn fc_memory_comes_first_then_the_cgroup_then_the_machine() {
        let host = HostMemory {
            cgroup_limit: Some(2 * GIB),
            machine: Some(16 * GIB),
        };
        assert_eq!(
            instance_memory(Some("4096"), host),
            Some((4 * GIB, PoolSizeSource::FcFunctionMemory))
        );
        assert_eq!(
            instance_memory(None, host),
            Some((2 * GIB, PoolSizeSource::CgroupLimit))
        );
        // Not a number of MB: the next source.
        assert_eq!(
            instance_memory(Some("4g"), host),
            Some((2 * GIB, PoolSizeSource::CgroupLimit))
        );
        let bare = HostMemory {
            cgroup_limit: None,
            machine: Some(16 * GIB),
        };
        assert_eq!(
            instance_memory(Some("0"), bare),
            Some((16 * GIB, PoolSizeSource::MachineMemory))
        );
        assert_eq!(instance_memory(None, HostMemory::default()), None);
    }

    #[test]
    fn a_configured_pool_is_kept_and_an_unset_one_follows_the_instance() {
        let host = HostMemory {
            cgroup_limit: None,
            machine: Some(8 * GIB),
        };
        let env = |name: &str| (name == "FC_FUNCTION_MEMORY_SIZE").then(|| "3072".to_owned());
        let mut cfg = SystemConfig::default();
        size_pool_from_instance(&mut cfg, &env, host);
        assert_eq!(cfg.virtual_memory_pool_size, 3 * GIB);
        assert_eq!(cfg.pool_size_source, PoolSizeSource::FcFunctionMemory);
        let mut set = SystemConfig {
            virtual_memory_pool_size: GIB,
            pool_size_source: PoolSizeSource::ConfigFile,
            ..SystemConfig::default()
        };
        size_pool_from_instance(&mut set, &env, host);
        assert_eq!(
            set.virtual_memory_pool_size, GIB,
            "Noslate's 1gb stays reachable"
        );
        // A tiny instance still gets the smallest pool one worker can use.
        let tiny = |_: &str| Some("1".to_owned());
        let mut cfg = SystemConfig::default();
        size_pool_from_instance(&mut cfg, &tiny, host);
        assert_eq!(cfg.virtual_memory_pool_size, MIN_MEMORY_LIMIT_BYTES);
    }

    #[test]
    fn cgroup_limits_are_read_for_v2_and_v1_and_the_tightest_ancestor_wins() {
        let root = std::env::temp_dir().join(format!("noslate-sizing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let own = root.join("box/inner");
        std::fs::create_dir_all(&own).expect("dirs");
        std::fs::write(root.join("box/memory.max"), "1073741824\n").expect("write");
        std::fs::write(own.join("memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_limit("0::/box/inner\n", &root), Some(GIB));
        std::fs::write(own.join("memory.max"), "536870912\n").expect("write");
        assert_eq!(cgroup_limit("0::/box/inner\n", &root), Some(GIB / 2));
        // v1: its own hierarchy; "unlimited" is no limit.
        let v1 = root.join("memory/job");
        std::fs::create_dir_all(&v1).expect("dirs");
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        assert_eq!(cgroup_limit("4:memory:/job\n", &root), None);
        std::fs::write(v1.join("memory.limit_in_bytes"), "2147483648\n").expect("write");
        assert_eq!(
            cgroup_limit("4:cpu,memory:/job\n3:pids:/job\n", &root),
            Some(2 * GIB)
        );
        assert_eq!(cgroup_limit("garbage", &root), None);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
    }
}
