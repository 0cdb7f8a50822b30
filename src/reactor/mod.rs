//! Event-loop plumbing that knows nothing about HTTP or workers: token encoding, the
//! generational slab that owns connections and workers, and the deadline set that drives the
//! poll timeout.

pub mod buffer;
pub mod slab;
pub mod timer;
pub mod token;
