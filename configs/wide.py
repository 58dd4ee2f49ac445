"""The literal reading of Table 2's "25.1M": widths 64/128/256 (≈20.8M parameters), SPEC §1."""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "wide"
  config.model.widths = (64, 128, 256)
  return config
