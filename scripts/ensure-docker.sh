#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`, installing Debian's
# docker.io and starting dockerd in the background when needed.
#
# Idempotent: does nothing when the engine already answers, and waits for a
# dockerd that is already starting instead of starting a second one.
# Env: BERTH_DOCKERD_LOG (default /var/log/berth-dockerd.log),
#      BERTH_DOCKER_WAIT (seconds to wait for the engine, default 60).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export DEBIAN_FRONTEND=noninteractive
LOG_FILE="${BERTH_DOCKERD_LOG:-/var/log/berth-dockerd.log}"
PID_FILE=/run/berth-dockerd.pid
WAIT_SECS="${BERTH_DOCKER_WAIT:-60}"

engine_up() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

if engine_up; then
    log "Docker engine already answering ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    [[ "$(id -u)" == 0 ]] || die "dockerd is missing and installing it needs root"
    log "installing docker.io (dockerd) from Debian"
    # cgroupfs-mount: a Recommends of docker.io, skipped by
    # --no-install-recommends; used below on machines without cgroup mounts.
    apt_install docker.io cgroupfs-mount
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"

# A dockerd that is already running (maybe still starting up): wait for it
# rather than start another one on the same socket.
running_pid=""
for f in "$PID_FILE" /var/run/docker.pid; do
    if [[ -s "$f" ]] && pid="$(cat "$f")" && kill -0 "$pid" 2>/dev/null &&
        grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
        running_pid="$pid"
        break
    fi
done

if [[ -n "$running_pid" ]]; then
    log "dockerd already running (pid $running_pid); waiting for it to answer"
else
    [[ "$(id -u)" == 0 ]] || die "starting dockerd needs root"
    # Without an init system nothing may have mounted the cgroup hierarchies
    # dockerd needs.
    if ! grep -qE '^[^ ]+ [^ ]+ cgroup2? ' /proc/mounts; then
        command -v cgroupfs-mount >/dev/null 2>&1 || apt_install cgroupfs-mount
        log "mounting cgroup hierarchies (cgroupfs-mount)"
        cgroupfs-mount
    fi
    mkdir -p "$(dirname "$LOG_FILE")"
    log "starting dockerd in the background (log: $LOG_FILE)"
    # setsid + nohup: the daemon outlives this script and its process group.
    setsid nohup dockerd >>"$LOG_FILE" 2>&1 </dev/null &
    running_pid=$!
    echo "$running_pid" >"$PID_FILE"
    log "dockerd pid $running_pid (recorded in $PID_FILE)"
fi

for ((i = 0; i < WAIT_SECS; i++)); do
    if engine_up; then
        log "Docker engine is up after ${i}s ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    if ! kill -0 "$running_pid" 2>/dev/null; then
        log "dockerd (pid $running_pid) exited; last lines of $LOG_FILE:"
        tail -n 30 "$LOG_FILE" >&2 || true
        die "dockerd did not start"
    fi
    sleep 1
done
log "last lines of $LOG_FILE:"
tail -n 30 "$LOG_FILE" >&2 || true
die "Docker engine did not answer 'docker info' within ${WAIT_SECS}s"
