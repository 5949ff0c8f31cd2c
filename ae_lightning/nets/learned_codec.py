"""CompressAI's learned image codecs (Ballé et al.) for the suite's images: any number of channels.

CompressAI's models are built for RGB (their first and last convolutions have 3 channels); these subclasses
replace those two layers with ones of ``image_shape[0]`` channels and are otherwise CompressAI's own nets,
entropy models and ``compress`` / ``decompress`` (its rANS coder), so a trained model codes real bytes::

    codec = FactorizedPrior(image_shape=(1, 64, 64), N=64, M=96)   # Ballé et al. (2017/2018), factorised prior
    codec = ScaleHyperprior(image_shape=(1, 64, 64), N=64, M=96)   # Ballé et al. (2018), scale hyperprior

They are trained by :class:`ae_lightning.models.RateDistortionAutoencoder` and coded to bytes by
:mod:`ae_lightning.learned_codec`. ``compressai`` is the optional ``codec`` extra (see the README): this module is
imported only by configs that name these classes, never by ``ae_lightning.nets``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn

with warnings.catch_warnings():  # torch_geometric (a dependency of compressai's point-cloud part) warns on import
    warnings.simplefilter("ignore", FutureWarning)
    import compressai.models
    from compressai.models.utils import conv, deconv

from ae_lightning.nets.common import check_image_shape


def _adapt(codec: nn.Module, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Give ``codec`` (a CompressAI model with ``g_a`` / ``g_s`` stacks) ``image_shape[0]`` image channels; check
    that ``H`` and ``W`` are multiples of its down-sampling factor (its latents must tile the image)."""
    shape = check_image_shape(image_shape)
    c, h, w = shape
    factor = codec.downsampling_factor
    if h % factor or w % factor:
        raise ValueError(
            f"{type(codec).__name__}: image shape {c}x{h}x{w} does not fit; rule: H and W must be multiples of its "
            f"down-sampling factor {factor} (change the data's image_size; ae_lightning.learned_codec pads other sizes)"
        )
    first, last = codec.g_a[0], codec.g_s[-1]
    codec.g_a[0] = conv(c, first.out_channels, kernel_size=first.kernel_size[0], stride=first.stride[0])
    codec.g_s[-1] = deconv(last.in_channels, c, kernel_size=last.kernel_size[0], stride=last.stride[0])
    # the suite's net protocol (ae_lightning.models.Autoencoder reads it from its encoder and decoder): the shape
    # checked against the data's, and the multiple any H, W must have for whole-image inference
    for net in (codec.g_a, codec.g_s):
        net.image_shape, net.size_multiple = shape, factor
    return shape


class FactorizedPrior(compressai.models.FactorizedPrior):
    """Ballé et al.'s factorised-prior codec (CompressAI ``bmshj2018-factorized``) for ``image_shape`` images.

    Four stride-2 5×5 convolutions with GDN to ``M`` latent channels at 1/16 resolution, each channel with its
    own learned non-parametric density (``EntropyBottleneck``); the mirror with inverse GDN back.

    Args:
        image_shape: ``(C, H, W)``; ``H`` and ``W`` multiples of 16.
        N: channels of the hidden layers.
        M: latent channels.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 64, 64), N: int = 64, M: int = 96) -> None:
        super().__init__(N=N, M=M)
        self.image_shape = _adapt(self, image_shape)


class ScaleHyperprior(compressai.models.ScaleHyperprior):
    """Ballé et al. (2018)'s scale-hyperprior codec (CompressAI ``bmshj2018-hyperprior``) for ``image_shape`` images:
    the factorised prior's transforms, with each latent coded under a Gaussian whose scale a hyper-latent ``z``
    (two more stride-2 stages, factorised prior) predicts.

    Args:
        image_shape: ``(C, H, W)``; ``H`` and ``W`` multiples of 64.
        N: channels of the hidden layers and of ``z``.
        M: latent channels.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 64, 64), N: int = 64, M: int = 96) -> None:
        super().__init__(N=N, M=M)
        self.image_shape = _adapt(self, image_shape)
