#!/usr/bin/env bash
# Issue 8's GPU measurements in one go (≤ 8 minutes) on a lent H100/H200, from the repo root:
#     bash benchmarks/gpu/run_device.sh            (the device tool: run(command=..., timeout_s=540))
# Everything lands in $OUT (device.jsonl row by row, ssd-/decode-/throughput-cuda.json + .png,
# nvidia-smi.txt, device_check.log); copy the JSON files into benchmarks/results/ as
# ssd-<gpu>.json etc. afterwards. BUDGET_S shortens or lengthens the run; STAGES picks stages (ABCD).
# A CPU dry run of the same script: SMALL=1 bash benchmarks/gpu/run_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT="${OUT:-/tmp/pcm-device}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${SMALL:-0}" != "1" ]; then export TRITON_INTERPRET=0; fi
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
  | tee "$OUT/env.txt"
timeout "$(( ${BUDGET_S:-440} + 40 ))" python benchmarks/gpu/device_check.py --budget "${BUDGET_S:-440}" \
  --stages "${STAGES:-ABCD}" 2>&1 | tee "$OUT/device_check.log"
echo "run_device: exit ${PIPESTATUS[0]}; results in $OUT"
