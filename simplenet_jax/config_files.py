"""Loading experiment config files (`configs/*.py`, each with a `get_config()`) outside absl's flags."""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
import sys
from collections.abc import Sequence

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
  try:
    spec.loader.exec_module(module)
  except SyntaxError as error:
    raise ValueError(f"config file {path} has a syntax error at line {error.lineno}: {error.msg}.") from None
  except Exception as error:  # pylint: disable=broad-except  # whatever the file's own code raises
    raise ValueError(f"config file {path} failed to load at line {_line_in(error, path)}: "
                     f"{type(error).__name__}: {error}.") from None
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config() function.")
  try:
    return module.get_config()
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f"config file {path}'s get_config() failed at line {_line_in(error, path)}: "
                     f"{type(error).__name__}: {error}.") from None


def _line_in(error: BaseException, path: pathlib.Path) -> int | str:
  """The line of `path` where `error` was raised (the innermost frame in that file), or "?"."""
  line, tb = "?", error.__traceback__
  resolved = str(path.resolve())
  while tb is not None:
    if str(pathlib.Path(tb.tb_frame.f_code.co_filename).resolve()) == resolved:
      line = tb.tb_lineno
    tb = tb.tb_next
  return line


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field of a config as a dotted name (`model.widths`, `data.root`, …), sub-configs included."""
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      names += field_names(value, f"{prefix}{key}.")
  return names


def command_line_error(argv: Sequence[str], flag: str = "config") -> str | None:
  """The first-contact mistake in a command line's `--config FILE` and `--config.FIELD=VALUE` arguments, as one
  sentence (naming the file, or the field and the closest valid ones), or None; checked before absl parses
  them, whose own errors are tracebacks."""
  path, overrides = None, []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg == f"--{flag}" and i + 1 < len(args):
      path = args[i + 1]
    elif arg.startswith(f"--{flag}="):
      path = arg.split("=", 1)[1]
    elif arg.startswith((f"--{flag}.", f"--no{flag}.")):
      overrides.append(arg.split(".", 1)[1].split("=", 1)[0])
  if path is None:
    return None  # absl's "Flag --config must have a value" says it
  try:
    config = load_config(path)
  except ValueError as error:
    return str(error)
  names = field_names(config)
  for name in overrides:
    if name not in names:
      # The closest fields under the same parent first (a typo), else the closest anywhere.
      parent = name.rpartition(".")[0]
      siblings = [n for n in names if n.rpartition(".")[0] == parent]
      close = (difflib.get_close_matches(name, siblings, n=3, cutoff=0.6) or
               difflib.get_close_matches(name, names, n=3, cutoff=0.4))
      hint = (f"did you mean {' or '.join('--config.' + c for c in close)}?" if close else
              f"its fields are in {path} and configs/default.py.")
      return f"--{flag}.{name}: the config {path} has no field {name!r}; {hint}"
  return None
