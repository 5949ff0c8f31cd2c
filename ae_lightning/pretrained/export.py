"""A trained denoiser run → the files that ship in ``ae_lightning/pretrained/``.

    python -m ae_lightning.pretrained.export --ckpt_path runs/denoiser_xray64/version_0/checkpoints/last.ckpt \\
        --out_dir OUT [--name xray64_denoiser] [--note hardware="1x H200"]

writes into ``OUT``:

- ``<name>.pt``: the weights file (:func:`ae_lightning.pretrained.save`: the nets in float16, the model spec of
  the run's ``config.yaml``, and ``meta``: epochs, steps, data, the ``--note`` values);
- ``training_names.txt``: the name of every training image (rebuilt from the run's data config: the same
  split, the same exclusions), one per line after ``#`` comment lines that say where they come from;
- ``val_scores.csv``: PSNR / SSIM of the exported (float16) weights on the validation split at every setting of
  the denoising grid (photon-limited Poisson peaks 10 and 30 included), each setting's noise seeded, with the
  float32 checkpoint's PSNR beside it (the cost of storing float16).

Then copy ``<name>.pt`` and ``training_names.txt`` into ``ae_lightning/pretrained/`` and fill ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
from pathlib import Path

import lightning as L
import torch

from ae_lightning import pretrained
from ae_lightning.config import CONFIGS, find_run_config, instantiate, load_config, load_run
from ae_lightning.inference import in_eval_batches
from ae_lightning.metrics import psnr_ssim
from ae_lightning.noise import NoiseModel

VAL_SEED = 100  # setting i's noisy copy of the val split is drawn with seed VAL_SEED + i (as benchmarks/denoising.py)


def score_settings() -> list[NoiseModel]:
    """The denoising benchmark's grid (``configs/noise/denoising_grid.yaml``, photon-limited peaks 10 and 30 included)."""
    return list(instantiate(load_config(CONFIGS / "noise" / "denoising_grid.yaml"), NoiseModel).noises)


def val_scores(models: dict[str, torch.nn.Module], clean: torch.Tensor) -> list[dict]:
    """Rows ``{noise, <model>_psnr, <model>_ssim, noisy_psnr}`` for each setting of :func:`score_settings`."""
    rows = []
    for i, noise in enumerate(score_settings()):
        noisy = noise(clean, torch.Generator().manual_seed(VAL_SEED + i))  # (N, 1, S, S)
        row = {"noise": noise.label, "images": len(clean), "noisy_psnr": round(psnr_ssim(noisy, clean)[0].mean().item(), 3)}
        for key, model in models.items():
            out = in_eval_batches(model, lambda x, m=model: m.reconstruct_full(x).clamp(0, 1), noisy, 64)
            psnr, ssim = psnr_ssim(out, clean)
            row |= {f"{key}_psnr": round(psnr.mean().item(), 3), f"{key}_ssim": round(ssim.mean().item(), 4)}
        rows.append(row)
    return rows


def _source_names(roots) -> list[str]:
    """File names of a data block's ``root`` / ``extra_train`` value (no machine paths); ``None``: the embedded X-rays."""
    if roots is None:
        return ["the embedded chest X-rays"]
    return [Path(str(r)).name for r in ([roots] if isinstance(roots, str) else roots)]


def write_training_names(path: Path, names: list[str], data_spec: dict) -> Path:
    """``names`` one per line after ``#`` lines that say where they come from and how they were chosen."""
    init = data_spec.get("init_args", {})
    val, test = init.get("val_fraction", 0.1), init.get("test_fraction", 0.2)
    extra = _source_names(init.get("extra_train")) if init.get("extra_train") else ["none"]
    header = [
        f"# {len(names)} training images of the shipped weights, one name per line (as in its source file)",
        f"# main source: {', '.join(_source_names(init.get('root')))}, split {1 - val - test:.0%}/{val:.0%}/{test:.0%} "
        f"train/val/test by group_by {init.get('group_by')}, seed {init.get('seed', 0)}",
        f"# extra training sources: {', '.join(extra)} (without any patient of the val/test splits, "
        "without images repeated from the main source)",
    ]
    path.write_text("\n".join(header + names) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m ae_lightning.pretrained.export", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_path", required=True, help="the run's checkpoint (its config.yaml is found beside it)")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--name", default="xray64_denoiser", help="file stem of the weights file")
    ap.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="added to the file's meta")
    ap.add_argument("--no_scores", action="store_true", help="skip val_scores.csv")
    args = ap.parse_args(argv)
    ckpt, out = Path(args.ckpt_path), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(find_run_config(ckpt))
    model, data = load_run(ckpt, with_data=True)
    data.setup("fit")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    meta = {
        "epochs": int(state.get("epoch", -1)) + 1, "global_step": int(state.get("global_step", -1)),
        "checkpoint": ckpt.name, "training_images": len(data.train_set), "val_images": len(data.val_set),
        "exported": datetime.date.today().isoformat(), "torch": torch.__version__, "lightning": L.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    } | dict(n.split("=", 1) for n in args.note)
    path = pretrained.save(model, out / f"{args.name}.pt", cfg["model"], meta)
    write_training_names(out / "training_names.txt", list(data.train_set.names), cfg["data"])
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {meta['parameters'] / 1e6:.2f} M parameters, "
          f"epoch {meta['epochs']}, step {meta['global_step']}) and {out / 'training_names.txt'} "
          f"({len(data.train_set)} images)")
    if not args.no_scores:
        shipped = pretrained.load(path)
        rows = val_scores({"float16": shipped, "float32": model.eval()}, data.val_set.images)
        with (out / "val_scores.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    return path


if __name__ == "__main__":
    main()
