#!/usr/bin/env bash
# The main job (README): from a fresh checkout to two healthy replicas of the
# demo app on the local Docker engine, deployed by berth from
# examples/local/berth.hcl, and print their URL.
#
# usage: scripts/quickstart.sh [extra `berth apply` arguments]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

CONFIG=examples/local/berth.hcl

section "Docker engine"
bash scripts/ensure-docker.sh

bash scripts/build-demo-image.sh
bash scripts/build-proxy-image.sh

section "berth: cargo build --release -p berth"
cargo build --release -p berth
BERTH="$(cargo_target_dir)/release/berth"

section "berth -f $CONFIG apply --auto-approve"
"$BERTH" -f "$CONFIG" apply --auto-approve "$@"

section "berth -f $CONFIG output url"
url="$("$BERTH" -f "$CONFIG" output url)"
# Accept Terraform's quoted form of a string output as well as the raw one.
url="${url//$'\r'/}"
url="${url#\"}"
url="${url%\"}"
[[ "$url" == http://* ]] || die "unexpected 'output url': $url"

ping=""
for ((i = 0; i < 30; i++)); do
    if ping="$(curl -fsS --max-time 5 "$url/api/ping" 2>/dev/null)"; then break; fi
    ping=""
    sleep 1
done
[[ -n "$ping" ]] || die "$url/api/ping does not answer"

printf '\nThe demo app is up at %s\n  curl %s/api/ping        -> %s\n  curl %s/api/fibonacci/90\n' \
    "$url" "$url" "$ping" "$url"
printf '%s\n' "$url"
