"""The autoencoder LightningModule: optimisation logic only, nets injected.

Classic, deep and convolutional autoencoders are this one class with different encoder/decoder
nets (see ``configs/``); :class:`DenoisingAutoencoder` adds an injected corruption model. Variants
with other optimisation logic (manual adversarial phases, staged pretraining) subclass it and
reuse :meth:`encode`, :meth:`decode`, :meth:`corrupt` and :meth:`shared_step`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal

import lightning as L
import torch
from torch import nn

from ae_lightning.losses import ReconstructionLoss, reconstruction_loss
from ae_lightning.metrics import image_metrics
from ae_lightning.noise import NoiseModel

LRSchedule = Literal["constant", "cosine"]


@dataclass
class AutoencoderOutput:
    """What a forward pass produced.

    ``reconstruction`` is the decoder's image (B, C, H, W); ``code`` the encoder's output;
    ``losses`` the per-term losses with the total under ``"loss"`` (filled by the step).
    """

    reconstruction: torch.Tensor
    code: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        return self.losses["loss"]


def images_of(batch) -> torch.Tensor:
    """The image tensor of a batch: datasets yield ``(image, label)`` pairs or bare images."""
    return batch[0] if isinstance(batch, list | tuple) else batch


_PLAIN = (bool, int, float, str, type(None))


def _is_plain(value) -> bool:
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(v) for v in value.values())
    return isinstance(value, _PLAIN)


def _object_args(module: L.LightningModule) -> list[str]:
    """The ``__init__`` arguments, across the whole subclass chain, to leave out of the hyperparameters:
    those holding objects (nets, noise models, priors...) rather than plain values, and base-class
    arguments the concrete class does not take (``load_from_checkpoint`` passes hparams back to it)."""
    own = inspect.signature(type(module).__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values())
    names = []
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is module:
            code = frame.f_code
            args = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            names += [
                a for a in args
                if a != "self" and (not _is_plain(frame.f_locals.get(a)) or (a not in own and not takes_any))
            ]
        frame = frame.f_back
    return names


class Autoencoder(L.LightningModule):
    """Encoder → code → decoder, trained to reproduce its input.

    Args:
        encoder: maps (B, C, H, W) images to codes.
        decoder: maps codes back to (B, C, H, W) images; a decoder with ``tie_to`` (tied MLP
            weights) is tied to ``encoder`` here.
        loss: reconstruction loss, ``mse``, ``bce`` (sigmoid outputs) or ``l1``.
        lr, weight_decay: Adam settings.
        residual: the nets predict what to *subtract* from the input (a residual denoiser,
            DnCNN-style); the reconstruction is ``input - decoder(encoder(input))``.
        lr_schedule: ``constant`` or ``cosine`` (decay to zero over the fit, per step).

    Example::

        model = Autoencoder(MLPEncoder((1, 28, 28), [64]), MLPDecoder((1, 28, 28), [64]), loss="bce")
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        loss: ReconstructionLoss = "mse",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        residual: bool = False,
        lr_schedule: LRSchedule = "constant",
    ) -> None:
        super().__init__()
        # nets, noise and other objects live in the resolved config, not in the checkpoint's hparams:
        # that keeps checkpoints loadable with torch.load(weights_only=True); subclasses inherit this
        self.save_hyperparameters(ignore=_object_args(self))
        self.encoder = encoder
        self.decoder = decoder
        if hasattr(decoder, "tie_to"):
            decoder.tie_to(encoder)
        self.val_metrics = image_metrics("val/")
        self.test_metrics = image_metrics("test/")

    def setup(self, stage: str) -> None:
        """Fail early, in one line, when the data's image shape is not the one the nets were built for."""
        data_shape = getattr(self.trainer.datamodule, "image_shape", None) if self._trainer else None
        net_shape = getattr(self.encoder, "image_shape", None)
        if data_shape is not None and net_shape is not None and tuple(data_shape) != tuple(net_shape):
            raise ValueError(
                f"the nets take images of shape {list(net_shape)} but the data yields {list(data_shape)}; "
                f"fix: set image_shape: {list(data_shape)} in the encoder and decoder init_args"
            )

    # --- the model -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        code = self.encode(x)
        out = self.decode(code)  # (B, C, H, W)
        return AutoencoderOutput(reconstruction=x - out if self.hparams.get("residual", False) else out, code=code)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The encoder's input for clean images ``x``; identity here, noise in the denoising variant."""
        return x

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-term losses with the total under ``"loss"``; subclasses add terms."""
        return {"loss": reconstruction_loss(out.reconstruction, target, self.hparams.loss)}

    # --- one routine for all stages --------------------------------------------------------
    def _eval_generator(self) -> torch.Generator:
        """A generator reseeded at each evaluation epoch, so val/test noise is the same every epoch."""
        if getattr(self, "_eval_gen", None) is None or self._eval_gen.device != self.device:
            self._reseed_eval()
        return self._eval_gen

    def _reseed_eval(self) -> None:
        self._eval_gen = torch.Generator(device=self.device).manual_seed(1234 + self.global_rank)

    def on_validation_epoch_start(self) -> None:
        self._reseed_eval()
        # fresh metric states made in this loop's grad mode: states left by an earlier `validate` / `test`
        # call are inference tensors, which a later `fit` cannot update in place
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._reseed_eval()
        self.test_metrics.reset()

    def shared_step(self, batch, stage: str) -> AutoencoderOutput:
        x = images_of(batch)  # (B, C, H, W) clean
        x_in = self.corrupt(x, None if stage == "train" else self._eval_generator())
        out = self(x_in)
        out.losses = self.compute_losses(out, x)
        self.log_step(out, x, stage)
        return out

    def log_step(self, out: AutoencoderOutput, x: torch.Tensor, stage: str) -> None:
        """Log ``{stage}/<term>`` for every loss term and, outside training, PSNR/SSIM against the clean ``x``."""
        train = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in out.losses.items()},
            on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train, batch_size=x.shape[0],
        )
        if not train:
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(out.reconstruction.detach().float().clamp(0, 1), x.float())
            self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val", batch_size=x.shape[0])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train").loss

    def validation_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(self.corrupt(images_of(batch))).reconstruction.clamp(0, 1)

    @torch.no_grad()
    def preview(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, reconstruction)`` for clean images ``x``, for image grids."""
        x_in = self.corrupt(x, generator)
        return x_in, self(x_in).reconstruction.clamp(0, 1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.get("lr_schedule", "constant") == "constant":
            return opt
        # cosine decay to zero over the whole fit, stepped per batch: short budgets converge much further
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DenoisingAutoencoder(Autoencoder):
    """Corrupts the input with ``noise`` and scores the reconstruction against the *clean* image.

    Training noise is fresh every step; validation/test noise is reseeded each epoch so that
    the numbers are comparable across epochs. Example::

        dae = DenoisingAutoencoder(ConvEncoder((1, 64, 64), [64, 64]), ConvDecoder((1, 64, 64), [64, 64]),
                                   noise=ScaledGaussian(p=0.1))
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        noise: NoiseModel,
        loss: ReconstructionLoss = "mse",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        residual: bool = False,
        lr_schedule: LRSchedule = "constant",
    ) -> None:
        super().__init__(encoder, decoder, loss=loss, lr=lr, weight_decay=weight_decay, residual=residual,
                         lr_schedule=lr_schedule)
        self.noise = noise

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.noise(x, generator)
