"""Medical X-ray images: folders of image files, ``.npz`` arrays and MedMNIST files.

Every source becomes grayscale float images in [0, 1], centre-cropped square and resized with
antialiasing (Pillow LANCZOS) to ``image_size`` (default 64, as in Gondara 2016).

Sources (``root``; a list of them is the union, each split on its own so no test image of one
set lands in another's training split):

- a folder tree of ``.png .jpg .jpeg .pgm .tif .tiff .bmp`` images, 8- or 16-bit, and ``.dcm`` when
  ``pydicom`` is installed (``pip install 'ae_lightning[dicom]'``) — e.g. mini-MIAS
  (``all-mias/mdb*.pgm``) or the ISBI 2015 dental set; sub-folder names become labels;
- an ``.npz`` with an ``images`` array ``(N, H, W)`` (optional ``labels``);
- a MedMNIST ``.npz`` (``train_images``/``val_images``/``test_images`` + ``*_labels``): its
  official splits are kept;
- nothing: the embedded 800 real 64×64 chest X-rays (Kermany et al. 2018, CC BY 4.0).
"""

from __future__ import annotations

import functools
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ae_lightning.data.common import (
    EMBEDDED,
    ArrayImageDataset,
    DatasetNotFoundError,
    ImageDataModule,
    as_paths,
    group_keys,
    grouped_split,
    seeded_split,
    take_train_subset,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pgm", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
SPLITS = ("train", "val", "test")
LAYOUT = (
    "a folder tree of .png/.jpg/.jpeg/.pgm/.tif/.bmp/.dcm images, an .npz with an 'images' array, "
    "or a MedMNIST .npz with train_images/val_images/test_images"
)


@dataclass
class XRaySource:
    """All images of one source, already cropped and resized: ``images`` (N, S, S) float32 in [0, 1]."""

    path: str
    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    official_splits: dict[str, np.ndarray] | None = None


def crop_resize(img: np.ndarray, size: int, where: str) -> np.ndarray:
    """Centre-crop a 2-D float image to a square and resize it to ``size``×``size`` (antialiased)."""
    h, w = img.shape
    side = min(h, w)
    if side < size:
        raise ValueError(
            f"{where} is {w}x{h}, smaller than the requested image_size={size}; "
            f"fix: lower image_size or remove the image"
        )
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    if side != size:
        img = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), Image.LANCZOS))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


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


def _gray_stack(arr: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W[, C]) array → (N, H, W) grayscale float in [0, 1]."""
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3].mean(-1).astype(arr.dtype)
    if arr.ndim != 3:
        raise ValueError(f"{where}: expected images of shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    return to_unit_float(arr, where)


def _resize_all(images: np.ndarray, size: int, where: str) -> np.ndarray:
    if images.shape[1:] == (size, size):
        return images.astype(np.float32)
    return np.stack([crop_resize(im, size, f"{where}[{i}]") for i, im in enumerate(images)])


def _load_npz(path: Path, size: int) -> XRaySource:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated .npz is a BadZipFile
        raise ValueError(f"cannot read {path}: {err}; expected {LAYOUT}") from err
    if {f"{s}_images" for s in SPLITS} <= keys:  # MedMNIST layout, official splits
        parts, labels, splits, start = [], [], {}, 0
        for s in SPLITS:
            imgs = _resize_all(_gray_stack(data[f"{s}_images"], f"{path}:{s}_images"), size, f"{path}:{s}_images")
            lab = data[f"{s}_labels"].reshape(len(imgs), -1)[:, 0] if f"{s}_labels" in keys else np.full(len(imgs), -1)
            parts.append(imgs)
            labels.append(lab.astype(np.int64))
            splits[s] = np.arange(start, start + len(imgs))
            start += len(imgs)
        images = np.concatenate(parts)
        names = [f"{s}/{i}" for s in SPLITS for i in range(len(splits[s]))]
        return XRaySource(str(path), images, np.concatenate(labels), names, splits)
    if "images" not in keys:
        raise ValueError(f"{path} has arrays {sorted(keys)} but no 'images'; expected {LAYOUT}")
    images = _resize_all(_gray_stack(data["images"], f"{path}:images"), size, f"{path}:images")
    if "labels" in keys:
        labels = data["labels"].reshape(len(images), -1)[:, 0].astype(np.int64)
    elif "names" in keys:  # 'CLASS/file' names, as in the embedded chest X-rays
        labels = _labels_from_parents([str(n) for n in data["names"]])
    else:
        labels = np.full(len(images), -1, dtype=np.int64)
    names = [str(n) for n in data["names"]] if "names" in keys else [str(i) for i in range(len(images))]
    return XRaySource(str(path), images, labels, names)


def _labels_from_parents(names: Sequence[str]) -> np.ndarray:
    parents = [str(Path(n).parent) for n in names]
    classes = sorted(set(parents))
    if len(classes) < 2:
        return np.full(len(names), -1, dtype=np.int64)
    return np.array([classes.index(p) for p in parents], dtype=np.int64)


def _load_folder(root: Path, size: int) -> XRaySource:
    suffixes = IMAGE_SUFFIXES | DICOM_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        others = sorted({p.suffix for p in root.rglob("*") if p.is_file()})
        found = f" (found only {', '.join(others[:6])} files)" if others else " (it is empty)"
        raise DatasetNotFoundError(f"no X-ray images in {root}{found}; expected {LAYOUT}")
    images = np.stack([crop_resize(read_image_file(f), size, str(f)) for f in files])
    names = [str(f.relative_to(root)) for f in files]
    return XRaySource(str(root), images, _labels_from_parents(names), names)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, mtime: float) -> XRaySource:
    p = Path(path)
    return _load_npz(p, size) if p.is_file() else _load_folder(p, size)


def load_xray_source(root: str | Path | None, image_size: int = 64) -> XRaySource:
    """Read one source (see module docstring); ``None`` is the embedded chest X-rays."""
    path = Path(root).expanduser() if root is not None else EMBEDDED / "chest_xray64.npz"
    if not path.exists():
        raise DatasetNotFoundError(
            f"X-ray root {path} does not exist; expected {LAYOUT}; "
            "fix: download the dataset and pass its folder or .npz as root"
        )
    if path.is_file() and path.suffix != ".npz":
        raise ValueError(f"X-ray root {path} is a {path.suffix} file; expected {LAYOUT}")
    return _load_cached(str(path.resolve()), int(image_size), path.stat().st_mtime)


def split_source(
    src: XRaySource, val_fraction: float, test_fraction: float, seed: int, group_by: str = "image"
) -> dict[str, np.ndarray]:
    """Train/val/test indices: the official ones when the source has them, else seeded, with no group
    (``group_by``: ``"image"``, ``"parent"`` folder or a regex over the names, see ``group_keys``) in two splits."""
    if src.official_splits is not None:
        return dict(src.official_splits)
    seeded_split(len(src.images), val_fraction, test_fraction, seed, src.path)  # too few images: that error first
    groups = group_keys(src.names, group_by, src.path)
    tr, va, te = grouped_split(groups, val_fraction, test_fraction, seed, src.path)
    return {"train": tr, "val": va, "test": te}


class XRayDataset(ArrayImageDataset):
    """torchvision-style dataset: ``XRayDataset(root, split, transform, download)``.

    Items are ``(image (1, S, S) float in [0, 1], label)``; ``label`` is the sub-folder class
    index, the file's label, or -1. ``root`` may list several sources (their union).
    X-ray collections are licensed per source and downloaded by hand: ``download=True`` raises
    an error that says so.

    Example::

        ds = XRayDataset(None, split="train")          # embedded chest X-rays
        x, y = ds[0]                                    # (1, 64, 64), class index
    """

    def __init__(
        self,
        root: str | Sequence[str] | None = None,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        download: bool = False,
        image_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_size: int | None = None,
        seed: int = 0,
        group_by: str = "image",
    ) -> None:
        if download:
            raise ValueError(
                "X-ray sets are not downloaded automatically (each has its own licence); fix: download "
                "e.g. mini-MIAS or the Kermany chest X-rays by hand and pass the folder as root"
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        roots: list[str | Path | None] = [None] if root is None else list(as_paths(root))
        parts, labels = [], []
        for k, r in enumerate(roots):
            src = load_xray_source(r, image_size)
            idx = split_source(src, val_fraction, test_fraction, seed, group_by)
            chosen = idx[split]
            if split == "train" and train_size is not None:
                # cap the union, sharing it across sources in proportion to their sizes
                share = train_size if len(roots) == 1 else max(1, round(train_size / len(roots)))
                chosen = take_train_subset(chosen, share, src.path)
            parts.append(src.images[chosen])
            # a single source keeps its own labels; a union is labelled by source index
            labels.append(src.labels[chosen] if len(roots) == 1 else np.full(len(chosen), k, dtype=np.int64))
        images = torch.from_numpy(np.concatenate(parts)).unsqueeze(1)  # (N, 1, S, S)
        super().__init__(images, torch.from_numpy(np.concatenate(labels)), transform)
        self.split = split


def _random_flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1) if torch.rand(()) < 0.5 else x


class XRayDataModule(ImageDataModule):
    """Grayscale X-rays in [0, 1] at ``image_size``², with seeded train/val/test splits.

    Args:
        root: a folder, an ``.npz``, a MedMNIST ``.npz``, or a list of them (their union);
            ``None`` uses the embedded real chest X-rays.
        image_size: side of the square output images.
        train_size: optional cap on training images (Gondara 2016 trained on ~300).
        hflip: random horizontal flips of training images.
        group_by: what must not straddle two splits: ``"image"`` (split by image), ``"parent"`` (the
            parent folder) or a regex over the file names, e.g. ``ae_lightning.data.common.KERMANY_PATIENT``
            (``person\\d+_|(?:NORMAL2-)?IM-\\d+-``) for a split by patient of the Kermany chest X-rays.
    """

    def __init__(
        self,
        root: str | list[str] | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_size: int | None = None,
        hflip: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        group_by: str = "image",
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.image_shape = (1, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        common = dict(image_size=hp.image_size, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
                      seed=self.seed, group_by=hp.group_by)
        self.train_set = XRayDataset(hp.root, "train", transform=_random_flip if hp.hflip else None,
                                     train_size=hp.train_size, **common)
        self.val_set = XRayDataset(hp.root, "val", **common)
        self.test_set = XRayDataset(hp.root, "test", **common)
        log.info(
            "X-rays from %s: %d train / %d val / %d test images at %dx%d",
            hp.root or "the embedded chest X-rays", len(self.train_set), len(self.val_set), len(self.test_set),
            hp.image_size, hp.image_size,
        )
