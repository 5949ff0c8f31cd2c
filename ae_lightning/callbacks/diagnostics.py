"""How much of each validation epoch the expensive diagnostics look at (``ae-lightning`` CLI arguments ``diagnostics.*``).

The defaults keep them off the hot path: ``val/ssim`` over the first 100 validation images of each epoch and the
adversarial models' ``val/prior_mmd`` / ``val/prior_ks`` over the first 500 validation codes (the same images every
epoch: validation data are not shuffled and validation noise is reseeded). On the CPU, torchmetrics' SSIM of a
28×28 digit costs more than a small MLP's forward pass, and the MMD's kernel matrices grow with the square of the
codes. ``null`` makes either exact over every image (the MMD at most over 2,000 codes, as before); ``test/ssim`` is
always over every test image::

    ae-lightning fit --config configs/dae_xray64.yaml --diagnostics.ssim_images=null
    ae-lightning fit --config configs/aae_mnist.yaml --diagnostics.prior_match_codes=null

Outside the CLI, set the model's attributes of the same meaning: ``model.val_ssim_images = None``,
``aae.val_prior_match_codes = None``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from ae_lightning.metrics import VAL_SSIM_IMAGES
from ae_lightning.priors import VAL_PRIOR_MATCH_CODES


class Diagnostics(Callback):
    """See the module docstring.

    Args:
        ssim_images: ``val/ssim`` over the first this many validation images of each epoch (per process); ``None``:
            every image.
        prior_match_codes: ``val/prior_mmd`` and ``val/prior_ks`` of the adversarial models over the first this many
            validation codes; ``None``: up to :func:`~ae_lightning.priors.prior_match`'s own limit.
    """

    def __init__(self, ssim_images: int | None = VAL_SSIM_IMAGES,
                 prior_match_codes: int | None = VAL_PRIOR_MATCH_CODES) -> None:
        for name, value, least in (("ssim_images", ssim_images, 1), ("prior_match_codes", prior_match_codes, 2)):
            if value is not None and value < least:
                raise ValueError(f"diagnostics.{name} must be at least {least} or null (every image), got {value}")
        self.ssim_images = ssim_images
        self.prior_match_codes = prior_match_codes

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if hasattr(pl_module, "val_ssim_images"):
            pl_module.val_ssim_images = self.ssim_images
        if hasattr(pl_module, "val_prior_match_codes"):
            pl_module.val_prior_match_codes = self.prior_match_codes
