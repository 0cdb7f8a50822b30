//! mio tokens: a role in the top bits, and for slab-owned sources the slab key below it.
//!
//! ```text
//! bits 63..60  role      (listener, signal pipe, admin listener, connection, worker pipes,
//!                        seed socket, spare pipe, relayed output pipe,
//!                        metrics listener, code-package waker)
//! bits 59..32  generation of the slab key
//! bits 31..0   slab index
//! ```

use super::slab::Key;
use mio::Token;

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The FC listening socket.
    Listener,
    /// The signal self-pipe.
    Signals,
    /// The admin Unix socket's listener.
    Admin,
    /// A client connection.
    Conn(Key),
    /// The pipe the runtime reads worker frames from.
    WorkerOut(Key),
    /// The pipe the runtime writes frames to the worker on.
    WorkerIn(Key),
    /// A warm seed's control socket.
    Seed(Key),
    /// The pipe the runtime reads a spare worker's READY from.
    Spare(Key),
    /// A child's stdout or stderr pipe, relayed to the runtime's console.
    Output(Key),
    /// The metrics listener (`metrics.address`).
    Metrics,
    /// The waker code-package threads report through (`code::Packages`).
    Packages,
}

const ROLE_SHIFT: u32 = 60;

/// The token for a source.
pub fn token(source: Source) -> Token {
    let (role, key) = match source {
        Source::Listener => (0u64, None),
        Source::Signals => (1, None),
        Source::Admin => (5, None),
        Source::Conn(key) => (2, Some(key)),
        Source::WorkerOut(key) => (3, Some(key)),
        Source::WorkerIn(key) => (4, Some(key)),
        Source::Seed(key) => (6, Some(key)),
        Source::Spare(key) => (7, Some(key)),
        Source::Output(key) => (8, Some(key)),
        Source::Metrics => (9, None),
        Source::Packages => (10, None),
    };
    let low = key.map_or(0, |k| (u64::from(k.generation) << 32) | u64::from(k.idx));
    Token(usize::try_from((role << ROLE_SHIFT) | low).unwrap_or(usize::MAX))
}

/// The source a token names; `None` for a token the runtime never issued.
pub fn source(token: Token) -> Option<Source> {
    let raw = token.0 as u64;
    let key = Key {
        idx: (raw & 0xffff_ffff) as u32,
        generation: ((raw >> 32) & 0x0fff_ffff) as u32,
    };
    Some(match raw >> ROLE_SHIFT {
        0 => Source::Listener,
        1 => Source::Signals,
        2 => Source::Conn(key),
        3 => Source::WorkerOut(key),
        4 => Source::WorkerIn(key),
        5 => Source::Admin,
        6 => Source::Seed(key),
        7 => Source::Spare(key),
        8 => Source::Output(key),
        9 => Source::Metrics,
        10 => Source::Packages,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let key = Key {
            idx: 0xdead_beef,
            generation: 0x0abc_def1,
        };
        for s in [
            Source::Listener,
            Source::Signals,
            Source::Admin,
            Source::Conn(key),
            Source::WorkerOut(key),
            Source::WorkerIn(key),
            Source::Seed(key),
            Source::Spare(key),
            Source::Output(key),
            Source::Metrics,
            Source::Packages,
        ] {
            assert_eq!(source(token(s)), Some(s));
        }
        assert_eq!(source(Token(usize::MAX)), None);
    }
}
