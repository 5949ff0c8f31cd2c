"""Label conditioning for any encoder/decoder: wrappers that concatenate a condition vector.

A condition is a one-hot class (integer labels, e.g. MNIST digits) or an attribute vector (floats,
e.g. CelebA attributes in {0, 1}). The wrapped nets are the ordinary ones from this package:

- :class:`ConditionalEncoder` runs the net on the image, concatenates the condition to its
  features and maps them with one linear layer to the code (for a VAE: ``2 * latent_dim``
  means and log-variances);
- :class:`ConditionalDecoder` concatenates the condition to the code and runs the net, which is
  built for ``latent_dim + label_dim`` inputs.

Example (conditional VAE on MNIST, 16-d latent, 10 classes)::

    enc = ConditionalEncoder(MLPEncoder((1, 28, 28), [512, 256], activation="relu", code_activation="relu"),
                             label_dim=10, code_dim=32)
    dec = ConditionalDecoder(MLPDecoder((1, 28, 28), [512, 26], activation="relu", output_activation=None),
                             label_dim=10)
    params = enc(x, y)                  # (B, 32); y: (B,) digit labels
    logits = dec(z, y)                  # (B, 1, 28, 28); z: (B, 16)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def as_condition(
    labels: torch.Tensor | None, label_dim: int, who: str = "conditional net", check_range: bool = True
) -> torch.Tensor:
    """``(B, label_dim)`` float condition from integer class labels ``(B,)`` (one-hot) or a float ``(B, label_dim)``.

    ``check_range`` reads the labels' range on the host (a device sync): a training loop checks its first batch only.
    """
    if labels is None:
        raise ValueError(f"{who} needs labels (one-hot classes or attribute vectors); got None")
    if not labels.is_floating_point():
        if labels.ndim != 1:
            raise ValueError(f"{who}: integer labels must be (B,) class indices, got shape {tuple(labels.shape)}")
        if check_range and labels.numel() and (labels.min() < 0 or labels.max() >= label_dim):
            raise ValueError(
                f"{who}: class labels must lie in [0, {label_dim}), got {labels.min().item()}..{labels.max().item()}; "
                "fix: set label_dim to the number of classes (unlabelled data has label -1)"
            )
        return F.one_hot(labels, label_dim).float()  # (B, L)
    if labels.ndim != 2 or labels.shape[1] != label_dim:
        raise ValueError(
            f"{who}: attribute vectors must be (B, {label_dim}), got shape {tuple(labels.shape)}; "
            "fix: set label_dim to the number of attributes the data yields"
        )
    return labels


def _width(net: nn.Module, what: str) -> int:
    width = getattr(net, "code_dim", None)
    if not width:
        raise ValueError(
            f"{what} wraps a {type(net).__name__} without a vector code; fix: give it a code_dim "
            "(ConvEncoder/ConvDecoder) or use an MLP net"
        )
    return int(width)


class ConditionalEncoder(nn.Module):
    """``head([net(x), condition])``: image features plus the condition → ``(B, code_dim)``.

    Args:
        net: an encoder with a vector output of ``net.code_dim`` features (use a non-linear
            ``code_activation`` so the features are not just a linear map before the head).
        label_dim: number of classes or attributes.
        code_dim: output size (for a VAE, ``2 * latent_dim``).
    """

    def __init__(self, net: nn.Module, label_dim: int, code_dim: int) -> None:
        super().__init__()
        if label_dim < 1 or code_dim < 1:
            raise ValueError(f"label_dim and code_dim must be positive, got {label_dim} and {code_dim}")
        self.net = net
        self.label_dim = label_dim
        self.code_dim = code_dim
        self.image_shape = getattr(net, "image_shape", None)
        self.head = nn.Linear(_width(net, type(self).__name__) + label_dim, code_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(x).flatten(1)  # (B, F)
        c = as_condition(labels, self.label_dim, type(self).__name__).to(h.dtype)  # (B, L)
        return self.head(torch.cat([h, c], dim=1))  # (B, code_dim)


class ConditionalDecoder(nn.Module):
    """``net([z, condition])``: the wrapped decoder is built for ``latent_dim + label_dim`` inputs.

    ``self.code_dim`` is the latent size it accepts (``net.code_dim - label_dim``).
    """

    def __init__(self, net: nn.Module, label_dim: int) -> None:
        super().__init__()
        width = _width(net, type(self).__name__)
        if not 1 <= label_dim < width:
            raise ValueError(
                f"{type(self).__name__}: the wrapped decoder takes {width} inputs, which must be latent_dim + "
                f"label_dim with label_dim={label_dim}; fix: build the decoder for latent_dim + {label_dim} inputs"
            )
        self.net = net
        self.label_dim = label_dim
        self.code_dim = width - label_dim
        self.image_shape = getattr(net, "image_shape", None)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        c = as_condition(labels, self.label_dim, type(self).__name__).to(z.dtype)  # (B, L)
        return self.net(torch.cat([z, c], dim=1))  # (B, C, H, W)
