#!/usr/bin/env bash
# Build the load balancer image the tests use, `berth-test-nginx:latest`,
# without any registry: the host's own nginx binary (Debian's nginx-light,
# installed when /usr/sbin/nginx is missing), the shared libraries `ldd`
# lists and the dynamic loader, mime.types, a minimal passwd/group and the
# directories nginx writes to, packed as a root filesystem and turned into
# an image with `docker import`. The image is labelled berth.test=lb-image
# and berth.content-hash=<sha256 of the rootfs tar>; when an image of that
# tag with the same hash exists already, nothing is done.
#
# usage: scripts/build-lb-image.sh [--tag TAG] [--force]
#   --tag TAG   image tag (default berth-test-nginx:latest)
#   --force     import again even when the content hash matches
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tag=berth-test-nginx:latest
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

section "load balancer test image: $tag"
nginx=/usr/sbin/nginx
if [[ ! -x "$nginx" ]]; then
    [[ "$(id -u)" == 0 ]] || die "$nginx is missing and not root (apt-get install nginx-light)"
    log "installing nginx-light"
    apt_install nginx-light
fi
[[ -x "$nginx" ]] || die "$nginx is still missing after installing nginx-light"

work="$(mktemp -d)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
root="$work/rootfs"
mkdir -p "$root"

# The binary, every library ldd resolves, and the loader (the one line with
# no "=>"). Files are copied dereferenced, to the path ldd printed.
copy_file() { # SRC
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}
copy_file "$nginx"
while read -r line; do
    case "$line" in
    *"=> not found"*) die "ldd $nginx: $line" ;;
    *"=>"*/*) lib="$(sed -E 's/.*=> ([^ ]+).*/\1/' <<<"$line")" ;;
    /*) lib="${line%% *}" ;;
    *) continue ;;
    esac
    copy_file "$lib"
done < <(ldd "$nginx")
copy_file /etc/nginx/mime.types

mkdir -p "$root/etc" "$root/var/log/nginx" "$root/var/lib/nginx" "$root/run" "$root/tmp"
chmod 1777 "$root/tmp"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
# A standalone default; berth writes its own nginx.conf before starting.
cat >"$root/etc/nginx/nginx.conf" <<'EOF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
    access_log off;
    server {
        listen 80;
        location / { return 200 "berth-test-nginx\n"; }
    }
}
EOF

# Deterministic tar: the content hash only changes with the content.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$root" -cf "$work/rootfs.tar" .
hash="$(sha256sum "$work/rootfs.tar" | cut -d' ' -f1)"

current="$(docker image inspect -f '{{index .Config.Labels "berth.content-hash"}}' "$tag" 2>/dev/null || true)"
if [[ "$current" == "$hash" && "$force" == 0 ]]; then
    log "$tag is up to date (content ${hash:0:12})"
    exit 0
fi

docker import \
    --change 'CMD ["/usr/sbin/nginx","-g","daemon off;"]' \
    --change 'EXPOSE 80' \
    --change 'LABEL berth.test=lb-image' \
    --change "LABEL berth.content-hash=$hash" \
    "$work/rootfs.tar" "$tag" >/dev/null
log "imported $tag (content ${hash:0:12}, $(du -h "$work/rootfs.tar" | cut -f1))"

# Smoke test: the configuration parses and the binary runs in the image.
if ! out="$(docker run --rm --label berth.test=lb-image "$tag" /usr/sbin/nginx -t 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "nginx -t fails inside $tag"
fi
log "nginx -t passes inside $tag"
