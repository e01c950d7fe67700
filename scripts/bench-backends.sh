#!/usr/bin/env bash
# Benchmarks the state backends (local sled, the GitLab HTTP double,
# PostgreSQL, S3 on moto) on a 1,000-resource state of docker_container-like
# records, filled with one replace_all. Over BENCH_RUNS repetitions each
# (after one untimed warm-up) it times:
#
#   lock + unlock   one lock and its unlock, back to back
#   put_resource    one record rewritten in the 1,000-resource state, in a
#                   held lock after a read (the per-step cost during apply)
#   read            a full read in a new session (new backend, locked untimed)
#
# and reports min / median / p95 in ms, plus the stored size of the state in
# each backend (sled: bytes of the env dir after flush; http: the body the
# double stored; pg: pg_column_size(data); s3: Content-Length of a HEAD).
#
# It is the ignored test `bench::bench_backends` of berth-state's `remote`
# test binary (state/tests/remote/bench.rs), run in release mode. Everything
# it talks to runs on 127.0.0.1: PostgreSQL and moto are started by the test
# harness (installed on first use, as scripts/ensure-test-deps.sh does).
# The PostgreSQL test server runs with fsync=off and moto keeps objects in
# memory, so their numbers are protocol and encoding cost, not disk cost.
# Timings are only comparable between runs on the same, otherwise idle,
# machine.
#
# usage: scripts/bench-backends.sh [extra arguments for the test binary]
# env:   BENCH_RUNS=20   repetitions per measurement
#        BENCH_OUT       where results go (default: <target dir>/bench)
# Results: the markdown table on stdout; $BENCH_OUT/backends.json and
# backends.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

case "${1:-}" in
-h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
esac

BENCH_OUT="${BENCH_OUT:-$(cargo_target_dir)/bench}"
mkdir -p "$BENCH_OUT"
export BENCH_OUT BENCH_RUNS="${BENCH_RUNS:-20}"

section "state backends: cargo test -p berth-state --release --test remote -- --ignored bench (BENCH_RUNS=$BENCH_RUNS)"
cargo test -p berth-state --release --test remote -- \
    --ignored bench --nocapture --test-threads=1 "$@"
log "results in $BENCH_OUT/backends.json"
