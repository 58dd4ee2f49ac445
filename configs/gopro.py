"""The paper's setting (Sec. 3.5, SPEC §3): GoPro's `blur` inputs, 256² crops, batch 8, 2.2M steps.

Point `data.root` at your GOPRO_Large folder (or `data.shards_dir` at its prepared shards):
    python train.py --config configs/gopro.py --workdir runs/gopro --config.data.root=/data/GOPRO_Large
"""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "gopro"
  config.data.dataset = "gopro"
  config.data.root = "data/GOPRO_Large"
  return config
