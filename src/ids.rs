//! The typed keys by which the runtime's parts refer to each other's records, so that one
//! kind of key cannot be passed where another is meant.

use crate::reactor::slab::Key;
use std::fmt;

/// A function's place in the scheduler's table. The place of a removed function that nothing
/// refers to any more is given to the next function added, so the table does not grow with
/// every add-and-remove cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(u32);

impl FunctionId {
    /// The function at `index` in the table.
    pub fn new(index: usize) -> FunctionId {
        FunctionId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Its index in the table.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Every id of a table of `len` functions.
    pub fn all(len: usize) -> impl Iterator<Item = FunctionId> {
        (0..len).map(FunctionId::new)
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function #{}", self.0)
    }
}

/// A worker's key in the supervisor's worker slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey(pub Key);

impl From<Key> for WorkerKey {
    fn from(key: Key) -> WorkerKey {
        WorkerKey(key)
    }
}

impl From<WorkerKey> for Key {
    fn from(key: WorkerKey) -> Key {
        key.0
    }
}

/// The client side of a stream or a queue entry: a connection and the request sequence
/// number on it (connections serve requests one after another, so the connection alone does
/// not name a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    /// The connection.
    pub conn: Key,
    /// Which request on that connection.
    pub seq: u64,
}
