"""Wall-clock measurements that size a time-budgeted fit (a cosine or geometric schedule must know the fit's length).

- :class:`EpochTimes`: the median steady epoch (validation and checkpoints included) of a short timing fit,
  warm-up epochs apart (``scripts/train_denoiser.sh``)::

      ae-lightning fit --config configs/denoiser_xray64.yaml --trainer.max_time=00:00:02:00 \\
          --trainer.callbacks+=ae_lightning.callbacks.EpochTimes --trainer.callbacks.path=timing.json \\
          --trainer.callbacks.stop_after=30

- :class:`StepTimer`: ``batches`` training batches after ``warmup`` ones, the device synchronised at both ends, then
  the fit stops (``scripts/train_mnist_full.sh`` calibrates every model at once this way, so the numbers include
  their contention for one GPU)::

      ae-lightning fit --config configs/full/vae_burda_mnist.yaml --data.init_args.root MNIST \\
          --trainer.limit_val_batches 0 --trainer.num_sanity_val_steps 0 \\
          --trainer.callbacks+=ae_lightning.callbacks.StepTimer --trainer.callbacks.init_args.path timing.json

  writes ``{"s_per_batch", "batches_per_epoch", "s_per_epoch", "warmup", "batches", "device"}`` (``s_per_epoch``
  covers training batches only).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class EpochTimes(Callback):
    """Writes ``{"seconds_per_epoch", "estimated_from", "warmup_seconds", "fit_seconds", "steps_per_epoch",
    "seconds_per_step", "epoch_seconds"}`` to ``path`` at the end of the fit (also when ``max_time`` stops it).

    An epoch's time runs from its start to the next one's (its validation, checkpoints and the host syncs at its
    end included); ``seconds_per_epoch`` is the median over whole epochs after the first ``warmup`` ones
    (``estimated_from: "epochs"``), ``warmup_seconds`` those first epochs' time. A fit too short for that (a slow
    CPU) estimates it as steps per epoch × the median step time after the first ``warmup`` steps, or of all the
    steps when there are no more (``estimated_from: "steps"``); a step's time runs from the previous step's end
    (or the epoch's start). ``fit_seconds``: from the first epoch's start to the end of the fit.
    """

    def __init__(self, path: str, warmup: int = 2, stop_after: float | None = None) -> None:
        self.path, self.warmup, self.stop_after = Path(path), warmup, stop_after
        self.epochs: list[list[float]] = []  # [start, end, batches] per epoch
        self.step_seconds: list[float] = []
        self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        if self.epochs:
            self.epochs[-1][1] = now  # up to this start: the previous epoch's end hooks included
        self.epochs.append([now, now, 0])
        self._last = now  # a step's time never spans two epochs: the first one's runs from the epoch's start
        if self.stop_after is not None and len(self.epochs) > self.warmup + 1:
            if now - self.epochs[self.warmup][0] >= self.stop_after:
                trainer.should_stop = True  # the loop ends before this epoch's first batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        self._last = now
        self.epochs[-1][2] += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.step_seconds:
            return
        self.epochs[-1][1] = time.perf_counter()
        steps = int(trainer.num_training_batches)
        full = [(k, end - start) for k, (start, end, n) in enumerate(self.epochs) if n >= steps]
        steady = [t for k, t in full if k >= self.warmup]
        per_step = statistics.median(self.step_seconds[self.warmup:] or self.step_seconds)
        result = {
            "seconds_per_epoch": statistics.median(steady) if steady else steps * per_step,
            "estimated_from": "epochs" if steady else "steps",
            "warmup_seconds": sum(t for k, t in full if k < self.warmup) if steady else 0.0,
            "fit_seconds": self.epochs[-1][1] - self.epochs[0][0],
            "steps_per_epoch": steps,
            "seconds_per_step": per_step,
            "epoch_seconds": [round(end - start, 4) for start, end, _ in self.epochs],
        }
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(result, indent=1))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A fit that stops on an error (a diverged run's non-finite gradient) still writes what it timed: the
        rate is a property of the machine, not of the run's numbers."""
        self.on_train_end(trainer, pl_module)


class StepTimer(L.Callback):
    """Time ``batches`` training batches after ``warmup`` ones, write ``path`` (JSON) and stop the fit (a fit that ends
    sooner writes what it timed; ``batches`` in the JSON says how many)."""

    def __init__(self, path: str = "step_timer.json", warmup: int = 20, batches: int = 100) -> None:
        if warmup < 0 or batches < 1:
            raise ValueError(f"StepTimer needs warmup >= 0 and batches >= 1, got {warmup} and {batches}")
        self.path, self.warmup, self.batches = Path(path), warmup, batches
        self._seen = 0
        self._first: float | None = None
        self._start: float | None = None
        self._written = False

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._seen == 0:
            self._first = self._now(pl_module)
        if self._seen == self.warmup:
            self._start = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._seen += 1
        if self._start is not None and self._seen >= self.warmup + self.batches:
            self._write(trainer, pl_module)
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        """A fit shorter than ``warmup + batches`` (a small set, ``max_steps``): what was timed, or, when the fit
        ended inside the warm-up, every batch it ran (``"warmup": 0`` in the JSON)."""
        if self._start is not None and self._seen > self.warmup:
            self._write(trainer, pl_module)
        elif self._first is not None and self._seen > 0 and not self._written:
            self._start, self.warmup = self._first, 0
            self._write(trainer, pl_module)

    def _write(self, trainer, pl_module) -> None:
        timed = self._seen - self.warmup
        per_batch = (self._now(pl_module) - self._start) / timed
        per_epoch = trainer.num_training_batches
        result = {"s_per_batch": per_batch, "batches_per_epoch": per_epoch, "s_per_epoch": per_batch * per_epoch,
                  "warmup": self.warmup, "batches": timed, "device": str(pl_module.device),
                  "device_name": torch.cuda.get_device_name(pl_module.device) if pl_module.device.type == "cuda"
                  else "cpu"}
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(result, indent=1) + "\n")
        self._start, self._written = None, True
