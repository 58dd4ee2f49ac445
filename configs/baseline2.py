"""Table 3, Baseline2: PVB and DR, no LGCR (replaced by a vanilla ResBlock)."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "baseline2"
  config.model.global_context = "resblock"
  return config
