"""The demo: SimpleNet learning to deblur the built-in synthesized photos in minutes on a 2-core CPU.

Build the data first (`python -m simplenet_jax.data.synthesize --out data/demo`), or just run
`bash scripts/demo.sh`. Narrower widths, smaller crops and a faster learning rate than the paper; the
network is otherwise the same (PVB, LGCR, DR) but for one addition of the demo's own, `residual_gate`: a
per-image decision whether to deblur at all, so that a photo that is already sharp comes back exactly as it
was (the paper's network sharpens whatever it is given; `train.gated_loss` says how the gate learns). What 700
steps reach on the demo's test split and on the independent test set, per blur band, is in the README's "The
two commands".
"""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "demo"
  config.model.widths = (16, 32, 64)
  config.model.lgcr_rank = 16
  config.model.residual_gate = True
  config.data.root = "data/demo"
  config.data.crop_size = 64
  config.data.num_workers = 1  # decoding 256² PNGs is far cheaper than a step; one worker is plenty
  config.batch_size = 4
  config.num_train_steps = 700  # about 10 minutes of a 2-core CPU
  config.learning_rate = 1e-3
  config.lr_decay_steps = 470
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  config.eval_every_steps = 700  # once, at the end, on a few images (eval.py then scores the whole split)
  config.eval_num_images = 3
  return config
