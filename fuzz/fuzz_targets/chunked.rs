//! `cargo fuzz run chunked`: see [`noslate_fuzz::chunked`] for its input layout and properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::chunked(data));
