#!/usr/bin/env bash
# Everything berth's tests and benchmarks need on the machine: a running
# Docker engine plus a few Debian packages. Installs only what is missing;
# safe to run again and again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$(dirname "${BASH_SOURCE[0]}")/ensure-docker.sh"

# openssh-server: sshd for the host-provisioning tests; docker-registry: a
# local registry; apache2-utils: ab and htpasswd; docker-compose and
# hyperfine: the benchmark comparison (scripts/bench.sh); busybox-static:
# a static busybox for the docker provider's test images.
packages=(openssh-server docker-registry apache2-utils docker-compose hyperfine busybox-static)
missing=()
for p in "${packages[@]}"; do
    deb_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] || die "missing packages (${missing[*]}) and not root"
    log "installing: ${missing[*]}"
    apt_install "${missing[@]}"
else
    log "test packages already installed"
fi

# sshd refuses to start without its privilege-separation directory.
# shellcheck disable=SC2174 # only /run/sshd itself is created
mkdir -p -m0755 /run/sshd
