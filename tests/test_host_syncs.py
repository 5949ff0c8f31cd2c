"""No device→host sync in the suite's own code after a training loop's first step.

A GPU step that reads a tensor's value on the host (``bool(t)``, ``t.item()``, ``if t.any():``) waits
for every queued kernel. Label range checks run on the first batch only and the noise mixture is
branch-free, so from the second step on the suite itself makes none. Counted on the CPU by
intercepting ``Tensor.__bool__`` / ``Tensor.item`` calls made from ``ae_lightning`` frames (PyTorch's
optimisers read CPU step counters, which is no device sync).
"""

from __future__ import annotations

import logging
import sys

import lightning as L
import pytest
import torch

from ae_lightning.config import instantiate, load_config

PACKAGE = "/ae_lightning/"


class SyncCounter:
    """Per training step, the host reads made by ``ae_lightning`` code."""

    def __init__(self) -> None:
        self.per_step: list[list[str]] = []

    def wrap(self, step):
        def counted(*args, **kwargs):
            calls: list[str] = []
            originals = torch.Tensor.__bool__, torch.Tensor.item

            def spy(name, original):
                def read(t):
                    frame = sys._getframe(1)
                    if PACKAGE in frame.f_code.co_filename:
                        calls.append(f"{name} at {frame.f_code.co_filename.split(PACKAGE)[-1]}:{frame.f_lineno}")
                    return original(t)
                return read

            torch.Tensor.__bool__, torch.Tensor.item = spy("bool", originals[0]), spy("item", originals[1])
            try:
                return step(*args, **kwargs)
            finally:
                torch.Tensor.__bool__, torch.Tensor.item = originals
                self.per_step.append(calls)

        return counted


@pytest.mark.parametrize("config, overrides", [
    ("cvae_mnist", {}),                                         # label → one-hot condition
    ("aae_mog_mnist", {}),                                      # supervised prior: labels to the discriminator
    ("stacked_dae_mnist", {"pretrain_epochs": [0, 0, 0]}),      # supervised fine-tuning from the first step
    ("dae_residual_xray64", {}),                                # the noise-blind mixture of 8 noise models
])
def test_no_host_sync_after_the_first_step(config, overrides):
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cfg = load_config(config)
    cfg["model"]["init_args"].update(overrides)
    cfg["data"]["init_args"]["batch_size"] = 8
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg["model"], L.LightningModule)
    counter = SyncCounter()
    model.training_step = counter.wrap(model.training_step)
    L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              ).fit(model, instantiate(cfg["data"], L.LightningDataModule))
    assert len(counter.per_step) == 3
    later = [c for step in counter.per_step[1:] for c in step]
    assert not later, f"host syncs after the first step: {later}"
