//! Turf: the runtime's own process supervisor. It forks workers with their protocol pipes on
//! fixed fds, a clean environment, their own session and log files, and keeps the per-worker
//! record the event loop drives (state, pipes, buffers, open streams). Python functions can
//! also have a warm seed (`seed`) that forks their workers; Node.js functions take pre-started
//! spare processes (`spare`).

pub mod accounting;
pub mod body_pipe;
pub mod cgroup;
pub mod child;
pub mod gateway;
pub mod origin;
pub mod plan;
pub mod poll;
pub mod privilege;
pub mod probe;
pub mod seccomp;
pub mod seed;
pub mod spare;
pub mod spawn;
pub mod stats;
pub mod worker;
