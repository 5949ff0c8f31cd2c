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
        self.label = f"shot noise peak={peak:g}"

    def corrupt(self, x, generator):
        return torch.poisson(x.clamp(min=0) * self.peak, generator=generator) / self.peak


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
    """Per image, one of ``noises`` chosen at random: trains one noise-blind denoiser (DnCNN-B style)."""

    def __init__(self, noises: Sequence[NoiseModel]) -> None:
        if not noises:
            raise ValueError("RandomChoice needs at least one noise model")
        self.noises = list(noises)
        self.label = "mix(" + ", ".join(n.label for n in self.noises) + ")"

    def corrupt(self, x, generator):
        # branch-free on the device: every noise corrupts the whole batch and each image keeps its pick's
        # (a per-type `if sel.any(): out[sel] = ...` costs two host syncs per noise type and step)
        pick = torch.randint(len(self.noises), (x.shape[0],), generator=generator, device=x.device)  # (B,)
        pick = pick.view(-1, *([1] * (x.ndim - 1)))  # (B, 1, 1, 1)
        out = x
        for i, noise in enumerate(self.noises):
            out = torch.where(pick == i, noise.corrupt(x, generator), out)
        return out
