#!/usr/bin/env bash
# Score a manifest on a SLURM cluster: one shard per array task, then one merge job.
#
#   scripts/slurm_array.sh submit MANIFEST OUT N [volqa score options...]
#
# submits an array of N tasks, task I running
#   volqa score MANIFEST --out OUT/part-I --shard I/N --executor processes \
#       --jobs $SLURM_CPUS_PER_TASK [options...]
# (with --resume when OUT/part-I already exists, so a requeued or resubmitted task continues
# where it stopped), and a merge job that starts when every task has ended and runs
#   volqa merge OUT/part-* --out OUT/merged
# The merge refuses to write anything while a row is missing, and prints the command that
# scores it; resubmitting the same command then finishes only what is left. Logs go to
# OUT/logs/. The #SBATCH lines below are the defaults of every task; override them with
# sbatch options in VOLQA_SBATCH (e.g. VOLQA_SBATCH="--partition=cpu --cpus-per-task=16
# --mem=64G"), and point VOLQA at another volqa (e.g. VOLQA="python -m volqa.cli").
#
#SBATCH --job-name=volqa
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
set -euo pipefail

VOLQA=${VOLQA:-volqa}
usage() {
  echo "usage: $0 submit MANIFEST OUT N [volqa score options...]" >&2
  exit 2
}

mode=${1:-}
case "$mode" in
  submit)
    [ $# -ge 4 ] || usage
    manifest=$(realpath "$2"); out=$(realpath -m "$3"); n=$4; shift 4
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$n'" >&2; exit 2; }
    mkdir -p "$out/logs"
    # shellcheck disable=SC2086  # VOLQA_SBATCH holds several options
    array=$(sbatch --parsable ${VOLQA_SBATCH:-} --array="0-$((n - 1))" \
      --output="$out/logs/part-%a.log" "$0" task "$manifest" "$out" "$n" "$@")
    array=${array%%;*}  # "jobid;cluster" on multi-cluster sites
    # shellcheck disable=SC2086
    merge=$(sbatch --parsable ${VOLQA_SBATCH:-} --dependency="afterany:$array" \
      --job-name=volqa-merge --cpus-per-task=1 --mem=4G --time=00:30:00 \
      --output="$out/logs/merge.log" "$0" merge "$out")
    echo "submitted array job $array ($n shards) and merge job ${merge%%;*}; results in $out/merged"
    ;;
  task)
    manifest=$2; out=$3; n=$4; shift 4
    i=${SLURM_ARRAY_TASK_ID:?task mode runs inside a SLURM array task}
    part="$out/part-$i"
    resume=()
    if [ -e "$part/settings.json" ]; then resume=(--resume); fi
    # shellcheck disable=SC2086  # VOLQA may be a command with arguments
    exec $VOLQA score "$manifest" --out "$part" --shard "$i/$n" --executor processes \
      --jobs "${SLURM_CPUS_PER_TASK:-1}" --no-progress "${resume[@]}" "$@"
    ;;
  merge)
    out=$2
    # shellcheck disable=SC2086
    exec $VOLQA merge "$out"/part-* --out "$out/merged" --overwrite
    ;;
  *)
    usage
    ;;
esac
