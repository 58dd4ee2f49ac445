"""The model's configuration, typed: every field of `config.model`, its default and its check, in one place.

`configs/default.py` fills `config.model` from `ModelConfig()`; `SimpleNet.from_config(config.model)` reads it
back through `ModelConfig.from_mapping`, which refuses an unknown field or a bad value in one sentence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from simplenet_jax.ops.deform_conv import DEFAULT_TILE_BYTES
from simplenet_jax.ops.deform_conv import SAMPLINGS

# What sits in LGCR's slot at the 1/4 scale (row 10 of SPEC §1; Tables 3, 5 and 6):
GLOBAL_CONTEXTS = (
    "lgcr",  # LGCR, the paper's module (Sec. 3.1, eqs. 1–5)
    "resblock",  # a vanilla ResBlock: Table 3's Baseline2, "w/o LGCR"
    "nonlocal",  # the embedded-Gaussian non-local block (Wang et al. 2018), Table 5
    "tgm_trm",  # tensor generation + reconstruction, "T+T" (Chen et al. 2020), Table 5
    "none",  # nothing: the encoder's features go straight to the decoder
)
SOFTMAX_AXES = ("chw", "c")
# Fields that change how the network is computed (memory, speed), never its parameters or its outputs: a
# checkpoint resumes or evaluates under any value of them.
EXECUTION_FIELDS = ("dcn_tile_bytes", "dcn_sampling", "remat")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """SimpleNet as SPEC §1 fixes it; the Table 3/5/6 variants change one field each (`configs/`)."""

  widths: tuple[int, int, int] = (32, 64, 128)  # channels at scale 1, 1/2, 1/4
  deform_groups: int = 1  # offset groups G of every DeformConv
  lgcr_rank: int = 64  # CP reconstruction rank r (eq. 2); also T+T's rank
  lgcr_softmax_axes: str = "chw"  # eq. 3 over all C·H·W values ("chw") or channels only ("c")
  # Initialisations the paper does not give: LGCR's PReLU slopes (eq. 1; PyTorch's nn.PReLU default) and the
  # standard deviation of its 3×3×3 W_G (eq. 4; fan-in, 1/√27).
  lgcr_initial_slope: float = 0.25
  lgcr_kernel_3d_std: float = 27 ** -0.5
  use_pvb: bool = True  # False: a vanilla ResBlock in each PVB's place (Table 3)
  use_dr: bool = True  # False: a vanilla ResBlock in each DR's place (Table 3)
  global_context: str = "lgcr"  # the module in LGCR's slot, one of GLOBAL_CONTEXTS
  zero_init_tail: bool = True  # the untrained network is the identity (the paper gives no init)
  # Not in the paper (configs/demo.py): a per-image gate, a linear function of the encoder's log energies,
  # decides whether the residual is applied, so that the network leaves a sharp photo exactly as it is.
  residual_gate: bool = False
  # Offsets of every DeformConv clipped to ± this many pixels (configs/gopro_tpu.py: 8, for the TPU's sampling by
  # matmuls); 0: unbounded, the paper's DCN.
  dcn_max_offset: float = 0.0
  # How the network is computed, on every platform alike (EXECUTION_FIELDS): memory and speed, never the
  # parameters or the results. README "Accelerators" has the measured footprints.
  dcn_tile_bytes: int = DEFAULT_TILE_BYTES  # float32 im2col per tile of each deformable conv; 0 = one tile
  remat: bool = False  # recompute each stage in the backward pass instead of keeping its activations
  # "gather" (any offsets; the CPU's fastest) or "matmul" (needs dcn_max_offset; a TPU's fastest): how the
  # deformable convs sample, never what (`ops.deform_conv2d`).
  dcn_sampling: str = "gather"

  def __post_init__(self):
    widths = tuple(self.widths)
    if len(widths) != 3 or not all(_is_int(w) and w > 0 for w in widths):
      raise ValueError(f"config.model.widths must be three positive ints (scale 1, 1/2, 1/4), got {widths!r}.")
    object.__setattr__(self, "widths", widths)
    groups = self.deform_groups
    if not _is_int(groups) or groups < 1 or any(w % groups for w in widths):
      raise ValueError(f"config.model.deform_groups={groups!r} must be a positive int that divides every width "
                       f"{widths}.")
    if not _is_int(self.lgcr_rank) or self.lgcr_rank < 1:
      raise ValueError(f"config.model.lgcr_rank must be a positive int, got {self.lgcr_rank!r}.")
    if self.lgcr_softmax_axes not in SOFTMAX_AXES:
      raise ValueError(f'config.model.lgcr_softmax_axes must be "chw" or "c", got {self.lgcr_softmax_axes!r}.')
    for field, least in (("lgcr_initial_slope", -math.inf), ("lgcr_kernel_3d_std", 0.0)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value < math.inf:
        raise ValueError(f"config.model.{field} must be a finite number"
                         f"{'' if least == -math.inf else f' of at least {least:g}'}, got {value!r}.")
    if (isinstance(self.dcn_max_offset, bool) or not isinstance(self.dcn_max_offset, (int, float))
        or not 0 <= self.dcn_max_offset < math.inf):
      raise ValueError(f"config.model.dcn_max_offset must be a number of pixels ≥ 0 (0 = unbounded), got "
                       f"{self.dcn_max_offset!r}.")
    if self.dcn_sampling not in SAMPLINGS:
      raise ValueError(f"config.model.dcn_sampling must be one of {SAMPLINGS}, got {self.dcn_sampling!r}.")
    if self.dcn_sampling == "matmul" and not self.dcn_max_offset:
      raise ValueError('config.model.dcn_sampling="matmul" needs config.model.dcn_max_offset > 0 (its windows '
                       'are sized by it).')
    if not _is_int(self.dcn_tile_bytes) or self.dcn_tile_bytes < 0:
      raise ValueError(f"config.model.dcn_tile_bytes must be a non-negative int (0 = one tile), got "
                       f"{self.dcn_tile_bytes!r}.")
    for flag in ("use_pvb", "use_dr", "zero_init_tail", "residual_gate", "remat"):
      if not isinstance(getattr(self, flag), bool):
        raise ValueError(f"config.model.{flag} must be True or False, got {getattr(self, flag)!r}.")
    if self.global_context not in GLOBAL_CONTEXTS:
      raise ValueError(f"config.model.global_context must be one of {GLOBAL_CONTEXTS}, got "
                       f"{self.global_context!r}.")

  @classmethod
  def from_mapping(cls, fields: Mapping[str, Any]) -> ModelConfig:
    """`config.model` (a ConfigDict, or a checkpoint's saved dict) as a checked `ModelConfig`."""
    fields = dict(fields)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"config.model has unknown field(s) {unknown}; the known fields are {sorted(known)}.")
    return cls(**fields)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)
