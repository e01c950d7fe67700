#!/usr/bin/env bash
# Build the demo app (examples/demo-app) as a statically linked binary and put
# it into the Docker build context examples/local/app/ (FROM scratch), so that
# berth's examples, tests and benchmarks can build the image from there.
#
# usage: scripts/build-demo-image.sh [--image TAG [--label KEY=VALUE]] [--smoke-test]
#   --image TAG    also `docker build` the context as TAG (kept; labelled
#                  KEY=VALUE, default berth.demo-app=1)
#   --smoke-test   build a throwaway image, run it, GET /api/ping and
#                  /api/fibonacci/10 through a published ephemeral port, run
#                  the in-image healthcheck, check `docker stop` ends it with
#                  exit code 0 (SIGTERM handled as PID 1), then remove the
#                  container and image (both labelled berth.test=demo-build)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64-unknown-linux-gnu
CONTEXT="$BERTH_ROOT/examples/local/app"
image_tag=""
image_label=berth.demo-app=1
smoke=0
while (($#)); do
    case "$1" in
    --image)
        image_tag="${2:?--image needs a tag}"
        shift 2
        ;;
    --label)
        image_label="${2:?--label needs KEY=VALUE}"
        shift 2
        ;;
    --smoke-test)
        smoke=1
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

section "demo app: static release build ($TARGET)"
# With an explicit --target, RUSTFLAGS apply to the target artefacts only (not
# to build scripts), and they land in target/$TARGET/, so this build does not
# invalidate anybody's host builds in the shared target directory.
(cd "$BERTH_ROOT" &&
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release -p berth-demo-app --target "$TARGET")
bin="$(cargo_target_dir)/$TARGET/release/demo-app"
[[ -x "$bin" ]] || die "built binary not found at $bin"

# Statically linked: no program interpreter and no shared-library deps.
if readelf -lW "$bin" | grep -q 'Requesting program interpreter' ||
    readelf -dW "$bin" | grep -q '(NEEDED)'; then
    readelf -dW "$bin" | grep NEEDED >&2 || true
    die "$bin is dynamically linked"
fi
if command -v file >/dev/null; then
    file -b "$bin" | grep -Eq 'static(-pie)? linked|statically linked' ||
        die "file(1) does not call $bin static: $(file -b "$bin")"
fi
log "static binary: $bin ($(du -h "$bin" | cut -f1))"

# Copy atomically so a concurrent `docker build` never sees half a binary.
tmp="$(mktemp "$CONTEXT/.demo-app.XXXXXX")"
cp "$bin" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$CONTEXT/demo-app"
log "build context ready: $CONTEXT"

docker_build() { # TAG LABEL
    # DOCKER_BUILDKIT=0: the classic builder works with any engine and needs
    # no buildx plugin; FROM scratch needs no registry access either way.
    # Its output (and the builder's deprecation notice) only shows on failure.
    local out
    if ! out="$(DOCKER_BUILDKIT=0 docker build -q --label "$2" -t "$1" "$CONTEXT" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "docker build of $CONTEXT failed"
    fi
}

if [[ -n "$image_tag" ]]; then
    section "demo app: docker build $image_tag"
    docker_build "$image_tag" "$image_label"
    log "built image $image_tag ($(docker image inspect -f '{{.Id}}' "$image_tag"))"
fi

((smoke)) || exit 0

section "demo app: image smoke test"
label=berth.test=demo-build
tag="berth-demo-app-smoke:$$-$RANDOM"
cid=""
cleanup() {
    if [[ -n "$cid" ]]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
    docker rmi -f "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT

docker_build "$tag" "$label"
cid="$(docker run -d --label "$label" -e INSTANCE=smoke -p 127.0.0.1:0:5000 "$tag")"
hostport="$(docker port "$cid" 5000/tcp | head -n1)"
[[ -n "$hostport" ]] || die "no published port for $cid"
log "container ${cid:0:12} answers on $hostport"

http_get() { # URL -> body on stdout; fails on non-2xx
    if command -v curl >/dev/null; then
        curl -fsS --max-time 5 "$1"
    else
        "$bin" healthcheck "$1" && echo '(status 200; curl not installed)'
    fi
}

body=""
for ((i = 0; i < 30; i++)); do
    if body="$(http_get "http://$hostport/api/ping" 2>/dev/null)"; then break; fi
    body=""
    sleep 1
done
if [[ -z "$body" ]]; then
    docker logs "$cid" >&2 || true
    die "no answer from /api/ping on $hostport"
fi
log "GET /api/ping -> $body"
if command -v curl >/dev/null; then
    [[ "$body" == '{"status":"ok","instance":"smoke"}' ]] || die "unexpected /api/ping body: $body"
    fib="$(http_get "http://$hostport/api/fibonacci/10")"
    log "GET /api/fibonacci/10 -> $fib"
    [[ "$fib" == '{"n":10,"value":55}' ]] || die "unexpected /api/fibonacci/10 body: $fib"
fi

docker exec "$cid" /demo-app healthcheck || die "in-image healthcheck failed"
log "in-image '/demo-app healthcheck' exited 0"

# Exit code 0 means our SIGTERM handler ran; 137 would mean docker had to
# SIGKILL it after the grace period (signal ignored as PID 1).
docker stop -t 10 "$cid" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$cid")"
[[ "$code" == 0 ]] || die "container exit code after docker stop: $code (SIGTERM not handled?)"
log "docker stop: exited with code 0 (SIGTERM handled)"
log "smoke test passed"
