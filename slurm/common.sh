# shellcheck shell=bash
# Shared by slurm/*.sbatch, sourced after each template's variable block. Functions only; nothing
# here needs editing per site. See docs/cluster.md for the walk-through.
#
# What a template does with these:
#   mm_require CONFIG            fail at once (exit 2) naming any required variable that is unset
#   mm_setup INDEX               python, config (RUN_DIR, PHASE and its paths), log dir, rendezvous, traps
#   mm_step NAME cmd...          run one command in this (batch) shell; requeue/fail on its result
#   mm_train                     preflight, then train $PHASE on all allocated ranks; requeue on
#                                preemption or when a node stopped answering
#
# Paths come from tools/slurm_env.py (megameta.layout), never spelled here: RUN_DIR, LOG_ROOT,
# TOKENIZER_DIR, SHARDS_DIR, PHASES and per phase DONE_FILES/HF_DIRS/EVAL_DIRS/REPORT_FILES; after
# mm_setup also DONE_FILE, HF_DIR, EVAL_DIR, REPORT_FILE of $PHASE.
#
# Exit codes of a job: 0 done, 2 bad config/input (never requeued), 3 stopped with a checkpoint
# but not requeued (SIGTERM: scancel/preemption/hard limit; MAX_RESTARTS reached; `scontrol
# requeue` refused), other = the failure's code. USR1 (or a rank's own exit 3) requeues the job.

MM_EXIT_BAD_INPUT=2
MM_EXIT_REQUEUE=3  # megameta/errors.py EXIT_REQUEUE: the trainer saved a checkpoint and stopped

MM_SIGNAL=""   # name of the last signal this batch shell received (USR1 from --signal=B:USR1@..., TERM)
MM_CHILD=""    # pid of the command mm_run is waiting on
MM_FORWARD=""  # signal passed on to that command
MM_TERM=""     # set once SIGTERM arrived: scancel, preemption or the hard time limit

mm_log() { printf '[%(%F %T)T] [%s %s] %s\n' -1 "${SLURM_JOB_NAME:-megameta}" "${SLURM_JOB_ID:-?}" "$*"; }

mm_die() {  # mm_die CODE MESSAGE
  local code=$1
  shift
  echo "megameta-slurm: error: $*" >&2
  exit "$code"
}

mm_require() {  # mm_require VAR...: every named variable must be set and non-empty
  local var
  for var in "$@"; do
    if [[ -z ${!var:-} ]]; then
      mm_die "$MM_EXIT_BAD_INPUT" "required variable $var is not set: set it in the variable block at the top of the template, or export it before sbatch (e.g. $var=... sbatch ...)"
    fi
  done
}

mm_on_signal() {  # trap handler: remember the signal, pass it on to the running command
  MM_SIGNAL=$1
  [[ $1 != TERM ]] || MM_TERM=1
  mm_log "received SIG$1${MM_CHILD:+: sending SIG$MM_FORWARD to pid $MM_CHILD}"
  if [[ -n $MM_CHILD ]]; then
    kill -s "$MM_FORWARD" "$MM_CHILD" 2>/dev/null || true
  fi
}

mm_run() {  # mm_run FORWARD_SIGNAL cmd...: run cmd in the background and wait; status in MM_RC
  # A batch shell runs its traps only between commands, so the command runs in the background and
  # we wait on it: a signal interrupts `wait`, the trap forwards it, and we wait again.
  MM_FORWARD=$1
  shift
  "$@" &
  MM_CHILD=$!
  while :; do
    wait "$MM_CHILD"
    MM_RC=$?
    if ((MM_RC > 128)) && kill -0 "$MM_CHILD" 2>/dev/null; then
      continue  # the wait was interrupted by a trapped signal; the command is still running
    fi
    break
  done
  if ((MM_RC > 128)); then  # the command may have ended while the trap ran: take its real status
    wait "$MM_CHILD" 2>/dev/null
    local again=$?
    ((again == 127)) || MM_RC=$again
  fi
  MM_CHILD=""
}

mm_setup() {  # mm_setup PHASE_INDEX ("last" = final phase, "none" = no phase): all before the first command
  [[ -n ${SLURM_JOB_ID:-} ]] || mm_die "$MM_EXIT_BAD_INPUT" "not inside a SLURM job: submit with sbatch (or slurm/submit_pipeline.sh)"
  # First thing: an early signal is remembered (and acted on before the next step), not fatal.
  trap 'mm_on_signal USR1' USR1
  trap 'mm_on_signal TERM' TERM
  mm_require MEGAMETA_HOME CONFIG LAUNCH_MODE
  if [[ -n ${SETUP:-} ]]; then
    eval "$SETUP" || mm_die 1 "SETUP failed: $SETUP"
  fi
  cd "${WORKDIR:-$SLURM_SUBMIT_DIR}" || mm_die "$MM_EXIT_BAD_INPUT" "WORKDIR: cannot cd to ${WORKDIR:-$SLURM_SUBMIT_DIR}"
  if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $MEGAMETA_HOME/.venv/bin/python ]]; then PYTHON=$MEGAMETA_HOME/.venv/bin/python; else PYTHON=python3; fi
  fi
  "$PYTHON" -c 'import megameta' 2>/dev/null || mm_die "$MM_EXIT_BAD_INPUT" "PYTHON=$PYTHON cannot import megameta (activate the environment in SETUP, or set PYTHON)"
  [[ -f $CONFIG ]] || mm_die "$MM_EXIT_BAD_INPUT" "CONFIG=$CONFIG: no such file (relative paths are relative to $PWD)"
  read -r -a MM_OVERRIDES <<<"${EXTRA_ARGS:-}"

  mm_config_info
  if [[ $1 != none ]]; then
    if [[ -z ${PHASE:-} ]]; then
      local index=$1
      [[ $index == last ]] && index=$((${#PHASES[@]} - 1))
      ((index >= 0 && index < ${#PHASES[@]})) || mm_die "$MM_EXIT_BAD_INPUT" "PHASE: $CONFIG has no phase #$((index + 1)) (phases: ${PHASES[*]:-none}); set PHASE"
      PHASE=${PHASES[$index]}
    fi
    local i
    for i in "${!PHASES[@]}"; do
      [[ ${PHASES[$i]} == "$PHASE" ]] || continue
      # shellcheck disable=SC2034  # HF_DIR, EVAL_DIR, REPORT_FILE: for the templates
      DONE_FILE=${DONE_FILES[$i]} HF_DIR=${HF_DIRS[$i]} EVAL_DIR=${EVAL_DIRS[$i]} REPORT_FILE=${REPORT_FILES[$i]}
    done
    [[ -n ${DONE_FILE:-} ]] || mm_die "$MM_EXIT_BAD_INPUT" "PHASE=$PHASE is not a phase of $CONFIG (phases: ${PHASES[*]})"
  fi
  mm_export_network

  NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  # Ranks per node = --ntasks-per-node in every mode (= GPUs per node on a GPU cluster).
  NPROC_PER_NODE=${SLURM_NTASKS_PER_NODE:-$((${SLURM_NTASKS:-1} / NNODES))}
  NPROC_PER_NODE=${NPROC_PER_NODE%%(*}  # "4(x2)" on heterogeneous layouts: take the first count
  if [[ -n ${SLURM_GPUS_ON_NODE:-} ]] && ((SLURM_GPUS_ON_NODE > 0 && SLURM_GPUS_ON_NODE != NPROC_PER_NODE)); then
    mm_log "warning: $SLURM_GPUS_ON_NODE GPUs per node but $NPROC_PER_NODE ranks per node (--ntasks-per-node); one rank per GPU is expected"
  fi
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

  mm_log "attempt $((${SLURM_RESTART_COUNT:-0} + 1)) on ${SLURM_JOB_NODELIST:-?}: config $CONFIG ${EXTRA_ARGS:-}"
  mm_log "run dir $RUN_DIR${PHASE:+, phase $PHASE}"
  [[ $LAUNCH_MODE != none ]] || return 0

  LOG_DIR=$LOG_ROOT/${SLURM_JOB_NAME:-job}-$SLURM_JOB_ID
  mkdir -p "$LOG_DIR" || mm_die 1 "cannot create the log dir $LOG_DIR"
  local rdv
  rdv=$("$PYTHON" "$MEGAMETA_HOME/tools/slurm_env.py" rendezvous --probe-port) || mm_die 1 "rendezvous: could not derive MASTER_ADDR/MASTER_PORT"
  eval "$rdv"  # export MASTER_ADDR MASTER_PORT MM_NODE_NAMES MM_NODE_ADDRS
  mm_log "$NNODES node(s) x $NPROC_PER_NODE rank(s), mode $LAUNCH_MODE, master $MASTER_ADDR:$MASTER_PORT; per-rank logs: $LOG_DIR/"
}

mm_config_info() {  # RUN_DIR, LOG_ROOT, PHASES and the other paths of $CONFIG (+ overrides)
  local info
  # shellcheck disable=SC2034  # assigned by the eval below; the templates use them
  RUN_DIR="" LOG_ROOT="" TOKENIZER_DIR="" SHARDS_DIR="" PHASES=() DONE_FILES=() HF_DIRS=() EVAL_DIRS=() REPORT_FILES=()
  info=$("$PYTHON" "$MEGAMETA_HOME/tools/slurm_env.py" config --config "$CONFIG" "${MM_OVERRIDES[@]}") || exit "$MM_EXIT_BAD_INPUT"
  eval "$info"
}

mm_export_network() {  # the interface/transport variables of the variable block, exported when set
  local var
  for var in NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME NCCL_IB_HCA TORCH_NCCL_ASYNC_ERROR_HANDLING; do
    if [[ -n ${!var:-} ]]; then
      export "${var?}"
    else
      unset "$var"
    fi
  done
  # NCCL watchdog: a failed or timed-out collective aborts the rank (after train.dist_timeout_s)
  # instead of leaving it blocked; older PyTorch reads the variable's former name.
  [[ -z ${TORCH_NCCL_ASYNC_ERROR_HANDLING:-} ]] || export NCCL_ASYNC_ERROR_HANDLING=$TORCH_NCCL_ASYNC_ERROR_HANDLING
}

mm_unreachable() {  # mm_unreachable: log and return 0 when some node of the job does not answer
  local lines
  lines=$(MM_PREFLIGHT_DIR=$LOG_DIR/preflight "$PYTHON" "$MEGAMETA_HOME/tools/slurm_env.py" reach) && return 1
  while read -r line; do mm_log "$line"; done <<<"$lines"
  return 0
}

mm_preflight() {  # every node reports itself; one all-reduce; a node that does not answer ends the attempt
  [[ ${PREFLIGHT:-1} == 1 ]] || return 0
  export MM_PREFLIGHT_DIR=$LOG_DIR/preflight  # each node records its training interface's address here
  mkdir -p "$MM_PREFLIGHT_DIR"
  rm -f "$LOG_DIR"/preflight/*.log  # this attempt's output only (the recorded addresses stay)
  if mm_unreachable; then
    mm_preflight_failed "a node of the job does not answer"
  fi
  local -a cmd=(srun --kill-on-bad-exit=1 --output="$LOG_DIR/preflight/%N.log"
    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"
    timeout "$((${MM_PREFLIGHT_TIMEOUT:-60} + 30))" "$PYTHON" "$MEGAMETA_HOME/tools/slurm_env.py" preflight)
  mm_log "preflight: ${cmd[*]}"
  mm_run TERM "${cmd[@]}"
  cat "$LOG_DIR"/preflight/*.log 2>/dev/null | grep -a '^preflight:' | while read -r line; do mm_log "$line"; done
  if ((MM_RC != 0)); then
    [[ -z $MM_SIGNAL ]] || mm_requeue
    mm_unreachable || true
    mm_preflight_failed "preflight exit $MM_RC"
  fi
}

mm_preflight_failed() {  # a first attempt fails (fix the network); an attempt after a requeue retries
  if ((${SLURM_RESTART_COUNT:-0} == 0)); then
    mm_die 1 "preflight failed ($1): see the lines above and $LOG_DIR/preflight/"
  fi
  mm_log "preflight failed ($1) after a requeue: waiting ${PREFLIGHT_RETRY_WAIT:-30}s, then requeueing"
  sleep "${PREFLIGHT_RETRY_WAIT:-30}"
  mm_requeue
}

mm_requeue() {  # put this job back in the queue (same job id; it resumes from its checkpoint)
  local restarts=${SLURM_RESTART_COUNT:-0}
  if [[ -n $MM_TERM ]]; then
    # SIGTERM means scancel (requeueing would undo it), the hard time limit, or preemption, after
    # which SLURM requeues a preemptible job itself. Only USR1 (--signal=B:USR1@...) or a rank's
    # own exit 3 makes this script requeue.
    mm_log "stopped by SIGTERM: not requeueing (resubmit, or let SLURM requeue a preempted job)"
    exit "$MM_EXIT_REQUEUE"
  fi
  if ((restarts >= ${MAX_RESTARTS:-50})); then
    mm_log "not requeueing: already restarted $restarts times (MAX_RESTARTS=${MAX_RESTARTS:-50}); resubmit to continue"
    exit "$MM_EXIT_REQUEUE"
  fi
  mm_log "requeueing job $SLURM_JOB_ID (restart $((restarts + 1))); it will resume from the last checkpoint"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    mm_log "scontrol requeue failed (was the job cancelled?); resubmit to continue"
    exit "$MM_EXIT_REQUEUE"
  fi
  # SLURM ends this attempt now; a non-zero status keeps `afterok` dependants waiting if it does not.
  exit "$MM_EXIT_REQUEUE"
}

mm_step() {  # mm_step NAME cmd...: one command in the batch shell (data prep, convert, evaluate)
  local name=$1
  shift
  if [[ -n $MM_SIGNAL ]]; then mm_requeue; fi
  mm_log "$name: $*"
  mm_run TERM "$@"
  if ((MM_RC == 0)); then
    return 0
  fi
  if [[ -n $MM_SIGNAL ]] && ((MM_RC != MM_EXIT_BAD_INPUT)); then
    mm_log "$name stopped by SIG$MM_SIGNAL (exit $MM_RC)"
    mm_requeue
  fi
  mm_log "$name failed (exit $MM_RC)"
  exit "$MM_RC"
}

mm_train_command() {  # fills MM_CMD with the srun line that trains $PHASE in $LAUNCH_MODE
  local -a train=(-m megameta.cli train --config "$CONFIG" --phase "$PHASE" "${MM_OVERRIDES[@]}")
  # --wait: once one task has ended, the others get STEP_WAIT seconds to end too (a crashed rank
  # must not leave the rest blocked in a collective). Not --kill-on-bad-exit: ranks stopping for
  # requeue all exit 3 within moments of each other, and the first must not kill the rest.
  local -a step_opts=(--kill-on-bad-exit=0 --wait="${STEP_WAIT:-120}" --open-mode=append)
  local -a per_node=(srun "${step_opts[@]}" --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1
    --cpus-per-task="${SLURM_CPUS_ON_NODE:-1}" --output="$LOG_DIR/node%n.log")
  # Per node: the launcher ignores USR1 (its workers inherit that, then install the trainer's
  # handler), so a USR1 sent to the whole step reaches the workers without killing the launcher.
  # @NODE_RANK@ becomes this node's SLURM_NODEID, @NODE_ADDR@ its address (MM_NODE_ADDRS, in node order).
  # shellcheck disable=SC2016  # expanded by the task's shell, not here
  local node_shell='trap "" USR1; addrs=($MM_NODE_ADDRS); args=(); for a in "$@"; do a=${a//@NODE_RANK@/$SLURM_NODEID}; args+=("${a//@NODE_ADDR@/${addrs[$SLURM_NODEID]}}"); done; exec "${args[@]}"'
  case $LAUNCH_MODE in
    srun)  # one task per rank; the rank variables come from SLURM's, per task
      # shellcheck disable=SC2016  # expanded by the task's shell, not here
      MM_CMD=(srun "${step_opts[@]}" --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --output="$LOG_DIR/rank%t.log"
        bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec "$@"' task
        "$PYTHON" -u "${train[@]}")
      ;;
    torchrun)  # one torchrun per node; c10d rendezvous hosted at MASTER_ADDR:MASTER_PORT
      # --local_addr: the address the other nodes reach this one by (SLURM's NodeAddr), for the
      # store the rank-0 agent hosts; its hostname may not resolve on the other nodes.
      MM_CMD=("${per_node[@]}" bash -c "$node_shell" node
        "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE"
        --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$SLURM_JOB_ID"
        --local_addr=@NODE_ADDR@ --max_restarts=0 "${train[@]}")
      ;;
    deepspeed)  # one DeepSpeed launcher per node, no ssh/pdsh: each node starts its own ranks
      local hostfile=$LOG_DIR/hostfile
      scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$NPROC_PER_NODE/" >"$hostfile" ||
        mm_die 1 "cannot write $hostfile"
      MM_CMD=("${per_node[@]}" bash -c "$node_shell" node
        "$PYTHON" -m deepspeed.launcher.runner --hostfile="$hostfile" --no_ssh --node_rank=@NODE_RANK@
        --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --module "${train[@]:1}")
      ;;
    *) mm_die "$MM_EXIT_BAD_INPUT" "LAUNCH_MODE=$LAUNCH_MODE: must be srun, torchrun or deepspeed" ;;
  esac
}

mm_train() {  # train $PHASE; exit 0 when DONE.json exists, requeue when preempted or a node is lost
  if [[ -n $MM_SIGNAL ]]; then mm_requeue; fi
  if [[ -f $DONE_FILE ]]; then
    mm_log "phase $PHASE complete: $DONE_FILE exists"
    exit 0
  fi
  mm_preflight
  if [[ -n $MM_SIGNAL ]]; then mm_requeue; fi
  mm_train_command
  mm_log "train: ${MM_CMD[*]}"
  mm_run USR1 "${MM_CMD[@]}"
  if [[ -f $DONE_FILE ]]; then  # the phase's own completion marker decides, whatever the exit status
    # (a signal that lands while the finished ranks shut down must not requeue a finished phase)
    mm_log "phase $PHASE complete (exit $MM_RC): $DONE_FILE"
    exit 0
  fi
  ((MM_RC != 0)) || mm_die 1 "training exited 0 but $DONE_FILE is missing"
  if ((MM_RC != MM_EXIT_BAD_INPUT)) && { ((MM_RC == MM_EXIT_REQUEUE)) || [[ -n $MM_SIGNAL ]]; }; then
    # The trainer saved a checkpoint and exited 3 (torchrun/deepspeed report their own code).
    mm_log "training stopped for requeue (exit $MM_RC${MM_SIGNAL:+, SIG$MM_SIGNAL})"
    mm_requeue
  fi
  if ((MM_RC != MM_EXIT_BAD_INPUT)) && mm_unreachable; then
    # A lost host or a cut link, not a fault of the run: continue from the last checkpoint once
    # SLURM gives the job working nodes again.
    mm_log "training failed (exit $MM_RC) because a node stopped answering: requeueing"
    mm_requeue
  fi
  mm_log "training failed (exit $MM_RC); last lines of the rank-0 log:"
  tail -n 20 "$LOG_DIR/rank0.log" "$LOG_DIR/node0.log" 2>/dev/null
  exit "$MM_RC"
}
