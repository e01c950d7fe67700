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

# moto (an S3 emulator) for the S3 state backend tests
# (state/tests/remote/s3.rs), in a venv at a fixed path the tests look in
# (or BERTH_MOTO_VENV; the tests also honour BERTH_MOTO_SERVER and PATH).
moto_venv="${BERTH_MOTO_VENV:-$HOME/.cache/berth-moto-venv}"
if "$moto_venv/bin/moto_server" --help >/dev/null 2>&1; then
    log "moto already installed in $moto_venv"
else
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        [[ "$(id -u)" == 0 ]] || die "python3 with venv is missing and not root"
        log "installing: python3 python3-venv"
        apt_install python3 python3-venv
    fi
    log "installing moto into $moto_venv"
    rm -rf "$moto_venv"
    mkdir -p "$(dirname "$moto_venv")"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6'
    "$moto_venv/bin/moto_server" --help >/dev/null ||
        die "moto_server does not run from $moto_venv"
fi
