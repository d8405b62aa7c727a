#!/usr/bin/env bash
# Create, set up, train on, watch and delete Cloud TPU VMs with `gcloud`.
#
#   bash launch/tpu_vm.sh create --name my-tpu --zone us-central2-b --type v4-8 [--spot]
#   bash launch/tpu_vm.sh setup  --name my-tpu --zone us-central2-b [--repo GIT_URL]
#   bash launch/tpu_vm.sh run    --name my-tpu --zone us-central2-b \
#       --config configs/gpt2_small.py --workdir gs://BUCKET/gpt2 [--wait] [--config.KEY=VALUE ...]
#   bash launch/tpu_vm.sh logs   --name my-tpu --zone us-central2-b [--worker 0] [--slice 0]
#   bash launch/tpu_vm.sh status --name my-tpu --zone us-central2-b [--workdir gs://BUCKET/gpt2]
#   bash launch/tpu_vm.sh watch  --name my-tpu --zone us-central2-b --type v4-8 --spot \
#       --config configs/gpt2_small.py --workdir gs://BUCKET/gpt2 [--interval 300]
#   bash launch/tpu_vm.sh delete --name my-tpu --zone us-central2-b
#   bash launch/tpu_vm.sh all    ...   # create -> setup -> run -> wait -> delete
#
# Flags: --name, --zone (always required), --type (accelerator type, for create),
# --runtime (runtime version, default tpu-ubuntu2204-base), --spot, --project,
# --num_slices N (N > 1: a multi-slice queued resource of N slices named NAME-0 ...
# NAME-{N-1}, and the run gets --config.mesh.dcn_data=N unless given), --repo (git URL
# to clone on the workers; default: copy this checkout's tracked and unignored files,
# so runs/ and other ignored paths stay here), --config and --workdir (for run, watch
# and all: a gs:// path, or an absolute path on a file system every worker mounts,
# such as a gcsfuse or Filestore mount; lm itself does not write gs:// yet),
# --worker and --slice (for logs, default 0), --interval (seconds between watch's
# checks, default 300), --dry_run (print the commands only,
# gcloud need not be installed), --dry_run_states (watch with --dry_run: what each
# check finds, comma-separated VM states with the job's state after a colon, e.g.
# missing,READY:running,PREEMPTED,READY:done); a flag's value cannot begin with `-`.
# Other `--config.KEY=VALUE` flags pass through to `python -m launch.train`. Every
# command is printed, prefixed `+ `, before it runs.
#
# `setup` installs only what training needs: `pip install -e '.[tpu]'` (jax[tpu]; no
# torch or transformers). `run` starts the job detached on every worker (nohup +
# setsid: a dropped ssh does not stop it) and returns (with --wait: when the job
# ends, 0 if it is done; `launch.sweep --tpu` waits so); it logs to ~/lm_train.log on
# each worker, copied to WORKDIR/logs/<worker host>.log every 5 minutes and when the
# job ends, and writes the job's outcome to ~/lm_train.exit ("done", "preempted" or
# "failed N"). `status` says whether the job runs, its last logged step and, with
# --workdir, the last row of WORKDIR/metrics.jsonl. `watch` keeps a run going on
# spot or preemptible TPUs: at every check it recreates a preempted or deleted VM,
# sets it up and starts the same command (the run resumes from its last
# checkpoint), restarts a job that stopped at a preemption, and ends when the job is
# done (0) or failed (1). `all` waits for the job and deletes the VM at the end, also
# when a step fails. The remote checkout is ~/lm on every worker.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="lm"
REMOTE_LOG="lm_train.log"
REMOTE_EXIT="lm_train.exit"
LOG_COPY_EVERY=300

fail() {
  echo "error: $*" >&2
  exit 2
}

usage() {
  sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Prints one argument shell-quoted only when it needs it; `--flag=value` keeps
# the flag bare and quotes the value.
quote() {
  local arg="$1" prefix=""
  if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,~-]*$ && -n "$arg" ]]; then
    printf '%s' "$arg"
    return
  fi
  if [[ "$arg" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    arg="${BASH_REMATCH[2]}"
  fi
  printf "%s'%s'" "$prefix" "${arg//\'/\'\\\'\'}"
}

# Prints `+ CMD` and runs it unless --dry_run.
step() {
  local out="+" a
  for a in "$@"; do
    out+=" $(quote "$a")"
  done
  echo "$out"
  if [[ "$DRY_RUN" == 0 ]]; then
    "$@"
  fi
}

# --- flags -------------------------------------------------------------------

SUBCOMMANDS="create, setup, run, logs, status, watch, delete or all"
[[ $# -ge 1 ]] || { fail "a subcommand is required: $SUBCOMMANDS."; }
CMD="$1"
shift
case "$CMD" in
  create|setup|run|logs|status|watch|delete|all) ;;
  -h|--help|help) usage; exit 0 ;;
  *) fail "unknown subcommand '$CMD'; use $SUBCOMMANDS." ;;
esac

NAME="" ZONE="" TYPE="" RUNTIME="tpu-ubuntu2204-base" SPOT=0 REPO="" CONFIG=""
WORKDIR="" PROJECT="" WORKER="0" SLICE="0" SLICES="1" INTERVAL="300" DRY_RUN=0 WAIT=0
STATES=""
PASS=()

# A flag's value must be there and must not look like a flag: `--name --zone z`
# would otherwise name the VM `--zone`, and a value such as `--repo -u...`
# would reach gcloud or git as an option.
need_value() {
  [[ $# -ge 2 && -n "$2" ]] || fail "$1 needs a value."
  [[ "$2" != -* ]] || fail "$1 needs a value, not '$2' (a value cannot begin with '-'); put it right after $1."
}

need_count() {
  [[ "$2" =~ ^[0-9]+$ && "$2" -ge "$3" ]] || fail "$1 must be a whole number >= $3, got '$2'."
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*|--zone=*|--type=*|--runtime=*|--repo=*|--config=*|--workdir=*|--project=*|--worker=*|--slice=*|--num_slices=*|--interval=*|--dry_run_states=*)
      flag="${1%%=*}"
      set -- "$flag" "${1#*=}" "${@:2}"
      continue ;;
    --name) need_value "$@"; NAME="$2"; shift 2 ;;
    --zone) need_value "$@"; ZONE="$2"; shift 2 ;;
    --type) need_value "$@"; TYPE="$2"; shift 2 ;;
    --runtime) need_value "$@"; RUNTIME="$2"; shift 2 ;;
    --repo) need_value "$@"; REPO="$2"; shift 2 ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
    --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
    --worker) need_value "$@"; WORKER="$2"; shift 2 ;;
    --slice) need_value "$@"; need_count "$1" "$2" 0; SLICE="$2"; shift 2 ;;
    --num_slices) need_value "$@"; need_count "$1" "$2" 1; SLICES="$2"; shift 2 ;;
    --interval) need_value "$@"; need_count "$1" "$2" 1; INTERVAL="$2"; shift 2 ;;
    --dry_run_states) need_value "$@"; STATES="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --wait) WAIT=1; shift ;;
    --dry_run|--dry-run) DRY_RUN=1; shift ;;
    --config.*=*) PASS+=("$1"); shift ;;
    *) fail "unknown flag '$1'; see 'bash launch/tpu_vm.sh --help'." ;;
  esac
done

[[ -n "$NAME" ]] || fail "--name is required, e.g. --name my-tpu."
[[ -n "$ZONE" ]] || fail "--zone is required, e.g. --zone us-central2-b."
if [[ "$CMD" == create || "$CMD" == all || "$CMD" == watch ]]; then
  [[ -n "$TYPE" ]] || fail "--type is required to create a TPU VM, e.g. --type v4-8."
fi
if [[ "$CMD" == run || "$CMD" == all || "$CMD" == watch ]]; then
  [[ -n "$CONFIG" ]] || fail "--config is required to run, e.g. --config configs/gpt2_small.py."
  [[ -n "$WORKDIR" ]] || fail "--workdir is required to run, e.g. --workdir gs://BUCKET/run."
fi
if [[ -n "$WORKDIR" ]]; then
  [[ "$WORKDIR" == gs://* || "$WORKDIR" == /* ]] || fail "--workdir must be a gs:// path or an absolute path on a file system every worker mounts (gcsfuse, Filestore), got '$WORKDIR'."
fi
# Copying into and reading from the workdir: gcloud storage for gs://, plain
# cp and cat for a mounted path.
if [[ "$WORKDIR" == gs://* ]]; then
  PUT="gcloud storage cp -q" GET="gcloud storage cat"
else
  PUT="cp" GET="cat"
fi
if [[ -n "$STATES" && ( "$CMD" != watch || "$DRY_RUN" == 0 ) ]]; then
  fail "--dry_run_states goes with 'watch --dry_run' only."
fi
(( SLICE < SLICES )) || fail "--slice $SLICE is outside the $SLICES slice(s) of --num_slices."
if [[ "$DRY_RUN" == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
  fail "gcloud is not installed; see https://cloud.google.com/sdk/docs/install (or use --dry_run)."
fi
if [[ -z "$REPO" && ( "$CMD" == setup || "$CMD" == all || "$CMD" == watch ) ]]; then
  git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
    || fail "$ROOT is not a git checkout, so its files cannot be listed for the copy; pass --repo GIT_URL."
fi
if (( SLICES > 1 )); then
  has_dcn=0
  for a in ${PASS[@]+"${PASS[@]}"}; do
    [[ "$a" == --config.mesh.dcn_* ]] && has_dcn=1
  done
  [[ "$has_dcn" == 1 ]] || PASS+=("--config.mesh.dcn_data=$SLICES")
fi

TPU=(gcloud compute tpus tpu-vm)
QUEUED=(gcloud compute tpus queued-resources)
COMMON=("--zone=$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=("--project=$PROJECT")

# The VM of each slice: NAME alone, or NAME-0 ... NAME-{N-1} for a multi-slice
# queued resource (its --node-prefix).
NODES=()
if (( SLICES == 1 )); then
  NODES=("$NAME")
else
  for ((i = 0; i < SLICES; i++)); do NODES+=("$NAME-$i"); done
fi

# Shell-quotes each argument for the remote command line.
remote_args() {
  local out="" a
  for a in "$@"; do
    out+=" $(quote "$a")"
  done
  printf '%s' "${out# }"
}

ARCHIVE=""
cleanup() {
  [[ -n "$ARCHIVE" ]] && rm -f "$ARCHIVE"
  return 0
}
trap cleanup EXIT

# --- subcommands -------------------------------------------------------------

do_create() {
  local args
  if (( SLICES == 1 )); then
    args=("${TPU[@]}" create "$NAME" "${COMMON[@]}" "--accelerator-type=$TYPE"
          "--version=$RUNTIME")
  else
    args=("${QUEUED[@]}" create "$NAME" "${COMMON[@]}" "--accelerator-type=$TYPE"
          "--runtime-version=$RUNTIME" "--node-count=$SLICES" "--node-prefix=$NAME")
  fi
  [[ "$SPOT" == 1 ]] && args+=(--spot)
  step "${args[@]}"
}

# The files this checkout would commit (tracked, and untracked but not
# ignored), as a gzipped tar in ARCHIVE; runs/ and other ignored paths stay.
pack() {
  cleanup                 # the archive of an earlier setup (watch)
  ARCHIVE="$(mktemp "${TMPDIR:-/tmp}/lm-src.XXXXXX")"
  local count
  count="$(git -C "$ROOT" ls-files -co --exclude-standard | wc -l | tr -d ' ')"
  echo "+ tar -czf $ARCHIVE -C $ROOT <the $count files of git ls-files -co --exclude-standard>"
  git -C "$ROOT" ls-files -coz --exclude-standard \
    | tar -czf "$ARCHIVE" -C "$ROOT" --null -T -
}

do_setup() {
  local install="cd ~/$REMOTE_DIR && python3 -m pip install -U pip && python3 -m pip install -e \".[tpu]\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  local node
  if [[ -z "$REPO" ]]; then
    pack
  fi
  for node in "${NODES[@]}"; do
    if [[ -n "$REPO" ]]; then
      step "${TPU[@]}" ssh "$node" "${COMMON[@]}" --worker=all \
        "--command=rm -rf ~/$REMOTE_DIR && git clone $(quote "$REPO") ~/$REMOTE_DIR && $install"
    else
      step "${TPU[@]}" scp "$ARCHIVE" "$node:~/lm-src.tar.gz" "${COMMON[@]}" --worker=all
      step "${TPU[@]}" ssh "$node" "${COMMON[@]}" --worker=all \
        "--command=rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/lm-src.tar.gz -C ~/$REMOTE_DIR && rm ~/lm-src.tar.gz && $install"
    fi
  done
}

# The job as each worker runs it, detached: training appends to the local
# log, which is copied into the workdir every LOG_COPY_EVERY seconds and at
# the end; the outcome goes to ~/lm_train.exit.
job_script() {
  local train copy
  train="$(remote_args python3 -m launch.train --config "$CONFIG" --workdir "$WORKDIR" ${PASS[@]+"${PASS[@]}"})"
  copy="$PUT ~/$REMOTE_LOG $(quote "$WORKDIR")/logs/\$(hostname).log"
  [[ "$WORKDIR" == gs://* ]] || copy="mkdir -p $(quote "$WORKDIR")/logs && $copy"
  printf '%s' "cd ~/$REMOTE_DIR; ( while sleep $LOG_COPY_EVERY; do $copy; done ) & copier=\$!; $train >> ~/$REMOTE_LOG 2>&1; rc=\$?; pkill -P \$copier; kill \$copier 2> /dev/null; if [ \$rc != 0 ]; then echo \"failed \$rc\"; elif tail -n 5 ~/$REMOTE_LOG | grep -q \"^preempted: saved checkpoint\"; then echo preempted; else echo done; fi > ~/$REMOTE_EXIT; $copy"
}

do_run() {
  local node job
  job="$(job_script)"
  for node in "${NODES[@]}"; do
    step "${TPU[@]}" ssh "$node" "${COMMON[@]}" --worker=all \
      "--command=rm -f ~/$REMOTE_EXIT; nohup setsid bash -c $(quote "$job") > /dev/null 2>&1 < /dev/null &"
  done
}

do_logs() {
  step "${TPU[@]}" ssh "${NODES[$SLICE]}" "${COMMON[@]}" "--worker=$WORKER" \
    "--command=tail -n 200 -F ~/$REMOTE_LOG"
}

# What worker 0 of the first slice says of the job: "running", "done",
# "preempted", "failed N" or "none", then the last logged step.
STATUS_PROBE="if pgrep -f \"[p]ython3 -m launch.train\" > /dev/null; then echo running; elif [ -f ~/$REMOTE_EXIT ]; then cat ~/$REMOTE_EXIT; else echo none; fi; grep -o \"step [0-9]*\" ~/$REMOTE_LOG 2>/dev/null | tail -n 1"

do_status() {
  local probe="$STATUS_PROBE"
  if [[ -n "$WORKDIR" ]]; then
    probe+="; $GET $(quote "$WORKDIR")/metrics.jsonl 2>/dev/null | tail -n 1"
  fi
  step "${TPU[@]}" ssh "${NODES[0]}" "${COMMON[@]}" --worker=0 "--command=$probe"
}

do_delete() {
  if (( SLICES == 1 )); then
    step "${TPU[@]}" delete "$NAME" "${COMMON[@]}" --quiet
  else
    step "${QUEUED[@]}" delete "$NAME" "${COMMON[@]}" --quiet --force
  fi
}

# --- watch -------------------------------------------------------------------

SIMULATED=()
[[ -n "$STATES" ]] && IFS=',' read -r -a SIMULATED <<< "$STATES"
CHECK=0

# The VM's state ("READY", "PREEMPTED", ...; "missing" when there is none)
# and, when it is ready, the job's ("running", "done", "preempted",
# "failed N", "none"), as "VM[:JOB]". With --dry_run the answers come from
# --dry_run_states, one entry per check.
observe() {
  local vm job
  if [[ "$DRY_RUN" == 1 ]]; then
    if (( CHECK >= ${#SIMULATED[@]} )); then
      echo "watch: no more --dry_run_states; stopping." >&2
      exit 0
    fi
    echo "+ gcloud compute tpus $( (( SLICES == 1 )) && echo "tpu-vm describe $NAME" || echo "queued-resources describe $NAME") ${COMMON[*]} --format=value(state)  # ${SIMULATED[$CHECK]}"
    OBSERVED="${SIMULATED[$CHECK]}"
    CHECK=$((CHECK + 1))
    return
  fi
  if (( SLICES == 1 )); then
    vm="$("${TPU[@]}" describe "$NAME" "${COMMON[@]}" --format='value(state)' 2>/dev/null || echo missing)"
  else
    vm="$("${QUEUED[@]}" describe "$NAME" "${COMMON[@]}" --format='value(state.state)' 2>/dev/null || echo missing)"
    [[ "$vm" == ACTIVE ]] && vm=READY
  fi
  OBSERVED="${vm:-missing}"
  if [[ "$OBSERVED" == READY ]]; then
    job="$("${TPU[@]}" ssh "${NODES[0]}" "${COMMON[@]}" --worker=0 "--command=$STATUS_PROBE" 2>/dev/null | head -n 1 || true)"
    OBSERVED+=":${job:-none}"
  fi
}

pause() {
  echo "+ sleep $INTERVAL"
  [[ "$DRY_RUN" == 1 ]] || sleep "$INTERVAL"
}

do_watch() {
  while true; do
    observe
    local vm="${OBSERVED%%:*}" job=""
    [[ "$OBSERVED" == *:* ]] && job="${OBSERVED#*:}"
    echo "watch: the VM is $vm${job:+, the job $job}"
    case "$vm" in
      missing)
        do_create; do_setup; do_run ;;
      PREEMPTED|TERMINATED|STOPPED|SUSPENDED|FAILED)
        do_delete; do_create; do_setup; do_run ;;
      READY)
        case "$job" in
          done) echo "watch: the run is done."; return 0 ;;
          failed*) echo "error: the job $job; see 'bash launch/tpu_vm.sh logs ...'." >&2; exit 1 ;;
          running) ;;
          *) do_run ;;        # not started, or stopped at a preemption: resume
        esac ;;
      *) ;;                   # CREATING, PROVISIONING, ...: look again later
    esac
    pause
  done
}

# `all` and `run --wait`: wait for the job to leave "running" (polling every
# --interval seconds); succeeds when it is done.
wait_for_job() {
  if [[ "$DRY_RUN" == 1 ]]; then
    step "${TPU[@]}" ssh "${NODES[0]}" "${COMMON[@]}" --worker=0 "--command=$STATUS_PROBE"
    return
  fi
  local job
  while true; do
    sleep "$INTERVAL"
    job="$("${TPU[@]}" ssh "${NODES[0]}" "${COMMON[@]}" --worker=0 "--command=$STATUS_PROBE" | head -n 1)"
    echo "the job is $job"
    [[ "$job" == running ]] || { [[ "$job" == done ]]; return; }
  done
}

case "$CMD" in
  create) do_create ;;
  setup) do_setup ;;
  run)
    do_run
    if [[ "$WAIT" == 1 ]]; then wait_for_job; fi ;;
  logs) do_logs ;;
  status) do_status ;;
  watch) do_watch ;;
  delete) do_delete ;;
  all)
    do_create
    trap 'do_delete; cleanup' EXIT  # delete the VM also when a step fails
    do_setup
    do_run
    wait_for_job ;;
esac
