#!/usr/bin/env bash
# The test command (README): installs and starts what the tests need, builds
# the demo app's image context, then runs the whole workspace's tests.
# Extra arguments go to the test runner (cargo nextest run / cargo test).
#
# Env: BERTH_TEST_RUNNER=cargo-test forces `cargo test` even when
#      cargo-nextest is installed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

section "test dependencies (Docker engine, sshd, registry, compose, hyperfine)"
bash scripts/ensure-test-deps.sh

# Tests build the demo image from examples/local/app; the smoke test proves
# that image runs before the suite depends on it.
bash scripts/build-demo-image.sh --smoke-test
bash scripts/build-lb-image.sh
bash scripts/build-proxy-image.sh

if [[ "${BERTH_TEST_RUNNER:-}" != cargo-test ]] && cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests. They go first so that the runner's last
    # summary line is nextest's, with the real count.
    section "doctests: cargo test --workspace --doc"
    cargo test --workspace --doc
    section "tests: cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast "$@"
else
    section "tests: cargo test --workspace"
    cargo test --workspace --no-fail-fast "$@"
fi
