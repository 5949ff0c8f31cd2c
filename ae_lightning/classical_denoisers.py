"""Classical denoisers, each on one 2-D float image in [0, 1]: the median filter, NL-means and BM3D (oracle or
estimated σ; on Poisson data through the Anscombe transform), and a process pool that runs one over many images.
Only numpy / scipy / scikit-image / bm3d (no torch), so the pool's workers start in milliseconds. The denoising
benchmark's baselines (``benchmarks/denoising.py``)::

    with Pool() as pool:
        out = pool.map_images(bm3d, list(noisy[:, 0].numpy()), sigma=0.1)   # (N, H, W) float32
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
from scipy.ndimage import median_filter
from skimage.restoration import denoise_nl_means, estimate_sigma

try:
    import bm3d as _bm3d
except ImportError:  # an optional extra: non-commercial licence
    _bm3d = None

BM3D_MISSING = (
    "BM3D skipped: the optional `bm3d` package is not installed "
    "(pip install 'ae_lightning[bm3d]'; non-commercial licence)"
)


def median(img: np.ndarray, size: int = 3) -> np.ndarray:
    """``size``×``size`` median filter (borders reflected)."""
    return median_filter(img, size=size, mode="reflect")


def nl_means(
    img: np.ndarray, h_factor: float = 0.8, patch_size: int = 5, patch_distance: int = 6, sigma: float | None = None
) -> np.ndarray:
    """scikit-image NL-means with ``h = h_factor · σ``; σ is the known one (oracle) or, when ``None``, from
    ``estimate_sigma`` (wavelet MAD; blind)."""
    sigma = float(estimate_sigma(img)) if sigma is None else sigma
    out = denoise_nl_means(
        img, h=h_factor * sigma, sigma=sigma, fast_mode=True, patch_size=patch_size, patch_distance=patch_distance
    )
    return np.clip(out, 0.0, 1.0)


def _bm3d_package():
    if _bm3d is None:
        raise ImportError(BM3D_MISSING)
    return _bm3d


def bm3d(img: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """BM3D (the reference ``bm3d`` package) with the known σ (oracle) or, when ``None``, σ from
    ``estimate_sigma`` (blind), as NL-means gets."""
    sigma = max(float(estimate_sigma(img)), 1e-3) if sigma is None else sigma
    return np.clip(_bm3d_package().bm3d(img, sigma_psd=sigma), 0.0, 1.0)


def bm3d_counts(counts: np.ndarray) -> np.ndarray:
    """Poisson counts denoised by BM3D with σ = 1 on their Anscombe transform ``2·√(z + 3/8)`` (unit variance),
    mapped back by the closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2011)."""
    d = _bm3d_package().bm3d(2.0 * np.sqrt(np.maximum(counts, 0.0) + 3 / 8), sigma_psd=1.0)
    d = np.maximum(d, 0.8)  # the approximation's domain (below it the counts are ~0)
    return 0.25 * d**2 + 0.25 * np.sqrt(1.5) / d - 11 / 8 / d**2 + 5 / 8 * np.sqrt(1.5) / d**3 - 1 / 8


def bm3d_anscombe(img: np.ndarray, p: float, lam: float) -> np.ndarray:
    """BM3D on Poisson-type data ``x + p·Poisson(λ)``: the counts ``y / p`` through :func:`bm3d_counts`, then the
    known offset λ removed: ``x̂ = p·(counts − λ)``."""
    return np.clip(p * (bm3d_counts(img / p) - lam), 0.0, 1.0)


def bm3d_photon(img: np.ndarray, peak: float) -> np.ndarray:
    """BM3D on photon-limited data ``y = Poisson(peak·x) / peak``: the counts ``peak·y`` through
    :func:`bm3d_counts`, ÷ peak: the standard classical reference for Poisson denoising."""
    return np.clip(bm3d_counts(img * peak) / peak, 0.0, 1.0)


def bm3d_available() -> bool:
    return _bm3d is not None


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pool(ProcessPoolExecutor):
    """A process pool over the available cores (``fork`` where the OS has it: no re-imports)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or available_cores()
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        super().__init__(max_workers=self.workers, mp_context=multiprocessing.get_context(method))

    def map_images(self, fn: Callable[..., np.ndarray], images: Sequence[np.ndarray], **kwargs) -> np.ndarray:
        """``fn(image, **kwargs)`` for every image, in order, as a float32 (N, H, W) array."""
        chunk = max(1, len(images) // (4 * self.workers))
        return np.stack(list(self.map(partial(fn, **kwargs), images, chunksize=chunk))).astype(np.float32)
