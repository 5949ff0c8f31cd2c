"""The autoencoder LightningModule: optimisation logic only, nets injected.

Classic, deep and convolutional autoencoders are this one class with different encoder/decoder
nets (see ``configs/``); :class:`DenoisingAutoencoder` adds an injected corruption model. Every
variant shares :meth:`Autoencoder.shared_step`, which carries what each of them needs::

    x    = images_of(batch)              # the clean target
    cond = self.condition(batch)         # labels / attributes for conditional models, else None
    x_in = self.corrupt(x, generator)    # the model's input (noisy for denoisers)
    out  = self(x_in, cond)              # a typed output that records its input and condition
    out.losses = self.compute_losses(out, x)

so a variant overrides a hook (``condition``, ``corrupt``, ``forward``, ``compute_losses``), not the step.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ae_lightning.batch import images_of
from ae_lightning.inference import sliding_window, tiled_whole_image
from ae_lightning.losses import ReconstructionLoss, reconstruction_loss
from ae_lightning.metrics import VAL_SSIM_IMAGES, image_metrics
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


PredictionKind = Literal["reconstruction", "codes", "samples", "progression"]


@dataclass
class Prediction:
    """What ``predict_step`` made of one batch, for :class:`~ae_lightning.callbacks.PredictionWriter`.

    ``reconstruction``: ``values`` (B, C, H, W) in [0, 1] at each input's own resolution, one image per
    input; ``codes``: ``values`` (B, D), the encoder's code of each input (flattened); ``progression`` (CAAE):
    ``values`` (B, 3, H', W'), one age-progression grid per input face.
    """

    kind: PredictionKind
    values: torch.Tensor


# --- hyperparameters: one rule, read from the signature's types ------------------------------------
_PLAIN = (bool, int, float, str, type(None))


def is_plain(hint) -> bool:
    """Whether a type hint is plain data (numbers, strings, ``None``, ``Literal`` and containers of them).

    Everything else (nets, noise models, priors, optimiser callables) is an object: it lives in the
    resolved config, not in the checkpoint, which keeps checkpoints loadable with ``weights_only=True``.
    """
    origin = typing.get_origin(hint)
    if origin is Literal:
        return True
    if origin is None:
        return hint in _PLAIN
    return origin in (typing.Union, types.UnionType, list, tuple, dict) and all(
        a is Ellipsis or is_plain(a) for a in typing.get_args(hint)
    )


def init_parameters(cls: type) -> dict[str, Any]:
    """``{name: type hint}`` of the arguments ``cls(...)`` takes, following ``**kwargs`` up to the base classes."""
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        hints = typing.get_type_hints(klass.__init__)
        forwards = False
        for name, p in list(inspect.signature(klass.__init__).parameters.items())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(name, hints.get(name, Any))
        if not forwards:
            return params
    return params


def hyperparameter_names(cls: type) -> list[str]:
    """The arguments of ``cls`` saved as hyperparameters: the plain-typed ones it takes itself."""
    return [name for name, hint in init_parameters(cls).items() if is_plain(hint)]


class Autoencoder(L.LightningModule):
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
        keep = set(hyperparameter_names(type(self)))
        every = {n for k in type(self).__mro__ if "__init__" in vars(k) and issubclass(k, Autoencoder)
                 for n in inspect.signature(k.__init__).parameters}
        self.save_hyperparameters(ignore=sorted(every - keep - {"self"}))
        self.encoder = encoder
        self.decoder = decoder
        if hasattr(decoder, "tie_to"):
            decoder.tie_to(encoder)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.val_metrics = image_metrics("val/", ssim_images=self.val_ssim_images)
        self.test_metrics = image_metrics("test/")  # test/ssim: every image
        self.residual = residual
        #: ``{"train/<name>": value}`` of the current training step, every term (see :meth:`log_terms`)
        self.train_terms: dict[str, torch.Tensor | float] = {}
        # per stage, the running sums (on the device) and image counts of the logged terms (see log_terms)
        # per stage and per set of names logged together, the running sums (K,) of the terms and the image count
        self._epoch_sums: dict[str, dict[tuple[str, ...], tuple[torch.Tensor, int]]] = {}
        #: training terms a callback monitors (set at the start of each fit, see :meth:`monitored_train_terms`)
        self._monitored: frozenset[str] = frozenset()

    #: ``val/ssim`` over the first this many validation images of each epoch (per process; the same images every
    #: epoch); ``None``: every image. SSIM costs more per image than a small net's forward pass (see
    #: :mod:`ae_lightning.metrics`); ``test/ssim`` is always over every image. CLI: ``--diagnostics.ssim_images``.
    val_ssim_images: int | None = VAL_SSIM_IMAGES

    #: whether every trainable parameter gets a gradient in every training step; a model that trains
    #: some parameters per phase or stage (adversarial, stacked) sets False, and :meth:`setup` then runs DDP
    #: with ``find_unused_parameters=True``, which plain DDP otherwise rejects mid-fit
    every_parameter_in_each_step = True

    def setup(self, stage: str) -> None:
        """Fail early, in one line, when the data's image shape is not the one the nets were built for;
        switch DDP to unused-parameter handling when the model needs it (see ``every_parameter_in_each_step``)."""
        strategy = self.trainer.strategy if self._trainer else None
        if (not self.every_parameter_in_each_step and isinstance(strategy, DDPStrategy)
                and not strategy._ddp_kwargs.get("find_unused_parameters", False)):
            # the DDP wrapper is built after this hook, so switching the flag here still takes effect
            rank_zero_warn(
                f"{type(self).__name__}: setting DDP find_unused_parameters=True (it trains some parameters per "
                "phase or stage); pass --trainer.strategy=ddp_find_unused_parameters_true to silence this"
            )
            strategy._ddp_kwargs["find_unused_parameters"] = True
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

    def first_time(self, check: str) -> bool:
        """True the first time ``check`` runs in training and the first time outside it, then False: label
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
        self._forget_epoch_terms("val")  # what a validation that was cut short left
        # fresh metric states made in this loop's grad mode: states left by an earlier `validate` / `test`
        # call are inference tensors, which a later `fit` cannot update in place
        self.val_metrics.reset()
        self.val_metrics["ssim"].max_images = self.val_ssim_images

    def on_test_epoch_start(self) -> None:
        self._reseed_eval()
        self._forget_epoch_terms("test")
        self.test_metrics.reset()

    def shared_step(self, batch, stage: str) -> AutoencoderOutput:
        x = images_of(batch)  # (B, C, H, W) clean
        x_in = self.corrupt(x, None if stage == "train" else self._eval_generator())
        out = self(x_in, self.condition(batch))
        out.losses = self.compute_losses(out, x)
        self.log_step(out, x, stage)
        return out

    def log_step(self, out: AutoencoderOutput, x: torch.Tensor, stage: str) -> None:
        """Log ``{stage}/<term>`` for every loss term and, outside training, PSNR/SSIM against the clean ``x``."""
        self.log_terms(stage, out.losses, x.shape[0])
        if stage != "train":
            self.update_image_metrics(stage, out.reconstruction, x)

    def image_metrics_of(self, stage: str):
        """The PSNR/SSIM collection of ``"val"`` or ``"test"``; ``None`` for training."""
        return {"val": self.val_metrics, "test": self.test_metrics}.get(stage)

    def update_image_metrics(self, stage: str, reconstruction: torch.Tensor, x: torch.Tensor) -> None:
        """Add a batch to ``{stage}/psnr`` and ``{stage}/ssim`` (logged at the epoch end, over every process)."""
        self.image_metrics_of(stage).update(reconstruction.detach().float().clamp(0, 1), x.float())

    # --- logging: every model's terms go through here -------------------------------------------
    def log_terms(self, stage: str, terms: Mapping[str, torch.Tensor | float], batch_size: int) -> None:
        """Log ``{stage}/<name>`` for each of ``terms``.

        Lightning's ``self.log`` costs about half a millisecond of host time per key and call (it moves its
        result object to the device on every call): more than a tenth of a small net's whole step for one key,
        more than the step for five. So the terms stay on the device, summed there (weighted by ``batch_size``),
        and are logged once, as exact means over the epoch's images on every process, at the epoch's end
        (:meth:`log_epoch_means`): ``train/<name>``, ``val/<name>``, ``test/<name>``. Training also logs each
        term's step value, ``train/<name>_step``, on the steps where something reads it (:meth:`_step_values_read`:
        the logger's steps, ``trainer.log_every_n_steps``; ``train/loss`` every step while a progress bar is
        shown), and keeps each step's terms in :attr:`train_terms`, where the divergence guard reads them. A
        term a callback monitors (:meth:`monitored_train_terms`) is logged through ``self.log`` every step instead.
        """
        terms = {f"{stage}/{k}": v.detach() if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        if stage == "train":
            self.train_terms.update(terms)
            for k in self._monitored.intersection(terms):  # a callback reads it mid-epoch: Lightning's own path
                self.log(k, terms.pop(k), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self._accumulate(stage, terms, batch_size)
        read = self._step_values_read(terms) if stage == "train" else {}
        if read:
            self.log_dict({f"{k}_step": v for k, v in read.items()}, on_step=True, on_epoch=False, prog_bar=True,
                          batch_size=batch_size)

    def _step_values_read(self, terms: dict) -> dict:
        """The training terms whose step values are read on this step: all of them when the logger writes it
        (Lightning's own rule, ``log_every_n_steps``); on the other steps ``train/loss`` alone while a progress
        bar shows it; else none."""
        trainer = self._trainer
        if trainer is None:
            return {}
        if trainer.logger is not None and getattr(trainer._logger_connector, "should_update_logs", True):
            return terms
        if trainer.progress_bar_callback is not None and "train/loss" in terms:
            return {"train/loss": terms["train/loss"]}
        return {}

    def monitored_train_terms(self) -> frozenset[str]:
        """The training terms a callback of the Trainer monitors (a ``ModelCheckpoint`` or ``EarlyStopping``
        ``monitor`` of ``train/<name>``, ``train/<name>_step`` or ``train/<name>_epoch``). Those go through
        Lightning's ``self.log`` every step, on step and epoch, as Lightning logs any metric: mid-epoch
        ``train/<name>`` is then the step's value and ``train/<name>_step`` is fresh at every step, what a
        step-frequency checkpoint needs; at the epoch's end ``train/<name>`` is the epoch mean."""
        trainer = self._trainer
        monitors = [getattr(cb, "monitor", None) for cb in (trainer.callbacks if trainer is not None else [])]
        return frozenset(m.removesuffix("_step").removesuffix("_epoch") for m in monitors
                         if isinstance(m, str) and m.startswith("train/"))

    def on_train_start(self) -> None:
        self._monitored = self.monitored_train_terms()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.train_terms.clear()

    def _accumulate(self, stage: str, terms: Mapping[str, torch.Tensor | float], batch_size: int) -> None:
        """Add ``batch_size`` × each term to the stage's running sums: the tensors stacked into one (K,) sum on the
        device (a stack, a multiply and an add per call, not two ops per term; no host read, no Lightning call),
        Python numbers into one on the host."""
        sums = self._epoch_sums.setdefault(stage, {})

        def add(names: tuple[str, ...], values: torch.Tensor) -> None:  # values (K,)
            total, images = sums.get(names, (0.0, 0))
            sums[names] = (total + values * batch_size, images + batch_size)

        tensors = {k: v for k, v in terms.items() if isinstance(v, torch.Tensor)}
        numbers = {k: v for k, v in terms.items() if not isinstance(v, torch.Tensor)}
        if tensors:
            add(tuple(tensors), torch.stack([(v if v.ndim == 0 else v.reshape(())).float() for v in tensors.values()]))
        if numbers:
            add(tuple(numbers), torch.tensor(list(numbers.values()), dtype=torch.float64))

    def _forget_epoch_terms(self, stage: str) -> dict[str, tuple[torch.Tensor, int]]:
        """``{name: (sum, count)}`` kept for ``stage`` by :meth:`log_terms`, removed."""
        kept: dict[str, tuple[torch.Tensor, int]] = {}
        for names, (total, images) in self._epoch_sums.pop(stage, {}).items():
            for i, name in enumerate(names):  # a name logged in several sets of names: their sums add up
                s, n = kept.get(name, (0.0, 0))
                kept[name] = (s + total[i], n + images)
        return kept

    def log_epoch_means(self, stage: str) -> None:
        """Log the epoch means of the terms :meth:`log_terms` kept on the device for ``stage`` (over every
        process: one collective), and outside training the image metrics (PSNR, SSIM) of the epoch."""
        kept = self._forget_epoch_terms(stage)
        keys = sorted(kept)  # the same on every process: each runs the same steps
        if keys:
            total = torch.stack([torch.as_tensor(kept[k][0], device=self.device).float() for k in keys] +
                                [torch.as_tensor(float(kept[k][1]), device=self.device) for k in keys])  # (2K,)
            if self._trainer is not None and self.trainer.world_size > 1:
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            means = total[: len(keys)] / total[len(keys):].clamp(min=1)  # (K,)
            for k, v in zip(keys, means, strict=True):
                self.log(k, v, on_step=False, on_epoch=True, prog_bar=stage == "val" or k == "train/loss")
        metrics = self.image_metrics_of(stage)
        if metrics is not None and any(m.update_called for m in metrics.values()):
            self.log_dict(metrics.compute(), prog_bar=stage == "val")  # torchmetrics syncs the processes
            metrics.reset()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means("test")

    def all_processes(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` (N, ...) of every process, concatenated (N·world, ...): epoch statistics over all the images,
        not a mean of per-process statistics. A collective under DDP: every rank must call it."""
        if self._trainer is None or self.trainer.world_size < 2:
            return rows
        return self.all_gather(rows).flatten(0, 1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train").loss

    def validation_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        return self.shared_step(batch, "test")

    # --- using a trained model (``ae-lightning predict``) -----------------------------------------
    #: what ``ae-lightning predict`` writes unless told (:class:`~ae_lightning.callbacks.PredictionWriter` ``output``)
    default_prediction: PredictionKind = "reconstruction"
    #: tiles for nets that take one input size only: overlap fraction and blending window (see :mod:`ae_lightning.inference`)
    tile_overlap: float = 0.5
    tile_window: str = "gaussian"
    #: fully convolutional nets on images larger than this side (plus the margins) run in pieces with ``tile_margin``
    #: pixels of context each (see :func:`~ae_lightning.inference.tiled_whole_image`): bounded memory, same result
    whole_image_tile: int = 1024
    tile_margin: int = 128

    def predict_step(self, batch, batch_idx: int) -> Prediction | None:
        """The batch's reconstructions at their own resolution, or its codes, as ``prediction_kind`` says
        (set by the PredictionWriter; else :attr:`default_prediction`). Inputs are used as given: a denoiser
        denoises them, no noise is added. ``samples`` need no input: the writer asks :meth:`generate` once."""
        kind = getattr(self, "prediction_kind", None) or self.default_prediction
        x = images_of(batch)  # (B, C, H, W), any H, W
        if kind == "reconstruction":
            return Prediction(kind, self.reconstruct_full(x, self.condition(batch)).clamp(0, 1))
        if kind == "codes":
            code = self.encode(self.fit_to_nets(x), self.condition(batch))
            if isinstance(code, tuple | list):  # a multi-scale code (a U-Net's feature maps): its deepest map
                code = code[-1]
            return Prediction(kind, code.flatten(1))  # (B, D)
        return None

    def size_multiple(self) -> int | None:
        """Any H, W divisible by this runs through the nets (fully convolutional); ``None``: only their image_shape."""
        multiples = [getattr(net, "size_multiple", None) for net in (self.encoder, self.decoder)]
        return None if None in multiples else math.lcm(*multiples)

    def reconstruct_full(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstructions (B, C, H, W) of images of any size: the whole image for fully convolutional nets,
        overlapping blended tiles of the nets' image size otherwise (:mod:`ae_lightning.inference`)."""
        shape = getattr(self.encoder, "image_shape", None)
        multiple = self.size_multiple()
        run = functools.partial(self._reconstruct, cond=cond)
        if shape is None or tuple(x.shape[-2:]) == tuple(shape[1:]):
            return run(x)
        if multiple is not None:
            return tiled_whole_image(run, x, multiple, self.whole_image_tile, self.tile_margin)
        if cond is not None:
            raise ValueError(f"{type(self).__name__}: tiled inference of a conditional model is not supported; "
                             f"fix: give it images of its size {list(shape[1:])}")
        return sliding_window(run, x, tuple(shape[1:]), self.tile_overlap, self.tile_window)

    def _reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self(x, cond).reconstruction

    def fit_to_nets(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` centre-cropped square and resized (antialiased) to the nets' image size, as the training data
        were; unchanged when it already has that size."""
        shape = getattr(self.encoder, "image_shape", None)
        if shape is None or tuple(x.shape[-2:]) == tuple(shape[1:]):
            return x
        h, w = x.shape[-2:]
        side = min(h, w)
        x = x[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        return F.interpolate(x, size=tuple(shape[1:]), mode="bicubic", antialias=True).clamp(0, 1)

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
