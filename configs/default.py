"""Base config: SimpleNet as SPEC §1 fixes it (widths 32/64/128, G=1, r=64, softmax over C·H·W).

Every experiment config imports this one and changes only what differs. Any field can be overridden on the
command line, e.g. `--config.model.widths="(8, 16, 32)"`.
"""

import ml_collections

from simplenet_jax.models.config import ModelConfig


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "default"

  # Network (SPEC §1): every field, its default and why is `ModelConfig` (simplenet_jax/models/config.py).
  config.model = ml_collections.ConfigDict(ModelConfig().to_dict())

  # Data (SPEC §4). The default is the demo set a fresh clone makes in under a minute with
  # `python -m simplenet_jax.data.synthesize --out data/demo`; GoPro is dataset="gopro", root=".../GOPRO_Large".
  # Training and evaluation read the TFDS build of it (`python -m simplenet_jax.data.prepare`, see README).
  config.data = ml_collections.ConfigDict()
  config.data.dataset = "folder"  # builder: "gopro", "realblur_j", or "folder" (any GoPro-layout folder)
  config.data.root = "data/demo"  # the data set in its published layout (the builder's manual_dir)
  config.data.tfds_dir = ""  # TFDS data folder of the build ("" = <root>_tfds); TFDS also takes gs:// paths
  config.data.storage = "tiles"  # records: "tiles" (256², crops from whole frames), "subimages" or "frames"
  config.data.blur_kind = "blur"  # GoPro input: linear-light "blur" or "blur_gamma"; never mix them (SPEC §4)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.crop_size = 256  # the same random window of blur and sharp (SPEC §3)
  config.data.hflip = True  # random horizontal flips of the pair
  config.data.vflip = True  # random vertical flips of the pair
  config.data.seed = 0  # shuffle order and crop/flip draws; the same seed gives the same batches
  config.data.num_workers = 4  # grain worker processes that decode and crop; 0 = in the training process
  config.data.worker_buffer_size = 2  # batches each worker prepares ahead
  config.data.read_threads = 2  # threads per process reading and decoding records
  config.data.prefetch_buffer_size = 4  # elements (batches, or eval frames) each process reads ahead

  # Optimisation (Sec. 3.5, SPEC §3): L1 loss, Adam, lr 1e-4 decayed ×√0.1 (staircase) every 630k steps.
  config.seed = 0
  config.batch_size = 8  # global, over all devices and hosts
  config.num_train_steps = 2_200_000
  config.learning_rate = 1e-4
  config.lr_decay_steps = 630_000
  config.lr_decay_rate = 0.1 ** 0.5  # the paper prints √(10/10) = 1, which would be no decay at all
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8  # optax's and PyTorch's default; the paper gives none
  config.grad_clip_norm = 0.0  # 0 = no clipping
  # A step whose loss or gradient is NaN or infinite is skipped (counted in train/nonfinite_total); this many
  # in a row stop the run, with the last checkpoint intact.
  config.max_consecutive_nonfinite = 5
  config.compute_dtype = "float32"  # or "bfloat16": bf16 features and weights; f32 master weights, image, residual add
  # TPU only: "default" runs float32 matmuls and convs as one bf16 pass; "high" (3 passes) or "highest" (float32)
  config.matmul_precision = "default"
  # GPU: compile the step with XLA's --xla_gpu_deterministic_ops (the DCN backward's scatter-add is otherwise
  # atomic, so gradients differ in their last bits between runs); slower. Other platforms ignore it.
  config.deterministic = False

  # Bookkeeping.
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3  # the last K, plus the best by eval PSNR
  config.eval_every_steps = 50_000
  config.eval_num_images = 0  # 0 = the whole test split; >0 = the first N pairs (faster periodic evals)
  config.eval_grid_images = 3  # blur | output | sharp grids written to TensorBoard

  # Multi-host (TPU pods, several GPU hosts): call jax.distributed.initialize() before anything else.
  # Left empty, the coordinator, process count and id are detected from the cluster environment.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ""
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  return config
