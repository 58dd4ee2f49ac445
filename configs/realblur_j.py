"""RealBlur-J (Rim et al. 2020) with the paper's recipe: `data.root` holds RealBlur_J_{train,test}_list.txt."""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "realblur_j"
  config.data.dataset = "realblur_j"
  config.data.root = "data/RealBlur"
  return config
