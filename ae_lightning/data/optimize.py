r"""Convert an image set the DataModules read into LitData's optimised chunks, one directory per split.

Datasets larger than a disk are streamed (:mod:`ae_lightning.data.streaming`) instead of read from a
folder; LitData (``pip install 'ae_lightning[stream]'``) reads them from a local folder or a bucket.
This converter lists the files and labels and splits them with the source DataModule's own code (X-ray
trees and ``.npz`` files: :mod:`~ae_lightning.data.xray`, patient grouping included; UTKFace file
names: :mod:`~ae_lightning.data.utkface`; CelebA's official partition and attributes:
:mod:`~ae_lightning.data.celeba`), then writes every split with ``litdata.optimize`` in parallel::

    python -m ae_lightning.data.optimize --kind xray --src data/chest_xray --out data/chest_xray64 \
        --group-by 'person\d+_|(?:NORMAL2-)?IM-\d+-' --num-workers 8
    python -m ae_lightning.data.optimize --kind celeba --src data --out s3://my-bucket/celeba --attributes Male Smiling
    python -m ae_lightning.data.optimize --kind utkface --src data/UTKFace --out data/utkface_chunks

``--out`` then holds ``train/``, ``val/`` and ``test/`` (each a LitData dataset: ``index.json`` + chunks).
Every item is a dict:

- ``image``: X-rays are stored cropped and resized to ``--image-size`` exactly as ``XRayDataModule``
  computes them (the full-resolution decode and antialiased resize are paid once, here), in the
  smallest dtype that holds those pixels without loss (``uint8`` for 8-bit sources, ``uint16`` for
  16-bit ones, else ``float32``); faces (CelebA, UTKFace) are the source JPEG's own bytes, decoded and
  transformed when streamed, as the folder datasets do per item;
- ``label``: the X-ray class index (sub-folder or file label, -1 when none), UTKFace ``[age, gender,
  race]``, CelebA's chosen attributes in {0, 1};
- ``name``: the file's path relative to ``--src`` (``split/index`` for an ``.npz``);
- ``group``: the patient (``--group-by``) for X-rays, else the name.

Every file is read once, in the workers; files that cannot be used are collected across all workers
and splits and reported in **one** error naming each with its reason (the output is then removed, so
no partial set is ever streamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ae_lightning.data.files import DatasetNotFoundError

log = logging.getLogger(__name__)

Kind = Literal["xray", "utkface", "celeba"]
KINDS: tuple[str, ...] = ("xray", "utkface", "celeba")
SPLITS = ("train", "val", "test")
INSTALL = "pip install 'ae_lightning[stream]' (or pip install litdata)"
#: written beside the split folders (local outputs): what was converted and how
META = "ae_lightning_optimize.json"


def require_litdata():
    """The ``litdata`` module, or one error saying how to install it."""
    try:
        import litdata
    except ImportError:
        raise ImportError(f"streaming datasets need LitData; fix: {INSTALL}") from None
    return litdata


@dataclass(frozen=True)
class Record:
    """One image to convert: where to read it (``path``, and ``index`` into an ``.npz``) and its labels."""

    path: str
    name: str
    label: Any
    group: str
    index: int | None = None


@dataclass
class Listing:
    """A source's images per split (``records``) and what the converter needs to read them."""

    kind: str
    src: str
    records: dict[str, list[Record]]
    meta: dict[str, Any] = field(default_factory=dict)


# --- X-ray pixels: the folder DataModule's floats, stored without loss in the smallest dtype ---------------
def pack_pixels(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as ``uint8``/``uint16`` when :func:`unpack_pixels` gives back exactly the same
    floats (8- and 16-bit sources at their own size), else as ``float32``."""
    for dtype, scale in ((np.uint8, 255), (np.uint16, 65535)):
        q = np.round(img.astype(np.float64) * scale).astype(dtype)
        if np.array_equal(unpack_pixels(q), img):
            return q
    return img.astype(np.float32)


def unpack_pixels(arr: np.ndarray) -> np.ndarray:
    """Stored pixels back to the float32 values in [0, 1] that :func:`ae_lightning.data.xray.read_image_file`
    computes (the same arithmetic, so the same bits)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return (arr.astype(np.float64) / 65535.0).astype(np.float32)
    return arr.astype(np.float32)


# --- listing: each source's own DataModule code decides files, labels and splits ---------------------------
def list_xray(src: Path, image_size: int, val_fraction: float, test_fraction: float, seed: int,
              group_by: str, small_images: str) -> Listing:
    """X-ray folder tree or ``.npz``: the files, labels and split of :class:`~ae_lightning.data.xray.XRayDataset`."""
    from ae_lightning.data import xray

    if src.is_file():  # an .npz is one file: read it as XRayDataModule does (already resized), items by index
        source = xray.load_xray_source(src, image_size, small_images)
        paths = [str(src.resolve())] * len(source.names)
        indices: list[int | None] = list(range(len(source.names)))
    else:
        if not src.is_dir():
            raise DatasetNotFoundError(f"X-ray root {src} does not exist; expected {xray.LAYOUT}")
        suffixes = xray.IMAGE_SUFFIXES | xray.DICOM_SUFFIXES
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise DatasetNotFoundError(f"no X-ray images in {src}; expected {xray.LAYOUT}")
        names = [str(f.relative_to(src)) for f in files]
        # the split rule needs only names (groups) and a count: no image is read in this process
        source = xray.XRaySource(str(src), np.empty((len(files), 0, 0), np.float32),
                                 xray._labels_from_parents(names), names)
        paths, indices = [str(f.resolve()) for f in files], [None] * len(files)
    split = xray.split_source(source, val_fraction, test_fraction, seed, group_by)
    groups = xray.group_keys(source.names, group_by, str(src)) if source.official_splits is None \
        else list(source.names)
    records = {s: [Record(paths[i], source.names[i], int(source.labels[i]), groups[i], indices[i]) for i in idx]
               for s, idx in split.items()}
    return Listing("xray", str(src), records, dict(image_size=image_size, small_images=small_images,
                                                   group_by=group_by))


def list_utkface(src: Path, val_fraction: float, test_fraction: float, seed: int, strict: bool) -> Listing:
    """UTKFace: the parsed, decodable files and the seeded split of :class:`~ae_lightning.data.utkface.UTKFaceDataset`."""
    from ae_lightning.data.utkface import UTKFaceDataset

    records = {}
    for s in SPLITS:
        ds = UTKFaceDataset(src, s, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, strict=strict)
        records[s] = [Record(str(f), str(f.relative_to(src)), np.asarray(lab, np.int64), str(f.relative_to(src)))
                      for f, lab in zip(ds.files, ds.labels, strict=True)]
    return Listing("utkface", str(src), records, dict(label_names=["age", "gender", "race"]))


def list_celeba(src: Path, attributes: Sequence[str] | None, verify_md5: bool) -> Listing:
    """CelebA: the official partition and attribute table read by :class:`~ae_lightning.data.celeba.CelebAFaces`."""
    from ae_lightning.data.celeba import IMAGE_DIR, CelebAFaces
    from ae_lightning.data.celeba import SPLITS as CELEBA_SPLITS

    records, chosen = {}, None
    for s in SPLITS:
        ds = CelebAFaces(src, CELEBA_SPLITS[s], attributes=attributes, verify_md5=verify_md5)
        folder = Path(ds.root) / ds.base_folder / IMAGE_DIR
        attr = ds.attr[:, ds.attr_index].numpy().astype(np.uint8)  # (N, A) in {0, 1}
        records[s] = [Record(str(folder / f), f, attr[i], f) for i, f in enumerate(ds.filename)]
        chosen = ds.attributes
    return Listing("celeba", str(src), records, dict(label_names=chosen))


# --- reading, in the optimize workers ----------------------------------------------------------------------
@dataclass(frozen=True)
class ReadItem:
    """``litdata.optimize``'s ``fn``: one record → one item dict (a generator: a file that cannot be used
    yields nothing and is written to ``report_dir`` with its reason, so the main process can name them all)."""

    kind: str
    report_dir: str
    image_size: int = 64
    small_images: str = "upscale"

    def __call__(self, rec: Record):
        try:
            image = self.image(rec)
        except (ValueError, OSError) as err:
            self._report("bad", f"{rec.name} ({err.__cause__ or err})")
            return
        yield {"image": image, "label": rec.label, "name": rec.name, "group": rec.group}

    def image(self, rec: Record):
        if self.kind != "xray":  # faces: the JPEG's own bytes, checked to decode
            from ae_lightning.data.utkface import decode_problem

            problem = decode_problem(Path(rec.path))
            if problem is not None:
                raise ValueError(problem)
            return Path(rec.path).read_bytes()
        from ae_lightning.data import xray

        if rec.index is not None:  # an .npz: cached per worker, already at image_size
            return pack_pixels(xray.load_xray_source(rec.path, self.image_size, self.small_images).images[rec.index])
        img = xray.read_image_file(Path(rec.path))
        small = xray.too_small(img.shape, self.image_size)
        if small is not None:
            if self.small_images == "error":
                raise ValueError(small)
            self._report("upscaled", f"{rec.name} ({small})")
        return pack_pixels(xray.crop_resize(img, self.image_size, rec.path))

    def _report(self, what: str, line: str) -> None:
        import os

        with open(Path(self.report_dir) / f"{what}-{os.getpid()}.txt", "a") as f:
            f.write(line.replace("\n", " ") + "\n")


def _reports(report_dir: Path, what: str) -> list[str]:
    return sorted(line for p in report_dir.glob(f"{what}-*.txt") for line in p.read_text().splitlines() if line)


def _is_url(path: str) -> bool:
    return "://" in path


def convert(listing: Listing, out: str, num_workers: int = 1, chunk_bytes: str = "64MB",
            compression: str | None = None, image_size: int = 64, small_images: str = "upscale") -> dict[str, int]:
    """Write ``listing`` to ``out/{train,val,test}`` with ``litdata.optimize``; returns the item count per split.

    Raises one ``ValueError`` naming every unusable file (after reading them all; the output is removed).
    """
    litdata = require_litdata()
    from ae_lightning.data import xray

    report_dir = Path(tempfile.mkdtemp(prefix="ae_optimize_"))
    reader = ReadItem(listing.kind, str(report_dir), image_size, small_images)
    # fork: the workers inherit the imports (a spawned worker pays ~5 s of torch import); nothing here has
    # started threads that fork could break
    start = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    counts = {}
    try:
        for split, records in listing.records.items():
            if not records:
                continue
            target = out.rstrip("/") + "/" + split
            if not _is_url(target) and Path(target).exists():
                shutil.rmtree(target)  # a stale index.json from an earlier conversion would be appended to
            litdata.optimize(fn=reader, inputs=records, output_dir=target, num_workers=min(num_workers, len(records)),
                             chunk_bytes=chunk_bytes, compression=compression, reorder_files=False,
                             start_method=start, mode="overwrite", verbose=False)
            counts[split] = len(records)
        bad = _reports(report_dir, "bad")
        xray.warn_upscaled(listing.src, _reports(report_dir, "upscaled"), image_size)
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
    total = sum(len(r) for r in listing.records.values())
    if bad:
        if not _is_url(out):
            for split in counts:
                shutil.rmtree(Path(out) / split, ignore_errors=True)
        fix = "replace or remove them and convert again"
        if any("smaller than" in b for b in bad):
            fix += " (or lower --image-size, or pass --small-images upscale)"
        raise ValueError(f"{len(bad)} of {total} images in {listing.src} cannot be used: {'; '.join(bad)}; fix: {fix}")
    if not _is_url(out):
        meta = dict(kind=listing.kind, src=Path(listing.src).name, counts=counts, **listing.meta)
        (Path(out) / META).write_text(json.dumps(meta, indent=2) + "\n")
    return counts


def build_listing(args: argparse.Namespace) -> Listing:
    src = Path(args.src).expanduser()
    if args.kind == "xray":
        return list_xray(src, args.image_size, args.val_fraction, args.test_fraction, args.seed, args.group_by,
                         args.small_images)
    if args.kind == "utkface":
        return list_utkface(src, args.val_fraction, args.test_fraction, args.seed, args.strict)
    return list_celeba(src, args.attributes, not args.no_verify_md5)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ae_lightning.data.optimize", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, help="the folder or .npz the DataModule reads (CelebA: the folder "
                    "holding celeba/)")
    ap.add_argument("--out", required=True, help="output folder or bucket URL (s3://…); gets train/ val/ test/")
    ap.add_argument("--kind", choices=KINDS, default="xray")
    ap.add_argument("--num-workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    ap.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size (default 64MB)")
    ap.add_argument("--compression", default=None, help="LitData chunk compression, e.g. zstd (default none)")
    ap.add_argument("--seed", type=int, default=0, help="the split seed (the DataModule's seed)")
    ap.add_argument("--val-fraction", type=float, default=None, help="default: the DataModule's (X-ray 0.1, UTKFace 0.05)")
    ap.add_argument("--test-fraction", type=float, default=None, help="default: the DataModule's (X-ray 0.2, UTKFace 0.05)")
    x = ap.add_argument_group("X-rays")
    x.add_argument("--image-size", type=int, default=64, help="side of the stored square X-rays (default 64)")
    x.add_argument("--group-by", default="image", help="what must not straddle two splits: image, parent or a regex "
                   "(e.g. ae_lightning.data.common.KERMANY_PATIENT for the Kermany chest X-rays)")
    x.add_argument("--small-images", choices=("upscale", "error"), default="upscale")
    f = ap.add_argument_group("faces")
    f.add_argument("--strict", action="store_true", help="UTKFace: malformed file names are an error")
    f.add_argument("--attributes", nargs="+", default=None, help="CelebA attributes to store (default all 40)")
    f.add_argument("--no-verify-md5", action="store_true", help="CelebA: skip the annotation files' MD5 check")
    args = ap.parse_args(argv)
    defaults = {"xray": (0.1, 0.2), "utkface": (0.05, 0.05), "celeba": (None, None)}[args.kind]
    args.val_fraction = defaults[0] if args.val_fraction is None else args.val_fraction
    args.test_fraction = defaults[1] if args.test_fraction is None else args.test_fraction
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    require_litdata()
    listing = build_listing(args)
    counts = convert(listing, args.out, args.num_workers, args.chunk_bytes, args.compression, args.image_size,
                     args.small_images)
    print(f"{args.kind} from {args.src} → {args.out}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
