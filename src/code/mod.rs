//! Code packages.

pub mod inflate;
pub mod zip;
