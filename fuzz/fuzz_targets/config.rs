//! `cargo fuzz run config`: see [`noslate_fuzz::config`] for its input layout and properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::config(data));
