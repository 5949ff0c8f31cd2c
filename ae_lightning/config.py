"""The experiment configs outside the CLI: one loader for benchmarks, scripts and notebooks.

``configs/<name>.yaml`` holds an experiment's ``model`` / ``data`` / ``trainer`` blocks; objects are
built from their ``class_path`` / ``init_args`` specs by jsonargparse, type-checked exactly as
``ae-lightning fit`` does (the CLI is the same parser). A value that names a YAML file (e.g. the
denoising noise grid ``noise/denoising_grid.yaml``) is read in place, relative to the config::

    cfg = load_config("dae_xray64")                       # configs/dae_xray64.yaml
    model = instantiate(cfg["model"], L.LightningModule)
    model, data = load_run("runs/dae_xray64/version_0/checkpoints/last.ckpt", with_data=True)
    # or through Lightning: the checkpoint holds the plain hyperparameters, the config the objects
    model = DenoisingAutoencoder.load_from_checkpoint(ckpt, **object_arguments(cfg["model"]))
"""

from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from ae_lightning.hparams import hyperparameter_names

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULTS = CONFIGS / "defaults.yaml"


def config_path(path: str | Path) -> Path:
    """``path`` itself, or ``configs/<path>.yaml`` for a bare name such as ``dae_xray64`` (or ``rd_xray64_0.013``: a
    name is anything not ending in ``.yaml`` / ``.yml``)."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        p = CONFIGS / f"{p}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"config {p} does not exist; fix: pass a path to a YAML file (see configs/)")
    return p


def _inline_files(value: Any, folder: Path) -> Any:
    """Replace every string ending in ``.yaml`` that names a file (relative to ``folder`` or ``configs/``)
    by that file's content, as jsonargparse does for the CLI."""
    if isinstance(value, dict):
        return {k: _inline_files(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline_files(v, folder) for v in value]
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        for base in (folder, CONFIGS):
            if (base / value).is_file():
                return _inline_files(yaml.safe_load((base / value).read_text()), (base / value).parent)
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """The YAML at ``path`` (a bare name is looked up in ``configs/``) with referenced YAML files inlined
    and, when it has a ``data`` block, the nets' ``image_shape`` taken from the data (:func:`link_image_shape`)."""
    p = config_path(path)
    cfg = _inline_files(yaml.safe_load(p.read_text()), p.parent)
    if isinstance(cfg, dict) and "model" in cfg and "data" in cfg:
        link_image_shape(cfg["model"], instantiate(cfg["data"], L.LightningDataModule).image_shape)
    return cfg


def _fields(node: Any) -> dict | None:
    """The fields of a ``class_path`` / ``init_args`` node, as a dict or a jsonargparse Namespace, else None."""
    fields = node if isinstance(node, dict) else vars(node) if hasattr(node, "__dict__") and not callable(node) else None
    return fields if fields is not None and "class_path" in fields else None


def link_image_shape(spec: Any, image_shape) -> None:
    """Set ``image_shape`` in place on every net of a model spec (nested ``class_path`` / ``init_args``,
    dicts or jsonargparse Namespaces) whose class takes one: the data decide the shape, so the experiment
    YAMLs never state it (``ae-lightning`` does the same before it builds the model)."""
    fields = _fields(spec)
    if fields is None:
        return
    module, name = str(fields["class_path"]).rsplit(".", 1)
    cls = getattr(import_module(module), name)
    init = fields.get("init_args")
    if init is None:
        return
    args = init if isinstance(init, dict) else vars(init)
    if "image_shape" in inspect.signature(cls).parameters:
        args["image_shape"] = [int(s) for s in image_shape]
    for value in args.values():
        for item in value if isinstance(value, list) else [value]:
            link_image_shape(item, image_shape)


def instantiate(spec: dict[str, Any], base: type = object) -> Any:
    """An instance of ``spec['class_path']`` (a subclass of ``base``) built from ``spec['init_args']``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "obj", required=True)
    return parser.instantiate(parser.parse_object({"obj": spec})).obj


def object_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """The object arguments (nets, noise, priors, optimisers) of a ``class_path`` / ``init_args`` model spec,
    built: what ``Model.load_from_checkpoint`` needs besides the checkpoint's plain hyperparameters."""
    module, name = spec["class_path"].rsplit(".", 1)
    cls = getattr(import_module(module), name)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "init", instantiate=False)
    args = _inline_files(spec.get("init_args", {}), CONFIGS)
    init = parser.instantiate(parser.parse_object({"init": args})).init
    plain = set(hyperparameter_names(cls))
    return {k: v for k, v in vars(init).items() if k not in plain}


def find_run_config(ckpt: Path) -> Path:
    """The run's resolved ``config.yaml``: ``<run>/checkpoints/x.ckpt`` → ``<run>/config.yaml``."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise FileNotFoundError(f"no config.yaml beside {ckpt} or one folder up; fix: pass the run's config explicitly")


def load_run(ckpt: str | Path, config: str | Path | None = None, with_data: bool = False):
    """``(model, datamodule or None)`` of a finished run: objects from its resolved config (saved by
    ``ae-lightning fit`` beside the checkpoints), weights from ``ckpt`` (loaded with ``weights_only=True``)."""
    ckpt = Path(ckpt)
    cfg = load_config(config or find_run_config(ckpt))
    model = instantiate(cfg["model"], L.LightningModule)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    data = instantiate(cfg["data"], L.LightningDataModule) if with_data else None
    return model.eval(), data
