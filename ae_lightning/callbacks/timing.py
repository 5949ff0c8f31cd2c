"""What a training batch costs on this machine: the measurement a time budget's epochs are computed from.

:class:`StepTimer` lets ``warmup`` training batches run (first CUDA kernels, caches, compilation), times the next
``batches`` (the device synchronised at both ends, so queued GPU work is inside the span), writes the result to a
JSON file and stops the fit. ``scripts/train_mnist_full.sh`` runs each model this way before its real fit, all
models at once so that the measurement includes their contention for one GPU, and picks the epochs that fit its
budget. On the command line (a calibration run needs no validation)::

    ae-lightning fit --config configs/full/vae_burda_mnist.yaml --data.init_args.root MNIST \\
        --trainer.limit_val_batches 0 --trainer.num_sanity_val_steps 0 \\
        --trainer.callbacks+=ae_lightning.callbacks.StepTimer --trainer.callbacks.init_args.path timing.json

writes ``{"s_per_batch": …, "batches_per_epoch": …, "s_per_epoch": …, "warmup": …, "batches": …, "device": …}``
(``s_per_epoch`` covers training batches only).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


class StepTimer(L.Callback):
    """Time ``batches`` training batches after ``warmup`` ones, write ``path`` (JSON) and stop the fit."""

    def __init__(self, path: str = "step_timer.json", warmup: int = 20, batches: int = 100) -> None:
        if warmup < 0 or batches < 1:
            raise ValueError(f"StepTimer needs warmup >= 0 and batches >= 1, got {warmup} and {batches}")
        self.path, self.warmup, self.batches = Path(path), warmup, batches
        self._seen = 0
        self._start: float | None = None

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._seen == self.warmup:
            self._start = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._seen += 1
        if self._start is None or self._seen < self.warmup + self.batches:
            return
        per_batch = (self._now(pl_module) - self._start) / self.batches
        per_epoch = trainer.num_training_batches
        result = {"s_per_batch": per_batch, "batches_per_epoch": per_epoch, "s_per_epoch": per_batch * per_epoch,
                  "warmup": self.warmup, "batches": self.batches, "device": str(pl_module.device),
                  "device_name": torch.cuda.get_device_name(pl_module.device) if pl_module.device.type == "cuda"
                  else "cpu"}
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(result, indent=1) + "\n")
        self._start = None
        trainer.should_stop = True
