"""Images to apply a trained model to: every file the X-ray DataModule reads, at its own size, no splits.

``ImageFiles(root)`` lists a folder tree (or one file, or an ``.npz`` with an ``images`` array) of
``.png .jpg .jpeg .pgm .tif .tiff .bmp`` 8- or 16-bit images and ``.dcm`` (with ``pydicom``), and yields
``(image (1, H, W) float in [0, 1], meta)`` where ``meta`` holds what the
:class:`~ae_lightning.callbacks.PredictionWriter` needs to write the output beside its input's name:
``name`` (the path relative to ``root``), ``height``, ``width`` and ``bits`` (8 or 16; DICOM's
``BitsStored`` above 8 counts as 16). Nothing is resized here: the model decides
(:meth:`~ae_lightning.models.Autoencoder.reconstruct_full` runs denoisers at full resolution, codes are
taken at the nets' size). Used by ``XRayDataModule(predict_root=...)``::

    ae-lightning predict --config configs/dae_xray64.yaml --ckpt_path last.ckpt \\
        --data.init_args.predict_root ~/xrays/full_size
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ae_lightning.data.files import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    LAYOUT,
    DatasetNotFoundError,
    as_paths,
    read_image_file,
    to_unit_float,
)

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def image_bits(path: Path) -> int:
    """8 or 16: the bit depth an output written for ``path`` keeps (reads the header only)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        return 16 if int(getattr(pydicom.dcmread(str(path), stop_before_pixels=True), "BitsStored", 16)) > 8 else 8
    with Image.open(path) as im:
        return 16 if im.mode in HIGH_BIT_MODES else 8


class ImageFiles(Dataset):
    """Every image under ``root`` (a folder tree, one image file, an ``.npz``, or a list of them) at its own size.

    Items: ``(image (1, H, W) float32 in [0, 1], {"name", "height", "width", "bits"})``; files are read
    when asked for (a folder of 4k radiographs is not held in memory).
    """

    def __init__(self, root: str | Path | Sequence[str | Path]) -> None:
        self.items: list[tuple[str, Path | np.ndarray, int]] = []  # (name, file or array, bits)
        suffixes = IMAGE_SUFFIXES | DICOM_SUFFIXES
        for path in as_paths(root):
            if not path.exists():
                raise DatasetNotFoundError(f"predict root {path} does not exist; expected {LAYOUT}, or one image file")
            if path.suffix == ".npz":
                self.items += self._npz_items(path)
            elif path.is_file():
                self.items.append((path.name, path, 0))
            else:
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
                if not files:
                    raise DatasetNotFoundError(f"no images in {path}; expected {LAYOUT}")
                self.items += [(str(f.relative_to(path)), f, 0) for f in files]

    @staticmethod
    def _npz_items(path: Path) -> list[tuple[str, np.ndarray, int]]:
        try:
            data = np.load(path, allow_pickle=False)
            images = data["images"]
            names = [str(n) for n in data["names"]] if "names" in data.files else [f"{i:06d}" for i in range(len(images))]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"cannot read {path}: {err}; expected an .npz with an 'images' array (N, H, W)") from err
        bits = 16 if images.dtype == np.uint16 else 8
        return [(f"{Path(n).with_suffix('')}.png", img, bits) for n, img in zip(names, images, strict=True)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        name, source, bits = self.items[i]
        if isinstance(source, Path):
            img, bits = read_image_file(source), image_bits(source)
        else:
            img = to_unit_float(source, name)
        x = torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(0)  # (1, H, W)
        return x, {"name": name, "height": x.shape[1], "width": x.shape[2], "bits": bits}


def predict_loader(dataset: Dataset, num_workers: int = 0) -> DataLoader:
    """One image per batch: the images of a folder differ in size (the model tiles large ones itself)."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers)
