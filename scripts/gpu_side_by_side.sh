#!/usr/bin/env bash
# The side-by-side on a machine with a real GPU: our bench (WebGPU through the GPU's Vulkan
# driver) and the same train step in PyTorch (bench/pytorch_step.py; with transformers + peft
# also PEFT's own HiraConfig / LoraConfig) on the same GPU. Run from the repository root after
# scripts/gpu_prepare.sh, with .gpu carried; on the device tool:
#   run(command="bash scripts/gpu_side_by_side.sh", carry=[".gpu"], timeout_s=560)
# Results go to $OUT (default .gpu/out), 8 files: gpu.txt; ours.json + ours.log (deno task bench
# --json: matmul, decode, train_step with per-kernel profiles on $CONFIGS); ours_big.json +
# ours_big.log (the same on $BIG_CONFIGS, run apart so that a slow big config cannot lose the
# rest); pytorch.json + pytorch.log; side_by_side.md (the table for the README). CONFIGS (default
# tiny,llama-4x512), BIG_CONFIGS (default llama-8x2048; empty skips it), REPS (10), BIG_REPS (5),
# BENCH_ARGS (more bench flags, e.g. --sizes=512), PYTHON and OURS_TIMEOUT / BIG_TIMEOUT /
# TORCH_TIMEOUT (seconds) override the defaults, which are sized for one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.gpu/out}
CONFIGS=${CONFIGS:-tiny,llama-4x512}
BIG_CONFIGS=${BIG_CONFIGS-llama-8x2048}
REPS=${REPS:-10}
BIG_REPS=${BIG_REPS:-5}
mkdir -p "$OUT"
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES="$icd"
xz -dc .gpu/deno.xz > /tmp/deno-gpu && chmod +x /tmp/deno-gpu
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  nproc
} > "$OUT/gpu.txt"
export DENO_DIR=/tmp/deno-gpu-dir NO_COLOR=1 DENO_WEBGPU_BACKEND=${DENO_WEBGPU_BACKEND:-vulkan}
bench=(/tmp/deno-gpu run -A --no-config --no-lock .gpu/bench.js --json)
echo "ours: deno task bench (WebGPU) on $CONFIGS" >&2
# shellcheck disable=SC2086
timeout "${OURS_TIMEOUT:-240}" "${bench[@]}" --only=matmul,train_step,decode \
  --peers="jax-js webgpu,tfjs webgpu" --train-configs="$CONFIGS" --train-reps="$REPS" --train-profile \
  ${BENCH_ARGS:-} > "$OUT/ours.json" 2> "$OUT/ours.log"
echo "ours: exit $?" >&2
ours="$OUT/ours.json"
if [ -n "$BIG_CONFIGS" ]; then
  echo "ours: train_step on $BIG_CONFIGS" >&2
  timeout "${BIG_TIMEOUT:-150}" "${bench[@]}" --only=train_step --train-configs="$BIG_CONFIGS" \
    --train-reps="$BIG_REPS" --train-profile > "$OUT/ours_big.json" 2> "$OUT/ours_big.log"
  echo "ours: exit $?" >&2
  ours="$ours,$OUT/ours_big.json"
fi
echo "PyTorch: bench/pytorch_step.py" >&2
PYTHONUNBUFFERED=1 timeout "${TORCH_TIMEOUT:-150}" "${PYTHON:-python3}" bench/pytorch_step.py \
  --configs="$CONFIGS${BIG_CONFIGS:+,$BIG_CONFIGS}" --reps="$REPS" --json="$OUT/pytorch.json" \
  --ours="$ours" > "$OUT/side_by_side.md" 2> "$OUT/pytorch.log"
echo "PyTorch: exit $?" >&2
cat "$OUT/gpu.txt" "$OUT/side_by_side.md"
tail -n 5 "$OUT"/*.log
