"""LightningModules: optimisation logic only; nets are injected."""

from ae_lightning.models.base import Autoencoder, AutoencoderOutput, DenoisingAutoencoder

__all__ = ["Autoencoder", "AutoencoderOutput", "DenoisingAutoencoder"]
