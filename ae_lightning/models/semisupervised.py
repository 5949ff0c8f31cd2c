"""Semi-supervised classification with few labels: Kingma et al.'s M2 and Makhzani et al.'s semi-supervised AAE.

Both train on batches that mix a few labelled images with unlabelled ones (label ``-1``; see
``MNISTDataModule(labelled_per_class=...)``) and classify with their own ``q(y | x)``, exposed as
:meth:`classify` (logits ``(B, K)``). Outside training they log ``{stage}/accuracy`` and ``{stage}/error``
of ``argmax q(y | x)`` over the batch's labelled images (validation and test keep every label).

**M2** (Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised learning with deep generative models"):
a conditional VAE ``p(x | y, z) p(y) p(z)`` with a classifier ``q(y | x)`` and an encoder ``q(z | x, y)``.
A labelled image contributes ``−ELBO(x, y) + α · CE(q(y|x), y)``; an unlabelled one ``U(x) = Σ_y q(y|x)
(−ELBO(x, y)) − H(q(y|x))``, the sum over **every** class computed in one batched pass (each image is paired
with each of the ``K`` classes: ``K·B`` rows through the encoder and decoder). ``p(y)`` is uniform.

**Semi-supervised AAE** (Makhzani et al. 2015, "Adversarial autoencoders", §5): one encoder gives a softmax
categorical code ``y`` and a Gaussian style code ``z``; the decoder sees ``[y, z]``. Per batch, as in the
paper: (1) reconstruction (encoder + decoder); (2) regularisation: two discriminators (``y`` against one-hot
``Cat(K)`` samples, ``z`` against ``N(0, I)``) step, then the encoder steps as their generator; (3) the
encoder's ``y`` head steps on the cross-entropy of the batch's labelled images. Phases 1–2 are
:class:`~ae_lightning.models.AdversarialAutoencoder`'s, with the two discriminators seen as one (two logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ae_lightning.batch import images_of, labels_of
from ae_lightning.distributions import DiagonalGaussian
from ae_lightning.models.adversarial import AdversarialAutoencoder
from ae_lightning.models.base import AutoencoderOutput
from ae_lightning.models.vae import ConditionalVAE, VAEOutput
from ae_lightning.optim import OptimizerCallable
from ae_lightning.priors import GaussianPrior, Prior


# --- pieces both models share ------------------------------------------------------------------------
def semisupervised_labels(batch, num_classes: int, who: str, check_range: bool) -> torch.Tensor | None:
    """The batch's class labels ``(B,)``, ``-1`` marking unlabelled images; ``None`` for bare images.

    ``check_range`` reads the labels on the host (a device sync): the models check each dataset's first batch.
    """
    labels = labels_of(batch)
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.ndim != 1:
        raise ValueError(f"{who} needs integer class labels (B,) with -1 for unlabelled images, got "
                         f"{type(labels).__name__} {getattr(labels, 'shape', '')}; "
                         "fix: use MNISTDataModule(labelled_per_class=N)")
    if check_range and labels.numel() and (labels.min() < -1 or labels.max() >= num_classes):
        raise ValueError(f"{who}: labels must lie in [0, {num_classes}) or be -1 (unlabelled), got "
                         f"{labels.min().item()}..{labels.max().item()}; fix: set num_classes / label_dim to the data's")
    return labels


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``accuracy`` and ``error`` of ``argmax logits`` (B, K) over the labelled rows (``labels >= 0``); an
    evaluation metric (validation and test sets carry every label), 0 for a batch with no labelled image."""
    if labels is None:
        return {}
    labelled = labels >= 0  # (B,)
    correct = ((logits.argmax(1) == labels) & labelled).sum()
    accuracy = correct.float() / labelled.sum().clamp(min=1)
    return {"accuracy": accuracy, "error": 1 - accuracy}


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled rows (``labels >= 0``) of ``logits`` (B, K); 0 when there are none
    (no host sync to find out)."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum")
    return total / (labels >= 0).sum().clamp(min=1)


# --- M2 --------------------------------------------------------------------------------------------------
@dataclass
class M2Output(VAEOutput):
    """Adds ``logits`` of ``q(y | x)`` (B, K) and ``class_params``: the decoder's output for every image paired with
    every class (K, B, C, H, W); ``posterior`` is ``q(z | x, y)`` over those ``K·B`` rows (row ``k·B + b`` pairs
    image ``b`` with class ``k``). ``reconstruction``/``code``/``params`` are those of each image's own class (its
    label, else ``argmax q(y | x)``)."""

    logits: torch.Tensor | None = None
    class_params: torch.Tensor | None = None


class M2(ConditionalVAE):
    """Kingma et al.'s M2 on the conditional VAE: nets ``q(z | x, y)`` / ``p(x | y, z)`` as for
    :class:`ConditionalVAE`, plus a ``classifier`` net ``q(y | x)``.

    Args:
        encoder, decoder: label-conditioned nets (:class:`~ae_lightning.nets.ConditionalEncoder` /
            :class:`~ae_lightning.nets.ConditionalDecoder`) with ``label_dim = K`` classes.
        classifier: images → ``(B, K)`` logits of ``q(y | x)`` (e.g. an MLPEncoder with ``code_activation: null``).
        latent_dim: size of ``z``.
        alpha: weight of the labelled images' mean cross-entropy against the per-image ELBO terms. Kingma et al.
            weight ``α = 0.1·N`` on an objective summed over the ``N`` training images, whose classification term
            is a mean over the labelled ones; divided by ``N`` that is ``alpha = 0.1`` here (their code,
            ``learn_yz_x_ss.py``, scales each labelled image's ``log q(y|x)`` by ``0.1 · N / N_labelled`` in a
            per-image mean: the same weight).
        image_metrics: score reconstructions by PSNR/SSIM outside training; ``false`` for data that are not images
            (M1+M2: M2 models a VAE's latent codes, :class:`~ae_lightning.data.MNISTCodesDataModule`).
        Other arguments: :class:`~ae_lightning.models.VAE`'s (``beta``, ``warmup_steps``, the likelihood,
        the optimiser). ``free_bits`` and the importance-weighted ``test_samples`` are not supported (both would
        need the sum over classes): they must stay 0.

    The loss of a batch is ``(Σ_labelled −ELBO(x, y) + Σ_unlabelled U(x)) / B + alpha · mean_labelled CE``;
    ``elbo`` logs the per-image bound (``ELBO(x, y)`` for labelled images, ``−U(x)`` for unlabelled ones) in nats.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, classifier: nn.Module, latent_dim: int,
                 alpha: float = 0.1, test_samples: int = 0, image_metrics: bool = True, **kwargs) -> None:
        super().__init__(encoder, decoder, latent_dim, test_samples=test_samples, **kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        if self.hparams.free_bits > 0 or self.hparams.test_samples > 0:
            raise ValueError("M2 supports neither free_bits nor test_samples (both would need the sum over classes); "
                             "fix: leave them at 0")
        classes = getattr(classifier, "code_dim", None)
        if classes is not None and classes != self.label_dim:
            raise ValueError(f"the classifier outputs {classes} logits but the nets are conditioned on "
                             f"label_dim={self.label_dim} classes; fix: set the classifier's last width to {self.label_dim}")
        self.classifier = classifier

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y | x)`` (B, K), float32."""
        return self.classifier(x).float()

    def update_image_metrics(self, stage: str, reconstruction: torch.Tensor, x: torch.Tensor) -> None:
        if self.hparams.image_metrics:
            super().update_image_metrics(stage, reconstruction, x)

    def condition(self, batch) -> torch.Tensor:
        """One-hot labels (B, K) as for the conditional VAE, with an all-zero row for an unlabelled image (label -1)."""
        labels = semisupervised_labels(batch, self.label_dim, type(self).__name__, self.is_first_check("labels"))
        if labels is None:
            raise ValueError("M2 needs (image, label) batches (label -1: unlabelled); the data module yields bare images")
        return self._one_hot(labels.clamp(min=0), images_of(batch)) * (labels >= 0)[:, None]  # (B, K)

    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.label_dim).to(like.dtype)  # (N, K)

    @staticmethod
    def labels_of_condition(cond: torch.Tensor | None) -> torch.Tensor | None:
        """Class indices (B,) of one-hot rows (B, K), -1 for all-zero (unlabelled) rows."""
        if cond is None:
            return None
        return torch.where(cond.sum(1) > 0, cond.argmax(1), torch.full_like(cond[:, 0], -1, dtype=torch.long))

    def with_guesses(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``cond`` (B, K) with each unlabelled (all-zero) row, or every row when ``cond`` is ``None``, replaced by
        the one-hot ``argmax q(y | x)``."""
        guess = self._one_hot(self.classify(x).argmax(1), x)  # (B, K)
        return guess if cond is None else torch.where(cond.sum(1, keepdim=True) > 0, cond.to(x.dtype), guess)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean of ``z`` given ``x`` and its class (B, D): the label where ``cond`` has one, else the
        classifier's ``argmax q(y | x)``."""
        return self.posterior(x, self.with_guesses(x, cond)).mode

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> M2Output:
        logits = self.classify(x)  # (B, K)
        k, b = self.label_dim, x.shape[0]
        classes = torch.arange(k, device=x.device).repeat_interleave(b)  # (K·B,): row k·B + i pairs image i with class k
        y = self._one_hot(classes, x)  # (K·B, K)
        q = self.posterior(x.expand(k, *x.shape).flatten(0, 1), y)  # (K·B, D)
        # one ε per image, shared by its K class rows (common random numbers): each ELBO(x, y) stays an unbiased
        # one-sample estimate, but their differences across y, which drive q(y | x) through the unlabelled bound,
        # are the model's, not the sampling noise's (independent ε put ~10 nats of noise between the classes)
        noise = DiagonalGaussian.standard_normal(b, q.shape[-1], device=x.device, dtype=q.mean.dtype)
        eps = noise.rsample(generator=None if self.training else self._eval_generator())  # (B, D)
        z = q.mean + q.stddev * eps.repeat(k, 1)  # (K·B, D)
        params = self.decoder_params(z, y).view(k, *x.shape)  # (K, B, C, H, W)
        own = self.with_guesses(x, cond).argmax(1)  # (B,): the label, else argmax q(y | x)
        rows = torch.arange(b, device=x.device)
        chosen = params[own, rows]  # (B, C, H, W)
        return M2Output(reconstruction=self.likelihood.mean(chosen), code=z.view(k, b, -1)[own, rows], input=x,
                        condition=cond, posterior=q, params=chosen, logits=logits, class_params=params)

    def class_weights(self, logits: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights (B, K), entropy (B,))``: a labelled image (a one-hot row of ``cond``) weighs its own class 1
        and has no entropy term; an unlabelled one (an all-zero row) weighs class ``y`` by ``q(y | x)`` and adds
        ``H(q(y | x))`` (Kingma et al., Eq. 7)."""
        log_q = F.log_softmax(logits, dim=1)  # (B, K)
        q = log_q.exp()
        entropy = -(q * log_q).sum(1)  # (B,)
        if cond is None:
            return q, entropy
        labelled = cond.sum(1) > 0  # (B,)
        weights = torch.where(labelled[:, None], cond.to(q.dtype), q)  # (B, K)
        return weights, torch.where(labelled, torch.zeros_like(entropy), entropy)

    def compute_losses(self, out: M2Output, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image terms in nats, each a ``q(y|x)``-weighted (or label-picked) sum over the classes."""
        k = self.label_dim
        log_px = self.likelihood.log_prob(out.class_params, target).t()  # (B, K): log p(x_b | y=k, z_bk)
        kl = out.posterior.kl().float().view(k, -1).t()  # (B, K): KL(q(z | x_b, k) ‖ N(0, I))
        log_py = -math.log(k)  # uniform p(y)
        weights, entropy = self.class_weights(out.logits, out.condition)  # (B, K), (B,)
        recon = (weights * -log_px).sum(1)  # (B,)
        kl_term = (weights * kl).sum(1)  # (B,)
        bound = recon + kl_term - log_py - entropy  # (B,): −ELBO(x, y) or U(x)
        weight = self.kl_weight()
        labels = self.labels_of_condition(out.condition)  # (B,), -1: unlabelled
        ce = labelled_cross_entropy(out.logits, labels) if labels is not None else out.logits.new_zeros(())
        losses = {
            "loss": (recon + weight * kl_term - log_py - entropy).mean() + self.hparams.alpha * ce,
            "recon": recon.mean(),
            "kl": kl_term.mean(),
            "elbo": -bound.mean(),
            "ce": ce,
            "entropy": entropy.mean(),
            "kl_weight": recon.new_tensor(weight),
        }
        if not self.training:
            losses |= classification_metrics(out.logits, labels)
        return losses


# --- the semi-supervised adversarial autoencoder ---------------------------------------------------------
class CategoricalStylePrior(Prior):
    """The semi-supervised AAE's two targets side by side: one-hot ``Cat(K)`` codes, then a style prior's codes.

    ``sample(n)`` → ``(n, K + style.dim)``; the class is uniform (labels, if given, are not used: the categorical
    code's discriminator sees no labels).
    """

    def __init__(self, num_classes: int, style: Prior) -> None:
        if num_classes < 2:
            raise ValueError(f"a categorical code needs num_classes >= 2, got {num_classes}")
        self.num_classes, self.style = int(num_classes), style
        self.dim = self.num_classes + style.dim
        self.scale = max(1.0, style.scale)

    def sample(self, n, labels=None, generator=None, device=None):
        y = torch.randint(self.num_classes, (n,), generator=generator, device=device)  # (n,)
        onehot = F.one_hot(y, self.num_classes).float()  # (n, K)
        return torch.cat([onehot, self.style.sample(n, generator=generator, device=device)], dim=1)  # (n, K + D)

    def __repr__(self) -> str:
        return f"CategoricalStylePrior(num_classes={self.num_classes}, style={self.style!r})"


class SemiSupervisedAAE(AdversarialAutoencoder):
    """Makhzani et al.'s semi-supervised AAE: three phases per batch, one optimiser each (four in all).

    Args:
        encoder: images → ``(B, K + D)``: ``K`` class logits, then the ``D``-d style code (``code_activation: null``).
        decoder: ``(B, K + D)`` codes ``[softmax y, z]`` → images.
        discriminator: the style code's discriminator (``D`` → 1 logit).
        category_discriminator: the categorical code's discriminator (``K`` → 1 logit).
        num_classes: ``K``.
        prior: the style prior (default ``GaussianPrior(D)``); the categorical code's prior is ``Cat(K)``.
        supervised_optimizer: optimiser of the supervised phase (the encoder); default Adam.
        supervised_weight: factor on the labelled cross-entropy.
        Other arguments: :class:`~ae_lightning.models.AdversarialAutoencoder`'s (``optimizer`` for the
        reconstruction phase, ``discriminator_optimizer`` for both discriminators, ``generator_optimizer`` for
        the encoder; ``discriminator_steps``, ``gradient_clip_val``, ``adversarial``); the encoder is deterministic.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module,
                 category_discriminator: nn.Module, num_classes: int = 10, prior: Prior | None = None,
                 supervised_optimizer: OptimizerCallable = torch.optim.Adam, supervised_weight: float = 1.0,
                 **kwargs) -> None:
        code = getattr(encoder, "code_dim", None)
        style = prior if prior is not None else GaussianPrior(dim=(code or num_classes + 1) - num_classes)
        if kwargs.get("posterior", "deterministic") != "deterministic":
            raise ValueError("SemiSupervisedAAE has a deterministic encoder (softmax y, linear z); fix: drop posterior")
        full = num_classes + style.dim
        for net, what, want in ((encoder, "encoder's code", full), (decoder, "decoder's input", full),
                                (discriminator, "style discriminator's in_features", style.dim),
                                (category_discriminator, "category discriminator's in_features", num_classes)):
            size = getattr(net, "code_dim", getattr(net, "in_features", None))
            if size is not None and size != want:
                raise ValueError(f"the {what} is {size} but num_classes={num_classes} and a {style.dim}-d style code "
                                 f"need {want}; fix: set it to {want}")
        super().__init__(encoder, decoder, discriminator, CategoricalStylePrior(num_classes, style), **kwargs)
        self.category_discriminator = category_discriminator
        self.supervised_optimizer = supervised_optimizer
        self.num_classes = int(num_classes)

    # --- the model -------------------------------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y | x)`` (B, K): the encoder's categorical head before its softmax."""
        return self.encoder(x)[:, : self.num_classes].float()

    def posterior_of(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The code ``[softmax y, z]`` (B, K + D) the decoder and the discriminators see."""
        h = self.encoder(x)  # (B, K + D)
        return torch.cat([h[:, : self.num_classes].softmax(1), h[:, self.num_classes :]], dim=1), None

    def condition(self, batch) -> torch.Tensor | None:
        """The class labels (-1: unlabelled), for the supervised phase and the metrics; the nets never see them."""
        return semisupervised_labels(batch, self.num_classes, type(self).__name__, self.is_first_check("labels"))

    def discriminate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Two logits per code (B, 2): the categorical discriminator's on ``y``, the style discriminator's on ``z``.
        The adversarial loss averages them: the two discriminators step together, as one phase."""
        y, style = z.split([self.num_classes, z.shape[1] - self.num_classes], dim=1)
        return torch.cat([self.category_discriminator(y), self.discriminator(style)], dim=1)

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = super().compute_losses(out, target)
        if not self.training:
            losses |= classification_metrics(out.code[:, : self.num_classes], out.condition)
        return losses

    @torch.no_grad()
    def generate(self, n: int) -> dict[str, torch.Tensor]:
        """``{"label_<k>": (n, C, H, W)}``: the same ``n`` style codes decoded with each class's one-hot ``y``
        (row ``k`` of the paper's Fig. 8: the style held, the class changed)."""
        style = self.prior.style.sample(n, device=self.device)  # (n, D)
        eye = torch.eye(self.num_classes, device=self.device)
        return {f"label_{k}": self.decode(torch.cat([eye[k].expand(n, -1), style], 1)).clamp(0, 1)
                for k in range(self.num_classes)}

    # --- the third phase ---------------------------------------------------------------------------------
    def supervised_phase(self, optimizer, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One encoder update on the cross-entropy of the labelled images' categorical code."""
        labelled = labels >= 0  # (B,)
        with self._phase(optimizer):
            ce = labelled_cross_entropy(self.classify(x[labelled]), labels[labelled])
            self._update(optimizer, self.hparams.supervised_weight * ce)
        return {"ce": ce.detach()}

    def training_step(self, batch, batch_idx: int) -> None:
        super().training_step(batch, batch_idx)  # reconstruction, then regularisation
        labels = self.condition(batch)
        if labels is None:
            raise ValueError("SemiSupervisedAAE needs (image, label) batches (label -1: unlabelled)")
        x = images_of(batch)
        logs = self.supervised_phase(self.optimizers()[3], x, labels)
        self.log_terms("train", logs, len(x))

    def configure_optimizers(self):
        return [
            self.optimizer([*self.encoder.parameters(), *self.decoder.parameters()]),
            self.discriminator_optimizer([*self.discriminator.parameters(), *self.category_discriminator.parameters()]),
            self.generator_optimizer(self.encoder.parameters()),
            self.supervised_optimizer(self.encoder.parameters()),
        ]
