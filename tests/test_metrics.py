"""PSNR and SSIM of ``ae_lightning.metrics`` (torchmetrics) against scikit-image, on real chest X-rays.

The images are the embedded real X-rays (``XRayDataset(None, "test")``), each paired with copies corrupted at
several strengths so that PSNR and SSIM cover a range (and their per-image mean differs from a pooled value).
"""

from __future__ import annotations

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from ae_lightning import metrics as M
from ae_lightning.data import XRayDataset
from ae_lightning.metrics import SSIM, image_metrics, psnr_ssim, ssim, ssim_skimage_borders
from ae_lightning.noise import ScaledGaussian

# scikit-image's settings that match torchmetrics' SSIM window (11×11 Gaussian, σ = 1.5, population covariance)
SK_SSIM = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, clean)``, each (12, 1, 64, 64) in [0, 1]: 12 real X-rays, noise p = 0.02 … 0.4 (clamped to [0, 1])."""
    clean = XRayDataset(None, "test").images[:12]  # (12, 1, 64, 64)
    strengths = torch.linspace(0.02, 0.4, len(clean))
    g = torch.Generator().manual_seed(0)
    pred = torch.cat([ScaledGaussian(p=float(p))(x[None], g) for p, x in zip(strengths, clean, strict=True)]).clamp(0, 1)
    return pred, clean


def _sk(pred: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's per-image PSNR and SSIM, each (N,)."""
    psnr, ssim = [], []
    for a, b in zip(pred[:, 0].double().numpy(), clean[:, 0].double().numpy(), strict=True):
        psnr.append(sk_psnr(b, a, data_range=1.0))
        ssim.append(sk_ssim(a, b, **SK_SSIM))
    return torch.tensor(psnr), torch.tensor(ssim)


def test_psnr_matches_scikit_image(pairs):
    pred, clean = pairs
    ours, _ = psnr_ssim(pred, clean)
    ref, _ = _sk(pred, clean)
    assert ref.max() - ref.min() > 10  # the pairs span a range of qualities
    assert torch.allclose(ours.double(), ref, rtol=0, atol=1e-3), (ours.double() - ref).abs().max()


def test_ssim_with_skimage_borders_matches_scikit_image(pairs):
    """``ssim_skimage_borders`` leaves out the 5-px border of the SSIM map, as scikit-image's mean does:
    the two agree to float precision. The table's SSIM (torchmetrics, reflect-padded borders included) is a
    different number on 64×64 images, which is why the tables say which one they report."""
    pred, clean = pairs
    ours = ssim_skimage_borders(pred, clean)
    _, ref = _sk(pred, clean)
    assert ref.max() - ref.min() > 0.3
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6), (ours - ref).abs().max()
    _, table_ssim = psnr_ssim(pred, clean)
    assert (table_ssim.double() - ref).abs().mean() > 1e-3


def test_logged_metrics_are_per_image_means(pairs):
    """The modules' ``{stage}/psnr`` and ``{stage}/ssim`` (``image_metrics``) average per-image values, fed in
    batches: the mean of scikit-image's per-image PSNR, not the PSNR of the pooled MSE."""
    pred, clean = pairs
    metrics = image_metrics("val/")
    for a, b in zip(pred.split(5), clean.split(5), strict=True):
        metrics.update(a, b)
    logged = {k: float(v) for k, v in metrics.compute().items()}
    ref_psnr, _ = _sk(pred, clean)
    pooled = float(sk_psnr(clean.double().numpy(), pred.double().numpy(), data_range=1.0))
    assert abs(pooled - float(ref_psnr.mean())) > 1.0  # the two reductions differ on these pairs
    assert logged["val/psnr"] == pytest.approx(float(ref_psnr.mean()), abs=1e-3)
    assert logged["val/ssim"] == pytest.approx(float(psnr_ssim(pred, clean)[1].mean()), abs=1e-5)


def test_psnr_ssim_clamps_predictions_to_the_data_range(pairs):
    pred, clean = pairs
    overshoot = pred * 1.5 - 0.25  # values outside [0, 1], as an unclamped network output
    ours, _ = psnr_ssim(overshoot, clean)
    ref, _ = _sk(overshoot.clamp(0, 1), clean)
    assert torch.allclose(ours.double(), ref, rtol=0, atol=1e-3)


def test_ssim_laid_out_as_channels_is_torchmetrics_ssim(pairs):
    """``ssim`` hands torchmetrics the batch as the channels of one image (a depthwise convolution, several times
    faster on the CPU): the per-image values of torchmetrics' own layout, for gray and for 3-channel images."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    pred, clean = pairs
    ref = tm_ssim(pred, clean, data_range=1.0, reduction="none")
    assert ref.max() - ref.min() > 0.3
    assert torch.allclose(ssim(pred, clean), ref, rtol=0, atol=1e-6)
    rgb_pred, rgb_clean = pred.reshape(4, 3, 64, 64), clean.reshape(4, 3, 64, 64)
    assert torch.allclose(ssim(rgb_pred, rgb_clean), tm_ssim(rgb_pred, rgb_clean, data_range=1.0, reduction="none"),
                          rtol=0, atol=1e-6)


def test_bounded_ssim_scores_the_first_images_and_computes_nothing_after(pairs, monkeypatch):
    """``SSIM(max_images=7)`` (validation's bound, ``diagnostics.ssim_images``): the mean over the first 7 images fed,
    no SSIM computed for the batches past the bound, a fresh count after ``reset``; ``None``: every image."""
    pred, clean = pairs
    computed = []
    monkeypatch.setattr(M, "ssim", lambda p, t, _ssim=M.ssim: computed.append(len(p)) or _ssim(p, t))
    bounded, every = SSIM(max_images=7), SSIM()
    for a, b in zip(pred.split(5), clean.split(5), strict=True):
        bounded.update(a, b)
    assert computed == [5, 2]
    assert float(bounded.compute()) == pytest.approx(float(ssim(pred[:7], clean[:7]).mean()), abs=1e-6)
    for a, b in zip(pred.split(5), clean.split(5), strict=True):
        every.update(a, b)
    assert float(every.compute()) == pytest.approx(float(ssim(pred, clean).mean()), abs=1e-6)
    bounded.reset()
    bounded.update(pred[:3], clean[:3])
    assert int(bounded.total) == 3
    with pytest.raises(ValueError, match="max_images"):
        SSIM(max_images=0)
