#!/usr/bin/env bash
# Train the learned codec's λ sweep (configs/rd_xray64_*.yaml) for the compression benchmark's full mode within
# MINUTES, then score every model on real bytes against JPEG, JPEG at reduced resolution, JPEG 2000 and WebP.
#
#   bash scripts/train_rd_sweep.sh PATH/kermany_64.npz out/rd_full 120
#   bash scripts/train_rd_sweep.sh - out/rd_smoke 1          # DATA "-": the embedded X-rays alone (a smoke test)
#
# Training data: DATA (an .npz with an `images` array and Kermany `names`) without any patient of the embedded
# validation or test split: DATA plus the embedded training split, since the embedded 800 are a subset of the
# shared 1,564 (a plain root list would train on test patients; ae_lightning.rd_comparison.training_pool).
# Test: the embedded test split (160 images, patient-disjoint), as the benchmark's quick mode.
# Every λ trains in its own process, all at once, for the same wall-clock time (Lightning's max_time); on a GPU in
# fp32 (trainer precision 32: bf16 likelihoods lose the rate), on the CPU with the cores shared out.
# Budget: MINUTES is the whole run's wall time; training gets MINUTES minus a reserve for start-up and scoring
# (45 s + 15 % of MINUTES, at least 20 s of training).
#
# Writes OUTDIR/runs/<config>/version_0/ (checkpoints, config.yaml, metrics.csv, logs), OUTDIR/codecs/<config>.pt
# (weights + coding tables, what `ae-lightning compress --weights` takes), OUTDIR/rd_points.csv (every point of
# every curve; the learned rows with λ, epochs and steps), OUTDIR/rd_bd_rates.csv (BD-rates).
# Environment: PYTHON (default: .venv/bin/python, else python3), LAMBDAS (config stems to train; default: all
# configs/rd_xray64_*.yaml), ACCELERATOR (default auto).
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 DATA|- OUTDIR MINUTES" >&2
    exit 2
fi
DATA=$1
OUT=$2
MINUTES=$3
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
ACCELERATOR=${ACCELERATOR:-auto}
CONFIGS=${LAMBDAS:-$(ls configs/rd_xray64_*.yaml | xargs -n1 basename | sed 's/\.yaml$//')}
mkdir -p "$OUT/codecs" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
start=$(date +%s)

# training seconds: the budget less the reserve, as Lightning's DD:HH:MM:SS
train_s=$("$PY" -c "print(max(20, int($MINUTES * 60 * 0.85 - 45)))")
max_time=$("$PY" -c "s=$train_s; print(f'00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}')")

data_args=()
if [ "$DATA" != "-" ]; then
    "$PY" -m ae_lightning.rd_comparison pool --data "$DATA" --out "$OUT/pool.npz"
    data_args=(--data.init_args.root "$OUT/pool.npz" --data.init_args.test_fraction 0.05)
fi

n=$(echo "$CONFIGS" | wc -w)
gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available() and '$ACCELERATOR' in ('auto', 'gpu', 'cuda')))")
threads=$("$PY" -c "import os; print(1 if $gpu else max(1, (os.cpu_count() or 1) // $n))")
echo "rd sweep: $n configs, ${train_s}s of training each, all at once ($([ "$gpu" = 1 ] && echo GPU || echo "CPU, $threads thread(s) each"))"

pids=()
for cfg in $CONFIGS; do
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads PYTHONUNBUFFERED=1 "$PY" -m ae_lightning.cli fit \
        --config "configs/$cfg.yaml" "${data_args[@]}" \
        --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 --trainer.precision 32 \
        --trainer.max_time "$max_time" --trainer.max_epochs 100000 --trainer.enable_progress_bar false \
        --trainer.logger.init_args.save_dir "$OUT/runs" --trainer.logger.init_args.version 0 \
        --trainer.default_root_dir "$OUT" >"$OUT/logs/$cfg.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ $status -ne 0 ]; then
    echo "a training run failed; see $OUT/logs/" >&2
    exit 1
fi

ckpts=()
for cfg in $CONFIGS; do ckpts+=(--ckpt "$OUT/runs/$cfg/version_0/checkpoints/last.ckpt"); done
"$PY" -m ae_lightning.rd_comparison evaluate "${ckpts[@]}" --save-codecs "$OUT/codecs" --out "$OUT"
echo "rd sweep: ${train_s} s of training per config, $(( $(date +%s) - start )) s in all; $OUT/rd_points.csv, $OUT/rd_bd_rates.csv, $OUT/codecs/"
