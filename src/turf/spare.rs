//! Spare Node.js workers (`turf.spareWorkers`): bootstrap processes started ahead of need,
//! carrying no function's code, environment or working directory, and handed to the next
//! Node.js function that scales up. Node's own start-up (about 40 ms of the 45 ms a cold worker
//! takes to be ready) is then already paid; what is left is loading the handler.
//!
//! ```text
//!  Starting ──READY──▶ Ready ──taken by a function──▶ (a Worker from then on)
//!     │                  │
//!     └── crash ─────────┴── shape no longer wanted, runtime stopping ──▶ Stopping ──reaped
//! ```
//!
//! A spare is started exactly like a cold worker of the functions it can serve (same `node`
//! arguments, which include the V8 heap size derived from the memory limit; same rlimits; its own
//! cgroup with the same limits; same user and seccomp filter), except for its environment
//! (`PATH`, `HOME`, the protocol fds and `NOSLATE_SPARE=1`) and its cwd. Those arrive with INIT,
//! in its `spare` member, once a function takes it. The [`SpareShape`] is what must match.
//! A spare never serves two functions: once taken it is an ordinary worker, and it exits with
//! that function's worker.
//!
//! Node's startup snapshot (`--snapshot-blob`) of the bootstrap was measured as an addition and
//! left out: it did not shorten spawn-to-READY (26.1 ms against 24.9 ms, medians of 40) and made
//! INIT slower (docs/PROTOCOL.md, "Spare Node.js workers").
//!
//! Functions that cannot use spares start cold: those whose environment sets a variable Node.js
//! reads only at start-up (`NODE_*`, `UV_*`), and every function under `turf.isolation`'s
//! namespaces (the mount namespace is made for one code directory at spawn).

use crate::reactor::buffer::ReadBuf;
use crate::turf::child::ChildProc;
use crate::turf::plan::WorkerLimits;
use crate::wire::{self, Direction, Kind};
use mio::unix::pipe::{Receiver, Sender};
use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that starts the Node.js bootstrap as a spare.
pub const SPARE_ENV: &str = "NOSLATE_SPARE";
/// Prefixes of environment variables Node.js reads at start-up: a function setting one cannot
/// take a spare, which started without them.
pub const STARTUP_ENV_PREFIXES: [&str; 2] = ["NODE_", "UV_"];

/// What a spare must have in common with the function that takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpareShape {
    /// The interpreter.
    pub program: PathBuf,
    /// Its arguments: heap size, `execArgv`, the bootstrap.
    pub args: Vec<OsString>,
    /// The sandbox limits.
    pub limits: WorkerLimits,
}

/// Whether a function with this environment can take a spare.
pub fn env_allows_spare(env: &[(String, String)]) -> bool {
    !env.iter()
        .any(|(k, _)| STARTUP_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
}

/// The shape most of `shapes` share (the first of the most common), for the spares to take
/// before any function has scaled up.
pub fn most_common(shapes: &[SpareShape]) -> Option<&SpareShape> {
    let mut best: Option<(&SpareShape, usize)> = None;
    for s in shapes {
        let n = shapes.iter().filter(|o| *o == s).count();
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((s, n));
        }
    }
    best.map(|(s, _)| s)
}

/// Where a spare is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpareState {
    /// Forked; Node.js is starting.
    Starting,
    /// READY received: it waits for INIT.
    Ready,
    /// Being stopped.
    Stopping,
}

impl SpareState {
    /// Lowercase name for logs and `noslate stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpareState::Starting => "starting",
            SpareState::Ready => "ready",
            SpareState::Stopping => "stopping",
        }
    }
}

/// The runtime's record of one spare.
#[derive(Debug)]
pub struct Spare {
    /// Its process (named e.g. `spare-3`; its log directory moves under the function's when it
    /// is taken).
    pub process: ChildProc,
    /// Life-cycle state.
    pub state: SpareState,
    /// What it was started for.
    pub shape: SpareShape,
    /// Runtime → spare; `None` once closed to stop it.
    pub to_worker: Option<Sender>,
    /// Spare → runtime.
    pub from_worker: Option<Receiver>,
    /// Bytes read and not decoded (a READY frame arriving in pieces).
    pub rbuf: ReadBuf,
    /// What is enforced, as `noslate ps` shows it.
    pub enforcement: serde_json::Value,
    /// The limits the runtime polls itself because no cgroup enforces them.
    pub polled: crate::turf::poll::PolledLimits,
    /// It ended on its own or broke the protocol (not stopped by the runtime's choice): its
    /// exit is a failure that backs the refill off.
    pub failed: bool,
    /// Its READY asked for COMPACT_HEAD frames; the worker it becomes is sent those.
    pub compact_head: bool,
}

/// What reading a spare's pipe found.
#[derive(Debug, PartialEq, Eq)]
pub enum SpareRead {
    /// Nothing complete yet.
    Pending,
    /// The READY frame.
    Ready,
    /// The pipe closed: the spare is exiting.
    Closed,
    /// It broke the protocol (anything but READY before INIT).
    Protocol(String),
}

impl Spare {
    /// Reads what the spare sent: only a READY frame is allowed before it is taken. (A spare
    /// that dies is also seen when it is reaped, so a close read together with READY is not
    /// lost.)
    pub fn read(&mut self) -> SpareRead {
        let Some(pipe) = self.from_worker.as_mut() else {
            return SpareRead::Closed;
        };
        let fill = self.rbuf.fill_from(pipe);
        let data = self.rbuf.data();
        let frame = match wire::decode_frame(Direction::ToRuntime, data) {
            Ok(Some(frame)) => frame,
            Ok(None) if fill.closed => return SpareRead::Closed,
            Ok(None) => return SpareRead::Pending,
            Err(e) => return SpareRead::Protocol(e.to_string()),
        };
        if frame.header.kind != Kind::Ready {
            return SpareRead::Protocol(format!(
                "{:?} frame before it was assigned",
                frame.header.kind
            ));
        }
        let ready = wire::Ready::parse(frame.payload).ok();
        self.compact_head = ready.as_ref().and_then(|r| r.compact_head) == Some(true);
        let debugger = ready.and_then(|ready| ready.inspector);
        let used = frame.wire_len();
        self.rbuf.consume(used);
        if let Some(url) = debugger {
            return SpareRead::Protocol(format!(
                "a debugger is open on {url}: only an inspect worker may have one"
            ));
        }
        if !self.rbuf.data().is_empty() {
            return SpareRead::Protocol("frames after READY before it was assigned".into());
        }
        SpareRead::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(heap: &str) -> SpareShape {
        SpareShape {
            program: "/usr/bin/node".into(),
            args: vec![heap.into(), "/w/bootstrap.js".into()],
            limits: WorkerLimits::default(),
        }
    }

    #[test]
    fn the_most_common_shape_wins_and_ties_go_to_the_first() {
        assert_eq!(most_common(&[]), None);
        let (a, b) = (
            shape("--max-old-space-size=102"),
            shape("--max-old-space-size=409"),
        );
        assert_eq!(most_common(&[a.clone(), b.clone(), b.clone()]), Some(&b));
        assert_eq!(most_common(&[a.clone(), b.clone()]), Some(&a));
    }

    #[test]
    fn startup_variables_rule_out_a_spare() {
        let env = |k: &str| {
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                (k.into(), "x".into()),
            ]
        };
        assert!(env_allows_spare(&env("GREETING")));
        assert!(!env_allows_spare(&env("NODE_OPTIONS")));
        assert!(!env_allows_spare(&env("NODE_PATH")));
        assert!(!env_allows_spare(&env("UV_THREADPOOL_SIZE")));
    }
}
