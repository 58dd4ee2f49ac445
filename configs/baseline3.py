"""Table 3, Baseline3: LGCR and DR, no PVB (each PVB replaced by a vanilla ResBlock)."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "baseline3"
  config.model.use_pvb = False
  return config
