"""Latent priors p(z) of the generative models (``model.prior`` of :class:`~ae_lightning.models.generative.Generative`:
the adversarial autoencoders' injected prior, the VAE's ``GaussianPrior`` N(0, I)), and two-sample statistics that
say how close codes are.

Every prior draws samples (optionally conditioned on class labels: the supervised AAE of
Makhzani et al. 2015, where label ``k`` picks mixture component ``k``) and evaluates its log
density, for scatter plots over the prior's contours::

    prior = MixtureOfGaussiansPrior(dim=2, num_components=10, supervised=True)
    z = prior.sample(64, labels=y)                       # (64, 2), component y[i] for row i
    stats = prior_match(codes, prior, labels=y)          # {"mmd": ..., "ks": ...}

``prior_match`` reports the unbiased squared MMD with a sum of Gaussian kernels whose bandwidths
are multiples of the prior's own length ``scale``, and the largest per-dimension Kolmogorov–Smirnov
statistic (``scipy.stats.ks_2samp``) between the codes and an equal-sized prior sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import ks_2samp


class Prior:
    """Base class: ``sample`` and ``log_prob``; ``scale`` is a typical length of the prior (for MMD bandwidths)."""

    dim: int
    scale: float = 1.0
    supervised: bool = False
    num_components: int = 0

    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def _check_dim(dim: int, who: str, minimum: int = 1) -> int:
    if int(dim) < minimum:
        raise ValueError(f"{who} needs dim >= {minimum}, got {dim}")
    return int(dim)


class GaussianPrior(Prior):
    """Isotropic Gaussian ``N(0, std² I)`` (the standard normal by default)."""

    def __init__(self, dim: int = 2, std: float = 1.0) -> None:
        self.dim = _check_dim(dim, "GaussianPrior")
        if std <= 0:
            raise ValueError(f"GaussianPrior std must be > 0, got {std}")
        self.std = float(std)
        self.scale = self.std

    def sample(self, n, labels=None, generator=None, device=None):
        return self.std * torch.randn(n, self.dim, generator=generator, device=device)  # (n, dim)

    def log_prob(self, z):
        return (-0.5 * (z / self.std) ** 2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)  # (n,)


class UniformPrior(Prior):
    """Uniform on the box ``[low, high]^dim`` (CAAE's prior on z: ``[-1, 1]^50``)."""

    def __init__(self, dim: int = 50, low: float = -1.0, high: float = 1.0) -> None:
        self.dim = _check_dim(dim, "UniformPrior")
        if not high > low:
            raise ValueError(f"UniformPrior needs high > low, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)
        self.scale = (self.high - self.low) / 2

    def sample(self, n, labels=None, generator=None, device=None):
        u = torch.rand(n, self.dim, generator=generator, device=device)  # (n, dim)
        return self.low + (self.high - self.low) * u

    def log_prob(self, z):
        inside = ((z >= self.low) & (z <= self.high)).all(-1)  # (n,)
        value = -self.dim * math.log(self.high - self.low)
        return torch.where(inside, torch.full_like(inside, value, dtype=z.dtype), torch.full_like(z[..., 0], -math.inf))


class MixtureOfGaussiansPrior(Prior):
    """Equal-weight mixture of Gaussians centred on a circle of ``radius`` in the first two dimensions.

    Each component is elongated along its radius (``radial_std``) and narrow across it
    (``tangential_std``), the "flower" of Makhzani et al. (2015, Fig. 4); dimensions beyond the
    second are ``N(0, tangential_std²)``. With ``supervised=True``, ``sample(n, labels)`` draws row
    ``i`` from component ``labels[i] % num_components`` (rows with a negative label, i.e. unlabelled,
    from a random component) and the AAE shows the discriminator the label too.
    """

    def __init__(
        self,
        dim: int = 2,
        num_components: int = 10,
        radius: float = 3.0,
        radial_std: float = 0.5,
        tangential_std: float = 0.1,
        supervised: bool = False,
    ) -> None:
        self.dim = _check_dim(dim, "MixtureOfGaussiansPrior", minimum=2)
        if num_components < 1 or radius < 0 or radial_std <= 0 or tangential_std <= 0:
            raise ValueError("MixtureOfGaussiansPrior needs num_components >= 1, radius >= 0 and positive stds")
        self.num_components = int(num_components)
        self.radius, self.radial_std, self.tangential_std = float(radius), float(radial_std), float(tangential_std)
        self.supervised = supervised
        self.scale = max(self.radius, self.radial_std)

    def _angles(self, device=None) -> torch.Tensor:
        return torch.arange(self.num_components, device=device) * (2 * math.pi / self.num_components)  # (K,)

    def sample(self, n, labels=None, generator=None, device=None):
        if labels is not None and len(labels) != n:
            raise ValueError(f"MixtureOfGaussiansPrior.sample: {len(labels)} labels for {n} samples")
        comp = torch.randint(self.num_components, (n,), generator=generator, device=device)  # (n,)
        if labels is not None:
            labels = labels.to(comp.device)
            comp = torch.where(labels >= 0, labels % self.num_components, comp)
        eps = torch.randn(n, self.dim, generator=generator, device=device)  # (n, dim)
        theta = self._angles(comp.device)[comp]  # (n,)
        r = self.radius + self.radial_std * eps[:, 0]  # along the radius
        t = self.tangential_std * eps[:, 1]  # across it
        z = torch.empty(n, self.dim, device=comp.device)
        z[:, 0] = r * torch.cos(theta) - t * torch.sin(theta)
        z[:, 1] = r * torch.sin(theta) + t * torch.cos(theta)
        z[:, 2:] = self.tangential_std * eps[:, 2:]
        return z

    def log_prob(self, z):
        theta = self._angles(z.device)  # (K,)
        cos, sin = torch.cos(theta), torch.sin(theta)
        x, y = z[:, :1], z[:, 1:2]  # (n, 1)
        along = x * cos + y * sin - self.radius  # (n, K) radial offset in each component's frame
        across = -x * sin + y * cos  # (n, K)
        lp = (
            -0.5 * (along / self.radial_std) ** 2 - 0.5 * (across / self.tangential_std) ** 2
            - math.log(2 * math.pi * self.radial_std * self.tangential_std)
        )
        rest = z[:, 2:]
        lp_rest = (-0.5 * (rest / self.tangential_std) ** 2 - math.log(self.tangential_std)
                   - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(lp, dim=1) - math.log(self.num_components) + lp_rest  # (n,)

    def __repr__(self) -> str:
        kind = "supervised " if self.supervised else ""
        return f"{kind}MixtureOfGaussiansPrior(dim={self.dim}, K={self.num_components}, radius={self.radius:g})"


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> float:
    """Unbiased squared MMD between samples ``x`` (n, d) and ``y`` (m, d), kernel ``Σ_s exp(-|a-b|²/(2s²))``."""
    x, y = x.double(), y.double()
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples on each side, got {n} and {m}")

    def kernel_sum(d2: torch.Tensor) -> torch.Tensor:  # Σ over the pairs of Σ_s k_s: one kernel at a time, no matrix sum
        return sum(torch.exp(d2 * (-0.5 / (s * s))).sum() for s in bandwidths)

    # the within-sample sums over i ≠ j: each unordered pair once (pdist), twice over; half the exps of a full matrix
    within = (2 * kernel_sum(torch.pdist(x).square()) / (n * (n - 1))
              + 2 * kernel_sum(torch.pdist(y).square()) / (m * (m - 1)))
    return float(within - 2 * kernel_sum(torch.cdist(x, y).square()) / (n * m))


#: validation codes the adversarial models' ``val/prior_mmd`` / ``val/prior_ks`` use by default (the MMD's cost grows
#: with their square: 2,000 codes cost about 0.4 s of CPU per epoch, 500 about 0.02 s); see ``diagnostics.*``
VAL_PRIOR_MATCH_CODES = 500


@torch.no_grad()
def prior_match(
    codes: torch.Tensor, prior: Prior, labels: torch.Tensor | None = None, seed: int = 0, max_samples: int = 2000
) -> dict[str, float]:
    """How far ``codes`` (N, dim) are from ``prior``: ``{"mmd": MMD², "ks": max per-dimension KS statistic}``.

    Compares against an equal-sized seeded prior sample (label-conditioned for a supervised prior);
    at most ``max_samples`` codes are used (the first ones) to keep the kernel matrices small.
    """
    codes = codes.detach().float().cpu()[:max_samples]
    if codes.ndim != 2 or codes.shape[1] != prior.dim:
        raise ValueError(f"codes must be (N, {prior.dim}) for {prior!r}, got {tuple(codes.shape)}")
    if labels is not None:
        labels = labels.cpu()[: len(codes)]
    gen = torch.Generator().manual_seed(seed)
    ref = prior.sample(len(codes), labels=labels if prior.supervised else None, generator=gen)  # (N, dim)
    bandwidths = tuple(prior.scale * f for f in (0.25, 0.5, 1.0, 2.0, 4.0))
    ks = max(ks_2samp(codes[:, d].numpy(), ref[:, d].numpy()).statistic for d in range(prior.dim))
    return {"mmd": mmd(codes, ref, bandwidths), "ks": float(np.float64(ks))}
