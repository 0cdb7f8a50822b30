//! Launch admission: the replica limit and the virtual memory pool (`virtualMemoryPoolSize`,
//! as in Noslate), and the error that names the limit which stopped a launch.
//!
//! Every worker reserves its function's `resourceLimit.memory` in the pool from its launch
//! until it has exited: starting, ready, draining and stopping workers all hold memory (Noslate
//! counts only ready workers, so a burst of starts can overcommit the pool). A
//! launch is allowed when the function's starting + ready workers stay within
//! `replicaCountLimit` and the reserved memory stays within the pool.

use std::fmt;

/// Why fewer workers were launched than wanted, with the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchBlock {
    /// `replicaCountLimit`: `current` workers are starting or ready, `limit` allowed.
    ReplicaLimit {
        /// Starting + ready workers of the function.
        current: usize,
        /// Its `replicaCountLimit`.
        limit: usize,
    },
    /// `virtualMemoryPoolSize`: `used` bytes are reserved, a worker needs `need`, the pool
    /// holds `total`.
    MemoryPool {
        /// Bytes reserved by live workers of all functions.
        used: u64,
        /// `resourceLimit.memory` of one worker of this function.
        need: u64,
        /// `virtualMemoryPoolSize`.
        total: u64,
    },
}

impl LaunchBlock {
    /// The `errorType` for requests failed because of it.
    pub fn error_type(&self) -> &'static str {
        match self {
            LaunchBlock::ReplicaLimit { .. } => "ReplicaLimitExceeded",
            LaunchBlock::MemoryPool { .. } => "NoEnoughVirtualMemory",
        }
    }
}

impl fmt::Display for LaunchBlock {
    /// Noslate's launcher messages (`kReplicaLimitExceeded`, `kNoEnoughVirtualMemoryPoolSize`),
    /// with the settings that would change the outcome and sizes in MiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchBlock::ReplicaLimit { current, limit } => write!(
                f,
                "Replica count exceeded limit ({current} / {limit}): raise the function's \
                 worker.replicaCountLimit to run more workers"
            ),
            LaunchBlock::MemoryPool { used, need, total } => write!(
                f,
                "No enough virtual memory (used: {} + need: {}) > total: {} \
                 (virtualMemoryPoolSize): workers reserve their resourceLimit.memory in the \
                 pool; raise virtualMemoryPoolSize or lower the function's resourceLimit.memory",
                mib(*used),
                mib(*need),
                mib(*total)
            ),
        }
    }
}

/// `bytes` as MiB, with a decimal only when it is not whole.
fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// What a launch request is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchLimits {
    /// The function's starting + ready workers.
    pub alive: usize,
    /// Its `replicaCountLimit`.
    pub replica_limit: usize,
    /// Its `resourceLimit.memory`, in bytes.
    pub memory_per_worker: u64,
    /// Bytes reserved in the pool by every worker (all functions) that has not exited.
    pub pool_used: u64,
    /// `virtualMemoryPoolSize`, in bytes.
    pub pool_size: u64,
}

/// How many of `wanted` launches fit, and, when not all of them do, the limit that stopped
/// the first one that did not (the replica limit is checked first, as Noslate does).
pub fn admit_launches(wanted: usize, limits: LaunchLimits) -> (usize, Option<LaunchBlock>) {
    let replica_room = limits.replica_limit.saturating_sub(limits.alive);
    let free = limits.pool_size.saturating_sub(limits.pool_used);
    let memory_room = match free.checked_div(limits.memory_per_worker) {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let allowed = wanted.min(replica_room).min(memory_room);
    if allowed == wanted {
        return (allowed, None);
    }
    let block = if allowed == replica_room {
        LaunchBlock::ReplicaLimit {
            current: limits.alive.saturating_add(allowed),
            limit: limits.replica_limit,
        }
    } else {
        LaunchBlock::MemoryPool {
            used: limits
                .pool_used
                .saturating_add(limits.memory_per_worker.saturating_mul(allowed as u64)),
            need: limits.memory_per_worker,
            total: limits.pool_size,
        }
    };
    (allowed, Some(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits(alive: usize, replica_limit: usize, pool_used: u64) -> LaunchLimits {
        LaunchLimits {
            alive,
            replica_limit,
            memory_per_worker: 256 * MIB,
            pool_used,
            pool_size: 1024 * MIB,
        }
    }

    #[test]
    fn everything_fits() {
        assert_eq!(admit_launches(0, limits(0, 0, 1024 * MIB)), (0, None));
        assert_eq!(admit_launches(2, limits(1, 4, 256 * MIB)), (2, None));
    }

    #[test]
    fn the_replica_limit_names_its_numbers() {
        let (n, block) = admit_launches(3, limits(2, 4, 0));
        assert_eq!(n, 2);
        let block = block.expect("blocked");
        assert_eq!(
            block,
            LaunchBlock::ReplicaLimit {
                current: 4,
                limit: 4
            }
        );
        assert!(
            block
                .to_string()
                .starts_with("Replica count exceeded limit (4 / 4): raise the function's worker.replicaCountLimit"),
            "{block}"
        );
        assert_eq!(block.error_type(), "ReplicaLimitExceeded");
        // Noslate's test: replicaCountLimit 0.
        let (n, block) = admit_launches(1, limits(0, 0, 0));
        assert_eq!(n, 0);
        assert!(block.is_some_and(|b| {
            b.to_string()
                .starts_with("Replica count exceeded limit (0 / 0)")
        }));
    }

    #[test]
    fn the_memory_pool_counts_every_live_worker() {
        // Noslate's baseline: 4 × 256 MiB fit in 1 GiB; 4 × 512 MiB, only 2.
        assert_eq!(admit_launches(4, limits(0, 10, 0)), (4, None));
        let mut l = limits(0, 10, 0);
        l.memory_per_worker = 512 * MIB;
        let (n, block) = admit_launches(4, l);
        assert_eq!(n, 2);
        let block = block.expect("blocked");
        assert_eq!(
            block,
            LaunchBlock::MemoryPool {
                used: 1024 * MIB,
                need: 512 * MIB,
                total: 1024 * MIB
            }
        );
        assert_eq!(
            block.to_string(),
            "No enough virtual memory (used: 1024 MiB + need: 512 MiB) > total: 1024 MiB \
             (virtualMemoryPoolSize): workers reserve their resourceLimit.memory in the pool; \
             raise virtualMemoryPoolSize or lower the function's resourceLimit.memory"
        );
        let odd = LaunchBlock::MemoryPool {
            used: 3 * MIB / 2,
            need: MIB,
            total: 2 * MIB,
        };
        assert!(odd.to_string().contains("used: 1.5 MiB"), "{odd}");
        assert_eq!(block.error_type(), "NoEnoughVirtualMemory");
        // Already over (the pool shrank under live workers): nothing, no underflow.
        assert_eq!(admit_launches(1, limits(0, 10, 2048 * MIB)).0, 0);
    }

    #[test]
    fn the_tighter_limit_is_named() {
        // Room for 1 by replicas, 2 by memory: the replica limit stops the second.
        let (n, block) = admit_launches(3, limits(3, 4, 512 * MIB));
        assert_eq!(n, 1);
        assert!(matches!(block, Some(LaunchBlock::ReplicaLimit { .. })));
        // Room for 3 by replicas, 1 by memory.
        let (n, block) = admit_launches(3, limits(1, 4, 768 * MIB));
        assert_eq!(n, 1);
        assert!(matches!(block, Some(LaunchBlock::MemoryPool { .. })));
        // Equal room: the replica limit is reported, as Noslate checks it first.
        let (n, block) = admit_launches(3, limits(2, 4, 512 * MIB));
        assert_eq!(n, 2);
        assert!(matches!(block, Some(LaunchBlock::ReplicaLimit { .. })));
    }

    #[test]
    fn a_zero_memory_limit_never_blocks() {
        let mut l = limits(0, 8, 1024 * MIB);
        l.memory_per_worker = 0;
        assert_eq!(admit_launches(5, l), (5, None));
    }
}
