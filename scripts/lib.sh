# Shared helpers for scripts/*.sh. Source it; it does nothing on its own.
# shellcheck shell=bash

# The repository root (this file lives in ROOT/scripts).
BERTH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BERTH_ROOT

# A clear section header, on stderr so it never mixes into captured output.
section() {
    printf '\n==== %s ====\n' "$*" >&2
}

log() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# Cargo's target directory, honouring CARGO_TARGET_DIR and .cargo/config.
cargo_target_dir() {
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
        printf '%s\n' "$CARGO_TARGET_DIR"
        return
    fi
    local dir
    dir="$(cd "$BERTH_ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    printf '%s\n' "${dir:-$BERTH_ROOT/target}"
}

# apt-get install, non-interactive, waiting for a dpkg lock another
# installer may hold instead of failing at once.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "${BERTH_APT_UPDATED:-}" ]]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        BERTH_APT_UPDATED=1
    fi
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@"
}

# True when the Debian package is installed.
deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
