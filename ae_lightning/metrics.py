"""Image-quality metrics from torchmetrics, used by the modules and the benchmarks alike.

SSIM here is torchmetrics' (11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, reflect-padded
borders included in the mean). scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)`` uses the same window but averages only
over pixels at least 5 px from the border; :func:`ssim_skimage_borders` reproduces that, which
makes the two agree to float precision (tested in tests/test_metrics.py).

**Cost.** torchmetrics lays a batch out as ``(5·B, C, H, W)`` for one 11×11 convolution with C groups; on the CPU a
convolution of single-channel maps takes a slow path (about 0.16 ms per 28×28 image on one core, more than a small
MLP's whole forward pass). :func:`ssim` hands torchmetrics the same images laid out as channels, ``(1, B·C, H, W)``:
the same window on the same pixels, a depthwise convolution, 3–7× faster, and per-image values equal to
torchmetrics' own to the last bit on the shapes tested. Validation SSIM is further bounded to the first
:data:`VAL_SSIM_IMAGES` images of each epoch (:class:`SSIM` ``max_images``; ``test/ssim`` is over every image).
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

SSIM_NOTE = "SSIM: torchmetrics, 11×11 Gaussian window σ=1.5, borders reflect-padded (not scikit-image's cropped mean)"

#: images per validation epoch (and process) whose SSIM is computed by default: the first ones, the same every epoch
#: (validation data are not shuffled and validation noise is reseeded); ``None`` in :class:`SSIM`: every image
VAL_SSIM_IMAGES = 100


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` of ``(N, C, H, W)`` images, data range 1: torchmetrics' SSIM (its window, constants and
    reflect-padded borders) on the images laid out as the channels of one image, so that its convolution is a
    depthwise one (see the module docstring); each image's value is the mean of its own C·H·W SSIM map entries."""
    n = pred.shape[0]
    as_channels = (1, -1, *pred.shape[2:])  # (1, N·C, H, W): the window runs over each channel by itself
    _, full = structural_similarity_index_measure(pred.reshape(as_channels), target.reshape(as_channels),
                                                  data_range=1.0, reduction="none", return_full_image=True)
    return full.reshape(n, -1).mean(-1)  # (N,)


class SSIM(StructuralSimilarityIndexMeasure):
    """torchmetrics' SSIM metric (data range 1, mean over images) computed by :func:`ssim`, over at most
    ``max_images`` images between resets (the first ones each process sees; ``None``: every image). Under DDP the
    sums are torchmetrics', synchronised across processes."""

    def __init__(self, max_images: int | None = None, **kwargs) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be positive or None (every image), got {max_images}")
        super().__init__(data_range=1.0, **kwargs)
        self.max_images = max_images
        self._images = 0  # seen since the last reset, on the host: counting needs no device read

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.max_images is not None:
            take = self.max_images - self._images
            if take <= 0:
                return
            preds, target = preds[:take], target[:take]
        self._images += preds.shape[0]
        self.similarity += ssim(preds, target).sum()
        self.total += preds.shape[0]

    def reset(self) -> None:
        super().reset()
        self._images = 0


def image_metrics(prefix: str, ssim_images: int | None = None) -> MetricCollection:
    """PSNR and SSIM (data range 1), averaged over images rather than pixels; SSIM over the first ``ssim_images``
    images only (``None``: every image; see :class:`SSIM`)."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
            "ssim": SSIM(max_images=ssim_images),
        },
        prefix=prefix,
    )


@torch.no_grad()
def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM, each ``(N,)``, for ``(N, C, H, W)`` images in [0, 1]."""
    pred, target = pred.float().clamp(0, 1), target.float()
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr, ssim(pred, target)


@torch.no_grad()
def ssim_skimage_borders(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM averaged the way scikit-image does: the 5-px border of the SSIM map left out."""
    _, ssim_map = structural_similarity_index_measure(
        pred.double(), target.double(), data_range=1.0, reduction="none", return_full_image=True
    )
    return ssim_map[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
