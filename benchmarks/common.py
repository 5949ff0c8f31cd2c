"""Models from the experiment configs (``configs/``) with a benchmark's stated overrides: a config's ``model``
block, its code or latent size, its learning rate or schedule scaled. The benchmark skeleton (settings, context,
results, command line, registry) is :mod:`benchmarks.core`."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L

from ae_lightning.config import instantiate, load_config
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


def with_code_dim(spec: dict, code_dim: int) -> dict:
    """A copy of a config's ``model`` block whose nets produce ``code_dim``-sized codes: the encoder's and
    decoder's last ``widths`` entry (or their ``code_dim`` / ``latent_dim``), and, for an adversarial
    autoencoder, the discriminator's ``in_features`` and the prior's ``dim``."""
    spec = copy.deepcopy(spec)
    found = False
    for net in ("encoder", "decoder"):
        args = spec["init_args"].get(net, {}).get("init_args", {})
        for key in CODE_KEYS:
            if key in args:
                if key == "widths":
                    args[key] = [*args[key][:-1], code_dim]
                else:
                    args[key] = code_dim
                found = True
    if not found:
        raise ValueError(f"{spec['class_path']}: no {' / '.join(CODE_KEYS)} in its encoder/decoder init_args "
                         "to set the code size; fix: name the code size with one of these keys in the config")
    for block, key in (("discriminator", "in_features"), ("prior", "dim")):
        args = spec["init_args"].get(block, {}).get("init_args", {})
        if key in args:
            args[key] = code_dim
    return spec


def with_latent_dim(spec: dict, latent_dim: int) -> dict:
    """A copy of a VAE config's ``model`` block with a ``latent_dim``-sized ``z``: the encoder's last width is
    ``2 * latent_dim`` (means and log-variances), the decoder's last width (its input) ``latent_dim``."""
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


def scaled_lr(spec: dict, factor: float, optimizer: str = "optimizer") -> dict:
    """A copy of a ``model`` block whose ``optimizer`` learning rate is ``factor`` times the config's
    (the config without one: torch.optim.Adam's default 1e-3)."""
    spec = copy.deepcopy(spec)
    opt = spec["init_args"].setdefault(optimizer, {"class_path": "torch.optim.Adam", "init_args": {}})
    opt.setdefault("init_args", {})
    opt["init_args"]["lr"] = opt["init_args"].get("lr", 1e-3) * factor
    return spec


def scaled_schedule(cfg: dict, scale: float) -> tuple[dict, int]:
    """An experiment config's ``model`` block and epoch count with every schedule entry scaled (at least
    1 epoch per stage). A staged model's epoch count is its own (``model.total_epochs``: it stops the fit
    after its last stage); the count returned here is then only the trainer's upper bound."""
    spec = copy.deepcopy(cfg["model"])
    args = spec["init_args"]

    def scaled(n: int) -> int:
        return max(1, math.ceil(n * scale)) if n > 0 else 0

    epochs = scaled(cfg.get("trainer", {}).get("max_epochs", 10))
    if "pretrain_epochs" in args:  # staged models: the schedule is the model's
        pre = args["pretrain_epochs"]
        args["pretrain_epochs"] = [scaled(n) for n in pre] if isinstance(pre, list) else scaled(pre)
        args["finetune_epochs"] = scaled(args.get("finetune_epochs", 0))
    return spec, epochs

def config_file(name: str | Path) -> str:
    """``configs/<name>.yaml`` as a results table names it (relative to the project)."""
    from ae_lightning.config import config_path

    return relative(str(config_path(name).resolve()))
