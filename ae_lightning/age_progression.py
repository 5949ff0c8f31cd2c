"""Age progression/regression grids from a trained CAAE: one row per face, one column per age group.

Faces come from image files (``--images``; gender from ``--gender``, or parsed from a UTKFace
file name) or from the test split of the run's data (``--indices``). The model and data are rebuilt
from the ``config.yaml`` that ``ae-lightning fit`` saved beside the checkpoints::

    python -m ae_lightning.age_progression --ckpt runs/caae_utkface/version_0/checkpoints/last.ckpt \\
        --indices 0 1 2 3 --out progression.png
    python -m ae_lightning.age_progression --ckpt last.ckpt --images me.jpg --gender 0

``ae-lightning predict --config configs/caae_utkface.yaml --ckpt_path last.ckpt`` writes the same grid for
every face of the data (one file per face); this script stays for single files whose gender is given or
parsed from the name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from ae_lightning.config import load_run
from ae_lightning.data.utkface import AGE_GROUP_NAMES, load_face, parse_name
from ae_lightning.models.caae import ConditionalAdversarialAutoencoder


def load_caae(ckpt: str | Path, config: str | Path | None = None, with_data: bool = False):
    """``(model, datamodule or None)`` of a CAAE run (see :func:`ae_lightning.config.load_run`)."""
    model, data = load_run(ckpt, config, with_data)
    if not isinstance(model, ConditionalAdversarialAutoencoder):
        raise ValueError(f"{ckpt} holds a {type(model).__name__}; age progression needs a ConditionalAdversarialAutoencoder")
    return model, data


def faces_from_files(paths: list[str], image_size: int, gender: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) in [0, 1] and genders (N,): ``gender`` or each UTKFace name's own."""
    images, genders = [], []
    for p in paths:
        parsed = parse_name(Path(p).name)
        g = gender if gender is not None else (parsed[1] if parsed else None)
        if g is None:
            raise ValueError(f"{p}: no gender in the file name; fix: pass --gender 0 (male) or 1 (female)")
        images.append(load_face(Path(p), image_size))
        genders.append(g)
    return torch.stack(images), torch.tensor(genders)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CAAE run")
    ap.add_argument("--config", help="the run's config.yaml (default: found beside the checkpoint)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="face image files")
    src.add_argument("--indices", nargs="+", type=int, help="indices into the run data's test split")
    ap.add_argument("--gender", type=int, choices=(0, 1), help="gender label for --images (0 male, 1 female)")
    ap.add_argument("--out", default="age_progression.png", help="output PNG")
    args = ap.parse_args(argv)
    model, data = load_caae(args.ckpt, args.config, with_data=args.indices is not None)
    size = model.encoder.image_shape[-1]
    if args.images:
        x, gender = faces_from_files(args.images, size, args.gender)
    else:
        data.prepare_data()
        data.setup("test")
        items = [data.test_set[i] for i in args.indices]
        x = torch.stack([img for img, _ in items])
        gender = torch.tensor([t["gender"] for _, t in items])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(model.progression_grid(x, gender), out)
    print(f"wrote {out}: {len(x)} faces x columns input | {' | '.join(AGE_GROUP_NAMES)}")
    return out


if __name__ == "__main__":
    main()
