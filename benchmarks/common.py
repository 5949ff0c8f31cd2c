"""Models from the experiment configs (``configs/``) with a benchmark's stated overrides: a config's ``model``
block with its code or latent size, learning rate or schedule changed. The skeleton is :mod:`benchmarks.core`."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L

from ae_lightning.config import config_path, instantiate, load_config
from benchmarks.core import relative

CODE_KEYS = ("widths", "code_dim", "latent_dim")


def model_spec(config: str | Path, **init_args) -> dict:
    """A copy of ``configs/<config>.yaml``'s ``model`` block with ``init_args`` entries replaced."""
    spec = copy.deepcopy(load_config(config)["model"])
    spec["init_args"].update(copy.deepcopy(init_args))
    return spec


def build(spec: dict) -> L.LightningModule:
    """The LightningModule of a ``model`` block, through the one config loader (type-checked as the CLI does)."""
    return instantiate(spec, L.LightningModule)


def config_file(name: str | Path) -> str:
    """``configs/<name>.yaml`` as a results table names it (relative to the project)."""
    return relative(str(config_path(name).resolve()))


def with_code_dim(spec: dict, code_dim: int) -> dict:
    """A copy of a ``model`` block whose nets produce ``code_dim``-sized codes: the encoder's and decoder's last
    ``widths`` entry (or their ``code_dim`` / ``latent_dim``), and an adversarial autoencoder's discriminator
    ``in_features`` and prior ``dim``."""
    spec = copy.deepcopy(spec)
    nets = [spec["init_args"].get(net, {}).get("init_args", {}) for net in ("encoder", "decoder")]
    if not any(key in args for args in nets for key in CODE_KEYS):
        raise ValueError(f"{spec['class_path']}: no {' / '.join(CODE_KEYS)} in its encoder/decoder init_args "
                         "to set the code size; fix: name the code size with one of these keys in the config")
    for args in nets:
        for key in set(CODE_KEYS) & set(args):
            args[key] = [*args[key][:-1], code_dim] if key == "widths" else code_dim
    for block, key in (("discriminator", "in_features"), ("prior", "dim")):
        args = spec["init_args"].get(block, {}).get("init_args", {})
        if key in args:
            args[key] = code_dim
    return spec


def with_latent_dim(spec: dict, latent_dim: int) -> dict:
    """A copy of a VAE's ``model`` block with a ``latent_dim``-sized ``z``: the encoder's last width is
    ``2 * latent_dim`` (means and log-variances), the decoder's last (its input) ``latent_dim``."""
    spec = copy.deepcopy(spec)
    args = spec["init_args"]
    try:
        enc, dec = args["encoder"]["init_args"], args["decoder"]["init_args"]
        enc["widths"] = [*enc["widths"][:-1], 2 * latent_dim]
        dec["widths"] = [*dec["widths"][:-1], latent_dim]
    except KeyError as err:
        raise ValueError(f"{spec['class_path']}: with_latent_dim needs MLP encoder/decoder `widths` in the config "
                         f"(missing {err})") from None
    args["latent_dim"] = latent_dim
    return spec


def scaled_lr(spec: dict, factor: float) -> dict:
    """A copy of a ``model`` block with ``factor`` times its optimizer's learning rate (none: Adam's 1e-3)."""
    spec = copy.deepcopy(spec)
    opt = spec["init_args"].setdefault("optimizer", {"class_path": "torch.optim.Adam", "init_args": {}})
    opt.setdefault("init_args", {})
    opt["init_args"]["lr"] = opt["init_args"].get("lr", 1e-3) * factor
    return spec


def scaled_schedule(cfg: dict, scale: float) -> tuple[dict, int]:
    """An experiment config's ``model`` block and epoch count with every schedule entry scaled (at least 1 epoch
    per stage). A staged model stops the fit after its last stage: the count returned is then only an upper bound."""
    spec = copy.deepcopy(cfg["model"])
    args = spec["init_args"]

    def scaled(n: int) -> int:
        return max(1, math.ceil(n * scale)) if n > 0 else 0

    epochs = scaled(cfg.get("trainer", {}).get("max_epochs", 10))
    if "pretrain_epochs" in args:
        pre = args["pretrain_epochs"]
        args["pretrain_epochs"] = [scaled(n) for n in pre] if isinstance(pre, list) else scaled(pre)
        args["finetune_epochs"] = scaled(args.get("finetune_epochs", 0))
    return spec, epochs
