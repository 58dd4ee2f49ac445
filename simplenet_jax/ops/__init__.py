"""Pure maths of the paper: no parameters, no Flax; jit- and vmap-able."""

from simplenet_jax.ops.deform_conv import deform_conv2d
from simplenet_jax.ops.deform_conv_reference import deform_conv2d_reference

__all__ = ["deform_conv2d", "deform_conv2d_reference"]
