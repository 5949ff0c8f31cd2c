"""Semi-supervised MNIST: the labelled/unlabelled split and mixed batches, M2's bounds, the SS-AAE's phases.

The configs' fast_dev_run, checkpoint round trip (``weights_only=True``) and ``load_from_checkpoint`` are the
contract tests of tests/test_configs.py (``-k "m2_mnist or ssaae_mnist"``).
"""

from __future__ import annotations

import logging
import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import OptimizerSteps

from ae_lightning.data import MNISTDataModule
from ae_lightning.data.common import MixedBatches
from ae_lightning.distributions import DiagonalGaussian
from ae_lightning.models import M2, SemiSupervisedAAE
from ae_lightning.nets import ConditionalDecoder, ConditionalEncoder, MLPDecoder, MLPDiscriminator, MLPEncoder
from ae_lightning.priors import mmd

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "ae_lightning.data.mnist"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(**{**dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1,
                               limit_val_batches=0), **kw})


def _semi(n: int = 5, batch_size: int = 20, share: float = 0.25, seed: int = 0, **kw) -> MNISTDataModule:
    dm = MNISTDataModule(root=None, batch_size=batch_size, labelled_per_class=n, labelled_batch_share=share,
                         seed=seed, **kw)
    dm.setup("fit")
    return dm


# --- data ---------------------------------------------------------------------------------------
def test_exactly_n_labelled_per_class_seeded_and_evaluation_keeps_labels():
    dm = _semi(n=5)
    labels = dm.train_set.labels
    assert torch.equal(torch.bincount(labels[labels >= 0], minlength=10), torch.full((10,), 5))
    assert int((labels == -1).sum()) == len(labels) - 50
    assert (dm.val_set.labels >= 0).all() and (dm.test_set.labels >= 0).all()
    # the labelled pool is a function of the seed
    again, other = _semi(n=5), _semi(n=5, seed=1)
    assert (again.labelled_indices == dm.labelled_indices).all()
    assert not (other.labelled_indices == dm.labelled_indices).all()
    # the kept labels are the true ones
    plain = MNISTDataModule(root=None)
    plain.setup("fit")
    keep = torch.as_tensor(dm.labelled_indices)
    assert torch.equal(labels[keep], plain.train_set.labels[keep])


def test_every_batch_mixes_the_labelled_pool_with_unlabelled_images():
    dm = _semi(n=5, batch_size=20, share=0.25)
    assert dm.labelled_per_batch == 5
    batches = list(dm.train_dataloader())
    unlabelled_seen = []
    for x, y in batches:
        assert x.shape[1:] == SHAPE
        assert int((y >= 0).sum()) == 5 and (y[:5] >= 0).all()
        unlabelled_seen.append(y[5:])
    # an epoch is one pass over the unlabelled images: each exactly once
    assert len(batches) == math.ceil(len(dm.unlabelled_indices) / 15)
    epoch = MixedBatches(dm.labelled_indices, dm.unlabelled_indices, 20, 5, 0).batches(0)
    assert sorted(i for b in epoch for i in b[5:]) == sorted(dm.unlabelled_indices.tolist())
    assert set(i for b in epoch for i in b[:5]) <= set(dm.labelled_indices.tolist())
    assert (torch.cat(unlabelled_seen) == -1).all()


def test_mixed_batches_resume_mid_epoch_and_reject_bad_shares():
    full = MixedBatches(range(10), range(10, 100), 10, 2, seed=3, position=lambda: (1, 0))
    resumed = MixedBatches(range(10), range(10, 100), 10, 2, seed=3, position=lambda: (1, 4))
    assert list(resumed) == list(full)[4:]
    assert list(full) != list(MixedBatches(range(10), range(10, 100), 10, 2, seed=3, position=lambda: (2, 0)))
    with pytest.raises(ValueError, match="labelled_per_batch"):
        MixedBatches(range(10), range(10, 100), 10, 10, seed=0)
    with pytest.raises(ValueError, match="labelled_batch_share"):
        MNISTDataModule(labelled_per_class=5, labelled_batch_share=1.0)
    with pytest.raises(ValueError, match="raise train_size"):
        _semi(n=5, train_size=60)


# --- M2 -----------------------------------------------------------------------------------------
def _m2(alpha: float = 0.5, latent: int = 4, **kw) -> M2:
    enc = ConditionalEncoder(MLPEncoder(SHAPE, [32], activation="relu", code_activation="relu"), 10, 2 * latent)
    dec = ConditionalDecoder(MLPDecoder(SHAPE, [32, latent + 10], activation="relu", output_activation=None), 10)
    clf = MLPEncoder(SHAPE, [32, 10], activation="relu", code_activation=None)
    return M2(enc, dec, clf, latent_dim=latent, alpha=alpha, **kw)


def _negative_elbo_loop(model: M2, x: torch.Tensor) -> torch.Tensor:
    """−ELBO(x, y) (B, K) class by class (z at the posterior mean, as the patched rsample gives)."""
    cols = []
    for k in range(10):
        y = F.one_hot(torch.full((len(x),), k), 10).float()
        q = model.posterior(x, y)
        log_px = model.likelihood.log_prob(model.decoder_params(q.mean, y), x)
        cols.append(-log_px + q.kl() + math.log(10))
    return torch.stack(cols, 1)


def test_m2_unlabelled_bound_marginalises_every_class_and_adds_the_entropy(tiny_mnist, monkeypatch):
    monkeypatch.setattr(DiagonalGaussian, "rsample", lambda self, num_samples=None, generator=None: self.mean)
    torch.manual_seed(0)
    model = _m2(alpha=0.5).eval()
    x, y = tiny_mnist.val_set.images[:6], tiny_mnist.val_set.labels[:6]
    labels = torch.tensor([-1, -1, -1, y[3], y[4], y[5]])  # three unlabelled, three labelled
    with torch.no_grad():
        out = model(x, model.condition((x, labels)))
        losses = model.compute_losses(out, x)
        neg = _negative_elbo_loop(model, x)  # (B, K)
        q = model.classify(x).softmax(1)
    entropy = -(q * q.log()).sum(1)
    unlabelled = (q[:3] * neg[:3]).sum(1) - entropy[:3]  # Σ_y q(y|x)(−ELBO(x, y)) − H(q(y|x))
    labelled = neg[3:].gather(1, y[3:, None]).squeeze(1)  # −ELBO(x, y)
    ce = F.cross_entropy(model.classify(x[3:]), y[3:])
    expected = torch.cat([unlabelled, labelled]).mean() + 0.5 * ce
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(losses["elbo"], -torch.cat([unlabelled, labelled]).mean(), rtol=1e-5, atol=1e-4)
    assert {"accuracy", "error"} <= set(losses)


def test_m2_class_rows_share_their_image_noise(tiny_mnist):
    """Nets that ignore y must give every class the same bound: with an ε drawn per (image, class) row the classes
    differed by sampling noise alone (~10 nats per image with the config's nets), which the unlabelled bound turned
    into a random pull on q(y | x)."""
    torch.manual_seed(0)
    model = _m2().train()
    with torch.no_grad():  # cut y out of both nets: the encoder head's and the decoder's first layer's label columns
        model.encoder.head.weight[:, -10:] = 0
        model.decoder.net.linears[0].weight[:, -10:] = 0
        x = tiny_mnist.val_set.images[:5]
        out = model(x)  # training mode: fresh noise
        losses = model.compute_losses(out, x)
    params = out.class_params  # (K, B, C, H, W)
    torch.testing.assert_close(params, params[:1].expand_as(params))
    assert float(losses["recon"]) > 0
    log_px = model.likelihood.log_prob(params, x)  # (K, B): the same for every class
    torch.testing.assert_close(log_px, log_px[:1].expand_as(log_px))


def test_m2_few_steps_lower_the_loss_and_log_accuracy(tiny_mnist):
    dm = _semi(n=5, batch_size=32, share=0.25, train_size=400)
    torch.manual_seed(0)
    model = _m2(optimizer=partial(torch.optim.Adam, lr=3e-3))
    x, y = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = model.compute_losses(model(x, model.condition((x, y))), x)["loss"]
    trainer = _trainer(max_epochs=2, limit_val_batches=2)
    trainer.fit(model, dm)
    with torch.no_grad():
        after = model.compute_losses(model(x, model.condition((x, y))), x)["loss"]
    assert after < 0.8 * before, (before, after)
    metrics = trainer.callback_metrics
    assert 0 <= float(metrics["val/accuracy"]) <= 1 and "train/ce" in metrics
    assert model.encode(x[:3]).shape == (3, 4)  # no label: the classifier's guess picks the class


def test_m2_rejects_the_unsupported_estimators_and_a_wrong_classifier():
    with pytest.raises(ValueError, match="test_samples"):
        _m2(test_samples=10)
    enc = ConditionalEncoder(MLPEncoder(SHAPE, [8], code_activation="relu"), 10, 8)
    dec = ConditionalDecoder(MLPDecoder(SHAPE, [8, 14], output_activation=None), 10)
    with pytest.raises(ValueError, match="last width to 10"):
        M2(enc, dec, MLPEncoder(SHAPE, [8, 5], code_activation=None), latent_dim=4)


# --- the semi-supervised AAE --------------------------------------------------------------------
def _ssaae(style: int = 2, **kw) -> SemiSupervisedAAE:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    return SemiSupervisedAAE(
        MLPEncoder(SHAPE, [64, 10 + style], activation="relu", code_activation=None),
        MLPDecoder(SHAPE, [64, 10 + style], activation="relu"),
        MLPDiscriminator(style, [32]), MLPDiscriminator(10, [32]), num_classes=10,
        optimizer=adam, discriminator_optimizer=adam, generator_optimizer=adam, supervised_optimizer=adam, **kw)


def test_ssaae_phases_step_the_right_optimisers():
    """Per batch: reconstruction (encoder + decoder), both discriminators together, the encoder as generator,
    then the encoder on the labelled cross-entropy; the four terms are logged."""
    torch.manual_seed(0)
    steps = OptimizerSteps()
    trainer = _trainer(max_epochs=1, limit_train_batches=2, callbacks=[steps])
    trainer.fit(_ssaae(), _semi(n=5, batch_size=20))
    recon, disc = (0, {"encoder", "decoder"}), (1, {"discriminator", "category_discriminator"})
    gen, sup = (2, {"encoder"}), (3, {"encoder"})
    assert steps.moves() == [recon, disc, gen, sup] * 2
    assert {"train/recon", "train/d_loss", "train/g_loss", "train/ce"} <= set(trainer.callback_metrics)


def test_ssaae_checks_the_code_sizes():
    with pytest.raises(ValueError, match="need 12"):
        SemiSupervisedAAE(MLPEncoder(SHAPE, [8, 12]), MLPDecoder(SHAPE, [8, 11]), MLPDiscriminator(2, [8]),
                          MLPDiscriminator(10, [8]), num_classes=10)


def test_ssaae_categorical_code_matches_the_prior():
    """After a short fit the categorical code is much closer to Cat(10) one-hot samples (MMD² to a prior sample)
    than the untrained encoder's, and every class is used (the argmax histogram's entropy near log 10)."""
    dm = _semi(n=10, batch_size=50, share=0.5)
    x = dm.val_set.images  # (300, 1, 28, 28)
    onehot = F.one_hot(torch.randint(10, (len(x),), generator=torch.Generator().manual_seed(0)), 10).float()

    def stats(model):
        model.eval()
        with torch.no_grad():
            y = model.encode(x)[:, :10]  # (N, 10) softmax code
        model.train()
        hist = torch.bincount(y.argmax(1), minlength=10).float() / len(y)
        used = -(hist[hist > 0] * hist[hist > 0].log()).sum()
        return mmd(y, onehot), float(used)

    L.seed_everything(0)
    model = _ssaae()
    before, _ = stats(model)
    _trainer(max_epochs=3).fit(model, dm)
    after, used = stats(model)
    assert after < 0.25 * before, (before, after)
    assert used > 0.85 * math.log(10), used


def test_benchmark_reports_the_supervised_pixel_baseline_on_the_same_labels(tmp_path):
    """semisupervised.py's table has the supervised baseline (softmax regression on the same 100 labelled digits'
    pixels, L2 chosen on val) beside the methods, and its verdict says which method beats it."""
    from conftest import run_benchmark

    m1 = [{"name": "M1 + probe", "config": "vae_mnist", "method": "probe"}]
    results = run_benchmark("semisupervised", tmp_path, {"models": m1, "epochs": {"M1 + probe": 1}, "train_size": 1000,
                                                         "baseline.l2": [1.0e-2, 1.0], "baseline.max_iter": 50})
    rows = {r["model"]: r for r in results.rows}
    base = rows["softmax regression, 100 labelled digits' pixels"]
    assert base["labels"] == 100 and 0 < base["test_error"] < 0.9 and "L2 " in base["config"]
    md = (tmp_path / "semisupervised_mnist.md").read_text()
    assert f"against the supervised baseline on the same 100 labels ({100 * base['test_error']:.1f} %)" in md
    beats = rows["M1 + probe"]["test_error"] < base["test_error"]
    assert ("M1 + probe beat it" in md) == beats and ("no method beats it" in md) == (not beats)
