//! `cargo fuzz run inflate`: [`noslate_fuzz::inflate`]'s properties (see there for the input
//! layout), and two more against zlib (its Rust port, zlib-rs, through flate2), which need it
//! and so live only here:
//!
//! - the stream inflates as zlib inflates it: to the same bytes, or to an error in both;
//! - the stream's bytes, deflated by zlib at the level the `limit` byte picks, inflate back to
//!   themselves (which reaches the valid dynamic-Huffman blocks that random bytes seldom form).

#![no_main]

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use noslate_fuzz::{INFLATE_CEILING, inflate_input, inflate_run};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    noslate_fuzz::inflate(data);
    let Some((level, _, stream)) = inflate_input(data) else {
        return;
    };
    let (ours, out) = inflate_run(&mut &stream[..], INFLATE_CEILING);
    match (&ours, zlib_inflate(stream)) {
        (Ok(_), Ok(expected)) => assert!(out == expected, "inflated differently"),
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!(
            "ours {ours:?} ({} bytes), zlib {:?}",
            out.len(),
            theirs.map(|v| v.len())
        ),
    }
    let packed = zlib_deflate(stream, u32::from(level % 10));
    let (result, back) = inflate_run(&mut &packed[..], INFLATE_CEILING);
    assert_eq!(result, Ok(stream.len() as u64));
    assert!(back == stream, "round trip changed the bytes");
});

/// zlib's inflate of a raw DEFLATE stream: its output, or `Err` for a corrupt or truncated
/// stream, or one that inflates past the ceiling.
fn zlib_inflate(stream: &[u8]) -> Result<Vec<u8>, String> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if out.len() == out.capacity() {
            if out.len() as u64 > INFLATE_CEILING {
                return Err("past the ceiling".into());
            }
            out.reserve(out.len());
        }
        let (read, written) = (inflater.total_in(), inflater.total_out());
        let rest = &stream[read as usize..];
        let status = inflater
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        let stuck = inflater.total_in() == read && inflater.total_out() == written;
        if stuck && out.len() < out.capacity() {
            return Err("truncated".into());
        }
    }
}

/// zlib's raw DEFLATE stream of `data` at `level` (0 to 9).
fn zlib_deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut deflater = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    loop {
        let read = deflater.total_in() as usize;
        let status = deflater
            .compress_vec(&data[read..], &mut out, FlushCompress::Finish)
            .expect("zlib deflates");
        if status == Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(1024));
    }
}
