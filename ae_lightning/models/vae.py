"""Variational autoencoder (Kingma & Welling 2014) and its conditional variant (Sohn et al. 2015).

The encoder outputs ``2 * latent_dim`` numbers, the means and log-variances of a diagonal
Gaussian posterior ``q(z | x)`` (:class:`~ae_lightning.distributions.DiagonalGaussian`); a code is
sampled with the reparameterisation trick and decoded into the parameters of the likelihood
``p(x | z)`` (Bernoulli logits or Gaussian means, an injected
:class:`~ae_lightning.distributions.Likelihood`). Training maximises the ELBO

    ELBO(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ N(0, I))

with a β weight on the KL term, a linear warm-up of that weight and optional free bits.
Logged per image, in nats: ``{stage}/recon`` (−E_q log p(x|z), one sample), ``{stage}/kl``,
``{stage}/elbo``; ``{stage}/loss`` is the weighted objective; ``val/active_units`` counts the
latent units in use (Burda et al. 2016); the test stage adds the importance-weighted estimate
``test/nll_k{K}`` of ``−log p(x)`` (Burda et al. 2016, Eq. 8).

Example (Burda et al.'s one-stochastic-layer MNIST VAE, 784-200-200-50, tanh, Bernoulli)::

    vae = VAE(MLPEncoder((1, 28, 28), [200, 200, 100], activation="tanh", code_activation=None),
              MLPDecoder((1, 28, 28), [200, 200, 50], activation="tanh", output_activation=None),
              latent_dim=50)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ae_lightning.batch import images_of, labels_of
from ae_lightning.distributions import BernoulliLikelihood, DiagonalGaussian, Likelihood
from ae_lightning.losses import free_bits_kl
from ae_lightning.models.base import Autoencoder, AutoencoderOutput
from ae_lightning.nets.conditional import as_condition
from ae_lightning.optim import LRSchedulerCallable, OptimizerCallable
from ae_lightning.priors import GaussianPrior

# elements of decoder output per chunk when estimating log p(x) with many samples (memory bound)
_IWAE_CHUNK_ELEMENTS = 2**24


@dataclass
class VAEOutput(AutoencoderOutput):
    """``code`` is the sampled ``z`` (B, D); ``posterior`` is ``q(z | x)``; ``params`` the decoder's raw
    output (logits or means, (B, C, H, W)); ``reconstruction`` the likelihood's mean image: when it is not given,
    ``mean_of(params)`` on its first read (a training step never reads it: no sigmoid of every pixel per step)."""

    posterior: DiagonalGaussian | None = None
    params: torch.Tensor | None = None
    mean_of: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property  # type: ignore[override]  # the dataclass field of AutoencoderOutput, computed when first read
    def reconstruction(self) -> torch.Tensor:
        if self._reconstruction is None and self.mean_of is not None:
            self._reconstruction = self.mean_of(self.params)  # (B, C, H, W)
        return self._reconstruction

    @reconstruction.setter
    def reconstruction(self, value: torch.Tensor | None) -> None:
        self._reconstruction = value


def _float32(method):
    """Run ``method(self, x, ...)`` with autocast off and ``x`` in float32: importance weights are differences
    and log-sum-exps of numbers in the hundreds of nats, which bf16 logits (8-bit mantissa) would blur."""

    @functools.wraps(method)
    def in_float32(self, x: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return method(self, x.float(), *args, **kwargs)

    return in_float32


def kl_warmup_weight(step: int, beta: float = 1.0, warmup_steps: int = 0) -> float:
    """β times a linear ramp from 0 at step 0 to 1 at ``warmup_steps`` (Bowman et al. 2016; Sønderby et al. 2016)."""
    if warmup_steps <= 0:
        return float(beta)
    return float(beta) * min(1.0, max(step, 0) / warmup_steps)


class VAE(Autoencoder):
    """Variational autoencoder; nets injected, any :class:`Likelihood`.

    Args:
        encoder: image → ``(B, 2 * latent_dim)`` (means, then log-variances); use no code activation.
        decoder: ``(B, latent_dim)`` → likelihood parameters ``(B, C, H, W)``: logits
            (``output_activation: null``) for :class:`BernoulliLikelihood`, means for
            :class:`GaussianLikelihood`.
        latent_dim: size of ``z``.
        likelihood: ``p(x | z)``; default Bernoulli.
        beta: weight of the KL term (β-VAE, Higgins et al. 2017; 1 is the true ELBO).
        warmup_steps: linear KL warm-up from 0 to ``beta`` over this many training steps.
        free_bits: minimum KL in nats per latent unit (batch-averaged) below which the KL term
            exerts no pressure (Kingma et al. 2016); 0 disables it.
        test_samples: ``K`` of the importance-weighted ``test/nll_k{K}`` (0 skips it).
        active_threshold: a unit is active when the variance over x of its posterior mean exceeds this.
        optimizer, lr_scheduler: as for :class:`~ae_lightning.models.Autoencoder`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: Likelihood | None = None,
        beta: float = 1.0,
        warmup_steps: int = 0,
        free_bits: float = 0.0,
        test_samples: int = 1000,
        active_threshold: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(encoder, decoder, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if beta < 0 or warmup_steps < 0 or free_bits < 0 or test_samples < 0:
            raise ValueError("beta, warmup_steps, free_bits and test_samples must be non-negative")
        enc_out, dec_in = getattr(encoder, "code_dim", None), getattr(decoder, "code_dim", None)
        if enc_out is not None and enc_out != 2 * latent_dim:
            raise ValueError(
                f"the encoder outputs {enc_out} numbers but a diagonal Gaussian over latent_dim={latent_dim} "
                f"needs 2 * latent_dim = {2 * latent_dim} (means and log-variances); fix the encoder's code size"
            )
        if dec_in is not None and dec_in != latent_dim:
            raise ValueError(f"the decoder takes codes of size {dec_in} but latent_dim={latent_dim}; fix the decoder")
        self.latent_dim = latent_dim
        #: ``p(z) = N(0, I)``, to draw codes from (a plain object: no parameters, no state_dict entries); the ELBO's
        #: KL term and the IWAE estimate use the closed-form :class:`DiagonalGaussian` standard normal
        self.prior = GaussianPrior(latent_dim)
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        self._reset_unit_stats()

    # --- conditioning (the conditional VAE overrides ``condition`` and these) ----------------------
    #: :class:`~ae_lightning.models.generative.Generative`: the unconditional VAE samples without a condition
    needs_condition = False

    def example_conditions(self) -> torch.Tensor | None:
        """One condition per row of a class-conditional sample grid; none for the unconditional VAE."""
        return None

    # --- the model -------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> DiagonalGaussian:
        """``q(z | x)`` for images ``x`` (B, C, H, W); float32 even under bf16 autocast, so that KL terms and
        importance weights (differences of numbers in the hundreds) keep their precision."""
        return DiagonalGaussian.from_params(self.run_net(self.encoder, x, cond).float())  # (B, D)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic code of ``x``: the posterior mean (B, D)."""
        return self.posterior(x, cond).mode

    def decoder_params(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters for codes ``z`` (B, D): logits or means (B, C, H, W)."""
        return self.run_net(self.decoder, z, cond)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's mean image for codes ``z`` (B, D) → (B, C, H, W)."""
        return self.likelihood.mean(self.decoder_params(z, cond))

    @torch.no_grad()
    def sample(
        self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` likelihood-mean images (n, C, H, W) decoded from prior codes ``z ~ N(0, I)`` drawn with
        ``generator`` (with ``condition``, ``n`` labels or label rows, for the CVAE)."""
        return self.decode(self.prior.sample(n, generator=generator, device=self.device), condition)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> VAEOutput:
        q = self.posterior(x, cond)
        # training: fresh noise; evaluation: the seeded generator, so val/test numbers are repeatable
        z = q.rsample(generator=None if self.training else self._eval_generator())  # (B, D)
        params = self.decoder_params(z, cond)  # (B, C, H, W)
        return VAEOutput(reconstruction=None, code=z, input=x, condition=cond, posterior=q, params=params,
                         mean_of=self.likelihood.mean)

    def kl_weight(self) -> float:
        return kl_warmup_weight(self.global_step, self.hparams.beta, self.hparams.warmup_steps)

    def compute_losses(self, out: VAEOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image terms in nats: ``recon`` = −log p(x|z), ``kl``, ``elbo``; ``loss`` = recon + w·KL (free bits)."""
        recon = -self.likelihood.log_prob(out.params, target).mean()
        kl_per_dim = out.posterior.kl_per_dim().float()  # (B, D)
        kl = kl_per_dim.sum(-1).mean()
        kl_term = free_bits_kl(kl_per_dim, self.hparams.free_bits) if self.hparams.free_bits > 0 else kl
        weight = self.kl_weight()
        with torch.no_grad():  # logged, never differentiated: no graph for them
            elbo = -(recon + kl)
            # on the module's device (NCCL syncs no CPU tensors), filled there: new_tensor would copy from the host
            kl_weight = torch.full_like(recon, weight)
        return {
            "loss": recon + kl_term if weight == 1 else recon + weight * kl_term,  # β = 1: the same, one op fewer
            "recon": recon,
            "kl": kl,
            "elbo": elbo,
            "kl_weight": kl_weight,
        }

    # --- evaluation: the shared step, plus active units and the importance-weighted NLL ------------
    def log_step(self, out: VAEOutput, x: torch.Tensor, stage: str) -> None:
        super().log_step(out, x, stage)
        if stage != "train":
            self._accumulate_unit_stats(out.posterior.mean.detach())

    def test_step(self, batch, batch_idx: int) -> VAEOutput:
        out = self.shared_step(batch, "test")
        k = self.hparams.test_samples
        if k > 0:
            x = images_of(batch)
            log_px = self.log_likelihood(x, out.condition, k, generator=self._eval_generator())  # (B,)
            self.log(f"test/nll_k{k}", -log_px.mean(), on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        return out

    # --- using a trained model: ``ae-lightning predict`` writes prior samples unless told otherwise ----
    default_prediction = "samples"

    def _reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic reconstructions for ``predict``: the decoded posterior mean."""
        return self.decode(self.encode(x, cond), cond)

    @torch.no_grad()
    def generate(self, n: int) -> dict[str, torch.Tensor]:
        """``{"samples": (n, C, H, W)}`` decoded prior samples, or for the conditional VAE one set per
        :meth:`example_conditions` row, ``{"label_<k>": (n, C, H, W)}``, the same codes for every label."""
        z = self.prior.sample(n, device=self.device)  # (n, D)
        conds = self.example_conditions()
        if conds is None:
            return {"samples": self.decode(z).clamp(0, 1)}
        return {f"label_{k}": self.decode(z, c.expand(n, -1)).clamp(0, 1) for k, c in enumerate(conds)}

    # --- marginal likelihood -----------------------------------------------------------------------
    @_float32
    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        num_samples: int = 1000,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-weighted estimate of ``log p(x)`` per image (B,), in nats (Burda et al. 2016):

            log p(x) ≈ log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x).

        ``K = 1`` is a one-sample ELBO estimate; the bound tightens (on average) as ``K`` grows.
        Samples are processed in chunks so that ``K = 5000`` fits in memory.
        """
        q = self.posterior(x, cond)  # (B, D)
        prior = DiagonalGaussian.standard_normal(*q.shape, device=x.device, dtype=q.mean.dtype)
        pixels = math.prod(x.shape[1:])
        chunk = max(1, _IWAE_CHUNK_ELEMENTS // (x.shape[0] * pixels))
        log_w = []
        for start in range(0, num_samples, chunk):
            s = min(chunk, num_samples - start)
            z = q.rsample(s, generator=generator)  # (s, B, D)
            c = None if cond is None else cond.expand(s, *cond.shape).flatten(0, 1)  # (s*B, ...)
            params = self.decoder_params(z.flatten(0, 1), c).view(s, *x.shape)  # (s, B, C, H, W)
            log_w.append(
                self.likelihood.log_prob(params, x) + prior.log_prob(z).float() - q.log_prob(z).float()
            )  # (s, B)
        log_w = torch.cat(log_w)  # (K, B)
        return torch.logsumexp(log_w, dim=0) - math.log(num_samples)

    # --- active units (Burda et al. 2016: Cov_x(E_q[z_u]) > 0.01) ------------------------------------
    def _reset_unit_stats(self) -> None:
        self._unit_n = 0
        self._unit_sum: torch.Tensor | None = None
        self._unit_sq: torch.Tensor | None = None

    def _accumulate_unit_stats(self, mean: torch.Tensor) -> None:
        means = mean.double()  # (B, D): float64, the variance is a difference of large sums
        self._unit_n += means.shape[0]
        self._unit_sum = means.sum(0) if self._unit_sum is None else self._unit_sum + means.sum(0)
        self._unit_sq = (means**2).sum(0) if self._unit_sq is None else self._unit_sq + (means**2).sum(0)

    def active_units(self) -> int | None:
        """Latent units whose posterior mean varies over the evaluated images by more than the threshold."""
        if self._unit_n < 2:
            return None
        mean = self._unit_sum / self._unit_n
        var = (self._unit_sq / self._unit_n - mean**2) * self._unit_n / (self._unit_n - 1)  # (D,)
        return int((var > self.hparams.active_threshold).sum())

    def _log_active_units(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.world_size > 1 and self._unit_sum is not None:
            # the variance over every process's images: sum the sums (a mean of per-process counts is not it)
            total = self.trainer.strategy.reduce(
                torch.cat([self._unit_sum, self._unit_sq, self._unit_sum.new_tensor([self._unit_n])]), reduce_op="sum")
            d = len(self._unit_sum)
            self._unit_sum, self._unit_sq, self._unit_n = total[:d], total[d: 2 * d], int(total[-1])
        active = self.active_units()
        if active is not None:
            self.log(f"{stage}/active_units", float(active))  # the same on every process
        self._reset_unit_stats()

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._reset_unit_stats()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_active_units("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._reset_unit_stats()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_active_units("test")


class ConditionalVAE(VAE):
    """Conditional VAE: the label (one-hot class or attribute vector) enters the encoder and the decoder.

    Both nets are the conditioning wrappers of :mod:`ae_lightning.nets.conditional`, which take
    ``(input, labels)``; labels are the second element of each batch. Sampling with a requested
    label generates that class: ``cvae.sample(8, condition=torch.full((8,), 3))`` draws eight 3s.

    Example::

        enc = ConditionalEncoder(MLPEncoder((1, 28, 28), [512, 256], activation="relu", code_activation="relu"),
                                 label_dim=10, code_dim=32)
        dec = ConditionalDecoder(MLPDecoder((1, 28, 28), [512, 26], activation="relu", output_activation=None),
                                 label_dim=10)
        cvae = ConditionalVAE(enc, dec, latent_dim=16)
    """

    needs_condition = True  # the decoder takes a label with every code

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, **kwargs) -> None:
        enc_labels, dec_labels = getattr(encoder, "label_dim", None), getattr(decoder, "label_dim", None)
        if enc_labels is None or dec_labels is None:
            raise ValueError(
                "ConditionalVAE needs label-conditioned nets; fix: wrap them in "
                "ae_lightning.nets.ConditionalEncoder / ConditionalDecoder"
            )
        if enc_labels != dec_labels:
            raise ValueError(f"encoder label_dim {enc_labels} != decoder label_dim {dec_labels}")
        super().__init__(encoder, decoder, latent_dim, **kwargs)
        self.label_dim = int(enc_labels)

    def condition(self, batch) -> torch.Tensor:
        labels = labels_of(batch)
        if labels is None:
            raise ValueError("ConditionalVAE needs (image, label) batches; the data module yields bare images")
        return as_condition(labels, self.label_dim, type(self).__name__, self.is_first_check("labels"))  # (B, L)

    def example_conditions(self) -> torch.Tensor:
        """One row per class (one-hot) or per attribute (that attribute on, the others off)."""
        return torch.eye(self.label_dim, device=self.device)  # (L, L)
