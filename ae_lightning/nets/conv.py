"""Convolutional encoder/decoder for any ``C×H×W`` whose ``H`` and ``W`` divide by ``2**depth``.

Gondara (2016)'s medical-image denoiser is ``channels=[64, 64]`` with max-pooling and nearest
upsampling on 64×64×1 images (configs/dae_xray64.yaml)::

    enc = ConvEncoder(image_shape=(1, 64, 64), channels=[64, 64])          # → (B, 64, 16, 16)
    dec = ConvDecoder(image_shape=(1, 64, 64), channels=[64, 64])          # → (B, 1, 64, 64)

``downsample="none"`` keeps full resolution (a DnCNN-style residual denoiser body);
``code_dim`` adds a linear bottleneck so the code is a vector (for feature comparisons).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ae_lightning.nets.common import check_image_shape, make_activation

Downsample = Literal["maxpool", "stride", "none"]
Upsample = Literal["nearest", "transpose", "none"]


def _check_divisible(image_shape: tuple[int, int, int], depth: int, who: str) -> tuple[int, int]:
    c, h, w = image_shape
    factor = 2**depth
    if h % factor or w % factor:
        raise ValueError(
            f"{who}: image shape {c}x{h}x{w} does not fit a net with {depth} down-sampling stages; "
            f"rule: H and W must be divisible by 2**depth = {factor} "
            f"(change the image size or the number of channels entries)"
        )
    return h // factor, w // factor


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; choose 'batch', 'group' or None")


class ConvEncoder(nn.Module):
    """Stack of ``3×3 conv → norm → activation`` stages, each followed by a 2× down-sampling.

    Args:
        image_shape: ``(C, H, W)`` of the input images.
        channels: output channels of each stage; ``len(channels)`` is the depth.
        downsample: ``maxpool`` (Gondara), ``stride`` (stride-2 conv) or ``none``.
        code_dim: if set, flatten and project to a ``(B, code_dim)`` vector code.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        downsample: Downsample = "maxpool",
        norm: Literal["batch", "group", "none"] | None = None,
        activation: str = "relu",
        code_dim: int | None = None,
        code_activation: str | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        if not channels:
            raise ValueError("channels must list at least one conv stage")
        depth = 0 if downsample == "none" else len(channels)
        h, w = _check_divisible(self.image_shape, depth, type(self).__name__)
        layers: list[nn.Module] = []
        c_in = self.image_shape[0]
        for c_out in channels:
            stride = 2 if downsample == "stride" else 1
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2),
                _norm(norm, c_out),
                make_activation(activation),
            ]
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c_in, h, w)
        self.code_dim = code_dim
        #: any H, W divisible by this runs through the net (full-resolution inference); None: only image_shape
        self.size_multiple = None if code_dim else 2**depth
        self.project = (
            nn.Sequential(nn.Flatten(), nn.Linear(c_in * h * w, code_dim), make_activation(code_activation))
            if code_dim
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))  # (B, C', H', W') or (B, code_dim)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``2×`` up-sampling stages back to ``(B, C, H, W)``.

    ``channels`` is given in the same (encoder) order and is mirrored; a final ``3×3`` conv maps
    to the image channels followed by ``output_activation`` (``sigmoid`` for images in [0, 1],
    ``None`` for a residual denoiser that predicts the noise).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        upsample: Upsample = "nearest",
        norm: Literal["batch", "group", "none"] | None = None,
        activation: str = "relu",
        code_dim: int | None = None,
        output_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        if not channels:
            raise ValueError("channels must list at least one conv stage")
        depth = 0 if upsample == "none" else len(channels)
        h, w = _check_divisible(self.image_shape, depth, type(self).__name__)
        mirrored = list(reversed(channels))
        self.code_dim = code_dim
        self.size_multiple = None if code_dim else 2**depth  # see ConvEncoder.size_multiple
        self.unproject = (
            nn.Sequential(nn.Linear(code_dim, mirrored[0] * h * w), nn.ReLU(), nn.Unflatten(1, (mirrored[0], h, w)))
            if code_dim
            else nn.Identity()
        )
        layers: list[nn.Module] = []
        c_in = mirrored[0]
        for c_out in mirrored:
            if upsample == "transpose":
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
            else:
                layers += [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)]
            layers += [_norm(norm, c_out), make_activation(activation)]
            if upsample == "nearest":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            c_in = c_out
        layers += [
            nn.Conv2d(c_in, self.image_shape[0], kernel_size, padding=kernel_size // 2),
            make_activation(output_activation),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.body(self.unproject(code))  # (B, C, H, W)
