"""simplenet_jax.paths: user paths made absolute or kept as URLs, and the one-sentence errors for a folder that
cannot be written or a bucket that cannot be reached (buckets faked in-process: no network)."""

import os
import pathlib
import threading

import pytest
from etils import epath

from simplenet_jax import paths


@pytest.mark.parametrize("path,url", [
    ("gs://bucket/run", True), ("s3://b/k", True), ("az://c/x", True), ("hf://datasets/x", True),
    ("gs:/bucket/run", False), ("gs:bucket", False), ("runs/gs://x", False), ("/abs/run", False), ("", False),
    (pathlib.Path("gs://bucket/run"), False),  # pathlib already made it the local folder gs:/bucket/run
])
def test_is_url_knows_the_bucket_schemes_only(path, url):
  assert paths.is_url(path) is url


def test_user_path_expands_home_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  cases = {"runs/a": tmp_path / "runs" / "a", "./runs/../b/": tmp_path / "b", "~/w": tmp_path / "home" / "w",
           pathlib.Path("c"): tmp_path / "c", str(tmp_path / "d"): tmp_path / "d"}
  for given, expected in cases.items():
    got = paths.user_path(given)
    assert isinstance(got, epath.Path) and os.fspath(got) == os.fspath(expected), given
  assert os.fspath(paths.user_path("s3://b/~/x/../y")) == "s3://b/~/x/../y"  # a URL is left as it is


@pytest.mark.parametrize("message,line", [
    ("No such bucket.\nTraceback detail", "No such bucket"),
    ("  \n403 Forbidden: no access...\n", "403 Forbidden: no access"),
    ("a.b.c", "a.b.c"),
    ("", "PermissionError"),
    (" \n ", "PermissionError"),
])
def test_first_line_is_the_first_non_blank_line_without_its_full_stops(message, line):
  assert paths.first_line(PermissionError(message)) == line


@pytest.fixture()
def fake_bucket(monkeypatch):
  """Makes `exists()` of gs:// paths run `behaviour` (local paths are untouched): no network is reached."""
  original = epath.Path.exists
  state = {"behaviour": lambda: True, "asked": []}

  def exists(self):
    if not os.fspath(self).startswith("gs://"):
      return original(self)
    state["asked"].append(os.fspath(self))
    return state["behaviour"]()

  monkeypatch.setattr(type(epath.Path("gs://b/x")), "exists", exists)
  return state


def test_a_local_path_is_not_probed(fake_bucket, tmp_path):
  paths.check_reachable(tmp_path / "not" / "there", "workdir")
  assert fake_bucket["asked"] == []


def test_a_reachable_bucket_passes_whether_the_folder_exists_or_not(fake_bucket):
  for exists in (True, False):
    fake_bucket["behaviour"] = lambda: exists  # pylint: disable=cell-var-from-loop
    paths.check_reachable("gs://bucket/run", "workdir")
  assert fake_bucket["asked"] == ["gs://bucket/run"] * 2


def test_a_bucket_that_raises_is_one_sentence_naming_it(fake_bucket):
  def refuse():
    raise PermissionError("403 Forbidden: caller has no storage.objects.get access.\n(details)")
  fake_bucket["behaviour"] = refuse
  with pytest.raises(ValueError) as info:
    paths.check_reachable("gs://bucket/run", "data folder")
  assert str(info.value) == (
      "cannot reach the data folder gs://bucket/run (403 Forbidden: caller has no storage.objects.get access); "
      "on a TPU or GCE VM, give its service account access to the bucket; elsewhere, run `gcloud auth "
      "application-default login`.")


def test_a_bucket_that_never_answers_is_given_up_on(fake_bucket):
  release = threading.Event()
  fake_bucket["behaviour"] = lambda: release.wait(30)  # a backend retrying on and on
  try:
    with pytest.raises(ValueError) as info:
      paths.check_reachable("gs://bucket/run", "workdir", seconds=1)
  finally:
    release.set()
  assert str(info.value).startswith("cannot reach the workdir gs://bucket/run: no answer within 1 s (no network or "
                                    "no credentials?); on a TPU or GCE VM")


def test_check_writable_makes_the_folder_and_leaves_nothing_in_it(tmp_path):
  folder = epath.Path(tmp_path) / "a" / "b"
  paths.check_writable(folder, "output folder", "--out")
  assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
  (tmp_path / "a" / "b" / "x.png").write_bytes(b"")
  paths.check_writable(folder, "output folder", "--out")  # an existing folder, with files
  assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["x.png"]


def test_a_folder_under_a_file_is_one_sentence_naming_the_flag(tmp_path):
  (tmp_path / "file").write_text("x")
  folder = epath.Path(tmp_path) / "file" / "sub"
  with pytest.raises(ValueError) as info:
    paths.check_writable(folder, "output folder", "--out")
  assert str(info.value) == (f"cannot write to the output folder {folder} (Not a directory); pass --out with a "
                             "writable folder.")
  assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_read_only_folder_is_one_sentence(tmp_path):
  folder = tmp_path / "locked"
  folder.mkdir()
  folder.chmod(0o555)
  try:
    if os.geteuid() == 0:
      paths.check_writable(epath.Path(folder), "workdir", "--workdir")  # root writes anyway: no false alarm
      assert list(folder.iterdir()) == []
      pytest.skip("root writes to a read-only folder: the refusal is checked as a user only")
    with pytest.raises(ValueError) as info:
      paths.check_writable(epath.Path(folder), "workdir", "--workdir")
    assert str(info.value) == f"cannot write to the workdir {folder} (Permission denied); pass --workdir with a " \
                              "writable folder."
  finally:
    folder.chmod(0o755)


def test_an_unreachable_bucket_is_reported_before_any_write(fake_bucket):
  def refuse():
    raise OSError("no credentials")
  fake_bucket["behaviour"] = refuse
  with pytest.raises(ValueError, match=r"^cannot reach the workdir gs://bucket/run \(no credentials\); "):
    paths.check_writable(epath.Path("gs://bucket/run"), "workdir", "--workdir")


def test_atomic_write_appears_complete_or_not_at_all(tmp_path):
  target = tmp_path / "result.png"
  with paths.atomic_write(target) as f:
    f.write(b"first")
  assert target.read_bytes() == b"first"
  with pytest.raises(RuntimeError):
    with paths.atomic_write(target) as f:
      f.write(b"half of the sec")
      raise RuntimeError("killed mid-way")
  assert target.read_bytes() == b"first"  # the earlier file is intact
  assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]  # and nothing else is left


def test_a_partial_file_is_hidden_and_never_named_like_an_output(tmp_path):
  partial = paths.partial_path(epath.Path(tmp_path / "photo.png"))
  assert partial.parent == epath.Path(tmp_path) and partial.name == ".photo.png.partial"
  assert not partial.name.endswith((".png", ".mp4", ".csv", ".json", ".onnx", ".stablehlo"))


def test_a_kill_between_writing_and_renaming_leaves_no_output(tmp_path, monkeypatch):
  """The injected stop point: the process dies (here: an exception no handler takes) just before the rename."""
  target = tmp_path / "model.onnx"

  def killed(*args):
    raise SystemExit("killed")

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(SystemExit):
    with paths.atomic_write(target) as f:
      f.write(b"complete bytes")
  assert not target.exists()


def test_a_full_disk_is_an_oserror_that_leaves_the_earlier_file(tmp_path, monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  target = tmp_path / "summary.json"
  target.write_text("earlier")

  class Full:
    def __init__(self, f):
      self.f = f

    def write(self, data):
      raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
      return getattr(self.f, name)

  with pytest.raises(OSError) as info:
    with paths.atomic_write(target, "w") as f:
      Full(f).write("new")
  assert info.value.errno == errno.ENOSPC
  assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
