"""The literal reading of Table 2's "25.1M": GoPro (`gopro.py`) at widths 64/128/256 (≈20.8M parameters), SPEC §1."""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "wide"
  config.model.widths = (64, 128, 256)
  return config
