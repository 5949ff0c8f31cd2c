"""UTKFace (Zhang, Song & Qi, CVPR 2017): faces labelled with age, gender and race by file name.

Layout: a folder (searched recursively) of JPEGs named ``[age]_[gender]_[race]_[date&time].jpg``,
or the aligned-and-cropped ``….jpg.chip.jpg`` form; age 0–116, gender 0 (male) / 1 (female), race
0–4 (White, Black, Asian, Indian, Others). Every image is decoded at setup; files whose names do not
parse (the public archive has a few, e.g. a missing race field) or that do not decode (a truncated
download) are reported in **one** warning line, each with its reason; ``strict=True`` makes that an
error. Nothing is dropped silently.

UTKFace is published at https://susanqq.github.io/UTKFace/ for non-commercial research only; it is
downloaded by hand and never redistributed by this project. For offline runs and tests,
``synthetic_demo=True`` draws labelled cartoon faces instead (:mod:`ae_lightning.data.synthetic_faces`)
and says so loudly.

Items are ``(image, target)``: ``image`` (3, S, S) float in [0, 1]; ``target`` a dict of ``age``,
``age_group`` (the CAAE's 10 groups, :data:`AGE_GROUPS`), ``gender`` and ``race`` (integers)::

    ds = UTKFaceDataset("data/UTKFace", split="train", image_size=128)
    x, t = ds[0]            # (3, 128, 128), {"age": 26, "age_group": 4, "gender": 1, "race": 2}
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ae_lightning.data.common import ImageDataModule, random_hflip, seeded_split
from ae_lightning.data.files import DatasetNotFoundError

log = logging.getLogger(__name__)

#: the CAAE's age groups (inclusive bounds); the last is open-ended (71+)
AGE_GROUPS: tuple[tuple[int, int], ...] = (
    (0, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40), (41, 50), (51, 60), (61, 70), (71, 116),
)
AGE_GROUP_NAMES = tuple(f"{lo}-{hi}" if hi < 116 else f"{lo}+" for lo, hi in AGE_GROUPS)
MAX_AGE = 116
RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("male", "female")
SPLITS = ("train", "val", "test")
URL = "https://susanqq.github.io/UTKFace/"
LAYOUT = (
    "a folder of [age]_[gender]_[race]_[date&time].jpg (or .jpg.chip.jpg) images, "
    "e.g. UTKFace/26_1_2_20170116174525125.jpg.chip.jpg"
)
HOW_TO_GET = (
    f"UTKFace is published at {URL} (non-commercial research licence; this project never redistributes it): "
    "download UTKFace.tar.gz by hand, extract it and pass the folder as --data.root; for an offline demo on "
    "synthetic cartoon faces pass --data.synthetic_demo=true"
)
_NAME = re.compile(r"^(\d{1,3})_(\d+)_(\d+)_(\d+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)


def age_group(age: int) -> int:
    """Index of the CAAE age group holding ``age`` (0–5 → 0, …, 71+ → 9)."""
    if age < 0:
        raise ValueError(f"age must be >= 0, got {age}")
    return next((i for i, (_, hi) in enumerate(AGE_GROUPS) if age <= hi), len(AGE_GROUPS) - 1)


def parse_name(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` from a UTKFace file name, or ``None`` when it does not follow the scheme."""
    parsed = _parse(name)
    return parsed if isinstance(parsed, tuple) else None


def _parse(name: str) -> tuple[int, int, int] | str:
    """``(age, gender, race)``, or the reason the name does not follow the scheme."""
    match = _NAME.match(name)
    if not match:
        return "malformed name (expected [age]_[gender]_[race]_[date&time].jpg)"
    age, gender, race = int(match[1]), int(match[2]), int(match[3])
    checks = (("age", age, age <= MAX_AGE, f"0-{MAX_AGE}"), ("gender", gender, gender in (0, 1), "0/1"),
              ("race", race, race < len(RACES), f"0-{len(RACES) - 1}"))
    for what, value, ok, allowed in checks:
        if not ok:
            return f"malformed name ({what} {value} outside {allowed})"
    return age, gender, race


def decode_problem(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as an image (``None`` when it can).

    Decodes the whole file (JPEG at reduced scale: every byte of the scan is still read), so a
    truncated download is caught here rather than inside a DataLoader worker.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"cannot decode the image ({err})"
    return None


@dataclass
class UTKFaceIndex:
    """The usable files of a root: ``files`` and ``labels`` (N, 3) = age, gender, race; ``malformed``: every
    skipped file as ``"name (reason)"`` (a name off the scheme, or an image that does not decode)."""

    files: list[Path]
    labels: np.ndarray
    malformed: list[str]


def scan_utkface(root: str | Path, strict: bool = False) -> UTKFaceIndex:
    """Find, parse and decode every ``.jpg`` under ``root``; report every unusable file with its reason in
    one warning (or raise if ``strict``).

    Cached per (root, modification time): the three splits scan once and warn once.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"UTKFace root {root} does not exist; expected {LAYOUT}. {HOW_TO_GET}")
    return _scan_cached(str(root.resolve()), strict, root.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _scan_cached(root_str: str, strict: bool, mtime: float) -> UTKFaceIndex:
    root = Path(root_str)
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(".jpg"))
    if not candidates:
        raise DatasetNotFoundError(f"no .jpg images under UTKFace root {root}; expected {LAYOUT}. {HOW_TO_GET}")
    files, labels, skipped = [], [], []
    for p in candidates:
        parsed = _parse(p.name)
        problem = parsed if isinstance(parsed, str) else decode_problem(p)
        if problem is not None:
            skipped.append(f"{p.relative_to(root)} ({problem})")
        else:
            files.append(p)
            labels.append(parsed)
    if skipped:
        msg = f"UTKFace: {len(skipped)} of {len(candidates)} files in {root} are unusable: {'; '.join(skipped)}"
        if strict:
            raise ValueError(msg + "; fix: rename, re-download or remove them, or pass strict=False to skip them")
        log.warning("%s; skipped them (strict=True makes this an error)", msg)
    if not files:
        raise DatasetNotFoundError(f"no usable UTKFace images under {root}; expected {LAYOUT}. {HOW_TO_GET}")
    return UTKFaceIndex(files, np.asarray(labels, dtype=np.int64).reshape(-1, 3), skipped)


def load_face(path: Path, image_size: int) -> torch.Tensor:
    """An RGB face resized to ``image_size``² (antialiased), as (3, S, S) float in [0, 1]."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 255.0  # (S, S, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, S, S)


class UTKFaceDataset(Dataset):
    """torchvision-style UTKFace: ``UTKFaceDataset(root, split, transform, download)``; see the module docstring.

    Args:
        races, genders: keep only these (``None``: all).
        strict: raise on malformed file names instead of warning.
        val_fraction, test_fraction, seed: the seeded split (after filtering).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        download: bool = False,
        image_size: int = 128,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        races: Sequence[int] | None = None,
        genders: Sequence[int] | None = None,
        strict: bool = False,
    ) -> None:
        if download:
            raise ValueError(f"UTKFace cannot be downloaded automatically. {HOW_TO_GET}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        index = scan_utkface(root, strict=strict)
        keep = np.ones(len(index.files), dtype=bool)
        if races is not None:
            keep &= np.isin(index.labels[:, 2], list(races))
        if genders is not None:
            keep &= np.isin(index.labels[:, 1], list(genders))
        chosen = np.flatnonzero(keep)
        if len(chosen) == 0:
            raise ValueError(f"no UTKFace images in {root} left after filtering races={races}, genders={genders}")
        tr, va, te = seeded_split(len(chosen), val_fraction, test_fraction, seed, f"UTKFace in {root}")
        idx = chosen[{"train": tr, "val": va, "test": te}[split]]
        self.files = [index.files[i] for i in idx]
        self.labels = index.labels[idx]  # (N, 3): age, gender, race
        self.malformed = index.malformed
        self.split, self.image_size, self.transform = split, int(image_size), transform

    def __len__(self) -> int:
        return len(self.files)

    def target(self, i: int) -> dict[str, int]:
        age, gender, race = (int(v) for v in self.labels[i])
        return {"age": age, "age_group": age_group(age), "gender": gender, "race": race}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, int]]:
        x = load_face(self.files[i], self.image_size)  # (3, S, S)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.target(i)


class UTKFaceDataModule(ImageDataModule):
    """UTKFace faces in [0, 1] at ``image_size``² with age/gender/race targets and a seeded split.

    Args:
        root: the extracted UTKFace folder (see module docstring).
        synthetic_demo: use procedurally drawn, labelled cartoon faces written to ``synthetic_root``
            instead (an offline demo; they are not faces of people), ``synthetic_count`` of them.
        races, genders, strict, val_fraction, test_fraction: see :class:`UTKFaceDataset`.
        hflip: random horizontal flips of training faces.
    """

    def __init__(
        self,
        root: str = "data/UTKFace",
        image_size: int = 128,
        batch_size: int = 100,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        races: list[int] | None = None,
        genders: list[int] | None = None,
        strict: bool = False,
        hflip: bool = False,
        synthetic_demo: bool = False,
        synthetic_root: str = "runs/synthetic_utkface",
        synthetic_count: int = 600,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.image_shape = (3, image_size, image_size)

    @property
    def data_root(self) -> str:
        return self.hparams.synthetic_root if self.hparams.synthetic_demo else self.hparams.root

    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.synthetic_demo:
            from ae_lightning.data.synthetic_faces import write_synthetic_utkface

            log.warning(
                "UTKFace: SYNTHETIC DEMO — %d procedurally drawn cartoon faces in %s, not photographs of people; "
                "for real faces download UTKFace from %s and pass --data.root", hp.synthetic_count, hp.synthetic_root, URL,
            )
            write_synthetic_utkface(hp.synthetic_root, hp.synthetic_count, image_size=max(hp.image_size, 64), seed=hp.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        common = dict(image_size=hp.image_size, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
                      seed=self.seed, races=hp.races, genders=hp.genders, strict=hp.strict)
        self.train_set = UTKFaceDataset(self.data_root, "train", transform=random_hflip if hp.hflip else None, **common)
        self.val_set = UTKFaceDataset(self.data_root, "val", **common)
        self.test_set = UTKFaceDataset(self.data_root, "test", **common)
        log.info("UTKFace from %s: %d train / %d val / %d test faces at %dx%d", self.data_root,
                 len(self.train_set), len(self.val_set), len(self.test_set), hp.image_size, hp.image_size)
