"""Pieces shared by the DataModules: in-memory image datasets, seeded splits, loaders."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ae_lightning.data.predict import predict_loader

EMBEDDED = Path(__file__).parent / "embedded"


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2: one ``(C, H, W)`` image or a ``(B, C, H, W)`` batch."""
    if x.ndim == 3:
        return x.flip(-1) if torch.rand(()) < 0.5 else x
    flip = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) < 0.5  # (B, 1, 1, 1), where x is
    return torch.where(flip, x.flip(-1), x)


class ArrayImageDataset(Dataset):
    """``(image, label)`` pairs from an in-memory ``(N, C, H, W)`` float tensor in [0, 1].

    ``transform`` is applied to each ``(C, H, W)`` image tensor, or to a whole ``(B, C, H, W)`` batch:
    indexing with a list of indices gathers a batch in one step (the DataModules' loaders do that for
    in-memory sets: no per-image indexing and collation), so transforms must take either shape.
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

    def __getitem__(self, i: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]  # (C, H, W), or (B, C, H, W) for a list of indices
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class BatchGather(Dataset):
    """An in-memory :class:`ArrayImageDataset` as a DataLoader sees it: each batch is one gather
    (``dataset[indices]``, transforms applied to the batch) instead of B item lookups and a collation —
    the per-step cost that dominates small nets. Samplers (seeded shuffle, DDP) work as for any dataset.

    ``device``: the images and labels are copied there once and every batch is gathered there (the
    device-resident data path, ``speed.device_resident_data``): no host→device copy of the images per step,
    and transforms (noise, flips) run on the device too. Only the batch's indices travel, from pinned memory
    without waiting for the device.
    """

    def __init__(self, dataset: ArrayImageDataset, device: torch.device | None = None) -> None:
        self.device = device
        if device is not None:
            dataset = copy.copy(dataset)  # the DataModule's own split stays where it is
            dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int | list[int]):
        # a list: a whole batch from a batch-yielding sampler (DataLoader(batch_size=None))
        return self.__getitems__(i) if isinstance(i, list) else self.dataset[i]

    def __getitems__(self, indices: list[int]):
        if self.device is not None:
            index = torch.tensor(indices)  # (B,)
            indices = (index.pin_memory() if self.device.type == "cuda" else index).to(self.device, non_blocking=True)
        return self.dataset[indices]  # ((B, C, H, W), (B,)): already a batch

    @staticmethod
    def collate(batch):
        return batch


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
            f"need at least {minimum} images so that every split is non-empty; fix: pass a larger set as root, or, "
            "to apply a trained model to a few images (`ae-lightning predict`), give them as "
            "--data.init_args.predict_root and keep root for the training set"
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
        found = pattern.search(str(n))
        if found is None:
            missed.append(str(n))
            continue
        keys.append(found.group(1) if pattern.groups and found.group(1) is not None else found.group(0))
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
    for member in members:
        k = 0 if filled[0] < targets[0] else 1 if filled[1] < targets[1] else 2
        out[k].append(member)
        if k < 2:
            filled[k] += len(member)
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


Replicas = Callable[[], tuple[int, int]]  # () -> (processes, this process's rank)


def single_process() -> tuple[int, int]:
    return 1, 0


class ShardedSampler(DistributedSampler):
    """A training sampler whose order is a function of ``(seed, epoch)`` and which resumes in the middle of an
    epoch, on one process or many.

    ``position()`` says where training stands: ``(epoch, batches this process already trained in it)``;
    ``replicas()`` says ``(processes, rank)``. Each iteration takes epoch ``epoch``'s order (:meth:`items`),
    padded by repeating its start to a multiple of the processes (as ``DistributedSampler`` pads), this
    process's share ``[rank::processes]``, and skips what was already trained. Sharding itself, it is a
    ``DistributedSampler`` to Lightning, which leaves it alone; any other sampler Lightning wraps under DDP in a
    ``DistributedSamplerWrapper`` that shuffles the sampler's list once more and indexes it by position, so a
    resumed epoch (a shorter list) failed with an IndexError. With the strided share, the processes' first
    batches at ``B / n`` together are the one-process batch of ``B``.
    """

    def __init__(self, position: Callable[[], tuple[int, int]], replicas: Replicas = single_process) -> None:
        # no DistributedSampler.__init__: it needs a started process group, and the share is read when iterating
        self.position, self.replicas = position, replicas
        self.shuffle, self.drop_last, self.seed, self.epoch = True, False, 0, 0

    @property
    def num_replicas(self) -> int:
        return self.replicas()[0]

    @property
    def rank(self) -> int:
        return self.replicas()[1]

    def set_epoch(self, epoch: int) -> None:
        """Lightning's call at each epoch: the epoch is read from ``position()`` (also after a resume)."""

    def items(self, epoch: int) -> list:
        """Epoch ``epoch``'s whole order, before sharding."""
        raise NotImplementedError

    def skipped(self, done: int) -> int:
        """Items of this process's share that ``done`` trained batches used."""
        return done

    def share(self, items: list) -> list:
        processes, rank = self.replicas()
        if processes == 1:
            return items
        total = -(-len(items) // processes) * processes
        padded = (items * (-(-total // len(items))))[:total] if items else items
        return padded[rank::processes]

    def __iter__(self):
        epoch, done = self.position()
        yield from self.share(self.items(epoch))[self.skipped(done):]

    def __len__(self) -> int:
        return -(-self.full_length() // self.replicas()[0])

    def full_length(self) -> int:
        raise NotImplementedError


class EpochSampler(ShardedSampler):
    """Image indices: a seeded permutation of ``n`` per epoch (a DataLoader ``generator`` seeded once per
    ``train_dataloader()`` call would replay epoch 0's order after a resume instead)."""

    def __init__(self, n: int, seed: int, batch_size: int, position: Callable[[], tuple[int, int]],
                 replicas: Replicas = single_process) -> None:
        super().__init__(position, replicas)
        self.n, self.seed, self.batch_size = n, seed, batch_size

    def order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    items = order

    def skipped(self, done: int) -> int:
        return done * self.batch_size

    def full_length(self) -> int:
        return self.n


class MixedBatches(ShardedSampler):
    """Semi-supervised batches: ``labelled_per_batch`` indices from a small labelled pool, the rest unlabelled.

    Each batch holds ``labelled_per_batch`` images drawn from ``labelled`` (the pool is cycled in fresh
    seeded permutations: 100 labels are seen many times per epoch) followed by ``batch_size -
    labelled_per_batch`` images from ``unlabelled``; an epoch is one pass over the unlabelled images. This is
    how the papers' code fed their models: Kingma et al.'s M2 (``learn_yz_x_ss.py``) pairs a slice of the
    labelled set with a slice of the unlabelled set in every minibatch; Makhzani et al.'s semi-supervised
    AAE takes a labelled and an unlabelled minibatch per iteration.

    The sampler yields whole batches (lists of indices): the DataLoader takes it as its ``sampler`` with
    ``batch_size=None``, so ``dataset[indices]`` gathers each batch at once (:class:`BatchGather`); under DDP
    each process takes every n-th whole batch (:class:`ShardedSampler`). Like :class:`EpochSampler` the order is
    a function of ``(seed, epoch)`` and ``position()`` skips the batches already trained after a resume.
    """

    def __init__(self, labelled: Sequence[int], unlabelled: Sequence[int], batch_size: int, labelled_per_batch: int,
                 seed: int, position: Callable[[], tuple[int, int]] = lambda: (0, 0),
                 replicas: Replicas = single_process) -> None:
        super().__init__(position, replicas)
        if not 1 <= labelled_per_batch < batch_size:
            raise ValueError(f"labelled_per_batch={labelled_per_batch} must be in [1, batch_size={batch_size}): "
                             "each batch mixes labelled and unlabelled images")
        if not len(labelled) or not len(unlabelled):
            raise ValueError(f"a semi-supervised split needs labelled and unlabelled images, got {len(labelled)} "
                             f"labelled and {len(unlabelled)} unlabelled")
        self.labelled = torch.as_tensor(np.asarray(labelled), dtype=torch.long)
        self.unlabelled = torch.as_tensor(np.asarray(unlabelled), dtype=torch.long)
        self.batch_size, self.labelled_per_batch = batch_size, labelled_per_batch
        self.seed = seed

    @property
    def unlabelled_per_batch(self) -> int:
        return self.batch_size - self.labelled_per_batch

    def full_length(self) -> int:
        return -(-len(self.unlabelled) // self.unlabelled_per_batch)  # ceil: every unlabelled image once

    def batches(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s batches, labelled indices first in each."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        unl = self.unlabelled[torch.randperm(len(self.unlabelled), generator=gen)]  # (U,)
        k, m, n = self.labelled_per_batch, self.unlabelled_per_batch, self.full_length()
        cycles = -(-n * k // len(self.labelled))
        lab = torch.cat([self.labelled[torch.randperm(len(self.labelled), generator=gen)] for _ in range(cycles)])
        return [lab[b * k : (b + 1) * k].tolist() + unl[b * m : (b + 1) * m].tolist() for b in range(n)]

    items = batches


class ImageDataModule(L.LightningDataModule):
    """Loaders over ``self.train_set`` / ``val_set`` / ``test_set``, which subclasses fill in ``setup``."""

    image_shape: tuple[int, int, int]

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, drop_last: bool = False) -> None:
        super().__init__()
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        #: ``{split: message}`` for splits the data lack (e.g. a MedMNIST file without test images)
        self.unavailable: dict[str, str] = {}
        #: images to apply a trained model to (``ae-lightning predict``); None: the test split
        self.predict_set: Dataset | None = None
        #: an accelerator to keep in-memory splits on and gather batches there (set by ``speed.device_resident_data``)
        self.resident_device: torch.device | None = None

    def _loader_options(self, in_memory: bool) -> tuple[torch.device | None, dict]:
        """Where an in-memory split's batches are gathered (None: the host) and the DataLoader's worker options:
        device-resident batches need no workers and no pinned copies."""
        device = self.resident_device if in_memory and self.resident_device is not None else None
        if device is not None and device.type != "cpu":
            return device, dict(num_workers=0, persistent_workers=False, pin_memory=False)
        return None, dict(num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def _loader(self, dataset: Dataset | None, shuffle: bool, split: str = "train") -> DataLoader:
        if dataset is None:
            if split in self.unavailable:
                raise ValueError(self.unavailable[split])
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        drop_last = self.drop_last and split == "train"
        processes = self._replicas()[0] if shuffle else 1
        share = -(-len(dataset) // processes)  # each process's images of the epoch (ShardedSampler)
        if drop_last and share < self.batch_size:
            on_each = f" ({share} on each of {processes} processes)" if processes > 1 else ""
            rank_zero_warn(
                f"{type(self).__name__}: the {split} split has {len(dataset)} images{on_each}, fewer than "
                f"batch_size={self.batch_size}, so with drop_last=True it yields zero batches (nothing is trained); "
                "fix: lower batch_size or set drop_last=False"
            )
        in_memory = type(dataset).__getitem__ is ArrayImageDataset.__getitem__
        device, options = self._loader_options(in_memory)
        return DataLoader(
            BatchGather(dataset, device) if in_memory else dataset,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(dataset), self.seed, self.batch_size, self._train_position, self._replicas)
            if shuffle else None,
            drop_last=drop_last,
            **options,
            collate_fn=BatchGather.collate if in_memory else None,
        )

    def _mixed_loader(self, dataset: ArrayImageDataset, labelled: Sequence[int], unlabelled: Sequence[int],
                      labelled_per_batch: int) -> DataLoader:
        """Training batches that mix ``labelled_per_batch`` images of the labelled pool with unlabelled ones
        (:class:`MixedBatches`); the batch size is this module's."""
        sampler = MixedBatches(labelled, unlabelled, self.batch_size, labelled_per_batch, self.seed,
                               self._train_position, self._replicas)
        device, options = self._loader_options(in_memory=True)
        return DataLoader(
            BatchGather(dataset, device),
            batch_size=None,  # the sampler yields whole batches; BatchGather gathers each in one step
            sampler=sampler,
            collate_fn=BatchGather.collate,
            **options,
        )

    def _train_position(self) -> tuple[int, int]:
        """``(epoch, batches trained in it)`` from the Trainer's progress (restored from a checkpoint on resume)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        loop = trainer.fit_loop.epoch_loop
        return trainer.current_epoch, loop.batch_progress.current.completed

    def _replicas(self) -> tuple[int, int]:
        """``(processes, rank)`` the training sampler shares an epoch among: what the strategy gives a
        ``DistributedSampler`` (the data-parallel processes; every process under model parallelism's data mesh),
        unless the Trainer was told not to distribute samplers (``use_distributed_sampler=False``: every
        process sees the whole epoch)."""
        trainer = self.trainer
        if trainer is None or not getattr(trainer._accelerator_connector, "use_distributed_sampler", True):
            return 1, 0
        kwargs = trainer.distributed_sampler_kwargs
        return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, split="val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, split="test")

    def predict_dataloader(self) -> DataLoader:
        if self.predict_set is not None:
            return predict_loader(self.predict_set, self.num_workers)
        return self._loader(self.test_set, shuffle=False, split="test")
