"""Rate–distortion points and curves: what every codec (learned or classical) is scored as, and BD-rate.

An :class:`RDPoint` is one codec at one setting on a set of images: the bytes of each image's stream (every
byte the decoder reads, except what is shared by every image — the model, JPEG's standard tables), the decoded
images' PSNR and SSIM (torchmetrics, data range 1, per image). A curve is a list of them; :func:`front` keeps
its Pareto front (for "the best of several scales at each rate"), :func:`bd_rate` compares two curves.

**BD-rate** (Bjøntegaard, VCEG-M33, 2001): the average difference in log-rate between two RD curves over the
quality range where both exist, as a percentage (−30 % = the test codec needs 30 % fewer bits for the same
PSNR, on average over the overlap). Computed by the ``bjontegaard`` package (FAU; ``pip install bjontegaard``)
with piecewise-cubic Hermite interpolation of log-rate against quality (``pchip``, the interpolation of the later
VCEG-AI11 / JVET practice; VCEG-M33's ``cubic`` polynomial fit is the other choice), each curve first reduced
to its Pareto front so that it is monotonic.

    points = [score(codec_l, test) for codec_l in codecs] ; jpeg = jpeg_curve(test, qualities)
    bd_rate(jpeg, points)        # % rate of the learned codec against JPEG at equal PSNR
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ae_lightning.metrics import psnr_ssim

Metric = Literal["psnr", "ssim"]


@dataclass
class RDPoint:
    """One codec at one setting, scored on N images.

    ``bytes``: the stream size of each image; ``bpp``: all of them × 8 ÷ all pixels (N·H·W); ``psnr`` / ``ssim``:
    (N,) of the decoded images; ``bpp_estimate``: a model's own estimate, where there is one; ``decoded``: the
    decoded images (N, C, H, W) (``keep`` of them, see :func:`scored_point`); ``extra``: settings worth a column.
    """

    method: str
    setting: str
    bytes: list[int]
    bpp: float
    psnr: torch.Tensor
    ssim: torch.Tensor
    bpp_estimate: float | None = None
    decoded: torch.Tensor | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)

    def mean(self, metric: Metric) -> float:
        return float(getattr(self, metric).mean())

    def row(self) -> dict:
        """One CSV row: method, setting, bpp, bpp_estimate, PSNR / SSIM mean and std, images, extras."""
        return {"method": self.method, "setting": self.setting, "bpp": self.bpp,
                "bpp_estimate": "" if self.bpp_estimate is None else self.bpp_estimate,
                "psnr_mean": self.mean("psnr"), "psnr_std": float(self.psnr.std()), "ssim_mean": self.mean("ssim"),
                "ssim_std": float(self.ssim.std()), "images": len(self.bytes), **self.extra}


def bits_per_pixel(sizes: Sequence[int], images: torch.Tensor) -> float:
    """``8 · Σ sizes ÷ (N · H · W)``: the rate of byte streams ``sizes`` for ``images`` (N, C, H, W)."""
    return 8.0 * sum(sizes) / (len(images) * images.shape[-2] * images.shape[-1])


def scored_point(method: str, setting: str, sizes: Sequence[int], decoded: torch.Tensor, images: torch.Tensor,
                 keep: int | None = None, **extra) -> RDPoint:
    """The :class:`RDPoint` of streams of ``sizes`` bytes that decoded to ``decoded`` (N, C, H, W) from ``images``."""
    if len(sizes) != len(images) or decoded.shape != images.shape:
        raise ValueError(f"{len(sizes)} streams / decoded {tuple(decoded.shape)} for images {tuple(images.shape)}")
    psnr, ssim = psnr_ssim(decoded, images)
    return RDPoint(method, setting, list(sizes), bits_per_pixel(sizes, images), psnr, ssim,
                   decoded=decoded if keep is None else decoded[:keep], extra=extra)


def front(points: Sequence[RDPoint], metric: Metric = "psnr") -> list[RDPoint]:
    """The Pareto front of ``points`` by rate and ``metric``, by increasing rate: the points no other point beats
    with a lower-or-equal rate and a higher quality (quality strictly increases along it)."""
    out: list[RDPoint] = []
    for p in sorted(points, key=lambda p: (p.bpp, -p.mean(metric))):
        if not out or p.mean(metric) > out[-1].mean(metric):
            out.append(p)
    return out


def overlap(anchor: Sequence[RDPoint], test: Sequence[RDPoint], metric: Metric = "psnr") -> tuple[float, float] | None:
    """The quality interval both curves cover (their fronts), or ``None``."""
    a, t = [p.mean(metric) for p in front(anchor, metric)], [p.mean(metric) for p in front(test, metric)]
    lo, hi = max(min(a), min(t)), min(max(a), max(t))
    return (lo, hi) if lo < hi else None


def bd_rate(anchor: Sequence[RDPoint], test: Sequence[RDPoint], metric: Metric = "psnr",
            method: Literal["pchip", "akima", "cubic"] = "pchip") -> float:
    """Bjøntegaard delta rate (%) of ``test`` against ``anchor`` at equal ``metric`` over the overlap of their
    quality ranges (module docstring); ``nan`` when they do not overlap or either front has fewer than 2 points."""
    a, t = front(anchor, metric), front(test, metric)
    if len(a) < 2 or len(t) < 2 or overlap(a, t, metric) is None:
        return math.nan
    return bd_rate_values([p.bpp for p in a], [p.mean(metric) for p in a], [p.bpp for p in t],
                          [p.mean(metric) for p in t], method)


def bd_rate_values(rate_anchor: Sequence[float], quality_anchor: Sequence[float], rate_test: Sequence[float],
                   quality_test: Sequence[float], method: Literal["pchip", "akima", "cubic"] = "pchip") -> float:
    """:func:`bd_rate` on plain numbers: each curve's quality strictly increasing with its rate."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns on partial overlap: the overlap is ours to report
        import bjontegaard

        return float(bjontegaard.bd_rate(np.asarray(rate_anchor, float), np.asarray(quality_anchor, float),
                                         np.asarray(rate_test, float), np.asarray(quality_test, float), method=method,
                                         require_matching_points=False, min_overlap=0))
