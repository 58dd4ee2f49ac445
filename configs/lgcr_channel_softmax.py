"""Table 6's question in SPEC §1's other reading of eq. 3: LGCR with its softmax over channels only."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "lgcr_channel_softmax"
  config.model.lgcr_softmax_axes = "c"
  return config
