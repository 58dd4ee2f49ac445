"""Every command and code example in README.md stays true to the code.

The commands that need GoPro or a trained model are run for real elsewhere (`tests/test_*.py` with tiny
data; CI runs `scripts/demo.sh` and `scripts/test.sh`). Here each README command is checked against the CLI it
calls: the script or module exists, every `--flag` is one that CLI accepts, a value from a fixed set of
choices is one of them, and every `--config.FIELD=VALUE` names a field of that config file.
"""

import functools
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from simplenet_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)

# How each README command is started → the argv prefix that runs it here.
MODULE_CLIS = ("simplenet_jax.data.synthesize", "simplenet_jax.data.prepare", "simplenet_jax.data.from_video",
               "simplenet_jax.complexity", "simplenet_jax.deblur", "simplenet_jax.export", "simplenet_jax.app")
CONSOLE_SCRIPTS = {"simplenet-deblur": "simplenet_jax.deblur", "simplenet-demo": "simplenet_jax.app"}


def readme_commands() -> list[list[str]]:
  """Every `python …`, `.venv/bin/python …`, `simplenet-deblur …` and `simplenet-demo …` command in the
  README's bash blocks."""
  commands = []
  for block in BASH_BLOCKS:
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s#.*$", "", line)  # comments
      line = re.sub(r"\[[^\]]*\]", "", line)  # [optional arguments]
      for match in re.finditer(r"(?:\.venv/bin/)?python (?:-m \S+|\S+\.py)[^\"&;]*|simplenet-(?:deblur|demo)[^\"&;]*", line):
        commands.append(shlex.split(match.group(0)))
  return commands


def command_id(command):
  return " ".join(command)[:70]


COMMANDS = readme_commands()


@functools.cache
def help_text(program: str) -> str:
  argv = ([sys.executable, str(ROOT / program)] if program.endswith(".py") else
          [sys.executable, "-m", program])
  run = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert run.returncode == 0, run.stderr[-2000:]
  return run.stdout


def program_and_args(command: list[str]) -> tuple[str, list[str]]:
  if command[0] in CONSOLE_SCRIPTS:
    return CONSOLE_SCRIPTS[command[0]], command[1:]
  assert command[0].endswith("python"), command
  if command[1] == "-m":
    return command[2], command[3:]
  return command[1], command[2:]


def test_the_readme_has_the_commands_this_test_checks():
  programs = {program_and_args(c)[0] for c in COMMANDS}
  assert {"train.py", "eval.py", *MODULE_CLIS} <= programs, programs
  assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README


def test_the_two_commands_are_the_ones_ci_runs():
  assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
  assert "bash scripts/demo.sh" in (ROOT / ".ci" / "run").read_text()
  for script in ("setup.sh", "demo.sh", "test.sh"):
    assert (ROOT / "scripts" / script).is_file()


@pytest.mark.parametrize("command", [c for c in COMMANDS if program_and_args(c)[0] == "train.py"],
                         ids=command_id)
def test_train_commands_name_real_config_fields(command):
  _, args = program_and_args(command)
  options = dict(arg.split("=", 1) if "=" in arg else (arg, None) for arg in args if arg.startswith("--"))
  config_path = args[args.index("--config") + 1]  # `--config FILE`; the overrides are --config.FIELD=VALUE
  assert "--workdir" in options
  config = config_files.load_config(ROOT / config_path)
  for option in options:
    if option.startswith("--config."):
      node = config
      for key in option[len("--config."):].split("."):
        assert key in node, f"{option}: {config_path} has no field {key!r}"
        node = node[key]


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if program_and_args(c)[0] != "train.py"],
                         ids=command_id)
def test_cli_commands_use_flags_and_choices_the_cli_has(command):
  program, args = program_and_args(command)
  if program.endswith(".py"):
    assert (ROOT / program).is_file(), program
  else:
    assert program in MODULE_CLIS, f"add {program} to MODULE_CLIS"
  text = help_text(program)
  for i, arg in enumerate(args):
    if not arg.startswith("--"):
      continue
    flag = arg.split("=", 1)[0]
    assert re.search(rf"{re.escape(flag)}\b", text), f"{program} has no flag {flag}"
    choices = re.search(rf"{re.escape(flag)} \{{([^}}]*)\}}", text)
    if choices and i + 1 < len(args):
      assert args[i + 1] in choices.group(1).split(","), f"{program} {flag}: {args[i + 1]} is not a choice"


@pytest.mark.slow
def test_python_examples_run(trained_workdir, stablehlo_export, onnx_export, tmp_path, monkeypatch):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  # The files the export example reads, in the folder it runs in: the artifacts (the export of the smoke
  # workdir that tests/test_export.py checks) and a photo of a size that is not a multiple of 4 (the
  # example pads it).
  monkeypatch.chdir(tmp_path)
  for artifact, _ in (stablehlo_export, onnx_export):
    shutil.copy(artifact, tmp_path / artifact.name)
  photo = np.random.default_rng(1).integers(0, 256, (30, 43, 3), dtype=np.uint8)
  Image.fromarray(photo).save(tmp_path / "blurred.png")
  namespace = {"blurred": np.random.default_rng(0).uniform(size=(1, 12, 16, 3)).astype(np.float32)}
  for block in PYTHON_BLOCKS:  # the README's workdir is the demo's; here a trained smoke workdir
    exec(block.replace('"workdirs/demo"', repr(str(trained_workdir))), namespace)  # pylint: disable=exec-used
  assert namespace["deblurred"].shape == (1, 12, 16, 3)
  assert isinstance(namespace["model"], nnx.Module)
  sharp, sharp_onnx = (np.asarray(Image.open(tmp_path / name), np.float32) for name in ("sharp.png",
                                                                                      "sharp_onnx.png"))
  for result in (sharp, sharp_onnx):
    assert result.shape == photo.shape and (result != photo).any()
  # The photo is under the example's pixel threshold: whole in ONNX, as in StableHLO, so the same to rounding.
  assert np.abs(sharp_onnx - sharp).max() <= 1, np.abs(sharp_onnx - sharp).max()
  # Its tiles (24×24 at offsets 0, 6 down and 0, 16, 19 across; per-tile global context): close, not equal.
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(str(tmp_path / "simplenet.onnx"))
  image = photo.astype(np.float32) / 255
  whole = namespace["deblur_onnx"](session, image)
  tiled = namespace["deblur_onnx"](session, image, max_pixels=0, tile=24, overlap=8)
  assert tiled.shape == image.shape and np.isfinite(tiled).all()
  assert 0 < np.abs(tiled - whole).mean() < 2 / 255, np.abs(tiled - whole).mean()
