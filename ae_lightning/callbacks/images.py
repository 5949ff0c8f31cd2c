"""Image grids written to ``<run dir>/images/`` (:func:`~ae_lightning.callbacks.run_dir.run_dir`) and to the
logger each validation epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torchvision.utils import make_grid, save_image

from ae_lightning.callbacks.run_dir import run_dir


def save_png(grid: torch.Tensor, path: Path) -> None:
    """``grid`` (C, H, W) in [0, 1] as a PNG; a grid of gray images (``make_grid`` repeats their one channel three
    times) as a one-channel PNG: the same picture, a third of the pixels to compress (4× faster to write)."""
    if grid.shape[0] == 3 and torch.equal(grid[0], grid[1]) and torch.equal(grid[0], grid[2]):
        grid = grid[:1]
    if grid.shape[0] != 1:
        save_image(grid, path)
        return
    # torchvision's save_image conversion (round half up, clamp), then one channel; it always writes RGB(A)
    gray = grid[0].mul(255).add_(0.5).clamp_(0, 255).to("cpu", torch.uint8).numpy()  # (H, W)
    Image.fromarray(gray, mode="L").save(path)


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str = "") -> Path:
    """Save ``grid`` (C, H, W) as ``<run dir>/images/<key>_epoch<NNN>.png`` and send it to image-capable loggers."""
    path = run_dir(trainer) / "images" / f"{key.replace('/', '_')}_epoch{trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], caption=[caption], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)
    return path


class ReconstructionGrid(L.Callback):
    """Rows clean | model input (noisy, for denoisers) | reconstruction of the first validation images.

    The rows come from the validation step's own output (:meth:`~ae_lightning.models.Autoencoder.grid_rows`):
    the grid shows exactly the input that was scored and the reconstruction that was scored, with the
    batch's labels for conditional models. Validation data are not shuffled and validation noise is
    reseeded each epoch, so the grids of successive epochs are comparable.
    """

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._rows: list[tuple[str, torch.Tensor]] = []

    def _due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = len(self._rows[0][1]) if self._rows else 0
        if not self._due(trainer) or have >= self.num_images or not hasattr(pl_module, "grid_rows"):
            return
        take = self.num_images - have
        new = [(name, rows[:take].detach().float().cpu()) for name, rows in pl_module.grid_rows(batch, outputs)]
        self._rows = new if not self._rows else [(n, torch.cat([old, rows])) for (n, old), (_, rows) in
                                                  zip(self._rows, new, strict=True)]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._rows or not self._due(trainer):
            return
        names = [name for name, _ in self._rows]
        images = torch.cat([rows for _, rows in self._rows]).clamp(0, 1)
        grid = make_grid(images, nrow=len(self._rows[0][1]), padding=2, pad_value=1.0)
        log_image(trainer, "val/reconstruction", grid, caption=" | ".join(names))
        self._rows = []
