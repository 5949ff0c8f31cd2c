"""Pretrained weights that ship with the package, and the loader.

A weights file (``<name>.pt``) is one ``torch.load(..., weights_only=True)``-safe dict::

    {"format": "ae_lightning.pretrained/1",
     "model": {"class_path": ..., "init_args": {...}},   # the model spec of the run's config (nets, noise, residual)
     "state_dict": {"encoder.…": tensor, "decoder.…": tensor},   # the nets' weights (stored as float16)
     "meta": {...}}                                       # how it was trained: data, epochs, device, val scores

Shipped names (:data:`REGISTRY`): ``xray64-denoiser``, the noise-blind U-Net X-ray denoiser
(``MODEL_CARD.md`` beside this file; trained by ``bash scripts/train_denoiser.sh``, written by
:mod:`ae_lightning.pretrained.export`). Use it from Python or from a config::

    from ae_lightning import pretrained
    model = pretrained.load("xray64-denoiser")          # a DenoisingAutoencoder in eval mode, on the CPU
    with torch.no_grad():
        clean = model.reconstruct_full(noisy)            # (B, 1, H, W) in [0, 1], any H, W
    # ae-lightning predict --config configs/denoise_pretrained_xray.yaml --data.init_args.predict_root my_xrays/

Anywhere a name is taken, a path to a weights file works too. ``DenoisingAutoencoder(..., weights=name)``
loads the file into nets built from a config (:func:`load_weights`); their shapes must match.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
FORMAT = "ae_lightning.pretrained/1"
#: the parts of a model a weights file holds
NETS = ("encoder.", "decoder.")
#: shipped name → file in this folder
REGISTRY = {"xray64-denoiser": "xray64_denoiser.pt"}
#: how to get each shipped file when it is missing
HOW_TO_GET = {
    "xray64-denoiser": "train it with `bash scripts/train_denoiser.sh <kermany_64.npz> <outdir> [minutes]` from the "
                       "repository (about 7 minutes on one H200) and copy <outdir>/xray64_denoiser.pt here",
}


class WeightsNotFoundError(FileNotFoundError):
    """A weights file is not where it is looked for; the message names the file and how to get it."""


def weights_file(name: str | Path) -> Path:
    """The file of a shipped ``name`` (:data:`REGISTRY`) or ``name`` itself as a path; it must exist."""
    key = str(name)
    path = HERE / REGISTRY[key] if key in REGISTRY else Path(key).expanduser()
    if not path.is_file():
        if key in REGISTRY:
            raise WeightsNotFoundError(
                f"pretrained weights {key!r} are missing: {path} does not exist (this copy of ae_lightning was built "
                f"without them); fix: {HOW_TO_GET.get(key, 'reinstall the package')}, or pass the path of a weights file")
        raise WeightsNotFoundError(f"weights file {path} does not exist; fix: pass a shipped name ({', '.join(REGISTRY)}) "
                                   "or the path of a file written by ae_lightning.pretrained.export")
    return path


def read(name: str | Path) -> dict[str, Any]:
    """The weights file's dict (see the module docstring), read with ``weights_only=True``."""
    path = weights_file(name)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not {"model", "state_dict"} <= set(blob):
        raise ValueError(f"{path} is not an ae_lightning weights file (format {FORMAT!r} with 'model' and 'state_dict'); "
                         "fix: write it with python -m ae_lightning.pretrained.export, or load a Lightning checkpoint "
                         "with --ckpt_path instead")
    return blob


def net_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The nets' entries of ``model``'s state dict (contiguous CPU copies, cast to ``dtype`` when given)."""
    return {k: v.detach().cpu().to(dtype or v.dtype).contiguous() for k, v in model.state_dict().items()
            if k.startswith(NETS)}


def load_weights(model: nn.Module, name: str | Path) -> nn.Module:
    """Load the nets of weights file ``name`` into ``model`` (in place, each tensor in the model's dtype); one
    error lists every missing, unexpected or differently shaped entry and the nets the file was trained with."""
    blob = read(name)
    state, own = blob["state_dict"], net_state(model)
    problems = [f"{k}: missing in the file" for k in own if k not in state]
    problems += [f"{k}: not in the model" for k in state if k not in own]
    problems += [f"{k}: {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if problems:
        nets = {k: blob["model"].get("init_args", {}).get(k) for k in ("encoder", "decoder")}
        raise ValueError(
            f"{weights_file(name)} does not fit this model's nets ({len(problems)} entries: {'; '.join(problems[:4])}"
            f"{' …' if len(problems) > 4 else ''}); the file was trained with {nets}; fix: build the model with those "
            f"nets, e.g. ae_lightning.pretrained.load({str(name)!r})")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()}, strict=False)
    return model


def load(name: str | Path = "xray64-denoiser") -> nn.Module:
    """The model of weights file ``name``, built from the spec it holds, its nets loaded, in eval mode (CPU)::

        model = load("xray64-denoiser")
        with torch.no_grad():
            denoised = model.reconstruct_full(noisy)   # (B, 1, H, W) in [0, 1], any H, W
    """
    import lightning as L

    from ae_lightning.config import instantiate

    spec = copy.deepcopy(read(name)["model"])
    spec.setdefault("init_args", {})["weights"] = str(name)  # the model loads them itself, and its hparams say so
    return instantiate(spec, L.LightningModule).eval()


def _plain(value: Any) -> Any:
    """``value`` as the built-in types ``weights_only`` loading accepts (a ``str`` subclass such as
    ``torch.__version__`` becomes a ``str``, a tuple a list, a parsed config's Namespace a dict); anything else is
    refused by name."""
    if value is None:
        return value
    for base in (bool, int, float, str):  # bool first: it is an int too
        if isinstance(value, base):
            return base(value)
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace (a parsed config)
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise TypeError(f"a weights file holds plain values only; got {type(value).__name__}: {value!r}")


def save(model: nn.Module, path: str | Path, spec: dict[str, Any], meta: dict[str, Any] | None = None,
         dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model``'s nets as a weights file at ``path`` with the model ``spec`` (class_path / init_args; the
    optimiser, schedule and ``weights`` entries are dropped) and ``meta`` (plain values only)."""
    init = {k: v for k, v in spec.get("init_args", {}).items() if k not in ("optimizer", "lr_scheduler", "weights")}
    blob = {"format": FORMAT, "model": _plain({"class_path": spec["class_path"], "init_args": init}),
            "state_dict": net_state(model, dtype), "meta": _plain(dict(meta or {}))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)
    read(path)  # loads back with weights_only=True: only plain values went in
    return path


__all__ = ["FORMAT", "REGISTRY", "WeightsNotFoundError", "load", "load_weights", "read", "save", "weights_file"]
