"""M2's objective term by term against Kingma et al. 2014 (arXiv 1406.5298, Eqs. 6–9) and their code
(dpkingma/nips14-ssl, ``learn_yz_x_ss.py``, ``anglepy/models/VAE_YZ_X.py``).

Each test computes one term independently of :class:`~ae_lightning.models.M2`'s batched code path — per image
and per class in Python loops, with ``torch.distributions`` for the densities — from the same nets and the same
noise ε, and compares it with what the model optimises:

- labelled bound ``−L(x, y) = −E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) − log q(z|x,y)]`` (Eq. 6);
- the prior ``log p(y) = −log K`` (uniform, as Kingma's ``uniform_y=True``);
- unlabelled bound ``U(x) = Σ_y q(y|x)(−L(x, y)) − H(q(y|x))`` (Eq. 7), its gradient reaching ``q(y|x)``;
- classification term ``α · E_labelled[−log q(y|x)]`` (Eq. 9) over the labelled count, and the α mapping:
  Kingma's per-minibatch objective with ``beta = alpha·N/N_l`` equals ours with the same α (0.1);
- the batch mean: ``(Σ_labelled −L + Σ_unlabelled U) / B``, as their code divides a minibatch's sum by its size;
- labelled rows do not enter U (no entropy, no classifier gradient without α);
- KL in closed form, Bernoulli likelihood on logits, dynamic binarisation, no batch statistics in the nets,
  and the labelled/unlabelled batch composition of their code (1 labelled + ~500 unlabelled per minibatch).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from ae_lightning.config import instantiate, link_image_shape
from ae_lightning.data import MNISTDataModule
from ae_lightning.data.common import MixedBatches
from ae_lightning.distributions import BernoulliLikelihood, DiagonalGaussian
from ae_lightning.models import M2
from ae_lightning.nets import ConditionalDecoder, ConditionalEncoder, MLPDecoder, MLPEncoder

SHAPE = (1, 28, 28)
LATENT = 3


def tiny_m2(alpha: float = 0.0, k: int = 10) -> M2:
    torch.manual_seed(0)
    enc = ConditionalEncoder(MLPEncoder(SHAPE, [16], activation="relu", code_activation="relu"), k, 2 * LATENT)
    dec = ConditionalDecoder(MLPDecoder(SHAPE, [16, LATENT + k], activation="relu", output_activation=None), k)
    clf = MLPEncoder(SHAPE, [16, k], activation="relu", code_activation=None)
    return M2(enc, dec, clf, latent_dim=LATENT, alpha=alpha)


@pytest.fixture
def fixed_noise(monkeypatch):
    """ε drawn once per test; M2's ``forward`` draws its per-image noise from a standard normal's ``rsample``."""
    eps = {}

    def rsample(self, num_samples=None, generator=None):
        if bool((self.mean == 0).all() and (self.log_var == 0).all()):  # the standard normal: M2's ε (B, D)
            if self.mean.shape not in eps:
                eps[self.mean.shape] = torch.randn(self.mean.shape, generator=torch.Generator().manual_seed(5))
            return eps[self.mean.shape]
        raise AssertionError("M2 draws z only through its shared ε")

    monkeypatch.setattr(DiagonalGaussian, "rsample", rsample)
    return eps


def batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` binarised digits and their true labels (the embedded real MNIST digits)."""
    dm = MNISTDataModule(root=None, train_size=64)
    dm.setup("fit")
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(dm.val_set.images[:n], generator=g)  # (n, 1, 28, 28) in {0, 1}
    return x, dm.val_set.labels[:n]


# --- the reference: one image, one class at a time ----------------------------------------------------
def neg_bound(model: M2, x: torch.Tensor, y: int, eps: torch.Tensor) -> torch.Tensor:
    """``−L(x, y)`` for one image (1, C, H, W), class ``y``, noise ε (D,): a one-sample estimate with the KL
    in closed form (Kingma's ``gaussianmarg``), ``log p(y) = −log K``."""
    k = model.label_dim
    onehot = F.one_hot(torch.tensor([y]), k).float()
    mean, log_var = model.encoder(x, onehot)[0].chunk(2)
    std = (0.5 * log_var).exp()
    q = Independent(Normal(mean, std), 1)
    prior = Independent(Normal(torch.zeros(LATENT), torch.ones(LATENT)), 1)
    z = mean + std * eps
    logits = model.decoder(z[None], onehot)[0]  # (C, H, W)
    log_px = Independent(Bernoulli(logits=logits), 3).log_prob(x[0])
    log_py = Categorical(probs=torch.full((k,), 1.0 / k)).log_prob(torch.tensor(y))
    return -(log_px + log_py - kl_divergence(q, prior))


def neg_unlabelled_bound(model: M2, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``U(x) = Σ_y q(y|x)(−L(x, y)) − H(q(y|x))`` for one image."""
    q_y = Categorical(logits=model.classifier(x)[0])
    terms = torch.stack([neg_bound(model, x, y, eps) for y in range(model.label_dim)])  # (K,)
    return (q_y.probs * terms).sum() - q_y.entropy()


def reference_loss(model: M2, x, labels, eps) -> torch.Tensor:
    rows = [neg_bound(model, x[i: i + 1], int(labels[i]), eps[i]) if labels[i] >= 0
            else neg_unlabelled_bound(model, x[i: i + 1], eps[i]) for i in range(len(x))]
    labelled = labels >= 0
    ce = torch.stack([-Categorical(logits=model.classifier(x[i: i + 1])[0]).log_prob(labels[i])
                      for i in range(len(x)) if labelled[i]]).mean() if labelled.any() else torch.zeros(())
    return torch.stack(rows).mean() + model.hparams.alpha * ce


def model_losses(model: M2, x, labels) -> dict[str, torch.Tensor]:
    out = model(x, model.condition((x, labels)))
    return model.compute_losses(out, x)


# --- the terms -----------------------------------------------------------------------------------------
def test_labelled_bound_is_eq6(fixed_noise):
    """Labelled images: loss = mean −L(x, y) (alpha 0); ``elbo`` = L; ``recon``/``kl`` are its two parts."""
    model = tiny_m2().train()
    x, y = batch(5)
    losses = model_losses(model, x, y)
    eps = fixed_noise[(5, LATENT)]
    expected = torch.stack([neg_bound(model, x[i: i + 1], int(y[i]), eps[i]) for i in range(5)])
    torch.testing.assert_close(losses["loss"], expected.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(losses["elbo"], -expected.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(losses["recon"] + losses["kl"] + math.log(10), expected.mean(), rtol=1e-5, atol=1e-4)
    assert float(losses["entropy"].detach()) == 0  # no H(q(y|x)) for labelled rows; ce is logged, weighted by α = 0


@pytest.mark.parametrize("k", [3, 10])
def test_prior_of_y_is_uniform_log_k(fixed_noise, k):
    """``−log p(y) = log K`` enters every row once, labelled or not (Kingma: ``uniform_y=True``)."""
    model = tiny_m2(k=k).train()
    x, y = batch(4)
    labels = torch.tensor([int(y[0]) % k, -1, int(y[2]) % k, -1])
    losses = model_losses(model, x, labels)
    rest = losses["recon"] + losses["kl"] - losses["entropy"]  # per-image means of the other terms
    torch.testing.assert_close(losses["loss"] - rest, torch.tensor(math.log(k)), rtol=0, atol=2e-4)  # of ~550 nats


def test_unlabelled_bound_is_eq7(fixed_noise):
    """Unlabelled images: U(x) = Σ_y q(y|x)(−L(x, y)) − H(q(y|x)), every class, the same ε for each class."""
    model = tiny_m2().train()
    x, _ = batch(4)
    labels = torch.full((4,), -1)
    losses = model_losses(model, x, labels)
    eps = fixed_noise[(4, LATENT)]
    expected = torch.stack([neg_unlabelled_bound(model, x[i: i + 1], eps[i]) for i in range(4)])
    torch.testing.assert_close(losses["loss"], expected.mean(), rtol=1e-5, atol=1e-4)
    entropy = torch.stack([Categorical(logits=model.classifier(x[i: i + 1])[0]).entropy() for i in range(4)])
    torch.testing.assert_close(losses["entropy"], entropy.mean(), rtol=1e-5, atol=1e-6)


def test_unlabelled_bound_trains_the_classifier_and_labelled_rows_do_not_enter_it(fixed_noise):
    """∂U/∂(classifier) is the reference's (gradients flow through q(y|x) in U); with α = 0 a labelled row gives the
    classifier no gradient at all (it contributes −L(x, y) only, not U)."""
    model = tiny_m2(alpha=0.0).train()
    x, y = batch(4)
    clf = list(model.classifier.parameters())
    unlabelled = torch.full((4,), -1)
    got = torch.autograd.grad(model_losses(model, x, unlabelled)["loss"], clf)
    want = torch.autograd.grad(reference_loss(model, x, unlabelled, fixed_noise[(4, LATENT)]), clf)
    assert sum(float(g.abs().sum()) for g in got) > 0
    for g, w in zip(got, want, strict=True):  # float32 sums in another order (threads): ~1e-5 of the gradients' scale
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3 * float(w.abs().max()))
    labelled = model_losses(model, x, y)["loss"]
    grads = torch.autograd.grad(labelled, clf, allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0 for g in grads)


def test_classification_term_is_alpha_times_the_mean_over_labelled_rows(fixed_noise):
    """Eq. 9: loss(α) − loss(0) = α · mean over the *labelled* rows of −log q(y|x) (3 of 8 here, not 8)."""
    x, y = batch(8)
    labels = torch.tensor([int(y[0]), -1, -1, int(y[3]), -1, -1, int(y[6]), -1])
    a = 0.7
    with torch.no_grad():
        base = model_losses(tiny_m2(alpha=0.0).train(), x, labels)
        weighted = model_losses(tiny_m2(alpha=a).train(), x, labels)
        model = tiny_m2()
        idx = torch.tensor([0, 3, 6])
        ce = -F.log_softmax(model.classifier(x[idx]), 1).gather(1, labels[idx, None]).mean()
    torch.testing.assert_close(weighted["loss"] - base["loss"], a * ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weighted["ce"], ce, rtol=1e-5, atol=1e-6)


def test_mixed_batch_is_the_sum_over_rows_divided_by_the_batch_size(fixed_noise):
    """A mixed batch: ``(Σ_labelled −L + Σ_unlabelled U) / B + α · mean_labelled CE``, values and gradients of
    every net (encoder, decoder, classifier)."""
    model = tiny_m2(alpha=0.3).train()
    x, y = batch(6)
    labels = torch.tensor([int(y[0]), -1, int(y[2]), -1, -1, int(y[5])])
    loss = model_losses(model, x, labels)["loss"]
    ref = reference_loss(model, x, labels, fixed_noise[(6, LATENT)])
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    params = list(model.parameters())
    for g, w in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_alpha_is_kingma_code_alpha_on_their_minibatch_composition(fixed_noise):
    """Kingma's ``learn_yz_x_ss.py``: per minibatch (``n_l / n_mb`` labelled, ``n_u / n_mb`` unlabelled images),
    ``f = −[(Σ_l (L + β log q(y|x)) + Σ_u (−U)) · n_mb + log p(θ)] / n_tot`` with ``β = α · n_tot / n_l``.
    On their composition (here 1 + 3 images, 2 minibatches) and without the weight prior, that is our loss with
    the same α: the paper's α = 0.1·N on a sum over N images is ``alpha: 0.1`` here."""
    alpha, n_l, n_u, n_mb = 0.1, 2, 6, 2
    n_tot = n_l + n_u
    model = tiny_m2(alpha=alpha).train()
    x, y = batch(4)
    labels = torch.tensor([int(y[0]), -1, -1, -1])  # n_l / n_mb = 1 labelled, n_u / n_mb = 3 unlabelled
    with torch.no_grad():
        ours = model_losses(model, x, labels)["loss"]
        eps = fixed_noise[(4, LATENT)]
        L_l = -neg_bound(model, x[:1], int(y[0]), eps[0])
        log_qy = F.log_softmax(model.classifier(x[:1]), 1)[0, int(y[0])]
        U = torch.stack([neg_unlabelled_bound(model, x[i: i + 1], eps[i]) for i in range(1, 4)])
        beta = alpha * n_tot / n_l
        f = -((L_l + beta * log_qy) + (-U).sum()) * n_mb / n_tot
    torch.testing.assert_close(ours, f, rtol=1e-5, atol=1e-4)


# --- the pieces under the terms --------------------------------------------------------------------------
def test_kl_is_the_closed_form_of_the_monte_carlo_kl():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    q = DiagonalGaussian(mean, log_var)
    exact = kl_divergence(Independent(Normal(mean, (0.5 * log_var).exp()), 1),
                          Independent(Normal(torch.zeros(5), torch.ones(5)), 1))
    torch.testing.assert_close(q.kl(), exact, rtol=1e-5, atol=1e-5)
    z = mean + (0.5 * log_var).exp() * torch.randn(200_000, 3, 5, generator=g)
    monte_carlo = (q.log_prob(z) - DiagonalGaussian.standard_normal(3, 5).log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, exact, rtol=0.03, atol=0.03)


def test_bernoulli_likelihood_is_the_binary_log_density_of_the_logits():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(2, 1, 28, 28, generator=g)
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3), generator=g)
    p = torch.sigmoid(logits.double())
    manual = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(BernoulliLikelihood().log_prob(logits, x).double(), manual, rtol=1e-5, atol=1e-3)


def test_dynamic_binarisation_redraws_binary_pixels_each_time():
    dm = MNISTDataModule(root=None, binarize=True, train_size=64, batch_size=64)
    dm.setup("fit")
    torch.manual_seed(0)
    a, b = dm.train_set[list(range(64))][0], dm.train_set[list(range(64))][0]
    grey = dm.train_set.images[:64]
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    draws = torch.stack([dm.train_set[list(range(64))][0] for _ in range(200)]).mean(0)
    assert float((draws - grey).abs().max()) < 0.15  # E[x̃] = the grey level


@pytest.mark.parametrize("config", ["configs/m2_mnist.yaml", "configs/full/m2_mnist.yaml",
                                    "configs/full/m1m2_mnist.yaml"])
def test_config_nets_have_no_batch_statistics_and_linear_output_heads(config):
    """The K·B class rows of one batch must not share statistics (no batch norm); q(y|x) ends in logits, q(z|x,y) in
    unconstrained means/log-variances, p(x|y,z) in the likelihood's raw parameters."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / config
    if not path.is_file():
        pytest.skip(f"{config} not in this tree")
    cfg = yaml.safe_load(path.read_text())  # M1+M2's data need a trained VAE: the codes' shape is set here
    link_image_shape(cfg["model"], (1, 1, 50) if "m1m2" in config else SHAPE)
    model = instantiate(cfg["model"], torch.nn.Module)
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    assert not [m for m in model.modules() if isinstance(m, norms)]
    assert isinstance(model.classifier.activations[-1], torch.nn.Identity)
    assert isinstance(model.encoder.head, torch.nn.Linear)
    assert isinstance(model.decoder.net.activations[-1], torch.nn.Identity)


def test_kingma_batch_composition_one_label_per_minibatch_each_seen_once_an_epoch():
    """Their 100-label run: 100 minibatches of 1 labelled + 499 unlabelled digits. ``labelled_batch_share`` reproduces
    it, and the labelled pool is cycled evenly (every label the same number of times per epoch, ±1)."""
    labelled, unlabelled = list(range(100)), list(range(100, 100 + 49_900))
    sampler = MixedBatches(labelled, unlabelled, batch_size=500, labelled_per_batch=1, seed=0)
    batches = sampler.batches(0)
    assert len(batches) == 100 and all(b[0] < 100 and min(b[1:]) >= 100 for b in batches)
    assert sorted(b[0] for b in batches) == labelled
    dm = MNISTDataModule(root=None, labelled_per_class=10, batch_size=500, labelled_batch_share=0.002)
    assert dm.labelled_per_batch == 1
    counts = torch.bincount(torch.tensor([i for b in MixedBatches(range(7), range(7, 400), 10, 3, 0).batches(0)
                                          for i in b[:3]]), minlength=7)
    assert int(counts.max() - counts.min()) <= 1, counts  # whole cycles of fresh permutations, the last one cut
