#!/usr/bin/env bash
# Paper-scale MNIST on one GPU in a fixed wall-clock budget (issue 26): Burda's VAE (test NLL, IWAE k=5000), SDAE-3
# and its random-init 3x1000 MLP baseline, M2 and M1+M2 (Kingma 2014), the semi-supervised AAE (Makhzani 2015), all
# as parallel `ae-lightning fit` processes from configs/full/, epochs from a timed calibration, checkpoints every 2
# minutes, then `ae-lightning test` of each and the 100-label pixel baseline. What it does: scripts/mnist_full.py.
#
# Usage: bash scripts/train_mnist_full.sh MNIST_ROOT OUTDIR MINUTES
#   MNIST_ROOT  the 60k + 10k digits (torchvision layout ROOT/MNIST/raw/ or the four IDX files in ROOT)
#   OUTDIR      <name>/version_0 (fit), <name>/version_1 (test), logs/, calibration/, <name>.json, summary.{csv,json}
#   MINUTES     the whole budget, tests included (e.g. 7)
# Env: PYTHON (default python3) with the suite importable (`pip install --no-deps -e .`); SMOKE=1: a CPU check of the
# whole path (3 batches an epoch, at most 2 epochs, k=10); ONLY="vae sdae3": a subset; PRUNE=1: delete the checkpoints
# over 20 MB after the tests (SDAE, MLP, SS-AAE, M2; ~400 MB in all otherwise).
set -euo pipefail
if [ $# -ne 3 ]; then
  sed -n '7,13p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
args=("$1" "$2" "$3")
[ -n "${SMOKE:-}" ] && args+=(--smoke)
[ -n "${PRUNE:-}" ] && args+=(--prune)
# shellcheck disable=SC2206
[ -n "${ONLY:-}" ] && args+=(--only ${ONLY})
mkdir -p "$2"
"${PYTHON:-python3}" scripts/mnist_full.py "${args[@]}" 2>&1 | tee "$2/train_mnist_full.log"
exit "${PIPESTATUS[0]}"
