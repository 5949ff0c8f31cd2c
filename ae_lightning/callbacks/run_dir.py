"""One run, one folder, whatever the logger.

A run's folder is where Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` puts its
``checkpoints/``: ``<save_dir>/<name>/<version>`` of the first logger — ``runs/dae_xray64/version_3/``
with the CSV logger, ``runs/ae_lightning/<run id>/`` with W&B (whose ``name`` is the project and
``version`` the run id). Every other artefact of the run goes there too: the resolved ``config.yaml``
(:class:`SaveRunConfig`), ``metrics.csv``, ``images/`` (:func:`~ae_lightning.callbacks.images.log_image`),
``predict/`` and, for W&B, its own ``wandb/`` files (:class:`ae_lightning.loggers.WandbLogger`). So the
next run never overwrites this one's files, whichever logger (or loggers) it uses.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback


def run_dir(trainer: L.Trainer) -> Path:
    """The run's folder on this process (see module docstring); ``default_root_dir`` without a logger.

    No broadcast: that is a collective call, which deadlocks DDP when only rank 0 makes it (as
    :func:`~ae_lightning.callbacks.images.log_image` does). Rank 0's value is the run's; a caller on
    every rank broadcasts it (``trainer.strategy.broadcast``).
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    # exactly ModelCheckpoint's rule (lightning.pytorch.callbacks.ModelCheckpoint.__resolve_ckpt_dir)
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "") / version


class SaveRunConfig(SaveConfigCallback):
    """LightningCLI's config saver writing ``config.yaml`` into :func:`run_dir`, beside ``checkpoints/``.

    Lightning's own writes to ``trainer.log_dir``, which for a logger other than CSV/TensorBoard is the
    logger's ``save_dir`` shared by every run (``runs/config.yaml`` with W&B: the next run overwrites it).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False  # save_config below writes it, into the run's folder
        super().__init__(*args, **kwargs)

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank 0 only
        path = run_dir(trainer) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=self.overwrite, multifile=self.multifile)
