"""Pieces every benchmark script shares: output folder, hardware choice, tables, quiet trainers."""

from __future__ import annotations

import csv
import logging
import os
import platform
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch

RESULTS = Path(__file__).parent / "results"


def hardware() -> tuple[str, str, str]:
    """``(accelerator, precision, description)``: the GPU with bf16 autocast when there is one, else the CPU."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "gpu", precision, f"GPU {name}, {precision}"
    threads = torch.get_num_threads()
    return "cpu", "32-true", f"CPU {platform.processor() or platform.machine()}, {threads} threads, fp32"


def quiet() -> None:
    """Keep the terminal for the progress bars and the summary table."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")


def trainer(max_epochs: int, accelerator: str = "auto", precision: str = "32-true", **kwargs) -> L.Trainer:
    """A Trainer for benchmark fits: no logger, no checkpoints, no progress bar unless asked."""
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(max_epochs=max_epochs, accelerator=accelerator, precision=precision, **defaults)


def write_csv(path: Path, rows: Iterable[Mapping], columns: Sequence[str]) -> Path:
    """Rows as CSV with exactly ``columns`` (floats with 4 significant decimals)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
