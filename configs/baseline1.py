"""Table 3, Baseline1: PVB and LGCR, no DR (each DR replaced by a vanilla ResBlock)."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "baseline1"
  config.model.use_dr = False
  return config
