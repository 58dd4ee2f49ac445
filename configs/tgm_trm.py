"""Table 5, "Baseline2 + T+T": tensor generation + reconstruction (Chen et al. 2020) in LGCR's slot, with
rank r = config.model.lgcr_rank, GoPro training as in the paper (models/global_context.py)."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "tgm_trm"
  config.model.global_context = "tgm_trm"
  return config
