"""Table 5, "nothing in LGCR's slot": the encoder's 1/4-scale features go straight to the decoder."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "no_global_context"
  config.model.global_context = "none"
  return config
