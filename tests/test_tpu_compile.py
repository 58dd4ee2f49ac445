"""XLA:TPU compiles the trainer's own step for a TPU slice on this CPU (`benchmarks/tpu_compile.py`), and
libtpu stays out of every CPU run."""

import glob
import os
import subprocess
import sys

import jax
import pytest

from simplenet_jax import train

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import tpu_compile  # noqa: E402  pylint: disable=wrong-import-position

from configs import smoke  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.slow
# A compile-only executable cannot be read back from JAX's persistent cache (it has no client): the test writes
# none (below), and an entry an earlier version wrote is only a warning, which it ignores.
@pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")
def test_smoke_train_step_compiles_for_a_v5e_2x2_slice():
  """The smoke-width step of `train.make_step` on the project's mesh over 4 v5e chips: each chip gets a
  quarter of the batch, nothing is kept in host memory, and it fits a chip's 16 GiB."""
  tpu_compile.use_xla_tpu()
  mesh = tpu_compile.topology_mesh("v5e:2x2")
  assert mesh.devices.size == 4 and all(d.platform == "tpu" for d in mesh.devices.flat)
  config = smoke.get_config()
  batch = 8
  before = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)  # no entry written
  try:
    compiled = tpu_compile.lower_train(config, mesh, batch, config.data.crop_size).compile()
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)
  shardings = compiled.input_shardings[0][1]
  for name in ("blur", "sharp"):
    assert shardings[name].shard_shape((batch, 16, 16, 3)) == (batch // 4, 16, 16, 3)
  memory = compiled.memory_analysis()
  assert (memory.host_temp_size_in_bytes, memory.host_argument_size_in_bytes,
          memory.host_output_size_in_bytes, memory.host_generated_code_size_in_bytes) == (0, 0, 0, 0)
  assert 0 < memory.peak_memory_in_bytes < tpu_compile.CHIPS["v5e"].hbm_gib * tpu_compile.GIB
  # libtpu's log files stay off the disk (its default folder, or /tmp itself)
  assert glob.glob(f"/tmp/tpu_logs/*.{os.getpid()}") + glob.glob(f"/tmp/tpu_driver*.{os.getpid()}") == []
  assert "tpu" in compiled.as_text().lower() or compiled.runtime_executable() is not None


@pytest.mark.slow
def test_smoke_train_step_compiles_for_a_t4_with_no_gpu():
  """XLA:GPU (JAX's CUDA plugin, `scripts/setup.sh --cuda`) compiles the smoke-width step for a T4 from its
  published figures, with no GPU and no driver; the row has the card's memory and no estimate."""
  run = subprocess.run([sys.executable, os.path.join(os.path.dirname(tpu_compile.__file__), "tpu_compile.py"),
                        "--smoke", "--gpu", "t4", "--program", "train", "--dtype", "float32", "--no-cache"],
                       capture_output=True, text=True, timeout=600,  # no persistent XLA cache: see above
                       env={k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"})
  assert run.returncode == 0, run.stderr[-2000:]
  line = next(line for line in run.stdout.splitlines() if line.startswith("t4 train float32 default:"))
  needed = float(line.split(": ")[1].split(" of ")[0])
  assert 0 < needed < 1 and "of 16 GiB a chip, no estimate" in line
  assert "Traceback" not in run.stderr


def test_no_cuda_compiler_is_one_sentence(monkeypatch, tmp_path):
  monkeypatch.setattr(tpu_compile, "ROOT", tmp_path)
  monkeypatch.setattr(tpu_compile.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(SystemExit) as exit_info:
    tpu_compile.main(["--smoke", "--gpu", "t4"])
  assert "XLA:GPU is not installed: run `bash scripts/setup.sh --cuda`" in str(exit_info.value)


def test_the_tool_compiles_what_the_trainer_runs(monkeypatch):
  """`train.make_step` is the one place the step is jitted: the trainer and the tool both call it."""
  calls = []
  original = train.make_step
  monkeypatch.setattr(train, "make_step", lambda *a, **k: calls.append(a) or original(*a, **k))
  config = smoke.get_config()
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
  tpu_compile.lower_train(config, mesh, 2, 16)
  assert len(calls) == 1 and calls[0][0] is config


def test_no_libtpu_is_one_sentence(monkeypatch, capsys):
  monkeypatch.setattr(tpu_compile, "libtpu_path", lambda: None)
  with pytest.raises(SystemExit) as exit_info:
    tpu_compile.main(["--smoke"])
  assert "XLA:TPU is not installed: run `bash scripts/setup.sh --tpu`" in str(exit_info.value)


def test_cpu_runs_never_load_libtpu():
  """libtpu and the CUDA plugin sit outside the import path (`scripts/setup.sh --tpu --cuda`), so a plain JAX
  start neither finds them nor logs their probing."""
  code = "import importlib.util, jax; print(jax.devices(), importlib.util.find_spec('jax_cuda12_plugin'))"
  run = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"})
  assert run.returncode == 0 and "CpuDevice" in run.stdout and run.stdout.rstrip().endswith("None")  # nor CUDA's
  assert "TPU" not in run.stderr and "libtpu" not in run.stderr, run.stderr
  assert tpu_compile.libtpu_path() is not None  # and yet the tool finds it


def test_a_row_compiled_before_for_the_same_code_is_not_compiled_again(monkeypatch, tmp_path, capsys):
  """`--all` takes hours: an interrupted or repeated run reuses each row compiled for this code, and only
  this code (`code_fingerprint`); `--no-cache` compiles again."""
  monkeypatch.setenv("SIMPLENET_CACHE", str(tmp_path))
  monkeypatch.setattr(tpu_compile, "use_xla_tpu", lambda: None)
  compiled = []

  def fake_compile_row(program, dtype, precision, topology, smoke):
    compiled.append(topology)
    return {"program": program, "dtype": dtype, "precision": precision, "topology": topology, "chips": 1,
            "hbm_gib": 16, "hbm_needed_gib": 0.5 + len(compiled), "fits": True, "compile_s": 1.0, "est_ms": 2.0,
            "compute_bound_ms": 1.0}

  monkeypatch.setattr(tpu_compile, "compile_row", fake_compile_row)
  args = ["--smoke", "--program", "train", "--dtype", "float32", "--topology", "v5e:1x1", "--topology", "v6e:1x1"]
  first = tpu_compile.main(args)
  assert compiled == ["v5e:1x1", "v6e:1x1"]
  again = tpu_compile.main(args[:-2])  # one of the two, already compiled
  assert compiled == ["v5e:1x1", "v6e:1x1"] and again[0]["hbm_needed_gib"] == first[0]["hbm_needed_gib"]
  assert "(cached)" in capsys.readouterr().out
  tpu_compile.main(args[:-2] + ["--no-cache"])
  assert compiled[-1] == "v5e:1x1" and len(compiled) == 3
  monkeypatch.setattr(tpu_compile, "code_fingerprint", lambda: "other code")
  tpu_compile.main(args[:-2])
  assert len(compiled) == 4


def test_the_fingerprint_follows_the_code(monkeypatch, tmp_path):
  for name in ("simplenet_jax/ops/a.py", "configs/b.py", "README.md"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("x = 1\n")
  monkeypatch.setattr(tpu_compile, "ROOT", tmp_path)
  before = tpu_compile.code_fingerprint()
  (tmp_path / "README.md").write_text("other words\n")
  assert tpu_compile.code_fingerprint() == before
  for name in ("simplenet_jax/ops/a.py", "configs/b.py"):
    (tmp_path / name).write_text("x = 2\n")
    assert tpu_compile.code_fingerprint() != before
    before = tpu_compile.code_fingerprint()


def test_a_program_that_does_not_fit_is_a_row_in_either_of_xla_tpus_wordings():
  """libtpu says "HLO temporaries (X)" or, as 0.0.42 did for the paper step in stop 40, "Used X of Y hbm";
  both are a row that does not fit, anything else is raised."""
  old = "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. ... HLO temporaries (17.2G) ..."
  new = ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out of memory in "
         "memory space hbm. Used 15.78G of 15.75G hbm. Exceeded hbm capacity by 32.02M.")
  assert tpu_compile.hbm_needed_gib(old) == pytest.approx(17.2)
  assert tpu_compile.hbm_needed_gib(new) == pytest.approx(15.78)
  assert tpu_compile.hbm_needed_gib("RESOURCE_EXHAUSTED: 512M of host memory") is None
  assert tpu_compile.hbm_needed_gib("INTERNAL: Used 15.78G of 15.75G hbm") is None
