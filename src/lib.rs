//! noslate: a single-binary, low-latency serverless runtime for Alibaba Function Compute custom
//! containers.
//!
//! One thread runs one `mio` event loop ([`server`]) that answers FC's HTTP/1.1 calls
//! ([`http`], [`fc`]) and multiplexes invocations as streams over raw pipes ([`wire`]) to worker
//! processes that it forks and supervises itself ([`turf`], [`runtime`]), with per-function pools
//! and queues ([`pool`]). Configuration uses Noslate's JSON formats ([`config`]). All `unsafe`
//! lives in [`sys`]. See docs/ARCHITECTURE.md for the map and the state machines.

pub mod admin;
pub mod cli;
pub mod config;
pub mod fc;
pub mod http;
pub mod pool;
pub mod rand;
pub mod reactor;
pub mod runtime;
pub mod sched;
pub mod server;
pub mod sys;
pub mod turf;
pub mod wire;
