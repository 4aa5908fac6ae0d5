#!/usr/bin/env bash
# Submit a kvmmu campaign: SHARDS array tasks, then a merge that runs when all succeeded.
#   SHARDS=16 deploy/slurm/submit.sh --policy linux-6.13 --preemptions 3
# The merged verdict goes to $KVMMU_RESULTS/merged.txt (and merged.json); its exit status
# is the campaign's (0: every cell as expected).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${SHARDS:-4}
results=${KVMMU_RESULTS:-kvmmu-results}
export KVMMU_RESULTS=$results
job=$(sbatch --parsable --array="0-$((shards - 1))" --export=ALL "$here/check-array.sbatch" "$@")
job=${job%%;*}
sbatch --parsable --dependency="afterok:$job" --job-name=kvmmu-merge \
    --output="$results/merge-%j.log" --export=ALL \
    --wrap="${KVMMU:-kvmmu} merge $results/shards --format json --out $results/merged.json --no-replay-files && ${KVMMU:-kvmmu} merge $results/shards --out $results/merged.txt --replay-dir $results/replays"
echo "submitted array job $job ($shards shards) and its merge"
