"""ArrayRecord shards: a bit-exact round trip, a no-op rerun, a prepare killed mid-way and then finished, and a
reader that refuses unfinished, damaged or mismatched shards."""

import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data import prepare
from simplenet_jax.data import shards
from simplenet_jax.data.images import DatasetError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _save(path: pathlib.Path, seed: int, size=(36, 44), mode="RGB", fmt="PNG") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path, format=fmt)


def make_folder(root: pathlib.Path, frames_per_scene: int = 3) -> pathlib.Path:
  """GoPro layout: two scenes per split, PNG pairs, plus a JPEG pair and a gray PNG in the train split."""
  seed = 0
  for split in ("train", "test"):
    for scene in ("s1", "s2"):
      for frame in range(frames_per_scene):
        for kind in ("blur", "sharp"):
          seed += 1
          _save(root / split / scene / kind / f"{frame:06d}.png", seed)
  for kind in ("blur", "sharp"):
    _save(root / "train/s3" / kind / "000000.jpg", 1000 + len(kind), fmt="JPEG")
  _save(root / "train/s2/blur/000001.png", 77, mode="L")
  return root


def _records(shards_dir: pathlib.Path, split: str) -> list[dict]:
  source = shards.open_split(shards_dir, split)
  return [shards.decode_record(source[i]) for i in range(len(source))]


def _check_bit_exact(shards_dir: pathlib.Path, source_dir: pathlib.Path, split: str) -> None:
  pairs = layouts.list_pairs("folder", source_dir, split)
  records = _records(shards_dir, split)
  assert [(r["scene"], r["frame"]) for r in records] == [(p.scene, p.frame) for p in pairs]
  for record, pair in zip(records, pairs):
    for kind in ("blur", "sharp"):
      path = getattr(pair, kind)
      if path.suffix == ".png":
        assert record[kind] == path.read_bytes()  # the file itself, byte for byte
      else:  # other formats are stored as PNG of exactly the pixels the file decodes to
        assert record[kind][:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(images.decode_rgb(record[kind]),
                                      np.asarray(Image.open(path).convert("RGB")))


def test_round_trip_is_bit_exact_across_shards(tmp_path):
  source = make_folder(tmp_path / "set")
  result = shards.prepare_shards("folder", source, tmp_path / "shards", shard_mb=0.01, progress=False)
  assert not result.already_done
  train = result.manifest["splits"]["train"]
  assert train["num_pairs"] == 7 and len(train["shards"]) > 2  # several shards, records in order across them
  assert (train["min_height"], train["min_width"]) == (36, 44)
  assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
      ["manifest.json"] + [s["file"] for plan in result.manifest["splits"].values() for s in plan["shards"]])
  for split in ("train", "test"):
    _check_bit_exact(tmp_path / "shards", source, split)
  gray = next(r for r in _records(tmp_path / "shards", "train") if (r["scene"], r["frame"]) == ("s2", "000001"))
  assert images.decode_rgb(gray["blur"]).shape == (36, 44, 3)


def test_rerun_on_finished_shards_is_a_no_op(tmp_path, capsys):
  source = make_folder(tmp_path / "set")
  args = ["--dataset", "folder", "--source", str(source), "--out", str(tmp_path / "shards"), "--crop-size", "32"]
  assert prepare.main(args) == 0
  assert "train: 7 pairs in 1 shards" in capsys.readouterr().out
  stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()}
  assert prepare.main(args + ["--shard-size-mb", "1"]) == 0  # shard size alone does not make other shards
  assert "already holds these shards; nothing to do" in capsys.readouterr().out
  assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()} == stamps


def test_killed_prepare_leaves_nothing_a_reader_accepts_and_a_rerun_finishes(tmp_path):
  source = make_folder(tmp_path / "set", frames_per_scene=4)
  out = tmp_path / "shards"
  # A real SIGKILL while the 6th record is being written: no cleanup code runs.
  killer = (
      "import os, signal, sys\n"
      "from simplenet_jax.data import prepare, shards\n"
      "real, calls = shards.pair_record, []\n"
      "def pair_record(pair):\n"
      "  calls.append(pair)\n"
      "  if len(calls) == 6:\n"
      "    os.kill(os.getpid(), signal.SIGKILL)\n"
      "  return real(pair)\n"
      "shards.pair_record = pair_record\n"
      f"prepare.main(['--dataset', 'folder', '--source', {str(source)!r}, '--out', {str(out)!r},\n"
      "              '--shard-size-mb', '0.015', '--crop-size', '32'])\n")
  done = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == -signal.SIGKILL, done.stderr
  left = sorted(p.name for p in out.iterdir())
  assert "manifest.json" not in left and "plan.json" in left
  finished = [name for name in left if name.startswith("train.array_record-") and "incomplete" not in name]
  assert finished and any(name.endswith(".incomplete") for name in left)
  with pytest.raises(DatasetError, match=r"are unfinished \(prepare was interrupted\); rerun the same prepare"):
    shards.open_split(out, "train")
  stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

  result = shards.prepare_shards("folder", source, out, shard_mb=0.015, progress=False)
  assert not result.already_done
  assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps  # finished shards were kept
  assert not list(out.glob("*.incomplete")) and not (out / "plan.json").exists()
  for split in ("train", "test"):
    _check_bit_exact(out, source, split)


def test_interrupted_run_with_other_settings_starts_afresh(tmp_path):
  source = make_folder(tmp_path / "set")
  out = tmp_path / "shards"
  out.mkdir()
  (out / "plan.json").write_text('{"splits": {"train": {"shards": [{"file": "train.array_record-00000-of-00009"}]}}}')
  (out / "train.array_record-00000-of-00009").write_bytes(b"half a shard")
  shards.prepare_shards("folder", source, out, progress=False)
  assert not (out / "train.array_record-00000-of-00009").exists()
  _check_bit_exact(out, source, "train")


def test_reader_refuses_what_it_cannot_trust(tmp_path):
  source = make_folder(tmp_path / "set")
  out = tmp_path / "shards"
  shards.prepare_shards("folder", source, out, splits=["train"], progress=False)
  with pytest.raises(DatasetError, match=r"hold dataset 'folder' but 'gopro' was asked for"):
    shards.open_split(out, "train", dataset="gopro")
  with pytest.raises(DatasetError, match=r"hold blur_kind 'blur' but 'blur_gamma' was asked for"):
    shards.open_split(out, "train", blur_kind="blur_gamma")
  with pytest.raises(DatasetError, match=r"have no test split \(they hold train\); prepare with that split\.$"):
    shards.open_split(out, "test")
  with pytest.raises(DatasetError, match=r"as small as 44×36, smaller than the 40×40 training crop"):
    shards.open_split(out, "train", min_size=40)
  assert len(shards.open_split(out, "train", dataset="folder", blur_kind="blur", min_size=36)) == 7
  with pytest.raises(DatasetError, match=r"^Shards folder .*/nowhere does not exist; write it first with"):
    shards.open_split(tmp_path / "nowhere", "train")
  with pytest.raises(DatasetError, match=r"has no manifest.json, so it is not a shards folder"):
    shards.open_split(source, "train")

  shard = out / "train.array_record-00000-of-00001"
  whole = shard.read_bytes()
  shard.write_bytes(whole[:len(whole) // 3])
  with pytest.raises(DatasetError, match=r"^Shard .*train.array_record-00000-of-00001 is damaged \(.+\); prepare"):
    shards.open_split(out, "train")
  shard.unlink()
  with pytest.raises(DatasetError, match=r"^Shard .*train.array_record-00000-of-00001 listed in .* is missing"):
    shards.open_split(out, "train")


def test_prepare_refuses_to_overwrite_other_data(tmp_path):
  source = make_folder(tmp_path / "set")
  out = tmp_path / "shards"
  shards.prepare_shards("folder", source, out, progress=False)
  _save(source / "train/s1/blur/000000.png", 999, size=(40, 40))
  _save(source / "train/s1/sharp/000000.png", 998, size=(40, 40))
  with pytest.raises(DatasetError, match=r"already holds finished shards of a train split whose files differ from"):
    shards.prepare_shards("folder", source, out, progress=False)
  with pytest.raises(DatasetError, match=r"already holds finished shards with dataset 'folder', not 'gopro'; delete"):
    shards.prepare_shards("gopro", source, out, progress=False)
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.txt").write_text("mine")
  with pytest.raises(DatasetError, match=r"busy exists and is not empty; delete it or choose another --out\.$"):
    shards.prepare_shards("folder", source, tmp_path / "busy", progress=False)
  assert os.listdir(tmp_path / "busy") == ["notes.txt"]
