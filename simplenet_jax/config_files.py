"""Loading experiment config files (`configs/*.py`, each with a `get_config()`) outside absl's flags."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import ml_collections


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """Imports a config file and returns its `get_config()`; a missing file or function is one ValueError.

  The file's grandparent (the repository root for `configs/x.py`) goes on `sys.path`, so that experiment
  configs can `from configs import default`, exactly as they do under `train.py`.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"config file {path} does not exist; pass one of the files in configs/, "
                     "e.g. --config configs/gopro.py.")
  root = str(path.resolve().parent.parent)
  if root not in sys.path:
    sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location(f"_simplenet_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config() function.")
  return module.get_config()
