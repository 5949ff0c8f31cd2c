#!/usr/bin/env bash
# Train the shipped noise-blind X-ray denoiser (configs/denoiser_xray64.yaml) in a time budget and export it.
#
#   bash scripts/train_denoiser.sh DATA_NPZ OUTDIR [MAX_MINUTES] [EPOCHS]
#
#   DATA_NPZ     extra training X-rays, e.g. PATH/kermany_64.npz (1,564 Kermany chest X-rays);
#                the patients of the embedded val/test splits are left out (the data module does it)
#   OUTDIR       gets (flat, at most 8 files): xray64_denoiser.pt (the weights file, float16), training_names.txt,
#                val_scores.csv (the exported weights on the val split per benchmark setting), metrics.csv (the run's
#                val PSNR curve), config.yaml (the resolved run config), timing.json, train.log
#   MAX_MINUTES  wall-clock budget of the training (default 7): a short timing fit measures the seconds per epoch,
#                then the fit runs the epochs that fill the rest of the budget, so that its cosine learning rate
#                reaches zero as the time ends; trainer.max_time caps it as well. The export runs after it.
#   EPOCHS       skip the timing fit and train this many epochs (still capped by MAX_MINUTES)
#
# On a CUDA device: float32 (TF32 convolutions; PRECISION=bf16-mixed to change it: a bf16 run met a non-finite
# gradient at epoch 234, and at 5 batches an epoch the step is bound by per-step overhead, ~17 ms on an H200, not by
# arithmetic), channels-last weights and device-resident batches (speed.*); COMPILE=1 adds torch.compile. On the CPU:
# float32, none of them. A fit that stops early (a non-finite gradient, a crash) still exports its best checkpoint.
# PYTHON: the interpreter (default python3); RUNS: where the run folders go (default runs/); BATCH_SIZE: overrides
# the config's 256 (on a CPU, 32 gives 8x the updates for the same images/s); VERSION: the run's name (default
# train_<date>): when VERSION's last.ckpt exists, the fit resumes from it (give EPOCHS: the cosine keeps its length,
# and MAX_MINUTES counts the whole run, as Lightning's max_time restores its elapsed time). A long CPU run:
#   RUNS=~/ae_runs VERSION=cpu BATCH_SIZE=32 nohup bash scripts/train_denoiser.sh PATH/kermany_64.npz OUT 600 140 &
# and the same line again after a kill resumes it. Needs the suite importable (`pip install -e .`, or `--no-deps`
# where torch, lightning & co. are already installed). Then: cp OUTDIR/{xray64_denoiser.pt,training_names.txt}
# ae_lightning/pretrained/
set -euo pipefail

main() {  # one function, parsed whole before it runs: editing this file mid-run cannot break the run
  if [ $# -lt 2 ]; then
    sed -n '2,19p' "$0"; exit 2
  fi
  py="${PYTHON:-python3}"
  data="$(realpath "$1")"  # paths as the caller gave them, before moving to the repository
  mkdir -p "$2"
  out="$(realpath "$2")"
  minutes="${3:-7}"
  epochs="${4:-}"
  runs="$(realpath -m "${RUNS:-$(dirname "$0")/../runs}")"
  cd "$(dirname "$0")/.."
  [ -f "$data" ] || { echo "train_denoiser: $data does not exist; pass the .npz of extra training X-rays" >&2; exit 2; }
  export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
  start=$(date +%s)
  log="$out/train.log"
  : >"$log"
  say() { echo "train_denoiser: $*" | tee -a "$log"; }
  elapsed() { echo $(( $(date +%s) - start )); }
  hms() { printf '00:%02d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }  # trainer.max_time DD:HH:MM:SS

  device="$("$py" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')")"
  common=(fit --config configs/denoiser_xray64.yaml "--data.init_args.extra_train=[$data]"
          --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$runs")
  if [ "$device" != cpu ]; then
    precision="${PRECISION:-32-true}"
    common+=(--trainer.accelerator=gpu --trainer.devices=1 --trainer.precision="$precision"
             --speed.channels_last=true --speed.device_resident_data=true)
    [ "${COMPILE:-0}" = 1 ] && common+=(--speed.compile=true)
  else
    precision=32-true
    common+=(--trainer.accelerator=cpu)
  fi
  [ -z "${BATCH_SIZE:-}" ] || common+=(--data.init_args.batch_size="$BATCH_SIZE")
  version="${VERSION:-train_$(date +%Y%m%d_%H%M%S)}"
  resume=()
  if [ -f "$runs/denoiser_xray64/$version/checkpoints/last.ckpt" ]; then
    [ -n "$epochs" ] || { echo "train_denoiser: resuming $version needs EPOCHS (the cosine's length)" >&2; exit 2; }
    resume=(--ckpt_path "$runs/denoiser_xray64/$version/checkpoints/last.ckpt")
  fi
  say "device: $device; budget ${minutes} min; data $data; runs in $runs${resume:+; resuming ${resume[1]}}"
  budget=$(( minutes * 60 ))

  if [ -z "$epochs" ]; then
    # the timing fit: ~5 % of the budget (10-30 s) of steady epochs after two warm-up epochs (torch.compile's
    # compilation, cuDNN's autotuning), no validation; max_time only guards a very slow machine
    probe=$(( budget / 20 )); probe=$(( probe < 10 ? 10 : probe > 30 ? 30 : probe ))
    t0=$(date +%s)
    "$py" -m ae_lightning.cli "${common[@]}" --trainer.max_epochs=1000000 --trainer.max_time="$(hms $(( budget / 3 > probe ? budget / 3 : probe )))" \
      --trainer.check_val_every_n_epoch=1000000 --trainer.num_sanity_val_steps=0 --resume.every_n_minutes=100000 \
      --trainer.logger.init_args.version=timing --trainer.enable_model_summary=false \
      --trainer.callbacks+=ae_lightning.callbacks.EpochTimes --trainer.callbacks.path="$out/timing.json" \
      --trainer.callbacks.stop_after="$probe" >>"$log" 2>&1 \
      || { [ -f "$out/timing.json" ] || { tail -30 "$log"; exit 1; }
           say "the timing fit stopped early (exit $?), after timing its epochs: its rate is used"; }
    wall=$(( $(date +%s) - t0 ))
    rm -rf "$runs/denoiser_xray64/timing"
    # epochs that fill 90 % of what is left after the fit's start-up (as the timing fit's) and its warm-up epochs;
    # validation, checkpoints and noise in the rate take the rest
    read -r epochs left startup < <("$py" -c "import json, math; t = json.load(open('$out/timing.json')); \
startup = max(5, $wall - t['fit_seconds']); left = max(20, $budget - $(elapsed) - startup); \
print(max(1, math.floor((0.9 * left - t['warmup_seconds']) / t['seconds_per_epoch'])), int(left), int(startup))")
    say "timing: $(tr -d '\n ' <"$out/timing.json" | cut -c1-200)"
    say "start-up ~${startup} s; ${left} s left for the fit -> $epochs epochs"
  else
    left=$(( budget - $(elapsed) )); left=$(( left < 20 ? 20 : left ))
  fi

  # about 20 validations over the fit, and the last epoch among them (the best-by-val checkpoint sees the end)
  every=$(( epochs / 20 )); every=$(( every < 1 ? 1 : every ))
  epochs=$(( epochs / every * every ))
  say "fit: $epochs epochs, validation every $every, max_time $(hms "$left"), run $runs/denoiser_xray64/$version"
  "$py" -m ae_lightning.cli "${common[@]}" --trainer.max_epochs="$epochs" --trainer.max_time="$(hms "$left")" \
    --trainer.check_val_every_n_epoch="$every" --trainer.logger.init_args.version="$version" "${resume[@]}" \
    >>"$log" 2>&1 || { say "the fit stopped early (exit $?):"; tail -5 "$log"; fit_failed=1; }
  grep -h "stopped" "$log" | tail -1 || true
  run="$runs/denoiser_xray64/$version"
  [ -f "$run/checkpoints/last.ckpt" ] || ls "$run"/checkpoints/epoch=*.ckpt >/dev/null 2>&1 \
    || { say "the fit wrote no checkpoint; see $log"; tail -30 "$log"; exit 1; }
  early=()
  if [ -n "${fit_failed:-}" ]; then
    say "exporting its best checkpoint so far (the model card must say the fit stopped early)"
    early=(--note "fit=stopped early at $(grep -ho 'epoch [0-9]*' "$log" | tail -1), see train.log")
  fi
  trained=$(elapsed)

  best=$(ls "$run"/checkpoints/epoch=*.ckpt 2>/dev/null | head -1 || true)  # best by val/loss (save_top_k=1)
  ckpt="${best:-$run/checkpoints/last.ckpt}"
  cp "$run/metrics.csv" "$run/config.yaml" "$out/"
  say "training took ${trained} s; exporting $ckpt"
  "$py" -m ae_lightning.pretrained.export --ckpt_path "$ckpt" --out_dir "$out" \
    --note hardware="$device" --note train_wall_seconds="$trained" --note budget_minutes="$minutes" \
    --note precision="$precision" "${early[@]}" 2>&1 | tee -a "$log"
  say "done in $(elapsed) s; files in $out:"
  ls -l "$out" | tee -a "$log"
}

main "$@"
