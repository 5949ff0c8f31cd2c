"""Plain ``nn.Module`` building blocks (no Lightning here).

Every encoder maps an image batch ``(B, C, H, W)`` to a code; every decoder maps a code back to
``(B, C, H, W)``. Sizes derive from ``image_shape``; a shape a net cannot take fails at
construction with a message naming the shape and the rule.
"""

from ae_lightning.nets.adversarial import (
    CAAEEncoder,
    CAAEGenerator,
    ImageDiscriminator,
    MLPDiscriminator,
)
from ae_lightning.nets.conditional import ConditionalDecoder, ConditionalEncoder, as_condition
from ae_lightning.nets.conv import ConvDecoder, ConvEncoder
from ae_lightning.nets.mlp import MLP, MLPDecoder, MLPEncoder
from ae_lightning.nets.unet import UNetDecoder, UNetEncoder

__all__ = [
    "CAAEEncoder", "CAAEGenerator", "ImageDiscriminator", "MLPDiscriminator",
    "ConditionalDecoder", "ConditionalEncoder", "as_condition",
    "ConvDecoder", "ConvEncoder", "MLP", "MLPDecoder", "MLPEncoder", "UNetDecoder", "UNetEncoder",
]
