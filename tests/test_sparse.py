"""Sparse autoencoder: penalties, k-sparse codes, and the sparsity target reached on real digits."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch

from ae_lightning.data import MNISTDataModule
from ae_lightning.losses import kl_sparsity, l1_sparsity
from ae_lightning.models import KLSparsity, L1Sparsity, SparseAutoencoder
from ae_lightning.models.sparse import top_k
from ae_lightning.nets import MLPDecoder, MLPEncoder

SHAPE = (1, 28, 28)


def sparse_ae(sparsity=None, hidden=64, code_activation="sigmoid", **kwargs) -> SparseAutoencoder:
    enc = MLPEncoder(SHAPE, [hidden], code_activation=code_activation)
    return SparseAutoencoder(enc, MLPDecoder(SHAPE, [hidden]), sparsity=sparsity, loss="bce",
                             optimizer=partial(torch.optim.Adam, lr=3e-3), **kwargs)


def fit(model, steps: int, train_size: int = 1024, tmp_path=None, **trainer_kwargs) -> tuple[L.Trainer, MNISTDataModule]:
    """Fit on the embedded real MNIST digits for ``steps`` optimiser steps."""
    L.seed_everything(0)
    dm = MNISTDataModule(root=None, batch_size=64, train_size=train_size)
    kwargs = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0, limit_val_batches=0)
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(max_epochs=-1, max_steps=steps, accelerator="cpu", default_root_dir=tmp_path, **kwargs)
    trainer.fit(model, dm)
    return trainer, dm


@torch.no_grad()
def mean_activation(model: SparseAutoencoder, dm: MNISTDataModule) -> float:
    model.eval()
    return float(model.encode(dm.val_set.images).mean())  # held-out digits


def test_kl_sparsity_closed_form():
    h = torch.tensor([[0.1, 0.5], [0.3, 0.5]])  # ρ̂ = (0.2, 0.5)
    rho = 0.05
    expected = sum(rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r)) for r in (0.2, 0.5))
    assert kl_sparsity(h, rho).item() == pytest.approx(expected, rel=1e-5)
    assert kl_sparsity(torch.full((4, 3), 0.05), 0.05).item() == pytest.approx(0.0, abs=1e-6)
    assert l1_sparsity(torch.tensor([[1.0, -2.0], [0.0, 3.0]])).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="rho"):
        kl_sparsity(h, 1.5)


def test_kl_penalty_is_per_batch_and_its_small_batch_excess_is_the_convexity_term():
    """The documented choice (``KLSparsity``): ρ̂ is the current batch's mean, with no state carried between
    batches, so the penalty of a batch depends on that batch only. KL is convex in ρ̂, so averaging per-batch
    penalties over a partition of the data (or over DDP ranks' shares of a global batch) gives at least the
    full-data penalty (Jensen: exact for every partition), in excess by ≈ Σ_j KL''(ρ̂_j) Var(h_j) / (2B)."""
    torch.manual_seed(0)
    means = torch.linspace(0.03, 0.3, 8)  # 8 sigmoid-like units, mean activations 0.03 … 0.3
    h = torch.distributions.Beta(means * 4, (1 - means) * 4).sample((8192,))  # (N, 8) in (0, 1)
    rho, penalty = 0.05, KLSparsity(target=0.05, beta=1.0)

    def closed_form(rho_hat: torch.Tensor) -> float:
        return float((rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum())

    a, b = h[:64], h[64:128]
    first = float(penalty(a))
    penalty(b)  # another batch in between changes nothing: no running ρ̂
    assert float(penalty(a)) == first == pytest.approx(closed_form(a.mean(0)), rel=1e-5)
    # under DDP each rank penalises its own half of a global batch of 128: together they over-penalise
    assert (float(penalty(a)) + float(penalty(b))) / 2 >= float(penalty(h[:128]))

    full, n = float(penalty(h)), len(h)
    mu, var = h.mean(0), h.var(0, unbiased=False)
    curvature = rho / mu**2 + (1 - rho) / (1 - mu) ** 2  # KL''(ρ̂) at the full-data mean, (8,)
    excess = {}
    for batch in (16, 64, 256, 1024):
        per_batch = torch.stack([penalty(c) for c in h.split(batch)]).mean().item()
        excess[batch] = per_batch - full
        assert excess[batch] >= 0, batch
        # second-order (delta-method) prediction, with the finite-population factor of a partition
        predicted = float((curvature * var).sum()) / (2 * batch) * (n - batch) / (n - 1)
        assert excess[batch] == pytest.approx(predicted, rel=0.2), (batch, excess[batch], predicted)
    assert excess[16] > 3 * excess[64] > 9 * excess[256]  # shrinks as 1/B


def test_top_k_keeps_k_largest_and_their_gradients():
    h = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.7, 0.2, 0.8, 0.0]], requires_grad=True)
    kept = top_k(h, 2)
    assert torch.equal(kept.detach(), torch.tensor([[0.0, 0.9, 0.5, 0.0], [0.7, 0.0, 0.8, 0.0]]))
    kept.sum().backward()
    assert torch.equal(h.grad, torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="k-sparse"):
        top_k(h, 5)


def test_k_sparse_code_has_k_active_units():
    model = sparse_ae(k=5)
    code = model.encode(torch.rand(8, *SHAPE))  # (8, 64)
    assert ((code != 0).sum(1) == 5).all()


def test_kl_target_reached_on_real_digits_and_not_without_penalty():
    """Ng's KL penalty with ρ = 0.05 pulls the mean activation to the target within a short run;
    the same net without the penalty saturates far above it."""
    sparse = sparse_ae(KLSparsity(target=0.05, beta=0.1))
    trainer, dm = fit(sparse, steps=250)
    rho_hat = mean_activation(sparse, dm)
    assert 0.03 <= rho_hat <= 0.08, rho_hat
    # the module logs what it measures on the training batches
    assert 0.03 <= float(trainer.callback_metrics["train/mean_activation"]) <= 0.12
    assert "train/active_fraction" in trainer.callback_metrics
    assert float(trainer.callback_metrics["train/sparsity"]) > 0

    plain = sparse_ae(None)
    _, dm = fit(plain, steps=250)
    assert mean_activation(plain, dm) > 0.2


def test_l1_penalty_lowers_activity():
    l1 = sparse_ae(L1Sparsity(weight=0.01))
    trainer, dm = fit(l1, steps=150, train_size=512)
    plain = sparse_ae(None)
    trainer_plain, _ = fit(plain, steps=150, train_size=512)
    assert mean_activation(l1, dm) < 0.5 * mean_activation(plain, dm)
    assert float(trainer.callback_metrics["train/active_fraction"]) < float(
        trainer_plain.callback_metrics["train/active_fraction"])


def test_kl_needs_sigmoid_units():
    model = sparse_ae(KLSparsity(0.05), code_activation=None)
    with pytest.raises(ValueError, match="sigmoid hidden units"):
        fit(model, steps=1, train_size=64)


def test_checkpoint_loads_weights_only(tmp_path):
    model = sparse_ae(KLSparsity(0.05, beta=0.2), k=10)
    trainer, _ = fit(model, steps=2, train_size=128, tmp_path=tmp_path)
    path = tmp_path / "sparse.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["k"] == 10
    assert "sparsity" not in ckpt["hyper_parameters"]


@pytest.mark.parametrize("bad", [dict(k=0), dict(sparsity=None, k=-1)])
def test_bad_k_fails_at_construction(bad):
    with pytest.raises(ValueError, match="k-sparse"):
        sparse_ae(**bad)
