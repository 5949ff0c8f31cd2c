"""MNIST DataModule on ``torchvision.datasets.MNIST``, with an offline fallback to the test set.

Where the data may come from, in order:

The folder is found by :func:`ae_lightning.data.locate.locate` (``root``, else ``$AE_MNIST_ROOT``, else
``data/mnist`` when it exists, else — with ``download=True`` — ``data/mnist`` downloaded by torchvision,
else the embedded digits). What the folder holds decides the split:

1. the full set in torchvision's layout ``root/MNIST/raw/{train,t10k}-*-ubyte`` (``download=True``
   fetches it there when online): train is split into train/val with ``seed``; test is the official
   10k test set.
2. only the 10k test files (``t10k-images-idx3-ubyte[.gz]`` and labels, in ``root`` or
   ``root/MNIST/raw``): they are split into train/val/test with ``seed``, and a warning says so.
3. nothing found: the embedded official MNIST test set (all 10,000 digits, bytes unchanged), split
   the same way as 2 — so a quick run on a fresh clone reads the same digits as one on the t10k files.

Semi-supervised option (``labelled_per_class=N``): after the split, ``N`` training images per class keep
their labels (a seeded choice); every other training image gets the label **-1** ("unlabelled": one tensor
of labels, no separate mask, the convention :class:`~ae_lightning.data.common.ArrayImageDataset` uses for
data without labels and the models' ``labels >= 0`` tests read). Each training batch then holds
``round(labelled_batch_share * batch_size)`` images from the small labelled pool (at least 1, at most
``batch_size - 1``) and unlabelled images for the rest; an epoch is one pass over the unlabelled images.
Validation and test images keep their labels. Models that need every label (the conditional VAE) stop on
the first batch with "class labels must lie in [0, 10)"; unconditional ones ignore the labels::

    dm = MNISTDataModule(root="~/mnist", labelled_per_class=10, labelled_batch_share=0.5)  # 100 labels
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch
import torchvision

from ae_lightning.data.common import (
    EMBEDDED,
    ArrayImageDataset,
    ImageDataModule,
    seeded_split,
    take_train_subset,
)
from ae_lightning.data.files import DatasetNotFoundError
from ae_lightning.data.locate import Located, locate

#: the labelled pool is drawn with ``seed + LABELLED_SEED_OFFSET``: another draw than the split's permutation
LABELLED_SEED_OFFSET = 7919

log = logging.getLogger(__name__)

#: how a run's source names the embedded digits
EMBEDDED_DIGITS = "the embedded MNIST test set (10,000 digits)"
LAYOUT = "root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision layout)"


#: the full IDX magic numbers of the MNIST files: 0x00000803 (uint8, 3-D images), 0x00000801 (uint8, 1-D labels)
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array; one clear error if it is not IDX.

    ``magic``: the full 4-byte magic number the file must carry (:data:`IMAGES_MAGIC` or
    :data:`LABELS_MAGIC`); ``None`` accepts any unsigned-byte IDX file of 1–4 dimensions.
    """
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read MNIST file {path}: {err}; re-download it (download=True) or replace it") from err
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    valid = found is not None and raw[:3] == b"\x00\x00\x08" and 1 <= raw[3] <= 4
    if not valid or (magic is not None and found != magic):
        want = f"{magic} (0x{magic:08x})" if magic is not None else "0x000008NN (unsigned-byte IDX, NN = 1..4 dimensions)"
        got = "a file shorter than 4 bytes" if found is None else f"{found} (0x{found:08x})"
        raise ValueError(
            f"{path} has a bad magic number: expected {want}, found {got}; "
            "fix: it is not the right MNIST file (images and labels swapped, or another file) — "
            "re-download the official files (download=True)"
        )
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{path} is truncated inside its header ({len(raw)} bytes); fix: re-download it (download=True)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - offset != int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated: header says {dims}, file has {len(raw) - offset} data bytes; "
            "fix: re-download it (download=True)"
        )
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An images file and its labels file, checked against each other (same count)."""
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST images and labels do not match: {images_path} holds {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels; fix: re-download both files (download=True) "
            "so that they come from the same release"
        )
    return images, labels


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root / "MNIST" / "raw", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


class MNISTDataModule(ImageDataModule):
    """MNIST digits as ``(1, 28, 28)`` floats in [0, 1] with their labels.

    Args:
        root: dataset folder (see module docstring); ``None``: the lookup order (``$AE_MNIST_ROOT``,
            ``data/mnist``, the download, the embedded digits).
        download: fetch the full set into the root (``data/mnist`` when none is set) in ``prepare_data``
            (needs internet).
        val_fraction: share of the training images held out for validation.
        test_fraction: share held out for testing when only the test files are available.
        train_size: optional cap on the number of training images.
        binarize: resample binary pixels ``x ~ Bernoulli(x)`` every time an image is drawn
            (dynamically binarised MNIST, for Bernoulli likelihoods).
        labelled_per_class: semi-supervised training: keep the labels of this many training images per
            class (seeded), mark the rest -1; ``None`` keeps every label.
        labelled_batch_share: with ``labelled_per_class``, the share of each training batch drawn from the
            labelled pool.
    """

    image_shape = (1, 28, 28)
    num_classes = 10

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_size: int | None = None,
        binarize: bool = False,
        labelled_per_class: int | None = None,
        labelled_batch_share: float = 0.5,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        if labelled_per_class is not None and labelled_per_class < 1:
            raise ValueError(f"labelled_per_class must be >= 1 (or null for fully labelled data), got {labelled_per_class}")
        if not 0 < labelled_batch_share < 1:
            raise ValueError(f"labelled_batch_share must be in (0, 1), got {labelled_batch_share}: each batch mixes "
                             "labelled and unlabelled images")
        #: indices into ``train_set`` of the labelled pool and of the unlabelled images (semi-supervised option)
        self.labelled_indices: np.ndarray | None = None
        self.unlabelled_indices: np.ndarray | None = None
        self.root = Path(root).expanduser() if root else None
        self.download = download
        self.binarize = binarize  # an attribute: a subclass without the argument (MNISTCodesDataModule) has no hparam
        self.source = ""

    def located(self) -> Located:
        """Where the digits come from, by the one lookup order of :mod:`ae_lightning.data.locate`."""
        return locate("mnist", self.root, self.download)

    def prepare_data(self) -> None:
        if not self.download:
            return
        root = self.located().root
        created = [p for p in (root / "MNIST" / "raw", *(root / "MNIST" / "raw").parents) if not p.exists()]
        try:
            for train in (True, False):
                torchvision.datasets.MNIST(str(root), train=train, download=True)
        except (RuntimeError, OSError) as err:  # offline, a mirror down, a full disk
            for folder in created:  # leave no empty tree behind: it would be "found" by the next run's lookup
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            cause = lines[0] + (f" … {lines[-1]}" if len(lines) > 1 else "")  # the file, and the last mirror's reason
            raise DatasetNotFoundError(
                f"could not download MNIST into {root} ({cause}); fix: run once with network access, or pass a "
                f"root (or set $AE_MNIST_ROOT) holding {LAYOUT}"
            ) from err

    def _load(self, stage: str | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
        """Arrays ``{split: (images, labels)}`` and a description of where they came from.

        For ``stage="test"`` / ``"predict"`` on the full set only the t10k files are read: testing
        a checkpoint does not need (or check) the training files.
        """
        hp = self.hparams
        located = self.located()
        root = located.root
        if root is None:
            pair = read_pair(EMBEDDED / "t10k-images-idx3-ubyte.gz", EMBEDDED / "t10k-labels-idx1-ubyte.gz")
            return self._split_one(*pair, EMBEDDED_DIGITS)
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"MNIST root {root} ({located.describe()}) does not exist; expected {LAYOUT}; "
                "fix: pass download=True when online, or point root (or $AE_MNIST_ROOT) at the folder holding "
                "the IDX files"
            )
        files = {s: _find(root, s) for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
        if all(files.values()):
            # the same bytes torchvision.datasets.MNIST reads; read here so that .gz files work too
            where = f"the full MNIST set in {root}"
            test = read_pair(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"])
            if stage in ("test", "predict"):
                return {"test": test}, where
            x, y = read_pair(files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"])
            tr, va, _ = seeded_split(len(x), hp.val_fraction, 0.0, self.seed, f"MNIST train set in {root}")
            tr = take_train_subset(tr, hp.train_size, "MNIST")
            return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": test}, where
        img, lab = files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"]
        if img is None or lab is None:
            raise DatasetNotFoundError(
                f"no MNIST IDX files in {root} ({located.describe()}); expected {LAYOUT} (or only the t10k files); "
                "fix: pass download=True when online, or point root at the folder holding the IDX files"
            )
        return self._split_one(*read_pair(img, lab), f"the MNIST test files in {img.parent} only")

    def _split_one(self, images: np.ndarray, labels: np.ndarray, what: str):
        hp = self.hparams
        tr, va, te = seeded_split(len(images), hp.val_fraction, hp.test_fraction, self.seed, what)
        tr = take_train_subset(tr, hp.train_size, what)
        log.warning(
            "MNIST: using %s, split with seed %d into %d train / %d val / %d test images",
            what, self.seed, len(tr), len(va), len(te),
        )
        return {s: (images[i], labels[i]) for s, i in (("train", tr), ("val", va), ("test", te))}, what

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or (self.test_set is not None and stage in ("test", "predict")):
            return
        arrays, self.source = self._load(stage)
        if self.hparams.labelled_per_class is not None and "train" in arrays:
            images, labels = arrays["train"]
            arrays["train"] = images, self._hide_labels(labels)
        for split, (images, labels) in arrays.items():
            x, y = _to_tensors(images, labels)
            transform = _bernoulli if self.binarize else None
            setattr(self, f"{split}_set", ArrayImageDataset(x, y, transform=transform))


    def _hide_labels(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` with all but ``labelled_per_class`` per class (a seeded choice) set to -1."""
        n = self.hparams.labelled_per_class
        rng = np.random.default_rng(self.seed + LABELLED_SEED_OFFSET)
        counts = np.bincount(labels, minlength=self.num_classes)
        if counts.min() < n + 1:
            raise ValueError(
                f"labelled_per_class={n} but the MNIST training split ({self.source}) has only {counts.min()} images "
                f"of digit {int(counts.argmin())}, and some must stay unlabelled; fix: lower labelled_per_class or "
                "raise train_size"
            )
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False)
                                       for c in range(self.num_classes)]))
        self.labelled_indices = keep
        self.unlabelled_indices = np.setdiff1d(np.arange(len(labels)), keep)
        hidden = np.full(len(labels), -1, dtype=np.int64)
        hidden[keep] = labels[keep]
        return hidden

    @property
    def labelled_per_batch(self) -> int:
        """Labelled images in each training batch: ``labelled_batch_share`` of it, at least 1, at most all but one."""
        return min(max(1, round(self.hparams.labelled_batch_share * self.batch_size)), self.batch_size - 1)

    def train_dataloader(self):
        if self.labelled_indices is None:
            return super().train_dataloader()
        return self._mixed_loader(self.train_set, self.labelled_indices, self.unlabelled_indices,
                                  self.labelled_per_batch)


def _bernoulli(x: torch.Tensor) -> torch.Tensor:
    return torch.bernoulli(x)
