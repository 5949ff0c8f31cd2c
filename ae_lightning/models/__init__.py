"""LightningModules: optimisation logic only; nets are injected."""

from ae_lightning.models.adversarial import AdversarialAutoencoder, AdversarialOutput
from ae_lightning.models.base import Autoencoder, AutoencoderOutput, DenoisingAutoencoder
from ae_lightning.models.caae import CAAEOutput, ConditionalAdversarialAutoencoder
from ae_lightning.models.generative import Generative
from ae_lightning.models.multimodal import MultimodalAutoencoder, MultimodalOutput, PoseRegressor
from ae_lightning.models.rate_distortion import RateDistortionAutoencoder, RateDistortionOutput
from ae_lightning.models.semisupervised import M2, M2Output, SemiSupervisedAAE
from ae_lightning.models.sparse import KLSparsity, L1Sparsity, SparseAutoencoder, SparsityPenalty
from ae_lightning.models.stacked import StackedAutoencoder, StackedOutput
from ae_lightning.models.vae import VAE, ConditionalVAE, VAEOutput, kl_warmup_weight

__all__ = [
    "AdversarialAutoencoder",
    "AdversarialOutput",
    "CAAEOutput",
    "ConditionalAdversarialAutoencoder",
    "Autoencoder",
    "AutoencoderOutput",
    "ConditionalVAE",
    "DenoisingAutoencoder",
    "Generative",
    "KLSparsity",
    "L1Sparsity",
    "M2",
    "M2Output",
    "MultimodalAutoencoder",
    "MultimodalOutput",
    "PoseRegressor",
    "RateDistortionAutoencoder",
    "RateDistortionOutput",
    "SemiSupervisedAAE",
    "SparseAutoencoder",
    "SparsityPenalty",
    "StackedAutoencoder",
    "StackedOutput",
    "VAE",
    "VAEOutput",
    "kl_warmup_weight",
]
