//! `cargo fuzz run request_head`: see [`noslate_fuzz::request_head`] for its input layout and properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::request_head(data));
