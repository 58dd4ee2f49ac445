"""The paper's convolutional blocks as Flax NNX modules (Li et al. 2021, Sec. 3; SPEC §1): ResBlock,
DeformConv, PVB and DR. LGCR and the other global-context modules are in `global_context`. NHWC throughout.

Every convolution pads explicitly (as PyTorch's ``padding=`` does) so that weights and results can be
compared one to one with a PyTorch port: a 3×3 conv pads 1 (dilation d pads d), the stride-2 down-sampling
conv pads 1 on both sides (XLA's "SAME" would pad 0 and 1), and the 4×4 stride-2 transposed conv pads as
PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax.ops import deform_conv2d
from simplenet_jax.ops.deform_conv import DEFAULT_TILE_BYTES


def conv3x3(in_features: int, out_features: int, *, rngs: nnx.Rngs, stride: int = 1,
            dilation: int = 1) -> nnx.Conv:
  """3×3 convolution with bias, padded to keep the size (or halve it at stride 2)."""
  return nnx.Conv(in_features, out_features, (3, 3), strides=stride, padding=((dilation, dilation),) * 2,
                  kernel_dilation=dilation, rngs=rngs)


def up_conv4x4(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.ConvTranspose:
  """4×4 stride-2 transposed convolution that doubles the size (PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``,
  whose kernel is this one flipped in space)."""
  return nnx.ConvTranspose(in_features, out_features, (4, 4), strides=2, padding=((2, 2), (2, 2)), rngs=rngs)


class ResBlock(nnx.Module):
  """Vanilla three-conv ResBlock (He et al. 2016; Fig. 2): conv-ReLU-conv-ReLU-conv + identity, no norm."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv1 = conv3x3(channels, channels, rngs=rngs)
    self.conv2 = conv3x3(channels, channels, rngs=rngs)
    self.conv3 = conv3x3(channels, channels, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.conv1(x))
    y = jax.nn.relu(self.conv2(y))
    return x + self.conv3(y)


class DeformConv(nnx.Module):
  """3×3 modulated deformable convolution (DCNv2, Zhu et al. 2019) with bias.

  The offsets (2·G·9 channels, torchvision layout) and the mask (G·9 channels, sigmoid) are predicted by
  3×3 convolutions of the layer's own input. Both are zero-initialised, so an untrained DeformConv is a
  plain 3×3 conv whose every tap is weighted by sigmoid(0) = 0.5. ``tile_bytes`` bounds the im2col of
  `ops.deform_conv2d` (an execution choice: it changes memory and speed, never the parameters or results).
  ``max_offset`` > 0 clips the offsets to ± that many pixels (0: unbounded); ``sampling`` ("gather" or
  "matmul", the TPU's path) is, like ``tile_bytes``, an execution choice.
  """

  def __init__(self, in_features: int, out_features: int, *, groups: int = 1,
               tile_bytes: int = DEFAULT_TILE_BYTES, max_offset: float = 0.0, sampling: str = "gather",
               rngs: nnx.Rngs):
    taps = 9
    self.tile_bytes = tile_bytes
    self.max_offset = max_offset
    self.sampling = sampling
    zeros = nnx.initializers.zeros_init()
    self.offset_conv = nnx.Conv(in_features, 2 * groups * taps, (3, 3), padding=((1, 1),) * 2,
                                kernel_init=zeros, rngs=rngs)
    self.mask_conv = nnx.Conv(in_features, groups * taps, (3, 3), padding=((1, 1),) * 2,
                              kernel_init=zeros, rngs=rngs)
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (3, 3, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    offset = self.offset_conv(x)
    mask = jax.nn.sigmoid(self.mask_conv(x))
    out = deform_conv2d(x, offset, mask, self.kernel[...], padding=1, tile_bytes=self.tile_bytes,
                        max_offset=self.max_offset or None, sampling=self.sampling)
    return out + self.bias[...]


class PVB(nnx.Module):
  """Perceptual Variousness Block (Li et al. 2021, Sec. 3.2, eqs. 6–8).

  Four branches see the input at receptive fields 3, 5, 7 (dilation 1, 2, 3) and an adaptive one
  (DeformConv); a DeformConv fuses their concatenation into a residual.
  """

  def __init__(self, channels: int, *, deform_groups: int = 1, tile_bytes: int = DEFAULT_TILE_BYTES,
               max_offset: float = 0.0, sampling: str = "gather", rngs: nnx.Rngs):
    self.dilated1 = conv3x3(channels, channels, dilation=1, rngs=rngs)
    self.dilated2 = conv3x3(channels, channels, dilation=2, rngs=rngs)
    self.dilated3 = conv3x3(channels, channels, dilation=3, rngs=rngs)
    self.deform = DeformConv(channels, channels, groups=deform_groups, tile_bytes=tile_bytes, max_offset=max_offset,
                             sampling=sampling, rngs=rngs)
    self.fuse = DeformConv(4 * channels, channels, groups=deform_groups, tile_bytes=tile_bytes, max_offset=max_offset,
                             sampling=sampling, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    # eq. 6: Feat_c = Concat(ReLU(Conv_d1), ReLU(Conv_d2), ReLU(Conv_d3), DeformConv) — the "+" read as ","
    feat_c = jnp.concatenate([
        jax.nn.relu(self.dilated1(x)),
        jax.nn.relu(self.dilated2(x)),
        jax.nn.relu(self.dilated3(x)),
        self.deform(x),
    ], axis=-1)
    # eq. 7: Feat_fused = DeformConv(Feat_c, W_f); eq. 8: Out = I + Feat_fused
    return x + self.fuse(feat_c)


class DeformableResBlock(nnx.Module):
  """Deformable ResBlock, DR (Li et al. 2021, Sec. 3.3, eq. 9): Conv2D(ReLU(DeformConv(I))) + I."""

  def __init__(self, channels: int, *, deform_groups: int = 1, tile_bytes: int = DEFAULT_TILE_BYTES,
               max_offset: float = 0.0, sampling: str = "gather", rngs: nnx.Rngs):
    self.deform = DeformConv(channels, channels, groups=deform_groups, tile_bytes=tile_bytes, max_offset=max_offset,
                             sampling=sampling, rngs=rngs)
    self.conv = conv3x3(channels, channels, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x + self.conv(jax.nn.relu(self.deform(x)))
