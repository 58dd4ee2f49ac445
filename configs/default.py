"""Base config: SimpleNet as SPEC §1 fixes it (widths 32/64/128, G=1, r=64, softmax over C·H·W).

Every experiment config imports this one and changes only what differs. Any field can be overridden on the
command line, e.g. `--config.model.widths="(8, 16, 32)"`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "default"

  # Network (SPEC §1). The Table 3 ablations replace a block by a vanilla ResBlock.
  config.model = ml_collections.ConfigDict()
  config.model.widths = (32, 64, 128)  # channels at scale 1, 1/2, 1/4
  config.model.deform_groups = 1  # offset groups G of every DeformConv
  config.model.lgcr_rank = 64  # CP reconstruction rank r (eq. 2)
  config.model.lgcr_softmax_axes = "chw"  # eq. 3 over all C·H·W values ("chw") or channels only ("c")
  config.model.use_pvb = True
  config.model.use_lgcr = True
  config.model.use_dr = True
  return config
