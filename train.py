"""Trains SimpleNet: `python train.py --config configs/gopro.py --workdir DIR [--config.FIELD=VALUE ...]`.

Running it again with the same workdir resumes from the latest checkpoint. The work is in
`simplenet_jax.train.train_and_evaluate`, which notebooks call directly.
"""

import os
import sys

import jax

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from simplenet_jax import config_files
from simplenet_jax import extras

extras.require("train", "train.py", "optax", "grain", "array_record", "clu", "tensorflow_datasets", "tensorflow",
               "tensorboard")
from simplenet_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/gopro.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard events (resumed if present).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = FLAGS.config
  train.quiet_library_logs()
  # Compiled steps are cached on disk, so a resumed or repeated run starts in seconds.
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/simplenet_jax/xla")))
  parallel.initialize_distributed(config.distributed)  # before any other JAX call
  try:
    train.train_and_evaluate(config, FLAGS.workdir)
  except (ValueError, train.NonFiniteError) as error:
    logging.debug("details", exc_info=True)  # --verbosity=1 shows the traceback
    print(f"error: {error}", file=sys.stderr)
    return 1
  except OSError as error:  # a disk that filled up or a folder that went away mid-run
    logging.debug("details", exc_info=True)
    print(f"error: cannot write to the workdir {FLAGS.workdir} ({error.strerror or error}); free some space and "
          "rerun the same command, which resumes from the last checkpoint.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  mistake = config_files.command_line_error(sys.argv)  # absl would answer these with a traceback
  if mistake:
    print(f"error: {mistake}", file=sys.stderr)
    sys.exit(1)
  app.run(lambda argv: sys.exit(main(argv)))
