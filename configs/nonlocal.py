"""Table 5, "Baseline2 + Non-Local": the embedded-Gaussian non-local block (Wang et al. 2018) in LGCR's slot,
GoPro training as in the paper (models/global_context.py)."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "nonlocal"
  config.model.global_context = "nonlocal"
  return config
