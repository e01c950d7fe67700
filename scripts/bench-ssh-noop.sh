#!/usr/bin/env bash
# No-op `berth plan` over SSH for 20 containers on 2 hosts.
#
# Measures:
#   - wall time of `berth plan` with nothing to do (hyperfine, 1 warm-up +
#     BENCH_RUNS runs, default 10);
#   - per host, during one no-op plan: the SSH logins (sshd's "Accepted
#     publickey" lines) and the Docker API requests (target: one container
#     list call per host). The requests are counted honestly, without touching
#     the shared dockerd: strace is attached to each of our own sshd processes
#     (-f, so it follows the per-connection children) for that one plan, and
#     every write() sshd makes towards the Docker socket that starts with an
#     HTTP request line ("GET /...", "POST /...") is one API request. strace
#     slows sshd down, so that plan is not one of the timed runs.
#
# The two "hosts" are two OpenSSH servers of this script on 127.0.0.1 (free
# ports, their own ed25519 host keys, pinned by SHA256 fingerprint in the
# configuration); both forward to the same local dockerd. The configuration
# has 10 `docker_container`s (the demo app, built once here and tagged
# locally, so nothing is pulled) with a `host` block for host A and 10 for
# host B. It is applied once, untimed, before the measurements.
#
# usage: scripts/bench-ssh-noop.sh
# env:   BERTH         berth binary (default: <target dir>/release/berth)
#        BENCH_RUNS=10 BENCH_WARMUP=1
#        BENCH_KEEP=1  keep the temp dir (sshd logs, straces, berth.hcl)
# Needs root (sshd logs in as root), a running dockerd, /usr/sbin/sshd,
# hyperfine, strace, and the demo-app binary in examples/local/app (from
# scripts/build-demo-image.sh). Everything created is named
# berth-bench-ssh-<pid>* or labelled berth.bench=bench-ssh-<pid>; the
# containers, the image and the temp dir are removed and both sshd are
# killed by PID on exit, even on failure.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PER_HOST=10
RUNS="${BENCH_RUNS:-10}"
WARMUP="${BENCH_WARMUP:-1}"
ENV_NAME="bench-ssh-$$"
PREFIX="berth-$ENV_NAME" # berth-bench-ssh-<pid>
IMAGE="$PREFIX:latest"
LABEL="berth.bench=$ENV_NAME"
TARGET_DIR="$(cargo_target_dir)"
BERTH="${BERTH:-$TARGET_DIR/release/berth}"

[[ "$(id -u)" == 0 ]] || die "run as root (sshd logs in as root)"
[[ -x "$BERTH" ]] || die "no berth binary at $BERTH (cargo build --release -p berth)"
for tool in hyperfine strace ssh-keygen /usr/sbin/sshd; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x "$BERTH_ROOT/examples/local/app/demo-app" ]] ||
    die "no demo-app in examples/local/app (run scripts/build-demo-image.sh)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-ssh.XXXXXX")"
declare -A SSHD_PID=() PORT=() FP=()
strace_pids=()
cleanup() {
    local rc=$?
    set +e
    section "bench-ssh-noop: cleanup"
    local p h
    for p in "${strace_pids[@]}"; do kill "$p" 2>/dev/null; done
    if [[ -f "$WORK/berth.hcl" ]]; then
        (cd "$WORK" && timeout 300 "$BERTH" --env "$ENV_NAME" destroy --auto-approve) >"$WORK/destroy.log" 2>&1 ||
            log "berth destroy failed (see $WORK/destroy.log); removing leftovers by name"
    fi
    for h in "${!SSHD_PID[@]}"; do
        kill "${SSHD_PID[$h]}" 2>/dev/null
        wait "${SSHD_PID[$h]}" 2>/dev/null
    done
    docker ps -aq --filter "name=$PREFIX-" | xargs -r docker rm -f >/dev/null 2>&1
    docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1
    docker rmi -f "$IMAGE" >/dev/null 2>&1
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
keygen() { # PATH
    ssh-keygen -q -C "$ENV_NAME" -N '' -t ed25519 -f "$1"
}
logins() { # HOST -> accepted logins so far
    grep -c 'Accepted publickey' "$WORK/sshd-$1/sshd.log" || true
}

section "bench-ssh-noop: setup (untimed)"
DOCKER_BUILDKIT=0 docker build -q --label "$LABEL" -t "$IMAGE" "$BERTH_ROOT/examples/local/app" >/dev/null
log "built $IMAGE"

keygen "$WORK/client_key"
# shellcheck disable=SC2174 # only /run/sshd itself is created
mkdir -p -m0755 /run/sshd
for h in a b; do
    dir="$WORK/sshd-$h"
    mkdir -p "$dir"
    keygen "$dir/host_ed25519"
    cp "$WORK/client_key.pub" "$dir/authorized_keys"
    PORT[$h]="$(free_port)"
    FP[$h]="$(ssh-keygen -E sha256 -lf "$dir/host_ed25519.pub" | awk '{ print $2 }')"
    cat >"$dir/sshd_config" <<EOF
Port ${PORT[$h]}
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
LogLevel VERBOSE
EOF
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" </dev/null >/dev/null 2>"$dir/sshd.log" &
    SSHD_PID[$h]=$!
done
for h in a b; do
    for ((i = 0; i < 200; i++)); do
        if (: <"/dev/tcp/127.0.0.1/${PORT[$h]}") 2>/dev/null; then break; fi
        kill -0 "${SSHD_PID[$h]}" 2>/dev/null || die "sshd $h exited: $(cat "$WORK/sshd-$h/sshd.log")"
        sleep 0.05
    done
    log "sshd $h: pid ${SSHD_PID[$h]}, port ${PORT[$h]}, host key ${FP[$h]}"
done

{
    echo "# Generated by scripts/bench-ssh-noop.sh: $PER_HOST containers on each of 2 SSH hosts."
    for h in a b; do
        for ((i = 1; i <= PER_HOST; i++)); do
            printf -v id '%s%02d' "$h" "$i"
            cat <<EOF

resource "docker_container" "$id" {
  name    = "berth-\${berth.env}-$id"
  image   = "$IMAGE"
  restart = "unless-stopped"
  env     = ["INSTANCE=$id"]

  host {
    address     = "127.0.0.1"
    port        = ${PORT[$h]}
    private_key = file("client_key")
    host_key    = "${FP[$h]}"
  }
}
EOF
        done
    done
} >"$WORK/berth.hcl"

berth() { (cd "$WORK" && "$BERTH" --env "$ENV_NAME" "$@"); }
berth apply --auto-approve >"$WORK/apply.log" 2>&1 || {
    cat "$WORK/apply.log" >&2
    die "initial apply failed"
}
log "applied: $(docker ps -q --filter "name=$PREFIX-" | wc -l) containers running"
rc=0
berth plan --detailed-exitcode >"$WORK/plan.log" 2>&1 || rc=$?
((rc == 0)) || {
    cat "$WORK/plan.log" >&2
    die "the plan after the apply is not a no-op (exit $rc)"
}

section "bench-ssh-noop: API requests and logins per host during one no-op plan"
declare -A before=()
for h in a b; do
    before[$h]="$(logins "$h")"
    strace -f -qq -e trace=write,writev,sendto,sendmsg -s 96 \
        -o "$WORK/strace-$h.txt" -p "${SSHD_PID[$h]}" 2>/dev/null &
    strace_pids+=($!)
done
sleep 1 # let strace attach
berth plan >"$WORK/plan-counted.log" 2>&1
sleep 1 # let the connections' children finish writing
for p in "${strace_pids[@]}"; do
    kill -INT "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
done
strace_pids=()
declare -A requests=() login_count=()
for h in a b; do
    login_count[$h]=$(($(logins "$h") - before[$h]))
    grep -oE '"(GET|HEAD|POST|PUT|DELETE) /[^ ]*' "$WORK/strace-$h.txt" |
        sed 's/^"//; s/[?].*//' >"$WORK/requests-$h.txt" || true
    requests[$h]="$(wc -l <"$WORK/requests-$h.txt")"
    log "host $h: ${login_count[$h]} login(s), ${requests[$h]} Docker API request(s):"
    sort "$WORK/requests-$h.txt" | uniq -c >&2
done

section "bench-ssh-noop: no-op plan wall time (hyperfine, $RUNS runs)"
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
    --export-json "$WORK/hyperfine.json" --export-markdown "$WORK/hyperfine.md" \
    -n "berth plan (no-op, 2 SSH hosts x $PER_HOST)" \
    "cd $(printf '%q' "$WORK") && $(printf '%q' "$BERTH") --env $ENV_NAME plan"

section "bench-ssh-noop: results"
cat <<EOF
date:      $(date -u +%FT%TZ)
berth:     $("$BERTH" --version 2>&1 | head -n1)
cpus:      $(nproc)   load average: $(cut -d' ' -f1-3 /proc/loadavg)
host A:    ${login_count[a]} SSH login(s), ${requests[a]} Docker API request(s): $(sort "$WORK/requests-a.txt" | uniq -c | awk '{ printf "%s%s x %s %s", (NR > 1 ? ", " : ""), $1, $2, $3 }')
host B:    ${login_count[b]} SSH login(s), ${requests[b]} Docker API request(s): $(sort "$WORK/requests-b.txt" | uniq -c | awk '{ printf "%s%s x %s %s", (NR > 1 ? ", " : ""), $1, $2, $3 }')
EOF
cat "$WORK/hyperfine.md"
