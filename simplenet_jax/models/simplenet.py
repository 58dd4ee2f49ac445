"""SimpleNet (Li et al. 2021, Sec. 3.4, Fig. 2 as reconstructed in SPEC §1): a three-scale encoder-decoder.

    head conv ─ encoder1 ─ down1 ─ encoder2 ─ down2 ─ encoder3 ─ LGCR ─ decoder3 ─ up2 ─(+)─ decoder2 ─ up1 ─(+)─ decoder1 ─ tail conv ─(+ input)
                  │                   └──────────────── skip ────────────────────────┘              │
                  └────────────────────────────────────── skip ──────────────────────────────────────┘

An encoder stage is ResBlock → PVB; a decoder stage is ResBlock → PVB → DR. The Table 3 ablations
(``use_pvb``, ``use_dr`` false, ``global_context="resblock"``) replace the block by a vanilla ResBlock, as
the paper says. Every field and its default is `ModelConfig` (`models/config.py`); ``residual_gate`` (the
demo's, not the paper's) adds a per-image decision whether to apply the residual at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax.models.blocks import PVB
from simplenet_jax.models.blocks import DeformableResBlock
from simplenet_jax.models.blocks import ResBlock
from simplenet_jax.models.blocks import conv3x3
from simplenet_jax.models.blocks import up_conv4x4
from simplenet_jax.models.config import ModelConfig
from simplenet_jax.models.global_context import global_context_block

SIZE_MULTIPLE = 4  # two stride-2 down-samplings must round-trip through the two ×2 up-samplings
GATE_EPSILON = 1e-6  # added to the gate's mean energies: a channel that is zero over a flat image has log 1e-6


def is_blurred(gate: jax.Array) -> jax.Array:
  """The gate's decision from its logit: change the image (its whole residual) or leave it exactly as it is.

  Not a sigmoid's share of the residual: a share of 0.1 on an already sharp photo still moves its edges by a
  level or two, which costs a clean 49 dB photo most of a decibel; the training loss fits the residual, ungated,
  to blurred pairs only (`train.gated_loss`), so it is meant to be applied whole.
  """
  return gate > 0


class Stage(nnx.Module):
  """One scale of Fig. 2: ResBlock → PVB (encoder), or ResBlock → PVB → DR (decoder)."""

  def __init__(self, channels: int, *, decoder: bool, deform_groups: int, use_pvb: bool, use_dr: bool,
               tile_bytes: int, max_offset: float, sampling: str, rngs: nnx.Rngs):
    deform = dict(deform_groups=deform_groups, tile_bytes=tile_bytes, max_offset=max_offset, sampling=sampling,
                  rngs=rngs)
    self.resblock = ResBlock(channels, rngs=rngs)
    # An ablated block is a vanilla ResBlock in the same place (Table 3).
    self.pvb = PVB(channels, **deform) if use_pvb else ResBlock(channels, rngs=rngs)
    if not decoder:
      self.dr = None
    elif use_dr:
      self.dr = DeformableResBlock(channels, **deform)
    else:
      self.dr = ResBlock(channels, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.pvb(self.resblock(x))
    return self.dr(x) if self.dr is not None else x


class SimpleNet(nnx.Module):
  """SimpleNet: RGB [N, H, W, 3] in [0, 1] → deblurred RGB, ``input + net(input)`` (global residual).

  H and W must be multiples of 4 (eval and inference pad to that and crop back). `config` (`ModelConfig`)
  says what the network is; its ``dcn_tile_bytes``, ``dcn_sampling`` and ``remat`` change memory and speed, never the
  parameters or the outputs.
  """

  def __init__(self, config: ModelConfig = ModelConfig(), *, rngs: nnx.Rngs):
    c1, c2, c3 = config.widths
    self.remat = config.remat
    stage = dict(deform_groups=config.deform_groups, use_pvb=config.use_pvb, use_dr=config.use_dr,
                 tile_bytes=config.dcn_tile_bytes, max_offset=config.dcn_max_offset,
                 sampling=config.dcn_sampling, rngs=rngs)
    self.head = conv3x3(3, c1, rngs=rngs)
    self.encoder1 = Stage(c1, decoder=False, **stage)
    self.down1 = conv3x3(c1, c2, stride=2, rngs=rngs)
    self.encoder2 = Stage(c2, decoder=False, **stage)
    self.down2 = conv3x3(c2, c3, stride=2, rngs=rngs)
    self.encoder3 = Stage(c3, decoder=False, **stage)
    self.lgcr = global_context_block(config.global_context, c3, rank=config.lgcr_rank,
                                     softmax_axes=config.lgcr_softmax_axes,
                                     lgcr_initial_slope=config.lgcr_initial_slope,
                                     lgcr_kernel_3d_std=config.lgcr_kernel_3d_std, rngs=rngs)
    self.decoder3 = Stage(c3, decoder=True, **stage)
    self.up2 = up_conv4x4(c3, c2, rngs=rngs)
    self.decoder2 = Stage(c2, decoder=True, **stage)
    self.up1 = up_conv4x4(c2, c1, rngs=rngs)
    self.decoder1 = Stage(c1, decoder=True, **stage)
    self.tail = conv3x3(c1, 3, rngs=rngs)
    if config.zero_init_tail:
      # The untrained network is then exactly the identity (output = input), so training starts from the
      # blurred input's PSNR instead of first unlearning random noise; gradients still reach every layer
      # after the first step.
      self.tail.kernel[...] = jnp.zeros_like(self.tail.kernel[...])
    # Not the paper's: whether to change the image at all, decided once from its whole content (`gate_logit`,
    # `is_blurred`).
    self.gate = (nnx.Linear(c1 + c2 + c3, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)
                 if config.residual_gate else None)

  def __call__(self, image: jax.Array, *, compute_dtype: Any = None) -> jax.Array:
    """`compute_dtype` (e.g. bfloat16, with the weights cast to it by the caller) is the dtype of the
    features; the image and the global residual add stay in the image's dtype, so that bf16 rounds the
    predicted residual, not the input and the output (bf16 spacing is 1/256 near 1, an 8-bit level)."""
    if self.gate is None:
      features, skips = self._encode_image(image, compute_dtype)
      return image + self.decode(self.lgcr(features), skips).astype(image.dtype)
    residual, gate = self.residual_and_gate(image, compute_dtype=compute_dtype)
    residual = residual * is_blurred(gate).astype(residual.dtype)[:, None, None, :]
    return image + residual.astype(image.dtype)

  def residual_and_gate(self, image: jax.Array, *, compute_dtype: Any = None) -> tuple[jax.Array, jax.Array | None]:
    """The residual before the gate, and the gate's logit per image ([N, 1]; None without `residual_gate`)."""
    features, skips = self._encode_image(image, compute_dtype)
    residual = self.decode(self.lgcr(features), skips)
    return residual, None if self.gate is None else self.gate_logit(features, skips)

  def gate_logit_of(self, image: jax.Array, *, compute_dtype: Any = None) -> jax.Array:
    """The gate's logit alone ([N, 1]): the encoder and the gate, not the decoder."""
    return self.gate_logit(*self._encode_image(image, compute_dtype))

  def _encode_image(self, image: jax.Array, compute_dtype: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    check_input(image)
    return self.encode(image if compute_dtype is None else image.astype(compute_dtype))

  def gate_logit(self, features: jax.Array, skips: tuple[jax.Array, jax.Array]) -> jax.Array:
    """[N, 1]: a linear function of the log of each encoder channel's mean energy over the image, at all
    three scales. In logs, a ratio of fine to coarse energies (how sharp) is linear, and a photo's contrast,
    which scales them all alike, largely cancels."""
    energies = [jnp.log(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(1, 2)) + GATE_EPSILON)
                for x in (*skips, features)]
    return self.gate(jnp.concatenate(energies, axis=-1).astype(features.dtype))

  def encode(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The encoder: the 1/4-scale features that enter the global-context block, and the two skips."""
    relu = jax.nn.relu
    skip1 = self._stage(self.encoder1, relu(self.head(x)))
    skip2 = self._stage(self.encoder2, relu(self.down1(skip1)))
    return self._stage(self.encoder3, relu(self.down2(skip2))), (skip1, skip2)

  def decode(self, x: jax.Array, skips: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The decoder from the global-context block's output: the predicted residual (before the add)."""
    relu = jax.nn.relu
    skip1, skip2 = skips
    x = self._stage(self.decoder3, x)
    x = self._stage(self.decoder2, relu(self.up2(x)) + skip2)
    x = self._stage(self.decoder1, relu(self.up1(x)) + skip1)
    return self.tail(x)

  def _stage(self, stage: Stage, x: jax.Array) -> jax.Array:
    if self.remat:  # keep only the stage's input for the backward pass; recompute the rest there
      return nnx.remat(lambda module, features: module(features))(stage, x)
    return stage(x)

  @classmethod
  def from_config(cls, model_config: Mapping[str, Any], *, rngs: nnx.Rngs) -> "SimpleNet":
    """Builds the network from `config.model` (checked by `ModelConfig.from_mapping`)."""
    return cls(ModelConfig.from_mapping(model_config), rngs=rngs)


def check_input(image: jax.Array) -> None:
  """One clear sentence for an input the bare network cannot take (shapes are static, so this is jit-safe)."""
  if image.ndim != 4 or image.shape[-1] != 3:
    raise ValueError(f"SimpleNet takes RGB batches [N, H, W, 3], got shape {tuple(image.shape)}; "
                     "add a batch axis with image[None] or convert gray/RGBA images to RGB.")
  height, width = image.shape[1:3]
  if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
    raise ValueError(f"SimpleNet needs H and W divisible by {SIZE_MULTIPLE}, got {height}×{width}; pad the "
                     "image (simplenet_jax evaluation and inference pad by reflection and crop back).")
