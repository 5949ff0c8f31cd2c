"""Small helpers shared by the nets."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,  # Kingma et al. 2014's nets (M1, M2)
    "identity": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """``nn.Module`` for an activation name (``None`` → identity)."""
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` image shape and return it as a tuple."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {list(image_shape)}")
    return shape  # type: ignore[return-value]
