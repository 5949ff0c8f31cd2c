"""Discriminators and the CAAE encoder/generator (Zhang, Song & Qi, CVPR 2017; ZZUTK/Face-Aging-CAAE).

Latent discriminator of an adversarial autoencoder (code → one logit; with ``num_classes`` the
one-hot label is appended to the code, Makhzani et al.'s supervised AAE)::

    d = MLPDiscriminator(in_features=2, widths=[256, 256])                      # AAE, 2-D code
    d_z = MLPDiscriminator(in_features=50, widths=[64, 32, 16], norm="batch")   # CAAE's D_z

CAAE nets at the release's sizes (128×128×3 images in [-1, 1], z in [-1, 1]^50, 10 age groups,
2 genders); labels enter as ``±1`` one-hot vectors (the release's convention) and are tiled so
that they weigh as much as z::

    E = CAAEEncoder((3, 128, 128))              # 5 stride-2 5×5 convs 64…1024 → FC → tanh → (B, 50)
    G = CAAEGenerator((3, 128, 128))            # [z, age×5, gender×25] → FC 1024×4×4 → 5 up-convs → tanh
    D_img = ImageDiscriminator((3, 128, 128))   # convs 16…128, labels joined after the first, FC 1024 → 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ae_lightning.nets.common import check_image_shape, make_activation


def release_init(module: nn.Module, std: float = 0.02) -> None:
    """The release's initialisation: weights ``N(0, 0.02²)``, biases zero (DCGAN-style)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


class MLPDiscriminator(nn.Module):
    """``code (B, in_features) [+ one-hot label (B, num_classes)]`` → logit ``(B, 1)``."""

    def __init__(
        self,
        in_features: int = 2,
        widths: Sequence[int] = (256, 256),
        activation: str = "leaky_relu",
        norm: Literal["batch", "none"] | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if in_features < 1 or not widths or min(widths) < 1:
            raise ValueError(f"MLPDiscriminator needs in_features >= 1 and positive widths, got {in_features}, {widths}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        layers: list[nn.Module] = []
        n_in = self.in_features + self.num_classes
        for w in widths:
            norm_layer = nn.BatchNorm1d(w) if norm == "batch" else nn.Identity()
            layers += [nn.Linear(n_in, w), norm_layer, make_activation(activation)]
            n_in = w
        layers.append(nn.Linear(n_in, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.shape[-1] != self.in_features:
            raise ValueError(f"MLPDiscriminator built for {self.in_features}-d codes got {z.shape[-1]}-d; "
                             "fix: set the discriminator's in_features to the encoder's code size")
        if self.num_classes:
            if labels is None:
                raise ValueError("this discriminator was built with num_classes > 0 and needs the labels")
            # unlabelled rows (label < 0) get an all-zero label vector
            onehot = nn.functional.one_hot(labels.clamp(min=0), self.num_classes).to(z.dtype)  # (B, K)
            z = torch.cat([z, onehot * (labels >= 0).unsqueeze(1).to(z.dtype)], dim=1)
        return self.body(z)  # (B, 1)


def tile_labels(condition: torch.Tensor, sizes: Sequence[int], repeats: Sequence[int]) -> torch.Tensor:
    """Split ``condition`` (B, Σ sizes) into its label vectors and repeat each ``repeats[i]`` times."""
    parts = condition.split(list(sizes), dim=1)
    return torch.cat([p.repeat(1, r) for p, r in zip(parts, repeats, strict=True)], dim=1)


def _depth_for(image_shape: tuple[int, int, int], depth: int, who: str) -> int:
    _, h, w = image_shape
    if h != w or h % (2**depth):
        raise ValueError(
            f"{who}: image shape {list(image_shape)} does not fit {depth} stride-2 stages; "
            f"rule: square images with side divisible by 2**{depth} = {2**depth} (change image_size or channels)"
        )
    return h // 2**depth


class CAAEEncoder(nn.Module):
    """Stride-2 ``kernel_size`` convs with ReLU (``channels``), then FC → ``code_dim`` with tanh: z ∈ [-1, 1]."""

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 128, 128),
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        kernel_size: int = 5,
        code_dim: int = 50,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        side = _depth_for(self.image_shape, len(channels), type(self).__name__)
        layers: list[nn.Module] = []
        c_in = self.image_shape[0]
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size, stride=2, padding=kernel_size // 2), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.code_dim = code_dim
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, code_dim), nn.Tanh())
        release_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (B, code_dim) in [-1, 1]


class CAAEGenerator(nn.Module):
    """``[z, age, gender]`` → image in [-1, 1].

    ``channels[0]`` is the FC map's depth; each further entry is a stride-2 transposed conv; two
    stride-1 transposed convs follow (to ``channels[-1] // 2``, then to the image channels, tanh),
    as in the release. With ``tile_labels`` the age vector is repeated ``code_dim // num_ages`` times
    and the gender vector ``code_dim // num_genders`` times (the release's ``tile_ratio=1``).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 128, 128),
        code_dim: int = 50,
        num_ages: int = 10,
        num_genders: int = 2,
        channels: Sequence[int] = (1024, 512, 256, 128, 64, 32),
        kernel_size: int = 5,
        tile: bool = True,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        if len(channels) < 2:
            raise ValueError("CAAEGenerator channels needs the FC depth and at least one up-sampling stage")
        self.side = _depth_for(self.image_shape, len(channels) - 1, type(self).__name__)
        self.code_dim, self.num_ages, self.num_genders = code_dim, num_ages, num_genders
        self.repeats = (max(1, code_dim // num_ages), max(1, code_dim // num_genders)) if tile else (1, 1)
        n_in = code_dim + num_ages * self.repeats[0] + num_genders * self.repeats[1]
        self.fc = nn.Sequential(
            nn.Linear(n_in, channels[0] * self.side**2), nn.Unflatten(1, (channels[0], self.side, self.side)), nn.ReLU()
        )
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel_size, stride=2, padding=pad, output_padding=1), nn.ReLU()]
        last = max(1, channels[-1] // 2)
        layers += [
            nn.ConvTranspose2d(channels[-1], last, kernel_size, stride=1, padding=pad), nn.ReLU(),
            nn.ConvTranspose2d(last, self.image_shape[0], kernel_size, stride=1, padding=pad), nn.Tanh(),
        ]
        self.body = nn.Sequential(*layers)
        release_init(self)

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        labels = tile_labels(condition, (self.num_ages, self.num_genders), self.repeats)  # (B, tiled)
        return self.body(self.fc(torch.cat([z, labels], dim=1)))  # (B, C, H, W) in [-1, 1]


class ImageDiscriminator(nn.Module):
    """``(image, age, gender)`` → logit: stride-2 convs (BN, ReLU); the labels are tiled over the map
    after the first conv (gender repeated ``num_ages // 2`` times, as in the release); FC 1024 (leaky ReLU) → 1."""

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 128, 128),
        num_ages: int = 10,
        num_genders: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 5,
        hidden: int = 1024,
        norm: Literal["batch", "none"] | None = "batch",
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        side = _depth_for(self.image_shape, len(channels), type(self).__name__)
        self.num_ages, self.num_genders = num_ages, num_genders
        self.repeats = (1, max(1, num_ages // 2))
        n_labels = num_ages + num_genders * self.repeats[1]
        pad = kernel_size // 2

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride=2, padding=pad),
                                 nn.BatchNorm2d(c_out) if norm == "batch" else nn.Identity(), nn.ReLU())

        self.first = stage(self.image_shape[0], channels[0])
        rest, c_in = [], channels[0] + n_labels
        for c in channels[1:]:
            rest.append(stage(c_in, c))
            c_in = c
        self.rest = nn.Sequential(*rest)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )
        release_init(self)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.first(x)  # (B, C1, H/2, W/2)
        labels = tile_labels(condition, (self.num_ages, self.num_genders), self.repeats)  # (B, L)
        h = torch.cat([h, labels[:, :, None, None].expand(-1, -1, *h.shape[-2:])], dim=1)  # (B, C1 + L, H/2, W/2)
        return self.head(self.rest(h))  # (B, 1)
