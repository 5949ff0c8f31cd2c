"""A small U-Net (DRUNet-style) as an encoder/decoder pair, for residual denoisers at any image size.

Zhang et al. (2021, DRUNet) denoise with a U-Net of residual blocks: strided-conv down-sampling,
transposed-conv up-sampling and *additive* skips, no normalisation. Here the two halves are separate
nets so that :class:`~ae_lightning.models.DenoisingAutoencoder` injects them like any other pair:
:class:`UNetEncoder`'s code is the tuple of its feature maps, finest first, the bottleneck last;
:class:`UNetDecoder` consumes that tuple. With ``residual: true`` in the module the pair predicts the
noise, which the module subtracts::

    enc = UNetEncoder((1, 64, 64), channels=[32, 64, 128], blocks=2)
    dec = UNetDecoder((1, 64, 64), channels=[32, 64, 128], blocks=2)
    code = enc(torch.rand(8, 1, 64, 64))   # ((8, 32, 64, 64), (8, 64, 32, 32), (8, 128, 16, 16))
    noise = dec(code)                      # (8, 1, 64, 64)

Each level halves the resolution, so the receptive field grows geometrically with depth (three levels of
two blocks see about 100×100 pixels, enough for σ = 50/255 or p = 0.5 noise on 64×64 X-rays) at a
fraction of a full-resolution DnCNN's cost. Fully convolutional: any H, W divisible by
``2 ** (levels - 1)`` runs through it (``size_multiple``); the module pads other sizes and crops back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ae_lightning.nets.common import check_image_shape, make_activation


def _levels(image_shape: tuple[int, int, int], channels: Sequence[int], blocks: int, who: str) -> int:
    """Check the U-Net's arguments against the image shape; returns its size multiple ``2 ** (levels - 1)``."""
    if not channels or any(int(c) < 1 for c in channels):
        raise ValueError(f"{who}: channels must list one positive width per level, got {list(channels)}")
    if blocks < 1:
        raise ValueError(f"{who}: blocks must be >= 1 (residual blocks per level), got {blocks}")
    c, h, w = image_shape
    multiple = 2 ** (len(channels) - 1)
    if h % multiple or w % multiple:
        raise ValueError(
            f"{who}: image shape {c}x{h}x{w} does not fit a U-Net with {len(channels)} levels; rule: H and W must be "
            f"divisible by 2**(levels - 1) = {multiple} (change the image size or the number of channels entries)"
        )
    return multiple


class ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``, 3×3 convolutions at a constant width (DRUNet's block)."""

    def __init__(self, channels: int, activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            make_activation(activation),
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # (B, C, H, W)


def _stage(channels: int, blocks: int, activation: str, bias: bool) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels, activation, bias) for _ in range(blocks)))


class UNetEncoder(nn.Module):
    """The contracting half: a 3×3 head, then per level ``blocks`` residual blocks, and between levels a
    stride-2 2×2 convolution to the next width.

    Args:
        image_shape: ``(C, H, W)`` of the training images; H and W divisible by ``2 ** (len(channels) - 1)``.
        channels: width of each level, finest first; ``len(channels)`` is the number of levels.
        blocks: residual blocks per level.
        activation: inside the residual blocks.
        bias: convolution biases (``False`` for a bias-free net, Mohan et al. 2020).

    The code is a tuple of ``len(channels)`` feature maps ``(B, channels[i], H / 2**i, W / 2**i)``: the skips,
    then the bottleneck.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 64, 64),
        channels: Sequence[int] = (32, 64, 128),
        blocks: int = 2,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        #: any H, W divisible by this runs through the net (full-resolution inference)
        self.size_multiple = _levels(self.image_shape, channels, blocks, type(self).__name__)
        widths = [int(c) for c in channels]
        self.head = nn.Conv2d(self.image_shape[0], widths[0], 3, padding=1, bias=bias)
        self.stages = nn.ModuleList(_stage(c, blocks, activation, bias) for c in widths)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 2, stride=2, bias=bias) for a, b in zip(widths, widths[1:], strict=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = []
        h = self.head(x)  # (B, c0, H, W)
        for i, stage in enumerate(self.stages):
            if i:
                h = self.down[i - 1](h)  # (B, c_i, H / 2**i, W / 2**i)
            h = stage(h)
            features.append(h)
        return tuple(features)  # finest first, the bottleneck last


class UNetDecoder(nn.Module):
    """The expanding half: from the bottleneck, per level a stride-2 2×2 transposed convolution, the
    encoder's feature map of that level added (DRUNet's additive skip) and ``blocks`` residual blocks; a 3×3
    tail to the image channels and ``output_activation`` (``None`` for a residual denoiser's noise estimate).

    Arguments as :class:`UNetEncoder`'s (the same ``channels``, finest first); takes the encoder's tuple.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 64, 64),
        channels: Sequence[int] = (32, 64, 128),
        blocks: int = 2,
        activation: str = "relu",
        bias: bool = True,
        output_activation: str | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.size_multiple = _levels(self.image_shape, channels, blocks, type(self).__name__)
        widths = [int(c) for c in channels]
        self.levels = len(widths)
        # index i: from level i + 1 up to level i (applied from the bottleneck down)
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2, bias=bias)
                                for a, b in zip(widths, widths[1:], strict=False))
        self.stages = nn.ModuleList(_stage(c, blocks, activation, bias) for c in widths[:-1])
        self.tail = nn.Sequential(nn.Conv2d(widths[0], self.image_shape[0], 3, padding=1, bias=bias),
                                  make_activation(output_activation))

    def forward(self, code: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(code) != self.levels:
            raise ValueError(f"{type(self).__name__} takes the {self.levels} feature maps of a {self.levels}-level "
                             f"UNetEncoder, got {len(code)}; fix: give the encoder and decoder the same channels")
        h = code[-1]  # (B, c_last, H / 2**(L-1), W / 2**(L-1))
        for i in reversed(range(self.levels - 1)):
            h = self.stages[i](self.up[i](h) + code[i])  # (B, c_i, H / 2**i, W / 2**i)
        return self.tail(h)  # (B, C, H, W)
