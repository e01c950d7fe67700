#!/usr/bin/env bash
# The long form of berth's reliability suite (RELIABILITY.md): every
# R-test of tests/it/reliability_*.rs with BERTH_RELIABILITY=long (more
# rounds, more processes, deeper input), then each cargo-fuzz target of
# tests/fuzz for FUZZ_SECONDS, then the figures.
#
# CI runs the short forms as part of the normal `cargo nextest run`; this
# script is for the long runs whose figures go into RELIABILITY.md.
#
# usage: scripts/reliability.sh [--no-fuzz | --fuzz-only]
# env:   FUZZ_SECONDS=600   time per fuzz target
#        FUZZ_TARGETS       which targets (default: config state planfile)
#        FUZZ_JOBS=1        parallel libFuzzer jobs per target
#        RELIABILITY_OUT    where logs and the summary go
#                           (default: <target dir>/reliability)
# Needs: cargo-nextest; for the fuzzers a nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
# Crashes found are left in $RELIABILITY_OUT/artifacts/<target>/; copy each
# into tests/fuzz/regressions/<target>/ (the stable replay test runs them)
# and fix it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

run_tests=1
run_fuzz=1
case "${1:-}" in
    --no-fuzz) run_fuzz=0 ;;
    --fuzz-only) run_tests=0 ;;
    "") ;;
    *) die "unknown argument $1 (expected --no-fuzz or --fuzz-only)" ;;
esac

FUZZ_SECONDS="${FUZZ_SECONDS:-600}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
target_dir="$(cargo_target_dir)"
out="${RELIABILITY_OUT:-$target_dir/reliability}"
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"

if ((run_tests)); then
    section "test dependencies"
    bash scripts/ensure-test-deps.sh
    bash scripts/build-demo-image.sh
    bash scripts/build-lb-image.sh

    section "R-tests, long form: BERTH_RELIABILITY=long cargo nextest run --test it -E 'test(/reliability_/)'"
    status=0
    BERTH_RELIABILITY=long cargo nextest run --test it -E 'test(/reliability_/)' \
        --no-fail-fast --success-output immediate --failure-output immediate \
        2>&1 | tee "$out/tests.log" || status=$?
    # Every test prints its figures on lines starting `R<n> `.
    grep -E '^R[0-9] ' "$out/tests.log" >>"$summary" || true
    if ((status != 0)); then
        echo "R-tests: FAILED (exit $status), see $out/tests.log" >>"$summary"
    else
        echo "R-tests: all passed" >>"$summary"
    fi
fi

if ((run_fuzz)); then
    section "fuzzing: ${FUZZ_SECONDS}s per target"
    cargo +nightly fuzz --version >/dev/null 2>&1 ||
        die "cargo-fuzz on a nightly toolchain is needed: cargo install cargo-fuzz"
    fuzz_target="$target_dir/fuzz"
    # Built once; the binaries are then run directly, so a source change
    # made meanwhile does not rebuild between targets.
    cargo +nightly fuzz build --fuzz-dir tests/fuzz --target-dir "$fuzz_target" -O -a
    bin_dir="$fuzz_target/$(rustc -vV | sed -n 's/^host: //p')/release"
    for target in ${FUZZ_TARGETS:-config state planfile}; do
        corpus="$out/corpus/$target"
        artifacts="$out/artifacts/$target"
        mkdir -p "$corpus" "$artifacts"
        if [[ "$target" == config ]]; then
            # The examples seed the configuration fuzzer where they are.
            for example in "$BERTH_ROOT"/examples/*/berth.hcl; do
                cp "$example" "$corpus/example-$(basename "$(dirname "$example")").hcl"
            done
        fi
        log "fuzzing $target"
        # With -jobs, libFuzzer writes each worker's log to fuzz-N.log in
        # its working directory: run it in one of ours.
        parallel=()
        if ((FUZZ_JOBS > 1)); then
            parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
        fi
        work="$out/work-$target"
        rm -rf "$work"
        mkdir -p "$work"
        set +e
        (cd "$work" && "$bin_dir/$target" "$corpus" "$BERTH_ROOT/tests/fuzz/seeds/$target" \
            -max_total_time="$FUZZ_SECONDS" "${parallel[@]}" \
            -artifact_prefix="$artifacts/" -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
            -print_final_stats=1) >"$out/fuzz-$target.log" 2>&1
        rc=$?
        set -e
        # libFuzzer's final stats: stat::number_of_executed_units.
        execs="$(find "$out/fuzz-$target.log" "$work" -name '*.log' -exec cat {} + |
            awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}')"
        crashes="$(find "$artifacts" -type f | wc -l)"
        echo "R4 fuzz $target: ${FUZZ_SECONDS}s, $execs executions, $crashes crashes (exit $rc), corpus $(find "$corpus" -type f | wc -l) inputs" >>"$summary"
    done
fi

section "figures"
cat "$summary"
