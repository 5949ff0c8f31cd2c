"""``ae-lightning predict`` writes files: one output per input, codes, or generated samples.

:class:`PredictionWriter` is on by default in the CLI (arguments ``--prediction.*``) and writes under
``predict/`` in the run's folder, ``runs/<experiment>/version_N/predict/`` (or ``--prediction.output_dir``):

- ``output: reconstruction`` (autoencoders, denoisers): one image per input, at the input's relative
  path and name, size and bit depth (16-bit in → 16-bit PNG/TIFF out; other formats become ``.png``),
  plus ``index.csv`` (``index, input, output, height, width, bits``);
- ``output: codes``: ``codes.npy`` (N, D) in input order and ``codes.csv`` (``row, input``);
- ``output: samples`` (VAE, CVAE, AAE): ``samples/<set>/NNNN.png`` and ``samples/<set>_grid.png`` for each
  set the model generates (``samples``, or one ``label_<k>`` set per label of a conditional model);
- ``output: progression`` (CAAE, its default): one age-progression grid per input face (input | one column
  per age group), named after the input's index, and ``index.csv``;
- ``output: auto``: the model's own :attr:`~ae_lightning.models.Autoencoder.default_prediction`.

Under DDP every rank writes the files of its own inputs (Lightning's predict sampler hands each input
to exactly one rank, without padding) and its rows to ``index.rank<r>.csv``; after a barrier rank 0
merges them into one index in input order.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torchvision.utils import make_grid

from ae_lightning.batch import labels_of
from ae_lightning.callbacks.run_dir import run_dir

KEEP_SUFFIXES = {".png", ".tif", ".tiff"}  # formats that hold 16-bit grayscale; others are written as .png


def save_image_file(image: torch.Tensor, path: Path, bits: int = 8) -> Path:
    """Write ``image`` (C, H, W) in [0, 1] as an 8- or 16-bit (grayscale) image file; RGB is always 8-bit."""
    arr = image.detach().float().clamp(0, 1).cpu().numpy()  # (C, H, W)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.shape[0] == 1 and bits > 8:
        Image.fromarray(np.round(arr[0] * 65535).astype(np.uint16)).save(path)  # mode I;16
    elif arr.shape[0] == 1:
        Image.fromarray(np.round(arr[0] * 255).astype(np.uint8)).save(path)
    else:
        Image.fromarray(np.round(arr[:3].transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    return path


def output_name(name: str) -> str:
    """The output's relative path: the input's, with ``.png`` unless its format holds 16-bit images."""
    p = Path(name)
    return str(p if p.suffix.lower() in KEEP_SUFFIXES else p.with_suffix(".png"))


class PredictionWriter(BasePredictionWriter):
    """Writes what ``predict_step`` returned (see the module docstring).

    Args:
        output_dir: where to write; ``None``: ``predict/`` in the run's folder (``runs/<experiment>/version_N/predict``).
        output: ``auto`` (the model's default), ``reconstruction``, ``codes``, ``samples`` or ``progression`` (CAAE).
        num_samples: images per generated set (``output: samples``).
        seed: seed of the generated samples.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        output: Literal["auto", "reconstruction", "codes", "samples", "progression"] = "auto",
        num_samples: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.output = output
        self.num_samples = num_samples
        self.seed = seed
        self._rows: list[dict] = []
        self._codes: list[np.ndarray] = []
        self._run_dir: Path | None = None

    def directory(self, trainer: L.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        if self._run_dir is None:  # setup() was not called: this process's own view of the run folder
            return run_dir(trainer) / "predict"
        return self._run_dir / "predict"

    def kind(self, pl_module) -> str:
        return getattr(pl_module, "default_prediction", "reconstruction") if self.output == "auto" else self.output

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict":
            # every rank writes its own images: all into rank 0's run folder (a W&B run id is rank 0's)
            self._run_dir = Path(trainer.strategy.broadcast(str(run_dir(trainer))))
            pl_module.prediction_kind = self.kind(pl_module)
            self._rows, self._codes = [], []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if prediction is None:
            return
        indices = [int(i) for i in batch_indices] if batch_indices is not None else list(range(len(prediction.values)))
        meta = labels_of(batch)
        meta = meta if isinstance(meta, dict) and "name" in meta else None
        names = list(meta["name"]) if meta else [f"{i:06d}.png" for i in indices]
        bits = [int(b) for b in meta["bits"]] if meta else [8] * len(indices)
        out = self.directory(trainer)
        if prediction.kind == "codes":
            self._codes.append(prediction.values.detach().float().cpu().numpy())  # (B, D)
            self._rows += [{"index": i, "input": n} for i, n in zip(indices, names, strict=True)]
            return
        for i, name, b, image in zip(indices, names, bits, prediction.values, strict=True):
            rel = output_name(name)
            save_image_file(image, out / rel, b)
            self._rows.append({"index": i, "input": name, "output": rel, "height": image.shape[-2],
                               "width": image.shape[-1], "bits": b})

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        out = self.directory(trainer)
        out.mkdir(parents=True, exist_ok=True)
        kind = self.kind(pl_module)
        rank, world = trainer.global_rank, trainer.world_size
        if kind == "samples":
            if rank == 0:
                self.write_samples(pl_module, out)
            return
        stem = "codes" if kind == "codes" else "index"
        _write_csv(out / f"{stem}.rank{rank}.csv", self._rows)
        if kind == "codes":
            codes = np.concatenate(self._codes) if self._codes else np.zeros((0, 0), np.float32)  # (N_rank, D)
            np.save(out / f"codes.rank{rank}.npy", codes)
        trainer.strategy.barrier("prediction_writer")  # every rank's share is on disk
        if rank == 0:
            self.merge(out, stem, world, codes=kind == "codes")

    @staticmethod
    def merge(out: Path, stem: str, world: int, codes: bool) -> None:
        """One ``<stem>.csv`` (and ``codes.npy``) in input order from every rank's part; the parts are removed."""
        rows, arrays = [], []
        for r in range(world):
            part = out / f"{stem}.rank{r}.csv"
            with part.open() as f:
                part_rows = list(csv.DictReader(f))
            if codes:
                arrays += list(np.load(out / f"codes.rank{r}.npy")) if part_rows else []
                (out / f"codes.rank{r}.npy").unlink()
            rows += part_rows
            part.unlink()
        order = sorted(range(len(rows)), key=lambda k: int(rows[k]["index"]))
        if codes:
            np.save(out / "codes.npy", np.stack([arrays[k] for k in order]) if order else np.zeros((0, 0), np.float32))
            rows = [{"row": j, "input": rows[k]["input"]} for j, k in enumerate(order)]
        else:
            rows = [rows[k] for k in order]
        _write_csv(out / f"{stem}.csv", rows)

    def write_samples(self, pl_module, out: Path) -> None:
        """Each generated set as ``samples/<set>/NNNN.png`` and ``samples/<set>_grid.png`` (seeded)."""
        with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            sets = pl_module.generate(self.num_samples)
        for name, images in sets.items():
            for j, image in enumerate(images):
                save_image_file(image, out / "samples" / name / f"{j:04d}.png")
            grid = make_grid(images.float().cpu(), nrow=int(np.ceil(np.sqrt(len(images)))), padding=2, pad_value=1.0)
            save_image_file(grid, out / "samples" / f"{name}_grid.png")


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else ["index", "input"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
