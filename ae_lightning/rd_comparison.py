"""The learned codec against JPEG, JPEG at reduced resolution, JPEG 2000 and WebP: one call for the benchmark.

::

    from ae_lightning.rd_comparison import compare, split_images
    images = split_images("rd_xray64_0.013")                  # the config's test split (patient-disjoint), (N, 1, 64, 64)
    result = compare({"λ=0.0025": codec_a, "λ=0.01": codec_b, ...}, images)   # trained CompressAI models (or codec files)
    result.rows()           # CSV rows: every point of every curve (real bytes, decoded PSNR / SSIM, estimate)
    result.bd_rates         # BD-rate (%) of the learned codec against each classical codec, by PSNR and by SSIM

Each codec's rate is the bytes each image's stream takes (:mod:`ae_lightning.learned_codec`,
:mod:`ae_lightning.classical_codecs`: what is shared by every image — a model, JPEG's tables, JPEG 2000's main
header — is not counted), scored on the decoded 8-bit images. BD-rates (:func:`ae_lightning.rd.bd_rate`) are over
the quality range both curves cover; "JPEG downscaled" is the best of its factors (1, 1/2, 1/4) at each rate,
i.e. the Pareto front of all its points.

From the command line (the sweep script's evaluation; codec files of ``python -m ae_lightning.learned_codec weights``)::

    python -m ae_lightning.rd_comparison evaluate --codec out/rd_0.01.pt --codec out/rd_0.04.pt --out out/
    python -m ae_lightning.rd_comparison evaluate --ckpt runs/rd_xray64_0.013/version_0/checkpoints/last.ckpt --out out/
    python -m ae_lightning.rd_comparison pool --data PATH/kermany_64.npz --out pool.npz
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ae_lightning.rd import RDPoint, bd_rate, front, overlap

DEFAULT_CONFIG = "rd_xray64_0.013"  # any of the sweep's configs: they share the data block


@dataclass
class ClassicalSettings:
    """The settings each classical codec is run at (each list spans its useful range on 64×64 X-rays, ~0.1–3 bpp);
    ``None`` or empty skips a codec. WebP is skipped, with a note, when Pillow has no WebP."""

    jpeg_qualities: Sequence[int] = (1, 3, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 90, 95)
    downscale_factors: Sequence[int] = (1, 2, 4)
    downscale_qualities: Sequence[int] = (5, 10, 20, 30, 40, 50, 60, 75, 90)
    jpeg2000_psnr: Sequence[float] = (20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 43)
    webp_qualities: Sequence[int] | None = (0, 5, 10, 20, 30, 50, 70, 80, 90)

    @classmethod
    def quick(cls) -> ClassicalSettings:
        """Fewer settings (about half the time) for the quick benchmark."""
        return cls(jpeg_qualities=(1, 5, 10, 20, 40, 60, 75, 90), downscale_factors=(2, 4),
                   downscale_qualities=(10, 30, 60, 90), jpeg2000_psnr=(20, 24, 28, 32, 36, 40),
                   webp_qualities=(0, 10, 30, 70, 90))


def classical_curves(images: torch.Tensor, settings: ClassicalSettings | None = None,
                     keep: int | None = 0) -> dict[str, list[RDPoint]]:
    """``{codec name: its points}`` on ``images`` (N, 1, H, W); ``keep`` decoded images per point (None: all)."""
    from ae_lightning import classical_codecs as cc

    s = settings or ClassicalSettings()
    curves = {"JPEG": [cc.jpeg_point(images, q, keep) for q in s.jpeg_qualities or ()]}
    if s.downscale_factors and s.downscale_qualities:
        curves["JPEG downscaled"] = [cc.jpeg_downscaled_point(images, q, f, keep) for f in s.downscale_factors
                                     for q in s.downscale_qualities]
    if s.jpeg2000_psnr:
        curves["JPEG 2000"] = [cc.jpeg2000_point(images, d, keep=keep) for d in s.jpeg2000_psnr]
    if s.webp_qualities and cc.has_webp():
        curves["WebP"] = [cc.webp_point(images, q, keep) for q in s.webp_qualities]
    return {k: v for k, v in curves.items() if v}


def learned_curve(codecs: Mapping[str, nn.Module | str | Path], images: torch.Tensor, name: str = "learned codec",
                  keep: int | None = 0, extra: Mapping[str, dict] | None = None) -> list[RDPoint]:
    """One point per codec (``{setting: a trained CompressAI model, or a codec file}``), scored on real bytes;
    ``extra[setting]``: columns for that point's row (λ, epochs, …)."""
    from ae_lightning.learned_codec import load_codec, prepare, score

    points = []
    for setting, codec in codecs.items():
        prepared = load_codec(codec) if isinstance(codec, str | Path) else prepare(codec)
        p = score(prepared, images, name=name, setting=str(setting), prepared=True)
        p.extra.update((extra or {}).get(setting, {}))
        if keep is not None:
            p.decoded = p.decoded[:keep]
        points.append(p)
    return points


@dataclass
class Comparison:
    """Every curve (``curves[name]``: points) and the BD-rates of the learned curve against each classical one."""

    learned: str
    curves: dict[str, list[RDPoint]]
    bd_rates: list[dict] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One row per point: :meth:`RDPoint.row` plus ``on_front_psnr`` / ``on_front_ssim`` (part of its curve's
        Pareto front, the part BD-rate reads)."""
        rows = []
        for pts in self.curves.values():
            fronts = {m: {id(p) for p in front(pts, m)} for m in ("psnr", "ssim")}
            for p in sorted(pts, key=lambda p: p.bpp):
                rows.append({**p.row(), "on_front_psnr": id(p) in fronts["psnr"], "on_front_ssim": id(p) in fronts["ssim"]})
        return rows

    def bd_rate(self, anchor: str, metric: str = "psnr") -> float:
        return next(r["bd_rate_percent"] for r in self.bd_rates if r["anchor"] == anchor and r["metric"] == metric)


def bd_table(learned: Sequence[RDPoint], anchors: Mapping[str, Sequence[RDPoint]], name: str) -> list[dict]:
    """BD-rate rows of ``learned`` against each anchor curve, by PSNR and by SSIM, with the overlap they cover."""
    rows = []
    for anchor, pts in anchors.items():
        for metric in ("psnr", "ssim"):
            span = overlap(pts, learned, metric)
            inside = 0 if span is None else sum(span[0] <= p.mean(metric) <= span[1] for p in front(learned, metric))
            rows.append({"test": name, "anchor": anchor, "metric": metric, "bd_rate_percent": bd_rate(pts, learned, metric),
                         "overlap_low": math.nan if span is None else span[0],
                         "overlap_high": math.nan if span is None else span[1], "test_points_in_overlap": inside})
    return rows


def compare(codecs: Mapping[str, nn.Module | str | Path], images: torch.Tensor, settings: ClassicalSettings | None = None,
            name: str = "learned codec", keep: int | None = 0, extra: Mapping[str, dict] | None = None) -> Comparison:
    """The learned codec (one trained model per λ, ``{setting: model or codec file}``) against the classical codecs
    on ``images`` (N, 1, H, W) in [0, 1]: every curve, and BD-rates by PSNR and SSIM (module docstring). ``keep``:
    decoded images kept per point (``None``: all); ``extra[setting]``: columns for a learned point's row."""
    classical = classical_curves(images, settings, keep)
    learned = learned_curve(codecs, images, name, keep, extra)
    return Comparison(name, {name: learned, **classical}, bd_table(learned, classical, name))


# --- data ------------------------------------------------------------------------------------------------------
def split_images(config: str | Path = DEFAULT_CONFIG, root: str | None = None, split: str = "test") -> torch.Tensor:
    """The ``split`` images (N, 1, H, W) of the config's DataModule (``root`` overrides its data root)."""
    import lightning as L

    from ae_lightning.config import instantiate, load_config

    spec = load_config(config)["data"]
    if root is not None:
        spec.setdefault("init_args", {})["root"] = root
    dm = instantiate(spec, L.LightningDataModule)
    dm.setup("fit" if split != "test" else "test")
    return getattr(dm, f"{split}_set").images


def training_pool(data: str | Path, out: str | Path, exclude: str | None = None, group_by: str | None = None,
                  config: str | Path = DEFAULT_CONFIG) -> dict[str, int]:
    """Write to ``out`` (.npz: ``images``, ``names``) the images of ``data`` (an .npz with ``names``) whose patient
    appears in neither the validation nor the test split of ``exclude`` (default: the config's data root, the
    embedded 800 X-rays, split as the config splits them): a training set for the full sweep that adds ``data`` to
    the benchmark's training split without any test patient. The embedded X-rays are a subset of the shared 1,564,
    so a plain root list would put test patients (and test images) into training. Returns the counts."""
    from ae_lightning.config import load_config
    from ae_lightning.data.common import group_keys
    from ae_lightning.data.xray import load_xray_source, split_source

    args = load_config(config)["data"].get("init_args", {})
    group_by = group_by or args.get("group_by", "image")
    if group_by == "image":
        raise ValueError("training_pool needs a patient rule (group_by regex), not 'image'")
    ref = load_xray_source(exclude if exclude is not None else args.get("root"), int(args.get("image_size", 64)))
    idx = split_source(ref, float(args.get("val_fraction", 0.1)), float(args.get("test_fraction", 0.2)),
                       int(args.get("seed", 0)), group_by)
    keys = group_keys(ref.names, group_by, ref.path)
    held_out = {keys[i] for s in ("val", "test") for i in idx[s]}
    src = np.load(data, allow_pickle=False)
    names = [str(n) for n in src["names"]]
    keep = [i for i, k in enumerate(group_keys(names, group_by, str(data))) if k not in held_out]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=src["images"][keep], names=np.asarray(names)[keep])
    return {"data": len(names), "kept": len(keep), "held_out_patients": len(held_out)}


# --- command line ----------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ae_lightning.rd_comparison", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="score learned codecs and the classical codecs on a test split; write CSVs")
    ev.add_argument("--codec", action="append", default=[], help="a codec file (repeat: one per λ)")
    ev.add_argument("--ckpt", action="append", default=[],
                    help="a checkpoint of an `ae-lightning fit` run (runs/<config>/version_N/checkpoints/*.ckpt; repeat)")
    ev.add_argument("--save-codecs", help="write each --ckpt's codec file (weights + coding tables) here, as "
                    "<config>.pt, and its λ, epochs and steps as <config>.json (read back by --codec)")
    ev.add_argument("--config", default=DEFAULT_CONFIG, help="the experiment config whose data block gives the test split")
    ev.add_argument("--data", help="override the config's data root")
    ev.add_argument("--out", required=True, help="folder for rd_points.csv and rd_bd_rates.csv")
    ev.add_argument("--quick", action="store_true", help="fewer classical settings")
    po = sub.add_parser("pool", help="write the full sweep's training images (no val/test patient of the config)")
    po.add_argument("--data", required=True, help="an .npz with images and names (e.g. the shared 1,564 X-rays)")
    po.add_argument("--out", required=True)
    po.add_argument("--config", default=DEFAULT_CONFIG)
    args = ap.parse_args(argv)
    if args.command == "pool":
        print(training_pool(args.data, args.out, config=args.config))
        return 0
    if not args.codec and not args.ckpt:
        ap.error("evaluate needs at least one --codec or --ckpt")
    images = split_images(args.config, args.data)
    codecs: dict[str, nn.Module | str] = {Path(c).stem: c for c in args.codec}
    # a codec file saved by --save-codecs has its run's λ, epochs and steps beside it (<config>.json)
    extra = {Path(c).stem: json.loads(Path(c).with_suffix(".json").read_text()) for c in args.codec
             if Path(c).with_suffix(".json").is_file()}
    for ckpt in map(Path, args.ckpt):
        from ae_lightning.learned_codec import codec_of_run, save_codec

        name = ckpt.parents[2].name if ckpt.parent.name == "checkpoints" else ckpt.stem  # runs/<config>/version_N/...
        codecs[name], spec = codec_of_run(ckpt)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        extra[name] = {"lmbda": state["hyper_parameters"].get("lmbda"), "epochs": state["epoch"],
                       "global_step": state["global_step"]}
        if args.save_codecs:  # before the scoring: a scoring cut short still leaves every trained codec
            save_codec(codecs[name], spec, Path(args.save_codecs) / f"{name}.pt")
            (Path(args.save_codecs) / f"{name}.json").write_text(json.dumps(extra[name]) + "\n")
    result = compare(codecs, images, ClassicalSettings.quick() if args.quick else None, extra=extra)
    out = Path(args.out)
    write_csv(out / "rd_points.csv", result.rows())
    write_csv(out / "rd_bd_rates.csv", result.bd_rates)
    for r in result.bd_rates:
        print(f"BD-rate vs {r['anchor']:<16} ({r['metric']}): {r['bd_rate_percent']:+.1f} %  over "
              f"[{r['overlap_low']:.3g}, {r['overlap_high']:.3g}], {r['test_points_in_overlap']} learned points inside")
    return 0


if __name__ == "__main__":
    sys.exit(main())
