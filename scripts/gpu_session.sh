#!/usr/bin/env bash
# The jobs of one lent-GPU session, in parallel on the one device, each capped in time; what they write is packed
# into a few files under OUT (the lending tool returns at most 8). This is how the committed GPU results were made:
#
#   bash scripts/gpu_session.sh OUT DATA [MINUTES]
#
#   OUT      results folder: <job>.tar.gz per job, packed as soon as the job ends (checkpoints left out: the exported
#            weights are kept; a tar over 15 MB is split into <job>.tar.gz.part-aa, -ab, ...: cat them back), jobs.log,
#            gpu.txt
#   DATA     a folder with mnist_full/ (the 60k + 10k MNIST IDX files), xray64/kermany_64.npz (1,564 Kermany chest
#            X-rays) and fullres/ (full-size chest X-rays for the tiled check)
#   MINUTES  each job's training budget (default 7); DENOISER_MINUTES, MNIST_MINUTES, CODEC_MINUTES set one job's
#
# DEADLINE (seconds from the start; default MINUTES·60 + 120): every job still running then gets SIGTERM (its
# fit writes last.ckpt), and 15 s later whatever it has written is packed; so a lent machine's command limit
# never loses a finished job's results, nor a late job's partial ones. Keep DEADLINE well inside that limit.
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
deadline="${DEADLINE:-$(( minutes * 60 + 120 ))}"
t_start=$(date +%s)
cd "$(dirname "$0")/.."
rm -rf /tmp/gpu_jobs; mkdir -p "$out" /tmp/gpu_jobs  # a fresh scratch folder each session
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PRUNE=1  # PRUNE: train_mnist_full.sh drops checkpoints over 20 MB after its tests
log="$out/jobs.log"
{ nvidia-smi; python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } \
  >"$out/gpu.txt" 2>&1

pack() {  # pack NAME: its folder as OUT/NAME.tar.gz (split into 15 MB parts when larger), once
  local name=$1 dir="/tmp/gpu_jobs/$1"
  mkdir "/tmp/gpu_jobs/.packed_$name" 2>/dev/null || return 0  # atomic: the job and the deadline never both pack
  tar -czf "$out/$name.tar.gz" --exclude='*.ckpt' --exclude='pool.npz' -C "$dir" . 2>>"$log"
  if [ "$(stat -c %s "$out/$name.tar.gz")" -gt 15000000 ]; then
    split -b 15000000 -a 2 "$out/$name.tar.gz" "$out/$name.tar.gz.part-" && rm "$out/$name.tar.gz"
  fi
  echo "$(date +%T) packed $name: $(du -ch "$out/$name".tar.gz* | tail -1 | cut -f1)" >>"$log"
}

pids=()
job() {  # job NAME SCRIPT ARGS...: run in the background into /tmp/gpu_jobs/NAME, log its start and end, pack it
  local name=$1 script=$2; shift 2
  case " ${JOBS:-denoiser mnist_full codec} " in *" $name "*) ;; *) return ;; esac  # JOBS: a subset to rerun
  if [ ! -f "$script" ]; then echo "$(date +%T) $name: skipped ($script absent)" >>"$log"; return; fi
  mkdir -p "/tmp/gpu_jobs/$name"
  (
    t0=$(date +%s)
    echo "$(date +%T) $name: start: bash $script $*" >>"$log"
    setsid bash "$script" "$@" >"/tmp/gpu_jobs/$name/job.log" 2>&1 &
    echo $! >"/tmp/gpu_jobs/.pid_$name"
    wait $!
    echo "$(date +%T) $name: exit $? after $(( $(date +%s) - t0 )) s" >>"$log"
    pack "$name"
  ) &
  pids+=($!)
}

job denoiser scripts/train_denoiser.sh "$data/xray64/kermany_64.npz" /tmp/gpu_jobs/denoiser "${DENOISER_MINUTES:-$minutes}"
job mnist_full scripts/train_mnist_full.sh "$data/mnist_full" /tmp/gpu_jobs/mnist_full "${MNIST_MINUTES:-$minutes}"
job codec scripts/train_rd_sweep.sh "$data/xray64/kermany_64.npz" /tmp/gpu_jobs/codec "${CODEC_MINUTES:-$minutes}"

(  # the deadline: stop what still runs (its process group: the fits under it too), then pack what it wrote
  sleep $(( deadline - ($(date +%s) - t_start) ))
  for f in /tmp/gpu_jobs/.pid_*; do
    name=${f##*/.pid_}
    [ -e "/tmp/gpu_jobs/.packed_$name" ] && continue
    echo "$(date +%T) $name: deadline (${deadline} s): SIGTERM" >>"$log"
    kill -TERM -- "-$(cat "$f")" 2>/dev/null
  done
  sleep 15
  for f in /tmp/gpu_jobs/.pid_*; do pack "${f##*/.pid_}"; done
) &
watchdog=$!
wait "${pids[@]}"
kill "$watchdog" 2>/dev/null
cat "$log"
