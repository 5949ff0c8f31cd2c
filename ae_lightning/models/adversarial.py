"""Adversarial autoencoder (Makhzani et al. 2015): a discriminator pushes the codes toward a prior p(z).

Manual optimisation, two phases per batch, exactly as in the paper:

1. **reconstruction** — encoder + decoder take one step on the reconstruction loss;
2. **regularisation** — the latent discriminator takes ``discriminator_steps`` steps on prior
   samples (real) vs encoded codes (fake), then the encoder, as the generator, takes one step to
   make its codes pass for prior samples.

Three injected optimisers, one per phase (``optimizer`` for encoder+decoder, ``discriminator_optimizer``,
``generator_optimizer`` for the encoder; the configs set the paper's Adam β₁ = 0.5); optional
gradient clipping per update (``gradient_clip_val``: Lightning's Trainer cannot clip under manual
optimisation, so the module does it with ``self.clip_gradients`` in ``on_before_optimizer_step``,
after mixed precision has unscaled the gradients). ``adversarial=False`` skips
phase 2: the plain autoencoder with the same nets, the baseline of the prior-match comparison.

Under DDP the phases leave parameters unused (phase 1 never touches the discriminator), so the
strategy must run with ``find_unused_parameters=True``: the class declares
``every_parameter_in_each_step = False`` and the CLI runs a plain ``ddp`` strategy as
``ddp_find_unused_parameters_true`` (with a warning; in Python: :func:`~ae_lightning.models.ddp.ddp_strategy`).

Example::

    aae = AdversarialAutoencoder(
        MLPEncoder((1, 28, 28), [512, 512, 2], activation="relu", code_activation=None),
        MLPDecoder((1, 28, 28), [512, 512, 2], activation="relu"),
        MLPDiscriminator(in_features=2, widths=[256, 256]),
        prior=GaussianPrior(dim=2),
    )
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ae_lightning.batch import images_of, labels_of
from ae_lightning.distributions import DiagonalGaussian
from ae_lightning.losses import ReconstructionLoss, adversarial_loss, reconstruction_loss
from ae_lightning.models.base import Autoencoder, AutoencoderOutput
from ae_lightning.optim import OptimizerCallable
from ae_lightning.priors import VAL_PRIOR_MATCH_CODES, GaussianPrior, Prior, prior_match

Posterior = Literal["deterministic", "gaussian"]


@dataclass
class AdversarialOutput(AutoencoderOutput):
    """Adds the encoder's posterior (a :class:`DiagonalGaussian`, or ``None`` for a deterministic encoder)."""

    posterior: DiagonalGaussian | None = None


class AdversarialAutoencoder(Autoencoder):
    """Autoencoder whose codes are matched to ``prior`` by a latent ``discriminator``.

    Args:
        encoder: images → codes (``code_dim``), or ``2 * code_dim`` means and log-variances with
            ``posterior="gaussian"`` (codes are then reparameterised samples, Makhzani's
            "Gaussian posterior" variant).
        decoder, loss: as in :class:`Autoencoder`.
        discriminator: codes (and, for a supervised prior, labels) → one logit; e.g.
            :class:`~ae_lightning.nets.MLPDiscriminator`.
        prior: a :mod:`ae_lightning.priors` prior (default ``GaussianPrior(2)``); a supervised
            mixture prior draws each real sample from its label's component.
        optimizer: optimiser of the reconstruction phase (encoder + decoder); default Adam.
        discriminator_optimizer, generator_optimizer: optimisers of the regularisation phase (the
            discriminator; the encoder as generator); default Adam (GAN practice: β₁ = 0.5, set in the configs).
        discriminator_steps: discriminator updates per generator update.
        gradient_clip_val: clip each update's gradient norm to this value (None: no clipping).
        adversarial: run phase 2; ``False`` gives the unregularised baseline.
        posterior: ``deterministic`` or ``gaussian`` encoder.
    """

    # each phase leaves parameters unused (phase 1 never touches the discriminator): see models.ddp
    every_parameter_in_each_step = False
    #: ``val/prior_mmd`` and ``val/prior_ks`` over the first this many validation codes (the MMD's cost grows with
    #: their square); ``None``: up to :func:`~ae_lightning.priors.prior_match`'s own limit. CLI: ``--diagnostics.*``
    val_prior_match_codes: int | None = VAL_PRIOR_MATCH_CODES

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        discriminator: nn.Module,
        prior: Prior | None = None,
        loss: ReconstructionLoss = "bce",
        optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_steps: int = 1,
        gradient_clip_val: float | None = None,
        adversarial: bool = True,
        posterior: Posterior = "deterministic",
    ) -> None:
        super().__init__(encoder, decoder, loss=loss, optimizer=optimizer)
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1, got {discriminator_steps}")
        if posterior not in ("deterministic", "gaussian"):
            raise ValueError(f"posterior must be 'deterministic' or 'gaussian', got {posterior!r}")
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.discriminator_optimizer = discriminator_optimizer
        self.generator_optimizer = generator_optimizer
        self.prior = prior if prior is not None else GaussianPrior(dim=2)
        if self.prior.supervised and getattr(discriminator, "num_classes", None) == 0:
            raise ValueError(
                f"{self.prior!r} is supervised: the discriminator must see the labels; "
                f"fix: set the discriminator's num_classes to {self.prior.num_components}"
            )
        self._val_codes: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # --- the model -------------------------------------------------------------------------
    def condition(self, batch) -> torch.Tensor | None:
        """The class labels when the prior is supervised (the discriminator sees them); else ``None``."""
        if not self.prior.supervised:
            return None
        labels = labels_of(batch)
        if labels is None:
            raise ValueError(f"{self.prior!r} is supervised: the batches must carry labels (image, label)")
        return labels

    def posterior_of(self, x: torch.Tensor) -> tuple[torch.Tensor, DiagonalGaussian | None]:
        """``(code, posterior)``: a reparameterised sample for a Gaussian encoder in training, its mean otherwise."""
        h = self.encoder(x)  # (B, code_dim) or (B, 2 * code_dim)
        if self.hparams.posterior == "deterministic":
            return h, None
        q = DiagonalGaussian.from_params(h)
        return (q.rsample() if self.training else q.mode), q

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior_of(x)[0]

    def decode(self, code: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(code)  # the condition (a supervised prior's labels) is the discriminator's only

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> AdversarialOutput:
        code, q = self.posterior_of(x)
        return AdversarialOutput(reconstruction=self.decode(code), code=code, input=x, condition=cond, posterior=q)

    def compute_losses(self, out: AutoencoderOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        recon = reconstruction_loss(out.reconstruction, target, self.hparams.loss)
        return {"loss": recon, "recon": recon}

    def discriminate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Discriminator logits ``(B, 1)`` for codes ``z``; a supervised prior also shows it the labels."""
        return self.discriminator(z, labels) if self.prior.supervised else self.discriminator(z)

    def sample_prior(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` prior codes (n, D) on the model's device, the discriminator's real samples; a supervised prior
        draws row ``i`` from component ``labels[i]`` and needs the labels (the batch's: training has them)."""
        if self.prior.supervised and labels is None:
            raise ValueError(f"{self.prior!r} is supervised: the batches must carry labels (image, label)")
        return self.prior.sample(n, labels=labels if self.prior.supervised else None, device=self.device)

    # --- generating: the Generative protocol (ae_lightning.models.generative) -----------------------------
    #: ``sample`` needs no condition: a supervised prior's labels are optional (without them, the whole mixture)
    needs_condition = False

    @torch.no_grad()
    def sample(
        self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` images (n, C, H, W) decoded from prior codes drawn with ``generator``. ``condition``: for a
        supervised prior, ``n`` class labels, row ``i`` drawn from component ``condition[i]`` (``None``: from the
        whole mixture); a conditional decoder (the CAAE's) also gets it."""
        labels = condition if self.prior.supervised else None
        return self.decode(self.prior.sample(n, labels=labels, generator=generator, device=self.device), condition)

    def example_conditions(self) -> torch.Tensor | None:
        """A supervised prior's components ``0 … K-1`` (one row each of a labelled sample grid); else ``None``."""
        return torch.arange(self.prior.num_components, device=self.device) if self.prior.supervised else None

    # --- using a trained model: ``ae-lightning predict`` writes decoded prior samples unless told otherwise
    default_prediction = "samples"

    @torch.no_grad()
    def generate(self, n: int) -> dict[str, torch.Tensor]:
        """``{"samples": (n, C, H, W)}`` decoded prior samples, or with a supervised prior one set per
        component, ``{"label_<k>": (n, C, H, W)}``."""
        if not self.prior.supervised:
            return {"samples": self.sample(n).clamp(0, 1)}
        return {f"label_{k}": self.sample(n, torch.full((n,), k, device=self.device)).clamp(0, 1)
                for k in range(self.prior.num_components)}

    # --- manual optimisation ---------------------------------------------------------------
    @contextmanager
    def _phase(self, optimizer):
        """Only ``optimizer``'s parameters require grad inside the block (no wasted or stray gradients)."""
        self.toggle_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def _update(self, optimizer, loss: torch.Tensor) -> None:
        self.manual_backward(loss)
        optimizer.step()  # clipping, if any, happens inside: on_before_optimizer_step

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip each phase's update. Lightning calls this inside ``optimizer.step()`` after the precision
        plugin has unscaled the gradients (``16-mixed``): clipping before ``step()`` would clip the scaled
        gradients, i.e. clip ~65,000 times harder than asked."""
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm="norm")

    def discriminator_phase(
        self, optimizer, x: torch.Tensor, labels: torch.Tensor | None, fake: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One discriminator update: prior samples are real, encoded codes (``fake``, or encoded ``x``) fake."""
        with self._phase(optimizer):
            if fake is None:
                with torch.no_grad():
                    fake = self.encode(x)  # (B, D): the encoder is not updated here
            fake = fake.detach()
            real = self.sample_prior(len(x), labels)  # (B, D)
            real_logits, fake_logits = self.discriminate(real, labels), self.discriminate(fake, labels)
            d_loss = adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False)
            self._update(optimizer, d_loss)
        return {
            "d_loss": d_loss.detach(),
            "d_acc_real": (real_logits.detach() > 0).float().mean(),
            "d_acc_fake": (fake_logits.detach() < 0).float().mean(),
        }

    def generator_phase(self, optimizer, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One encoder update that makes its codes pass for prior samples."""
        with self._phase(optimizer):
            g_loss = adversarial_loss(self.discriminate(self.encode(x), labels), True)
            self._update(optimizer, g_loss)
        return {"g_loss": g_loss.detach()}

    def training_step(self, batch, batch_idx: int) -> None:
        opt_ae, opt_d, opt_g, *_ = self.optimizers()  # a subclass may add phases (the semi-supervised AAE)
        # phase 1: reconstruction (shared_step logs train/loss and train/recon)
        with self._phase(opt_ae):
            out = self.shared_step(batch, "train")
            self._update(opt_ae, out.loss)
        if not self.hparams.adversarial:
            return
        # phase 2: regularisation
        x, labels = images_of(batch), out.condition
        for _ in range(self.hparams.discriminator_steps):
            logs = self.discriminator_phase(opt_d, x, labels)
        logs |= self.generator_phase(opt_g, x, labels)
        self.log_terms("train", logs, len(x))

    def configure_optimizers(self):
        return [
            self.optimizer([*self.encoder.parameters(), *self.decoder.parameters()]),
            self.discriminator_optimizer(self.discriminator.parameters()),
            self.generator_optimizer(self.encoder.parameters()),
        ]

    # --- evaluation: how close are the codes to the prior? ----------------------------------
    def validation_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        out = self.shared_step(batch, "val")
        self._val_codes.append(out.code.detach().float())  # on the device: gathered across processes at epoch end
        labels = labels_of(batch)
        if isinstance(labels, torch.Tensor):  # class labels (a supervised prior needs them)
            self._val_labels.append(labels.detach())
        return out

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_codes, self._val_labels = [], []

    def on_validation_epoch_end(self) -> None:
        """Log ``val/prior_mmd`` and ``val/prior_ks`` (see :func:`~ae_lightning.priors.prior_match`) over the first
        :attr:`val_prior_match_codes` of the validation codes gathered from every process. The grids of decoded prior
        samples are :class:`~ae_lightning.callbacks.GenerationGrids`' (the configs list it)."""
        super().on_validation_epoch_end()
        if not self._val_codes:
            return
        codes = self.all_processes(torch.cat(self._val_codes)).cpu()  # (N, D)
        labels = None
        if len(self._val_labels) == len(self._val_codes):
            labels = self.all_processes(torch.cat(self._val_labels)).cpu()  # (N,)
        if self.prior.supervised and labels is None:
            return
        limit = {} if self.val_prior_match_codes is None else {"max_samples": self.val_prior_match_codes}
        stats = prior_match(codes, self.prior, labels=labels, **limit)
        # the same numbers on every process (computed from all codes): nothing to synchronise
        self.log_dict({f"val/prior_{k}": float(v) for k, v in stats.items()})
