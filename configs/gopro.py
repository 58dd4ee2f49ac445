"""The paper's GoPro setting (Sec. 3.5): the default network; training fields arrive with train.py."""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "gopro"
  return config
