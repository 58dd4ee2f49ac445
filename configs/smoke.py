"""Seconds-long runs for the tests: a tiny network, tiny crops, a few steps, no worker processes."""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "smoke"
  config.model.widths = (4, 4, 4)
  config.model.lgcr_rank = 2
  config.data.crop_size = 16
  config.data.num_workers = 0
  config.batch_size = 4
  config.num_train_steps = 6
  config.learning_rate = 1e-3
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 6
  config.eval_num_images = 2
  config.eval_grid_images = 1
  return config
