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
        # autocast-safe: BCE on probabilities is not allowed under autocast, so compute it in fp32; written
        # out (F.binary_cross_entropy's formula) because F.binary_cross_entropy raises on a NaN input, while a
        # diverged run must reach the loss as NaN so that the divergence guard names the term
        with torch.autocast(device_type=x.device.type, enabled=False):
            p, t = x_hat.float().clamp(1e-6, 1 - 1e-6), x.float()
            return -(t * p.log() + (1 - t) * (-p).log1p()).mean()
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose 'mse', 'bce' or 'l1'")


def l1_sparsity(h: torch.Tensor) -> torch.Tensor:
    """L1 penalty on hidden activations ``h`` (B, D): ``Σ_j |h_j|`` per example, averaged over the batch."""
    return h.abs().sum(dim=1).mean()


def kl_sparsity(h: torch.Tensor, target: float = 0.05, eps: float = 1e-6) -> torch.Tensor:
    """Ng's (CS294A) sparsity penalty ``Σ_j KL(ρ ‖ ρ̂_j)`` for sigmoid hidden activations ``h`` (B, D).

    ``ρ̂_j`` is unit j's mean activation over the batch; ``KL(ρ‖ρ̂) = ρ log(ρ/ρ̂) + (1-ρ) log((1-ρ)/(1-ρ̂))``
    is zero when ``ρ̂_j = ρ`` and grows without bound as ``ρ̂_j`` approaches 0 or 1.

    Stateless by design: ``ρ̂`` is this batch's mean (per process under DDP), not a running mean; see
    :class:`~ae_lightning.models.KLSparsity` for why, and for the small-batch bias that this costs.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"sparsity target rho must be in (0, 1), got {target}")
    rho_hat = h.float().mean(dim=0).clamp(eps, 1 - eps)  # (D,)
    rho = torch.as_tensor(target, dtype=rho_hat.dtype, device=rho_hat.device)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))  # (D,)
    return kl.sum()


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss: binary cross-entropy of discriminator ``logits`` (B, 1) against "real" (1) or "fake" (0).

    The discriminator minimises ``adversarial_loss(D(real), True) + adversarial_loss(D(fake), False)``;
    a generator (the AAE's encoder, CAAE's generator) minimises ``adversarial_loss(D(fake), True)``.
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Total-variation smoothness of images ``x`` (B, C, H, W), as in the CAAE release (Zhang et al. 2017).

    ``(½ Σ (Δ_y x)² / H + ½ Σ (Δ_x x)² / W) / B`` — TensorFlow's ``l2_loss`` of the vertical and
    horizontal neighbour differences, divided by the image side and the batch size.
    """
    b, _, h, w = x.shape
    dy = x[:, :, 1:, :] - x[:, :, :-1, :]  # (B, C, H-1, W)
    dx = x[:, :, :, 1:] - x[:, :, :, :-1]  # (B, C, H, W-1)
    return (0.5 * dy.float().pow(2).sum() / h + 0.5 * dx.float().pow(2).sum() / w) / b


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """KL term with free bits (Kingma et al. 2016, IAF): ``Σ_d max(λ, mean_batch KL_d)`` for ``kl_per_dim`` (B, D).

    Units whose batch-averaged KL is below ``λ`` nats get no gradient pushing them towards the prior,
    which keeps the optimiser from collapsing them early in training.
    """
    return kl_per_dim.mean(dim=0).clamp(min=free_bits).sum()
