"""Fully connected encoders/decoders: the classic one-hidden-layer autoencoder and deep stacks.

Classic autoencoder (one hidden layer): ``y = σ(W x + b)``, ``x' = σ'(W' y + b')``, optionally with
tied weights ``W' = Wᵀ``::

    enc = MLPEncoder(image_shape=(1, 28, 28), widths=[64])
    dec = MLPDecoder(image_shape=(1, 28, 28), widths=[64], tied=True)

Deep symmetric stack (Hinton & Salakhutdinov 2006, 784-1000-500-250-30)::

    enc = MLPEncoder((1, 28, 28), widths=[1000, 500, 250, 30], activation="relu",
                     code_activation=None)
    dec = MLPDecoder((1, 28, 28), widths=[1000, 500, 250, 30], activation="relu")

``widths`` lists the encoder's layer widths from the input side; the last one is the code size.
The decoder takes the same list and mirrors it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ae_lightning.nets.common import check_image_shape, make_activation


def _check_widths(widths: Sequence[int]) -> list[int]:
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty list of positive layer widths, got {list(widths)}")
    return [int(w) for w in widths]


class MLPEncoder(nn.Module):
    """Flatten ``(B, C, H, W)`` and map it through ``widths`` to a ``(B, widths[-1])`` code."""

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        widths: Sequence[int] = (64,),
        activation: str = "sigmoid",
        code_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.widths = _check_widths(widths)
        self.code_dim = self.widths[-1]
        sizes = [math.prod(self.image_shape), *self.widths]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        acts = [activation] * (len(self.widths) - 1) + [code_activation]
        self.activations = nn.ModuleList(make_activation(a) for a in acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, C*H*W)
        for linear, act in zip(self.linears, self.activations, strict=True):
            h = act(linear(h))
        return h  # (B, code_dim)


class MLPDecoder(nn.Module):
    """Mirror of :class:`MLPEncoder`: ``(B, widths[-1])`` → ``(B, C, H, W)``.

    With ``tied=True`` the decoder owns only biases and uses the transposed encoder weights; the
    autoencoder module calls :meth:`tie_to` with its encoder.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        widths: Sequence[int] = (64,),
        activation: str = "sigmoid",
        output_activation: str | None = "sigmoid",
        tied: bool = False,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.widths = _check_widths(widths)
        self.code_dim = self.widths[-1]
        self.tied = tied
        sizes = [*reversed(self.widths), math.prod(self.image_shape)]
        pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
        if tied:
            self.linears = nn.ModuleList()
            self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for _, b in pairs)
            self._tied_encoder: list[MLPEncoder] = []  # a list keeps the encoder out of this module's children
        else:
            self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        acts = [activation] * (len(pairs) - 1) + [output_activation]
        self.activations = nn.ModuleList(make_activation(a) for a in acts)

    def tie_to(self, encoder: nn.Module) -> None:
        """Share ``encoder``'s weights (transposed); a no-op for an untied decoder."""
        if not self.tied:
            return
        if not isinstance(encoder, MLPEncoder) or encoder.widths != self.widths:
            raise ValueError(
                "tied=True needs an MLPEncoder with the same widths "
                f"(decoder widths {self.widths}, encoder {getattr(encoder, 'widths', type(encoder).__name__)})"
            )
        if encoder.image_shape != self.image_shape:
            raise ValueError(f"tied encoder image_shape {encoder.image_shape} != decoder {self.image_shape}")
        self._tied_encoder[:] = [encoder]

    def _weights(self) -> list[torch.Tensor]:
        if not self.tied:
            return [lin.weight for lin in self.linears]
        if not self._tied_encoder:
            raise RuntimeError("tied MLPDecoder used before tie_to(encoder) was called")
        return [lin.weight.t() for lin in reversed(self._tied_encoder[0].linears)]

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = code  # (B, code_dim)
        biases = [lin.bias for lin in self.linears] if not self.tied else list(self.biases)
        for weight, bias, act in zip(self._weights(), biases, self.activations, strict=True):
            h = act(F.linear(h, weight, bias))
        return h.view(-1, *self.image_shape)  # (B, C, H, W)



class MLP(nn.Module):
    """Vectors ``(B, in_features)`` (any ``(B, ...)``, flattened) → ``(B, widths[-1])`` through fully connected layers.

    For modalities that are not images (3-D poses as ``(B, J, 3)`` joint positions) and for maps between code
    spaces. It takes no ``image_shape`` on purpose: the configs' nets get the data's image shape
    (:func:`ae_lightning.config.link_image_shape`), which a pose or code net must not. Example (a pose
    autoencoder for 16 joints with a 24-d code, and a map from 128-d image codes to it)::

        pose_encoder = MLP(48, [128, 24])
        pose_decoder = MLP(24, [128, 48])
        mapping = MLP(128, [256, 24])
    """

    def __init__(
        self,
        in_features: int = 64,
        widths: Sequence[int] = (64,),
        activation: str = "relu",
        output_activation: str | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"MLP needs in_features >= 1, got {in_features}")
        self.in_features = int(in_features)
        self.widths = _check_widths(widths)
        self.out_features = self.code_dim = self.widths[-1]
        sizes = [self.in_features, *self.widths]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = k == len(self.widths) - 1
            layers += [nn.Linear(a, b), make_activation(output_activation if last else activation)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, in_features)
        if h.shape[1] != self.in_features:
            raise ValueError(f"MLP built for {self.in_features} input features got {h.shape[1]} "
                             f"(input shape {list(x.shape)}); fix: set in_features to {h.shape[1]}")
        return self.body(h)  # (B, widths[-1])
