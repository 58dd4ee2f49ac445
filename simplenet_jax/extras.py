"""The optional dependencies, by task (pyproject.toml's extras): a missing one is one sentence, not an ImportError.

`pip install simplenet-jax` is the core (the model, inference, simplenet-deblur, the StableHLO export); a module
that needs more starts with `extras.require(extra, task, modules...)`, e.g. `require("web", "simplenet-demo",
"gradio")`.
"""

from __future__ import annotations

import importlib.util


def require(extra: str, task: str, *modules: str) -> None:
  """SystemExit with the one sentence that names `extra` if any of the top-level `modules` is not installed.

  Only looks the modules up (no import: TensorFlow alone takes seconds), and exits, as argparse does, so that a
  command line prints the sentence without a traceback.
  """
  missing = [module for module in modules if not _installed(module)]
  if missing:
    raise SystemExit(f"error: {task} needs the {extra} extra ({', '.join(missing)} not installed): "
                     f"pip install 'simplenet-jax[{extra}]'")


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # ValueError: a module whose __spec__ is unset
    return False
