#!/usr/bin/env bash
# Coverage-guided fuzzing: `make fuzz` (scripts/fuzz.sh [TARGET...]). See fuzz/src/lib.rs for
# what each target checks.
#
# Runs each target of fuzz/ (all seven by default) with `cargo fuzz`, one after the other in a
# single libFuzzer process, for FUZZ_SECONDS seconds each (default 60), then prints a table of
# executions and crashes per target. Exits non-zero when any target crashed.
#
# fuzz/corpus/<target>/ holds the committed seeds and is only read; what libFuzzer adds goes to
# fuzz/work/corpus/<target>/, kept between runs. Crashing inputs land in
# fuzz/artifacts/<target>/, logs in fuzz/work/logs/<target>.log. A crash worth keeping is
# minimised (`cargo +nightly fuzz tmin <target> <file>`) and saved under
# tests/fuzz_regressions/<target>/, which `cargo test` replays (tests/fuzz_corpus.rs).
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_CARGO     the nightly cargo (default `cargo +nightly`)
#   FUZZ_SANITIZER cargo fuzz's --sanitizer (default none: the code under test is safe Rust,
#                  and without AddressSanitizer a target runs about twice as many inputs)
#   FUZZ_ARGS      extra libFuzzer flags (e.g. `-max_len=8192`)
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
read -r -a cargo <<<"${FUZZ_CARGO:-cargo +nightly}"
read -r -a extra <<<"${FUZZ_ARGS:-}"
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_head chunked wire_frames config inflate zip admin_metadata)
fi

if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
    "${cargo[@]}" install cargo-fuzz
fi
# One build for every target, so that the timed runs below only fuzz.
"${cargo[@]}" fuzz build --sanitizer="$sanitizer"

mkdir -p fuzz/work/logs
rows=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/work/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/work/logs/$target.log"
    before=$(find "fuzz/artifacts/$target" -type f | wc -l)
    echo "== $target: ${seconds}s"
    status=ok
    "${cargo[@]}" fuzz run --sanitizer="$sanitizer" "$target" \
        "fuzz/work/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" \
        >"$log" 2>&1 || status=failed
    # libFuzzer's final stats, or its last status line (`#N ... exec/s: E`) after a crash.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    units=$(sed -n 's/^#[0-9].* corp: \([0-9][0-9]*\)\/.*/\1/p' "$log" | tail -n 1)
    crashes=$(($(find "fuzz/artifacts/$target" -type f | wc -l) - before))
    if [ "$status" = failed ] || [ "$crashes" -gt 0 ]; then
        failed=1
        status=CRASH
        grep -m 1 -E 'panicked at|ERROR: libFuzzer|Test unit written' "$log" || true
    fi
    rows+=("$(printf '%-14s %8s %14s %10s %8s %8s  %s' "$target" "${seconds}s" "${execs:-?}" \
        "${rate:-?}" "${units:-?}" "$crashes" "$status")")
done

echo
printf '%-14s %8s %14s %10s %8s %8s  %s\n' target time executions exec/s corpus crashes status
printf '%s\n' "${rows[@]}"
exit "$failed"
