"""AttnGAN networks: DAMSM encoders (damsm.py) and the attentional G / per-stage D (attngan.py)."""

from attngan.networks.attngan import (
    GLU,
    Block3x3,
    CondAugment,
    Discriminator,
    DiscriminatorHead,
    DownBlock,
    Generator,
    ImageHead,
    InitStage,
    NextStage,
    ResBlock,
    UpBlock,
    WordAttention,
    build_discriminators,
    build_generator,
    init_weights,
)
from attngan.networks.damsm import (
    ImageEncoder,
    InceptionTrunk,
    ShapeError,
    SmallTrunk,
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    check_shape,
)

__all__ = [
    "GLU", "Block3x3", "CondAugment", "Discriminator", "DiscriminatorHead", "DownBlock", "Generator",
    "ImageHead", "InitStage", "NextStage", "ResBlock", "UpBlock", "WordAttention",
    "build_discriminators", "build_generator", "init_weights",
    "ImageEncoder", "InceptionTrunk", "ShapeError", "SmallTrunk", "TextEncoder",
    "build_image_encoder", "build_text_encoder", "check_shape",
]
