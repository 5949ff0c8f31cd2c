#!/usr/bin/env bash
# Every GPU check in one run (issue: the GPU/multi-GPU path), for a machine with a CUDA device:
#   1. the gpu test tier: every config for a few steps at bf16-mixed with CUDA's sync-debug watch, a
#      checkpoint reload, logged values on the device, the speed options with device-resident batches;
#   2. benchmarks/throughput.py --full: raw loop vs lightning-bare vs suite, plus the `fast` rows
#      (channels-last + compile, device-resident batches), written as throughput_<gpu>.{csv,md}.
# Usage: bash scripts/gpu_checks.sh [OUTDIR]   (default: gpu_checks/); logs and tables go to OUTDIR.
# PYTHON: the interpreter (default python3). Needs the suite importable (`pip install -e .`, or `--no-deps` where torch & co. are already there).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_checks}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  || exit 2
status=0
"$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log" || status=1
"$py" -m benchmarks.throughput --full --out "$out" 2>&1 | tee "$out/throughput.log" || status=1
echo "gpu checks: exit $status; logs and tables in $out/"
exit $status
