"""Mixed precision on the paths a GPU run takes, checked on the CPU.

- gradient clipping in the manual-optimisation models acts on *unscaled* gradients under ``16-mixed``
  (the GradScaler unscales only inside ``optimizer.step()``): a CPU GradScaler is put into Lightning's
  precision plugin, so the scaled path runs here exactly as on a GPU;
- the importance-weighted log-likelihood is computed in float32 even inside a bf16 autocast region.
"""

from __future__ import annotations

import logging
from functools import partial

import lightning as L
import pytest
import torch

from ae_lightning.distributions import BernoulliLikelihood
from ae_lightning.models import VAE, AdversarialAutoencoder
from ae_lightning.nets import MLPDecoder, MLPDiscriminator, MLPEncoder
from ae_lightning.priors import GaussianPrior

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class ScaledGradients(L.Callback):
    """Gives the mixed-precision plugin a GradScaler with a large scale, as ``16-mixed`` has on a CUDA device
    (the CPU has no fp16 autocast, so the run uses bf16 autocast plus this scaler: the scaled path)."""

    def setup(self, trainer, pl_module, stage):
        trainer.precision_plugin.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10**6)


def _fit_aae(tiny_mnist, clip: float | None) -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    adam = partial(torch.optim.SGD, lr=0.05)  # SGD: the update is proportional to the gradient, no normalisation
    model = AdversarialAutoencoder(
        MLPEncoder(SHAPE, [32, 2], activation="relu", code_activation=None), MLPDecoder(SHAPE, [32, 2], activation="relu"),
        MLPDiscriminator(2, [16]), GaussianPrior(2), optimizer=adam, discriminator_optimizer=adam,
        generator_optimizer=adam, gradient_clip_val=clip)
    L.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1, limit_train_batches=3, limit_val_batches=0,
              logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[ScaledGradients()]).fit(model, tiny_mnist)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_clipping_under_16_mixed_acts_on_unscaled_gradients(tiny_mnist):
    """A clip value far above the true gradient norms must change nothing; clipping the scaled gradients
    (4096 × larger) would shrink every update."""
    free, clipped = _fit_aae(tiny_mnist, None), _fit_aae(tiny_mnist, 50.0)
    moved = [k for k in free if not torch.allclose(free[k], clipped[k], rtol=1e-4, atol=1e-6)]
    assert not moved, f"clip 50 changed {moved[:3]}: it clipped the scaled gradients"
    tight = _fit_aae(tiny_mnist, 1e-4)  # and a tight clip does act
    assert any(not torch.allclose(free[k], tight[k]) for k in free)


def test_iwae_log_likelihood_is_float32_inside_bf16_autocast():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(SHAPE, [64, 16], activation="tanh", code_activation=None),
              MLPDecoder(SHAPE, [64, 8], activation="tanh", output_activation=None), latent_dim=8,
              likelihood=BernoulliLikelihood()).eval()
    x = (torch.rand(16, *SHAPE) > 0.7).float()
    exact = vae.log_likelihood(x, num_samples=64, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vae.log_likelihood(x, num_samples=64, generator=torch.Generator().manual_seed(1))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, rtol=0, atol=1e-4)  # bf16 logits were 0.018 nats off here
