"""The notebooks run headless, top to bottom, on tiny parameters; they are committed without outputs."""

import json
import math
import pathlib
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from PIL import Image

pytestmark = pytest.mark.slow  # the whole file starts processes or compiles the paper-size model

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
COLAB = "simplenet_colab_tpu.ipynb"
QUICKSTART = "quickstart.ipynb"


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  return cell


def run_notebook(name: str, parameters: dict, cwd: pathlib.Path) -> nbformat.NotebookNode:
  """Executes a notebook with `parameters` assigned at the end of its parameters cell (as papermill does).

  The kernel is ipykernel on this very interpreter: with no kernel folders to search, jupyter_client falls
  back to the native `python3` spec, i.e. `sys.executable -m ipykernel_launcher`, whatever other kernels a
  machine has installed.
  """
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  cell = parameters_cell(nb)
  unknown = [key for key in parameters if f"\n{key} = " not in f"\n{cell.source}"]
  assert not unknown, f"{name} has no parameters {unknown}"
  cell.source += "\n# the test's values\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
  nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
  # The connection file in the test's own folder: jupyter_client leaves the one it makes in the system's
  # temporary folder (a /tmp/tmpXXXX.json per notebook run).
  manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]),
                               connection_file=str(cwd / ".kernel.json"))
  NotebookClient(nb, km=manager, timeout=300, resources={"metadata": {"path": str(cwd)}}).execute()
  assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
  return nb


@pytest.mark.parametrize("name", [COLAB, QUICKSTART])
def test_committed_without_outputs_and_with_one_parameters_cell(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code)
  assert code[0] is parameters_cell(nb)


def test_colab_notebook_prepares_trains_evaluates_and_deblurs(data_root, tmp_path):
  """A GoPro-layout folder → TFDS build → 3 smoke steps → evaluation → a photo of odd size deblurred."""
  photo = next(data_root.glob("test/*/blur/*.png"))
  workdir = tmp_path / "workdir"
  run_notebook(COLAB, {"CONFIG": "configs/smoke.py", "DATA": "folder", "DATA_SOURCE": str(data_root),
                       "TFDS_DIR": str(tmp_path / "tfds"), "WORKDIR": str(workdir), "NUM_STEPS": 3,
                       "OVERRIDES": {"log_every_steps": 1}, "PHOTO": str(photo), "TENSORBOARD": False},
               cwd=tmp_path)
  (info,) = (tmp_path / "tfds").glob("deblur_folder/blur/*/dataset_info.json")
  assert json.loads(info.read_text())["splits"]  # built there, and read from there
  (summary_file,) = workdir.glob("eval/step_*/summary.json")
  summary = json.loads(summary_file.read_text())
  assert summary["checkpoint_step"] == 3 and summary["images"] == 2
  assert all(math.isfinite(summary[k]) for k in ("psnr", "ssim_matlab", "ssim_python"))
  with Image.open(workdir / "deblurred" / f"{photo.stem}.png") as deblurred, Image.open(photo) as original:
    assert deblurred.size == original.size == (45, 37)


def test_quickstart_deblurs_photos(trained_workdir, data_root, tmp_path):
  photos = sorted(data_root.glob("test/*/blur/*.png"))
  out = tmp_path / "out"
  nb = run_notebook(QUICKSTART, {"WORKDIR": str(trained_workdir), "PHOTOS": [str(p) for p in photos],
                                 "OUT": str(out)}, cwd=tmp_path)
  for photo in photos:
    with Image.open(out / f"{photo.stem}.png") as deblurred, Image.open(photo) as original:
      assert deblurred.size == original.size
  shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(shown) == len(photos)
