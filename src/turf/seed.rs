//! Warm seeds: one process per Python function that has imported the function's module once,
//! and forks a new worker on request in about a millisecond instead of starting an interpreter
//! and importing again (tens of milliseconds).
//!
//! ```text
//!  Importing ──ready──▶ Ready ──(stop, EOF on its socket)──▶ Stopping ──reaped──▶ Exited
//!      │                  │
//!      └── failed ────────┴── crash, protocol error ──────────────────────────────▶ Exited
//! ```
//!
//! # How a forked worker is made (docs/PROTOCOL.md, "Warm seeds")
//!
//! 1. The runtime prepares what it prepares for a cold worker ([`spawn::prepare_fork`]: the
//!    protocol pipes, the log files, the cgroup) and sends the seed a `fork` message over their
//!    `SOCK_SEQPACKET` socket, with the worker's four descriptors attached (`SCM_RIGHTS`).
//! 2. The seed forks an intermediate process, which forks the worker and exits at once. The
//!    runtime is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so the orphaned worker becomes
//!    the runtime's child: the runtime reaps it and gets its exit status and rusage, exactly as
//!    for a cold worker.
//! 3. The intermediate answers `forked` with the worker's pid. The runtime moves the pid into
//!    the worker's cgroup and only then answers the worker's READY with INIT, so no user code
//!    (the initializer, the handler) runs outside the worker's own limits.
//! 4. The worker starts its own session (its pid is its process group, which the runtime
//!    signals), sets its parent-death signal once it has been reparented, places the
//!    descriptors on fds 3, 4, 1 and 2, reseeds its randomness, and from READY on is an
//!    ordinary worker.
//!
//! Everything else of the sandbox (rlimits, `turf.user`, no-new-privs, seccomp) the worker
//! inherits from the seed, which was spawned with the same [`spawn::SandboxPlan`].
//!
//! The order of the `forked` answer (on the seed's socket) and of the worker's READY (on its
//! own pipe) is not fixed, and a worker can even die and be reaped before its pid is known:
//! the server handles all three orders.

use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::turf::cgroup::WorkerCgroup;
use crate::turf::child::ChildProc;
use serde::Deserialize;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[cfg(doc)]
use crate::turf::spawn;

/// The argument that starts the Python bootstrap as a seed.
pub const SEED_ARG: &str = "--seed";
/// The largest message a seed sends (an import error with its stack).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Where a seed is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeedState {
    /// Started; importing the function's module.
    Importing,
    /// Forks workers on request.
    Ready,
    /// Its socket is closed (the seed exits on EOF) and SIGTERM sent; SIGKILL follows.
    Stopping,
}

impl SeedState {
    /// Lowercase name for logs and `noslate ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedState::Importing => "importing",
            SeedState::Ready => "ready",
            SeedState::Stopping => "stopping",
        }
    }
}

/// The runtime's record of one seed.
#[derive(Debug)]
pub struct Seed {
    /// Its process (named e.g. `hello-seed-2`): pid, cgroup (the function's limits), log
    /// directory (empty when worker output goes to the console), stop sequence.
    pub process: ChildProc,
    /// Index of its function.
    pub function: FunctionId,
    /// The function's generation it imported.
    pub generation: u64,
    /// Life-cycle state.
    pub state: SeedState,
    /// The runtime's end of the control socket; `None` once closed.
    pub control: Option<OwnedFd>,
    /// Workers asked for and not answered yet: (worker id, worker key).
    pub pending: Vec<(String, WorkerKey)>,
    /// Workers forked.
    pub forks: u64,
}

impl Seed {
    /// A seed that was just spawned.
    pub fn new(
        id: String,
        function: FunctionId,
        generation: u64,
        pid: i32,
        control: OwnedFd,
        cgroup: Option<WorkerCgroup>,
        log_dir: PathBuf,
    ) -> Seed {
        Seed {
            process: ChildProc {
                cgroup,
                log_dir,
                ..ChildProc::new(id, pid)
            },
            function,
            generation,
            state: SeedState::Importing,
            control: Some(control),
            pending: Vec::new(),
            forks: 0,
        }
    }

    /// Removes and returns the pending fork of worker `id`.
    pub fn take_pending(&mut self, id: &str) -> Option<WorkerKey> {
        let at = self.pending.iter().position(|(i, _)| i == id)?;
        Some(self.pending.swap_remove(at).1)
    }
}

/// The `fork` request for worker `worker_id`; `runtime_pid` is the parent the worker must end
/// up with (it checks, and exits otherwise).
pub fn fork_request(worker_id: &str, runtime_pid: i32) -> Vec<u8> {
    serde_json::json!({"op": "fork", "id": worker_id, "runtimePid": runtime_pid})
        .to_string()
        .into_bytes()
}

/// An error as the bootstraps report it (docs/PROTOCOL.md "Error").
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SeedError {
    /// The exception's type.
    #[serde(rename = "errorType", default)]
    pub error_type: String,
    /// Its message.
    #[serde(rename = "errorMessage", default)]
    pub error_message: String,
}

/// A message from a seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SeedMessage {
    /// The module is imported; the seed forks on request.
    Ready {
        /// The seed's pid.
        pid: i32,
        /// How long the import took.
        #[serde(rename = "importMs", default)]
        import_ms: f64,
    },
    /// The module could not be imported; the seed exits.
    Failed {
        /// Why.
        error: SeedError,
    },
    /// Worker `id` was forked as `pid`.
    Forked {
        /// The worker id of the request.
        id: String,
        /// Its pid.
        pid: i32,
    },
    /// Worker `id` could not be forked.
    ForkFailed {
        /// The worker id of the request.
        id: String,
        /// Why.
        error: String,
    },
}

impl SeedMessage {
    /// Decodes one message; the error names what was wrong, for the log.
    pub fn parse(bytes: &[u8]) -> Result<SeedMessage, String> {
        let msg: SeedMessage = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "malformed seed message ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })?;
        match &msg {
            SeedMessage::Ready { pid, .. } | SeedMessage::Forked { pid, .. } if *pid <= 1 => {
                Err(format!("seed message with an impossible pid {pid}"))
            }
            _ => Ok(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_and_bad_ones_say_why() {
        assert_eq!(
            SeedMessage::parse(br#"{"op":"ready","pid":42,"importMs":12.5}"#),
            Ok(SeedMessage::Ready {
                pid: 42,
                import_ms: 12.5
            })
        );
        assert_eq!(
            SeedMessage::parse(br#"{"op":"forked","id":"f-3","pid":77}"#),
            Ok(SeedMessage::Forked {
                id: "f-3".into(),
                pid: 77
            })
        );
        assert_eq!(
            SeedMessage::parse(br#"{"op":"fork-failed","id":"f-3","error":"EAGAIN"}"#),
            Ok(SeedMessage::ForkFailed {
                id: "f-3".into(),
                error: "EAGAIN".into()
            })
        );
        let failed = SeedMessage::parse(
            br#"{"op":"failed","error":{"errorType":"SyntaxError","errorMessage":"index.py:3"}}"#,
        );
        assert!(
            matches!(failed, Ok(SeedMessage::Failed { error }) if error.error_type == "SyntaxError")
        );
        for bad in [
            &br#"{"op":"forked","id":"x","pid":0}"#[..],
            br#"{"op":"forked","id":"x","pid":1}"#,
            br#"{"op":"dance"}"#,
            b"not json",
            br#"{"op":"forked","pid":5}"#,
        ] {
            assert!(
                SeedMessage::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fork_requests_name_the_worker_and_the_runtime() {
        let v: serde_json::Value = serde_json::from_slice(&fork_request("py-7", 1234)).unwrap();
        assert_eq!(v["op"], "fork");
        assert_eq!(v["id"], "py-7");
        assert_eq!(v["runtimePid"], 1234);
    }
}
