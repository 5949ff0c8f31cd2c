#!/usr/bin/env bash
# The jobs of one lent-GPU session, in parallel on the one device, each capped in time; what they write is packed
# into a few files under OUT (the lending tool returns at most 8). This is how the committed GPU results were made:
#
#   bash scripts/gpu_session.sh OUT DATA [MINUTES]
#
#   OUT      results folder: <job>.tar.gz per job (checkpoints left out: the exported weights are kept), jobs.log, gpu.txt
#   DATA     a folder with mnist_full/ (the 60k + 10k MNIST IDX files), xray64/kermany_64.npz (1,564 Kermany chest
#            X-rays) and fullres/ (full-size chest X-rays for the tiled check)
#   MINUTES  each job's training budget (default 7)
#
# Jobs (each a command of the repository, run here as it is documented):
#   denoiser     scripts/train_denoiser.sh: the shipped noise-blind X-ray denoiser (issue 25)
#   mnist_full   scripts/train_mnist_full.sh: SDAE-3, Burda's VAE, M1+M2 and the SS-AAE on the 60k digits (issue 26)
#   codec        scripts/train_rd_sweep.sh: the learned codec's lambda sweep on the X-rays (issue 27)
# A job whose script is absent is skipped and said so. Needs the suite importable (PYTHONPATH or pip install -e .)
# and its wheels where the image lacks them (jsonargparse, bm3d, ...).
set -u
out="$(realpath -m "${1:?usage: gpu_session.sh OUT DATA [MINUTES]}")"
data="$(realpath "${2:?usage: gpu_session.sh OUT DATA [MINUTES]}")"
minutes="${3:-7}"
cd "$(dirname "$0")/.."
mkdir -p "$out" /tmp/gpu_jobs
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PRUNE=1  # PRUNE: train_mnist_full.sh drops checkpoints over 20 MB after its tests
log="$out/jobs.log"
{ nvidia-smi; python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } \
  >"$out/gpu.txt" 2>&1

job() {  # job NAME SCRIPT ARGS...: run in the background into /tmp/gpu_jobs/NAME, log its start and end
  local name=$1 script=$2; shift 2
  case " ${JOBS:-denoiser mnist_full codec} " in *" $name "*) ;; *) return ;; esac  # JOBS: a subset to rerun
  if [ ! -f "$script" ]; then echo "$(date +%T) $name: skipped ($script absent)" >>"$log"; return; fi
  mkdir -p "/tmp/gpu_jobs/$name"
  (
    t0=$(date +%s)
    echo "$(date +%T) $name: start: bash $script $*" >>"$log"
    bash "$script" "$@" >"/tmp/gpu_jobs/$name/job.log" 2>&1
    echo "$(date +%T) $name: exit $? after $(( $(date +%s) - t0 )) s" >>"$log"
  ) &
}

job denoiser scripts/train_denoiser.sh "$data/xray64/kermany_64.npz" /tmp/gpu_jobs/denoiser "$minutes"
job mnist_full scripts/train_mnist_full.sh "$data/mnist_full" /tmp/gpu_jobs/mnist_full "$minutes"
job codec scripts/train_rd_sweep.sh "$data/xray64/kermany_64.npz" /tmp/gpu_jobs/codec "$minutes"
wait
for dir in /tmp/gpu_jobs/*/; do
  name=$(basename "$dir")
  tar -czf "$out/$name.tar.gz" --exclude='*.ckpt' -C "$dir" . && echo "$(date +%T) packed $name: $(du -h "$out/$name.tar.gz" | cut -f1)" >>"$log"
done
cat "$log"
