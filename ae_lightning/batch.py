"""What a batch holds: datasets yield ``(image, target)`` pairs or bare images.

Shared by the modules and the callbacks (neither imports the other for it).
"""

from __future__ import annotations

import torch


def images_of(batch) -> torch.Tensor:
    """The image tensor of a batch (B, C, H, W)."""
    return batch[0] if isinstance(batch, list | tuple) else batch


def labels_of(batch):
    """The second element of an ``(image, target)`` batch (class labels, attributes, a dict), else ``None``."""
    return batch[1] if isinstance(batch, list | tuple) and len(batch) > 1 else None
