"""``ae-lightning``: LightningCLI entry point (fit / validate / test / predict).

Examples::

    ae-lightning fit --config configs/dae_xray64.yaml
    ae-lightning fit --config configs/ae_mnist.yaml --config configs/logger/wandb.yaml
    ae-lightning test --config configs/dae_xray64.yaml --ckpt_path runs/dae_xray64/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.cli import LightningCLI

from ae_lightning.callbacks import ReconstructionGrid


class AutoencoderCLI(LightningCLI):
    """Subclass mode for model and data: any LightningModule / DataModule can be named in YAML."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ReconstructionGrid, "image_grid")
        parser.set_defaults({"image_grid.num_images": 8})


def main(args=None) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    AutoencoderCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        args=args,
    )


if __name__ == "__main__":
    main()
