"""Sparse autoencoders: reconstruction loss plus a sparsity penalty Ω(h) on the hidden code.

``L = L(x, x') + Ω(h)`` with Ω one of

* :class:`L1Sparsity` — ``λ Σ_j |h_j|`` (any activation);
* :class:`KLSparsity` — ``β Σ_j KL(ρ ‖ ρ̂_j)`` with ``ρ̂_j`` the mean activation of unit j over the
  batch (Ng, CS294A lecture notes; needs sigmoid hidden units), e.g. ρ = 0.05 (a per-batch, not a
  running, mean: the class says why);

and optionally the k-sparse constraint (Makhzani & Frey 2013): only the ``k`` largest activations
of each code are kept, the rest set to zero. Example::

    sae = SparseAutoencoder(MLPEncoder((1, 28, 28), [64]), MLPDecoder((1, 28, 28), [64]),
                            sparsity=KLSparsity(target=0.05, beta=0.1), loss="bce")

The penalties are plain objects (like the noise models), so YAML names them with ``class_path``.
"""

from __future__ import annotations

import torch
from torch import nn

from ae_lightning.losses import kl_sparsity, l1_sparsity
from ae_lightning.models.base import Autoencoder, AutoencoderOutput


class SparsityPenalty:
    """Ω(h) for hidden activations ``h`` (B, D); ``unit_interval`` says whether ``h`` must lie in [0, 1]."""

    label = "sparsity"
    unit_interval = False

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check(self, h: torch.Tensor) -> None:
        """One clear error when the activations cannot carry this penalty (called once per fit)."""
        if self.unit_interval:
            lo, hi = float(h.detach().min()), float(h.detach().max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{type(self).__name__} needs hidden activations in [0, 1] but got values in [{lo:.3g}, {hi:.3g}]; "
                    "fix: use sigmoid hidden units (encoder code_activation: sigmoid)"
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label})"


class L1Sparsity(SparsityPenalty):
    """``weight · Σ_j |h_j|`` per example, averaged over the batch."""

    def __init__(self, weight: float = 1e-3) -> None:
        if weight < 0:
            raise ValueError(f"L1 sparsity weight must be >= 0, got {weight}")
        self.weight = weight
        self.label = f"L1 λ={weight:g}"

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return self.weight * l1_sparsity(h)


class KLSparsity(SparsityPenalty):
    """``beta · Σ_j KL(target ‖ ρ̂_j)`` (Ng's sparse autoencoder); sigmoid hidden units.

    ``ρ̂_j`` is unit j's mean activation over the current batch (per process under DDP: no all-gather), not
    a running mean or the whole training set's mean (Ng's notes, written for full-batch training). Why: the
    penalty stays a plain function of the batch, so its gradient reaches every example that sets ``ρ̂`` (a
    running mean's detached history gets none, which rescales β by the momentum), and there is no state to
    checkpoint, resume or synchronise across ranks. The cost: KL is convex in ``ρ̂``, so (Jensen) the
    expected per-batch penalty exceeds the full-data one, by ≈ ``Σ_j KL''(ρ̂_j) Var(h_j) / (2B)`` with
    ``KL''(ρ̂) = ρ/ρ̂² + (1-ρ)/(1-ρ̂)²``: small batches (or small per-rank batches under DDP) are
    over-penalised, by an excess that shrinks as 1/B (tested in tests/test_sparse.py). Keep the
    per-process batch in the tens or more.
    """

    unit_interval = True

    def __init__(self, target: float = 0.05, beta: float = 0.1) -> None:
        if not 0.0 < target < 1.0 or beta < 0:
            raise ValueError(f"KL sparsity needs 0 < target < 1 and beta >= 0, got target={target}, beta={beta}")
        self.target = target
        self.beta = beta
        self.label = f"KL ρ={target:g} β={beta:g}"

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return self.beta * kl_sparsity(h, self.target)


def top_k(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest entries of each row of ``h`` (B, D) and zero the rest (k-sparse code).

    Gradients flow only through the kept entries.
    """
    if not 1 <= k <= h.shape[1]:
        raise ValueError(f"k-sparse k={k} must be between 1 and the code size {h.shape[1]}")
    idx = h.topk(k, dim=1).indices  # (B, k)
    return torch.zeros_like(h).scatter(1, idx, h.gather(1, idx))  # (B, D)


def activation_stats(h: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    """``mean_activation`` (the mean of ρ̂_j over units) and ``active_fraction`` (share of activations above
    ``threshold``) of hidden activations ``h`` (B, D)."""
    h = h.detach().float()
    return {"mean_activation": h.mean(), "active_fraction": (h > threshold).float().mean()}


class SparseAutoencoder(Autoencoder):
    """An :class:`Autoencoder` whose loss adds a sparsity penalty on the code, optionally k-sparse.

    Args:
        encoder, decoder: as for :class:`Autoencoder`; other keyword arguments (``loss``, ``optimizer``, ...) too.
        sparsity: the penalty Ω(h) (:class:`L1Sparsity`, :class:`KLSparsity`); ``None`` trains the
            same net without a penalty.
        k: keep only the ``k`` largest code activations per example (Makhzani & Frey 2013).
        active_threshold: an activation above this counts as "active" in ``{stage}/active_fraction``
            (0.5 suits sigmoid units; use 0 for ReLU or k-sparse linear codes).

    Logs ``{stage}/recon``, ``{stage}/sparsity``, ``{stage}/mean_activation`` and ``{stage}/active_fraction``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        sparsity: SparsityPenalty | None = None,
        k: int | None = None,
        active_threshold: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(encoder, decoder, **kwargs)
        if k is not None and k < 1:
            raise ValueError(f"k-sparse k must be a positive number of units, got {k}")
        self.sparsity = sparsity
        self._checked = False

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        code = super().encode(x, cond)  # (B, D)
        return code if self.hparams.k is None else top_k(code.flatten(1), self.hparams.k).view_as(code)

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = super().compute_losses(out, target)
        if self.sparsity is None:
            return losses
        h = out.code.flatten(1)  # (B, D)
        if not self._checked:
            self.sparsity.check(h)
            self._checked = True
        recon, penalty = losses["loss"], self.sparsity(h)
        return {"recon": recon, "sparsity": penalty, "loss": recon + penalty}

    def log_step(self, out: AutoencoderOutput, x: torch.Tensor, stage: str) -> None:
        super().log_step(out, x, stage)
        stats = activation_stats(out.code.flatten(1), self.hparams.active_threshold)
        self.log_terms(stage, stats, out.code.shape[0])
