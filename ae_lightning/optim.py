"""Optimisers and learning-rate schedules, injected the Lightning way.

Every module takes ``optimizer: OptimizerCallable`` (Adam by default) and, with automatic
optimisation, ``lr_scheduler: LRSchedulerCallable | None``; a manual-optimisation model takes one
optimiser per phase. In YAML::

    model:
      init_args:
        optimizer:
          class_path: torch.optim.AdamW
          init_args: {lr: 0.002, weight_decay: 0.01}
        lr_scheduler:
          class_path: ae_lightning.optim.CosineToZero     # or torch.optim.lr_scheduler.OneCycleLR, ...

and in Python ``functools.partial(torch.optim.AdamW, lr=2e-3)``. Schedulers step once per
optimiser step. A scheduler whose ``total_steps`` is ``None`` (:class:`CosineToZero` by default)
is given the fit's step budget (``trainer.estimated_stepping_batches``) when the fit starts.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

__all__ = ["CosineToZero", "GeometricDecay", "LRSchedulerCallable", "OptimizerCallable", "configure"]


class CosineToZero(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay from each group's initial rate to zero over ``total_steps`` optimiser steps.

    ``total_steps=None`` means the whole fit: the module sets it from the Trainer's step budget, so
    a short budget still decays all the way (short CPU fits converge much further this way).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None, last_epoch: int = -1) -> None:
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"CosineToZero total_steps must be >= 1 (or null for the whole fit), got {total_steps}")
        self.total_steps = total_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        n = self.total_steps or 1
        t = min(max(self.last_epoch, 0), n)
        return [base * 0.5 * (1 + math.cos(math.pi * t / n)) for base in self.base_lrs]


class GeometricDecay(torch.optim.lr_scheduler.LRScheduler):
    """Geometric decay from each group's initial rate to ``final_factor`` times it over ``total_steps`` optimiser
    steps: ``lr_t = lr_0 · final_factor^(t / total_steps)``.

    Burda et al. (2016) trained their VAEs with ``lr = 10⁻³ · 10^(−i/7)`` for ``3^i`` epochs, ``i = 0 … 7``: a
    decay by ``final_factor = 0.1`` in all; this is that decay, smooth, over the fit's budget (``total_steps=None``
    as for :class:`CosineToZero`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, final_factor: float = 0.1, total_steps: int | None = None,
                 last_epoch: int = -1) -> None:
        if not 0 < final_factor <= 1:
            raise ValueError(f"GeometricDecay final_factor must be in (0, 1], got {final_factor}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"GeometricDecay total_steps must be >= 1 (or null for the whole fit), got {total_steps}")
        self.final_factor, self.total_steps = final_factor, total_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        n = self.total_steps or 1
        t = min(max(self.last_epoch, 0), n)
        return [base * self.final_factor ** (t / n) for base in self.base_lrs]


def configure(
    trainer: L.Trainer | None,
    params,
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None = None,
):
    """What ``configure_optimizers`` returns for one optimiser over ``params`` and its optional schedule."""
    opt = optimizer(params)
    if lr_scheduler is None:
        return opt
    scheduler = lr_scheduler(opt)
    if getattr(scheduler, "total_steps", 0) is None and trainer is not None:
        scheduler.total_steps = max(1, int(trainer.estimated_stepping_batches))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
