"""Flax NNX modules of SimpleNet (Fig. 2) and its blocks."""

from simplenet_jax.models.blocks import PVB
from simplenet_jax.models.blocks import DeformableResBlock
from simplenet_jax.models.blocks import DeformConv
from simplenet_jax.models.blocks import ResBlock
from simplenet_jax.models.config import ModelConfig
from simplenet_jax.models.global_context import LGCR
from simplenet_jax.models.simplenet import SimpleNet

__all__ = ["LGCR", "PVB", "DeformConv", "DeformableResBlock", "ModelConfig", "ResBlock", "SimpleNet"]
