"""Using a trained model (``ae-lightning predict``): reconstructions of images of any size, codes, samples.

:class:`TiledPrediction` is mixed into :class:`~ae_lightning.models.Autoencoder`: fully convolutional nets
run on the whole image (in pieces with context margins when it is large), nets of one input size on
overlapping blended tiles (:mod:`ae_lightning.inference`). A variant changes what it predicts by setting
:attr:`~TiledPrediction.default_prediction` or overriding ``_reconstruct`` / ``predict_step``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ae_lightning.batch import images_of
from ae_lightning.inference import sliding_window, tiled_whole_image

PredictionKind = Literal["reconstruction", "codes", "samples", "progression"]


@dataclass
class Prediction:
    """What ``predict_step`` made of one batch, for :class:`~ae_lightning.callbacks.PredictionWriter`.

    ``reconstruction``: ``values`` (B, C, H, W) in [0, 1] at each input's own resolution, one image per
    input; ``codes``: ``values`` (B, D), the encoder's code of each input (flattened); ``progression`` (CAAE):
    ``values`` (B, 3, H', W'), one age-progression grid per input face.
    """

    kind: PredictionKind
    values: torch.Tensor


class TiledPrediction:
    """``predict_step`` and whole-image reconstruction for a model with ``encoder`` / ``decoder`` nets."""

    #: what ``ae-lightning predict`` writes unless told (:class:`~ae_lightning.callbacks.PredictionWriter` ``output``)
    default_prediction: PredictionKind = "reconstruction"
    #: tiles for nets that take one input size only: overlap fraction and blending window (see :mod:`ae_lightning.inference`)
    tile_overlap: float = 0.5
    tile_window: str = "gaussian"
    #: fully convolutional nets on images larger than this side (plus the margins) run in pieces with ``tile_margin``
    #: pixels of context each (see :func:`~ae_lightning.inference.tiled_whole_image`): bounded memory, same result
    whole_image_tile: int = 1024
    tile_margin: int = 128

    def predict_step(self, batch, batch_idx: int) -> Prediction | None:
        """The batch's reconstructions at their own resolution, or its codes, as ``prediction_kind`` says
        (set by the PredictionWriter; else :attr:`default_prediction`). Inputs are used as given: a denoiser
        denoises them, no noise is added. ``samples`` need no input: the writer asks ``generate`` once."""
        kind = getattr(self, "prediction_kind", None) or self.default_prediction
        x = images_of(batch)  # (B, C, H, W), any H, W
        if kind == "reconstruction":
            return Prediction(kind, self.reconstruct_full(x, self.condition(batch)).clamp(0, 1))
        if kind == "codes":
            code = self.encode(self.fit_to_nets(x), self.condition(batch))
            if isinstance(code, tuple | list):  # a multi-scale code (a U-Net's feature maps): its deepest map
                code = code[-1]
            return Prediction(kind, code.flatten(1))  # (B, D)
        return None

    def size_multiple(self) -> int | None:
        """Any H, W divisible by this runs through the nets (fully convolutional); ``None``: only their image_shape."""
        multiples = [getattr(net, "size_multiple", None) for net in (self.encoder, self.decoder)]
        return None if None in multiples else math.lcm(*multiples)

    def reconstruct_full(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstructions (B, C, H, W) of images of any size: the whole image for fully convolutional nets,
        overlapping blended tiles of the nets' image size otherwise (:mod:`ae_lightning.inference`)."""
        shape = getattr(self.encoder, "image_shape", None)
        multiple = self.size_multiple()
        reconstruct = functools.partial(self._reconstruct, cond=cond)
        if shape is None or tuple(x.shape[-2:]) == tuple(shape[1:]):
            return reconstruct(x)
        if multiple is not None:
            return tiled_whole_image(reconstruct, x, multiple, self.whole_image_tile, self.tile_margin)
        if cond is not None:
            raise ValueError(f"{type(self).__name__}: tiled inference of a conditional model is not supported; "
                             f"fix: give it images of its size {list(shape[1:])}")
        return sliding_window(reconstruct, x, tuple(shape[1:]), self.tile_overlap, self.tile_window)

    def _reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self(x, cond).reconstruction

    def fit_to_nets(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` centre-cropped square and resized (antialiased) to the nets' image size, as the training data
        were; unchanged when it already has that size."""
        shape = getattr(self.encoder, "image_shape", None)
        if shape is None or tuple(x.shape[-2:]) == tuple(shape[1:]):
            return x
        h, w = x.shape[-2:]
        side = min(h, w)
        x = x[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        return F.interpolate(x, size=tuple(shape[1:]), mode="bicubic", antialias=True).clamp(0, 1)
