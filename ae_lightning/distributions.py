"""Distributions shared by the probabilistic models: the diagonal-Gaussian posterior and priors,
and the image likelihoods ``p(x | z)``.

Every ``log_prob`` / ``kl`` here is **summed over the event dimensions** (latent units, pixels)
and returns one number per sample, in nats; averaging over the batch is the caller's job.

Posterior from an encoder whose code has ``2 * latent_dim`` units (means, then log-variances)::

    q = DiagonalGaussian.from_params(encoder(x))       # mean, log_var: (B, D)
    z = q.rsample()                                     # (B, D), differentiable (reparameterised)
    kl = q.kl()                                         # (B,) KL(q ‖ N(0, I))
    kl_to_p = q.kl(DiagonalGaussian(m, lv))             # (B,) KL(q ‖ p) for a diagonal Gaussian p
    zs = q.rsample(num_samples=5)                       # (5, B, D)
    q.log_prob(zs)                                      # (5, B)

Priors: ``DiagonalGaussian.standard_normal(n, d)`` samples ``N(0, I)`` codes (for decoding
random samples, or as the adversarial autoencoder's target distribution).

Likelihoods are small ``nn.Module`` objects (a learned σ is a parameter), injected into models::

    lik = BernoulliLikelihood()                         # decoder outputs logits
    lik.log_prob(decoder(z), x)                         # (B,) log p(x | z)
    lik.mean(decoder(z))                                # (B, C, H, W) image in [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)

# log-variances outside this range mean a broken encoder; clamping keeps exp() finite in bf16/fp32
LOG_VAR_RANGE = (-30.0, 20.0)


class DiagonalGaussian:
    """``N(mean, diag(exp(log_var)))`` over the last dimension; the leading dimensions are a batch.

    Args:
        mean, log_var: tensors of the same shape ``(..., D)``.
    """

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor) -> None:
        if mean.shape != log_var.shape:
            raise ValueError(f"mean shape {tuple(mean.shape)} != log_var shape {tuple(log_var.shape)}")
        self.mean = mean
        self.log_var = log_var.clamp(*LOG_VAR_RANGE)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        """Split an encoder output ``(..., 2D)`` into means (first half) and log-variances (second half)."""
        if params.shape[-1] % 2:
            raise ValueError(
                f"a diagonal Gaussian needs an even number of parameters (means then log-variances), "
                f"got {params.shape[-1]}; fix: give the encoder code_dim = 2 * latent_dim"
            )
        mean, log_var = params.chunk(2, dim=-1)  # (..., D) each
        return cls(mean, log_var)

    @classmethod
    def standard_normal(
        cls, *batch_shape: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DiagonalGaussian:
        """The prior ``N(0, I)`` with shape ``batch_shape`` (the last entry is the latent size)."""
        zeros = torch.zeros(batch_shape, device=device, dtype=dtype)
        return cls(zeros, zeros.clone())

    # --- moments -------------------------------------------------------------------------------
    @property
    def var(self) -> torch.Tensor:
        return self.log_var.exp()

    @property
    def stddev(self) -> torch.Tensor:
        return (0.5 * self.log_var).exp()

    @property
    def mode(self) -> torch.Tensor:
        """The most likely code (= the mean): the deterministic code for reconstructions and interpolations."""
        return self.mean

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    # --- sampling and densities ----------------------------------------------------------------
    def rsample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample ``mean + stddev * ε``, ``ε ~ N(0, I)``: gradients flow to mean and log_var.

        Returns ``(..., D)``, or ``(num_samples, ..., D)`` when ``num_samples`` is given.
        """
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = torch.randn(shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.stddev * eps

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`rsample` without gradients."""
        with torch.no_grad():
            return self.rsample(num_samples, generator)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` summed over the latent dimension: ``(S, ..., D)`` or ``(..., D)`` → ``(S, ...)`` / ``(...)``."""
        return -0.5 * (LOG_2PI + self.log_var + (z - self.mean) ** 2 / self.var).sum(-1)

    def kl_per_dim(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        """Closed-form ``KL(self ‖ other)`` per latent unit ``(..., D)``; ``other=None`` is ``N(0, I)``."""
        if other is None:
            # KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²)
            return 0.5 * (self.mean**2 + self.var - 1.0 - self.log_var)
        # KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) = ½ (log σ₂²/σ₁² + (σ₁² + (μ₁ − μ₂)²) / σ₂² − 1)
        return 0.5 * (other.log_var - self.log_var + (self.var + (self.mean - other.mean) ** 2) / other.var - 1.0)

    def kl(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        """Closed-form ``KL(self ‖ other)`` summed over the latent dimension, one value per sample ``(...)``."""
        return self.kl_per_dim(other).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Differential entropy summed over the latent dimension ``(...)``."""
        return 0.5 * (LOG_2PI + 1.0 + self.log_var).sum(-1)

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.shape)})"


# --- likelihoods p(x | z) ------------------------------------------------------------------------
class Likelihood(nn.Module):
    """``p(x | z)`` given the decoder's output ``params`` (same shape as the image).

    Subclasses define :meth:`log_prob` (summed over all pixels, one value per image) and
    :meth:`mean` (the image to show).
    """

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _check_same_shape(params: torch.Tensor, x: torch.Tensor) -> None:
    if params.shape[-x.ndim + 1 :] != x.shape[1:]:
        raise ValueError(f"decoder output shape {tuple(params.shape)} does not match image shape {tuple(x.shape)}")


class BernoulliLikelihood(Likelihood):
    """Pixels ``x ∈ {0, 1}`` (binarised MNIST); the decoder outputs **logits** (``output_activation: null``).

    ``log p(x | z) = −BCE(logits, x)`` summed over pixels; logits keep it exact where a sigmoid
    output would saturate (which matters for k-sample likelihood estimates).
    """

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_same_shape(params, x)
        with torch.autocast(device_type=params.device.type, enabled=False):  # fp32 sums over 784+ pixels
            logits, target = params.float(), x.float().expand_as(params)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (..., C, H, W)
        return -bce.flatten(-3).sum(-1)  # (...,)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class GaussianLikelihood(Likelihood):
    """``x ~ N(decoder(z), σ²)`` per pixel; the decoder outputs the mean (``sigmoid`` for images in [0, 1]).

    Args:
        sigma: the pixel standard deviation; with ``learn_sigma`` it is the initial value of one
            learned σ shared by all pixels (the "σ-VAE" of Rybkin et al. 2021: it balances the
            reconstruction and KL terms by itself instead of a hand-tuned β).
        learn_sigma: learn σ by maximum likelihood.
        per_pixel: one σ per pixel (per feature) instead of one for all, shape ``image_shape`` (set from the
            data, like the nets'): for data whose features differ in scale, e.g. a VAE's latent codes modelled by
            M2 in Kingma et al.'s M1+M2 (their decoder outputs a variance per feature).

    With a fixed σ, ``−log p`` is ``Σ (x − μ)² / 2σ² + const``: MSE scaled by ``1 / 2σ²``.
    """

    def __init__(self, sigma: float = 0.1, learn_sigma: bool = False, per_pixel: bool = False,
                 image_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if per_pixel and image_shape is None:
            raise ValueError("per_pixel=True needs the data's image_shape (the CLI sets it from the data block)")
        log_sigma = torch.full(tuple(image_shape) if per_pixel else (), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_same_shape(params, x)
        with torch.autocast(device_type=params.device.type, enabled=False):
            mu, target, log_sigma = params.float(), x.float(), self.log_sigma.float()
            lp = -0.5 * LOG_2PI - log_sigma - 0.5 * ((target - mu) / log_sigma.exp()) ** 2  # (..., C, H, W)
        return lp.flatten(-3).sum(-1)  # (...,)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params
