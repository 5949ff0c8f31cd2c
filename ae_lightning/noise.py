"""Corruption models, in one place for training and benchmarks alike.

Each model maps clean images in [0, 1] to corrupted ones, clipped to [0, 1]. Pass a seeded
``torch.Generator`` for reproducible noise (benchmarks, validation); without one the global RNG
is used (seeded by ``seed_everything`` in training)::

    g = torch.Generator().manual_seed(0)
    noisy = ScaledGaussian(p=0.1)(clean, generator=g)   # Gondara: x + 0.1·N(0, 1)
    noisy = Gaussian(sigma=25, scale=255)(clean)        # AWGN σ = 25/255

``label`` gives a short human-readable name for tables and figure titles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class NoiseModel:
    """Base class: subclasses implement :meth:`corrupt`; ``__call__`` clips to [0, 1]."""

    label = "noise"

    def additive_moments(self) -> tuple[float, float] | None:
        """``(mean, std)`` of the noise when it is added to the image independently of it (before the clip to
        [0, 1]), else ``None``: what a classical denoiser may be told (the bias to subtract, the oracle σ)."""
        return None

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.corrupt(x, generator).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label})"


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _rand(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class Masking(NoiseModel):
    """Zero a random ``fraction`` of the pixels (Vincent et al.'s masking noise; 30–50 % typical)."""

    def __init__(self, fraction: float = 0.3) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"masking fraction must be in [0, 1], got {fraction}")
        self.fraction = fraction
        self.label = f"mask {fraction:.0%}"

    def corrupt(self, x, generator):
        return x * (_rand(x, generator) >= self.fraction)


class Gaussian(NoiseModel):
    """Additive white Gaussian noise ``x + N(0, (sigma/scale)²)``; ``scale=255`` reads σ in 8-bit units."""

    def __init__(self, sigma: float = 0.1, scale: float = 1.0) -> None:
        if sigma < 0 or scale <= 0:
            raise ValueError(f"Gaussian noise needs sigma >= 0 and scale > 0, got sigma={sigma}, scale={scale}")
        self.sigma = sigma / scale
        self.label = f"AWGN σ={sigma:g}/{scale:g}" if scale != 1 else f"AWGN σ={sigma:g}"

    def additive_moments(self) -> tuple[float, float]:
        return 0.0, self.sigma

    def corrupt(self, x, generator):
        return x + self.sigma * _randn(x, generator)


class ScaledGaussian(NoiseModel):
    """Gondara (2016)'s ``x + p·N(mean, std)``."""

    def __init__(self, p: float = 0.1, mean: float = 0.0, std: float = 1.0) -> None:
        self.p, self.mean, self.std = p, mean, std
        self.label = f"p={p:g}·N({mean:g},{std:g})"

    def additive_moments(self) -> tuple[float, float]:
        return self.p * self.mean, abs(self.p) * self.std

    def corrupt(self, x, generator):
        return x + self.p * (self.mean + self.std * _randn(x, generator))


class ScaledPoisson(NoiseModel):
    """Gondara (2016)'s ``x + p·Poisson(λ)`` (additive, signal-independent)."""

    def __init__(self, p: float = 0.2, lam: float = 1.0) -> None:
        if lam <= 0:
            raise ValueError(f"Poisson rate lam must be > 0, got {lam}")
        self.p, self.lam = p, lam
        self.label = f"p={p:g}·Poisson({lam:g})"

    def additive_moments(self) -> tuple[float, float]:
        return self.p * self.lam, abs(self.p) * self.lam**0.5  # a known mean offset p·λ

    def corrupt(self, x, generator):
        rate = torch.full_like(x, self.lam)
        return x + self.p * torch.poisson(rate, generator=generator)


class Poisson(NoiseModel):
    """Signal-dependent shot noise: ``Poisson(peak · x) / peak`` (``peak`` photons at white)."""

    def __init__(self, peak: float = 30.0) -> None:
        if peak <= 0:
            raise ValueError(f"Poisson peak must be > 0, got {peak}")
        self.peak = peak
        self.label = f"Poisson(peak {peak:g})"

    def corrupt(self, x, generator):
        return torch.poisson(x.clamp(min=0) * self.peak, generator=generator) / self.peak


def _per_image(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One uniform draw in [0, 1) per image of ``x`` (B, ...), shaped to broadcast over it: (B, 1, ..., 1)."""
    return torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator, device=x.device, dtype=x.dtype)


class GaussianRange(NoiseModel):
    """AWGN whose σ is drawn per image, uniformly in ``[sigma_min, sigma_max] / scale``: noise-blind training
    over a continuous range of levels (DnCNN-B's σ ∈ [0, 55]/255), e.g. ``GaussianRange(0, 0.55)`` covers every
    ``p·N(0, 1)`` with p ≤ 0.55 and AWGN up to σ = 140/255."""

    def __init__(self, sigma_min: float = 0.0, sigma_max: float = 0.2, scale: float = 1.0) -> None:
        if not 0 <= sigma_min <= sigma_max or scale <= 0:
            raise ValueError(f"GaussianRange needs 0 <= sigma_min <= sigma_max and scale > 0, got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}, scale={scale}")
        self.sigma_min, self.sigma_max = sigma_min / scale, sigma_max / scale
        unit = f"/{scale:g}" if scale != 1 else ""
        self.label = f"AWGN σ∈[{sigma_min:g}, {sigma_max:g}]{unit}"

    def corrupt(self, x, generator):
        sigma = self.sigma_min + (self.sigma_max - self.sigma_min) * _per_image(x, generator)  # (B, 1, 1, 1)
        return x + sigma * _randn(x, generator)


class PoissonRange(NoiseModel):
    """Photon-limited shot noise ``Poisson(peak · x) / peak`` (:class:`Poisson`) whose ``peak`` is drawn per image,
    log-uniformly in ``[peak_min, peak_max]``: noise-blind training over a range of photon counts."""

    def __init__(self, peak_min: float = 5.0, peak_max: float = 60.0) -> None:
        if not 0 < peak_min <= peak_max:
            raise ValueError(f"PoissonRange needs 0 < peak_min <= peak_max, got peak_min={peak_min}, peak_max={peak_max}")
        self.peak_min, self.peak_max = peak_min, peak_max
        self.label = f"shot noise peak∈[{peak_min:g}, {peak_max:g}]"

    def corrupt(self, x, generator):
        lo, hi = math.log(self.peak_min), math.log(self.peak_max)
        peak = torch.exp(lo + (hi - lo) * _per_image(x, generator))  # (B, 1, 1, 1), log-uniform
        return torch.poisson(x.clamp(min=0) * peak, generator=generator) / peak


class SaltAndPepper(NoiseModel):
    """Set a fraction ``amount`` of pixels to 0 or 1 (``salt_vs_pepper`` of them to 1)."""

    def __init__(self, amount: float = 0.05, salt_vs_pepper: float = 0.5) -> None:
        if not 0.0 <= amount <= 1.0 or not 0.0 <= salt_vs_pepper <= 1.0:
            raise ValueError("salt-and-pepper amount and salt_vs_pepper must be in [0, 1]")
        self.amount, self.salt_vs_pepper = amount, salt_vs_pepper
        self.label = f"s&p {amount:.0%}"

    def corrupt(self, x, generator):
        hit = _rand(x, generator) < self.amount
        salt = _rand(x, generator) < self.salt_vs_pepper
        return torch.where(hit, salt.to(x.dtype), x)


class RandomChoice(NoiseModel):
    """Per image, one of ``noises`` chosen at random: trains one noise-blind denoiser (DnCNN-B style).

    ``weights`` (optional, one non-negative number per noise) make the choice non-uniform: the probability of
    noise ``i`` is ``weights[i] / sum(weights)``.
    """

    def __init__(self, noises: Sequence[NoiseModel], weights: Sequence[float] | None = None) -> None:
        if not noises:
            raise ValueError("RandomChoice needs at least one noise model")
        if weights is not None and (len(weights) != len(noises) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"RandomChoice weights must be {len(noises)} non-negative numbers with a positive sum "
                             f"(one per noise), got {list(weights)}")
        self.noises = list(noises)
        self.weights = None if weights is None else [float(w) for w in weights]
        self._cdf: dict[torch.device, torch.Tensor] = {}  # cumulative weights (K,) per device
        shares = [""] * len(self.noises) if self.weights is None else [
            f" ×{w / sum(self.weights):.0%}" for w in self.weights]
        self.label = "mix(" + ", ".join(n.label + s for n, s in zip(self.noises, shares, strict=True)) + ")"

    def _pick(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The chosen noise's index per image, (B,), drawn on ``x``'s device without a host sync."""
        if self.weights is None:
            return torch.randint(len(self.noises), (x.shape[0],), generator=generator, device=x.device)
        cdf = self._cdf.get(x.device)
        if cdf is None:  # made once per device: a host-to-device copy every step would wait for the device
            cdf = self._cdf[x.device] = torch.tensor(self.weights, device=x.device).cumsum(0) / sum(self.weights)
        u = torch.rand(x.shape[0], generator=generator, device=x.device)  # (B,)
        return torch.searchsorted(cdf, u, right=True).clamp_(max=len(self.noises) - 1)

    def corrupt(self, x, generator):
        # branch-free on the device: every noise corrupts the whole batch and each image keeps its pick's
        # (a per-type `if sel.any(): out[sel] = ...` costs two host syncs per noise type and step)
        pick = self._pick(x, generator).view(-1, *([1] * (x.ndim - 1)))  # (B, 1, 1, 1)
        out = x
        for i, noise in enumerate(self.noises):
            out = torch.where(pick == i, noise.corrupt(x, generator), out)
        return out
