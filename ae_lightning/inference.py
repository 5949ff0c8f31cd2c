"""Full-resolution inference: a net trained on 64×64 images applied to a 1024×1024 radiograph.

- A fully convolutional net (conv stages, no linear bottleneck) runs on the whole image at once,
  reflect-padded up to the multiple of ``2**depth`` its pooling needs and cropped back
  (:func:`whole_image`); an image too large for that runs in pieces with overlapping context whose
  cores give the same result (:func:`tiled_whole_image`).
- A net that needs a fixed input size (an MLP, a conv net with a linear code) runs on overlapping
  tiles of that size whose outputs are blended with a window that falls off towards the tile edges
  (:func:`sliding_window`): each output pixel is the window-weighted mean of every tile that covers
  it, so there is no seam where one tile ends.

Why our own ~40 lines rather than MONAI's ``sliding_window_inference``: MONAI 1.6 is a light wheel
(1.7 MB, needs only torch and numpy) and does the same (Gaussian importance map, overlap), but for
this one function it adds a medical-imaging framework to the dependencies and its import time to
every ``ae-lightning`` call; its default padding is constant zeros, which biases the border tiles of
an X-ray (a dark frame), and its 2-D path loops over windows in Python. Here the tiles are cut and
re-assembled with ``torch.nn.functional.unfold`` / ``fold`` (one vectorised call each way) after a
reflect padding, and the window is the same Gaussian MONAI uses (σ = 0.125 · tile side) or a Hann
window. ``tests/test_inference.py`` checks the result against MONAI when it happens to be installed.

Example::

    out = sliding_window(lambda t: model(t).reconstruction, xray, window=(64, 64), overlap=0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Window = Literal["gaussian", "hann", "constant"]


def blend_window(size: tuple[int, int], kind: Window = "gaussian", device=None) -> torch.Tensor:
    """A strictly positive (h, w) blending weight, largest in the tile's centre.

    ``gaussian``: σ = 0.125 · side (MONAI's default importance map); ``hann``: a Hann window without
    its zero end points (every pixel keeps some weight); ``constant``: plain averaging.
    """
    def one(n: int) -> torch.Tensor:
        if kind == "constant":
            return torch.ones(n, device=device)
        if kind == "hann":
            return torch.hann_window(n + 2, periodic=False, device=device)[1:-1]
        if kind == "gaussian":
            t = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
            return torch.exp(-0.5 * (t / (0.125 * n)) ** 2)
        raise ValueError(f"unknown window {kind!r}; choose 'gaussian', 'hann' or 'constant'")

    return torch.outer(one(size[0]), one(size[1])).clamp_min(1e-4)  # (h, w)


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect padding (left, right, top, bottom), replicate where the image is too small to reflect."""
    if not any(pads):
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
    return F.pad(x, pads, mode=mode)


def whole_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """``fn(x)`` for a fully convolutional ``fn`` whose pooling needs H and W divisible by ``multiple``:
    ``x`` (B, C, H, W) is reflect-padded up to the next multiple and the output cropped back to (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    out = fn(_pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))  # (B, C', H + ph, W + pw)
    return out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]


def tiled_whole_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int = 1,
                      tile: int = 1024, margin: int = 128) -> torch.Tensor:
    """:func:`whole_image` in pieces, for images too large to run at once (memory grows with the pixels): the
    padded image is cut into ``tile``-sized cores, each run with ``margin`` pixels of context on every side
    (clamped to the image, so a piece at the border sees the same border as the whole image) and its core kept.
    Cores and margins are rounded up to ``multiple``, so every piece keeps the down-sampling grid of the whole
    image: with a margin at least the net's receptive-field radius the result is the whole image's (tested).
    ``fn`` maps (B, C, h, w) to (B, C', h, w)."""
    tile, margin = -(-tile // multiple) * multiple, -(-margin // multiple) * multiple
    h, w = x.shape[-2:]
    if max(h, w) <= tile + 2 * margin:
        return whole_image(fn, x, multiple)
    ph, pw = -h % multiple, -w % multiple
    xp = _pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # (B, C, Hp, Wp), as whole_image pads
    hp, wp = xp.shape[-2:]
    rows = []
    for top in range(0, hp, tile):
        row = []
        for left in range(0, wp, tile):
            t0, l0 = max(0, top - margin), max(0, left - margin)
            t1, l1 = min(hp, top + tile + margin), min(wp, left + tile + margin)
            out = fn(xp[..., t0:t1, l0:l1])  # (B, C', t1 - t0, l1 - l0)
            row.append(out[..., top - t0 : min(hp, top + tile) - t0, left - l0 : min(wp, left + tile) - l0])
        rows.append(torch.cat(row, dim=-1))
    out = torch.cat(rows, dim=-2)  # (B, C', Hp, Wp)
    return out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]


@torch.no_grad()
def sliding_window(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    window: tuple[int, int],
    overlap: float = 0.5,
    blend: Window = "gaussian",
    batch_size: int = 64,
) -> torch.Tensor:
    """``fn`` applied to overlapping ``window``-sized tiles of ``x`` (B, C, H, W), blended back to (B, C', H, W).

    ``fn`` maps (N, C, h, w) tiles to (N, C', h, w) and is called on at most ``batch_size`` tiles at a time.
    The image is reflect-padded by half a tile (so border pixels are also seen away from a tile's edge)
    and up to a whole number of strides; ``stride = (1 - overlap) · window``.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    b, _, h, w = x.shape
    th, tw = window
    sh, sw = max(1, round(th * (1 - overlap))), max(1, round(tw * (1 - overlap)))
    # half a tile of context on each side, then enough to end on a whole stride
    top, left = th // 2, tw // 2
    hp, wp = max(h + 2 * top, th), max(w + 2 * left, tw)
    hp, wp = th + math.ceil((hp - th) / sh) * sh, tw + math.ceil((wp - tw) / sw) * sw
    xp = _pad(x, (left, wp - w - left, top, hp - h - top))  # (B, C, Hp, Wp)
    cols = F.unfold(xp, (th, tw), stride=(sh, sw))  # (B, C·th·tw, L)
    n_tiles = cols.shape[-1]
    tiles = cols.transpose(1, 2).reshape(b * n_tiles, x.shape[1], th, tw)  # (B·L, C, th, tw)
    out = torch.cat([fn(t) for t in tiles.split(batch_size)])  # (B·L, C', th, tw)
    c_out = out.shape[1]
    weight = blend_window((th, tw), blend, device=x.device).to(out.dtype)  # (th, tw)
    out = (out * weight).reshape(b, n_tiles, c_out * th * tw).transpose(1, 2)  # (B, C'·th·tw, L)
    summed = F.fold(out, (hp, wp), (th, tw), stride=(sh, sw))  # (B, C', Hp, Wp)
    norm = F.fold(weight.reshape(1, th * tw, 1).expand(1, -1, n_tiles), (hp, wp), (th, tw), stride=(sh, sw))
    return (summed / norm)[..., top : top + h, left : left + w]  # (B, C', H, W)


@torch.no_grad()
def in_eval_batches(model: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                    batch_size: int = 500, precision: str = "32-true") -> torch.Tensor:
    """``fn`` applied to ``inputs`` (N, ...) in chunks of ``batch_size`` moved to the model's device, with the model
    in eval mode (its mode restored after) and no gradients; the outputs concatenated on the CPU (N, ...).
    ``precision``: a Lightning precision string; ``bf16-mixed`` / ``16-mixed`` run ``fn`` under autocast."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return torch.cat([fn(chunk.to(device)).cpu() for chunk in inputs.split(batch_size)])
    finally:
        model.train(was_training)
