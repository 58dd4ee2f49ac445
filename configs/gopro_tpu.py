"""The paper's setting on TPUs: `configs/gopro.py` with deformable convs a TPU runs fast.

XLA:TPU reads a whole (8, 128) HBM tile for every gathered row, so the paper's deformable convs, which sample
by gathers, cost 23–79× a plain conv of the same shape by its cost model (benchmarks/README.md,
"tpu_compile.py"). Here the offsets are bounded to ±8 pixels (a departure from SPEC §1, whose offsets are
unbounded) so that each block of outputs samples its window of the input by a matmul, in one tile:
    python train.py --config configs/gopro_tpu.py --workdir gs://BUCKET/runs/gopro --config.data.root=...
Check that it fits a slice first: python benchmarks/tpu_compile.py --topology v5e:2x2.
A model trained so runs anywhere: inference, eval and the exports sample by gathers, with the same results.
"""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.name = "gopro_tpu"
  config.model.dcn_max_offset = 8.0
  config.model.dcn_sampling = "matmul"
  config.model.dcn_tile_bytes = 0  # one tile: a loop would only slow a TPU down (its HBM holds the step)
  return config
