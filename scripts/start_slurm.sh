#!/usr/bin/env bash
# Installs and starts a single-node Slurm on this machine (Debian 12, as root) for the tests and
# benchmarks: munge, slurmctld and slurmd without systemd, one node "localhost" in partition
# "debug". Idempotent: a second run finds the daemons up and only checks the node is usable.
#   scripts/start_slurm.sh
# slurm-wlm-torque adds qsub/qstat/qdel wrappers over Slurm: the tests use them as a stand-in
# for a Torque server (none is installable here).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(slurm-wlm munge slurm-wlm-torque)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CPUS=$(nproc)
CONF=/etc/slurm/slurm.conf
# proctrack/linuxproc. proctrack/pgid made a killed worker pool's job end at once (chaos
# slurm_pool_kill9: 74 s -> 9-11 s to recovery: the pool's orphans escape linuxproc and hold the job
# COMPLETING) but left a container block's podman container running after its job was cancelled
# (tests/integration/test_runtimes_slurm.py); sites run proctrack/cgroup, which tracks both.
WANT=$(cat <<EOF
# Single-node Slurm for fnserve's tests (written by scripts/start_slurm.sh).
ClusterName=fnserve
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Quick turnaround for short test jobs.
SchedulerParameters=sched_interval=1
MinJobAge=60
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
$SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT" ]; then
  printf '%s\n' "$WANT" | $SUDO tee "$CONF" >/dev/null
  conf_changed=1
fi

# munge: a key, then the daemon as user munge.
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO mungekey -c -k /etc/munge/munge.key
  $SUDO chown munge:munge /etc/munge/munge.key
  $SUDO chmod 0400 /etc/munge/munge.key
fi
$SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
$SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! pgrep -u munge -x munged >/dev/null; then
  if [ -z "$SUDO" ]; then runuser -u munge -- /usr/sbin/munged; else sudo -u munge /usr/sbin/munged; fi
fi

running() { pgrep -x "$1" >/dev/null; }
if [ "$conf_changed" -eq 1 ]; then
  # A new slurm.conf needs fresh daemons (and a clean state, since -c below drops old jobs).
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    [ -s "$pidfile" ] && $SUDO kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do running slurmctld || running slurmd || break; sleep 0.1; done
fi
running slurmctld || $SUDO slurmctld -c
running slurmd || $SUDO slurmd

# Wait until the node takes jobs (about a second after start).
for _ in $(seq 150); do
  state=$(sinfo -h -n localhost -o '%t' 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) break ;;
    down*|drain*) $SUDO scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
state=$(sinfo -h -n localhost -o '%t' 2>/dev/null || true)
case "$state" in
  idle*|mix*|alloc*) echo "slurm: node localhost is $state (partition debug)" ;;
  *) echo "slurm did not come up (node state: '${state:-unknown}'); see /var/log/slurm/" >&2; exit 1 ;;
esac
