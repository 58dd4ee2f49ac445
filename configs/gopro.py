"""The paper's setting (Sec. 3.5, SPEC §3): GoPro's `blur` inputs, 256² crops, batch 8, 2.2M steps.

Build it once (`python -m simplenet_jax.data.prepare --dataset gopro --source /data/GOPRO_Large`, README "Data"),
then point `data.root` at the GOPRO_Large folder (its build is read from `<root>_tfds`, or `data.tfds_dir`):
    python train.py --config configs/gopro.py --workdir runs/gopro --config.data.root=/data/GOPRO_Large
"""

from configs import default


def get_config():
  config = default.get_config()
  config.name = "gopro"
  config.data.dataset = "gopro"
  config.data.root = "data/GOPRO_Large"
  return config
