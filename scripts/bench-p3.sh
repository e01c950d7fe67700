#!/usr/bin/env bash
# Benchmark P3: `berth plan` with N droplets and N EC2 instances in state
# (default 1,000 each), every API answer LATENCY ms away (default 50),
# against the per-resource refresh Terraform does (one read per resource,
# PARALLELISM at a time, default 10) through the same latency.
#
# DigitalOcean is the in-process API double (its latency knob); EC2 is moto
# behind a latency-adding proxy. The harness is the ignored integration test
# tests/it/p3_refresh.rs, run here in release mode; it prints a markdown
# table and fails if berth's refresh makes more than ceil(N/200) droplet
# list calls or ceil(N/1000) DescribeInstances calls, if a plan is not
# empty, or if a DigitalOcean request or answer breaks the OpenAPI spec.
#
# usage: scripts/bench-p3.sh
# env:   BENCH_P3_N=1000 BENCH_P3_LATENCY_MS=50 BENCH_P3_RUNS=3
#        BENCH_P3_PARALLELISM=10
#        BENCH_OUT  where the table goes (default: <target dir>/bench/p3.md)
#        BERTH_MOTO_SERVER / BERTH_MOTO_VENV  which moto (see
#        scripts/ensure-test-deps.sh, which installs it)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

case "${1:-}" in
-h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
"") ;;
*) die "unknown argument: $1 (see --help)" ;;
esac

TARGET_DIR="$(cargo_target_dir)"
OUT="${BENCH_OUT:-$TARGET_DIR/bench}"
mkdir -p "$OUT"

section "cargo test --release --test it p3_refresh -- --ignored --nocapture"
log "N=${BENCH_P3_N:-1000} latency=${BENCH_P3_LATENCY_MS:-50}ms runs=${BENCH_P3_RUNS:-3} parallelism=${BENCH_P3_PARALLELISM:-10}"
cargo test --release --test it p3_refresh -- --ignored --nocapture --test-threads 1 |
    tee "$OUT/p3.log"
# The table and its caption, for BENCHMARKS.md.
sed -n '/^P3: /,/^plans were no-ops/p' "$OUT/p3.log" >"$OUT/p3.md"
log "table: $OUT/p3.md"
