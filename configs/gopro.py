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
  # For TPUs: offsets within ±8 pixels (a departure from SPEC §1), so that the deformable convs sample by
  # matmuls over windows in one tile instead of by gathers, which XLA:TPU turns into ~58× a conv's HBM
  # traffic (README "Accelerators"). To run such a model on a CPU, gathers give the same results faster:
  # --config.model.dcn_sampling=gather --config.model.dcn_tile_bytes=1048576 (execution fields).
  config.model.dcn_max_offset = 8.0
  config.model.dcn_sampling = "matmul"
  config.model.dcn_tile_bytes = 0
  return config
