//! `cargo fuzz run wire_frames`: see [`noslate_fuzz::wire_frames`] for its input layout and properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::wire_frames(data));
