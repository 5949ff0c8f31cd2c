"""Loss terms shared by the autoencoder modules."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

ReconstructionLoss = Literal["mse", "bce", "l1"]


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: ReconstructionLoss = "mse") -> torch.Tensor:
    """Mean per-pixel reconstruction loss between ``x_hat`` and the target ``x`` (both (B, C, H, W)).

    ``bce`` expects ``x_hat`` in (0, 1) (a sigmoid output) and targets in [0, 1].
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"reconstruction shape {tuple(x_hat.shape)} != target shape {tuple(x.shape)}")
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "bce":
        # autocast-safe: BCE on probabilities is not allowed under autocast, so compute it in fp32
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.binary_cross_entropy(x_hat.float().clamp(1e-6, 1 - 1e-6), x.float())
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose 'mse', 'bce' or 'l1'")
