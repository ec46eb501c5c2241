#!/usr/bin/env bash
# The fuzzing campaign behind `make fuzz`: builds every target of fuzz/fuzz_targets once, runs
# each for FUZZ_RUNS executions (one after another, one job each) on its checked-in corpus,
# minimises the grown corpus with `cargo fuzz cmin`, and prints a table: executions, exec/s,
# corpus files, crashes. Exits non-zero when any target crashed; the input is in
# fuzz/artifacts/<target>/ (see fuzz/README in the docs: fix, then save it under
# fuzz/regressions/<target>/).
#
# Sanitizer: none. The host denies `unsafe` (workspace lints), so the bugs to find are panics,
# failed invariants, overflows (the build keeps debug assertions and overflow checks), hangs
# and runaway memory, which libFuzzer catches without ASan; ASan would cost 2-3x the
# executions on what memory safety Rust already gives us. FUZZ_SANITIZER=address turns it on.
set -euo pipefail

cd "$(dirname "$0")"
FUZZ_RUNS="${FUZZ_RUNS:-1000000}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
FUZZ_TARGETS="${FUZZ_TARGETS:-org_template plugin_source relpath a2a_normalize route_bodies cron wit_answers}"
# Per-input limits: an input slower than this (seconds) is a hang, a run above this much
# memory (MB) is a leak or a blow-up; both are crashes.
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-10}"
FUZZ_RSS_MB="${FUZZ_RSS_MB:-2048}"

fuzz=(cargo +nightly fuzz)
mkdir -p logs
"${fuzz[@]}" build --sanitizer "$FUZZ_SANITIZER"

rows=()
failed=0
for target in $FUZZ_TARGETS; do
    corpus="corpus/$target"
    artifacts="artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    crashes_before="$(find "$artifacts" -type f | wc -l)"
    log="logs/$target.log"
    echo "fuzz: $target ($FUZZ_RUNS runs)"
    # -jobs=1 runs the campaign in one worker process whose output goes to fuzz-0.log; it is
    # kept per target.
    status=0
    rm -f fuzz-0.log
    "${fuzz[@]}" run --sanitizer "$FUZZ_SANITIZER" "$target" "$corpus" -- \
        -runs="$FUZZ_RUNS" -jobs=1 -workers=1 -print_final_stats=1 \
        -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" >"$log.run" 2>&1 || status=$?
    if [[ -f fuzz-0.log ]]; then mv fuzz-0.log "$log"; else mv "$log.run" "$log"; fi
    rm -f "$log.run"
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n1 | awk '{print $2}')"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -n1 | awk '{print $2}')"
    crashes=$(( $(find "$artifacts" -type f | wc -l) - crashes_before ))
    if [[ "$status" -ne 0 && "$crashes" -eq 0 ]]; then crashes="?"; fi
    if [[ "$status" -ne 0 ]]; then
        failed=1
        echo "fuzz: $target failed (exit $status); see fuzz/$log and fuzz/$artifacts/" >&2
    fi
    # Keep the checked-in corpus small: only inputs that add coverage stay.
    "${fuzz[@]}" cmin --sanitizer "$FUZZ_SANITIZER" "$target" "$corpus" >>"$log" 2>&1 || true
    files="$(find "$corpus" -type f | wc -l)"
    size="$(du -sk "$corpus" | awk '{print $1}')"
    rows+=("$(printf '%-15s %12s %9s %8s %8s %8s' "$target" "${execs:-?}" "${rate:-?}" "$files" "${size}K" "$crashes")")
done

echo
printf '%-15s %12s %9s %8s %8s %8s\n' target executions exec/s corpus size crashes
for row in "${rows[@]}"; do echo "$row"; done
exit "$failed"
