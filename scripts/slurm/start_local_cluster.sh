#!/usr/bin/env bash
# -----------------------------------------------------------------------------
# start_local_cluster.sh -- bring up a single-node SLURM cluster on localhost.
#
# Intended for Debian 12 (bookworm) test machines/containers WITHOUT systemd,
# run as root.  What it does:
#
#   1. apt-get installs `slurm-wlm` and `munge` (only if not installed yet),
#      with services prevented from auto-starting during the install.
#   2. Sets up MUNGE (key, directories, ownership) and starts `munged` as the
#      `munge` user.
#   3. Writes /etc/slurm/slurm.conf for a one-node cluster "fem-local":
#      node `localhost` (127.0.0.1), partition `debug`, cons_tres with
#      CR_Core_Memory (several 1-CPU jobs in parallel, --mem honoured),
#      no cgroups, no slurmdbd, job completion records in
#      /var/log/slurm/jobcomp.log (jobcomp/filetxt).
#   4. Starts `slurmctld` and `slurmd -N localhost` as background daemons,
#      waits until the node is `idle` (resuming it if it is down/drained).
#   5. Submits a trivial test job (`sbatch --wrap hostname`) and checks that
#      it is recorded as COMPLETED in the jobcomp log and wrote its output.
#
# Idempotent: if the daemons are already running with the same slurm.conf,
# it only verifies (munge round-trip, node idle, test job) and exits 0.  If
# slurm.conf has to change, the SLURM daemons are restarted.
#
# Environment knobs (all optional):
#   FEM_SLURM_CPUS=N        override the CPU count (default: nproc)
#   FEM_SLURM_MEM_MB=N      override RealMemory (default: 90% of MemTotal)
#   FEM_SLURM_DEF_MEM_PER_CPU=N  DefMemPerCPU in MB for jobs without --mem (1024)
#   FEM_SLURM_SKIP_TEST=1   do not submit the test job
#   FEM_SLURM_WAIT_S=N      seconds to wait for the node to become idle (30)
#
# Stop everything again with scripts/slurm/stop_local_cluster.sh.
# -----------------------------------------------------------------------------
set -euo pipefail

readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly SLURM_LOG_DIR=/var/log/slurm
readonly SLURMCTLD_SPOOL=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly SLURMCTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly JOBCOMP_LOG=${SLURM_LOG_DIR}/jobcomp.log
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGED_PID=/run/munge/munged.pid
readonly WAIT_S=${FEM_SLURM_WAIT_S:-30}

START_TS=$(date +%s)

# ---- small helpers ----------------------------------------------------------
log()  { printf '[start_local_cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die()  { printf '[start_local_cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the tail of a log file to stderr (used when something fails).
show_log() {
    local f=$1
    if [[ -r $f ]]; then
        printf -- '---- last lines of %s ----\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    fi
}

# Is the process whose pid is stored in pidfile $1 alive and named $2?
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$name" ]]
}

# Is a daemon running?  Prefer the pidfile; fall back to an exact-name match
# (never a pattern match) in case it was started without our pidfile.
daemon_running() {
    local pidfile=$1 name=$2
    pid_alive "$pidfile" "$name" || pgrep -x "$name" >/dev/null 2>&1
}

# Stop a daemon (pidfile first, then exact process name), wait until gone.
stop_daemon() {
    local pidfile=$1 name=$2 pids="" i
    if pid_alive "$pidfile" "$name"; then pids=$(<"$pidfile"); fi
    pids="$pids $(pgrep -x "$name" 2>/dev/null || true)"
    pids=$(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -u | tr '\n' ' ' || true)
    [[ -n ${pids// /} ]] || return 0
    log "stopping $name (pid $pids)"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 50); do
        pgrep -x "$name" >/dev/null 2>&1 || { rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    rm -f "$pidfile"
}

# ---- 0. preconditions -------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must be run as root (it installs packages and starts daemons)"
[[ -r /etc/debian_version ]] || log "warning: this does not look like Debian; continuing anyway"

# ---- 1. packages ------------------------------------------------------------
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in slurm-wlm munge; do
    pkg_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]} via apt-get (noninteractive) ..."
    # Keep the package maintainer scripts from trying to start daemons (there
    # is no systemd here; we start them ourselves below).  Only add a
    # policy-rc.d if none exists, and only remove the one we created.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${missing[*]} failed (rc=$rc)"
else
    log "packages slurm-wlm and munge already installed"
fi
for b in munged munge unmunge slurmctld slurmd sbatch sinfo scontrol; do
    command -v "$b" >/dev/null 2>&1 || die "'$b' not found in PATH after installation"
done

# ---- 2. munge ---------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (the munge package should create it)"
install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge
install -d -m 0700 -o munge -g munge /var/log/munge
install -d -m 0755 -o munge -g munge /run/munge
if [[ ! -s $MUNGE_KEY ]]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"

if daemon_running "$MUNGED_PID" munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    stop_daemon "$MUNGED_PID" munged
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    log "starting munged as user munge"
    runuser -u munge -- /usr/sbin/munged \
        || { show_log /var/log/munge/munged.log; die "munged failed to start"; }
fi
# Round-trip a credential to make sure munge really works.
for i in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.25
done
munge -n | unmunge >/dev/null 2>&1 \
    || { show_log /var/log/munge/munged.log; die "munge credential round-trip failed"; }
log "munge OK (munge -n | unmunge)"

# ---- 3. slurm.conf ----------------------------------------------------------
cpus=${FEM_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
mem_total_mb=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
# slurmd drains the node if RealMemory exceeds what it detects, so stay a bit
# below MemTotal (90%).
real_mem=${FEM_SLURM_MEM_MB:-$((mem_total_mb * 90 / 100))}
# Default memory for jobs without --mem/--mem-per-cpu (MB per allocated CPU).
def_mem_per_cpu=${FEM_SLURM_DEF_MEM_PER_CPU:-1024}
[[ $cpus =~ ^[0-9]+$ && $cpus -ge 1 ]] || die "bad CPU count '$cpus'"
[[ $real_mem =~ ^[0-9]+$ && $real_mem -ge 1 ]] || die "bad RealMemory '$real_mem'"

install -d -m 0755 /etc/slurm "$SLURM_LOG_DIR" "$SLURMCTLD_SPOOL" "$SLURMD_SPOOL"

new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
cat >"$new_conf" <<EOF
# slurm.conf -- single-node local cluster for the fem project.
# Generated by scripts/slurm/start_local_cluster.sh; edits will be overwritten.
ClusterName=fem-local
SlurmctldHost=localhost

# Everything runs as root in this throwaway test setup.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge

# No cgroups: plain Linux process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# mail is not available; avoids "Configured MailProg is invalid" log errors
MailProg=/bin/true
ReturnToService=2

# Allocate individual cores and memory so several 1-CPU jobs run at once and
# --mem is enforced at scheduling time.
SchedulerType=sched/backfill
# Start submitted batch jobs right away (default delays them by up to 3 s).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that gives no --mem is allocated ALL of the node's
# memory, which would serialise such jobs.  Memory is only a scheduling limit
# here (no cgroups / accounting gather), it is not enforced at run time.
DefMemPerCPU=${def_mem_per_cpu}

# No slurmdbd; every finished job is appended to a plain text file instead.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP_LOG}

# State, pid and log files.
StateSaveLocation=${SLURMCTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${SLURMCTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${SLURM_LOG_DIR}/slurmctld.log
SlurmdLogFile=${SLURM_LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Nodes and partitions.
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

conf_changed=0
if [[ -f $SLURM_CONF ]] && cmp -s "$new_conf" "$SLURM_CONF"; then
    log "$SLURM_CONF is up to date (CPUs=$cpus RealMemory=$real_mem)"
else
    log "writing $SLURM_CONF (CPUs=$cpus RealMemory=$real_mem)"
    install -m 0644 "$new_conf" "$SLURM_CONF"
    conf_changed=1
fi

log "slurm version: $(sinfo --version 2>/dev/null || echo '?')"

# ---- 4. slurm daemons -------------------------------------------------------
if ((conf_changed)); then
    # Config changed (or first run): restart whatever may be running so that
    # all settings (SelectType etc.) take effect.
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$SLURMCTLD_PID" slurmctld
fi

if daemon_running "$SLURMCTLD_PID" slurmctld; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    slurmctld -f "$SLURM_CONF" \
        || { show_log "$SLURM_LOG_DIR/slurmctld.log"; die "slurmctld failed to start"; }
fi
# Wait until the controller answers before starting slurmd.
for i in $(seq 1 $((WAIT_S * 2))); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.5
done
scontrol ping 2>/dev/null | grep -q 'is UP' \
    || { show_log "$SLURM_LOG_DIR/slurmctld.log"; die "slurmctld does not respond to 'scontrol ping'"; }

if daemon_running "$SLURMD_PID" slurmd; then
    log "slurmd already running"
else
    log "starting slurmd -N localhost"
    slurmd -N localhost -f "$SLURM_CONF" \
        || { show_log "$SLURM_LOG_DIR/slurmd.log"; die "slurmd failed to start"; }
fi

# ---- 5. wait for the node to become idle ------------------------------------
log "waiting up to ${WAIT_S}s for node localhost to become idle"
state=""
resumed=0
deadline=$(($(date +%s) + WAIT_S))
while :; do
    state=$(sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1 || true)
    case $state in
        idle|mixed|allocated|completing) break ;;   # usable (no '*' suffix)
        down*|drain*|fail*)
            if ((resumed < 3)); then
                log "node state is '$state'; resuming it"
                scontrol update nodename=localhost state=resume 2>/dev/null || true
                resumed=$((resumed + 1))
            fi ;;
    esac
    if (($(date +%s) >= deadline)); then
        show_log "$SLURM_LOG_DIR/slurmctld.log"
        show_log "$SLURM_LOG_DIR/slurmd.log"
        scontrol show node localhost >&2 || true
        die "node localhost not idle after ${WAIT_S}s (state '${state:-unknown}')"
    fi
    sleep 1
done
log "node localhost is $state"

# ---- 6. test job --------------------------------------------------------------
if [[ ${FEM_SLURM_SKIP_TEST:-0} == 1 ]]; then
    log "skipping test job (FEM_SLURM_SKIP_TEST=1)"
else
    out=$(mktemp /tmp/fem-slurm-test.XXXXXX)
    trap 'rm -f "$new_conf" "$out"' EXIT
    # We poll the jobcomp log ourselves instead of using `sbatch --wait`,
    # whose polling interval backs off to ~10 s and makes this script slow.
    log "submitting test job: sbatch --wrap hostname"
    jobid=$(sbatch --parsable --job-name=fem-smoke --output="$out" --wrap 'hostname') \
        || { show_log "$SLURM_LOG_DIR/slurmctld.log"; die "sbatch failed"; }
    jobid=${jobid%%;*}
    record=""
    for i in $(seq 1 240); do          # up to 60 s
        record=$(grep "^JobId=${jobid} " "$JOBCOMP_LOG" 2>/dev/null || true)
        [[ -n $record ]] && break
        sleep 0.25
    done
    if [[ -z $record ]]; then
        scontrol show job "$jobid" >&2 || true
        show_log "$SLURM_LOG_DIR/slurmctld.log"
        show_log "$SLURM_LOG_DIR/slurmd.log"
        die "test job $jobid did not finish within 60s (no record in $JOBCOMP_LOG)"
    fi
    if [[ $record != *"JobState=COMPLETED "* ]]; then
        show_log "$SLURM_LOG_DIR/slurmd.log"
        die "test job $jobid did not complete: $record"
    fi
    [[ -s $out ]] || die "test job $jobid produced no output in $out"
    log "test job $jobid completed, output: $(tr '\n' ' ' <"$out")"
    log "job $jobid recorded as COMPLETED in $JOBCOMP_LOG"
fi

log "cluster fem-local is up ($(($(date +%s) - START_TS))s); config: $SLURM_CONF"
sinfo
