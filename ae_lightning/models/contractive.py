"""Contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio, ICML 2011).

A plain (not denoising) autoencoder whose loss adds the squared Frobenius norm of the encoder's
Jacobian at each training input, ``L = L(x, x') + λ ‖∂h/∂x‖²_F`` (per example, averaged over the
batch), so that the code is locally insensitive to directions the data do not vary along. Example::

    cae = ContractiveAutoencoder(MLPEncoder((1, 28, 28), [64]), MLPDecoder((1, 28, 28), [64]),
                                 weight=0.01, loss="bce")

The Jacobian norm is computed

* in closed form for one sigmoid layer ``h = σ(Wx + b)`` (an :class:`~ae_lightning.nets.MLPEncoder`
  with one width and ``code_activation: sigmoid``): ``‖J‖²_F = Σ_j (h_j(1 − h_j))² Σ_i W_ji²``;
* for any other encoder with ``torch.func`` (``vjp`` of the batch, ``vmap``-ed over the code units):
  one forward and about ``code_dim`` (batched) backward passes, so keep the code small for big encoders.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.func import vjp, vmap

from ae_lightning.models.base import Autoencoder, AutoencoderOutput

JacobianMethod = Literal["auto", "closed_form", "torch_func"]


def sigmoid_layer_jacobian_norm(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``‖∂h/∂x‖²_F`` (B,) of ``h = σ(W x + b)`` from the activations ``h`` (B, D) and ``W`` (D, N).

    ``∂h_j/∂x_i = h_j(1 − h_j) W_ji``, so the squared norm factorises::

        sigmoid_layer_jacobian_norm(enc(x), enc.linears[0].weight)  # (B,)
    """
    return ((h * (1 - h)).pow(2) * weight.pow(2).sum(1)).sum(1)  # (B, D) * (D,) -> (B,)


def jacobian_norm(f, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """``‖∂f/∂x‖²_F`` (B,) per example of a batched function ``f(x, cond)`` (B, ...) -> (B, D), by ``torch.func``.

    One forward pass on the whole batch, then one vector-Jacobian product per code unit j, all
    ``vmap``-ed: the cotangent "unit j of every example" gives every example's row ∂h_j/∂x at once,
    because ``f`` does not mix examples (so no batch norm in training mode). Conditions and Python
    checks in ``f`` are fine; gradients flow to ``f``'s parameters through ordinary autograd::

        jacobian_norm(lambda x, c: encoder(x), x)  # (B,)
    """
    h, pullback = vjp(lambda v: f(v, cond).flatten(1), x)  # (B, D)
    eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)  # (D, D)
    (rows,) = vmap(pullback)(eye[:, None, :].expand(-1, h.shape[0], -1))  # (D, B, *x.shape[1:])
    return rows.flatten(2).pow(2).sum((0, 2))  # (B,)


def is_sigmoid_layer(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is one ``nn.Linear`` then a sigmoid on the flattened input (MLPEncoder, one width)."""
    linears, acts = getattr(encoder, "linears", None), getattr(encoder, "activations", None)
    return (
        linears is not None and acts is not None and len(linears) == 1 and len(acts) == 1
        and isinstance(linears[0], nn.Linear) and isinstance(acts[0], nn.Sigmoid)
    )


class ContractiveAutoencoder(Autoencoder):
    """An :class:`Autoencoder` with the contractive penalty ``weight · ‖∂h/∂x‖²_F`` on its code.

    Args:
        encoder, decoder: as for :class:`Autoencoder`; other keyword arguments (``loss``, ``optimizer``, ...) too.
        weight: λ, relative to the per-pixel mean reconstruction loss; 0 trains the same net without penalty.
        jacobian: ``closed_form`` (one sigmoid layer only), ``torch_func`` (any encoder without batch
            norm) or ``auto`` (closed form when it applies).

    Logs ``{stage}/recon``, ``{stage}/contractive`` (the weighted penalty) and ``{stage}/loss``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        weight: float = 0.01,
        jacobian: JacobianMethod = "auto",
        **kwargs,
    ) -> None:
        super().__init__(encoder, decoder, **kwargs)
        if weight < 0:
            raise ValueError(f"contractive weight λ must be >= 0, got {weight}")
        closed = is_sigmoid_layer(encoder)
        if jacobian == "closed_form" and not closed:
            raise ValueError("jacobian='closed_form' needs one sigmoid layer (MLPEncoder with one width and "
                             "code_activation: sigmoid); fix: jacobian: auto")
        self.closed_form = closed if jacobian == "auto" else jacobian == "closed_form"
        if not self.closed_form and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules()):
            # the per-example Jacobian assumes examples do not mix; batch statistics mix them
            raise ValueError("the torch.func Jacobian cannot go through batch norm; fix: an encoder without it "
                             "(e.g. ConvEncoder norm: group or none)")

    def code_jacobian_norm(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                           code: torch.Tensor | None = None) -> torch.Tensor:
        """``‖∂h/∂x‖²_F`` (B,) of the code ``h = encode(x, cond)`` per example; ``code`` reuses a computed one."""
        if self.closed_form:
            h = self.encode(x, cond) if code is None else code  # (B, D)
            return sigmoid_layer_jacobian_norm(h.flatten(1), self.encoder.linears[0].weight)
        return jacobian_norm(self.encode, x, cond)

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        recon = super().compute_losses(out, target)["loss"]
        if self.hparams.weight == 0:  # the λ = 0 baseline skips the Jacobian's cost
            penalty = torch.zeros_like(recon)
        else:
            # the Jacobian at the model's input (``out.input``), where the code was computed
            penalty = self.hparams.weight * self.code_jacobian_norm(out.input, out.condition, out.code).mean()
        return {"recon": recon, "contractive": penalty, "loss": recon + penalty}
