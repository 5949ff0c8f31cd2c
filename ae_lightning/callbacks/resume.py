"""Checkpoints to resume from: mid-epoch ``last.ckpt`` every N steps, on SIGTERM, with the RNG states.

:class:`ResumeCheckpoint` is on by default in ``ae-lightning`` (CLI arguments ``resume.*``). It is a
``ModelCheckpoint`` that keeps only ``last.ckpt``, written every ``every_n_train_steps`` training
steps (in the middle of an epoch too; or every ``every_n_minutes`` of training, for fast GPU runs whose
steps take milliseconds) in the same folder as the best-by-``val/loss`` checkpoints, and:

- on SIGTERM (how SLURM and Kubernetes preempt a job) Lightning stops at the next batch boundary
  with ``SIGTERMException``; this callback then writes ``last.ckpt`` and the process exits with
  status 0, so a requeued job resumes with ``--ckpt_path last``;
- it stores the global RNG states (torch, numpy, random) in the checkpoint and restores them just
  before the first training batch of the resumed run (not when the checkpoint is loaded: creating the
  DataLoader iterators and the sanity check draw from the global generator in between), so training
  noise drawn from the global generator (a denoiser's corruption, an adversarial prior's samples)
  continues where it stopped.

The train data order is a function of (seed, epoch) and skips the batches already trained
(:class:`ae_lightning.data.common.EpochSampler`; under DDP each process skips its own share's,
:class:`~ae_lightning.data.common.ShardedSampler`), so a killed run resumed from ``last.ckpt`` ends
with the same weights as the uninterrupted one (bit for bit on the CPU; ``tests/test_resume.py`` kills
and resumes a plain, an adversarial and a stacked autoencoder; ``tests/test_samplers.py`` resumes a
2-process DDP fit mid-epoch). One exception: a random training
*augmentation* (``hflip: true``) draws from the global generator while the loader prefetches the next
batch, before this callback can restore it, so a resumed run flips a different subset of the first two
batches and matches the uninterrupted run only statistically.
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps (or, when set, every ``every_n_minutes`` of training
    instead) and on SIGTERM; see the module docstring."""

    def __init__(self, every_n_train_steps: int | None = 50, dirpath: str | None = None, save_on_sigterm: bool = True,
                 every_n_minutes: float | None = None) -> None:
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"resume.every_n_minutes must be > 0 (or null for every_n_train_steps), got {every_n_minutes}")
        timed = every_n_minutes is not None
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True,
                         every_n_train_steps=None if timed else every_n_train_steps,
                         train_time_interval=datetime.timedelta(minutes=every_n_minutes) if timed else None,
                         enable_version_counter=False)
        self.save_on_sigterm = save_on_sigterm
        self._rng_to_restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ResumeCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        # plain types and tensors only: checkpoints load with weights_only=True
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
        rng = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():  # noise drawn on the GPU (a DAE's corruption, a prior's samples)
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {**super().state_dict(), "rng": rng}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.pop("rng", None)  # applied at the first training batch
        super().load_state_dict(state_dict)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        rng, self._rng_to_restore = self._rng_to_restore, None
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.save_on_sigterm and isinstance(exception, SIGTERMException) and self.dirpath is not None:
            trainer.save_checkpoint(str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"))
