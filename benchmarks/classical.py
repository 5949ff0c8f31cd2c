"""Classical denoisers for the denoising benchmark, on one 2-D float image in [0, 1] each.

Imports only numpy / scipy / scikit-image / bm3d (no torch), so the worker processes that run
them in parallel start in milliseconds.
"""

from __future__ import annotations

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


def bm3d(img: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """BM3D (the reference ``bm3d`` package) with the known σ (oracle) or, when ``None``, σ from
    ``estimate_sigma`` (blind), as NL-means gets."""
    if _bm3d is None:
        raise ImportError(BM3D_MISSING)
    sigma = max(float(estimate_sigma(img)), 1e-3) if sigma is None else sigma
    return np.clip(_bm3d.bm3d(img, sigma_psd=sigma), 0.0, 1.0)


def anscombe_inverse(d: np.ndarray) -> np.ndarray:
    """The closed-form approximation of the exact unbiased inverse Anscombe transform (Mäkitalo & Foi 2011)."""
    d = np.maximum(d, 0.8)  # the approximation's domain (below it the counts are ~0)
    return 0.25 * d**2 + 0.25 * np.sqrt(1.5) / d - 11 / 8 / d**2 + 5 / 8 * np.sqrt(1.5) / d**3 - 1 / 8


def bm3d_anscombe(img: np.ndarray, p: float, lam: float) -> np.ndarray:
    """BM3D on Poisson-type data ``x + p·Poisson(λ)``: the counts ``z = y / p`` through the Anscombe
    transform ``2·√(z + 3/8)`` (unit variance for Poisson counts), BM3D with σ = 1, the exact unbiased
    inverse, then the known offset λ removed: ``x̂ = p·(inv − λ)``."""
    if _bm3d is None:
        raise ImportError(BM3D_MISSING)
    a = 2.0 * np.sqrt(np.maximum(img / p, 0.0) + 3 / 8)
    d = _bm3d.bm3d(a, sigma_psd=1.0)
    return np.clip(p * (anscombe_inverse(d) - lam), 0.0, 1.0)


def bm3d_photon(img: np.ndarray, peak: float) -> np.ndarray:
    """BM3D on photon-limited data ``y = Poisson(peak·x) / peak``: the counts ``peak·y`` through the Anscombe
    transform (unit variance), BM3D with σ = 1, the exact unbiased inverse (Mäkitalo & Foi 2011), ÷ peak: the
    standard classical reference for Poisson denoising."""
    if _bm3d is None:
        raise ImportError(BM3D_MISSING)
    a = 2.0 * np.sqrt(np.maximum(img * peak, 0.0) + 3 / 8)
    return np.clip(anscombe_inverse(_bm3d.bm3d(a, sigma_psd=1.0)) / peak, 0.0, 1.0)


def bm3d_available() -> bool:
    return _bm3d is not None


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pool:
    """A process pool over the available cores (``fork`` where the OS has it: no re-imports)."""

    def __init__(self, workers: int | None = None) -> None:
        import multiprocessing as mp

        self.workers = workers or available_cores()
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

    def map(self, fn: Callable[..., np.ndarray], images: Sequence[np.ndarray], **kwargs) -> np.ndarray:
        """``fn(image, **kwargs)`` for every image, in order, as a float32 (N, H, W) array."""
        chunk = max(1, len(images) // (4 * self.workers))
        out = list(self._pool.map(partial(fn, **kwargs), images, chunksize=chunk))
        return np.stack(out).astype(np.float32)

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
