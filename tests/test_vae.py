"""VAE / CVAE: the posterior's maths, the ELBO terms, the IWAE estimate, warm-up, conditioning, callbacks."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ae_lightning.callbacks import GenerationGrids
from ae_lightning.data import MNISTDataModule
from ae_lightning.distributions import BernoulliLikelihood, DiagonalGaussian, GaussianLikelihood
from ae_lightning.losses import free_bits_kl
from ae_lightning.models import VAE, ConditionalVAE, kl_warmup_weight
from ae_lightning.models import vae as vae_module
from ae_lightning.nets import ConditionalDecoder, ConditionalEncoder, MLPDecoder, MLPEncoder

SHAPE = (1, 8, 8)


def tiny_vae(latent: int = 3, hidden: int = 32, **kwargs) -> VAE:
    torch.manual_seed(0)
    enc = MLPEncoder(SHAPE, [hidden, 2 * latent], activation="tanh", code_activation=None)
    dec = MLPDecoder(SHAPE, [hidden, latent], activation="tanh", output_activation=None)
    return VAE(enc, dec, latent_dim=latent, **kwargs)


def tiny_cvae(latent: int = 2, labels: int = 2, hidden: int = 32, **kwargs) -> ConditionalVAE:
    torch.manual_seed(0)
    enc = ConditionalEncoder(MLPEncoder(SHAPE, [hidden], activation="relu", code_activation="relu"), labels, 2 * latent)
    dec = ConditionalDecoder(MLPDecoder(SHAPE, [hidden, latent + labels], activation="relu", output_activation=None),
                             labels)
    return ConditionalVAE(enc, dec, latent_dim=latent, **kwargs)


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


# --- the posterior ------------------------------------------------------------------------------
def test_kl_matches_closed_form_and_torch():
    q = DiagonalGaussian(torch.tensor([[0.5, -1.0]]), torch.tensor([[math.log(0.25), math.log(4.0)]]))
    # KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1 − ln σ²), per unit
    expected = 0.5 * (0.25 + 0.25 - 1 - math.log(0.25)) + 0.5 * (1.0 + 4.0 - 1 - math.log(4.0))
    assert q.kl().item() == pytest.approx(expected, rel=1e-6)
    assert q.kl().shape == (1,) and q.kl_per_dim().shape == (1, 2)
    # against a given prior: KL(N(0.5, .25) ‖ N(1, 1)) + KL(N(−1, 4) ‖ N(0, 4))
    p = DiagonalGaussian(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]]))
    expected_p = 0.5 * (0.0 - math.log(0.25) + (0.25 + 0.25) / 1.0 - 1) + 0.5 * (0.0 + (4.0 + 1.0) / 4.0 - 1)
    assert q.kl(p).item() == pytest.approx(expected_p, rel=1e-6)
    # random batch against torch.distributions, and the standard normal prior object
    g = torch.Generator().manual_seed(0)
    a = DiagonalGaussian(torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g))
    b = DiagonalGaussian(torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(a.mean, a.stddev), torch.distributions.Normal(b.mean, b.stddev)).sum(-1)
    assert torch.allclose(a.kl(b), ref, atol=1e-5)
    assert torch.allclose(a.kl(), a.kl(DiagonalGaussian.standard_normal(5, 4)), atol=1e-6)
    assert torch.allclose(a.kl(a), torch.zeros(5), atol=1e-6)


def test_reparameterised_samples_have_posterior_moments_and_gradients():
    mean = torch.tensor([1.0, -2.0, 0.0], requires_grad=True)
    log_var = torch.tensor([0.0, math.log(0.25), math.log(9.0)], requires_grad=True)
    q = DiagonalGaussian(mean, log_var)
    z = q.rsample(200_000, generator=torch.Generator().manual_seed(0))  # (S, 3)
    assert torch.allclose(z.mean(0), mean.detach(), atol=0.02)
    assert torch.allclose(z.var(0), torch.tensor([1.0, 0.25, 9.0]), rtol=0.02)
    z.sum().backward()  # dz/dμ = 1 for every sample: the sample is a differentiable function of μ
    assert torch.allclose(mean.grad, torch.full((3,), 200_000.0))
    assert log_var.grad is not None and log_var.grad.abs().sum() > 0
    assert torch.equal(q.mode, mean) and torch.allclose(q.stddev, torch.tensor([1.0, 0.5, 3.0]))
    # log_prob agrees with torch.distributions for batched samples
    ref = torch.distributions.Normal(mean, q.stddev).log_prob(z[:7]).sum(-1)
    assert torch.allclose(q.log_prob(z[:7]), ref, atol=1e-5)


def test_from_params_rejects_odd_sizes():
    with pytest.raises(ValueError, match="2 \\* latent_dim"):
        DiagonalGaussian.from_params(torch.zeros(2, 5))


def test_likelihoods():
    x = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
    logits = torch.tensor([[[[0.0, 2.0]]]])
    expected = math.log(0.5) + math.log(torch.sigmoid(torch.tensor(2.0)).item())
    assert BernoulliLikelihood().log_prob(logits, x).item() == pytest.approx(expected, rel=1e-6)
    mu = torch.tensor([[[[0.5, 0.5]]]])
    lik = GaussianLikelihood(sigma=0.5)
    expected = 2 * (-0.5 * math.log(2 * math.pi) - math.log(0.5)) - 0.5 * (1.0 + 1.0)
    assert lik.log_prob(mu, x).item() == pytest.approx(expected, rel=1e-6)
    assert not any(p.requires_grad for p in lik.parameters())
    assert [n for n, _ in GaussianLikelihood(0.1, learn_sigma=True).named_parameters()] == ["log_sigma"]


# --- the ELBO, warm-up, free bits, the IWAE estimate -----------------------------------------------
def test_warmup_schedule_values():
    assert [kl_warmup_weight(s, 1.0, 100) for s in (0, 25, 50, 100, 1000)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert kl_warmup_weight(50, beta=4.0, warmup_steps=100) == 2.0
    assert kl_warmup_weight(0, beta=0.5, warmup_steps=0) == 0.5


def test_warmup_follows_the_trainer_steps(tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module.kl_weight())

    data = DataLoader(TensorDataset(torch.rand(40, *SHAPE).bernoulli()), batch_size=5)
    model = tiny_vae(beta=2.0, warmup_steps=4)
    quiet_trainer(tmp_path, max_steps=6, callbacks=[Record()], limit_val_batches=0).fit(model, data)
    assert seen == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]


def test_free_bits():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]])  # (B, D): batch means 0.2, 3.0, 0.0
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 3.0 + 0.5)
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(3.2)


def test_losses_are_per_image_nats_and_combine():
    model = tiny_vae(beta=0.5)
    x = torch.rand(6, *SHAPE).bernoulli()
    out = model(x)
    losses = model.compute_losses(out, x)
    log_px = BernoulliLikelihood().log_prob(out.params, x)  # (B,)
    assert losses["recon"].item() == pytest.approx(-log_px.mean().item(), rel=1e-6)
    assert losses["kl"].item() == pytest.approx(out.posterior.kl().mean().item(), rel=1e-6)
    assert losses["elbo"].item() == pytest.approx(-(losses["recon"] + losses["kl"]).item(), rel=1e-6)
    assert losses["loss"].item() == pytest.approx((losses["recon"] + 0.5 * losses["kl"]).item(), rel=1e-6)


def test_the_reconstruction_is_computed_only_when_read(monkeypatch):
    """A training step never reads the likelihood's mean image: it is computed on the first read of
    ``out.reconstruction`` (validation's metrics and grids), once, and equals the mean of the decoder's parameters."""
    model = tiny_vae()
    calls = []
    mean = model.likelihood.mean
    monkeypatch.setattr(model.likelihood, "mean", lambda params: calls.append(1) or mean(params))
    x = torch.rand(6, *SHAPE).bernoulli()
    loss = model.training_step((x,), 0)
    loss.backward()
    assert calls == []
    out = model(x)
    assert torch.equal(out.reconstruction, torch.sigmoid(out.params)) and out.reconstruction is out.reconstruction
    assert calls == [1]


def test_iwae_k1_is_the_elbo_and_tightens_with_k():
    model = tiny_vae().eval()
    x = torch.rand(16, *SHAPE).bernoulli()
    # k = 1 with a seeded generator is exactly the one-sample ELBO log p(x|z) + log p(z) − log q(z|x)
    k1 = model.log_likelihood(x, num_samples=1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        q = model.posterior(x)
        z = q.rsample(generator=torch.Generator().manual_seed(3))
        prior = DiagonalGaussian.standard_normal(*q.shape)
        mc_elbo = model.likelihood.log_prob(model.decoder_params(z), x) + prior.log_prob(z) - q.log_prob(z)
        params = model.decoder_params(q.rsample(4000).flatten(0, 1)).view(4000, *x.shape)  # (S, B, 1, 8, 8)
        analytic_elbo = model.likelihood.log_prob(params, x).mean(0) - q.kl()
    assert torch.allclose(k1, mc_elbo, atol=1e-4)
    # and averaged over many draws it is the ELBO with the closed-form KL
    draws = torch.stack([model.log_likelihood(x, num_samples=1, generator=torch.Generator().manual_seed(s))
                         for s in range(400)])  # (400, B)
    assert draws.mean().item() == pytest.approx(analytic_elbo.mean().item(), abs=3 * draws.std().item() / 20 + 0.05)
    # the bound does not decrease with k (on average over images and repetitions)
    bounds = [torch.stack([model.log_likelihood(x, num_samples=k, generator=torch.Generator().manual_seed(s))
                           for s in range(5)]).mean().item() for k in (1, 10, 100, 1000)]
    assert bounds == sorted(bounds), bounds
    assert bounds[-1] > bounds[0] + 0.1  # a random encoder's posterior is loose: k matters


def test_iwae_chunks_give_the_unchunked_estimate(monkeypatch):
    """Above ``_IWAE_CHUNK_ELEMENTS`` decoder outputs the K samples are drawn and decoded in chunks; with the chunk
    lowered to 7 samples (chunks 7 + 7 + 6 of K = 20) the estimate equals the one-chunk one for the same generator."""
    model = tiny_vae().eval()
    x = torch.rand(16, *SHAPE).bernoulli()  # 16 images × 64 pixels per sample; latent 3
    # CPU randn fills blocks of 16 numbers, so draws of 7·16·3, 7·16·3, 6·16·3 continue one 20·16·3 stream exactly
    g = torch.Generator().manual_seed(0)
    parts = torch.cat([torch.randn(s, 16, 3, generator=g) for s in (7, 7, 6)])
    assert torch.equal(parts, torch.randn(20, 16, 3, generator=torch.Generator().manual_seed(0)))
    calls = []
    model.decoder.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    whole = model.log_likelihood(x, num_samples=20, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(vae_module, "_IWAE_CHUNK_ELEMENTS", 7 * 16 * 64)
    chunked = model.log_likelihood(x, num_samples=20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-4), (chunked - whole).abs().max()
    assert calls == [20 * 16, 7 * 16, 7 * 16, 6 * 16]  # one chunk, then three


def test_iwae_bound_is_no_looser_than_the_elbo():
    """No slack. For the same K draws the K-sample bound log (1/K) Σ w_k is ≥ the mean of the K one-sample ELBO
    estimates (1/K) Σ log w_k, per image: log is concave (Jensen), so this holds for every draw, not only in
    expectation. Averaging over draws gives E[IWAE_K] ≥ ELBO, checked against the ELBO with the closed-form KL."""
    model = tiny_vae().eval()
    x = torch.rand(64, *SHAPE).bernoulli()
    k = 5  # as test_step's default; the smallest per-image gap here is ~0.02 nats, so a 1-nat slack would hide a lot
    log_px = model.log_likelihood(x, num_samples=k, generator=torch.Generator().manual_seed(5))  # (B,)
    with torch.no_grad():  # the same draws by hand: one log-weight per sample
        q = model.posterior(x)
        z = q.rsample(k, generator=torch.Generator().manual_seed(5))  # (K, B, D)
        params = model.decoder_params(z.flatten(0, 1)).view(k, *x.shape)
        prior = DiagonalGaussian.standard_normal(*q.shape)
        log_w = model.likelihood.log_prob(params, x) + prior.log_prob(z) - q.log_prob(z)  # (K, B)
        many = model.decoder_params(q.rsample(2000).flatten(0, 1)).view(2000, *x.shape)  # (S, B, 1, 8, 8)
        elbo = model.likelihood.log_prob(many, x).mean(0) - q.kl()  # (B,)
    assert (log_px >= log_w.mean(0) - 1e-5).all(), (log_px - log_w.mean(0)).min()
    assert (-log_px).mean() <= -elbo.mean(), ((-log_px).mean(), -elbo.mean())


def test_active_units_covariance_criterion():
    model = tiny_vae(latent=4)
    g = torch.Generator().manual_seed(0)
    means = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 0.5, 0.05, 0.0])  # variances 1, .25, .0025, 0
    model._accumulate_unit_stats(means[:250])
    model._accumulate_unit_stats(means[250:])
    assert model.active_units() == 2


# --- training, logging, conditioning, callbacks, checkpoints ---------------------------------------
def test_fit_logs_elbo_terms_and_test_nll(tmp_path):
    dm = MNISTDataModule(None, batch_size=50, train_size=200, binarize=True)
    enc = MLPEncoder((1, 28, 28), [32, 8], activation="tanh", code_activation=None)
    dec = MLPDecoder((1, 28, 28), [32, 4], activation="tanh", output_activation=None)
    model = VAE(enc, dec, latent_dim=4, test_samples=5, warmup_steps=2, free_bits=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=2, limit_test_batches=2)
    trainer.fit(model, dm)
    m = trainer.callback_metrics
    for key in ("train/recon", "train/kl", "train/elbo", "train/loss", "val/recon", "val/kl", "val/elbo",
                "val/active_units", "val/psnr"):
        assert key in m, key
    assert m["val/elbo"].item() == pytest.approx(-(m["val/recon"] + m["val/kl"]).item(), rel=1e-4)
    assert 0 <= m["val/active_units"].item() <= 4
    trainer.test(model, dm, verbose=False)
    m = trainer.callback_metrics
    assert "test/nll_k5" in m and "test/elbo" in m
    # smoke check only: test/elbo and test/nll_k5 use different draws on 100 images, so Monte Carlo noise needs
    # slack here; the bound itself is tested exactly in test_iwae_bound_is_no_looser_than_the_elbo
    assert m["test/nll_k5"].item() <= -m["test/elbo"].item() + 1.0
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["latent_dim"] == 4
    restored = VAE.load_from_checkpoint(path, encoder=enc, decoder=dec)
    assert restored.hparams.test_samples == 5


def two_class_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: top half on; class 1: bottom half on (binary 8×8 images with 5% pixel flips)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.zeros(n, *SHAPE)
    x[y == 0, :, :4] = 1.0
    x[y == 1, :, 4:] = 1.0
    flip = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flip, 1 - x, x), y


def test_cvae_sampling_respects_the_requested_label(tmp_path):
    x, y = two_class_images(256)
    data = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = tiny_cvae(latent=2, optimizer=partial(torch.optim.Adam, lr=3e-3))
    quiet_trainer(tmp_path, max_steps=300, limit_val_batches=0).fit(model, data)
    model.eval()
    g = torch.Generator().manual_seed(0)
    for label, (on, off) in {0: (slice(0, 4), slice(4, 8)), 1: (slice(4, 8), slice(0, 4))}.items():
        images = model.sample(64, condition=torch.full((64,), label), generator=g)  # (64, 1, 8, 8)
        top, bottom = images[:, 0, on].mean(), images[:, 0, off].mean()
        assert top > 0.75 and bottom < 0.25, (label, top.item(), bottom.item())
    # the same codes with the other label give the other class: the label, not z, decides
    z = model.prior.sample(16, generator=g, device=model.device)
    a, b = model.decode(z, torch.zeros(16, dtype=torch.long)), model.decode(z, torch.ones(16, dtype=torch.long))
    assert (a[:, 0, :4].mean() - b[:, 0, :4].mean()) > 0.6


def test_cvae_rejects_unwrapped_nets():
    with pytest.raises(ValueError, match="ConditionalEncoder"):
        ConditionalVAE(MLPEncoder(SHAPE, [4]), MLPDecoder(SHAPE, [2]), latent_dim=2)


def test_vae_rejects_mismatched_code_sizes():
    with pytest.raises(ValueError, match="2 \\* latent_dim = 8"):
        VAE(MLPEncoder(SHAPE, [6], code_activation=None), MLPDecoder(SHAPE, [4]), latent_dim=4)


def test_dynamic_binarisation_resamples_each_draw():
    dm = MNISTDataModule(None, binarize=True)
    dm.setup("fit")
    a, b = dm.train_set[0][0], dm.train_set[0][0]
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)


@pytest.mark.parametrize("conditional", [False, True])
def test_generation_callback_writes_grids(tmp_path, conditional):
    x, y = two_class_images(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = tiny_cvae(latent=2) if conditional else tiny_vae(latent=2)
    cb = GenerationGrids(num_samples=9, samples_per_label=4, num_interpolations=3, interpolation_steps=5,
                         manifold_size=6)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[cb])
    trainer.fit(model, loader, loader)
    images = tmp_path / "images"
    names = sorted(p.name for p in images.iterdir())
    first = "val_samples_by_label_epoch000.png" if conditional else "val_samples_epoch000.png"
    expected = {first, "val_interpolation_epoch000.png", "val_latent_scatter_epoch000.png",
                "val_manifold_epoch000.png"}
    assert expected <= set(names), names
    from PIL import Image

    with Image.open(images / "val_interpolation_epoch000.png") as im:  # 3 rows of 5 + 2 end images, 8 px + padding
        assert im.size == (7 * 10 + 2, 3 * 10 + 2)
    if conditional:
        with Image.open(images / first) as im:  # one row per label, 4 columns
            assert im.size == (4 * 10 + 2, 2 * 10 + 2)


def test_generation_benchmark_end_to_end_tiny(tmp_path):
    """benchmarks/generation.py as `make benchmark` runs it, at one epoch: CSV columns, bounds, figures."""
    import csv

    from conftest import run_benchmark

    from benchmarks import generation

    rows = run_benchmark("generation", tmp_path, {"epochs": 1, "k": 8}).rows
    with open(tmp_path / "generation_mnist.csv") as f:
        assert next(csv.reader(f)) == generation.COLUMNS
    for r in rows:
        assert r["k"] == 8 and r["elbo"] < 0
        assert r["nll_k"] <= -r["elbo"] + 1.0  # different draws: noise slack (exact: test_iwae_bound_is_no_looser_...)
    for name in ("vae", "cvae", "latent2d"):
        assert (tmp_path / f"generation_mnist_{name}.png").stat().st_size > 10_000
