"""Image files on disk: the suffixes the suite reads, one file to a float array, and the error for absent data.

The bottom layer of :mod:`ae_lightning.data`: it imports no sibling, so the DataModules
(:mod:`~ae_lightning.data.common`, :mod:`~ae_lightning.data.xray`) and the prediction inputs
(:mod:`~ae_lightning.data.predict`) all build on it without importing each other back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pgm", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
LAYOUT = (
    "a folder tree of .png/.jpg/.jpeg/.pgm/.tif/.bmp/.dcm images, an .npz with an 'images' array, "
    "or a MedMNIST .npz with train_images/val_images/test_images"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the DataModule looks; the message names the path, the
    expected layout and how to get the data. Tests and tools can tell "data absent" from a bug."""


def as_paths(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """One root or several as a list of paths, ``~`` expanded."""
    if isinstance(root, str | Path):
        return [Path(root).expanduser()]
    return [Path(r).expanduser() for r in root]


def to_unit_float(arr: np.ndarray, where: str) -> np.ndarray:
    """uint8 → /255, uint16 → /65535, float → as is (must already lie in [0, 1])."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise ValueError(f"{where}: float images must lie in [0, 1] (found {arr.min():.3g}..{arr.max():.3g})")
        return arr.astype(np.float32)
    raise ValueError(f"{where}: unsupported pixel type {arr.dtype}; expected uint8, uint16 or float in [0, 1]")


def read_image_file(path: Path) -> np.ndarray:
    """One image file as a 2-D float32 array in [0, 1] (grayscale)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _read_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # Pillow opens >8-bit grayscale (16-bit PNG/TIFF; PGM with maxval > 255, rescaled so that
                # maxval = 65535) in these modes: always a 16-bit range, however dark the image is
                arr = np.asarray(im, dtype=np.int64)
                return (np.clip(arr, 0, 65535) / 65535.0).astype(np.float32)
            if im.mode == "F":
                return to_unit_float(np.asarray(im), str(path))
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read X-ray image {path}: {err}; fix: replace or remove the corrupt file") from err


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImportError(
            f"{path} is DICOM but pydicom is not installed; fix: pip install 'ae_lightning[dicom]'"
        ) from None
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
    except Exception as err:  # pydicom raises many types for broken files
        raise ValueError(f"cannot read DICOM file {path}: {err}; fix: replace or remove the corrupt file") from err
    bits = int(getattr(ds, "BitsStored", 16))
    arr = np.clip(arr / (2**bits - 1), 0.0, 1.0)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":  # 0 = white in MONOCHROME1
        arr = 1.0 - arr
    if arr.ndim == 3:  # multi-frame or colour: take the first frame / channel mean
        arr = arr[0] if arr.shape[0] < arr.shape[-1] else arr.mean(-1)
    return arr.astype(np.float32)
