//! Event-loop plumbing that knows nothing about HTTP or workers: token encoding, the
//! generational slab that owns connections and workers, the deadline set that drives the
//! poll timeout, the clock the loop reads once per wake-up, and the wait that spins briefly
//! before it sleeps.

pub mod buffer;
pub mod busy_poll;
pub mod clock;
pub mod slab;
pub mod timer;
pub mod token;
