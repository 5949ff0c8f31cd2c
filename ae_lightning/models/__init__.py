"""LightningModules: optimisation logic only; nets are injected."""

from ae_lightning.models.base import Autoencoder, AutoencoderOutput, DenoisingAutoencoder
from ae_lightning.models.vae import VAE, ConditionalVAE, VAEOutput, kl_warmup_weight

__all__ = [
    "Autoencoder",
    "AutoencoderOutput",
    "ConditionalVAE",
    "DenoisingAutoencoder",
    "VAE",
    "VAEOutput",
    "kl_warmup_weight",
]
