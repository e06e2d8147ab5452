#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/start-slurm.sh (slurmd,
# slurmctld, munged). Harmless when nothing is running.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[stop-slurm] %s\n' "$*" >&2; }

stop_pidfile() {
    local pidfile="$1" name="$2" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill "$pid" || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit, sending KILL"
            kill -9 "$pid" || true
        fi
    fi
    rm -f "$pidfile"
}

# slurmd first so it does not report the node down to a live controller.
stop_pidfile /run/slurmd.pid slurmd
stop_pidfile /run/slurmctld.pid slurmctld
if [[ "${1:-}" != "--keep-munge" ]]; then
    stop_pidfile /run/munge/munged.pid munged
fi
log "stopped"
