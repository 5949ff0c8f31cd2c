"""The autoencoder LightningModule: optimisation logic only, nets injected.

Classic, deep and convolutional autoencoders are this one class with different encoder/decoder
nets (see ``configs/``); :class:`DenoisingAutoencoder` adds an injected corruption model. Every
variant shares :meth:`Autoencoder.shared_step`, which carries what each of them needs::

    x    = images_of(batch)              # the clean target
    cond = self.condition(batch)         # labels / attributes for conditional models, else None
    x_in = self.corrupt(x, generator)    # the model's input (noisy for denoisers)
    out  = self(x_in, cond)              # a typed output that records its input and condition
    out.losses = self.compute_losses(out, x)

so a variant overrides a hook, not the step. The hooks, all in this module:

- ``condition(batch)``: the labels / attributes the nets take (``None``: unconditional);
- ``corrupt(x, generator)``: the model's input for clean images (noise for denoisers);
- ``encode(x, cond)``, ``decode(code, cond)`` and ``forward(x, cond)`` (a typed :class:`AutoencoderOutput`);
- ``compute_losses(out, target)``: per-term losses, the total under ``"loss"``;
- ``generate(n)``: sample sets for ``ae-lightning predict`` (generative models; see
  :class:`~ae_lightning.models.generative.Generative` for ``sample`` and ``prior``).

What every variant shares without overriding it lives beside this module and is mixed in:
:mod:`~ae_lightning.models.epoch_metrics` (``log_terms``: loss terms and PSNR/SSIM, logged per epoch),
:mod:`~ae_lightning.models.prediction` (``predict_step``, ``reconstruct_full``: images of any size, tiled),
:mod:`~ae_lightning.hparams` (which constructor arguments the checkpoint keeps) and
:mod:`~ae_lightning.models.ddp` (``every_parameter_in_each_step``: the DDP strategy a phased model needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch
from torch import nn

from ae_lightning.batch import images_of
from ae_lightning.hparams import not_hyperparameters
from ae_lightning.losses import ReconstructionLoss, reconstruction_loss
from ae_lightning.models.epoch_metrics import EpochMetrics
from ae_lightning.models.prediction import TiledPrediction
from ae_lightning.noise import NoiseModel
from ae_lightning.optim import LRSchedulerCallable, OptimizerCallable, configure


@dataclass
class AutoencoderOutput:
    """What a forward pass produced.

    ``reconstruction`` is the decoder's image (B, C, H, W); ``code`` the encoder's output; ``input``
    and ``condition`` what the model was given (the corrupted image for a denoiser; labels for a
    conditional model, else ``None``); ``losses`` the per-term losses with the total under ``"loss"``
    (filled by the step).
    """

    reconstruction: torch.Tensor
    code: torch.Tensor
    input: torch.Tensor | None = None
    condition: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        return self.losses["loss"]


class Autoencoder(EpochMetrics, TiledPrediction, L.LightningModule):
    """Encoder → code → decoder, trained to reproduce its input.

    Args:
        encoder: maps (B, C, H, W) images to codes.
        decoder: maps codes back to (B, C, H, W) images; a decoder with ``tie_to`` (tied MLP
            weights) is tied to ``encoder`` here.
        loss: reconstruction loss, ``mse``, ``bce`` (sigmoid outputs) or ``l1``.
        residual: the nets predict what to *subtract* from the input (a residual denoiser,
            DnCNN-style); the reconstruction is ``input - decoder(encoder(input))``.
        optimizer: optimiser callable (default Adam, lr 1e-3); see :mod:`ae_lightning.optim`.
        lr_scheduler: optional schedule, stepped per optimiser step (e.g. :class:`~ae_lightning.optim.CosineToZero`).

    Hyperparameters: every plain-typed argument of the concrete class (``loss``, ``residual``, a
    subclass's numbers and strings) is saved in the checkpoint; objects (nets, noise, optimisers) are
    not — they live in the resolved config. Annotate plain arguments so they are saved.

    Example::

        model = Autoencoder(MLPEncoder((1, 28, 28), [64]), MLPDecoder((1, 28, 28), [64]), loss="bce",
                            optimizer=functools.partial(torch.optim.Adam, lr=3e-3))
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        loss: ReconstructionLoss = "mse",
        residual: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=not_hyperparameters(type(self), Autoencoder))
        self.encoder = encoder
        self.decoder = decoder
        if hasattr(decoder, "tie_to"):
            decoder.tie_to(encoder)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.init_epoch_metrics()
        self.residual = residual

    #: whether every trainable parameter gets a gradient in every training step; a model that trains
    #: some parameters per phase or stage (adversarial, stacked) sets False, and DDP must then run with
    #: ``find_unused_parameters=True``, which plain DDP otherwise rejects mid-fit: the CLI picks that strategy,
    #: in Python ask :func:`~ae_lightning.models.ddp.ddp_strategy` for it
    every_parameter_in_each_step = True

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
    @staticmethod
    def run_net(net: nn.Module, inp: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``net(inp)``, or ``net(inp, cond)`` for a conditional net when there is a condition."""
        return net(inp) if cond is None else net(inp, cond)

    def condition(self, batch) -> torch.Tensor | None:
        """The batch's condition for the nets (labels, attributes); ``None`` for unconditional models."""
        return None

    def is_first_check(self, check: str) -> bool:
        """Whether this is the first batch ``check`` sees in training, or the first outside it: label
        range checks read values on the host, which stalls a GPU every step; the first batch of each
        dataset is checked (a bad file's labels are the DataModules' to report when they load them)."""
        key = (check, self.training)
        done = self.__dict__.setdefault("_checks_done", set())
        if key in done:
            return False
        done.add(key)
        return True

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.run_net(self.encoder, x, cond)

    def decode(self, code: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.run_net(self.decoder, code, cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> AutoencoderOutput:
        code = self.encode(x, cond)
        out = self.decode(code, cond)  # (B, C, H, W)
        return AutoencoderOutput(reconstruction=x - out if self.residual else out, code=code, input=x, condition=cond)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The encoder's input for clean images ``x``; identity here, noise in the denoising variant."""
        return x

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-term losses with the total under ``"loss"``; subclasses add terms.

        ``target`` is the clean image; ``out.input`` what the model was given and ``out.condition`` its
        condition, for penalties that need them (e.g. the contractive Jacobian term).
        """
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
        self.start_epoch_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reseed_eval()
        self.start_epoch_metrics("test")

    def shared_step(self, batch, stage: str) -> AutoencoderOutput:
        x = images_of(batch)  # (B, C, H, W) clean
        x_in = self.corrupt(x, None if stage == "train" else self._eval_generator())
        out = self(x_in, self.condition(batch))
        out.losses = self.compute_losses(out, x)
        self.log_step(out, x, stage)
        return out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train").loss

    def validation_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "test")

    # --- using a trained model: ``predict_step`` and ``reconstruct_full`` come from TiledPrediction ------------
    def generate(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Named sets of generated images (k, C, H, W) for ``ae-lightning predict`` with ``output: samples``;
        generative models override it (prior samples, one set per label for conditional models)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate images; use output reconstruction or codes")

    def grid_rows(self, batch, out: AutoencoderOutput) -> list[tuple[str, torch.Tensor]]:
        """Named rows of the reconstruction grid for a validation step's output: the clean images, the
        input that was scored (when it differs) and the reconstruction — exactly what the step saw."""
        x = images_of(batch)
        rows = [("clean", x)]
        if out.input is not None and out.input.shape == x.shape and not torch.equal(out.input, x):
            rows.append(("input", out.input))
        return rows + [("reconstruction", out.reconstruction)]

    def configure_optimizers(self):
        return configure(self._trainer, self.parameters(), self.optimizer, self.lr_scheduler)


class DenoisingAutoencoder(Autoencoder):
    """Corrupts the input with ``noise`` and scores the reconstruction against the *clean* image.

    Training noise is fresh every step; validation/test noise is reseeded each epoch so that
    the numbers are comparable across epochs. ``weights``: start from trained nets, a shipped
    pretrained name (``xray64-denoiser``) or a weights file (:mod:`ae_lightning.pretrained`); their
    shapes must be the nets'. Other arguments: :class:`Autoencoder`'s. Example::

        dae = DenoisingAutoencoder(ConvEncoder((1, 64, 64), [64, 64]), ConvDecoder((1, 64, 64), [64, 64]),
                                   noise=ScaledGaussian(p=0.1))
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, noise: NoiseModel, weights: str | None = None,
                 **kwargs) -> None:
        super().__init__(encoder, decoder, **kwargs)
        self.noise = noise
        if weights is not None:
            from ae_lightning.pretrained import load_weights

            load_weights(self, weights)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.noise(x, generator)
