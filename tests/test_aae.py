"""Adversarial autoencoder: priors, the two-phase update, the regulariser's effect, checkpoints and DDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import OptimizerSteps

from ae_lightning.data import MNISTDataModule
from ae_lightning.models import AdversarialAutoencoder
from ae_lightning.nets import MLPDecoder, MLPDiscriminator, MLPEncoder
from ae_lightning.priors import GaussianPrior, MixtureOfGaussiansPrior, UniformPrior, mmd, prior_match

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def test_priors_sample_and_density():
    g = torch.Generator().manual_seed(0)
    z = GaussianPrior(3).sample(4000, generator=g)
    assert z.shape == (4000, 3) and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    u = UniformPrior(5).sample(1000, generator=g)
    assert u.min() >= -1 and u.max() <= 1
    assert torch.isinf(UniformPrior(2).log_prob(torch.tensor([[2.0, 0.0]]))).all()
    mog = MixtureOfGaussiansPrior(2, num_components=10, radius=3.0, supervised=True)
    labels = torch.arange(10).repeat(200)
    m = mog.sample(2000, labels=labels, generator=g)
    angle = torch.atan2(m[:, 1], m[:, 0]) % (2 * torch.pi)
    centre = labels * (2 * torch.pi / 10)
    assert ((angle - centre + torch.pi) % (2 * torch.pi) - torch.pi).abs().max() < 0.3  # label picks the component
    assert (m.norm(dim=1) - 3).abs().mean() < 0.6
    # density is highest on the components
    assert mog.log_prob(torch.tensor([[3.0, 0.0]])) > mog.log_prob(torch.tensor([[0.0, 0.0]])) + 5


def test_prior_match_statistics():
    prior = GaussianPrior(2)
    same = prior.sample(800, generator=torch.Generator().manual_seed(1))
    shifted = same + 2.0
    close, far = prior_match(same, prior), prior_match(shifted, prior)
    assert close["mmd"] < 0.02 and close["ks"] < 0.1
    assert far["mmd"] > 10 * max(close["mmd"], 0.01) and far["ks"] > 0.5
    assert abs(mmd(same, same[torch.randperm(800)])) < 1e-6 + 0.01


def test_mmd_is_the_full_kernel_matrix_estimate():
    """``mmd`` sums each within-sample pair once (pdist) and one kernel at a time: the unbiased estimate of the full
    kernel matrices, diagonal removed, to float64 rounding."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g), 1.2 * torch.randn(250, 8, generator=g) + 0.1
    bandwidths = (0.5, 1.0, 2.0)

    def k(a, b):
        d2 = torch.cdist(a.double(), b.double()).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    reference = ((kxx.sum() - kxx.diagonal().sum()) / (300 * 299) + (kyy.sum() - kyy.diagonal().sum()) / (250 * 249)
                 - 2 * kxy.mean())
    assert mmd(x, y, bandwidths) == pytest.approx(float(reference), rel=1e-9, abs=1e-12)


def test_validation_prior_match_uses_the_first_codes(digits, monkeypatch, tmp_path):
    """``val/prior_mmd`` / ``val/prior_ks`` over the first ``val_prior_match_codes`` (500) validation codes (the MMD's
    cost grows with their square); ``None`` (``--diagnostics.prior_match_codes=null``): prior_match's own limit."""
    from ae_lightning.models import adversarial

    seen = []
    monkeypatch.setattr(adversarial, "prior_match", lambda codes, prior, labels=None, max_samples=2000:
                        seen.append((len(codes), max_samples)) or {"mmd": 0.0, "ks": 0.0})
    model = _aae(True)
    assert model.val_prior_match_codes == 500
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2,
                        default_root_dir=tmp_path)  # the sample grid's folder
    trainer.validate(model, digits, verbose=False)
    model.val_prior_match_codes = None
    trainer.validate(model, digits, verbose=False)
    assert seen == [(200, 500), (200, 2000)]


def _aae(adversarial: bool, prior=None, **kw) -> AdversarialAutoencoder:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))  # every phase; GAN practice: β₁ = 0.5
    return AdversarialAutoencoder(
        MLPEncoder((1, 28, 28), [128, 2], activation="relu", code_activation=None),
        MLPDecoder((1, 28, 28), [128, 2], activation="relu"),
        MLPDiscriminator(2, [64, 64], num_classes=10 if prior is not None and prior.supervised else 0),
        prior or GaussianPrior(2), adversarial=adversarial, optimizer=adam, discriminator_optimizer=adam,
        generator_optimizer=adam, **kw,
    )


def _fit(model, epochs: int, dm, **kw) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kw)
    trainer.fit(model, dm)
    return trainer


@pytest.fixture(scope="module")
def digits():
    dm = MNISTDataModule(root=str(MNIST) if MNIST.is_dir() else None, batch_size=100, train_size=2000)
    dm.setup()
    return dm


def test_two_phases_update_the_right_parameters(digits):
    """Two batches, two discriminator steps each: parameters snapshotted around every optimiser step. Per batch
    the reconstruction optimiser moves encoder + decoder, the discriminator optimiser (twice) the discriminator
    only, the generator optimiser the encoder only, in that order; the four numbers are logged."""
    torch.manual_seed(0)
    model = _aae(True, gradient_clip_val=1.0, discriminator_steps=2)
    logged = {}

    class Grab(L.Callback):  # every step's terms, as the divergence guard reads them
        def on_train_batch_end(self, trainer, module, *args):
            logged.update({k: float(v) for k, v in module.train_terms.items()})

    steps = OptimizerSteps()
    trainer = _fit(model, 1, digits, limit_train_batches=2, callbacks=[Grab(), steps])
    recon, disc, gen = (0, {"encoder", "decoder"}), (1, {"discriminator"}), (2, {"encoder"})
    assert steps.moves() == [recon, disc, disc, gen] * 2
    terms = {"train/recon", "train/d_loss", "train/g_loss", "train/d_acc_real", "train/d_acc_fake"}
    assert terms <= set(logged)
    assert 0 <= logged["train/d_acc_real"] <= 1
    assert terms <= set(trainer.callback_metrics)  # the epoch means


def test_baseline_without_adversarial_phase_steps_only_the_autoencoder(digits):
    torch.manual_seed(0)
    steps = OptimizerSteps()
    _fit(_aae(False), 1, digits, limit_train_batches=2, callbacks=[steps])
    assert steps.moves() == [(0, {"encoder", "decoder"})] * 2


def test_adversarial_phase_pulls_codes_to_the_prior(digits):
    """Short run, 2-D code: the codes' MMD² to N(0, I) (Gaussian kernels, bandwidths 0.25…4) and the largest
    per-dimension KS statistic are both much smaller with the adversarial phase than without it."""
    x = digits.val_set.images  # (N, 1, 28, 28) held-out digits
    stats = {}
    for adversarial in (True, False):
        L.seed_everything(0)
        model = _aae(adversarial)
        _fit(model, 15, digits)  # 300 steps
        model.eval()
        with torch.no_grad():
            stats[adversarial] = prior_match(model.encode(x), model.prior)
    # seeds 0-2 gave MMD² 0.04-0.12 with vs 2.1-2.2 without, KS 0.10-0.18 vs 0.78-0.92
    assert stats[True]["mmd"] < 0.25 * stats[False]["mmd"], stats
    assert stats[True]["ks"] < stats[False]["ks"] - 0.4, stats


def test_supervised_mixture_needs_labelled_discriminator():
    prior = MixtureOfGaussiansPrior(2, supervised=True)
    with pytest.raises(ValueError, match="num_classes to 10"):
        AdversarialAutoencoder(MLPEncoder((1, 28, 28), [8, 2]), MLPDecoder((1, 28, 28), [8, 2]),
                               MLPDiscriminator(2, [8]), prior)


def test_gaussian_posterior_and_weights_only_checkpoint(digits, tmp_path):
    model = AdversarialAutoencoder(
        MLPEncoder((1, 28, 28), [32, 4], activation="relu", code_activation=None),  # 2 means + 2 log-variances
        MLPDecoder((1, 28, 28), [32, 2], activation="relu"), MLPDiscriminator(2, [16]), GaussianPrior(2),
        posterior="gaussian",
    )
    trainer = _fit(model, 1, digits, limit_train_batches=2)
    out = model(digits.val_set.images[:5])
    assert out.code.shape == (5, 2) and out.posterior is not None
    trainer.save_checkpoint(tmp_path / "aae.ckpt")
    ckpt = torch.load(tmp_path / "aae.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["posterior"] == "gaussian" and "discriminator" not in ckpt["hyper_parameters"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_ARGS = ["--config", str(ROOT / "configs" / "aae_mog_mnist.yaml"), "--trainer.devices=2", "--trainer.accelerator=cpu",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
            "--data.init_args.batch_size=32"]


def _check_ddp_metrics(run_dir: Path) -> None:
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/d_loss_step" in header and "train/g_loss_step" in header and "val/prior_mmd" in header
    assert list((run_dir / "images").glob("val_samples_epoch*.png"))


def test_ddp_fork_two_cpu_processes(run_cli, tmp_path, forked_ranks):
    """Two forked CPU ranks in this process (fast): a plain ddp strategy is switched to find_unused_parameters,
    both phases run and the rank-0-only image logging does not deadlock."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it (the subprocess test covers DDP)")
    run = run_cli(["fit", *DDP_ARGS, "--trainer.strategy=ddp_fork"])
    assert run.trainer.world_size == 2 and run.trainer.state.finished
    _check_ddp_metrics(tmp_path / "runs" / "aae_mog_mnist" / "version_0")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """The CLI under plain `ddp` with 2 CPU processes, as a user runs it (slow: two cold imports): the module
    switches on find_unused_parameters and both phases run (the discriminator's losses are logged)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(_free_port())}
    cmd = [sys.executable, "-m", "ae_lightning.cli", "fit", *DDP_ARGS, "--trainer.strategy=ddp",
           f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.default_root_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "find_unused_parameters=True" in proc.stderr
    _check_ddp_metrics(tmp_path / "aae_mog_mnist" / "version_0")


def test_adversarial_benchmark_end_to_end_tiny(tmp_path):
    """benchmarks/adversarial.py as `make benchmark` runs it, at one epoch on 300 digits: the configs' models,
    every output, each row naming its config."""
    import csv

    from conftest import run_benchmark

    from benchmarks import adversarial

    rows = run_benchmark("adversarial", tmp_path, {"epochs": 1, "train_size": 300}).rows
    assert [(r["prior"], r["adversarial"], r["codes"]) for r in rows] == [
        (p, a, c) for p in ("gaussian", "mixture10_supervised")
        for a, c in ((True, "raw"), (False, "raw"), (False, adversarial.WHITENED))
    ]
    assert all(r["code_dim"] == 2 and r["train_images"] == 300 and r["prior_mmd"] == r["prior_mmd"] for r in rows)
    assert [r["config"] for r in rows[::3]] == ["configs/aae_mnist.yaml (code 2)", "configs/aae_mog_mnist.yaml"]
    with open(tmp_path / "adversarial_mnist.csv") as f:
        assert next(csv.reader(f)) == adversarial.COLUMNS
    md = (tmp_path / "adversarial_mnist.md").read_text()
    assert "configs/aae_mog_mnist.yaml" in md and "off, codes whitened" in md
    assert (tmp_path / "adversarial_mnist_latent.png").stat().st_size > 10_000


def test_whitening_gives_the_codes_the_priors_moments():
    from ae_lightning.priors import GaussianPrior
    from benchmarks.adversarial import whiten_to_prior

    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[3.0, 0.0], [1.0, 0.5]])
    z_train = torch.randn(4000, 2, generator=g) @ mix + 7  # far from N(0, I): shifted, scaled, correlated
    zw = whiten_to_prior(z_train, z_train, GaussianPrior(dim=2))
    assert zw.mean(0).abs().max() < 0.1
    assert (torch.cov(zw.T) - torch.eye(2)).abs().max() < 0.1
