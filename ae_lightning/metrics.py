"""Image-quality metrics from torchmetrics, used by the modules and the benchmarks alike.

SSIM here is torchmetrics' (11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, reflect-padded
borders included in the mean). scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)`` uses the same window but averages only
over pixels at least 5 px from the border; :func:`ssim_skimage_borders` reproduces that, which
makes the two agree to float precision (tested in tests/test_metrics.py).
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

SSIM_NOTE = "SSIM: torchmetrics, 11×11 Gaussian window σ=1.5, borders reflect-padded (not scikit-image's cropped mean)"


def image_metrics(prefix: str) -> MetricCollection:
    """PSNR and SSIM (data range 1), averaged over images rather than pixels."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
    )


@torch.no_grad()
def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM, each ``(N,)``, for ``(N, C, H, W)`` images in [0, 1]."""
    pred, target = pred.float().clamp(0, 1), target.float()
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    return psnr, ssim


@torch.no_grad()
def ssim_skimage_borders(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM averaged the way scikit-image does: the 5-px border of the SSIM map left out."""
    _, ssim_map = structural_similarity_index_measure(
        pred.double(), target.double(), data_range=1.0, reduction="none", return_full_image=True
    )
    return ssim_map[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
