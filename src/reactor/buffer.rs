//! A read buffer that is allocated once and reused: reads go straight into its free tail, so
//! no read ever zero-fills memory, and consumed bytes are reclaimed by moving the (usually
//! short) unconsumed rest to the front only when the tail is full.

use std::io::{self, Read};

/// What one [`ReadBuf::fill_from`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Bytes appended.
    pub bytes: usize,
    /// The source reached end of file or failed.
    pub closed: bool,
    /// The source has nothing more right now. When false and not closed, the buffer filled up
    /// first: the caller must read again after consuming, because no new readiness edge will
    /// come for data that is already waiting.
    pub drained: bool,
}

/// Buffers given back by connections between requests, kept for the next request to take
/// instead of asking the allocator: a fresh one is zeroed (read buffers), grown by doubling
/// (write buffers), and after frees at the heap's top faulted in again. Bounded by count and by
/// the size of what is kept, so that a burst leaves at most `keep` buffers of at most
/// `max_bytes` each behind.
#[derive(Debug)]
pub struct SpareBuffers {
    kept: Vec<Vec<u8>>,
    keep: usize,
    max_bytes: usize,
}

impl SpareBuffers {
    /// Keeps up to `keep` buffers of at most `max_bytes` (capacity) each.
    pub fn new(keep: usize, max_bytes: usize) -> Self {
        SpareBuffers {
            kept: Vec::new(),
            keep,
            max_bytes,
        }
    }

    /// A kept buffer, if any; its length is what it was given back with.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.kept.pop()
    }

    /// Keeps `buf` if there is room and it is not too large; otherwise frees it.
    pub fn give(&mut self, buf: Vec<u8>) {
        if buf.capacity() > 0 && buf.capacity() <= self.max_bytes && self.kept.len() < self.keep {
            self.kept.push(buf);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kept.len()
    }
}

/// Unconsumed input lives in `buf[start..end]`.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: usize,
    max: usize,
}

impl ReadBuf {
    /// A buffer that starts at `initial` bytes (allocated on first read) and may grow up to
    /// `max` bytes when one unit of input (a head, a frame) needs more room.
    pub fn new(initial: usize, max: usize) -> Self {
        ReadBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            initial,
            max: max.max(initial),
        }
    }

    /// Unconsumed input.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Marks `n` bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Raises how large the buffer may grow, and grows it now if it is smaller: a body
    /// streamed to a worker is read in pieces as large as the stream's credit, not a head's.
    pub fn grow_to(&mut self, max: usize) {
        self.max = max.max(self.initial);
        if !self.buf.is_empty() && self.buf.len() < self.max {
            self.buf.resize(self.max, 0);
        }
    }

    /// Sets how large the buffer may grow from now on, without growing it: back to a head's
    /// size after a streamed body. Memory already held above it is released by
    /// [`ReadBuf::shrink_if_empty`] and [`ReadBuf::release_if_empty`].
    pub fn limit_to(&mut self, max: usize) {
        self.max = max.max(self.initial);
    }

    /// Bytes of memory the buffer holds now.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// Drops all unconsumed input.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Whether the buffer is at its maximum size and holds no free space.
    pub fn is_full(&self) -> bool {
        !self.buf.is_empty() && self.end - self.start >= self.max
    }

    /// Releases memory above the initial size once everything is consumed.
    pub fn shrink_if_empty(&mut self) {
        if self.start == self.end && self.buf.len() > self.initial {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Releases the buffer's memory, whatever its size, once everything is consumed.
    pub fn release_if_empty(&mut self) {
        if self.start == self.end && !self.buf.is_empty() {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives an empty buffer's memory of its initial size to `spares`, and holds none after;
    /// larger memory (from a body read in bigger pieces) is freed.
    pub fn release_into(&mut self, spares: &mut SpareBuffers) {
        if self.start == self.end && !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            if buf.len() == self.initial {
                spares.give(buf);
            }
            self.start = 0;
            self.end = 0;
        }
    }

    /// Takes memory from `spares` for a buffer that holds none, so that its next read does
    /// not allocate. Only buffers of this buffer's initial size are ever given back.
    pub fn provide_from(&mut self, spares: &mut SpareBuffers) {
        if self.buf.is_empty()
            && let Some(buf) = spares.take()
        {
            if buf.len() == self.initial {
                self.buf = buf;
            } else {
                spares.give(buf);
            }
        }
    }

    /// Makes room at the tail: reclaim consumed bytes, else grow (up to `max`).
    fn make_room(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; self.initial];
        }
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        } else if self.buf.len() < self.max {
            let size = (self.buf.len() * 2).min(self.max);
            self.buf.resize(size, 0);
        }
    }

    /// Reads from `source` until it would block, ends, or the buffer's present allocation is
    /// full. It grows only when unconsumed input already fills it (one unit larger than the
    /// buffer), so a busy source is taken in bites of the buffer's size and the caller handles
    /// each bite before reading the next: a worker pipe, whose frames are best passed on while
    /// the worker writes more.
    pub fn fill_bounded_from<R: Read>(&mut self, source: &mut R) -> Fill {
        self.make_room();
        self.read_into_tail(source, false)
    }

    /// Reads from `source` until it would block, ends, or the buffer is full at its maximum.
    pub fn fill_from<R: Read>(&mut self, source: &mut R) -> Fill {
        self.read_into_tail(source, true)
    }

    /// Reads into the free tail until the source would block or ends, or the tail is full;
    /// with `grow`, a full tail is first made room for (reclaimed or grown up to `max`).
    fn read_into_tail<R: Read>(&mut self, source: &mut R, grow: bool) -> Fill {
        let mut fill = Fill {
            bytes: 0,
            closed: false,
            drained: false,
        };
        loop {
            if grow {
                self.make_room();
            }
            if self.end >= self.buf.len() {
                return fill;
            }
            let want = self.buf.len() - self.end;
            match source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    fill.closed = true;
                    return fill;
                }
                Ok(n) => {
                    self.end += n;
                    fill.bytes += n;
                    if n < want {
                        // A short read means the source is drained for now; edge-triggered
                        // readiness reports anything that arrives later.
                        fill.drained = true;
                        return fill;
                    }
                }
                Err(err) => match err.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => {
                        fill.drained = true;
                        return fill;
                    }
                    _ => {
                        log::debug!("read error: {err}");
                        fill.closed = true;
                        return fill;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_buffer_goes_back_to_the_spares_and_is_taken_again_without_allocating() {
        let mut spares = SpareBuffers::new(1, 16);
        let mut buf = ReadBuf::new(4, 8);
        let mut src: &[u8] = b"ab";
        buf.fill_from(&mut src);
        // Holding input: kept.
        buf.release_into(&mut spares);
        assert_eq!((buf.allocated(), spares.len()), (4, 0));
        buf.consume(2);
        buf.release_into(&mut spares);
        assert_eq!((buf.allocated(), spares.len()), (0, 1));
        let mut other = ReadBuf::new(4, 8);
        other.provide_from(&mut spares);
        assert_eq!((other.allocated(), spares.len()), (4, 0));
        let mut src: &[u8] = b"xyz";
        other.fill_from(&mut src);
        assert_eq!(
            other.data(),
            b"xyz",
            "old bytes are never read: only the filled part is"
        );
        // A grown buffer is freed, not kept; a full pool frees what it cannot keep.
        let mut src: &[u8] = b"0123456";
        other.fill_from(&mut src);
        assert_eq!(other.allocated(), 8);
        other.consume(10);
        other.release_into(&mut spares);
        assert_eq!(spares.len(), 0);
        spares.give(vec![0; 4]);
        spares.give(vec![0; 4]);
        assert_eq!(spares.len(), 1);
        spares.give(vec![0; 32]);
        assert_eq!(spares.len(), 1, "larger than max_bytes");
    }

    #[test]
    fn a_limit_only_caps_later_growth_and_grow_to_grows_at_once() {
        let mut buf = ReadBuf::new(4, 8);
        let mut src: &[u8] = b"ab";
        buf.fill_from(&mut src);
        assert_eq!(buf.allocated(), 4);
        // Every request sets a head's limit again: it must not allocate up to it.
        buf.limit_to(64);
        assert_eq!(buf.allocated(), 4);
        buf.grow_to(32);
        assert_eq!(buf.allocated(), 32);
        buf.limit_to(8);
        assert_eq!(buf.allocated(), 32, "held until released while empty");
        buf.consume(2);
        buf.shrink_if_empty();
        assert_eq!(buf.allocated(), 0);
        let mut src: &[u8] = b"0123456789";
        assert_eq!(buf.fill_from(&mut src).bytes, 8, "capped by the new limit");
    }

    #[test]
    fn reuses_and_grows_up_to_max() {
        let mut buf = ReadBuf::new(4, 8);
        let mut src: &[u8] = b"abcdefghij";
        let fill = buf.fill_from(&mut src);
        assert_eq!(
            (fill.bytes, fill.closed, fill.drained),
            (8, false, false),
            "grew to 8"
        );
        assert!(buf.is_full());
        assert_eq!(buf.data(), b"abcdefgh");
        buf.consume(6);
        assert_eq!(buf.fill_from(&mut src).bytes, 2);
        assert_eq!(buf.data(), b"ghij");
        let fill = buf.fill_from(&mut src);
        assert_eq!((fill.bytes, fill.closed), (0, true));
        buf.consume(4);
        buf.shrink_if_empty();
        assert!(buf.data().is_empty());
    }

    #[test]
    fn bounded_fill_takes_one_bite_and_grows_only_for_a_unit_larger_than_the_buffer() {
        let mut buf = ReadBuf::new(4, 8);
        let mut src: &[u8] = b"abcdefghijkl";
        let fill = buf.fill_bounded_from(&mut src);
        assert_eq!(
            (fill.bytes, fill.drained),
            (4, false),
            "one bite of the buffer's size"
        );
        assert_eq!(buf.data(), b"abcd");
        buf.consume(3);
        let fill = buf.fill_bounded_from(&mut src);
        assert_eq!(fill.bytes, 3, "consumed room is reclaimed, not grown");
        assert_eq!(buf.data(), b"defg");
        // Nothing consumed: the unconsumed unit fills the buffer, so it grows.
        let fill = buf.fill_bounded_from(&mut src);
        assert_eq!(fill.bytes, 4);
        assert_eq!(buf.data(), b"defghijk");
        buf.consume(8);
        let fill = buf.fill_bounded_from(&mut src);
        assert_eq!((fill.bytes, fill.drained), (1, true));
    }
}
