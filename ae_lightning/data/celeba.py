"""CelebA faces (Liu et al. 2015) on ``torchvision.datasets.CelebA``: aligned crops, chosen attributes.

Getting the data: torchvision's ``download=True`` fetches from Google Drive, which often refuses
with a quota error ("too many users have viewed or downloaded this file"), so it is off by
default. Download by hand from the CelebA page (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html,
"Align&Cropped Images" and the annotation files; Google Drive or Baidu mirrors) and place::

    <root>/celeba/img_align_celeba/000001.jpg … 202599.jpg      (unzip img_align_celeba.zip)
    <root>/celeba/list_attr_celeba.txt
    <root>/celeba/identity_CelebA.txt
    <root>/celeba/list_bbox_celeba.txt
    <root>/celeba/list_landmarks_align_celeba.txt
    <root>/celeba/list_eval_partition.txt

torchvision checks the five ``.txt`` files against the official MD5 sums (``verify_md5=True``).
Images are centre-cropped (148 px, the usual crop of the 178×218 aligned faces) and resized to
``image_size`` (64); splits are the official train/valid/test partition (162,770 / 19,867 / 19,962).
Labels are the chosen attributes as a float vector in {0, 1} (e.g. the condition of a CVAE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torchvision
from torch.utils.data import Subset
from torchvision import transforms

from ae_lightning.data.common import ImageDataModule, take_train_subset
from ae_lightning.data.files import DatasetNotFoundError

log = logging.getLogger(__name__)

LIST_FILES = (
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "list_eval_partition.txt",
)
IMAGE_DIR = "img_align_celeba"
SPLITS = {"train": "train", "val": "valid", "test": "test"}
HOW_TO_GET = (
    "download 'Align&Cropped Images' (img_align_celeba.zip) and the annotation .txt files by hand from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive/Baidu links; torchvision's download=True "
    "uses Google Drive, which often fails with a quota error), unzip the images into root/celeba/img_align_celeba/ "
    f"and put {', '.join(LIST_FILES)} in root/celeba/"
)


def missing_celeba_files(root: str | Path) -> list[str]:
    """The required CelebA files and folders absent under ``root/celeba`` (empty when complete)."""
    base = Path(root).expanduser() / "celeba"
    missing = [str(base / f) for f in LIST_FILES if not (base / f).is_file()]
    images = base / IMAGE_DIR
    if not images.is_dir() or next(images.iterdir(), None) is None:
        missing.append(str(images) + "/ (the aligned .jpg images)")
    return missing


class CelebAFaces(torchvision.datasets.CelebA):
    """``torchvision.datasets.CelebA`` with attribute selection, a clear missing-file error and a
    switch for the MD5 check.

    Args:
        root: folder holding ``celeba/`` (see the module docstring for the layout).
        split: ``train``, ``valid``, ``test`` or ``all`` (the official partition).
        attributes: attribute names to return as the label (float vector in {0, 1}); ``None``: all 40.
        verify_md5: check the five annotation files against torchvision's MD5 sums. Turn it off
            only for files you know are right but differ in bytes (e.g. re-saved with other line
            endings) or for synthetic test data.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        attributes: Sequence[str] | None = None,
        transform: Callable | None = None,
        download: bool = False,
        verify_md5: bool = True,
    ) -> None:
        self.verify_md5 = verify_md5
        if not download:
            missing = missing_celeba_files(root)
            if missing:
                raise DatasetNotFoundError(
                    f"CelebA files missing under {Path(root).expanduser() / 'celeba'}: {', '.join(missing)}; "
                    f"fix: {HOW_TO_GET}"
                )
        if split not in ("train", "valid", "test", "all"):
            raise ValueError(f"split must be one of train, valid, test, all; got {split!r}")
        try:
            # always read "all" and select the split here: torchvision's own split selection crashes on a
            # split with exactly one image (a 0-d tensor after squeeze: "iteration over a 0-d tensor")
            super().__init__(str(root), split="all", target_type="attr", transform=transform, download=download)
        except RuntimeError as err:
            if "corrupted" not in str(err):
                raise
            bad = [f for _, md5, f in self.file_list if f.endswith(".txt") and not self._md5_ok(f, md5)]
            raise DatasetNotFoundError(
                f"CelebA annotation files under {Path(root).expanduser() / 'celeba'} do not match the official "
                f"MD5 sums: {', '.join(bad)}; fix: re-download them ({HOW_TO_GET}), or pass verify_md5=False "
                "if you know they are the right files saved differently"
            ) from err
        except (ValueError, IndexError) as err:  # a row with a missing or non-integer field
            raise ValueError(
                f"cannot parse the CelebA annotation files under {Path(root).expanduser() / 'celeba'}: {err}; "
                f"fix: re-download them ({HOW_TO_GET})"
            ) from err
        self._select_split(split)
        # the official list_attr_celeba.txt header line ends with a space: csv.reader gives a 41st, empty name
        names = [n for n in self.attr_names if n]
        attr_file = Path(root).expanduser() / "celeba" / "list_attr_celeba.txt"
        if len(names) != self.attr.shape[1]:
            raise ValueError(
                f"{attr_file} names {len(names)} attributes in its header but its rows have {self.attr.shape[1]} "
                f"values; fix: re-download it ({HOW_TO_GET})"
            )
        self.attr_names = names
        chosen = list(attributes) if attributes is not None else names
        unknown = [a for a in chosen if a not in names]
        if unknown:
            raise ValueError(f"unknown CelebA attributes {unknown}; choose from {names}")
        self.attributes = chosen
        self.attr_index = torch.tensor([names.index(a) for a in chosen], dtype=torch.long)

    def _select_split(self, split: str) -> None:
        """Keep the rows of ``split`` (the official partition); checks that the list files agree."""
        base = Path(self.root) / self.base_folder
        partition = self._load_csv("list_eval_partition.txt")
        tables = {"identity_CelebA.txt": self.identity, "list_bbox_celeba.txt": self.bbox,
                  "list_landmarks_align_celeba.txt": self.landmarks_align, "list_attr_celeba.txt": self.attr}
        for name, table in tables.items():
            if len(table) != len(partition.index):
                raise ValueError(
                    f"{base / name} has {len(table)} rows but {base / 'list_eval_partition.txt'} lists "
                    f"{len(partition.index)} images; fix: re-download the annotation files ({HOW_TO_GET})"
                )
        if split == "all":
            return
        rows = torch.nonzero(partition.data[:, 0] == {"train": 0, "valid": 1, "test": 2}[split]).flatten()  # (N,)
        self.filename = [partition.index[i] for i in rows.tolist()]
        self.identity, self.bbox = self.identity[rows], self.bbox[rows]
        self.landmarks_align, self.attr = self.landmarks_align[rows], self.attr[rows]

    def _md5_ok(self, filename: str, md5: str) -> bool:
        return torchvision.datasets.utils.check_integrity(str(Path(self.root) / self.base_folder / filename), md5)

    def _check_integrity(self) -> bool:
        # torchvision's check compares the annotation files with the official MD5 sums; without
        # verify_md5 the files only have to exist (our own check above has already made sure)
        if self.verify_md5:
            return super()._check_integrity()
        base = Path(self.root) / self.base_folder
        return all((base / f).is_file() for f in LIST_FILES) and (base / IMAGE_DIR).is_dir()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, attr = super().__getitem__(index)
        return image, attr[self.attr_index].float()  # (C, S, S), (A,)


def face_transform(image_size: int = 64, crop_size: int = 148, hflip: bool = False) -> Callable:
    """Centre crop → resize (antialiased) → tensor in [0, 1], optionally with random horizontal flips."""
    steps: list[Callable] = [transforms.CenterCrop(crop_size), transforms.Resize(image_size, antialias=True)]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


class CelebADataModule(ImageDataModule):
    """CelebA aligned faces as ``(3, image_size, image_size)`` floats in [0, 1] with attribute labels.

    Args:
        root: folder holding ``celeba/`` (layout in the module docstring).
        attributes: attribute names for the label vector, e.g. ``[Male, Smiling, Eyeglasses]``; ``None``: all 40.
        image_size, crop_size: centre crop to ``crop_size`` then resize to ``image_size``.
        train_size: optional cap on training images (the first ones of the official partition).
        hflip: random horizontal flips of training images.
        download: try torchvision's Google-Drive download in ``prepare_data`` (often fails: see above).
        verify_md5: check the annotation files' MD5 sums (see :class:`CelebAFaces`).
        drop_last: drop the last incomplete training batch (a warning says when that leaves none).
    """

    def __init__(
        self,
        root: str = "data",
        attributes: list[str] | None = None,
        image_size: int = 64,
        crop_size: int = 148,
        batch_size: int = 64,
        train_size: int | None = None,
        hflip: bool = False,
        download: bool = False,
        verify_md5: bool = True,
        drop_last: bool = False,
        num_workers: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, drop_last=drop_last)
        self.save_hyperparameters()
        if crop_size < image_size:
            log.warning("crop_size %d < image_size %d: faces will be upsampled", crop_size, image_size)
        self.image_shape = (3, image_size, image_size)
        self.label_dim = len(attributes) if attributes is not None else 40

    def prepare_data(self) -> None:
        if self.hparams.download:
            torchvision.datasets.CelebA(self.hparams.root, split="all", target_type="attr", download=True)

    def _dataset(self, split: str, hflip: bool = False) -> CelebAFaces:
        hp = self.hparams
        return CelebAFaces(
            hp.root, SPLITS[split], attributes=hp.attributes, verify_md5=hp.verify_md5,
            transform=face_transform(hp.image_size, hp.crop_size, hflip),
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train = self._dataset("train", hflip=hp.hflip)
        if hp.train_size is not None:
            train = Subset(train, take_train_subset(torch.arange(len(train)).numpy(), hp.train_size, "CelebA").tolist())
        self.train_set, self.val_set, self.test_set = train, self._dataset("val"), self._dataset("test")
        log.info(
            "CelebA from %s: %d train / %d val / %d test faces at %dx%d, attributes %s",
            hp.root, len(self.train_set), len(self.val_set), len(self.test_set), hp.image_size, hp.image_size,
            hp.attributes or "all 40",
        )
