"""Noise models: their statistics, seeding, clipping to [0, 1] and argument checks."""

from __future__ import annotations

import pytest
import torch

from ae_lightning.noise import (
    Gaussian,
    Masking,
    NoiseModel,
    Poisson,
    RandomChoice,
    SaltAndPepper,
    ScaledGaussian,
    ScaledPoisson,
)

SHAPE = (32, 1, 32, 32)  # 32,768 pixels: fractions to about ±0.01, stds to about ±1 %


def const(value: float) -> torch.Tensor:
    return torch.full(SHAPE, value)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


ALL = [
    Masking(0.4),
    Gaussian(0.2),
    Gaussian(25, scale=255),
    ScaledGaussian(p=0.1),
    ScaledPoisson(p=0.1, lam=2.0),
    Poisson(peak=10),
    SaltAndPepper(0.2),
    RandomChoice([Gaussian(0.1), Masking(0.5)]),
]


def test_masking_zeroes_the_fraction_and_keeps_the_rest():
    x = torch.rand(SHAPE) * 0.9 + 0.1  # no zeros in the input
    y = Masking(0.4)(x, gen())
    zeroed = (y == 0).float().mean().item()
    assert zeroed == pytest.approx(0.4, abs=0.015)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # untouched pixels unchanged
    assert torch.equal(Masking(0.0)(x), x)
    assert (Masking(1.0)(x) == 0).all()


@pytest.mark.parametrize("noise, std", [(Gaussian(0.1), 0.1), (Gaussian(25, scale=255), 25 / 255)])
def test_gaussian_std(noise, std):
    d = noise(const(0.5), gen()) - 0.5  # far from the clip bounds at this σ
    assert d.std().item() == pytest.approx(std, rel=0.03)
    assert abs(d.mean().item()) < 0.1 * std


def test_scaled_gaussian_is_x_plus_p_times_normal():
    d = ScaledGaussian(p=0.1)(const(0.5), gen()) - 0.5
    assert d.std().item() == pytest.approx(0.1, rel=0.03)
    assert abs(d.mean().item()) < 0.01
    shifted = ScaledGaussian(p=0.1, mean=1.0, std=0.5)(const(0.3), gen()) - 0.3  # p·N(1, 0.5)
    assert shifted.mean().item() == pytest.approx(0.1, abs=0.005)
    assert shifted.std().item() == pytest.approx(0.05, rel=0.03)


def test_scaled_poisson_is_additive_and_signal_independent():
    p, lam = 0.05, 2.0
    for level in (0.1, 0.3):
        d = ScaledPoisson(p=p, lam=lam)(const(level), gen()) - level
        assert d.mean().item() == pytest.approx(p * lam, rel=0.03)  # E = p·λ
        assert d.var().item() == pytest.approx(p * p * lam, rel=0.05)  # Var = p²·λ, whatever the signal
        assert torch.allclose(d / p, (d / p).round(), atol=1e-4)  # integer counts times p


def test_photon_poisson_variance_grows_with_signal():
    peak = 50.0
    means, variances = [], []
    for level in (0.05, 0.2, 0.4):
        y = Poisson(peak=peak)(const(level), gen())
        means.append(y.mean().item())
        variances.append(y.var().item())
        assert y.mean().item() == pytest.approx(level, rel=0.03)  # unbiased
        assert y.var().item() == pytest.approx(level / peak, rel=0.06)  # Var = x / peak
    assert variances[0] < variances[1] < variances[2]
    assert torch.equal(Poisson(peak)(torch.zeros(SHAPE), gen()), torch.zeros(SHAPE))  # no photons, no noise


def test_salt_and_pepper_fractions():
    y = SaltAndPepper(amount=0.2, salt_vs_pepper=0.3)(const(0.5), gen())
    hit = y != 0.5
    assert hit.float().mean().item() == pytest.approx(0.2, abs=0.015)
    assert set(y[hit].unique().tolist()) == {0.0, 1.0}
    assert (y[hit] == 1).float().mean().item() == pytest.approx(0.3, abs=0.03)


def test_random_choice_picks_one_noise_per_image():
    x = torch.rand(64, 1, 8, 8) * 0.8 + 0.1
    y = RandomChoice([Masking(1.0), Gaussian(0.0)])(x, gen())
    blank = (y == 0).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert torch.equal(blank | same, torch.ones(64, dtype=torch.bool))  # every image got exactly one of them
    assert 16 < blank.sum() < 48


@pytest.mark.parametrize("noise", ALL, ids=lambda n: type(n).__name__)
def test_seeded_clipped_and_pure(noise: NoiseModel):
    x = torch.rand(4, 1, 16, 16)
    x0 = x.clone()
    a, b, c = noise(x, gen(1)), noise(x, gen(1)), noise(x, gen(2))
    assert torch.equal(a, b), "same seed must give the same noise"
    assert not torch.equal(a, c), "a different seed must give different noise"
    assert not torch.equal(a, x), "the noise must change the image"
    assert torch.equal(x, x0), "the input must not be modified in place"
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert noise.label and type(noise).__name__ in repr(noise)


def test_strong_noise_is_clipped_to_unit_range():
    y = Gaussian(1.0)(const(0.5), gen())
    assert y.min().item() == 0.0 and y.max().item() == 1.0  # clipping happened, and only to the bounds
    y = ScaledPoisson(p=1.0, lam=3.0)(const(0.5), gen())
    assert y.max().item() == 1.0


def test_global_rng_is_used_without_a_generator():
    torch.manual_seed(0)
    a = Gaussian(0.1)(const(0.5))
    torch.manual_seed(0)
    assert torch.equal(a, Gaussian(0.1)(const(0.5)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Masking(1.5),
        lambda: Gaussian(-0.1),
        lambda: Gaussian(0.1, scale=0),
        lambda: ScaledPoisson(lam=0),
        lambda: Poisson(peak=0),
        lambda: SaltAndPepper(amount=2.0),
        lambda: SaltAndPepper(salt_vs_pepper=-1.0),
        lambda: RandomChoice([]),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
