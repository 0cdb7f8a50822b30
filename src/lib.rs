//! noslate: a single-binary, low-latency serverless runtime for Alibaba Function Compute custom
//! containers.
//!
//! One thread runs one `mio` event loop (`server`) that answers FC's HTTP/1.1 calls ([`http`],
//! `fc`) and multiplexes invocations as streams over raw pipes ([`wire`]) to worker processes
//! that it forks and supervises itself (`turf`, `runtime`), with per-function pools and queues
//! (`pool`, [`sched`]). Configuration uses Noslate's JSON formats ([`config`]). All `unsafe`
//! lives in `sys`. See docs/ARCHITECTURE.md for the map and the state machines.
//!
//! The library exports what the `noslate` binary ([`cli`]), the integration tests and the fuzz
//! targets use (the command line, the configuration loaders, the HTTP parsers, the worker frame
//! codec, the code package unpackers), and the pure scheduling decisions ([`sched`]);
//! everything else is internal.

pub(crate) mod admin;
pub mod cli;
pub(crate) mod code;
pub mod config;
pub(crate) mod fc;
pub mod http;
pub(crate) mod ids;
pub(crate) mod inspector;
pub(crate) mod json_text;
pub(crate) mod metrics;
pub(crate) mod pool;
pub(crate) mod rand;
pub(crate) mod reactor;
pub(crate) mod runtime;
pub mod sched;
pub(crate) mod server;
pub(crate) mod sys;
pub(crate) mod turf;
pub mod wire;

/// The oldest Python the `python3` runtime supports (stated and enforced in one place).
pub use runtime::MIN_PYTHON;

/// The decoders of code packages, which read archives fetched from anywhere, and the parser of
/// an admin invocation's headers, which a gateway fills from its own clients' requests:
/// exported for the fuzz targets.
pub use admin::invocation as admin_invocation;
pub use code::{inflate, zip};
