"""Image grids written to ``<run dir>/images/`` and to the logger each validation epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from ae_lightning.models.base import images_of


def run_dir(trainer: L.Trainer) -> Path:
    """The run directory: the logger's versioned folder, else ``default_root_dir``.

    ``trainer.log_dir`` without its broadcast: that is a collective call, which deadlocks DDP when
    only rank 0 makes it (as :func:`log_image` does); rank 0's own value is the one it would get.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    path = logger.log_dir if isinstance(logger, TensorBoardLogger | CSVLogger) else logger.save_dir
    return Path(path or trainer.default_root_dir)


@rank_zero_only
def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str = "") -> Path:
    """Save ``grid`` (C, H, W) as ``<run dir>/images/<key>_epoch<NNN>.png`` and send it to image-capable loggers."""
    path = run_dir(trainer) / "images" / f"{key.replace('/', '_')}_epoch{trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], caption=[caption], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)
    return path


class ReconstructionGrid(L.Callback):
    """Rows clean | model input (noisy, for denoisers) | reconstruction, for a fixed set of val images.

    The same images and the same seeded noise are used every epoch, so grids are comparable.
    """

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1, seed: int = 0) -> None:
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self._images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._images is None or len(self._images) < self.num_images:
            got = images_of(batch)[: self.num_images].detach().cpu()
            self._images = got if self._images is None else torch.cat([self._images, got])[: self.num_images]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._images is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        x = self._images.to(pl_module.device)  # (N, C, H, W)
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        x_in, recon = pl_module.preview(x, generator=gen)
        pl_module.train(was_training)
        rows = [x, x_in, recon] if not torch.equal(x_in, x) else [x, recon]
        grid = make_grid(torch.cat(rows).float().clamp(0, 1).cpu(), nrow=len(x), padding=2, pad_value=1.0)
        log_image(trainer, "val/reconstruction", grid, caption=" | ".join(
            ["clean", "input", "reconstruction"] if len(rows) == 3 else ["clean", "reconstruction"]))
