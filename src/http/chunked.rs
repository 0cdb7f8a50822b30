//! The chunked transfer coding (RFC 9112 §7.1): an incremental, zero-copy decoder that accepts
//! the body split at any byte, and the two pieces an encoder needs.
//!
//! The decoder is strict about line endings (CRLF only) and bounds every line it must skip,
//! because lenient chunk parsing is a classic request-smuggling and memory-exhaustion vector.

use super::error::HttpError;

/// The last-chunk plus the empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Most bytes in one chunk-size line (size, whitespace and extensions, without CRLF).
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Most bytes in the trailer section, including its final CRLF.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// More hex digits than this cannot fit a u64, even with leading zeros allowed for.
const MAX_SIZE_DIGITS: u8 = 16;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// One step of decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Body bytes, borrowed from the input.
    Data(&'a [u8]),
    /// The input is used up; call again with more bytes.
    NeedMore,
    /// The body, including its trailer section, has ended; bytes after it belong to the next
    /// request.
    Done,
}

/// Where the decoder is within the framing bytes between chunks of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Reading the hex chunk size; `digits` read so far.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size (RFC 9112 allows BWS before `;`).
    SizeSpace { size: u64 },
    /// Skipping chunk extensions, which carry nothing we use.
    Extension { size: u64 },
    /// CR seen at the end of the chunk-size line.
    SizeLf { size: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line, which is skipped.
    Trailer,
    /// CR seen at the end of a trailer field line.
    TrailerLf,
    /// CR seen on the final empty line.
    FinalLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line(Line),
    Data { remaining: u64 },
    Done,
}

/// An incremental decoder of one chunked body.
///
/// After an error the body, and so the connection, is unusable: answer and close.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max_body_bytes: u64,
    /// Sum of the sizes of all chunks started so far, checked against `max_body_bytes` as soon as
    /// a size line ends, before any of that chunk's data arrives.
    declared: u64,
    /// Bytes of the current chunk-size line.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `max_body_bytes` data bytes.
    pub fn new(max_body_bytes: u64) -> Self {
        Self {
            state: State::Line(Line::Size { size: 0, digits: 0 }),
            max_body_bytes,
            declared: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decodes from `input`; returns bytes consumed and one step. Data slices borrow from input.
    ///
    /// Call again with the unconsumed rest (plus any new bytes) until `Done`; `NeedMore` always
    /// consumes the whole input. After `Done`, returns `(0, Done)` and consumes nothing more.
    ///
    /// # Errors
    ///
    /// [`HttpError::BadChunk`] for broken framing or an over-long size line or trailer section,
    /// [`HttpError::BodyTooLarge`] once the chunk sizes add up to more than `max_body_bytes`.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Chunk<'a>), HttpError> {
        let mut pos = 0;
        loop {
            let line = match self.state {
                State::Done => return Ok((pos, Chunk::Done)),
                State::Data { remaining } => {
                    let rest = input.get(pos..).unwrap_or_default();
                    if rest.is_empty() {
                        return Ok((pos, Chunk::NeedMore));
                    }
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let (data, _) = rest.split_at(take);
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Line(Line::DataCr)
                    } else {
                        State::Data { remaining }
                    };
                    return Ok((pos + take, Chunk::Data(data)));
                }
                State::Line(line) => line,
            };
            let Some(&byte) = input.get(pos) else {
                return Ok((pos, Chunk::NeedMore));
            };
            pos += 1;
            self.state = self.step(line, byte)?;
        }
    }

    /// Body bytes returned as `Data` so far.
    pub fn body_bytes(&self) -> u64 {
        match self.state {
            State::Data { remaining } => self.declared.saturating_sub(remaining),
            _ => self.declared,
        }
    }

    /// Advances the framing state by one byte.
    fn step(&mut self, line: Line, byte: u8) -> Result<State, HttpError> {
        let next = match line {
            Line::Size { size, digits } => {
                if let Some(value) = hex_value(byte) {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(bad("chunk size has more than 16 hex digits"));
                    }
                    self.count_line_byte()?;
                    Line::Size {
                        size: (size << 4) | u64::from(value),
                        digits: digits + 1,
                    }
                } else if digits == 0 {
                    return Err(bad("chunk size is not a hex number"));
                } else {
                    self.after_size(size, byte)?
                }
            }
            Line::SizeSpace { size } => self.after_size(size, byte)?,
            Line::Extension { size } => match byte {
                b'\r' => Line::SizeLf { size },
                _ if is_forbidden_in_line(byte) => {
                    return Err(bad("invalid byte in chunk extension"));
                }
                _ => {
                    self.count_line_byte()?;
                    Line::Extension { size }
                }
            },
            Line::SizeLf { size } => {
                if byte != b'\n' {
                    return Err(bad("chunk size line not ended by CRLF"));
                }
                return self.start_chunk(size);
            }
            Line::DataCr if byte == b'\r' => Line::DataLf,
            Line::DataLf if byte == b'\n' => Line::Size { size: 0, digits: 0 },
            Line::DataCr | Line::DataLf => return Err(bad("chunk data not followed by CRLF")),
            Line::TrailerStart | Line::Trailer | Line::TrailerLf | Line::FinalLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(bad("trailer section exceeds 16384 bytes"));
                }
                match (line, byte) {
                    (Line::FinalLf, b'\n') => return Ok(State::Done),
                    (Line::TrailerLf, b'\n') => Line::TrailerStart,
                    (Line::FinalLf | Line::TrailerLf, _) => {
                        return Err(bad("trailer line not ended by CRLF"));
                    }
                    (Line::TrailerStart, b'\r') => Line::FinalLf,
                    (_, b'\r') => Line::TrailerLf,
                    _ if is_forbidden_in_line(byte) => {
                        return Err(bad("invalid byte in trailer section"));
                    }
                    _ => Line::Trailer,
                }
            }
        };
        Ok(State::Line(next))
    }

    /// Handles the byte after the last size digit or after whitespace following it.
    fn after_size(&mut self, size: u64, byte: u8) -> Result<Line, HttpError> {
        match byte {
            b'\r' => Ok(Line::SizeLf { size }),
            b';' => {
                self.count_line_byte()?;
                Ok(Line::Extension { size })
            }
            b' ' | b'\t' => {
                self.count_line_byte()?;
                Ok(Line::SizeSpace { size })
            }
            _ => Err(bad("invalid byte after chunk size")),
        }
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_CHUNK_LINE_BYTES {
            return Err(bad("chunk size line exceeds 4096 bytes"));
        }
        Ok(())
    }

    /// Begins a chunk of `size` bytes once its size line has ended; size 0 ends the data.
    fn start_chunk(&mut self, size: u64) -> Result<State, HttpError> {
        self.line_bytes = 0;
        if size == 0 {
            return Ok(State::Line(Line::TrailerStart));
        }
        self.declared = self
            .declared
            .checked_add(size)
            .filter(|&total| total <= self.max_body_bytes)
            .ok_or(HttpError::BodyTooLarge {
                limit: self.max_body_bytes,
            })?;
        Ok(State::Data { remaining: size })
    }
}

fn bad(what: &str) -> HttpError {
    HttpError::BadChunk(what.to_owned())
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Bytes never valid inside a skipped line: a bare LF (only CRLF ends a line, so a front proxy
/// cannot see a different line break than we do) and other control bytes except HTAB.
fn is_forbidden_in_line(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// Appends the chunk-size line for a chunk of `len` bytes; the caller then writes the data and
/// CRLF. `len` must not be 0, since a zero-size chunk is the last-chunk ([`LAST_CHUNK`]).
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert_ne!(
        len, 0,
        "a zero-size chunk ends the body; write LAST_CHUNK instead"
    );
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    let mut rest = len as u64;
    for slot in digits.iter_mut().rev() {
        *slot = HEX_DIGITS[(rest & 0xf) as usize];
        start -= 1;
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of at most `step` bytes, as a connection would, and returns the
    /// body, the bytes consumed up to `Done`, and any error.
    fn feed(input: &[u8], step: usize, max: u64) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut offered = 0;
        let mut consumed_total = 0;
        loop {
            let (consumed, chunk) = decoder.decode(&pending)?;
            consumed_total += consumed;
            match chunk {
                Chunk::Data(data) => {
                    assert!(!data.is_empty(), "empty data step");
                    body.extend_from_slice(data);
                }
                Chunk::Done => {
                    assert_eq!(decoder.body_bytes(), body.len() as u64);
                    assert_eq!(decoder.decode(b"more"), Ok((0, Chunk::Done)));
                    return Ok((body, consumed_total));
                }
                Chunk::NeedMore => {
                    assert_eq!(consumed, pending.len(), "NeedMore consumes everything");
                    if offered == input.len() {
                        return Err(HttpError::BadChunk("test: input ended".into()));
                    }
                }
            }
            pending.drain(..consumed);
            let end = (offered + step).min(input.len());
            pending.extend_from_slice(&input[offered..end]);
            offered = end;
        }
    }

    /// Decodes `input` under every feeding granularity and checks they all agree.
    fn decode_all(input: &[u8], max: u64) -> Result<(Vec<u8>, usize), HttpError> {
        let whole = feed(input, input.len().max(1), max);
        for step in [1, 2, 3, 7] {
            assert_eq!(feed(input, step, max), whole, "step {step}");
        }
        whole
    }

    fn decode_err(input: &[u8]) -> HttpError {
        match decode_all(input, u64::MAX) {
            Err(err) => err,
            Ok(ok) => panic!(
                "expected an error for {:?}, got {ok:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn simple_body() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            decode_all(input, 100),
            Ok((b"hello world".to_vec(), input.len()))
        );
    }

    #[test]
    fn empty_body() {
        assert_eq!(
            decode_all(LAST_CHUNK, 0),
            Ok((Vec::new(), LAST_CHUNK.len()))
        );
    }

    #[test]
    fn data_borrows_from_input_and_consumed_is_exact() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut decoder = ChunkedDecoder::new(10);
        let (n, chunk) = decoder.decode(input).unwrap();
        assert_eq!((n, chunk), (6, Chunk::Data(b"abc")));
        let Chunk::Data(data) = chunk else {
            unreachable!()
        };
        assert!(std::ptr::eq(data.as_ptr(), input[3..].as_ptr()));
        let (m, chunk) = decoder.decode(&input[n..]).unwrap();
        assert_eq!(chunk, Chunk::Done);
        assert_eq!(&input[n + m..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn large_chunk_split_across_reads() {
        let mut input = b"1000\r\n".to_vec();
        input.extend((0..4096u32).map(|i| (i % 251) as u8));
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (body, used) = decode_all(&input, 4096).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(body[4095], (4095 % 251) as u8);
        assert_eq!(used, input.len());
    }

    #[test]
    fn body_bytes_counts_data_returned() {
        let mut decoder = ChunkedDecoder::new(100);
        assert_eq!(
            decoder.decode(b"a\r\nhel").unwrap(),
            (6, Chunk::Data(b"hel"))
        );
        assert_eq!(decoder.body_bytes(), 3);
        assert_eq!(decoder.decode(b"").unwrap(), (0, Chunk::NeedMore));
        assert_eq!(
            decoder.decode(b"lo wor").unwrap(),
            (6, Chunk::Data(b"lo wor"))
        );
        assert_eq!(decoder.body_bytes(), 9);
    }

    #[test]
    fn hex_sizes() {
        let input = b"A\r\n0123456789\r\nf\r\n0123456789abcde\r\n0\r\n\r\n";
        assert_eq!(decode_all(input, 100).unwrap().0.len(), 25);
        // Leading zeros are fine up to 16 digits in total.
        let input = b"0000000000000001\r\nx\r\n0000000000000000\r\n\r\n";
        assert_eq!(decode_all(input, 100).unwrap().0, b"x");
    }

    #[test]
    fn extensions_are_ignored() {
        let input = b"5;name=value;flag\r\nhello\r\n5 ; q=\"a;b\"\r\nworld\r\n0;last\r\n\r\n";
        assert_eq!(decode_all(input, 100).unwrap().0, b"helloworld");
        let input = b"5\t \r\nhello\r\n0 \r\n\r\n";
        assert_eq!(decode_all(input, 100).unwrap().0, b"hello");
    }

    #[test]
    fn extension_line_limit() {
        let ok_ext = "x".repeat(MAX_CHUNK_LINE_BYTES - 2);
        let input = format!("5;{ok_ext}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode_all(input.as_bytes(), 100).unwrap().0, b"hello");
        let long_ext = "x".repeat(MAX_CHUNK_LINE_BYTES - 1);
        let input = format!("5;{long_ext}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            decode_err(input.as_bytes()),
            bad("chunk size line exceeds 4096 bytes")
        );
        // The limit holds for whitespace too, and per line: it resets for the next chunk.
        let spaces = " ".repeat(MAX_CHUNK_LINE_BYTES);
        assert!(decode_all(format!("5{spaces}\r\nhello\r\n0\r\n\r\n").as_bytes(), 9).is_err());
        let near = " ".repeat(MAX_CHUNK_LINE_BYTES - 1);
        let input = format!("5{near}\r\nhello\r\n5{near}\r\nhello\r\n0{near}\r\n\r\n");
        assert_eq!(decode_all(input.as_bytes(), 10).unwrap().0, b"hellohello");
    }

    #[test]
    fn trailers_are_skipped() {
        let input = b"5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nnext";
        assert_eq!(
            decode_all(input, 100),
            Ok((b"hello".to_vec(), input.len() - 4))
        );
    }

    #[test]
    fn trailer_limit() {
        // The trailer section is everything after the last-chunk line, final CRLF included.
        let line = |len: usize| format!("X: {}\r\n", "v".repeat(len - 5));
        let fits = format!("0\r\n{}\r\n", line(MAX_TRAILER_BYTES - 2));
        assert!(decode_all(fits.as_bytes(), 0).is_ok());
        let over = format!("0\r\n{}\r\n", line(MAX_TRAILER_BYTES - 1));
        assert_eq!(
            decode_err(over.as_bytes()),
            bad("trailer section exceeds 16384 bytes")
        );
        let many = format!("0\r\n{}\r\n", "a: b\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1));
        assert_eq!(
            decode_err(many.as_bytes()),
            bad("trailer section exceeds 16384 bytes")
        );
    }

    #[test]
    fn crlf_after_data_is_strict() {
        for input in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\rX0\r\n\r\n",
            b"5\r\nhello world\r\n0\r\n\r\n",
            b"5\r\nhell\r\n0\r\n\r\n",
        ] {
            assert_eq!(decode_err(input), bad("chunk data not followed by CRLF"));
        }
    }

    #[test]
    fn bare_lf_and_bad_line_endings() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\rhello\r\n0\r\n\r\n",
            b"5;ext\nhello\r\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\r\r\n",
            b"0\r\n\rX",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
        ] {
            let err = decode_err(input);
            assert!(
                matches!(err, HttpError::BadChunk(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(decode_err(b"\r\n"), bad("chunk size is not a hex number"));
        assert_eq!(
            decode_err(b";ext\r\n"),
            bad("chunk size is not a hex number")
        );
        assert_eq!(decode_err(b"-5\r\n"), bad("chunk size is not a hex number"));
        assert_eq!(decode_err(b" 5\r\n"), bad("chunk size is not a hex number"));
        assert_eq!(decode_err(b"0x5\r\n"), bad("invalid byte after chunk size"));
        assert_eq!(decode_err(b"5g\r\n"), bad("invalid byte after chunk size"));
        assert_eq!(decode_err(b"5 5\r\n"), bad("invalid byte after chunk size"));
        assert_eq!(decode_err(b"+5\r\n"), bad("chunk size is not a hex number"));
        assert_eq!(
            decode_err(b"00000000000000001\r\n"),
            bad("chunk size has more than 16 hex digits")
        );
        assert_eq!(
            decode_err(b"10000000000000000\r\n"),
            bad("chunk size has more than 16 hex digits")
        );
    }

    #[test]
    fn body_limit() {
        let input = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(decode_all(input, 10).unwrap().0, b"helloworld");
        assert_eq!(
            decode_all(input, 9),
            Err(HttpError::BodyTooLarge { limit: 9 })
        );
        // Refused when the size line ends, before the chunk's data is read.
        let mut decoder = ChunkedDecoder::new(9);
        assert_eq!(
            decoder.decode(b"5\r\nhello\r\n").unwrap(),
            (8, Chunk::Data(b"hello"))
        );
        assert_eq!(
            decoder.decode(b"\r\n5\r\n"),
            Err(HttpError::BodyTooLarge { limit: 9 })
        );
        // The largest size cannot overflow the running total.
        let input = b"1\r\nx\r\nffffffffffffffff\r\n";
        assert_eq!(
            decode_all(input, u64::MAX),
            Err(HttpError::BodyTooLarge { limit: u64::MAX })
        );
        assert_eq!(
            decode_all(input, u64::MAX).map_err(|e| e.status()),
            Err(413)
        );
    }

    #[test]
    fn encodes_chunk_headers() {
        let mut out = Vec::new();
        for len in [1usize, 9, 10, 255, 4096, 0x1234_5678] {
            out.clear();
            encode_chunk_header(len, &mut out);
            assert_eq!(out, format!("{len:x}\r\n").as_bytes());
        }
        out.clear();
        encode_chunk_header(usize::MAX, &mut out);
        assert_eq!(out, format!("{:x}\r\n", usize::MAX).as_bytes());
    }

    #[test]
    fn encoder_output_round_trips() {
        let pieces: [&[u8]; 3] = [b"a", &[7u8; 300], b"\r\n0\r\n\r\n"];
        let mut wire = Vec::new();
        for piece in pieces {
            encode_chunk_header(piece.len(), &mut wire);
            wire.extend_from_slice(piece);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(LAST_CHUNK);
        let expected: Vec<u8> = pieces.concat();
        assert_eq!(decode_all(&wire, 1000), Ok((expected, wire.len())));
    }

    #[test]
    fn random_splits_and_mutations_never_panic() {
        let seed = b"5;e=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nGET";
        let alphabet = b"\r\n ;\t\x000fFg9\xff";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut input = seed.to_vec();
            for _ in 0..next(4) {
                let at = next(input.len());
                match next(3) {
                    0 => input[at] = alphabet[next(alphabet.len())],
                    1 => input.insert(at, alphabet[next(alphabet.len())]),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let step = 1 + next(8);
            let max = [0, 10, 50, u64::MAX][next(4)];
            if let Ok((body, used)) = feed(&input, step, max) {
                assert!(used <= input.len());
                assert!(body.len() as u64 <= max);
                // Whole-buffer decoding agrees with piecewise decoding.
                assert_eq!(feed(&input, input.len(), max), Ok((body, used)));
            }
        }
    }
}
