"""simplenet_jax.config_files: every configs/*.py loaded as a normal import loads it, dotted field names, and the
one-sentence answers to a missing file, a file without get_config() and an unknown --config.FIELD."""

import importlib
import pathlib
import sys

import ml_collections
import pytest

from simplenet_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(p.name for p in (ROOT / "configs").glob("*.py") if p.name != "__init__.py")


def test_every_experiment_config_is_there():
  assert {"default.py", "smoke.py", "gopro.py", "baseline2.py"} <= set(CONFIG_FILES)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_load_config_equals_importing_the_module(name):
  got = config_files.load_config(ROOT / "configs" / name)
  assert isinstance(got, ml_collections.ConfigDict)
  assert got.to_dict() == importlib.import_module(f"configs.{name[:-3]}").get_config().to_dict()


def test_each_load_is_a_fresh_config(tmp_path):
  first = config_files.load_config(str(ROOT / "configs" / "smoke.py"))  # a str is taken too
  first.model.widths = (8, 8, 8)
  first.learning_rate = 5.0
  again = config_files.load_config(ROOT / "configs" / "smoke.py")
  assert again.model.widths == (4, 4, 4) and again.learning_rate == 1e-3


@pytest.fixture()
def experiments(tmp_path, monkeypatch):
  """A repository of its own: `exps/base.py` and `exps/child.py`, which imports it as `from exps import base`."""
  monkeypatch.setattr(sys, "path", list(sys.path))
  (tmp_path / "repo" / "exps").mkdir(parents=True)
  (tmp_path / "repo" / "exps" / "__init__.py").write_text("")
  (tmp_path / "repo" / "exps" / "base.py").write_text(
      "import ml_collections\n\n"
      "def get_config():\n"
      "  config = ml_collections.ConfigDict()\n"
      "  config.rate = 0.5\n"
      "  config.inner = ml_collections.ConfigDict({'depth': 3, 'width': 7})\n"
      "  return config\n")
  (tmp_path / "repo" / "exps" / "child.py").write_text(
      "from exps import base\n\n"
      "def get_config():\n"
      "  config = base.get_config()\n"
      "  config.inner.depth = 11\n"
      "  return config\n")
  (tmp_path / "repo" / "exps" / "empty.py").write_text("VALUE = 1\n")
  yield tmp_path / "repo"
  for module in [m for m in sys.modules if m == "exps" or m.startswith("exps.")]:
    del sys.modules[module]


def test_a_config_imports_its_base_from_its_own_repository(experiments):
  config = config_files.load_config(experiments / "exps" / "child.py")
  assert config.to_dict() == {"rate": 0.5, "inner": {"depth": 11, "width": 7}}
  assert sys.path.count(str(experiments)) == 1
  config_files.load_config(experiments / "exps" / "child.py")
  assert sys.path.count(str(experiments)) == 1  # added once


def test_a_file_without_get_config_is_one_sentence(experiments):
  path = experiments / "exps" / "empty.py"
  with pytest.raises(ValueError) as info:
    config_files.load_config(path)
  assert str(info.value) == f"config file {path} defines no get_config() function."


@pytest.mark.parametrize("where", ["missing.py", "exps"])
def test_a_missing_file_or_a_folder_is_one_sentence(experiments, where):
  with pytest.raises(ValueError) as info:
    config_files.load_config(experiments / where)
  assert str(info.value) == (f"config file {experiments / where} does not exist; pass one of the files in "
                             "configs/, e.g. --config configs/gopro.py.")


def test_field_names_are_every_dotted_name():
  config = ml_collections.ConfigDict()
  config.b = 1
  config.a = ml_collections.ConfigDict({"z": 2, "y": ml_collections.ConfigDict({"x": 3})})
  config.c = (4, 5)
  config.d = {"plain": 6}  # a dict is made a ConfigDict too
  assert sorted(config_files.field_names(config)) == ["a", "a.y", "a.y.x", "a.z", "b", "c", "d", "d.plain"]


def test_field_names_of_the_default_config_each_resolve():
  config = config_files.load_config(ROOT / "configs" / "default.py")
  names = config_files.field_names(config)

  def walk(tree, prefix=""):
    for key, value in tree.items():
      yield prefix + key
      if isinstance(value, dict):
        yield from walk(value, f"{prefix}{key}.")

  assert sorted(names) == sorted(walk(config.to_dict()))
  assert "model.widths" in names and "distributed.process_id" in names and "model" in names


SMOKE = str(ROOT / "configs" / "smoke.py")


@pytest.mark.parametrize("argv", [
    ["train.py", "--workdir", "w"],  # no --config: absl says it
    ["train.py", "--config"],  # no value: absl says it
    ["train.py", "--config", SMOKE, "--config.model.widths=(4,4,4)", "--config.learning_rate", "0.1"],
    ["train.py", f"--config={SMOKE}", "--config.data.hflip=False", "--noconfig.data.vflip", "--config.model"],
])
def test_a_good_command_line_has_no_mistake(argv):
  assert config_files.command_line_error(argv) is None


@pytest.mark.parametrize("override,closest", [
    ("--config.model.widht=(4,4,4)", "model.widths"),
    ("--config.learnin_rate=1", "learning_rate"),
    ("--noconfig.data.hflp", "data.hflip"),
    ("--config.modle.widths=(4,4,4)", "model.widths"),  # no sibling under a misspelt parent: the closest anywhere
    ("--cfg.data.read_thread=1", "data.read_threads"),  # another flag's name
])
def test_an_unknown_field_is_one_sentence_offering_the_closest_fields(override, closest):
  flag = override.lstrip("-").removeprefix("no").split(".")[0]
  argv = ["train.py", f"--{flag}", SMOKE, f"--{flag}.seed=1", override, f"--{flag}.zzz=2"]
  name = override.split(".", 1)[1].split("=")[0]
  error = config_files.command_line_error(argv, flag=flag)
  prefix = f"--{flag}.{name}: the config {SMOKE} has no field {name!r}; did you mean --"  # the first unknown one
  assert error.startswith(prefix) and error.endswith("?")
  offered = [o.split(".", 1)[1] for o in error[len(prefix) - 2:-1].split(" or ")]
  assert offered[0] == closest and len(offered) <= 3
  assert set(offered) <= set(config_files.field_names(config_files.load_config(SMOKE)))


def test_a_field_like_no_other_points_to_the_config_files():
  argv = ["train.py", "--config", SMOKE, "--config.qqqqqqqqqqq=1"]
  assert config_files.command_line_error(argv) == (
      f"--config.qqqqqqqqqqq: the config {SMOKE} has no field 'qqqqqqqqqqq'; its fields are in {SMOKE} and "
      "configs/default.py.")


def test_a_missing_config_file_on_the_command_line_is_load_configs_sentence(tmp_path):
  argv = ["train.py", "--config", str(tmp_path / "nope.py"), "--config.seed=1"]
  assert config_files.command_line_error(argv) == (f"config file {tmp_path / 'nope.py'} does not exist; pass one "
                                                   "of the files in configs/, e.g. --config configs/gopro.py.")


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n  pass\n", "has a syntax error at line 1: invalid syntax."),
    ("import math\nRATE = 1 / 0\n", "failed to load at line 2: ZeroDivisionError: division by zero."),
    ("def get_config():\n  fields = {}\n  return fields['width']\n",
     "'s get_config() failed at line 3: KeyError: 'width'."),
])
def test_a_config_file_that_fails_is_one_sentence_naming_the_file_and_line(tmp_path, source, message):
  path = tmp_path / "configs" / "broken.py"
  path.parent.mkdir()
  path.write_text(source)
  with pytest.raises(ValueError) as info:
    config_files.load_config(path)
  assert str(info.value) == f"config file {path}" + (message if message.startswith("'") else " " + message)
