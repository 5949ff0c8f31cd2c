"""Rate–distortion training of a learned image codec (Ballé, Laparra & Simoncelli 2017; Ballé et al. 2018).

The injected ``codec`` is a CompressAI model (:mod:`ae_lightning.nets.learned_codec`: the factorised prior, the
scale hyperprior): analysis transform → latents, quantised (additive uniform noise in training, rounding in
evaluation) and modelled by learned densities, synthesis transform → image. The loss is CompressAI's
convention for 8-bit images::

    loss = λ · 255² · MSE(x̂, x) + bpp,     bpp = Σ −log₂ p(ŷ) / pixels     (x in [0, 1], per image, batch mean)

so ``λ`` trades rate for distortion (CompressAI's pretrained models use λ = 0.0018 … 0.18 for MSE). Each
``EntropyBottleneck`` also learns the quantiles of its densities (the range its coding tables cover) through an
auxiliary loss, ``aux``, which CompressAI trains with a second optimiser.

**One optimiser, two parameter groups** (not two optimisers): Lightning 2's automatic optimisation takes one
optimiser per step, and manual optimisation would double ``global_step`` (it counts optimiser steps), and
re-implement gradient clipping and LR scheduling. The two losses touch disjoint parameters — the rate–distortion
loss never reaches the quantiles (in training the noise proxy ignores them), the aux loss reaches only them
(``EntropyBottleneck.loss`` detaches the density) — so one backward of ``loss + aux`` through one per-parameter
optimiser (Adam, AdamW, SGD, …) with the quantiles in their own group (``aux_lr``, no weight decay) is the same
update as CompressAI's two optimisers (tested). Trainer gradient clipping (``gradient_clip_val``) clips the
rate–distortion group only, as CompressAI's recipe does.

Metric keys: ``{stage}/loss`` (the rate–distortion loss), ``{stage}/bpp`` (the likelihoods' rate: of the noisy
latents in training, of the rounded latents in validation/test — an estimate; the real bytes are
:func:`ae_lightning.learned_codec.score`'s), ``{stage}/mse``, ``{stage}/aux``, and ``val/psnr``, ``val/ssim`` of the
decoder's image from the rounded latents. The codec always runs in fp32, whatever the Trainer's precision
(bf16 likelihoods of small probabilities lose the rate).

Example::

    from ae_lightning.nets.learned_codec import FactorizedPrior
    model = RateDistortionAutoencoder(FactorizedPrior((1, 64, 64), N=64, M=96), lmbda=0.01)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ae_lightning.models.base import Autoencoder, AutoencoderOutput
from ae_lightning.optim import LRSchedulerCallable, OptimizerCallable, configure

#: buffers of CompressAI's entropy models whose size :meth:`update` changes (the coding tables)
_TABLES = {"EntropyBottleneck": ["_quantized_cdf", "_offset", "_cdf_length"],
           "GaussianConditional": ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"]}


@contextmanager
def flush_denormals() -> Iterator[None]:
    """CPU arithmetic with denormal floats flushed to zero inside the block (``torch.set_flush_denormal``), off after
    (PyTorch's default; it has no getter to restore another state). GDN's squares and the entropy models' tiny
    likelihoods make denormals, which x86 CPUs compute 10–100× slower: a 64×64 image's analysis transform took
    350 ms with them and 26 ms without (measured on this suite's 2-core CI machine). No effect on GPUs."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass
class RateDistortionOutput(AutoencoderOutput):
    """Adds the likelihoods of each latent (``{"y": (B, M, h, w)}``, plus ``"z"`` for a hyperprior). ``code`` is
    ``None``: CompressAI's forward does not return its latents (``model.encode(x)`` does)."""

    likelihoods: dict[str, torch.Tensor] = field(default_factory=dict)


def likelihood_bpp(likelihoods: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``Σ −log₂ p`` over every latent of the batch ÷ the batch's pixels (B·H·W): the mean rate per image pixel."""
    pixels = images.shape[0] * images.shape[-2] * images.shape[-1]
    return sum(torch.log(p).sum() for p in likelihoods.values()) / (-math.log(2) * pixels)


class RateDistortionAutoencoder(Autoencoder):
    """Trains a CompressAI codec on ``λ · 255² · MSE + bpp`` (plus its entropy bottlenecks' quantile loss).

    Args:
        codec: a CompressAI model (``g_a``, ``g_s``, entropy models, ``aux_loss``, ``compress``/``decompress``),
            e.g. :class:`ae_lightning.nets.learned_codec.FactorizedPrior`.
        lmbda: λ, the weight of the distortion (``λ · 255² · MSE``) against the rate in bits per pixel.
        aux_lr: learning rate of the quantiles (the aux loss's parameter group); CompressAI uses 1e-3.
        optimizer: optimiser of both groups (default Adam, lr 1e-3 here: short CPU fits; CompressAI uses 1e-4).
        lr_scheduler: optional schedule, stepped per optimiser step; it scales both groups.
    """

    def __init__(
        self,
        codec: nn.Module,
        lmbda: float = 0.01,
        aux_lr: float = 1e-3,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if lmbda <= 0:
            raise ValueError(f"lmbda must be > 0 (the distortion's weight against the rate), got {lmbda}")
        super().__init__(codec.g_a, codec.g_s, loss="mse", optimizer=optimizer, lr_scheduler=lr_scheduler)
        # the transforms are the codec's own: registered once, under codec. (checkpoints hold each tensor once);
        # self.encoder / self.decoder are views of them (the properties below)
        del self.encoder, self.decoder
        self.codec = codec

    @property
    def encoder(self) -> nn.Module:
        return self.codec.g_a

    @property
    def decoder(self) -> nn.Module:
        return self.codec.g_s

    def setup(self, stage: str) -> None:
        super().setup(stage)
        torch.set_flush_denormal(True)  # for the whole fit / test (see flush_denormals); off again in teardown

    def teardown(self, stage: str) -> None:
        torch.set_flush_denormal(False)

    # --- the model -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> RateDistortionOutput:
        with torch.autocast(x.device.type, enabled=False):  # fp32 whatever the Trainer's precision (module docstring)
            out = self.codec(x.float())
        return RateDistortionOutput(reconstruction=out["x_hat"], code=None, input=x, condition=cond,
                                    likelihoods=out["likelihoods"])

    def compute_losses(self, out: RateDistortionOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        bpp = likelihood_bpp(out.likelihoods, target)
        mse = F.mse_loss(out.reconstruction, target.float())
        return {"loss": self.hparams.lmbda * 255**2 * mse + bpp, "bpp": bpp, "mse": mse, "aux": self.codec.aux_loss()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self.shared_step(batch, "train")
        return out.loss + out.losses["aux"]  # one backward: each loss reaches its own parameter group only

    # --- optimisation ----------------------------------------------------------------------
    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(rate–distortion parameters, quantiles)``: the entropy bottlenecks' ``quantiles`` are the aux loss's."""
        quantiles = [p for name, p in self.codec.named_parameters() if name.endswith("quantiles")]
        ids = {id(p) for p in quantiles}
        return [p for p in self.parameters() if id(p) not in ids], quantiles

    def configure_optimizers(self):
        main, quantiles = self.parameter_groups()
        groups = [{"params": main}, {"params": quantiles, "lr": self.hparams.aux_lr, "weight_decay": 0.0}]
        return configure(self._trainer, groups, self.optimizer, self.lr_scheduler)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the rate–distortion group only (CompressAI clips before the aux loss has a gradient)."""
        if not gradient_clip_val:
            return
        params = optimizer.param_groups[0]["params"]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # --- checkpoints -----------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load, first resizing the entropy models' coding tables to the saved ones (``update()`` sizes them
        by the learned densities, so a checkpoint's tables rarely have the sizes of a fresh model's)."""
        for name, module in self.named_modules():
            for buffer in _TABLES.get(type(module).__name__, []):
                key = f"{name}.{buffer}"
                if key in state_dict and getattr(module, buffer).shape != state_dict[key].shape:
                    getattr(module, buffer).resize_(state_dict[key].shape)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
