#!/usr/bin/env bash
# The campaign test on a real Slurm: a one-node cluster on localhost (munged, slurmctld and
# slurmd with a generated slurm.conf, state and logs in a temporary directory), a campaign
# submitted as an array job with deploy/slurm/check-array.sbatch, its shards merged, and the
# merged verdicts compared with one process running the same campaign. Every daemon it
# started is stopped (by pid) and its state removed, also when it fails.
#
# Usage: .ci/slurm-test.sh PATH-TO-KVMMU
# Prints one SKIP line and exits 0 where it cannot run (not root, Slurm or munge missing),
# unless KVMMU_REQUIRE_SLURM=1 (CI), where that is a failure.
set -euo pipefail
kvmmu=$(realpath "$1")
repo=$(cd "$(dirname "$0")/.." && pwd)

skip() {
    if [ "${KVMMU_REQUIRE_SLURM:-0}" = 1 ]; then
        echo "slurm-test: FAIL: $1" >&2
        exit 1
    fi
    echo "SKIP slurm-test: $1"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (SlurmUser=root, munged)"
for c in munged slurmctld slurmd sbatch sinfo; do
    command -v "$c" >/dev/null || skip "$c not installed (apt-get install slurm-wlm munge)"
done

tmp=$(mktemp -d /tmp/kvmmu-slurm.XXXXXX)
chmod 0700 "$tmp"
cleanup() {
    local rc=$?
    for pidfile in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munged.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [ $rc != 0 ]; then
        echo "slurm-test: failed; daemon logs:" >&2
        tail -n 20 "$tmp"/*.log >&2 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/results"

# munge: a fresh key, its own socket, run as root (--force).
dd if=/dev/urandom of="$tmp/munge.key" bs=1024 count=1 status=none
chmod 0400 "$tmp/munge.key"
munged --force --key-file="$tmp/munge.key" --socket="$tmp/munge.socket" \
    --pid-file="$tmp/munged.pid" --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed"

cat >"$tmp/slurm.conf" <<EOF
ClusterName=kvmmu-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge.socket
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) break ;; esac
    sleep 0.2
done
case "${state:-}" in idle*|mix*|alloc*) ;; *) echo "slurm-test: node never became idle (state: ${state:-none})" >&2; exit 1 ;; esac
echo "slurm-test: one-node Slurm up on $host ($cpus CPUs)"

# The campaign: cells that split into subtrees, violations among them.
campaign=(vgpu-reset-race nested-pfnmap invalidate-during-fault concurrent-invalidations
    --policy linux-4.8 --policy linux-6.13 --no-replay-files)
KVMMU="$kvmmu" KVMMU_RESULTS="$tmp/results" sbatch --wait --array=0-3 --chdir="$tmp" \
    --output="$tmp/array-%a.log" --export=ALL "$repo/deploy/slurm/check-array.sbatch" \
    "${campaign[@]}" >/dev/null
ls "$tmp/results/shards" | grep -c '^shard-[0-3]\.json$' | grep -qx 4 ||
    { echo "slurm-test: expected 4 shard files" >&2; ls -l "$tmp/results/shards" >&2; exit 1; }

"$kvmmu" merge "$tmp/results/shards" --format json --no-replay-files >"$tmp/merged.json"
"$kvmmu" check "${campaign[@]}" --jobs 1 --format json -q >"$tmp/single.json"
python3 - "$tmp/merged.json" "$tmp/single.json" <<'EOF'
import json, sys
def cells(p):
    keys = ("scenario", "policy", "verdict", "violations", "executions", "complete", "outcomes")
    return [tuple(json.dumps(json.loads(l)[k]) for k in keys) for l in open(p)]
merged, single = cells(sys.argv[1]), cells(sys.argv[2])
if merged != single:
    for m, s in zip(merged, single):
        if m != s:
            print("slurm-test: merged", m, "\n            single", s, file=sys.stderr)
    sys.exit("slurm-test: the merged shards differ from one process")
print(f"slurm-test: 4 array tasks merged equal one process on {len(single)} cells "
      f"({sum(int(c[4]) for c in single)} executions)")
EOF
