"""``ae-lightning``: LightningCLI entry point (fit / validate / test / predict).

Examples::

    ae-lightning fit --config configs/dae_xray64.yaml
    ae-lightning fit --config configs/ae_mnist.yaml --config configs/logger/wandb.yaml
    ae-lightning test --config configs/dae_xray64.yaml --ckpt_path runs/dae_xray64/version_0/checkpoints/last.ckpt
    ae-lightning predict --config configs/dae_xray64.yaml --ckpt_path runs/dae_xray64/version_0/checkpoints/last.ckpt \
        --data.init_args.predict_root my_xrays/          # denoised copies in runs/dae_xray64/predict/

What every experiment shares is not repeated in its YAML:

- ``configs/defaults.yaml`` is read first (``default_config_files``): the seed and the CSV logger
  under ``runs/``;
- the run is named after the first ``--config`` file (``configs/dae_xray64.yaml`` → ``runs/dae_xray64/``)
  unless the logger's ``name`` is set;
- checkpoints (best by ``val/loss`` and ``last.ckpt``) and image grids are CLI arguments with
  defaults, ``checkpoint.*`` and ``image_grid.*``, so an experiment's ``trainer.callbacks`` holds
  only its own extras;
- a non-finite loss term stops the run with one line naming the epoch, the step and the term, and no
  checkpoint with non-finite weights is written (``divergence.*``, :mod:`ae_lightning.callbacks.divergence`);
- ``last.ckpt`` is also written every ``resume.every_n_train_steps`` steps and on SIGTERM, so a killed or
  preempted run resumes with ``--ckpt_path last`` to the same weights (:mod:`ae_lightning.callbacks.resume`);
- ``ae-lightning predict`` writes one output per input, codes or samples (``prediction.*``, see
  :mod:`ae_lightning.callbacks.prediction`) under ``runs/<experiment>/predict/``;
- every net's ``image_shape`` is the data's (:func:`ae_lightning.config.link_image_shape`): a config
  states the image size once, in its data block, and ``--data.init_args.image_size=128`` resizes the nets too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from ae_lightning.callbacks import (
    NonFiniteLossError,
    PredictionWriter,
    ReconstructionGrid,
    ResumeCheckpoint,
    StopOnNonFinite,
)
from ae_lightning.config import DEFAULTS, instantiate, link_image_shape


def run_name(config_paths) -> str | None:
    """The run's name: the stem of the first ``--config`` file (the experiment; fragments come after it)."""
    for path in config_paths or []:
        name = Path(str(getattr(path, "relative", path))).stem
        if name:
            return name
    return None


class AutoencoderCLI(LightningCLI):
    """Subclass mode for model and data: any LightningModule / DataModule can be named in YAML."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ReconstructionGrid, "image_grid")
        parser.set_defaults({"image_grid.num_images": 8})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # enable_version_counter=False: resume.* writes last.ckpt too, in the same folder (no last-v1.ckpt)
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.save_last": True,
                             "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(StopOnNonFinite, "divergence")
        parser.add_lightning_class_args(ResumeCheckpoint, "resume")
        # `ae-lightning predict` writes its outputs (runs/<experiment>/predict/); inert in the other subcommands
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        logger = cfg.get("trainer", {}).get("logger")
        init = getattr(logger, "init_args", None) if logger is not None else None
        if init is not None and "name" in init and init.get("name") is None:
            init["name"] = run_name(cfg.get("config")) or "ae_lightning"
        # the nets take the data's image shape: written once, in the data block (image_size, or fixed by the set)
        data_spec = yaml.safe_load(self.parser.dump(self.config, skip_check=True))
        data_spec = (data_spec.get(self.subcommand) if self.subcommand else data_spec)["data"]
        link_image_shape(cfg["model"], instantiate(data_spec, L.LightningDataModule).image_shape)


def main(args=None) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["export"]:  # a model file to ship (not a Trainer method, so not a LightningCLI subcommand)
        from ae_lightning.export import main as export_main

        export_main(argv[1:])
        return
    try:
        _run(args)
    except NonFiniteLossError as err:  # a diverged run: one line, exit status 1, the last good checkpoint kept
        sys.exit(f"ae-lightning: {err}")


def _run(args) -> None:
    AutoencoderCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        parser_kwargs={cmd: {"default_config_files": [str(DEFAULTS)] if DEFAULTS.is_file() else []}
                       for cmd in ("fit", "validate", "test", "predict")},
        args=args,
    )


if __name__ == "__main__":
    main()
