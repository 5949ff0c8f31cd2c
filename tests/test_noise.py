"""Noise models: their statistics, seeding, clipping to [0, 1] and argument checks."""

from __future__ import annotations

import pytest
import torch

from ae_lightning.noise import (
    Gaussian,
    GaussianRange,
    Masking,
    NoiseModel,
    Poisson,
    PoissonRange,
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
    RandomChoice([Gaussian(0.1), Masking(0.5)], weights=[3, 1]),
    GaussianRange(0.0, 0.3),
    PoissonRange(5, 60),
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


def test_photon_poisson_is_unbiased_with_variance_x_over_peak_at_the_benchmark_peaks():
    """y = Poisson(peak·x)/peak, the photon-limited setting (peaks 10 and 30): E[y] = x, Var[y] = x/peak away from
    the clip at 1 (level + 4 std below 1)."""
    for peak in (10.0, 30.0):
        for level in (0.1, 0.3):
            y = Poisson(peak=peak)(const(level), gen(int(peak)))
            assert y.mean().item() == pytest.approx(level, rel=0.02)
            assert y.var().item() == pytest.approx(level / peak, rel=0.05)
            assert torch.allclose(y * peak, (y * peak).round(), atol=1e-4)  # photon counts over peak


def test_gaussian_range_draws_one_sigma_per_image_uniformly():
    d = GaussianRange(0.05, 0.25)(const(0.5), gen()) - 0.5  # (32, 1, 32, 32), no clipping at these σ
    stds = d.flatten(1).std(dim=1)  # each image's own σ, to about ±2.5 %
    assert stds.min() > 0.05 * 0.93 and stds.max() < 0.25 * 1.07
    assert stds.max() - stds.min() > 0.1  # they differ per image
    many = GaussianRange(0.0, 0.3)(torch.full((4000, 1, 8, 8), 0.5), gen()) - 0.5
    sigmas = many.flatten(1).std(dim=1)
    assert sigmas.mean().item() == pytest.approx(0.15, abs=0.01)  # uniform on [0, 0.3]
    d255 = GaussianRange(15, 15, scale=255)(const(0.5), gen()) - 0.5  # a range of one value is plain AWGN
    assert d255.std().item() == pytest.approx(15 / 255, rel=0.03)
    assert "σ∈[0, 0.3]" in GaussianRange(0.0, 0.3).label


def test_poisson_range_draws_a_log_uniform_peak_per_image():
    level = 0.3
    y = PoissonRange(5, 60)(torch.full((2000, 1, 16, 16), level), gen())
    assert y.mean().item() == pytest.approx(level, rel=0.01)  # unbiased whatever the peak
    peaks = level / y.flatten(1).var(dim=1)  # Var = x / peak: each image's peak, to about ±10 %
    assert peaks.min() < 6 and peaks.max() > 50
    # log-uniform: as many images below the geometric middle √(5·60) ≈ 17.3 as above it
    assert (peaks < (5 * 60) ** 0.5).float().mean().item() == pytest.approx(0.5, abs=0.05)
    one = PoissonRange(10, 10)(const(level), gen(3))  # a range of one peak is the fixed-peak model
    assert one.var().item() == pytest.approx(level / 10, rel=0.05)
    assert "peak∈[5, 60]" in PoissonRange(5, 60).label


def test_random_choice_weights():
    x = torch.rand(4000, 1, 4, 4) * 0.8 + 0.1
    y = RandomChoice([Masking(1.0), Gaussian(0.0)], weights=[3, 1])(x, gen())
    blank = (y == 0).flatten(1).all(1).float().mean().item()
    assert blank == pytest.approx(0.75, abs=0.03)
    assert (RandomChoice([Masking(1.0), Gaussian(0.0)], weights=[0, 1])(x, gen()) == x).all()  # weight 0: never
    assert "×75%" in RandomChoice([Masking(1.0), Gaussian(0.0)], weights=[3, 1]).label
    # without weights the draw is the uniform one it always was (seeded benchmark noise unchanged)
    torch.testing.assert_close(RandomChoice([Masking(1.0), Gaussian(0.0)])(x, gen()),
                               RandomChoice([Masking(1.0), Gaussian(0.0)], weights=None)(x, gen()))


def test_blind_training_noise_covers_every_benchmark_setting():
    """configs/noise/denoiser_blind.yaml holds every setting of the benchmark grid (same type, level inside the
    trained range) and photon peaks 10 and 30."""
    from conftest import CONFIGS

    from ae_lightning.config import instantiate, load_config

    blind = instantiate(load_config(CONFIGS / "noise" / "denoiser_blind.yaml"), NoiseModel)
    grid = instantiate(load_config(CONFIGS / "noise" / "denoising_grid.yaml"), NoiseModel)
    ranges = [n for n in blind.noises if isinstance(n, GaussianRange)]
    gondara = {(n.p, n.lam) for n in blind.noises if isinstance(n, ScaledPoisson)}
    photon = [n for n in blind.noises if isinstance(n, PoissonRange)]
    for setting in [*grid.noises, Poisson(10), Poisson(30)]:
        if isinstance(setting, Gaussian | ScaledGaussian):
            sigma = setting.additive_moments()[1]
            assert any(r.sigma_min <= sigma <= r.sigma_max for r in ranges), setting
        elif isinstance(setting, ScaledPoisson):
            assert (setting.p, setting.lam) in gondara, setting
        else:
            assert any(r.peak_min <= setting.peak <= r.peak_max for r in photon), setting
    assert all(w > 0 for w in blind.weights)


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
        lambda: RandomChoice([Gaussian(0.1)], weights=[1, 2]),
        lambda: RandomChoice([Gaussian(0.1), Masking(0.5)], weights=[-1, 2]),
        lambda: GaussianRange(0.3, 0.1),
        lambda: GaussianRange(-0.1, 0.1),
        lambda: PoissonRange(0, 10),
        lambda: PoissonRange(30, 10),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
