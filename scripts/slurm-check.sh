#!/usr/bin/env bash
# The --quick grid on a real one-node Slurm cluster started on this machine, checked against a
# single-process run of the same grid.
#
#   scripts/slurm-check.sh [WORKDIR]      (as root; WORKDIR defaults to a new folder under /tmp)
#
# 1. installs Debian's slurm-wlm and munge when they are missing, starts munged, slurmctld and
#    slurmd with a minimal slurm.conf written here (one node, 2 CPUs, partition `debug`);
# 2. runs the --quick grid in one process with one thread (the reference; the tasks get 1 CPU), then writes the sbatch file of the
#    same grid with `reid-prune slurm --workers 3 --cpus-per-task 1` into another output folder,
#    checks it with `sbatch --test-only`, submits it and waits for the 3 array tasks and the
#    report job;
# 3. checks: every task ended, the workers' summaries equal the reference in every column but
#    the measured latency and speed-up, every step was computed by exactly one task (the
#    "worker … computed N steps: …" lines of the task logs against the finished step folders),
#    and the report job wrote index.html.
# Stops the daemons it started on exit. Needs the release binaries (cargo build --release).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${REID_BIN:-$ROOT/target/release}"
W="${1:-$(mktemp -d /tmp/reid-slurm-check.XXXXXX)}"
mkdir -p "$W"
W="$(cd "$W" && pwd)"
for b in reid-prune reid-report; do
  [ -x "$BIN/$b" ] || { echo "slurm-check: $BIN/$b missing: cargo build --release" >&2; exit 2; }
done
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-check: installing slurm-wlm and munge (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

# --- a one-node cluster -------------------------------------------------------------------
NODE="$(hostname -s)"
CONF="$W/slurm"
mkdir -p "$CONF/state" "$CONF/spool" "$CONF/munge"
export SLURM_CONF="$CONF/slurm.conf"
cat > "$SLURM_CONF" <<CONFIG
ClusterName=reidcheck
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$CONF/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$CONF/state
SlurmdSpoolDir=$CONF/spool
SlurmctldPidFile=$CONF/slurmctld.pid
SlurmdPidFile=$CONF/slurmd.pid
SlurmctldLogFile=$CONF/slurmctld.log
SlurmdLogFile=$CONF/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$NODE CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFIG

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

MUNGE_SOCKET="$CONF/munge/munge.socket"
munged --force --foreground --socket="$MUNGE_SOCKET" --pid-file="$CONF/munge/munged.pid" \
  --log-file="$CONF/munge/munged.log" --seed-file="$CONF/munge/munged.seed" \
  > "$CONF/munge/munged.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
slurmctld -D -f "$SLURM_CONF" > "$CONF/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" -N "$NODE" > "$CONF/slurmd.out" 2>&1 &
PIDS+=($!)
for i in $(seq 60); do
  state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
  [ "$state" = idle ] && break
  [ "$i" = 60 ] && { echo "slurm-check: the node never became idle ($state)"; tail -20 "$CONF"/*.out; exit 1; }
  sleep 1
done
echo "slurm-check: cluster up ($(sinfo -h -o '%P %D nodes %C CPUs (A/I/O/T)'))"

# --- the reference: one process -------------------------------------------------------------
# with the tasks' thread count: float sums split over another number of threads round
# differently, so only runs with the same thread count are equal bit for bit
start=$(date +%s)
RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 "$BIN/reid-prune" --quick --out "$W/single" > "$W/single.log" 2>&1
echo "slurm-check: single process: $(tail -1 "$W/single.log" | cut -c1-60)… ($(( $(date +%s) - start )) s)"

# --- the same grid as 3 Slurm workers -------------------------------------------------------
"$BIN/reid-prune" slurm --config "$W/single/experiment.toml" --workers 3 --cpus-per-task 1 \
  --time 00:30:00 --set "out=$W/cluster" > "$W/grid.sbatch"
sbatch --test-only "$W/grid.sbatch" 2>&1 | tee "$W/test-only.txt"
grep -q "to start at" "$W/test-only.txt" || { echo "slurm-check: sbatch --test-only refused the script"; exit 1; }
start=$(date +%s)
JOB="$(sbatch --parsable "$W/grid.sbatch")"
echo "slurm-check: submitted array job $JOB"
while squeue -h -o '%i' | grep -q .; do
  [ $(( $(date +%s) - start )) -gt 1500 ] && { echo "slurm-check: timed out"; squeue; exit 1; }
  sleep 2
done
echo "slurm-check: the array and the report job ended ($(( $(date +%s) - start )) s)"

fail() { echo "slurm-check: FAILED: $*"; exit 1; }
LOGS="$W/cluster/slurm"
n=$(ls "$LOGS"/worker-"$JOB"_*.log 2>/dev/null | wc -l)
[ "$n" = 3 ] || fail "$n task logs, expected 3"
for f in "$LOGS"/worker-"$JOB"_*.log; do
  grep -q "^worker .* computed " "$f" || { tail -20 "$f"; fail "$f: the worker did not end normally"; }
done
# every step by exactly one task
grep -h "^worker .* computed " "$LOGS"/worker-"$JOB"_*.log | sed 's/.*steps: //; s/^none$//' | tr ' ' '\n' \
  | sed '/^$/d' | sort > "$W/computed.txt"
dups="$(uniq -d "$W/computed.txt")"
[ -z "$dups" ] || fail "steps computed twice: $dups"
done_steps="$(find "$W/cluster/steps" -mindepth 2 -maxdepth 2 -name DONE | wc -l)"
[ "$(wc -l < "$W/computed.txt")" = "$done_steps" ] || fail "$(wc -l < "$W/computed.txt") steps in the logs, $done_steps finished"
all_steps="$(find "$W/cluster/steps" -mindepth 1 -maxdepth 1 -type d | wc -l)"
[ "$all_steps" = "$done_steps" ] || fail "$all_steps step folders, $done_steps finished"
echo "slurm-check: $done_steps steps, each computed by one task: $(for f in "$LOGS"/worker-"$JOB"_*.log; do grep -h '^worker .* computed ' "$f" | sed 's/.*computed \([0-9]*\) steps.*/\1/'; done | paste -sd+)"
# the summaries equal, but for the measured latency and speed-up (the last two columns)
strip() { awk 'NF > 2 { NF -= 2 } { print }' "$1"; }
diff <(strip "$W/single/summary.txt") <(strip "$W/cluster/summary.txt") > "$W/summary.diff" \
  || { cat "$W/summary.diff"; fail "the cluster's summary differs from the single process's"; }
# and every worker ended with that table
rows="$(strip "$W/single/summary.txt" | wc -l)"
for f in "$LOGS"/worker-"$JOB"_*.log; do
  got="$(strip "$f" | grep -Fxc -f <(strip "$W/single/summary.txt") || true)"
  [ "$got" -ge "$rows" ] || fail "$f: $got of the $rows rows of the single process's table"
done
[ -f "$W/cluster/report/index.html" ] || fail "the report job wrote no index.html ($(ls "$LOGS"))"
echo "slurm-check: passed (workdir $W)"
