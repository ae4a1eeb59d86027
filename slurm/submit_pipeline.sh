#!/bin/bash
# Submit the whole MegaMeta recipe as a chain of SLURM jobs and print their ids:
#   data prep (slurm/prepare_data.sbatch on CPU nodes: tokenizer, shards; with PREP_PIECES=N > 1
#            a tokenizer job, an N-task array job of preprocess pieces, and a merge job)
#   phase 1  (slurm/phase1_meta.sbatch: the config's first phase), afterok on the data prep
#   phase 2+ (slurm/phase2_xlingual.sbatch, once per later phase), each --dependency=afterok on the one before
#   convert + evaluate (slurm/convert_evaluate.sbatch) of the last phase, afterok on it
# Dependants use --kill-on-invalid-dep=yes: if a job fails, the jobs after it are cancelled
# instead of pending forever.
#
# Safe to rerun: the data prep is skipped when <run_dir>/shards/manifest.json exists, a phase
# whose <run_dir>/<phase>/DONE.json exists is skipped, as is the evaluation when
# <run_dir>/<last phase>/eval/report.json exists, and a step that is already
# queued or running for the same run dir is reused (chained onto) rather than submitted twice.
#
# usage: slurm/submit_pipeline.sh CONFIG [KEY=VALUE ...]
#   KEY=VALUE: dotted config overrides, passed to every job (appended to $EXTRA_ARGS)
# environment (all optional):
#   SBATCH_ARGS  extra sbatch options for the training and evaluation jobs,
#                e.g. "--partition=gpu --account=proj --nodes=4"
#   PREP_SBATCH_ARGS  extra sbatch options for the data prep jobs, e.g. "--partition=cpu --account=proj"
#   PREP_PIECES  preprocess in this many array tasks (default 1: one prep job)
#   LAUNCH_MODE, SETUP, PYTHON, MAX_RESTARTS, PREFLIGHT, NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, ...:
#                passed to the templates (see their variable blocks); sbatch exports the
#                environment to the jobs
#   DRY_RUN=1    print the sbatch commands instead of running them
# Walk-through: docs/cluster.md
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MEGAMETA_HOME=${MEGAMETA_HOME:-$(dirname "$here")}
config=$1
shift
[[ -f $config ]] || { echo "submit_pipeline.sh: error: CONFIG $config: no such file" >&2; exit 2; }
CONFIG=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
EXTRA_ARGS=$(echo "${EXTRA_ARGS:-} $*" | xargs)  # trimmed, space-separated overrides
export CONFIG EXTRA_ARGS
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $MEGAMETA_HOME/.venv/bin/python ]]; then PYTHON=$MEGAMETA_HOME/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON
command -v sbatch >/dev/null || { echo "submit_pipeline.sh: error: sbatch not found (run this on a SLURM login node)" >&2; exit 2; }

# Validate the config here, before anything is queued; learn the run dir and phase names.
read -r -a overrides <<<"$EXTRA_ARGS"
RUN_DIR="" PHASES=() DONE_FILES=() REPORT_FILES=()
info=$("$PYTHON" "$MEGAMETA_HOME/tools/slurm_env.py" config --config "$CONFIG" "${overrides[@]}") || exit 2
eval "$info"
((${#PHASES[@]} > 0)) || { echo "submit_pipeline.sh: error: $CONFIG has no phases" >&2; exit 2; }
read -r -a sbatch_args <<<"${SBATCH_ARGS:-}"
read -r -a prep_args <<<"${PREP_SBATCH_ARGS:-}"
export PREP_PIECES=${PREP_PIECES:-1}
[[ $PREP_PIECES =~ ^[1-9][0-9]*$ ]] || { echo "submit_pipeline.sh: error: PREP_PIECES=$PREP_PIECES: must be a positive integer" >&2; exit 2; }
tag="megameta:$RUN_DIR"  # job comment: which run a queued job belongs to
logs=$LOG_ROOT
[[ ${DRY_RUN:-0} == 1 ]] || mkdir -p "$logs"
echo "run dir: $RUN_DIR"

queued_job() {  # queued_job NAME: id of a pending/running job of this run with that name
  squeue -h -u "$(id -un)" -t PENDING,RUNNING,SUSPENDED,CONFIGURING,REQUEUED,REQUEUE_HOLD,REQUEUE_FED,RESIZING \
    -o '%i|%j|%k' | awk -F'|' -v n="$1" -v c="$tag" '$2 == n && $3 == c { print $1; exit }'
}

submit() {  # submit NAME PHASE TEMPLATE DEP [SBATCH OPTION...]: prints the job id
  local name=$1 phase=$2 template=$3 dependency=$4
  shift 4
  local -a cmd=(sbatch --parsable --job-name="$name" --comment="$tag" --output="$logs/%x-%j.out"
    --kill-on-invalid-dep=yes "$@")
  [[ -z $dependency ]] || cmd+=(--dependency="afterok:$dependency")
  cmd+=("$MEGAMETA_HOME/slurm/$template")
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    echo "PHASE=$phase${PREP_STEP:+ PREP_STEP=$PREP_STEP} ${cmd[*]}" >&2
    echo "DRY"
    return
  fi
  local out
  out=$(PHASE=$phase "${cmd[@]}") || { echo "submit_pipeline.sh: error: sbatch failed for $name" >&2; exit 1; }
  echo "${out%%;*}"  # --parsable prints "id" or "id;cluster"
}

dep=""  # the job the next step waits for ("" = nothing left to wait for)
jobs=()
step() {  # step NAME PHASE TEMPLATE DONE_FILE LABEL [SBATCH OPTION...]
  local name=$1 phase=$2 template=$3 done_file=$4 label=$5 id
  shift 5
  if [[ -f $done_file ]]; then
    printf '%-18s complete (%s), skipped\n' "$label:" "$done_file"
    return
  fi
  id=$(queued_job "$name")
  if [[ -n $id ]]; then
    printf '%-18s already queued as job %s, reused\n' "$label:" "$id"
  else
    id=$(submit "$name" "$phase" "$template" "$dep" "$@")
    printf '%-18s submitted job %s%s\n' "$label:" "$id" "${dep:+ (starts after job $dep succeeds)}"
  fi
  dep=$id
  jobs+=("$id")
}

# Data prep on CPU nodes, finished when the shard manifest exists (preprocess writes it last).
manifest=$SHARDS_DIR/manifest.json
if ((PREP_PIECES == 1)); then
  PREP_STEP=all step mm-prep "" prepare_data.sbatch "$manifest" "data prep" "${prep_args[@]}"
else
  [[ -f $manifest ]] || PREP_STEP=tokenizer step mm-prep-tokenizer "" prepare_data.sbatch "$manifest" "tokenizer" "${prep_args[@]}"
  PREP_STEP=piece step mm-prep-pieces "" prepare_data.sbatch "$manifest" "data prep pieces" \
    --array="0-$((PREP_PIECES - 1))" "${prep_args[@]}"
  PREP_STEP=finish step mm-prep "" prepare_data.sbatch "$manifest" "data prep merge" "${prep_args[@]}"
fi
for i in "${!PHASES[@]}"; do
  phase=${PHASES[$i]}
  template=phase2_xlingual.sbatch
  ((i > 0)) || template=phase1_meta.sbatch
  step "mm-$phase" "$phase" "$template" "${DONE_FILES[$i]}" "phase $phase" "${sbatch_args[@]}"
done
last=${PHASES[-1]}
step mm-eval "$last" convert_evaluate.sbatch "${REPORT_FILES[-1]}" "convert+evaluate" "${sbatch_args[@]}"

if ((${#jobs[@]} == 0)); then
  echo "nothing to submit: every step is complete (report: ${REPORT_FILES[-1]%.json}.md)"
else
  echo "jobs: ${jobs[*]}"
  echo "watch: squeue -u $(id -un); job logs: $logs/; per-rank logs: $logs/<job name>-<job id>/"
fi
