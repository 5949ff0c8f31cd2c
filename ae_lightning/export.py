"""A model file to ship: a trained run's denoiser (or encoder) as TorchScript or ONNX, usable without this package.

    ae-lightning export --ckpt_path runs/dae_xray64/version_0/checkpoints/last.ckpt --format torchscript
    ae-lightning export --ckpt_path last.ckpt --format onnx --part encoder --output encoder.onnx

(``python -m ae_lightning.export`` is the same.) The model and its nets are rebuilt from the ``config.yaml``
that ``ae-lightning fit`` saved beside the checkpoints (or ``--config``), the weights loaded with
``weights_only=True``. The exported graph maps images ``(B, C, H, W)`` in [0, 1] to

- ``--part model`` (default): the reconstruction in [0, 1] (a denoiser's output; the posterior mean's
  decoding for a VAE), exactly :meth:`Autoencoder.predict_step`'s values at the nets' image size;
- ``--part encoder``: the codes ``(B, D)`` (flattened).

Batch size is free in both formats; for a fully convolutional net H and W are free too (any multiple of
its ``size_multiple``), so a hospital's pipeline can run it on a whole radiograph. Nets that need a fixed
size take tiles of that size: the tiling and blending of :func:`ae_lightning.inference.sliding_window`
stay outside the exported graph.

TorchScript comes from ``torch.jit.trace`` (no extra dependency). ONNX uses ``torch.onnx.export``'s
TorchScript-based exporter (opset 17), which needs the ``onnx`` package (``pip install 'ae_lightning[export]'``;
the newer ``dynamo=True`` exporter would also need ``onnxscript``); it is checked with ``onnxruntime`` when
that is installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ae_lightning.config import load_run

Part = Literal["model", "encoder"]


class ExportedModel(nn.Module):
    """Plain-tensor wrapper around a trained module: images → reconstructions in [0, 1], or → codes."""

    def __init__(self, model: nn.Module, part: Part = "model") -> None:
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.part == "encoder":
            return self.model.encode(x).flatten(1)  # (B, D)
        return self.model._reconstruct(x).clamp(0, 1)  # (B, C, H, W)


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    shape = getattr(model.encoder, "image_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__}: its encoder has no image_shape to build an example input from")
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))


def dynamic_sizes(model: nn.Module, part: Part) -> bool:
    """Whether H and W may vary in the exported graph: fully convolutional nets, whole model."""
    return part == "model" and getattr(model, "size_multiple", lambda: None)() is not None


@torch.no_grad()
def export(model: nn.Module, path: str | Path, fmt: Literal["torchscript", "onnx"] = "torchscript",
           part: Part = "model") -> Path:
    """Write ``model`` (an :class:`~ae_lightning.models.Autoencoder`, in eval mode) to ``path`` as TorchScript or ONNX."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt not in ("torchscript", "onnx"):
        raise ValueError(f"unknown format {fmt!r}; choose torchscript or onnx")
    wrapper = ExportedModel(model.eval().cpu(), part).eval()
    x = example_input(model)
    # tracing reads every attribute of the module, ``trainer`` included; Lightning's own to_torchscript sets this flag
    model._jit_is_scripting = True
    try:
        if fmt == "torchscript":
            torch.jit.trace(wrapper, x, check_trace=False).save(str(path))
        else:
            axes = {0: "batch", 2: "height", 3: "width"} if dynamic_sizes(model, part) else {0: "batch"}
            torch.onnx.export(wrapper, (x,), str(path), input_names=["image"], output_names=["output"],
                              opset_version=17, dynamo=False,
                              dynamic_axes={"image": axes, "output": axes if part == "model" else {0: "batch"}})
    finally:
        model._jit_is_scripting = False
    return path


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="ae-lightning export", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_path", required=True, help="checkpoint of a run (its config.yaml is found beside it)")
    ap.add_argument("--config", help="the run's config.yaml (default: beside the checkpoint or one folder up)")
    ap.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    ap.add_argument("--part", choices=("model", "encoder"), default="model",
                    help="model: images → reconstructions; encoder: images → codes")
    ap.add_argument("--output", help="output file (default: beside the checkpoint, <name>.<part>.pt or .onnx)")
    args = ap.parse_args(argv)
    model, _ = load_run(args.ckpt_path, args.config)
    ckpt = Path(args.ckpt_path)
    out = args.output or ckpt.with_name(f"{ckpt.stem}.{args.part}.{'pt' if args.format == 'torchscript' else 'onnx'}")
    path = export(model, out, args.format, args.part)
    print(f"wrote {path} ({args.format}, {args.part}: images {list(example_input(model, 1).shape[1:])} in [0, 1])")
    return path


if __name__ == "__main__":
    main()
