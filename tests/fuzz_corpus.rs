//! Replays the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) and the inputs that once
//! broke a property (`tests/fuzz_regressions/<target>/`) through the same checks the fuzz
//! targets run, so `cargo test` keeps them passing on the stable toolchain.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::fs;
use std::path::Path;

/// Runs every file under `dir/<target>/` through that target's check; returns how many ran.
fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut count = 0;
    for (target, check) in checks::TARGETS {
        let Ok(entries) = fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
            count += 1;
        }
    }
    count
}

#[test]
fn seed_corpora_pass_the_fuzz_checks() {
    let count = replay("fuzz/corpus");
    assert!(count >= checks::TARGETS.len(), "only {count} seeds found");
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay("tests/fuzz_regressions");
}
