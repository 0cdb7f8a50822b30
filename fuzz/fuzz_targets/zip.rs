//! `cargo fuzz run zip`: see [`noslate_fuzz::zip_archive`] for its input layout and properties.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| noslate_fuzz::zip_archive(data));
