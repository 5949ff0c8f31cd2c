"""Training in stages inside one ``Trainer.fit``: a schedule in epochs, a frozen set per stage, one optimiser per stage.

Shared by the stacked autoencoder (greedy layer-wise pretraining, then fine-tuning) and the multimodal pose
autoencoder (image AE, pose AE, code mapping, then end-to-end fine-tuning). Why one fit rather than a fit per
stage: the stage follows from ``current_epoch``, so a run resumed from a checkpoint continues in the right
stage with the right frozen set and every stage's optimiser state restored; one config states the whole
schedule; and the module ends the fit after its last stage (no ``trainer.max_epochs`` to keep in step).

A model mixes :class:`StagedTraining` in *before* its LightningModule base, sets
``self.automatic_optimization = False`` and provides:

- :attr:`stage_epochs`: epochs per stage, in order (a stage with 0 epochs is skipped);
- :meth:`stage_name`: the stage's name in logs (``layer1``, ``finetune``);
- :meth:`stage_parameters`: what the stage optimises;
- :meth:`stage_optimizers`: one optimiser callable per stage (each stage starts with fresh state);
- optionally :meth:`apply_stage` (default: only the stage's parameters take gradients; a subclass also sets
  frozen submodules to eval mode, so dropout / batch norm in a frozen part cannot move it either).

Its ``training_step`` computes the current stage's loss and calls :meth:`step_stage`. Example::

    class TwoStage(StagedTraining, L.LightningModule):
        stage_epochs = [2, 1]            # stage 0: the head alone for 2 epochs, then everything for 1
        ...
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ae_lightning.optim import OptimizerCallable


class StagedTraining:
    """Mixin for a manually optimised LightningModule whose training runs through stages on an epoch schedule."""

    # a stage trains part of the model, the rest is frozen: DDP needs unused-parameter handling (models.ddp)
    every_parameter_in_each_step = False

    # --- what a staged model provides ------------------------------------------------------------
    @property
    def stage_epochs(self) -> list[int]:
        raise NotImplementedError

    def stage_name(self, stage: int) -> str:
        raise NotImplementedError

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        raise NotImplementedError

    def stage_optimizers(self) -> list[OptimizerCallable]:
        raise NotImplementedError

    # --- the schedule ----------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stage_epochs)

    @property
    def total_epochs(self) -> int:
        return sum(self.stage_epochs)

    def stage_at(self, epoch: int) -> int:
        """Stage of ``epoch``; epochs past the schedule stay in the last stage."""
        end = 0
        for i, n in enumerate(self.stage_epochs):
            end += n
            if epoch < end:
                return i
        return self.num_stages - 1

    @property
    def stage(self) -> int:
        """The stage of the current epoch while fitting; outside a fit (``validate``/``test``/``predict``) the stage the
        model was trained to: a checkpoint loaded for testing, or a model handed to a new Trainer, starts that
        Trainer at epoch 0, which would test layer 1's stage instead of the fine-tuned stack."""
        epoch = self.current_epoch
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if not fitting:
            epoch = max(epoch, getattr(self, "_trained_epoch", 0))
        return self.stage_at(epoch)

    def schedule_text(self) -> str:
        """``image: 3, pose: 5, finetune: 5`` — the schedule as warnings and tables print it."""
        return ", ".join(f"{self.stage_name(s)}: {n}" for s, n in enumerate(self.stage_epochs))

    def freeze_all_but(self, trainable: Iterable[nn.Parameter]) -> None:
        """Gradients for ``trainable`` only; every other parameter is frozen (and so stays bit-identical)."""
        keep = {id(p) for p in trainable}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)

    def apply_stage(self, stage: int) -> None:
        """Freeze everything but ``stage``'s parameters."""
        self.freeze_all_but(self.stage_parameters(stage))

    # --- Lightning hooks ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs not in (None, -1) and max_epochs < self.total_epochs and not self.trainer.fast_dev_run:
            rank_zero_warn(
                f"the stage schedule ({self.schedule_text()}) takes {self.total_epochs} epochs but "
                f"trainer.max_epochs={max_epochs}: the run stops before the schedule ends; fix: leave "
                "trainer.max_epochs unset (the module stops the fit after its last stage) or shorten the schedule"
            )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._trained_epoch = self.current_epoch  # the latest epoch trained (see :attr:`stage`)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["staged_epoch"] = int(getattr(self, "_trained_epoch", self.current_epoch))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._trained_epoch = int(checkpoint.get("staged_epoch", checkpoint.get("epoch", 0)))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.current_epoch + 1 >= self.total_epochs:
            self.trainer.should_stop = True  # the schedule is the model's: the fit ends with its last stage

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        # every batch rather than every epoch: Lightning switches modules back to train mode after
        # validation, and a run resumed mid-epoch must freeze the right parts before its first step
        self.apply_stage(self.stage)

    def configure_optimizers(self):
        """One optimiser per stage, each over that stage's parameters only: a new stage starts with fresh state."""
        return [make(self.stage_parameters(s)) for s, make in enumerate(self.stage_optimizers())]

    def step_stage(self, loss: torch.Tensor) -> None:
        """One manual optimisation step of the current stage's optimiser on ``loss``."""
        optimizers = self.optimizers()
        opt = optimizers[min(self.stage, len(optimizers) - 1)] if isinstance(optimizers, list) else optimizers
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
