"""Stream images from LitData's optimised chunks: datasets larger than a disk, read from a folder or a bucket.

The chunks are written by :mod:`ae_lightning.data.optimize` (one LitData dataset per split, the source
DataModule's split rule); :class:`StreamingImageDataModule` reads them with ``litdata.StreamingDataset`` /
``StreamingDataLoader`` and yields the batches the folder DataModules yield, so every model trains on
them unchanged:

- ``kind="xray"``: ``(image (B, 1, S, S), label (B,))`` as :class:`~ae_lightning.data.xray.XRayDataModule`;
- ``kind="utkface"``: ``(image (B, 3, S, S), {"age", "age_group", "gender", "race"})`` as
  :class:`~ae_lightning.data.utkface.UTKFaceDataModule`;
- ``kind="celeba"``: ``(image (B, 3, S, S), attributes (B, A) float)`` as
  :class:`~ae_lightning.data.celeba.CelebADataModule`.

What LitData does for us: under DDP each rank streams its own share of the chunks, shuffled by
``(seed, epoch)``, every rank the same number of items (``drop_last``); a remote ``root``
(``s3://bucket/prefix``, also ``gs://``, ``azure://``) is downloaded chunk by chunk into ``cache_dir``
(bounded by ``max_cache_size``); and the training loader is stateful (``state_dict`` /
``load_state_dict``), which Lightning's fit loop saves in every checkpoint and restores on
``--ckpt_path last``, so a resumed run continues mid-epoch with the items it had not yet trained on.

Example::

    python -m ae_lightning.data.optimize --kind xray --src data/chest_xray --out data/chest_xray64
    ae-lightning fit --config configs/dae_xray64.yaml --config configs/data/xray64_streaming.yaml \
        --data.init_args.root data/chest_xray64
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import default_collate

from ae_lightning.data.common import ImageDataModule, random_hflip
from ae_lightning.data.files import DatasetNotFoundError
from ae_lightning.data.optimize import KINDS, SPLITS, require_litdata, unpack_pixels

log = logging.getLogger(__name__)

HOW_TO_GET = ("convert a folder once with `python -m ae_lightning.data.optimize --kind KIND --src FOLDER --out ROOT` "
              "(it writes ROOT/train, ROOT/val, ROOT/test), then pass ROOT (a folder or an s3:// URL)")


@dataclass(frozen=True)
class DecodeItem:
    """A stored item (``{"image", "label", "name", "group"}``) → what the folder dataset of ``kind`` yields.

    Picklable: LitData applies it in its DataLoader workers. ``with_name`` appends the item's name
    (``(image, target, name)``: ``images_of`` / ``labels_of`` still read the first two) for checks.
    """

    kind: str
    image_size: int
    crop_size: int = 148
    hflip: bool = False
    with_name: bool = False

    def __call__(self, item: dict[str, Any]):
        image = item["image"]
        stored = "pixels" if isinstance(image, np.ndarray) else "JPEG bytes"
        if (self.kind == "xray") != (stored == "pixels"):
            raise ValueError(f"item {item['name']!r} holds {stored} but kind={self.kind!r}; fix: pass the kind the "
                             "chunks were converted with (see ae_lightning_optimize.json beside them)")
        x, target = getattr(self, self.kind)(image, item)
        return (x, target, item["name"]) if self.with_name else (x, target)

    def xray(self, image: np.ndarray, item) -> tuple[torch.Tensor, int]:
        from ae_lightning.data.xray import crop_resize

        img = unpack_pixels(image)  # (H, W) float32 in [0, 1], bit for bit the folder DataModule's
        if img.shape != (self.image_size, self.image_size):  # converted at another --image-size
            img = crop_resize(img, self.image_size, item["name"])
        x = torch.from_numpy(img).unsqueeze(0)  # (1, S, S)
        return random_hflip(x) if self.hflip else x, int(item["label"])

    def utkface(self, image: bytes, item) -> tuple[torch.Tensor, dict[str, int]]:
        from ae_lightning.data.utkface import age_group, load_face

        x = load_face(io.BytesIO(image), self.image_size)  # (3, S, S), as UTKFaceDataset decodes the file
        age, gender, race = (int(v) for v in item["label"])
        target = {"age": age, "age_group": age_group(age), "gender": gender, "race": race}
        return random_hflip(x) if self.hflip else x, target

    def celeba(self, image: bytes, item) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        from ae_lightning.data.celeba import face_transform

        with Image.open(io.BytesIO(image)) as im:  # torchvision's CelebA opens the file the same way
            x = face_transform(self.image_size, self.crop_size, self.hflip)(im)  # (3, S, S)
        return x, torch.as_tensor(np.asarray(item["label"]), dtype=torch.float32)  # (A,)


def split_dir(root: str, split: str) -> str:
    """``root/split``, a local path or a URL."""
    return root.rstrip("/") + "/" + split if "://" in root else str(Path(root).expanduser() / split)


def streaming_dataset(root: str, split: str, decode: DecodeItem, *, shuffle: bool = False, seed: int = 0,
                      drop_last: bool | None = None, cache_dir: str | None = None, max_cache_size: str | None = None,
                      storage_options: dict | None = None):
    """A ``litdata.StreamingDataset`` over ``root/split`` whose items pass through ``decode``.

    A local root without ``split/index.json`` raises :class:`DatasetNotFoundError` (before LitData is
    imported, so a config pointing at absent data says so even where LitData is not installed).
    """
    path = split_dir(root, split)
    if "://" not in path and not (Path(path) / "index.json").is_file():
        raise DatasetNotFoundError(f"no LitData chunks at {path} (no index.json); fix: {HOW_TO_GET.replace('ROOT', root)}")
    litdata = require_litdata()
    extra = {"max_cache_size": max_cache_size} if max_cache_size is not None else {}
    return litdata.StreamingDataset(path, cache_dir=cache_dir, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                    transform=decode, storage_options=storage_options or {}, **extra)


@functools.cache
def resumable_loader_class():
    """``litdata.StreamingDataLoader`` that also resumes right when Lightning drives it (created on first use:
    LitData is optional).

    After ``load_state_dict`` LitData sets ``restore`` and clears it only when an iteration runs to its
    end. Lightning ends an epoch by count (it knows the loader's length), so the resumed epoch's iterator is
    never exhausted, ``restore`` stays set, and the *next* epoch would continue the stale position (a batch
    or two, then stop) instead of starting a new shuffled epoch (litData#770). Here only the first
    iteration after ``load_state_dict`` resumes; every later one starts a fresh epoch.
    """
    from litdata import StreamingDataLoader

    class ResumableStreamingDataLoader(StreamingDataLoader):
        _resuming = False

        def load_state_dict(self, obj: dict[str, Any]) -> None:
            super().load_state_dict(obj)
            self._resuming = True

        def __iter__(self):
            if not self._resuming:
                self.restore = False  # left set by a resumed epoch that was not iterated to its end
            self._resuming = False
            return super().__iter__()

    return ResumableStreamingDataLoader


class StreamingImageDataModule(ImageDataModule):
    """Images streamed from LitData chunks (:mod:`ae_lightning.data.optimize`), batches as the folder DataModules'.

    Args:
        root: the converter's ``--out``: a folder or a URL (``s3://bucket/prefix``) holding ``train/``,
            ``val/`` and ``test/``.
        kind: what the chunks hold: ``xray``, ``utkface`` or ``celeba`` (the converter's ``--kind``).
        image_size: side of the square images (X-rays stored at another size are resized on the fly).
        crop_size: CelebA's centre crop before resizing (as :class:`~ae_lightning.data.celeba.CelebADataModule`).
        hflip: random horizontal flips of training images.
        shuffle: shuffle the training items (by LitData, per ``(seed, epoch)``; across ranks under DDP).
        drop_last: LitData's: drop the training items that would give ranks unequal counts; ``None``
            (default) is LitData's choice: on under DDP (collectives need equal step counts), off otherwise.
        cache_dir: where chunks of a remote ``root`` are downloaded to (``None``: LitData's default).
        max_cache_size: bound on that cache, e.g. ``"50GB"`` (``None``: LitData's default).
        storage_options: passed to LitData's cloud client (e.g. an S3 ``endpoint_url``).
        label_dim: the label vector's length for conditional models (CelebA: the converted attributes).
    """

    def __init__(
        self,
        root: str = "data/chest_xray64_chunks",
        kind: Literal["xray", "utkface", "celeba"] = "xray",
        image_size: int = 64,
        crop_size: int = 148,
        batch_size: int = 32,
        hflip: bool = False,
        shuffle: bool = True,
        drop_last: bool | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict | None = None,
        label_dim: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.save_hyperparameters()
        self.image_shape = (1 if kind == "xray" else 3, image_size, image_size)
        if label_dim is not None:
            self.label_dim = label_dim

    def _dataset(self, split: str, train: bool = False):
        hp = self.hparams
        decode = DecodeItem(hp.kind, hp.image_size, hp.crop_size, hflip=hp.hflip and train)
        return streaming_dataset(hp.root, split, decode, shuffle=hp.shuffle and train, seed=self.seed,
                                 drop_last=hp.drop_last if train else False, cache_dir=hp.cache_dir,
                                 max_cache_size=hp.max_cache_size, storage_options=hp.storage_options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._dataset("train", train=True)
        self.val_set, self.test_set = self._dataset("val"), self._dataset("test")
        log.info("streaming %s from %s: %s items", self.hparams.kind, self.hparams.root,
                 " / ".join(f"{len(getattr(self, f'{s}_set'))} {s}" for s in SPLITS))

    def _loader(self, dataset, shuffle: bool, split: str = "train"):
        """A ``litdata.StreamingDataLoader`` (stateful: Lightning's fit loop saves its position in every
        checkpoint and restores it on resume; see :func:`resumable_loader_class`); the dataset was
        built with its shuffle and drop_last, the collation is PyTorch's, as for the folder DataModules."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        require_litdata()
        return resumable_loader_class()(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                           collate_fn=default_collate, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=self.num_workers > 0)
