"""benchmarks/throughput.py times what it says: the suite's and the bare module's spans hold exactly the batches
the raw loop trains (an adversarial model's three optimiser steps per batch included), an epoch workload times one
whole epoch with its validation, each path synchronises the device at its span's two ends only, the raw loop serves
the data as the DataModule does (MNIST's binarisation) and computes the model's own objective, and the suite path
runs with the callbacks of a default ``ae-lightning fit``."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from conftest import run_benchmark

from benchmarks import throughput as T

AAE_STEPS = T.Workload("AAE steps", "aae_mnist", 16, {"quick": 3})  # manual optimisation: 3 optimiser steps a batch
VAE_EPOCH = T.Workload("VAE epoch", "vae_mnist", 50, {"quick": 0}, epoch=(200, 100))


@pytest.mark.parametrize("workload, path", [(AAE_STEPS, "suite"), (AAE_STEPS, "lightning, bare"), (AAE_STEPS, "raw"),
                                            (VAE_EPOCH, "suite"), (VAE_EPOCH, "lightning, bare"), (VAE_EPOCH, "raw")],
                         ids=["aae_suite", "aae_bare", "aae_raw", "vae_suite", "vae_bare", "vae_raw"])
def test_each_path_times_the_workload_batches(workload, path, monkeypatch):
    L.seed_everything(0, verbose=False)
    model, data = T.model_and_data(workload, "quick")
    steps = workload.epoch[0] // workload.batch_size if workload.epoch else workload.steps["quick"]
    if workload.epoch:
        assert (len(data.train_set), len(data.val_set)) == workload.epoch  # tiled to exactly the split's sizes
    syncs = []
    monkeypatch.setattr(T, "_sync", lambda device: syncs.append(device))
    if path == "raw":
        speed = T.raw_images_per_s(model, data, workload, steps, torch.device("cpu"))
    else:
        clocks = []

        class Recorded(T.StepClock):
            def __init__(self, *args):
                super().__init__(*args)
                self.epochs, self.validated = [], []
                clocks.append(self)

            def on_train_batch_end(self, trainer, *args):
                self.epochs.append(trainer.current_epoch)
                super().on_train_batch_end(trainer, *args)

            def on_validation_epoch_end(self, trainer, pl_module):
                self.validated.append(T.time.perf_counter())

        monkeypatch.setattr(T, "StepClock", Recorded)
        bare = path == "lightning, bare"
        callbacks = [] if bare else T.default_callbacks(workload.config)
        speed = T.suite_images_per_s(T.Bare(model) if bare else model, data, workload, steps, "cpu", "32-true",
                                     callbacks=callbacks)  # asserts `steps` full batches
        (clock,) = clocks
        assert clock.epochs == ([0] * steps + [1] * steps if workload.epoch else [0] * (T.WARMUP + steps))
        if workload.epoch:  # the second epoch's validation lies inside the timed span, the first's before it
            assert clock.validated[0] < clock.start < clock.validated[1] < clock.end
    assert len(syncs) == 2  # the device is synchronised at the span's two ends only, never per step
    assert math.isfinite(speed) and speed > 0


def test_raw_loop_binarises_mnist_as_the_datamodule_does():
    (vae,) = [w for w in T.WORKLOADS if w.config == "vae_mnist"]
    _, data = T.model_and_data(vae, "quick")
    x = T._transform(data.train_set)(data.train_set.images[:4])
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert set(T._transform(data.val_set)(data.val_set.images[:4]).unique().tolist()) == {0.0, 1.0}


def test_the_suite_path_runs_the_default_fit_callbacks_less_checkpoints():
    """What ``ae-lightning fit --config configs/vae_mnist.yaml`` adds (and the config's own generation grids), built by
    the CLI itself; the checkpoint writers, the progress bar and the model summary left out."""
    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar

    from ae_lightning.callbacks import Diagnostics, GenerationGrids, ReconstructionGrid, StopOnNonFinite

    kinds = {type(cb) for cb in T.default_callbacks("vae_mnist")}
    assert {StopOnNonFinite, ReconstructionGrid, Diagnostics, GenerationGrids} <= kinds
    assert not any(issubclass(k, ModelCheckpoint | ProgressBar | ModelSummary) for k in kinds)


@pytest.mark.parametrize("config", ["vae_mnist", "dae_xray64"])
def test_the_raw_loss_is_the_models_objective(config):
    """The raw loop's hand-written loss is the model's own training objective (the same noise drawn)."""
    model, data = T.model_and_data(T.Workload(config, config, 8, {"quick": 1}), "quick")
    x = T._transform(data.train_set)(data.train_set.images[:8])
    torch.manual_seed(1)
    raw = T.loss_of(model, x)
    torch.manual_seed(1)
    assert float(raw) == pytest.approx(float(model.compute_losses(model(model.corrupt(x)), x)["loss"]), rel=1e-5)


def test_cpu_time_mode_times_one_thread_with_the_process_clock(tmp_path):
    """``--cpu-time`` (a CPU shared with other jobs): the spans on this process's CPU time, one thread, both restored
    after the run; the table says which clock it used and each workload's targets."""
    threads = torch.get_num_threads()
    workload = dict(name="VAE epoch", config="vae_mnist", batch_size=50, steps={"quick": 0}, epoch=[200, 100],
                    vs_raw=1.15, vs_bare=1.05)
    rows = run_benchmark("throughput", tmp_path, {"workloads": [workload]}, options={"cpu_time": True}).rows
    assert [r["path"] for r in rows] == ["raw", "lightning, bare", "suite"]
    assert all(r["images_per_s"] > 0 for r in rows) and rows[1]["ratio_to_bare"] == 1.0
    text = (tmp_path / "throughput_cpu.md").read_text()
    assert "process CPU time" in text and "VAE epoch at batch 50: the suite takes" in text
    assert T.clock is T.time.perf_counter and torch.get_num_threads() == threads
