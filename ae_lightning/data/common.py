"""Pieces shared by the DataModules: in-memory image datasets, seeded splits, loaders."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

EMBEDDED = Path(__file__).parent / "embedded"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the DataModule looks; the message names the path, the
    expected layout and how to get the data. Tests and tools can tell "data absent" from a bug."""


class ArrayImageDataset(Dataset):
    """``(image, label)`` pairs from an in-memory ``(N, C, H, W)`` float tensor in [0, 1].

    ``transform`` is applied to each ``(C, H, W)`` image tensor.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        self.images = images
        self.labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]  # (C, H, W)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def seeded_split(
    n: int, val_fraction: float, test_fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(train, val, test)`` of a seeded permutation of ``range(n)``.

    Raises one clear error when a split would be empty.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1"
        )
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    need = [(val_fraction, n_val, "val"), (test_fraction, n_test, "test")]
    if n_train < 1 or any(frac > 0 and k < 1 for frac, k, _ in need):
        minimum = int(np.ceil(1 / min(f for f in (val_fraction, test_fraction, 1.0) if f > 0))) + 1
        raise ValueError(
            f"{what} has {n} images, too few for val_fraction={val_fraction}, test_fraction={test_fraction}: "
            f"need at least {minimum} images so that every split is non-empty"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


KERMANY_PATIENT = r"person\d+_|(?:NORMAL2-)?IM-\d+-"
"""The patient id in the Kermany chest X-ray file names: ``PNEUMONIA/person23_bacteria_77.jpeg`` (patient
``person23_``), ``NORMAL/IM-0117-0001.jpeg`` (``IM-0117-``) and ``NORMAL/NORMAL2-IM-0135-0001.jpeg``
(``NORMAL2-IM-0135-``, a different numbering)."""


def group_keys(names: Sequence[str], group_by: str, what: str) -> list[str]:
    """The group (patient) of every name under ``group_by``: ``"image"`` (each image its own group),
    ``"parent"`` (the parent folder, e.g. one folder per patient) or a regex whose first match in the name
    is the key (its first capture group when it has one, else the whole match).

    Example::

        group_keys(["P/person3_virus_1.jpeg", "P/person3_bacteria_2.jpeg"], KERMANY_PATIENT, "x")
        # ['person3_', 'person3_']

    A name the regex does not match is an error (a guessed group could put one patient in two splits).
    """
    if group_by == "image":
        return [str(i) for i in range(len(names))]
    if group_by == "parent":
        return [str(Path(n).parent) for n in names]
    pattern = re.compile(group_by)
    keys, missed = [], []
    for n in names:
        m = pattern.search(str(n))
        if m is None:
            missed.append(str(n))
            continue
        keys.append(m.group(1) if pattern.groups and m.group(1) is not None else m.group(0))
    if missed:
        raise ValueError(
            f"{what}: group_by={group_by!r} matches no group in {len(missed)} of {len(names)} names "
            f"(e.g. {missed[:3]}); fix: a regex that matches every name, 'parent' or 'image'"
        )
    return keys


def grouped_split(
    groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(train, val, test)`` with no group in two splits: the groups in a seeded order fill the
    test split up to ``test_fraction`` of the images, then val, the rest is train. With one image per
    group it is :func:`seeded_split`. Each split lists its images group by group in that seeded order,
    so its first ``k`` images are a seeded choice of whole groups (``take_train_subset``)."""
    n = len(groups)
    tr, va, te = seeded_split(n, val_fraction, test_fraction, seed, what)  # checks fractions and sizes
    uniq, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    if len(uniq) == n:
        return tr, va, te
    order = np.random.default_rng(seed).permutation(len(uniq))
    members = [np.flatnonzero(inverse == g) for g in order]
    targets = [len(te), len(va)]
    out: list[list[np.ndarray]] = [[], [], []]  # test, val, train
    filled = [0, 0]
    for m in members:
        k = 0 if filled[0] < targets[0] else 1 if filled[1] < targets[1] else 2
        out[k].append(m)
        if k < 2:
            filled[k] += len(m)
    test, val, train = (np.concatenate(o) if o else np.empty(0, dtype=np.int64) for o in out)
    if not len(train) or (val_fraction > 0 and not len(val)) or (test_fraction > 0 and not len(test)):
        raise ValueError(f"{what} has {len(uniq)} groups ({n} images), too few for a split by group with "
                         f"val_fraction={val_fraction}, test_fraction={test_fraction}")
    return train, val, test


def take_train_subset(idx: np.ndarray, train_size: int | None, what: str) -> np.ndarray:
    """The first ``train_size`` of the (already shuffled) training indices."""
    if train_size is None:
        return idx
    if train_size < 1 or train_size > len(idx):
        raise ValueError(f"train_size={train_size} but {what} has {len(idx)} training images after the split")
    return idx[:train_size]


class ImageDataModule(L.LightningDataModule):
    """Loaders over ``self.train_set`` / ``val_set`` / ``test_set``, which subclasses fill in ``setup``."""

    image_shape: tuple[int, int, int]

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


def as_paths(root: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(root, str | Path):
        return [Path(root).expanduser()]
    return [Path(r).expanduser() for r in root]
