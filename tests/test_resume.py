"""A killed ``ae-lightning fit`` resumed with ``--ckpt_path last`` ends with the same weights as the
uninterrupted run, bit for bit on the CPU (slow tier: real subprocesses, a few minutes on a 2-core CPU).

Three models, each a different optimisation logic:

- ``conv_ae_mnist`` (automatic optimisation): 2,100 embedded training digits in batches of 128 = 17
  steps per epoch, 2 epochs, ``last.ckpt`` every 5 steps;
- ``aae_mnist`` (manual optimisation, three optimiser steps per batch: reconstruction, discriminator,
  generator, so ``global_step`` advances by 3 per batch): 21 batches of 100 per epoch, 2 epochs,
  ``last.ckpt`` every 15 optimiser steps (5 batches); the prior's samples come from the global torch
  generator, whose state the checkpoint carries;
- ``stacked_ae_mnist`` (greedy stages, one optimiser per stage): stages of 1 epoch, ``last.ckpt`` every
  22 steps; the run is killed after the second write of ``last.ckpt`` (the first is the epoch-end one
  at step 17, the second at step 22), in the middle of the *second* stage (layer 1 frozen, layer 2
  training): the resumed run must rebuild the stage, its frozen layers and its optimiser state.

The killed run is stopped as soon as the chosen write of ``last.ckpt`` appears (checkpoints are written
to a temporary file and renamed, so a kill never leaves a half-written one), with SIGKILL (nothing saved
on the way out) or SIGTERM (Lightning stops at the next batch and ``resume.*`` saves ``last.ckpt``; exit
status 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    config: str
    steps_per_epoch: int  # global steps (optimiser steps) per epoch
    epochs: int
    args: tuple[str, ...]
    kill_at_write: int = 1  # stop the run after this write of last.ckpt


CASES = {
    "conv_ae": Case("conv_ae_mnist", 17, 2, ("--trainer.max_epochs=2", "--resume.every_n_train_steps=5")),
    "aae": Case("aae_mnist", 3 * 21, 2, ("--trainer.max_epochs=2", "--resume.every_n_train_steps=15")),
    "stacked_mid_stage": Case("stacked_ae_mnist", 17, 4, (
        "--model.init_args.pretrain_epochs=[1,1,1]", "--model.init_args.finetune_epochs=1",
        "--resume.every_n_train_steps=22"), kill_at_write=2),
}
COMMON = ["--trainer.enable_progress_bar=false", "--trainer.logger.init_args.version=0", "--image_grid.num_images=0"]


def fit(case: Case, workdir: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ae_lightning.cli", "fit", "--config", str(CONFIGS / f"{case.config}.yaml"),
           *case.args, *COMMON, "--trainer.logger.init_args.save_dir", str(workdir / "runs"),
           "--trainer.default_root_dir", str(workdir), *extra]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
    return proc


def last(case: Case, workdir: Path) -> Path:
    return workdir / "runs" / case.config / "version_0" / "checkpoints" / "last.ckpt"


def checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True)


_uninterrupted: dict[str, dict] = {}


def uninterrupted(name: str, tmp_path_factory) -> dict:
    """The uninterrupted run's final checkpoint, once per case (both signals compare with it)."""
    if name not in _uninterrupted:
        case, work = CASES[name], tmp_path_factory.mktemp(f"uninterrupted_{name}")
        fit(case, work)
        ckpt = checkpoint(last(case, work))
        assert ckpt["global_step"] == case.epochs * case.steps_per_epoch
        _uninterrupted[name] = ckpt
    return _uninterrupted[name]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("name", list(CASES))
def test_killed_run_resumes_to_the_same_weights(tmp_path, tmp_path_factory, name, sig):
    case, reference = CASES[name], uninterrupted(name, tmp_path_factory)
    proc = fit(case, tmp_path, wait=False)
    deadline, writes, seen = time.monotonic() + 600, 0, None
    while writes < case.kill_at_write:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
        if last(case, tmp_path).exists():
            stat = last(case, tmp_path).stat()
            if (stat.st_ino, stat.st_mtime_ns) != seen:
                writes, seen = writes + 1, (stat.st_ino, stat.st_mtime_ns)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, out[-3000:]  # a clean exit: a requeued job starts again
    else:
        assert proc.returncode == -signal.SIGKILL
    stopped_at = checkpoint(last(case, tmp_path))["global_step"]
    assert 0 < stopped_at < case.epochs * case.steps_per_epoch
    if stopped_at % case.steps_per_epoch == 0:
        pytest.skip(f"the run was stopped at an epoch end (step {stopped_at}), not mid-epoch: machine too slow to poll")
    fit(case, tmp_path, "--ckpt_path", "last")
    resumed = checkpoint(last(case, tmp_path))
    assert resumed["global_step"] == reference["global_step"]
    a, b = resumed["state_dict"], reference["state_dict"]
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"{name}, {signal.Signals(sig).name} at step {stopped_at}: max |Δw| after resume = {diff}")
    assert diff == 0.0  # bit-identical on the CPU
    for i, (opt_a, opt_b) in enumerate(zip(resumed["optimizer_states"], reference["optimizer_states"], strict=True)):
        for p, state in opt_a["state"].items():  # Adam's moments and step counts continue, not restart
            for key, value in state.items():
                assert torch.equal(value, opt_b["state"][p][key]), f"optimizer {i}, param {p}, {key}"
