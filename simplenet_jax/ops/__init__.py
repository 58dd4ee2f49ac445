"""Pure maths of the paper: no parameters, no Flax; jit- and vmap-able."""

from simplenet_jax.ops.deform_conv import deform_conv2d

__all__ = ["deform_conv2d"]
