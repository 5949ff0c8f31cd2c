"""The GPU tier (``pytest -m gpu``; skipped without CUDA): every experiment config trains under bf16 autocast
on one GPU through the command line, and the suite's own code makes no device→host sync in a training step
after the first (CUDA's sync debug mode reports each synchronising call; ``tests/test_host_syncs.py`` is the
CPU approximation, which cannot see syncs such as a boolean-mask index or a host→device copy)."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from test_configs import EXPERIMENTS, fit_or_skip

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PACKAGE = "/ae_lightning/"


class SyncWatch(L.Callback):
    """Records the synchronising CUDA calls made from ``ae_lightning`` files during training steps 2, 3, …"""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._catch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx >= 1:
            self._catch = warnings.catch_warnings(record=True)
            self._records = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._catch is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._catch.__exit__(None, None, None)
            self.found += [f"{r.filename.split(PACKAGE)[-1]}:{r.lineno}: {r.message}" for r in self._records
                           if PACKAGE in r.filename and "synchroniz" in str(r.message)]
            self._catch = None


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_trains_under_bf16_on_a_gpu_without_host_syncs(config, run_cli):
    run = fit_or_skip(run_cli, config, "--trainer.callbacks+=test_gpu.SyncWatch", "--trainer.accelerator=gpu",
                      "--trainer.devices=1", "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1",
                      "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2", batch_size=16, offline=True)
    (watch,) = [c for c in run.trainer.callbacks if type(c).__name__ == "SyncWatch"]
    assert run.trainer.state.finished and next(run.model.parameters()).is_cuda
    train = {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith("train/")}
    assert train and all(math.isfinite(v) for v in train.values()), train
    assert not watch.found, "host syncs in training steps after the first:\n" + "\n".join(watch.found)


@pytest.mark.parametrize("config", ["dae_xray64", "deep_ae_mnist", "vae_mnist"])
def test_speed_options_train_on_a_gpu_with_device_resident_batches(config, run_cli):
    """bf16 + channels-last + compiled nets + in-memory splits gathered on the GPU, as the throughput benchmark's
    best suite path: the fit runs, its losses are finite, and the training batches never left the device."""
    from test_configs import CONFIGS

    run = fit_or_skip(run_cli, CONFIGS / f"{config}.yaml", "--trainer.accelerator=gpu", "--trainer.devices=1",
                      "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1", "--trainer.limit_train_batches=6",
                      "--trainer.limit_val_batches=2", "--speed.channels_last=true", "--speed.compile=true",
                      "--speed.device_resident_data=true", batch_size=64)
    gather = run.trainer.train_dataloader.dataset
    assert gather.device.type == "cuda" and gather.dataset.images.is_cuda
    assert math.isfinite(float(run.trainer.callback_metrics["train/loss"]))
