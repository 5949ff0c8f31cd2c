"""``ae-lightning``: LightningCLI entry point (fit / validate / test / predict).

Examples::

    ae-lightning fit --config configs/dae_xray64.yaml
    ae-lightning fit --config configs/ae_mnist.yaml --config configs/logger/wandb.yaml
    ae-lightning test --config configs/dae_xray64.yaml --ckpt_path runs/dae_xray64/version_0/checkpoints/last.ckpt
    ae-lightning compress --ckpt runs/rd_xray64_0.013/version_0/checkpoints/last.ckpt my_xrays/ coded/   # learned codec
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
- validation SSIM and the adversarial models' prior match look at a bounded sample of each validation epoch,
  ``diagnostics.*`` (:mod:`ae_lightning.callbacks.diagnostics`; ``null``: every image);
- ``last.ckpt`` is also written every ``resume.every_n_train_steps`` steps and on SIGTERM, so a killed or
  preempted run resumes with ``--ckpt_path last`` to the same weights (:mod:`ae_lightning.callbacks.resume`);
- ``ae-lightning predict`` writes one output per input, codes or samples (``prediction.*``, see
  :mod:`ae_lightning.callbacks.prediction`) under ``runs/<experiment>/version_N/predict/``;
- one run, one folder, whatever the logger (:mod:`ae_lightning.callbacks.run_dir`): the resolved ``config.yaml``,
  checkpoints, metrics, image grids, predictions (and W&B's own files) all go to the folder where the checkpoints
  go, ``runs/<experiment>/version_N/`` (CSV) or ``runs/ae_lightning/<run id>/`` (W&B); a W&B run is named after
  the experiment and its overrides (:func:`run_label`) and grouped by experiment;
- every net's ``image_shape`` is the data's (:func:`ae_lightning.config.link_image_shape`): a config
  states the image size once, in its data block, and ``--data.init_args.image_size=128`` resizes the nets too.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ae_lightning.callbacks import (
    Diagnostics,
    NonFiniteLossError,
    PredictionWriter,
    ReconstructionGrid,
    ResumeCheckpoint,
    SaveRunConfig,
    Speed,
    StopOnNonFinite,
    run_dir,
)
from ae_lightning.config import DEFAULTS, instantiate, link_image_shape
from ae_lightning.hparams import init_parameters
from ae_lightning.loggers import WandbLogger
from ae_lightning.models.ddp import ddp_strategy


def run_name(config_paths) -> str | None:
    """The run's name: the stem of the first ``--config`` file (the experiment; fragments come after it)."""
    for path in config_paths or []:
        name = Path(str(getattr(path, "relative", path))).stem
        if name:
            return name
    return None


#: overrides that do not tell runs apart (where files go, how much is printed), left out of run names
_NOT_IN_LABEL = ("config", "trainer.logger", "trainer.default_root_dir", "trainer.enable_", "ckpt_path")


def run_label(experiment: str, argv) -> str:
    """A run's display name: the experiment and its command-line overrides, each as its last key.

    ``run_label("dae_xray64", ["--model.init_args.optimizer.init_args.lr=0.01", "--data.init_args.noise.init_args.std",
    "0.3"])`` → ``"dae_xray64 lr=0.01 std=0.3"``: a sweep's runs (``${args}``) are told apart in the W&B UI. A
    ``--config`` after the first (the experiment) that is not a logger fragment adds its stem (``depth3``).
    """
    parts, argv, configs = [], [str(a) for a in argv or []], 0
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true"
        if key == "config":  # a fragment beyond the experiment (a sweep's depth3.yaml) names a choice; a logger does not
            configs += 1
            if configs > 1 and Path(value).parent.name != "logger":
                parts.append(Path(value).stem)
        elif key and not key.startswith(_NOT_IN_LABEL) and key not in ("seed_everything",):
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join([experiment, *parts])


def _logger_specs(logger) -> list:
    return [spec for spec in (logger if isinstance(logger, list) else [logger]) if getattr(spec, "init_args", None)]


def _init_parameters(class_path: str) -> list[str]:
    """The constructor arguments ``class_path`` accepts, following ``**kwargs`` up its base classes."""
    cls = _import_class(class_path)
    return list(init_parameters(cls)) if isinstance(cls, type) else []


def _import_class(class_path: str):
    """The object ``class_path`` names; ``None`` when it cannot be imported."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def did_you_mean(message: str, parser) -> str:
    """A "did you mean …?" line for each misspelled key in a jsonargparse error ``message``.

    Two shapes of error: an unknown option of the (sub)command (``--trainer.max_epoks=1`` on the command
    line, ``trainer: {max_epoks: 1}`` in a YAML file) is matched against every option the parser has; an
    argument a class does not take (``Option 'widht' is not accepted`` under ``class_path
    'ae_lightning.nets.MLPEncoder'``) against that class's constructor arguments.
    """
    import difflib
    import re

    options = {a.dest for a in getattr(parser, "_actions", []) if a.dest and a.dest != "help"}
    hints = []
    for key in re.findall(r"unrecognized arguments: (.*)", message):
        for arg in key.split():
            hints.append((arg.lstrip("-").split("=")[0], options))
    hints += [(key, options) for key in re.findall(r"does not accept option '([^']+)'", message)]
    # nested: the innermost class_path named before each rejected option
    class_path = None
    for line in message.splitlines():
        if found := re.search(r"class_path '([^']+)'", line):
            class_path = found.group(1)
        if (found := re.search(r"Option '([^']+)' is not accepted", line)) and class_path:
            hints.append((found.group(1), _init_parameters(class_path)))
    lines = []
    for key, candidates in hints:
        close = difflib.get_close_matches(key, sorted(candidates), n=3, cutoff=0.6)
        if close and f"instead of {key!r}" not in message + "".join(lines):  # a nested parser's error already says it
            lines.append(f"did you mean {' or '.join(repr(c) for c in close)} instead of {key!r}?")
    return "".join(f"\n  {line}" for line in lines)


class SuggestingParser(LightningArgumentParser):
    """Lightning's parser, whose errors end with a "did you mean …?" for each misspelled key."""

    def error(self, message: str, ex: Exception | None = None):
        parser = getattr(ex, "subcommand_parser", None) or self
        return super().error(message + did_you_mean(message, parser), ex)


class AutoencoderCLI(LightningCLI):
    """Subclass mode for model and data: any LightningModule / DataModule can be named in YAML."""

    def parse_arguments(self, parser, args) -> None:
        self._argv = list(args) if isinstance(args, list | tuple) else sys.argv[1:] if args is None else []
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ReconstructionGrid, "image_grid")
        parser.set_defaults({"image_grid.num_images": 8})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # enable_version_counter=False: resume.* writes last.ckpt too, in the same folder (no last-v1.ckpt)
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.save_last": True,
                             "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(StopOnNonFinite, "divergence")
        parser.add_lightning_class_args(ResumeCheckpoint, "resume")
        # `ae-lightning predict` writes its outputs (<run folder>/predict/); inert in the other subcommands
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        # channels-last, torch.compile, device-resident in-memory data (all off by default)
        parser.add_lightning_class_args(Speed, "speed")
        # how much of each validation epoch the expensive diagnostics (SSIM, the AAE's prior match) look at
        parser.add_lightning_class_args(Diagnostics, "diagnostics")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        experiment = run_name(cfg.get("config")) or "ae_lightning"
        for spec in _logger_specs(cfg.get("trainer", {}).get("logger")):
            init = spec.init_args
            wandb = str(spec.class_path).endswith("WandbLogger")
            if "name" in init and init.get("name") is None:
                # CSV: the folder (runs/<experiment>/version_N); W&B: the run's display name, its group the experiment
                init["name"] = run_label(experiment, getattr(self, "_argv", [])) if wandb else experiment
            if wandb and "group" in init and init.get("group") is None:
                init["group"] = experiment
        # the nets take the data's image shape: written once, in the data block (image_size, or fixed by the set)
        data_spec = yaml.safe_load(self.parser.dump(self.config, skip_check=True))
        data_spec = (data_spec.get(self.subcommand) if self.subcommand else data_spec)["data"]
        link_image_shape(cfg["model"], instantiate(data_spec, L.LightningDataModule).image_shape)
        # a model that trains some parameters per phase or stage needs DDP's unused-parameter handling, asked for
        # by the strategy's registered name before the Trainer builds it (see ae_lightning.models.ddp)
        trainer = cfg.get("trainer", {})
        model_class = _import_class(cfg["model"].get("class_path"))
        if model_class is not None and isinstance(trainer.get("strategy"), str):
            trainer["strategy"] = ddp_strategy(trainer["strategy"], model_class)

    def after_instantiate_classes(self) -> None:
        # W&B's own files into the run's folder too (beside checkpoints/, config.yaml, images/), whatever logger is first
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.use_folder(run_dir(self.trainer))


#: subcommands that are not Trainer methods (so not LightningCLI's): name -> (module with ``main(argv)``, help)
TOOLS = {
    "export": ("ae_lightning.export", "write a trained model as a file to ship (TorchScript / ONNX), with its check"),
}


def main(args=None) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] and argv[0] in TOOLS:
        importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:])
        return
    if argv[:1] in (["-h"], ["--help"]):
        try:
            _launch_cli(args)
        finally:  # LightningCLI's help lists the Trainer subcommands only: name the others too
            print("\nother subcommands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in TOOLS.items()))
        return
    if argv[:1] in (["compress"], ["decompress"]):  # files to bytes and back with a learned codec (not Trainer methods)
        from ae_lightning.learned_codec import main as codec_main

        sys.exit(codec_main(argv))
    try:
        _launch_cli(args)
    except NonFiniteLossError as err:  # a diverged run: one line, exit status 1, the last good checkpoint kept
        sys.exit(f"ae-lightning: {err}")


def _launch_cli(args) -> None:
    """The Trainer subcommands (fit / validate / test / predict) through :class:`AutoencoderCLI`."""
    AutoencoderCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=SuggestingParser,
        save_config_callback=SaveRunConfig,  # config.yaml into the run's own folder, whatever the logger
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        parser_kwargs={cmd: {"default_config_files": [str(DEFAULTS)] if DEFAULTS.is_file() else []}
                       for cmd in ("fit", "validate", "test", "predict")},
        args=args,
    )


if __name__ == "__main__":
    main()
