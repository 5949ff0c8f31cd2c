"""Stop a diverged run loudly: a non-finite loss term ends the fit with one line naming it.

:class:`StopOnNonFinite` is on by default in ``ae-lightning`` (CLI arguments ``divergence.*``). After
every training batch it looks at the step's logged ``train/*`` values — every loss term of every
model, automatic or manual optimisation, since they all log through ``self.log`` — and raises
:class:`NonFiniteLossError` naming the epoch, the global step and the first term that is NaN or
infinite. It raises *before* any checkpoint callback of that batch runs (Lightning runs
``ModelCheckpoint`` last), and refuses to write a checkpoint whose weights are non-finite, so the
last good checkpoint is never overwritten with NaN weights. ``ae-lightning`` turns the error into
one line on stderr and exit status 1.

``log_grad_norm=True`` logs ``train/grad_norm`` (the 2-norm over all parameters) before every
optimiser step, so a blow-up can be seen coming::

    ae-lightning fit --config configs/vae_mnist.yaml --divergence.log_grad_norm=true
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(RuntimeError):
    """A loss term (or the weights about to be checkpointed) went NaN or infinite."""


class StopOnNonFinite(Callback):
    """Raise :class:`NonFiniteLossError` on the first non-finite ``train/*`` value; never checkpoint NaN weights.

    Args:
        log_grad_norm: log ``train/grad_norm`` before each optimiser step.
        check_weights: refuse to save a checkpoint whose floating-point tensors are not all finite.
    """

    def __init__(self, log_grad_norm: bool = False, check_weights: bool = True) -> None:
        self.log_grad_norm = log_grad_norm
        self.check_weights = check_weights

    @staticmethod
    def non_finite_terms(trainer: L.Trainer) -> list[str]:
        """``"train/<term> = nan"`` for every ``train/*`` value logged this step that is NaN or infinite."""
        bad = []
        for key, value in trainer.callback_metrics.items():
            if not key.startswith("train/") or key.endswith("_epoch") or key == "train/grad_norm":
                continue
            v = float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value
            term = f"{key.removesuffix('_step')} = {v}"
            if isinstance(v, float) and not math.isfinite(v) and term not in bad:
                bad.append(term)
        return bad

    def _raise(self, trainer: L.Trainer, what: str = "loss") -> None:
        terms = self.non_finite_terms(trainer)
        where = f"at epoch {trainer.current_epoch}, global step {trainer.global_step}"
        head = (f"non-finite loss: {', '.join(terms)} {where}" if terms
                else f"non-finite {what} {where} (the loss terms were still finite)")
        raise NonFiniteLossError(
            f"{head}; the run stopped before the weights were updated and the last checkpoint was kept as it was; "
            "fix: lower the learning rate, clip gradients, or check the data (--divergence.log_grad_norm=true "
            "logs train/grad_norm)"
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # a term logged after the optimiser step (or by a model that steps no optimiser on this batch)
        if self.non_finite_terms(trainer):
            self._raise(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        """Check the gradients before the step: a non-finite gradient never reaches the weights."""
        grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        if self.log_grad_norm:
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        if not torch.isfinite(norm):
            self._raise(trainer, "gradient")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self.check_weights:
            return
        bad = [k for k, t in checkpoint.get("state_dict", {}).items()
               if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise NonFiniteLossError(
                f"non-finite weights at epoch {trainer.current_epoch}, global step {trainer.global_step} "
                f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}); the checkpoint was not written, the last one "
                "was kept as it was; fix: lower the learning rate or clip gradients"
            )
