#!/usr/bin/env bash
# The GPU checks, as one script that finishes in about 8 minutes on one
# H100/H200:
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, repo root
#   bash benchmarks/gpu_check.sh --dry-run  # the same steps on this CPU,
#                                           # tiny sizes, no GPU install
#
# 1. installs the project with the GPU extra (`.[gpu]`, plus the test extra);
# 2. runs the tests that exercise the model code on the accelerator
#    (attention kernels, custom gradients, the Transformer, decoding);
# 3. `train_throughput.py` for GPT-2 small (124M), bfloat16, T 1024, with
#    `attention_impl=cudnn` and `xla`, MFU against the chip's dense bfloat16
#    peak (H100/H200 SXM: 989 TFLOP/s; `PEAK_TFLOPS` overrides it);
# 4. `decode.py` (cached vs uncached greedy decoding) on the same chip.
# Every figure is printed and also written under ${OUT:-gpu_check_out}/.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
PEAK="${PEAK_TFLOPS:-989}"
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: runs, logs, keeps going on failure
  local name="$1" limit="$2"; shift 2
  echo "=== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  [[ $rc -ne 0 ]] && status=1
  return 0
}

if [[ $DRY -eq 1 ]]; then
  export JAX_PLATFORMS=cpu
  SIZE=tiny; SEQ=64; BATCH=2; STEPS=2; IMPLS="xla"; DTYPE=float32
  DECODE_ARGS=(--size tiny --new 16 --batch 1)
else
  step install 240 python -m pip install -q -e '.[gpu,test]'
  export JAX_PLATFORMS=cuda
  SIZE=small; SEQ=1024; BATCH=16; STEPS=20; IMPLS="cudnn xla"; DTYPE=bfloat16
  DECODE_ARGS=(--size small --new 128,512 --batch 1,8)
fi
step devices 60 python -c "import jax; print(jax.__version__, jax.devices())"
step nvidia_smi 20 bash -c 'command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"'
# the model tests, on the accelerator (conftest keeps JAX_PLATFORMS if set)
step tests 150 python -m pytest -q -n 0 -p no:cacheprovider \
  tests/models/test_attention.py tests/models/test_custom_gradients.py \
  tests/models/test_transformer.py
for impl in $IMPLS; do
  step "throughput_$impl" 120 python benchmarks/train_throughput.py \
    --sizes "$SIZE" --dtype "$DTYPE" --seq_len "$SEQ" --batch "$BATCH" \
    --steps "$STEPS" --attention_impl "$impl" --peak_tflops "$PEAK"
done
step decode 120 python benchmarks/decode.py "${DECODE_ARGS[@]}"
echo "gpu_check: $([[ $status -eq 0 ]] && echo all steps passed || echo some steps failed); logs in $OUT/"
exit $status
