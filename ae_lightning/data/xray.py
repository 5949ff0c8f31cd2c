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

``extra_train`` sources add training images only: every image of theirs joins the training split except
those that would leak into evaluation (:func:`extra_training_images`): an image of a group (patient) that
has images in the main sources' val or test split, and an image identical to one of the main sources'.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ae_lightning.data.common import (
    EMBEDDED,
    ArrayImageDataset,
    ImageDataModule,
    group_keys,
    grouped_split,
    random_hflip,
    seeded_split,
    take_train_subset,
)
from ae_lightning.data.files import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    LAYOUT,
    DatasetNotFoundError,
    as_paths,
    read_image_file,
    to_unit_float,
)
from ae_lightning.data.locate import locate
from ae_lightning.data.predict import ImageFiles

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: what to do with an image smaller than ``image_size``: upscale it (with a warning) or refuse it
SmallImages = Literal["upscale", "error"]


@dataclass
class XRaySource:
    """All images of one source, already cropped and resized: ``images`` (N, S, S) float32 in [0, 1]."""

    path: str
    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    official_splits: dict[str, np.ndarray] | None = None
    #: splits a MedMNIST file lacks, with the message naming the missing key
    missing_splits: dict[str, str] | None = None


class MissingSplitError(ValueError):
    """A source has no images for the requested split (a MedMNIST ``.npz`` without ``{split}_images``)."""


def too_small(shape: tuple[int, ...], size: int) -> str | None:
    """``"WxH, smaller than image_size=S"`` when an (…, H, W) image is smaller than ``size``, else ``None``."""
    h, w = shape[-2:]
    return f"{w}x{h}, smaller than the requested image_size={size}" if min(h, w) < size else None


def warn_upscaled(where: str, names: Sequence[str], size: int) -> None:
    """One warning for all images of a source that were upscaled to ``size``."""
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        log.warning(
            "X-rays in %s: %d images smaller than image_size=%d were upscaled (%s); "
            "pass small_images=error to refuse them, or lower image_size", where, len(names), size, shown,
        )


def crop_resize(img: np.ndarray, size: int, where: str, small_images: SmallImages = "upscale") -> np.ndarray:
    """Centre-crop a 2-D float image to a square and resize it to ``size``×``size`` (antialiased).

    An image smaller than ``size`` is upscaled, or refused with ``small_images="error"``.
    """
    h, w = img.shape
    side = min(h, w)
    if side < size and small_images == "error":
        raise ValueError(f"{where} is {too_small(img.shape, size)}; fix: lower image_size, remove the image, "
                         "or pass small_images=upscale")
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    if side != size:
        img = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), Image.LANCZOS))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _gray_stack(arr: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W[, C]) array → (N, H, W) grayscale float in [0, 1]."""
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3].mean(-1).astype(arr.dtype)
    if arr.ndim != 3:
        raise ValueError(f"{where}: expected images of shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    return to_unit_float(arr, where)


def _resize_all(images: np.ndarray, size: int, where: str, small_images: SmallImages = "upscale") -> np.ndarray:
    if images.shape[1:] == (size, size):
        return images.astype(np.float32)
    small = too_small(images.shape, size)
    if small is not None:  # an array's images share one size: one error or one warning for all of them
        if small_images == "error":
            raise ValueError(f"{where}: its {len(images)} images are {small}; fix: lower image_size "
                             "or pass small_images=upscale")
        warn_upscaled(where, [f"all {len(images)} images ({small})"], size)
    return np.stack([crop_resize(im, size, f"{where}[{i}]") for i, im in enumerate(images)])


def _labels_of(data, key: str, n: int, path: Path) -> np.ndarray:
    lab = np.asarray(data[key])
    if lab.size != n and (lab.ndim == 0 or lab.shape[0] != n):
        raise ValueError(f"{path}: '{key}' has shape {lab.shape} but there are {n} images; fix: re-export the file "
                         "with one label per image")
    return lab.reshape(n, -1)[:, 0].astype(np.int64)


def _load_npz(path: Path, size: int, small_images: SmallImages = "upscale") -> XRaySource:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated .npz is a BadZipFile
        raise ValueError(f"cannot read {path}: {err}; expected {LAYOUT}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy saved under an .npz name
        raise ValueError(f"{path} is a single array, not an .npz archive; expected {LAYOUT}")
    with data:  # closed on every path, errors included
        try:
            return _read_npz(data, path, size, small_images)
        except (OSError, EOFError, zipfile.BadZipFile) as err:  # a member that does not decompress
            raise ValueError(f"cannot read {path}: {err}; fix: re-download or re-export the file") from err


def _read_npz(data, path: Path, size: int, small_images: SmallImages) -> XRaySource:
    keys = set(data.files)
    present = [s for s in SPLITS if f"{s}_images" in keys]
    if present:  # MedMNIST layout, official splits: load the ones the file has, name the missing keys
        parts, labels, splits, start = [], [], {}, 0
        for s in present:
            where = f"{path}:{s}_images"
            imgs = _resize_all(_gray_stack(data[f"{s}_images"], where), size, where, small_images)
            lab = _labels_of(data, f"{s}_labels", len(imgs), path) if f"{s}_labels" in keys else np.full(len(imgs), -1)
            parts.append(imgs)
            labels.append(lab.astype(np.int64))
            splits[s] = np.arange(start, start + len(imgs))
            start += len(imgs)
        missing = {
            s: f"{path} has no '{s}_images' array (it holds {', '.join(sorted(keys))}), so there is no official {s} "
               f"split; fix: use the complete MedMNIST file, or an .npz with one 'images' array (split with the seed)"
            for s in SPLITS if s not in splits
        }
        if missing:
            log.warning("X-rays in %s: loaded the %s splits; missing: %s", path, "/".join(present),
                        ", ".join(f"{s}_images" for s in missing))
        images = np.concatenate(parts)
        names = [f"{s}/{i}" for s in present for i in range(len(splits[s]))]
        return XRaySource(str(path), images, np.concatenate(labels), names, splits, missing or None)
    if "images" not in keys:
        raise ValueError(f"{path} has arrays {sorted(keys)} but no 'images'; expected {LAYOUT}")
    images = _resize_all(_gray_stack(data["images"], f"{path}:images"), size, f"{path}:images", small_images)
    if "labels" in keys:
        labels = _labels_of(data, "labels", len(images), path)
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


def _load_folder(root: Path, size: int, small_images: SmallImages = "upscale") -> XRaySource:
    suffixes = IMAGE_SUFFIXES | DICOM_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        others = sorted({p.suffix for p in root.rglob("*") if p.is_file()})
        found = f" (found only {', '.join(others[:6])} files)" if others else " (it is empty)"
        raise DatasetNotFoundError(f"no X-ray images in {root}{found}; expected {LAYOUT}")
    # every file is read and checked before any error: one message names all the bad ones, each with its reason
    arrays, bad, upscaled = [], [], []
    for f in files:
        name = str(f.relative_to(root))
        try:
            img = read_image_file(f)
        except ValueError as err:
            bad.append(f"{name} ({err.__cause__ or err})")
            continue
        small = too_small(img.shape, size)
        if small is not None:
            if small_images == "error":
                bad.append(f"{name} ({small})")
                continue
            upscaled.append(f"{name} ({small})")
        arrays.append(img)
    if bad:
        fix = "replace or remove the corrupt files"
        if any("smaller than" in b for b in bad):
            fix += ", lower image_size or pass small_images=upscale"
        raise ValueError(f"{len(bad)} of {len(files)} X-ray files in {root} cannot be used: {'; '.join(bad)}; fix: {fix}")
    warn_upscaled(str(root), upscaled, size)
    images = np.stack([crop_resize(img, size, str(f)) for img, f in zip(arrays, files, strict=True)])
    names = [str(f.relative_to(root)) for f in files]
    return XRaySource(str(root), images, _labels_from_parents(names), names)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, mtime: float, small_images: SmallImages = "upscale") -> XRaySource:
    p = Path(path)
    return _load_npz(p, size, small_images) if p.is_file() else _load_folder(p, size, small_images)


def load_xray_source(root: str | Path | None, image_size: int = 64, small_images: SmallImages = "upscale") -> XRaySource:
    """Read one source (see module docstring); ``None`` is the embedded chest X-rays.

    Every file of a folder is checked first; one error names all unusable files, each with its reason.
    Images smaller than ``image_size`` are upscaled with one warning, or refused with ``small_images="error"``.
    """
    path = Path(root).expanduser() if root is not None else EMBEDDED / "chest_xray64.npz"
    if not path.exists():
        raise DatasetNotFoundError(
            f"X-ray root {path} does not exist; expected {LAYOUT}; "
            "fix: download the dataset and pass its folder or .npz as root"
        )
    if path.is_file() and path.suffix != ".npz":
        raise ValueError(f"X-ray root {path} is a {path.suffix} file; expected {LAYOUT}")
    if small_images not in ("upscale", "error"):
        raise ValueError(f"small_images must be 'upscale' or 'error', got {small_images!r}")
    return _load_cached(str(path.resolve()), int(image_size), path.stat().st_mtime, small_images)


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


def extra_training_images(extra: XRaySource, held_out_groups: set[str], main_pixels: set[bytes],
                          group_by: str) -> np.ndarray:
    """Indices of ``extra``'s images that may join a training split: not of a held-out group (the groups of the
    main sources' val and test splits under ``group_by``; with ``"image"`` a group is one image, so only
    identity counts) and not pixel-identical to any image of the main sources (``main_pixels``: their bytes),
    which catches the same file in both sets whatever its name (a duplicate of a training image, or a leak)."""
    groups = group_keys(extra.names, group_by, extra.path) if group_by != "image" else [None] * len(extra.names)
    keep = [i for i, (g, im) in enumerate(zip(groups, extra.images, strict=True))
            if g not in held_out_groups and im.tobytes() not in main_pixels]
    return np.asarray(keep, dtype=np.int64)


class XRayDataset(ArrayImageDataset):
    """torchvision-style dataset: ``XRayDataset(root, split, transform, download)``.

    Items are ``(image (1, S, S) float in [0, 1], label)``; ``label`` is the sub-folder class
    index, the file's label, or -1. ``root`` may list several sources (their union). ``extra_train``
    sources add training images (the ``train`` split only) with no group of the val or test split
    (:func:`extra_training_images`); ``names`` holds each image's name in its source.
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
        small_images: SmallImages = "upscale",
        group_by: str = "image",
        extra_train: str | Sequence[str] | None = None,
    ) -> None:
        if download:
            raise ValueError(
                "X-ray sets are not downloaded automatically (each has its own licence); fix: download "
                "e.g. mini-MIAS or the Kermany chest X-rays by hand and pass the folder as root"
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        roots: list[str | Path | None] = [None] if root is None else list(as_paths(root))
        parts, labels, names = [], [], []
        held_out: set[str] = set()  # groups of the main sources' val and test splits
        main_pixels: set[bytes] = set()
        for k, r in enumerate(roots):
            src = load_xray_source(r, image_size, small_images)
            idx = split_source(src, val_fraction, test_fraction, seed, group_by)
            if split not in idx:
                raise MissingSplitError((src.missing_splits or {}).get(split, f"{src.path} has no {split} split"))
            chosen = idx[split]
            if split == "train" and train_size is not None:
                # cap the union, sharing it across sources in proportion to their sizes
                share = train_size if len(roots) == 1 else max(1, round(train_size / len(roots)))
                chosen = take_train_subset(chosen, share, src.path)
            parts.append(src.images[chosen])
            # a single source keeps its own labels; a union is labelled by source index
            labels.append(src.labels[chosen] if len(roots) == 1 else np.full(len(chosen), k, dtype=np.int64))
            names += [src.names[i] for i in chosen]
            if split == "train" and extra_train is not None and group_by != "image":
                keys = group_keys(src.names, group_by, src.path)
                held_out |= {keys[i] for s in ("val", "test") for i in idx.get(s, [])}
            if split == "train" and extra_train is not None:
                main_pixels |= {im.tobytes() for im in src.images}
        if split == "train" and extra_train is not None:
            for r in as_paths(extra_train):
                src = load_xray_source(r, image_size, small_images)
                keep = extra_training_images(src, held_out, main_pixels, group_by)
                log.info("X-rays in %s: %d of %d images join the training split (the rest share a group with the "
                         "val/test splits or repeat an image of the main sources)", src.path, len(keep), len(src.images))
                main_pixels |= {src.images[i].tobytes() for i in keep}  # one copy of an image listed twice
                parts.append(src.images[keep])
                labels.append(src.labels[keep])
                names += [src.names[i] for i in keep]
        images = torch.from_numpy(np.concatenate(parts)).unsqueeze(1)  # (N, 1, S, S)
        super().__init__(images, torch.from_numpy(np.concatenate(labels)), transform)
        self.split = split
        #: each image's name in its source (``CLASS/file`` for the Kermany X-rays), in dataset order
        self.names = names


class XRayDataModule(ImageDataModule):
    """Grayscale X-rays in [0, 1] at ``image_size``², with seeded train/val/test splits.

    Args:
        root: a folder, an ``.npz``, a MedMNIST ``.npz``, or a list of them (their union);
            ``None``: the lookup order (``$AE_XRAY_ROOT``, ``data/xray``, else the embedded real chest X-rays).
        image_size: side of the square output images.
        train_size: optional cap on training images (Gondara 2016 trained on ~300).
        hflip: random horizontal flips of training images.
        group_by: what must not straddle two splits: ``"image"`` (split by image), ``"parent"`` (the
            parent folder) or a regex over the file names, e.g. ``ae_lightning.data.common.KERMANY_PATIENT``
            (``person\\d+_|(?:NORMAL2-)?IM-\\d+-``) for a split by patient of the Kermany chest X-rays.
        predict_root: a folder, image file or ``.npz`` (or a list) that ``ae-lightning predict`` applies the model
            to, every image at its own size and bit depth (:class:`~ae_lightning.data.predict.ImageFiles`);
            ``None``: the test split.
        small_images: ``upscale`` images smaller than ``image_size`` (one warning lists them) or
            ``error`` (refuse them; the error lists them).
        extra_train: sources (as ``root``) whose images join the training split only, minus every image of a
            group (``group_by``: the patient) that has images in ``root``'s val or test split and every image
            identical to one of ``root``'s (:func:`extra_training_images`); val and test stay ``root``'s, so model
            choice and scores use only them. E.g. ``root: null`` (the embedded X-rays, split by patient) with
            ``extra_train: [kermany_64.npz]`` trains on the larger set without a val/test patient.

    A MedMNIST ``.npz`` missing some official splits loads the ones it has; asking for a missing one
    (e.g. ``test`` after ``fit``) raises an error naming the missing key.
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
        small_images: SmallImages = "upscale",
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | list[str] | None = None,
        group_by: str = "image",
        extra_train: str | list[str] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.image_shape = (1, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.hparams.predict_root is not None:
            # images to apply a trained model to, at their own size (ae_lightning.data.predict)
            self.predict_set = ImageFiles(self.hparams.predict_root)
            return
        if self.train_set is not None or self.unavailable:
            return
        hp = self.hparams
        located = locate("xray", hp.root)
        root = None if located.root is None else (
            [str(r) for r in located.root] if isinstance(located.root, list) else str(located.root))
        #: where the images came from, by the lookup order of :mod:`ae_lightning.data.locate`
        self.source = f"{root} ({located.describe()})" if root else "the embedded chest X-rays (800 images)"
        common = dict(image_size=hp.image_size, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
                      seed=self.seed, small_images=hp.small_images, group_by=hp.group_by)
        extra = {"train": dict(transform=random_hflip if hp.hflip else None, train_size=hp.train_size,
                               extra_train=hp.extra_train)}
        for split in SPLITS:
            try:
                setattr(self, f"{split}_set", XRayDataset(root, split, **common, **extra.get(split, {})))
            except MissingSplitError as err:  # the loader of this split raises it, the others work
                self.unavailable[split] = str(err)
        log.info(
            "X-rays from %s: %s images at %dx%d", self.source,
            " / ".join(f"{len(d)} {s}" for s in SPLITS if (d := getattr(self, f"{s}_set")) is not None),
            hp.image_size, hp.image_size,
        )
