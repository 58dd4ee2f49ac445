"""SimpleNet (Li et al. 2021, Sec. 3.4, Fig. 2 as reconstructed in SPEC §1): a three-scale encoder-decoder.

    head conv ─ encoder1 ─ down1 ─ encoder2 ─ down2 ─ encoder3 ─ LGCR ─ decoder3 ─ up2 ─(+)─ decoder2 ─ up1 ─(+)─ decoder1 ─ tail conv ─(+ input)
                  │                   └──────────────── skip ────────────────────────┘              │
                  └────────────────────────────────────── skip ──────────────────────────────────────┘

An encoder stage is ResBlock → PVB; a decoder stage is ResBlock → PVB → DR. The Table 3 ablations
(``use_pvb``, ``use_lgcr``, ``use_dr`` false) replace the block by a vanilla ResBlock, as the paper says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax.models.blocks import PVB
from simplenet_jax.models.blocks import DeformableResBlock
from simplenet_jax.models.blocks import ResBlock
from simplenet_jax.models.blocks import conv3x3
from simplenet_jax.models.blocks import up_conv4x4
from simplenet_jax.models.global_context import GLOBAL_CONTEXT_OPTIONS
from simplenet_jax.models.global_context import LGCR_INITIAL_SLOPE
from simplenet_jax.models.global_context import LGCR_KERNEL_3D_STD
from simplenet_jax.models.global_context import global_context_block
from simplenet_jax.ops.deform_conv import DEFAULT_TILE_BYTES

# The fields of `config.model`, with their defaults (configs/default.py sets the same values).
MODEL_DEFAULTS: dict[str, Any] = dict(
    widths=(32, 64, 128),
    deform_groups=1,
    lgcr_rank=64,
    lgcr_softmax_axes="chw",
    lgcr_initial_slope=LGCR_INITIAL_SLOPE,
    lgcr_kernel_3d_std=LGCR_KERNEL_3D_STD,
    use_pvb=True,
    use_lgcr=True,
    use_dr=True,
    zero_init_tail=True,
    global_context="lgcr",
    dcn_tile_bytes=DEFAULT_TILE_BYTES,
    remat=False,
)
# Fields that change how the network is computed (memory, speed), never its parameters or its outputs: a
# checkpoint resumes or evaluates under any value of them.
EXECUTION_FIELDS = ("dcn_tile_bytes", "remat")
SIZE_MULTIPLE = 4  # two stride-2 down-samplings must round-trip through the two ×2 up-samplings


class Stage(nnx.Module):
  """One scale of Fig. 2: ResBlock → PVB (encoder), or ResBlock → PVB → DR (decoder)."""

  def __init__(self, channels: int, *, decoder: bool, deform_groups: int, use_pvb: bool, use_dr: bool,
               tile_bytes: int, rngs: nnx.Rngs):
    deform = dict(deform_groups=deform_groups, tile_bytes=tile_bytes, rngs=rngs)
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

  H and W must be multiples of 4 (eval and inference pad to that and crop back).

  Attributes:
    widths: channels at scale 1, 1/2 and 1/4 (default 32/64/128, SPEC §1).
    deform_groups: offset groups G of every DeformConv.
    lgcr_rank, lgcr_softmax_axes: LGCR's CP rank r (eq. 2) and softmax axes (eq. 3).
    lgcr_initial_slope, lgcr_kernel_3d_std: LGCR's initial PReLU slopes (eq. 1) and W_G's initial standard
      deviation (eq. 4); the paper gives neither.
    use_pvb, use_lgcr, use_dr: False replaces that block by a vanilla ResBlock (Table 3).
    zero_init_tail: start the tail conv at zero, so the untrained network is the identity.
    global_context: the module in LGCR's slot (Table 5/6): "lgcr", "nonlocal", "tgm_trm" or "none"
      (`models/global_context.py`).
    dcn_tile_bytes: im2col bytes per tile of every deformable conv (`ops.deform_conv2d`'s `tile_bytes`).
    remat: recompute each stage's activations in the backward pass instead of keeping them (`nnx.remat`).
    The last two change memory and speed, never the parameters or the outputs (`EXECUTION_FIELDS`).
  """

  def __init__(self, widths: Sequence[int] = (32, 64, 128), *, deform_groups: int = 1, lgcr_rank: int = 64,
               lgcr_softmax_axes: str = "chw", lgcr_initial_slope: float = LGCR_INITIAL_SLOPE,
               lgcr_kernel_3d_std: float = LGCR_KERNEL_3D_STD, use_pvb: bool = True, use_lgcr: bool = True,
               use_dr: bool = True, zero_init_tail: bool = True, global_context: str = "lgcr",
               dcn_tile_bytes: int = DEFAULT_TILE_BYTES, remat: bool = False, rngs: nnx.Rngs):
    c1, c2, c3 = widths
    self.remat = remat
    stage = dict(deform_groups=deform_groups, use_pvb=use_pvb, use_dr=use_dr, tile_bytes=dcn_tile_bytes,
                 rngs=rngs)
    self.head = conv3x3(3, c1, rngs=rngs)
    self.encoder1 = Stage(c1, decoder=False, **stage)
    self.down1 = conv3x3(c1, c2, stride=2, rngs=rngs)
    self.encoder2 = Stage(c2, decoder=False, **stage)
    self.down2 = conv3x3(c2, c3, stride=2, rngs=rngs)
    self.encoder3 = Stage(c3, decoder=False, **stage)
    self.lgcr = (global_context_block(global_context, c3, rank=lgcr_rank, softmax_axes=lgcr_softmax_axes,
                                      lgcr_initial_slope=lgcr_initial_slope,
                                      lgcr_kernel_3d_std=lgcr_kernel_3d_std, rngs=rngs)
                 if use_lgcr else ResBlock(c3, rngs=rngs))
    self.decoder3 = Stage(c3, decoder=True, **stage)
    self.up2 = up_conv4x4(c3, c2, rngs=rngs)
    self.decoder2 = Stage(c2, decoder=True, **stage)
    self.up1 = up_conv4x4(c2, c1, rngs=rngs)
    self.decoder1 = Stage(c1, decoder=True, **stage)
    self.tail = conv3x3(c1, 3, rngs=rngs)
    if zero_init_tail:
      # The untrained network is then exactly the identity (output = input), so training starts from the
      # blurred input's PSNR instead of first unlearning random noise; gradients still reach every layer
      # after the first step.
      self.tail.kernel[...] = jnp.zeros_like(self.tail.kernel[...])

  def __call__(self, image: jax.Array, *, compute_dtype: Any = None) -> jax.Array:
    """`compute_dtype` (e.g. bfloat16, with the weights cast to it by the caller) is the dtype of the
    features; the image and the global residual add stay in the image's dtype, so that bf16 rounds the
    predicted residual, not the input and the output (bf16 spacing is 1/256 near 1, an 8-bit level)."""
    check_input(image)
    features, skips = self.encode(image if compute_dtype is None else image.astype(compute_dtype))
    return image + self.decode(self.lgcr(features), skips).astype(image.dtype)

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
    """Builds the network from `config.model`, after `validate_model_config`."""
    return cls(**validate_model_config(model_config), rngs=rngs)


def check_input(image: jax.Array) -> None:
  """One clear sentence for an input the bare network cannot take (shapes are static, so this is jit-safe)."""
  if image.ndim != 4 or image.shape[-1] != 3:
    raise ValueError(f"SimpleNet takes RGB batches [N, H, W, 3], got shape {tuple(image.shape)}; "
                     "add a batch axis with image[None] or convert gray/RGBA images to RGB.")
  height, width = image.shape[1:3]
  if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
    raise ValueError(f"SimpleNet needs H and W divisible by {SIZE_MULTIPLE}, got {height}×{width}; pad the "
                     "image (simplenet_jax evaluation and inference pad by reflection and crop back).")


def validate_model_config(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """Checks `config.model` and returns the constructor's keyword arguments; one ValueError sentence each."""
  fields = dict(model_config)
  unknown = sorted(set(fields) - set(MODEL_DEFAULTS))
  if unknown:
    raise ValueError(f"config.model has unknown field(s) {unknown}; the known fields are "
                     f"{sorted(MODEL_DEFAULTS)}.")
  kwargs = {**MODEL_DEFAULTS, **fields}
  widths = tuple(kwargs["widths"])
  if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
    raise ValueError(f"config.model.widths must be three positive ints (scale 1, 1/2, 1/4), got {widths!r}.")
  groups = kwargs["deform_groups"]
  if not isinstance(groups, int) or groups < 1 or any(w % groups for w in widths):
    raise ValueError(f"config.model.deform_groups={groups!r} must be a positive int that divides every width "
                     f"{widths}.")
  rank = kwargs["lgcr_rank"]
  if not isinstance(rank, int) or rank < 1:
    raise ValueError(f"config.model.lgcr_rank must be a positive int, got {rank!r}.")
  if kwargs["lgcr_softmax_axes"] not in ("chw", "c"):
    raise ValueError(f'config.model.lgcr_softmax_axes must be "chw" or "c", got '
                     f'{kwargs["lgcr_softmax_axes"]!r}.')
  for field, least in (("lgcr_initial_slope", -math.inf), ("lgcr_kernel_3d_std", 0.0)):
    value = kwargs[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value < math.inf:
      raise ValueError(f"config.model.{field} must be a finite number"
                       f"{'' if least == -math.inf else f' of at least {least:g}'}, got {value!r}.")
  tile_bytes = kwargs["dcn_tile_bytes"]
  if not isinstance(tile_bytes, int) or isinstance(tile_bytes, bool) or tile_bytes < 0:
    raise ValueError(f"config.model.dcn_tile_bytes must be a non-negative int (0 = one tile), got {tile_bytes!r}.")
  for flag in ("use_pvb", "use_lgcr", "use_dr", "zero_init_tail", "remat"):
    if not isinstance(kwargs[flag], bool):
      raise ValueError(f"config.model.{flag} must be True or False, got {kwargs[flag]!r}.")
  if kwargs["global_context"] not in GLOBAL_CONTEXT_OPTIONS:
    raise ValueError(f"config.model.global_context must be one of {GLOBAL_CONTEXT_OPTIONS}, got "
                     f"{kwargs['global_context']!r}.")
  if not kwargs["use_lgcr"] and kwargs["global_context"] != "lgcr":
    raise ValueError(f"config.model.use_lgcr=False puts a ResBlock in the global-context slot (Table 3), so "
                     f"global_context={kwargs['global_context']!r} would be ignored; set one of the two.")
  kwargs["widths"] = widths
  return kwargs
