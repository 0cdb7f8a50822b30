//! A DEFLATE (RFC 1951) decoder: stored, fixed-Huffman and dynamic-Huffman blocks.
//!
//! The input is read from a reader in 64 KiB pieces, and the output goes to a sink in pieces
//! while a 32 KiB window (the farthest a match may reach back) is kept, so an entry of any
//! size costs bounded memory on both sides. The output is counted as it is
//! produced, and decoding stops with [`InflateError::TooLarge`] as soon as it passes the
//! caller's limit: a bomb is caught on the bytes it actually expands to, not on the size its
//! archive declares. Every malformed input is an error; nothing here panics on input.
//!
//! Huffman codes are decoded with a table indexed by the next [`FAST_BITS`] bits, which holds
//! every code that short (nearly all symbols of real data). A longer code, an unused bit
//! pattern, or the last few bits of the input fall back to canonical decoding, one bit at a
//! time against the count of codes of each length (at most 15 steps per symbol).

use std::fmt;
use std::io::{self, Read};
use std::sync::OnceLock;

/// How far back a match may reach.
const WINDOW: usize = 32 * 1024;
/// Output is handed to the sink once this much beyond the window has accumulated.
const FLUSH_AT: usize = 4 * WINDOW;
/// Longest Huffman code.
const MAX_BITS: usize = 15;
/// Compressed input is read in pieces of this size.
const INPUT_CHUNK: usize = 64 * 1024;
/// Codes up to this long are decoded by one table lookup.
const FAST_BITS: u32 = 10;

/// Why a stream could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// The input ended before the final block did.
    Truncated,
    /// A block header with the reserved type 3.
    BadBlockType,
    /// A stored block whose length and its complement disagree.
    BadStoredLength,
    /// Code lengths that do not form a usable Huffman code.
    BadCodeLengths,
    /// A bit pattern that is no code, or a reserved symbol.
    BadSymbol,
    /// A match reaching back before the start of the output.
    DistanceTooFar,
    /// The output passed the limit (in bytes).
    TooLarge(u64),
    /// The sink refused the output.
    Sink(String),
    /// The input could not be read.
    Input(String),
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Truncated => f.write_str("the deflate stream is truncated"),
            InflateError::BadBlockType => f.write_str("a deflate block has the reserved type 3"),
            InflateError::BadStoredLength => {
                f.write_str("a stored deflate block's length does not match its complement")
            }
            InflateError::BadCodeLengths => {
                f.write_str("a deflate block has invalid Huffman code lengths")
            }
            InflateError::BadSymbol => f.write_str("a deflate block has an invalid code"),
            InflateError::DistanceTooFar => {
                f.write_str("a deflate match reaches before the start of the data")
            }
            InflateError::TooLarge(limit) => write!(f, "inflates to more than {limit} bytes"),
            InflateError::Sink(why) => f.write_str(why),
            InflateError::Input(why) => write!(f, "cannot read the compressed data: {why}"),
        }
    }
}

/// Inflates the raw DEFLATE stream read from `input`, handing the output to `sink` in pieces.
/// Fails with [`InflateError::TooLarge`] once more than `max_out` bytes come out. Returns the
/// number of bytes produced. Input after the final block is ignored (and may be left unread).
pub fn inflate(
    input: &mut dyn Read,
    max_out: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, InflateError> {
    let mut out = Output {
        buf: Vec::with_capacity(FLUSH_AT + WINDOW),
        flushed: 0,
        max_out,
        sink,
    };
    let mut bits = Bits::new(input);
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => stored(&mut bits, &mut out)?,
            1 => {
                let (lit, dist) = fixed_codes()?;
                codes(&mut bits, &mut out, lit, dist)?;
            }
            2 => {
                let (lit, dist) = dynamic_codes(&mut bits)?;
                codes(&mut bits, &mut out, &lit, &dist)?;
            }
            _ => return Err(InflateError::BadBlockType),
        }
        if last {
            break;
        }
    }
    out.finish()
}

/// The output: the unflushed tail (at least the window once anything was flushed), the count
/// of bytes already handed on, and where they go.
struct Output<'s> {
    buf: Vec<u8>,
    flushed: u64,
    max_out: u64,
    sink: &'s mut dyn FnMut(&[u8]) -> Result<(), String>,
}

impl Output<'_> {
    fn total(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Makes room for `n` more bytes: checks the limit and flushes all but the window.
    fn reserve(&mut self, n: usize) -> Result<(), InflateError> {
        if self.total() + n as u64 > self.max_out {
            return Err(InflateError::TooLarge(self.max_out));
        }
        if self.buf.len() >= FLUSH_AT + WINDOW {
            let cut = self.buf.len() - WINDOW;
            (self.sink)(&self.buf[..cut]).map_err(InflateError::Sink)?;
            self.buf.drain(..cut);
            self.flushed += cut as u64;
        }
        Ok(())
    }

    /// Appends `bytes`, flushing and failing at the same output positions as pushing them one
    /// at a time would (so that neither depends on how the input was split).
    fn extend(&mut self, mut bytes: &[u8]) -> Result<(), InflateError> {
        while !bytes.is_empty() {
            self.reserve(1)?;
            let to_flush = FLUSH_AT + WINDOW - self.buf.len();
            let to_limit = usize::try_from(self.max_out - self.total()).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(to_flush).min(to_limit));
            self.buf.extend_from_slice(now);
            bytes = rest;
        }
        Ok(())
    }

    fn push(&mut self, byte: u8) -> Result<(), InflateError> {
        self.reserve(1)?;
        self.buf.push(byte);
        Ok(())
    }

    /// Copies `len` bytes starting `dist` back (they may overlap what is being written).
    fn copy_back(&mut self, dist: usize, len: usize) -> Result<(), InflateError> {
        if dist == 0 || dist as u64 > self.total() || dist > self.buf.len() {
            return Err(InflateError::DistanceTooFar);
        }
        self.reserve(len)?;
        // A match longer than its distance repeats the last `dist` bytes: copied a distance at
        // a time, each copy reading what the one before wrote.
        let mut left = len;
        while left > 0 {
            let piece = left.min(dist);
            let start = self.buf.len() - dist;
            self.buf.extend_from_within(start..start + piece);
            left -= piece;
        }
        Ok(())
    }

    fn finish(self) -> Result<u64, InflateError> {
        if !self.buf.is_empty() {
            (self.sink)(&self.buf).map_err(InflateError::Sink)?;
        }
        Ok(self.total())
    }
}

/// Bits read least significant first, as DEFLATE packs them, from input read a piece at a
/// time.
struct Bits<'r> {
    source: &'r mut dyn Read,
    chunk: Box<[u8]>,
    len: usize,
    pos: usize,
    buf: u64,
    count: u32,
}

impl<'r> Bits<'r> {
    fn new(source: &'r mut dyn Read) -> Self {
        Bits {
            source,
            chunk: vec![0; INPUT_CHUNK].into_boxed_slice(),
            len: 0,
            pos: 0,
            buf: 0,
            count: 0,
        }
    }

    /// Reads more input when all that was read is used; false at the end of the input.
    fn fill(&mut self) -> Result<bool, InflateError> {
        if self.pos == self.len {
            self.len = loop {
                match self.source.read(&mut self.chunk) {
                    Ok(n) => break n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(InflateError::Input(err.to_string())),
                }
            };
            self.pos = 0;
        }
        Ok(self.pos < self.len)
    }

    /// The next input byte; `None` at the end of the input.
    fn next_byte(&mut self) -> Result<Option<u8>, InflateError> {
        if !self.fill()? {
            return Ok(None);
        }
        let byte = self.chunk[self.pos];
        self.pos += 1;
        Ok(Some(byte))
    }

    /// The next input byte.
    fn byte(&mut self) -> Result<u8, InflateError> {
        self.next_byte()?.ok_or(InflateError::Truncated)
    }

    /// The next byte at a byte boundary (after [`Bits::align`]): whole bytes a lookahead has
    /// buffered come first.
    fn aligned_byte(&mut self) -> Result<u8, InflateError> {
        if self.count >= 8 {
            return Ok(self.take(8)? as u8);
        }
        self.byte()
    }

    /// Hands the next `n` bytes at a byte boundary (after [`Bits::align`]) to `out`: whole
    /// bytes a lookahead has buffered first, then the input as read.
    fn copy_aligned(&mut self, mut n: usize, out: &mut Output<'_>) -> Result<(), InflateError> {
        while n > 0 && self.count >= 8 {
            out.push(self.take(8)? as u8)?;
            n -= 1;
        }
        while n > 0 {
            if !self.fill()? {
                return Err(InflateError::Truncated);
            }
            let piece = n.min(self.len - self.pos);
            out.extend(&self.chunk[self.pos..self.pos + piece])?;
            self.pos += piece;
            n -= piece;
        }
        Ok(())
    }

    /// The next `n` (at most 32) bits without consuming them, and how many of them the input
    /// still has (fewer than `n` only near its end; the missing ones read as zeros).
    fn peek(&mut self, n: u32) -> Result<(u32, u32), InflateError> {
        if self.count < n && self.len - self.pos >= 8 {
            // As many whole bytes as fit, in one load: enough for a literal/length code, its
            // extra bits, a distance code and its extra bits, so the symbols after this one
            // seldom come back here.
            let mut word = [0u8; 8];
            word.copy_from_slice(&self.chunk[self.pos..self.pos + 8]);
            let bytes = (63 - self.count) / 8;
            let fresh = u64::from_le_bytes(word) & ((1u64 << (bytes * 8)) - 1);
            self.buf |= fresh << self.count;
            self.pos += bytes as usize;
            self.count += bytes * 8;
        }
        while self.count < n {
            let Some(byte) = self.next_byte()? else { break };
            self.buf |= u64::from(byte) << self.count;
            self.count += 8;
        }
        Ok(((self.buf & ((1u64 << n) - 1)) as u32, self.count.min(n)))
    }

    /// Drops `n` bits that [`Bits::peek`] has buffered.
    fn consume(&mut self, n: u32) {
        self.buf >>= n;
        self.count -= n;
    }

    /// The next `n` (at most 16) bits as a number.
    fn take(&mut self, n: u32) -> Result<u32, InflateError> {
        while self.count < n {
            let byte = self.byte()?;
            self.buf |= u64::from(byte) << self.count;
            self.count += 8;
        }
        let value = (self.buf & ((1u64 << n) - 1)) as u32;
        self.buf >>= n;
        self.count -= n;
        Ok(value)
    }

    /// Drops the bits left of the current byte; whole bytes buffered by a lookahead stay.
    fn align(&mut self) {
        self.consume(self.count % 8);
    }
}

/// A canonical Huffman code: how many codes have each length, the symbols in code order, and
/// the lookup table of the short codes.
struct Huffman {
    counts: [u16; MAX_BITS + 1],
    symbols: Vec<u16>,
    /// Indexed by the next [`FAST_BITS`] input bits: `symbol << 4 | length` of the code they
    /// start with, or 0 when that code is longer (or the bits start no code).
    fast: Box<[u16; 1 << FAST_BITS]>,
}

impl Huffman {
    /// Builds the code from each symbol's code length (0: unused). Over-subscribed lengths are
    /// refused; an incomplete code is built (its unused patterns fail when decoded), and
    /// [`Huffman::is_sendable`] says whether a dynamic block may carry it.
    fn new(lengths: &[u8]) -> Result<Huffman, InflateError> {
        let mut counts = [0u16; MAX_BITS + 1];
        for &len in lengths {
            let len = usize::from(len);
            if len > MAX_BITS {
                return Err(InflateError::BadCodeLengths);
            }
            counts[len] += 1;
        }
        let mut left: i32 = 1;
        for &count in &counts[1..] {
            left = (left << 1) - i32::from(count);
            if left < 0 {
                return Err(InflateError::BadCodeLengths);
            }
        }
        let mut offsets = [0u16; MAX_BITS + 2];
        for len in 1..=MAX_BITS {
            offsets[len + 1] = offsets[len] + counts[len];
        }
        let mut symbols = vec![0u16; usize::from(offsets[MAX_BITS + 1])];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                let slot = &mut offsets[usize::from(len)];
                symbols[usize::from(*slot)] = symbol as u16;
                *slot += 1;
            }
        }
        // Canonical codes (RFC 1951, 3.2.2): each length's first code follows the last code of
        // the length before; symbols of one length take consecutive codes in symbol order.
        // (`counts[0]` counts the unused symbols, which take no code.)
        let mut next_code = [0u32; MAX_BITS + 1];
        for len in 2..=MAX_BITS {
            next_code[len] = (next_code[len - 1] + u32::from(counts[len - 1])) << 1;
        }
        let mut fast = Box::new([0u16; 1 << FAST_BITS]);
        for (symbol, &len) in lengths.iter().enumerate() {
            let len = u32::from(len);
            if len == 0 {
                continue;
            }
            let code = next_code[len as usize];
            next_code[len as usize] += 1;
            if len > FAST_BITS {
                continue;
            }
            // Codes are packed most significant bit first into a stream read least significant
            // bit first: the table is indexed by the code reversed, whatever bits follow it.
            let reversed = code.reverse_bits() >> (32 - len);
            let entry = (symbol as u16) << 4 | len as u16;
            for index in (reversed as usize..fast.len()).step_by(1 << len) {
                fast[index] = entry;
            }
        }
        Ok(Huffman {
            counts,
            symbols,
            fast,
        })
    }

    /// Whether a dynamic block may send this code: a complete one, or one with a single code of
    /// one bit (a block with one literal or one distance), or none at all (a distance code
    /// of a block of literals only). zlib refuses every other incomplete code, as corrupt
    /// data: decoding what it refuses would turn a damaged archive into wrong bytes that only
    /// the CRC could catch.
    fn is_sendable(&self) -> bool {
        let longest = (1..=MAX_BITS).rev().find(|&len| self.counts[len] > 0);
        self.is_complete() || longest.is_none() || (longest == Some(1) && self.counts[1] == 1)
    }

    /// Whether every bit pattern decodes to a symbol.
    fn is_complete(&self) -> bool {
        let mut unused: i32 = 1;
        for &count in &self.counts[1..] {
            unused = (unused << 1) - i32::from(count);
        }
        unused == 0
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, InflateError> {
        let (next, available) = bits.peek(FAST_BITS)?;
        let entry = self.fast[next as usize];
        let len = u32::from(entry & 0xf);
        if len != 0 && len <= available {
            bits.consume(len);
            return Ok(entry >> 4);
        }
        self.decode_bitwise(bits)
    }

    /// Decodes one bit at a time: codes longer than the table's, unused patterns, and the end
    /// of the input.
    fn decode_bitwise(&self, bits: &mut Bits<'_>) -> Result<u16, InflateError> {
        let mut code: i32 = 0;
        let mut first: i32 = 0;
        let mut index: i32 = 0;
        for len in 1..=MAX_BITS {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                let at =
                    usize::try_from(index + code - first).map_err(|_| InflateError::BadSymbol)?;
                return self.symbols.get(at).copied().ok_or(InflateError::BadSymbol);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(InflateError::BadSymbol)
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code-length code lengths are sent in.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

fn stored(bits: &mut Bits<'_>, out: &mut Output<'_>) -> Result<(), InflateError> {
    bits.align();
    let mut header = [0u8; 4];
    for byte in &mut header {
        *byte = bits.aligned_byte()?;
    }
    let len = u16::from_le_bytes([header[0], header[1]]);
    let nlen = u16::from_le_bytes([header[2], header[3]]);
    if len != !nlen {
        return Err(InflateError::BadStoredLength);
    }
    bits.copy_aligned(usize::from(len), out)
}

/// The fixed codes, built once: a package's small files are often a fixed block each, one
/// stream per file, and a table of 1 024 entries per code is not worth rebuilding for each.
fn fixed_codes() -> Result<&'static (Huffman, Huffman), InflateError> {
    static FIXED: OnceLock<Result<(Huffman, Huffman), InflateError>> = OnceLock::new();
    FIXED
        .get_or_init(build_fixed_codes)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_fixed_codes() -> Result<(Huffman, Huffman), InflateError> {
    let mut lengths = [0u8; 288];
    for (symbol, len) in lengths.iter_mut().enumerate() {
        *len = match symbol {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    Ok((Huffman::new(&lengths)?, Huffman::new(&[5u8; 30])?))
}

fn dynamic_codes(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), InflateError> {
    let nlen = bits.take(5)? as usize + 257;
    let ndist = bits.take(5)? as usize + 1;
    let ncode = bits.take(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err(InflateError::BadCodeLengths);
    }
    let mut clens = [0u8; 19];
    for &at in &CLEN_ORDER[..ncode] {
        clens[at] = bits.take(3)? as u8;
    }
    let clen_code = Huffman::new(&clens)?;
    if !clen_code.is_complete() {
        return Err(InflateError::BadCodeLengths);
    }
    let mut lengths = [0u8; 286 + 30];
    let total = nlen + ndist;
    let mut i = 0;
    while i < total {
        let symbol = clen_code.decode(bits)?;
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => {
                let previous = *i
                    .checked_sub(1)
                    .and_then(|p| lengths.get(p))
                    .ok_or(InflateError::BadCodeLengths)?;
                (previous, 3 + bits.take(2)? as usize)
            }
            17 => (0, 3 + bits.take(3)? as usize),
            18 => (0, 11 + bits.take(7)? as usize),
            _ => return Err(InflateError::BadCodeLengths),
        };
        if i + repeat > total {
            return Err(InflateError::BadCodeLengths);
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        // No end-of-block code: the block could never end.
        return Err(InflateError::BadCodeLengths);
    }
    let lit = Huffman::new(&lengths[..nlen])?;
    let dist = Huffman::new(&lengths[nlen..total])?;
    if !lit.is_sendable() || !dist.is_sendable() {
        return Err(InflateError::BadCodeLengths);
    }
    Ok((lit, dist))
}

fn codes(
    bits: &mut Bits<'_>,
    out: &mut Output<'_>,
    lit: &Huffman,
    dist: &Huffman,
) -> Result<(), InflateError> {
    loop {
        let symbol = lit.decode(bits)?;
        match symbol {
            0..=255 => out.push(symbol as u8)?,
            256 => return Ok(()),
            257..=285 => {
                let at = usize::from(symbol - 257);
                let len =
                    usize::from(LENGTH_BASE[at]) + bits.take(u32::from(LENGTH_EXTRA[at]))? as usize;
                let d = usize::from(dist.decode(bits)?);
                if d >= DIST_BASE.len() {
                    return Err(InflateError::BadSymbol);
                }
                let back =
                    usize::from(DIST_BASE[d]) + bits.take(u32::from(DIST_EXTRA[d]))? as usize;
                out.copy_back(back, len)?;
            }
            _ => return Err(InflateError::BadSymbol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max: u64) -> Result<Vec<u8>, InflateError> {
        let mut got = Vec::new();
        let mut sink = |piece: &[u8]| {
            got.extend_from_slice(piece);
            Ok(())
        };
        let mut reader = input;
        let n = inflate(&mut reader, max, &mut sink)?;
        assert_eq!(n, got.len() as u64);
        Ok(got)
    }

    #[test]
    fn a_stored_block_comes_out_as_is() {
        let input = [0x01, 0x05, 0x00, 0xfa, 0xff, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(run(&input, 100).unwrap(), b"hello");
    }

    #[test]
    fn a_fixed_block_decodes() {
        // zlib.compress(b"hello hello hello", wbits=-15) with fixed codes.
        let input = [0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x40, 0x90, 0x00];
        assert_eq!(run(&input, 100).unwrap(), b"hello hello hello");
    }

    #[test]
    fn an_empty_fixed_block_is_empty_output() {
        assert_eq!(run(&[0x03, 0x00], 10).unwrap(), b"");
    }

    #[test]
    fn output_past_the_limit_is_refused_while_inflating() {
        let input = [0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x40, 0x90, 0x00];
        assert_eq!(run(&input, 16), Err(InflateError::TooLarge(16)));
        assert_eq!(run(&input, 17).unwrap().len(), 17);
    }

    #[test]
    fn malformed_streams_are_errors() {
        assert_eq!(run(&[], 10), Err(InflateError::Truncated));
        assert_eq!(run(&[0x07], 10), Err(InflateError::BadBlockType));
        assert_eq!(
            run(&[0x01, 0x05, 0x00, 0x00, 0x00], 10),
            Err(InflateError::BadStoredLength)
        );
        assert_eq!(
            run(&[0x01, 0x05, 0x00, 0xfa, 0xff, b'h'], 10),
            Err(InflateError::Truncated)
        );
        // A fixed block whose first symbol is a match with nothing before it.
        // Length code 257 (7 bits 0000001) then distance 0 (5 bits 00000).
        assert_eq!(
            run(&[0x03, 0x02, 0x00], 10),
            Err(InflateError::DistanceTooFar)
        );
    }

    #[test]
    fn a_dynamic_block_from_zlib_decodes() {
        // zlib's level 9 of 400 random common words and then every byte value once: one
        // dynamic block, whose rare symbols take codes longer than the lookup table's.
        let input = include_bytes!("testdata/words.deflate");
        let expected = include_bytes!("testdata/words.bin");
        assert_eq!((input[0] >> 1) & 3, 2, "a dynamic block");
        assert_eq!(run(input, 1 << 20).unwrap(), expected);
        // And fed a byte at a time, the lookahead meeting the end of every read.
        let mut got = Vec::new();
        let mut reader = OneByte(input);
        inflate(&mut reader, 1 << 20, &mut |piece: &[u8]| {
            got.extend_from_slice(piece);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, expected);
    }

    /// A reader that returns one byte per read.
    struct OneByte<'a>(&'a [u8]);

    impl std::io::Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&byte, rest)), Some(slot)) => {
                    *slot = byte;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn the_lookup_table_and_bitwise_decoding_agree_on_every_code_length() {
        // Lengths 1 to 15 and a second 15: a complete code with codes of every length.
        let mut lengths: Vec<u8> = (1..=15).collect();
        lengths.push(15);
        let code = Huffman::new(&lengths).unwrap();
        assert!(code.is_complete());
        // Canonical codes: symbol i < 15 is i ones and a zero; the last two are all ones but
        // the last bit. Packed most significant bit first into an LSB-first stream.
        let mut stream = Vec::new();
        let (mut acc, mut count) = (0u64, 0);
        for (symbol, &len) in lengths.iter().enumerate() {
            let len = u32::from(len);
            let code_value: u32 = match symbol {
                0..=14 => ((1 << len) - 1) & !1,
                _ => (1 << len) - 1,
            };
            for bit in (0..len).rev() {
                acc |= u64::from((code_value >> bit) & 1) << count;
                count += 1;
                if count == 8 {
                    stream.push(acc as u8);
                    (acc, count) = (0, 0);
                }
            }
        }
        stream.push(acc as u8);
        for bitwise in [false, true] {
            let mut reader = &stream[..];
            let mut bits = Bits::new(&mut reader);
            for symbol in 0..lengths.len() {
                let got = if bitwise {
                    code.decode_bitwise(&mut bits)
                } else {
                    code.decode(&mut bits)
                };
                assert_eq!(got, Ok(symbol as u16), "bitwise {bitwise}");
            }
        }
    }

    #[test]
    fn incomplete_codes_are_refused_as_zlib_refuses_them() {
        // A dynamic block whose distance code leaves bit patterns unused (zlib: "invalid
        // distances set"); decoding it anyway gave three bytes.
        let input = [
            0x05, 0xc1, 0x81, 0x09, 0x00, 0x20, 0x08, 0x00, 0xc1, 0x55, 0x7e, 0x36, 0xc5, 0x30,
            0x02, 0xa5, 0x48, 0x72, 0xfc, 0x72, 0x23, 0x9b, 0x0f,
        ];
        assert_eq!(run(&input, 100), Err(InflateError::BadCodeLengths));
        let code = |lengths: &[u8]| Huffman::new(lengths).unwrap();
        // Complete codes, one one-bit code, and no code at all may be sent.
        assert!(code(&[1, 1]).is_sendable());
        assert!(code(&[2, 2, 1]).is_sendable());
        assert!(code(&[0, 1, 0]).is_sendable());
        assert!(code(&[0, 0]).is_sendable());
        // Any other incomplete code may not.
        assert!(!code(&[2, 2]).is_sendable());
        assert!(!code(&[2]).is_sendable());
        assert!(!code(&[1, 2]).is_sendable());
        assert!(!code(&[0, 1, 0]).is_complete());
    }

    #[test]
    fn random_mutations_of_valid_streams_never_panic() {
        let valid: [&[u8]; 2] = [
            &[0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x40, 0x90, 0x00],
            &[0x01, 0x05, 0x00, 0xfa, 0xff, b'h', b'e', b'l', b'l', b'o'],
        ];
        let mut rng = crate::rand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let base = valid[(rng.next_u64() % 2) as usize];
            let mut input = base.to_vec();
            for _ in 0..=(rng.next_u64() % 4) {
                let at = (rng.next_u64() as usize) % input.len();
                input[at] ^= 1 << (rng.next_u64() % 8);
            }
            input.truncate(1 + (rng.next_u64() as usize) % input.len());
            let _ = run(&input, 1 << 20);
        }
        // Pure noise, including dynamic-block headers.
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 64) as usize;
            let input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = run(&input, 1 << 20);
        }
    }
}
