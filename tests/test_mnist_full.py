"""Paper-scale MNIST (issue 26): the full-mode configs, M1+M2's codes, the pieces the GPU script relies on
(StepTimer, time-based resume checkpoints, the geometric LR decay, per-unit Gaussian σ, the pixel baseline) and,
in the slow tier, ``scripts/train_mnist_full.sh`` end to end in smoke mode on synthetic digits."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, synthetic_digits, write_idx_file
from torch.distributions import Normal

from ae_lightning.callbacks import ResumeCheckpoint, StepTimer
from ae_lightning.config import load_run
from ae_lightning.data import MNISTCodesDataModule, MNISTDataModule
from ae_lightning.data.files import DatasetNotFoundError
from ae_lightning.distributions import GaussianLikelihood
from ae_lightning.models import VAE
from ae_lightning.nets import MLPDecoder, MLPEncoder
from ae_lightning.optim import GeometricDecay

FULL = ROOT / "configs" / "full"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _quiet():
    for name in ("lightning.pytorch", "lightning.fabric", "ae_lightning.data.mnist"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.fixture
def big_mnist_root(tmp_path) -> Path:
    """Synthetic MNIST in torchvision's layout with enough digits per class for 10 labels each (600 train, 100 test)."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    for k, (prefix, n) in enumerate({"train": 600, "t10k": 100}.items()):
        images, labels = synthetic_digits(n, seed=k)
        write_idx_file(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_file(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path / "mnist"


def _vae_run(run_cli, root: Path) -> Path:
    """A 2-batch fit of the full VAE config; its last.ckpt."""
    run = run_cli(["fit", "--config", str(FULL / "vae_burda_mnist.yaml"), "--data.init_args.root", str(root),
                   "--data.init_args.batch_size=16", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                   "--trainer.limit_val_batches=1", *QUIET])
    return Path(run.trainer.log_dir) / "checkpoints" / "last.ckpt"


# --- the configs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vae_burda_mnist", "sdae3_mnist", "mlp3x1000_mnist", "m2_mnist", "ssaae_mnist"])
def test_full_config_trains_on_the_full_layout(name, run_cli, big_mnist_root):
    args = ["fit", "--config", str(FULL / f"{name}.yaml"), "--data.init_args.root", str(big_mnist_root),
            "--trainer.fast_dev_run=2", "--data.init_args.batch_size=20", *QUIET]
    if name.startswith("sdae3") or name.startswith("mlp"):
        args += ["--model.init_args.pretrain_epochs=[1,1,1]"] if name.startswith("sdae3") else []
    run = run_cli(args)
    assert run.trainer.state.finished and run.trainer.global_step >= 2
    dm = run.datamodule
    assert dm.source.startswith("the full MNIST set") and len(dm.test_set) == 100  # the official test files
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_m1m2_trains_on_the_codes_of_a_vae(run_cli, big_mnist_root):
    ckpt = _vae_run(run_cli, big_mnist_root)
    run = run_cli(["fit", "--config", str(FULL / "m1m2_mnist.yaml"), "--data.init_args.root", str(big_mnist_root),
                   "--data.init_args.checkpoint", str(ckpt), "--data.init_args.batch_size=50",
                   "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", *QUIET])
    metrics = run.trainer.callback_metrics
    assert run.model.encoder.image_shape == (1, 1, 50) and run.model.likelihood.log_sigma.shape == (1, 1, 50)
    assert {"val/accuracy", "val/error", "val/elbo"} <= set(metrics) and "val/psnr" not in metrics
    assert math.isfinite(float(metrics["val/elbo"]))


def test_codes_are_posterior_draws_in_training_and_means_in_evaluation(run_cli, big_mnist_root):
    ckpt = _vae_run(run_cli, big_mnist_root)
    dm = MNISTCodesDataModule(str(ckpt), root=str(big_mnist_root), labelled_per_class=10, batch_size=50)
    assert dm.image_shape == (1, 1, 50)
    dm.setup("fit")
    pixels = MNISTDataModule(root=str(big_mnist_root), labelled_per_class=10, batch_size=50)
    pixels.setup("fit")
    assert (dm.labelled_indices == pixels.labelled_indices).all()  # the same 100 labels as the pixel models
    assert torch.equal(dm.train_set.labels, pixels.train_set.labels)
    vae, _ = load_run(ckpt)
    with torch.no_grad():
        q_train, q_val = vae.posterior(pixels.train_set.images[:40]), vae.posterior(pixels.val_set.images)
    torch.testing.assert_close(dm.val_set.images.flatten(1), q_val.mean)  # (N, 1, 1, 50): the posterior mean
    torch.manual_seed(0)
    draws = torch.stack([dm.train_set[list(range(40))][0] for _ in range(400)])  # (400, 40, 1, 1, 50)
    assert draws.shape[2:] == (1, 1, 50) and not torch.equal(draws[0], draws[1])
    z = (draws.flatten(2) - q_train.mean) / q_train.stddev  # standardised draws: N(0, 1)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    batch, labels = next(iter(dm.train_dataloader()))
    assert batch.shape == (50, 1, 1, 50) and int((labels >= 0).sum()) == dm.labelled_per_batch


def test_codes_need_a_vae_checkpoint(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train one first"):
        MNISTCodesDataModule(str(tmp_path / "missing.ckpt"))


# --- the pieces ---------------------------------------------------------------------------------------------------
def test_per_unit_gaussian_sigma_is_a_diagonal_normal():
    lik = GaussianLikelihood(sigma=1.0, learn_sigma=True, per_pixel=True, image_shape=(1, 1, 5))
    with torch.no_grad():
        lik.log_sigma.copy_(torch.linspace(-1, 1, 5).view(1, 1, 5))
    mu, x = torch.randn(3, 1, 1, 5), torch.randn(3, 1, 1, 5)
    expected = Normal(mu, lik.log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(mu, x), expected)
    assert GaussianLikelihood(0.5).log_sigma.shape == ()  # one σ by default, as before
    with pytest.raises(ValueError, match="image_shape"):
        GaussianLikelihood(per_pixel=True)


def test_geometric_decay_reaches_its_final_factor_over_the_fit():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = GeometricDecay(opt, final_factor=0.1, total_steps=70)
    lrs = []
    for _ in range(71):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[70] == pytest.approx(1e-4)
    assert lrs[10] == pytest.approx(1e-3 * 10 ** (-1 / 7))  # Burda's first drop, reached smoothly
    with pytest.raises(ValueError, match="final_factor"):
        GeometricDecay(opt, final_factor=0)


def test_resume_checkpoint_by_wall_time():
    cb = ResumeCheckpoint(every_n_minutes=2)
    assert cb._train_time_interval == timedelta(minutes=2) and not cb._every_n_train_steps
    assert ResumeCheckpoint()._every_n_train_steps == 50
    with pytest.raises(ValueError, match="every_n_minutes"):
        ResumeCheckpoint(every_n_minutes=0)


def test_step_timer_times_batches_and_stops_the_fit(tmp_path, tiny_mnist):
    model = VAE(MLPEncoder((1, 28, 28), [16, 8], activation="tanh", code_activation=None),
                MLPDecoder((1, 28, 28), [16, 4], activation="tanh", output_activation=None), latent_dim=4,
                test_samples=0, optimizer=partial(torch.optim.Adam, lr=1e-3))
    timer = StepTimer(str(tmp_path / "t.json"), warmup=1, batches=2)
    trainer = L.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[timer], accelerator="cpu")
    trainer.fit(model, tiny_mnist)
    result = json.loads((tmp_path / "t.json").read_text())
    assert trainer.global_step == 3  # 1 + 2 of the 4 batches, then stopped (5 epochs asked)
    assert result["batches_per_epoch"] == 4 and result["s_per_batch"] > 0
    assert result["s_per_epoch"] == pytest.approx(4 * result["s_per_batch"]) and result["device_name"] == "cpu"
    short = StepTimer(str(tmp_path / "short.json"), warmup=1, batches=50)  # the fit ends first: 3 timed batches
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[short], accelerator="cpu").fit(model, tiny_mnist)
    assert json.loads((tmp_path / "short.json").read_text())["batches"] == 3
    inside = StepTimer(str(tmp_path / "inside.json"), warmup=10, batches=5)  # the fit ends inside the warm-up
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[inside], accelerator="cpu").fit(model, tiny_mnist)
    assert json.loads((tmp_path / "inside.json").read_text())["batches"] == 4


def test_pixel_logistic_regression_on_the_labelled_pool():
    from ae_lightning.baselines import pixel_logistic_regression

    result = pixel_logistic_regression(None, labelled_per_class=10, max_iter=100, l2s=(1e-2, 1.0))
    assert result["labels"] == 100 and set(result["val_errors"]) == {"0.01", "1.0"}
    assert 0.1 < result["test_error"] < 0.45, result  # ~27 % on MNIST with 100 labels; far better than chance


# --- the GPU script, on the CPU -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_mnist_full_smoke(big_mnist_root, tmp_path):
    """``scripts/train_mnist_full.sh ROOT OUT 3`` with SMOKE=1: calibration, every fit (M1 then M1+M2), every test,
    the pixel baseline, one JSON per model and the summary."""
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_mnist_full.sh"), str(big_mnist_root), str(out), "3"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    values = {r["model"]: r["value"] for r in summary["rows"]}
    assert set(values) == {"vae", "sdae3", "mlp3x1000", "m2", "m1", "m1m2", "ssaae", "logreg"}
    assert all(v is not None for k, v in values.items() if k != "m1"), values
    assert 0 <= values["sdae3"] <= 1 and values["vae"] > 0
    for name in ("vae", "sdae3", "m1m2"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["epochs_trained"] >= 1 and result["fit_exit"] == 0 and result["calibration"]["s_per_batch"] > 0
    assert (out / "vae" / "version_0" / "checkpoints" / "last.ckpt").is_file()
