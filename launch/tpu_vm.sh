#!/usr/bin/env bash
# Create, set up, train on and delete a Cloud TPU VM with `gcloud`.
#
#   bash launch/tpu_vm.sh create --name my-tpu --zone us-central2-b --type v4-8 [--spot]
#   bash launch/tpu_vm.sh setup  --name my-tpu --zone us-central2-b [--repo GIT_URL]
#   bash launch/tpu_vm.sh run    --name my-tpu --zone us-central2-b \
#       --config configs/gpt2_small.py --workdir gs://BUCKET/gpt2 [--config.KEY=VALUE ...]
#   bash launch/tpu_vm.sh logs   --name my-tpu --zone us-central2-b [--worker 0]
#   bash launch/tpu_vm.sh delete --name my-tpu --zone us-central2-b
#   bash launch/tpu_vm.sh all    ...   # create -> setup -> run -> delete
#
# Flags: --name, --zone (always required), --type (accelerator type, for create),
# --runtime (runtime version, default tpu-ubuntu2204-base), --spot, --project,
# --repo (git URL to clone on the workers; default: copy this tree with
# `gcloud compute tpus tpu-vm scp --recurse`), --config and --workdir (a gs:// path;
# for run), --worker (for logs, default 0), --dry_run (print the commands only,
# gcloud need not be installed); a flag's value cannot begin with `-`. Other
# `--config.KEY=VALUE` flags pass through to
# `python -m launch.train`. Every gcloud command is printed, prefixed `+ `, before
# it runs. `all` deletes the VM even when the run fails. The remote checkout is
# ~/lm and the training log ~/lm_train.log on every worker.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="lm"
REMOTE_LOG="lm_train.log"

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

[[ $# -ge 1 ]] || { fail "a subcommand is required: create, setup, run, logs, delete or all."; }
CMD="$1"
shift
case "$CMD" in
  create|setup|run|logs|delete|all) ;;
  -h|--help|help) usage; exit 0 ;;
  *) fail "unknown subcommand '$CMD'; use create, setup, run, logs, delete or all." ;;
esac

NAME="" ZONE="" TYPE="" RUNTIME="tpu-ubuntu2204-base" SPOT=0 REPO="" CONFIG=""
WORKDIR="" PROJECT="" WORKER="0" DRY_RUN=0
PASS=()

# A flag's value must be there and must not look like a flag: `--name --zone z`
# would otherwise name the VM `--zone`, and a value such as `--repo -u...`
# would reach gcloud or git as an option.
need_value() {
  [[ $# -ge 2 && -n "$2" ]] || fail "$1 needs a value."
  [[ "$2" != -* ]] || fail "$1 needs a value, not '$2' (a value cannot begin with '-'); put it right after $1."
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*|--zone=*|--type=*|--runtime=*|--repo=*|--config=*|--workdir=*|--project=*|--worker=*)
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
    --spot) SPOT=1; shift ;;
    --dry_run|--dry-run) DRY_RUN=1; shift ;;
    --config.*=*) PASS+=("$1"); shift ;;
    *) fail "unknown flag '$1'; see 'bash launch/tpu_vm.sh --help'." ;;
  esac
done

[[ -n "$NAME" ]] || fail "--name is required, e.g. --name my-tpu."
[[ -n "$ZONE" ]] || fail "--zone is required, e.g. --zone us-central2-b."
if [[ "$CMD" == create || "$CMD" == all ]]; then
  [[ -n "$TYPE" ]] || fail "--type is required to create a TPU VM, e.g. --type v4-8."
fi
if [[ "$CMD" == run || "$CMD" == all ]]; then
  [[ -n "$CONFIG" ]] || fail "--config is required to run, e.g. --config configs/gpt2_small.py."
  [[ -n "$WORKDIR" ]] || fail "--workdir is required to run, e.g. --workdir gs://BUCKET/run."
  [[ "$WORKDIR" == gs://* ]] || fail "--workdir must be a gs:// path that every worker can reach, got '$WORKDIR'."
fi
if [[ "$DRY_RUN" == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
  fail "gcloud is not installed; see https://cloud.google.com/sdk/docs/install (or use --dry_run)."
fi

TPU=(gcloud compute tpus tpu-vm)
COMMON=("--zone=$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=("--project=$PROJECT")

# Shell-quotes each argument for the remote command line.
remote_args() {
  local out="" a
  for a in "$@"; do
    out+=" $(quote "$a")"
  done
  printf '%s' "${out# }"
}

# --- subcommands -------------------------------------------------------------

do_create() {
  local args=("${TPU[@]}" create "$NAME" "${COMMON[@]}" "--accelerator-type=$TYPE"
              "--version=$RUNTIME")
  [[ "$SPOT" == 1 ]] && args+=(--spot)
  step "${args[@]}"
}

do_setup() {
  local install="cd ~/$REMOTE_DIR && python3 -m pip install -U pip && python3 -m pip install -e \".[test]\" \"jax[tpu]\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  if [[ -n "$REPO" ]]; then
    step "${TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all \
      "--command=rm -rf ~/$REMOTE_DIR && git clone $(quote "$REPO") ~/$REMOTE_DIR && $install"
  else
    step "${TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all "--command=rm -rf ~/$REMOTE_DIR"
    step "${TPU[@]}" scp --recurse "$ROOT" "$NAME:~/$REMOTE_DIR" "${COMMON[@]}" --worker=all
    step "${TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all "--command=$install"
  fi
}

do_run() {
  local train
  train="$(remote_args python3 -m launch.train --config "$CONFIG" --workdir "$WORKDIR" ${PASS[@]+"${PASS[@]}"})"
  step "${TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all \
    "--command=set -o pipefail; cd ~/$REMOTE_DIR && $train 2>&1 | tee -a ~/$REMOTE_LOG"
}

do_logs() {
  step "${TPU[@]}" ssh "$NAME" "${COMMON[@]}" "--worker=$WORKER" \
    "--command=tail -n 200 -F ~/$REMOTE_LOG"
}

do_delete() {
  step "${TPU[@]}" delete "$NAME" "${COMMON[@]}" --quiet
}

case "$CMD" in
  create) do_create ;;
  setup) do_setup ;;
  run) do_run ;;
  logs) do_logs ;;
  delete) do_delete ;;
  all)
    do_create
    trap do_delete EXIT  # delete the VM also when setup or the run fails
    do_setup
    do_run ;;
esac
