#!/usr/bin/env bash
# -----------------------------------------------------------------------------
# stop_local_cluster.sh -- stop the single-node SLURM cluster started by
# scripts/slurm/start_local_cluster.sh: slurmd, slurmctld and munged.
#
# Processes are located through their pidfiles first and then by EXACT
# process name (pgrep -x, never a pattern match).  Sends SIGTERM, waits up to
# 10 s, then SIGKILL.  Safe to run when nothing is running.  Packages, config,
# spool state and logs are left in place.
# -----------------------------------------------------------------------------
set -euo pipefail

log() { printf '[stop_local_cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[[ $(id -u) -eq 0 ]] || { echo "[stop_local_cluster] ERROR: must be run as root" >&2; exit 1; }

# stop_daemon PIDFILE NAME
stop_daemon() {
    local pidfile=$1 name=$2 pids="" p i
    if [[ -r $pidfile ]]; then
        p=$(<"$pidfile")
        if [[ $p =~ ^[0-9]+$ && -r /proc/$p/comm && $(<"/proc/$p/comm") == "$name" ]]; then
            pids=$p
        fi
    fi
    pids="$pids $(pgrep -x "$name" 2>/dev/null || true)"
    pids=$(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -u | tr '\n' ' ' || true)
    if [[ -z ${pids// /} ]]; then
        log "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pids)"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 50); do
        if ! pgrep -x "$name" >/dev/null 2>&1; then
            rm -f "$pidfile"
            log "$name stopped"
            return 0
        fi
        sleep 0.2
    done
    log "$name did not exit after SIGTERM; sending SIGKILL"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
    rm -f "$pidfile"
    if pgrep -x "$name" >/dev/null 2>&1; then
        echo "[stop_local_cluster] ERROR: $name still running" >&2
        return 1
    fi
}

rc=0
# Order: compute daemon, controller, then authentication.
stop_daemon /run/slurmd.pid slurmd || rc=1
stop_daemon /run/slurmctld.pid slurmctld || rc=1
stop_daemon /run/munge/munged.pid munged || rc=1
exit $rc
