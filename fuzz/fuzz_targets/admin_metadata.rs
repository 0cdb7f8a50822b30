//! `cargo fuzz run admin_metadata`: see [`noslate_fuzz::admin_metadata`] for its input layout and
//! properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::admin_metadata(data));
