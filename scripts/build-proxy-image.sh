#!/usr/bin/env bash
# Build berth's own load balancer image, `berth-proxy:<workspace version>`
# (the default image of `load_balancer { kind = "berth-proxy" }`), without
# any registry: the berth-proxy crate (providers/proxy) built as a static
# binary, FROM scratch, with an empty upstream file in /etc/berth-proxy
# (berth writes the real one before it starts the container). The image is
# labelled berth.proxy-image=1 and berth.content-hash=<sha256 of the build
# context>; when an image of that tag with the same hash exists already,
# nothing is built.
#
# usage: scripts/build-proxy-image.sh [--tag TAG] [--force]
#   --tag TAG   image tag (default berth-proxy:<version from Cargo.toml>)
#   --force     build again even when the content hash matches
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64-unknown-linux-gnu
version="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$BERTH_ROOT/Cargo.toml")"
[[ -n "$version" ]] || die "no workspace version in Cargo.toml"
tag="berth-proxy:$version"
force=0
while (($#)); do
    case "$1" in
    --tag)
        tag="${2:?--tag needs a value}"
        shift 2
        ;;
    --force)
        force=1
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

section "berth-proxy: static release build ($TARGET)"
# As in build-demo-image.sh: with an explicit --target, RUSTFLAGS only
# reach the target artefacts, in target/$TARGET/, so host builds in the
# shared target directory stay valid.
(cd "$BERTH_ROOT" &&
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release -p berth-proxy --target "$TARGET")
bin="$(cargo_target_dir)/$TARGET/release/berth-proxy"
[[ -x "$bin" ]] || die "built binary not found at $bin"
if readelf -lW "$bin" | grep -q 'Requesting program interpreter' ||
    readelf -dW "$bin" | grep -q '(NEEDED)'; then
    readelf -dW "$bin" | grep NEEDED >&2 || true
    die "$bin is dynamically linked"
fi
log "static binary: $bin ($(du -h "$bin" | cut -f1))"

work="$(mktemp -d)"
cid=""
cleanup() {
    if [[ -n "$cid" ]]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/etc/berth-proxy"
cp "$bin" "$work/berth-proxy"
printf '{"version":"","upstreams":[]}\n' >"$work/etc/berth-proxy/upstreams.json"
cat >"$work/Dockerfile" <<'EOF'
FROM scratch
COPY berth-proxy /berth-proxy
COPY etc/ /etc/
EXPOSE 80 9180
ENTRYPOINT ["/berth-proxy"]
CMD ["serve", "--listen", "80:5000"]
HEALTHCHECK --interval=10s --timeout=3s CMD ["/berth-proxy", "healthcheck"]
EOF
hash="$(cd "$work" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"

current="$(docker image inspect -f '{{index .Config.Labels "berth.content-hash"}}' "$tag" 2>/dev/null || true)"
if [[ "$current" == "$hash" && "$force" == 0 ]]; then
    log "$tag is up to date (content ${hash:0:12})"
    exit 0
fi

section "berth-proxy: docker build $tag"
# DOCKER_BUILDKIT=0: the classic builder needs no buildx plugin, and FROM
# scratch no registry.
if ! out="$(DOCKER_BUILDKIT=0 docker build -q --label berth.proxy-image=1 \
    --label "berth.content-hash=$hash" -t "$tag" "$work" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "docker build of $tag failed"
fi
log "built $tag (content ${hash:0:12})"

# Smoke test: the proxy starts in the image and its health check passes.
cid="$(docker run -d --label berth.test=proxy-image "$tag")"
for ((i = 0; ; i++)); do
    if docker exec "$cid" /berth-proxy healthcheck 2>/dev/null; then break; fi
    if ((i >= 50)); then
        docker logs "$cid" >&2 || true
        die "berth-proxy does not answer its health check inside $tag"
    fi
    sleep 0.1
done
log "berth-proxy healthcheck passes inside $tag"
