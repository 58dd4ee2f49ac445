"""Pairs from video: a clip of the camera-shake synthesizer's sub-frames (what a high-speed camera records)
gives back the synthesizer's own linear-light average and middle frame, losslessly to a level and through
H.264 within a measured PSNR; scene cuts and still stretches are skipped; a clip lands in one split only; each
bad input is one sentence and a non-zero exit."""

import dataclasses
import json
import logging
import pathlib
import subprocess
import sys

import av
import numpy as np
import pytest
import skimage.data
from PIL import Image

from simplenet_jax.data import from_video
from simplenet_jax.data import layouts
from simplenet_jax.data import video_pairs
from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import linear_light

REPO = pathlib.Path(__file__).resolve().parent.parent
HEIGHT, WIDTH = 64, 96
SUB_FRAMES = 9  # per exposure; the tests pass --frames 9 9 so that each window is one exposure
# Measured on the clip of `exposure_frames(seed=0, 4)` (96×64, libx264 CRF 18, yuv420p; seeds 0–5 gave
# 37.7–39.6 dB for blur and 29.9–33.5 dB for sharp, chroma subsampling of the sharp detail costing most).
H264_BLUR_PSNR, H264_SHARP_PSNR = 36.0, 28.0


def exposure_frames(seed: int, exposures: int, length: float = 6.0, photo=None, sub_frames: int = SUB_FRAMES):
  """uint8 sRGB frames of `exposures` camera shakes, `sub_frames` each, and per exposure the synthesizer's
  blurred image (its linear-light average, as uint8) and sharp image (the middle pose: the canvas itself).

  Each exposure looks at the photo a few pixels further along, as a slowly panning camera would; the camera
  jumps between exposures, so a window that spans two of them reads as a scene cut."""
  rng = np.random.default_rng(seed)
  settings = dataclasses.replace(camera_shake.BlurSettings(), min_sub_frames=sub_frames, max_sub_frames=sub_frames)
  photo = skimage.data.astronaut()[::2, ::2] if photo is None else photo
  frames, expected = [], []
  for k in range(exposures):
    shake = camera_shake.random_shake(rng, length, (HEIGHT, WIDTH), settings)
    margin = camera_shake.margin_for(shake, HEIGHT, WIDTH)
    top, left = 40 + 2 * k, 60 + 3 * k
    canvas = photo[top:top + HEIGHT + 2 * margin, left:left + WIDTH + 2 * margin]
    frames += [linear_light.uint8_from_linear(sub)
               for sub in camera_shake.render_sub_frames(canvas, shake, HEIGHT, WIDTH, margin)]
    blur = linear_light.uint8_from_linear(camera_shake.render_blur(canvas, shake, HEIGHT, WIDTH, margin))
    expected.append((blur, canvas[margin:margin + HEIGHT, margin:margin + WIDTH]))
  return frames, expected


def write_clip(path: pathlib.Path, frames, codec: str = "ffv1", rate: int = 240, rotation: int = 0) -> pathlib.Path:
  """FFV1 in RGB (bgr0: lossless) or H.264 (yuv420p, CRF 18, as a camera would) at `rate` fps."""
  with av.open(str(path), "w") as container:
    if codec == "ffv1":
      stream = container.add_stream("ffv1", rate=rate)
      stream.pix_fmt = "bgr0"
    else:
      stream = container.add_stream("libx264", rate=rate, options={"crf": "18"})
      stream.pix_fmt = "yuv420p"
    stream.height, stream.width = frames[0].shape[:2]
    if rotation:
      stream.set_display_rotation(rotation)
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  return path


def read(out: pathlib.Path, split: str, scene: str, kind: str, frame: int) -> np.ndarray:
  return np.asarray(Image.open(out / split / scene / kind / f"{frame:06d}.png"))


def run(capsys, *argv) -> tuple[int, str, list[str]]:
  code = from_video.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err.strip().splitlines()


def linear_mean(frames) -> np.ndarray:
  """Independent of the package's sRGB lookup table: IEC 61966-2-1 written out in float64."""
  srgb = np.stack(frames).astype(np.float64) / 255
  linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).mean(axis=0)
  encoded = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
  return np.round(encoded * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shake_clip():
  return exposure_frames(seed=0, exposures=4)


def test_lossless_clip_gives_the_synthesizers_average_and_middle_frame(tmp_path, capsys, shake_clip):
  frames, expected = shake_clip
  clip = write_clip(tmp_path / "shake.mkv", frames)
  code, stdout, stderr = run(capsys, "--source", clip, "--out", tmp_path / "pairs", "--frames", 9, 9)
  assert code == 0, stderr
  assert "train: 4 pairs from 1 clips" in stdout
  out = tmp_path / "pairs"
  for k, (blur, sharp) in enumerate(expected):
    middle = SUB_FRAMES * k + SUB_FRAMES // 2
    got_blur, got_sharp = read(out, "train", "shake", "blur", middle), read(out, "train", "shake", "sharp", middle)
    assert np.abs(got_blur.astype(int) - blur).max() <= 1  # the video holds uint8 sub-frames; one rounding more
    np.testing.assert_array_equal(got_sharp, sharp)
  pairs = layouts.list_pairs("folder", out, "train")  # the `folder` data set reads it as it is
  assert [p.name for p in pairs] == [f"shake/{SUB_FRAMES * k + 4:06d}" for k in range(4)]
  assert layouts.check_pairs(pairs) == [(HEIGHT, WIDTH)] * 4
  meta = json.loads((out / "meta.json").read_text())
  assert [p["exposure_ms"] for p in meta["pairs"]] == [37.5] * 4  # 9 frames at 240 fps
  assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_h264_clip_is_within_the_measured_psnr_bound(tmp_path, capsys, shake_clip):
  frames, expected = shake_clip
  clip = write_clip(tmp_path / "shake.mp4", frames, codec="h264")
  code, _, stderr = run(capsys, "--source", clip, "--out", tmp_path / "pairs", "--frames", 9, 9)
  assert code == 0, stderr
  for k, (blur, sharp) in enumerate(expected):
    middle = SUB_FRAMES * k + SUB_FRAMES // 2
    assert video_pairs.psnr(read(tmp_path / "pairs", "train", "shake", "blur", middle), blur) > H264_BLUR_PSNR
    assert video_pairs.psnr(read(tmp_path / "pairs", "train", "shake", "sharp", middle), sharp) > H264_SHARP_PSNR


def test_drawn_odd_windows_each_average_their_own_frames(tmp_path, capsys):
  """GoPro's 7–13 range, windows starting every 5 frames (so they overlap), the first 4 pairs of one long
  camera path."""
  frames, _ = exposure_frames(seed=2, exposures=1, length=15.0, sub_frames=41)
  clip = write_clip(tmp_path / "shake.mkv", frames)
  out = tmp_path / "pairs"
  code, _, stderr = run(capsys, "--source", clip, "--out", out, "--stride", 5, "--max-pairs-per-clip", 4,
                        "--seed", 3)
  assert code == 0, stderr
  records = json.loads((out / "meta.json").read_text())["pairs"]
  assert [r["first_frame"] for r in records] == [0, 5, 10, 15]
  lengths = [r["frames"] for r in records]
  assert all(n % 2 and 7 <= n <= 13 for n in lengths) and len(set(lengths)) > 1, lengths
  for r in records:
    window = frames[r["first_frame"]:r["first_frame"] + r["frames"]]
    middle = r["first_frame"] + r["frames"] // 2
    assert r["frame"] == f"{middle:06d}.png"
    np.testing.assert_array_equal(read(out, "train", "shake", "sharp", middle), window[len(window) // 2])
    assert np.abs(read(out, "train", "shake", "blur", middle).astype(int) - linear_mean(window)).max() <= 1


def test_scene_cut_and_still_stretch_are_skipped_and_counted(tmp_path, capsys, shake_clip):
  """Windows: a shake | four frames of it, then a shake of another photo | one frame nine times | a shake."""
  frames, _ = shake_clip
  other, _ = exposure_frames(seed=1, exposures=1, photo=skimage.data.coffee()[::2, ::2])
  clip_frames = frames[:9] + frames[9:13] + other[4:] + [frames[22]] * 9 + frames[27:36]
  clip = write_clip(tmp_path / "cuts.mkv", clip_frames)
  out = tmp_path / "pairs"
  code, stdout, stderr = run(capsys, "--source", clip, "--out", out, "--frames", 9, 9)
  assert code == 0, stderr
  assert sorted(p.name for p in (out / "train" / "cuts" / "sharp").iterdir()) == ["000004.png", "000031.png"]
  summary = json.loads((out / "meta.json").read_text())["summary"]
  assert summary["skipped"] == {"scene_cut": 1, "static": 1, "slow_clips": 0}
  assert "Skipped 1 windows with a scene cut, 1 near-static windows (above 40 dB)" in stdout
  code, _, _ = run(capsys, "--source", clip, "--out", out, "--frames", 9, 9, "--static-psnr", "inf", "--overwrite")
  assert code == 0 and len(list((out / "train" / "cuts" / "sharp").iterdir())) == 3  # the still window too


@pytest.mark.parametrize("changes, cut", [
    ([7, 7, 40, 7, 7, 7], True),  # another shot mid-window, the camera moving in both
    ([0, 0, 0, 30, 0, 0], True),  # another shot in a still scene
    ([0, 0, 0, 12, 12, 12], False),  # the camera starts moving mid-window: blur, not a cut
    ([20, 22, 25, 21, 24, 23], False),  # a fast pan changes every frame alike
    ([0.5, 0.4, 6, 0.5, 0.6, 0.5], False),  # a flicker below CUT_MIN_LEVELS
])
def test_a_scene_cut_is_one_change_far_above_every_other(changes, cut):
  lumas = [np.full((4, 6), level, np.float32) for level in np.concatenate([[50.0], 50 + np.cumsum(changes)])]
  assert video_pairs.has_scene_cut(lumas) == cut


def test_each_clip_is_one_scene_in_one_split(tmp_path, capsys, shake_clip, caplog):
  frames, _ = shake_clip
  sources = tmp_path / "clips"
  (sources / "more").mkdir(parents=True)
  for i in range(4):
    write_clip(sources / f"walk{i}.mkv", frames[:18])
  write_clip(sources / "more" / "walk0.mkv", frames[18:36])  # the same stem: a scene of its own
  (sources / "notes.txt").write_text("not a clip")
  out = tmp_path / "pairs"
  code, stdout, stderr = run(capsys, "--source", sources, "--out", out, "--frames", 9, 9, "--test-fraction", 0.4)
  assert code == 0, stderr
  scenes = {split: sorted(p.name for p in (out / split).iterdir()) for split in layouts.SPLITS}
  assert len(scenes["test"]) == 2 and len(scenes["train"]) == 3
  assert sorted(scenes["train"] + scenes["test"]) == ["walk0", "walk0-2", "walk1", "walk2", "walk3"]
  clips = json.loads((out / "meta.json").read_text())["clips"]
  assert {c["scene"]: c["split"] for c in clips} == {s: split for split in scenes for s in scenes[split]}
  for split in layouts.SPLITS:
    assert len(layouts.list_pairs("folder", out, split)) == 2 * len(scenes[split])
  assert "train: 6 pairs from 3 clips" in stdout and "test: 4 pairs from 2 clips" in stdout

  # Same seed, same split; one clip goes to train with one warning line, and no test/ folder.
  code, _, stderr = run(capsys, "--source", sources, "--out", out, "--frames", 9, 9, "--test-fraction", 0.4,
                        "--overwrite")
  assert code == 0 and {s: sorted(p.name for p in (out / s).iterdir()) for s in layouts.SPLITS} == scenes
  with caplog.at_level(logging.WARNING):
    code, _, _ = run(capsys, "--source", sources / "walk1.mkv", "--out", tmp_path / "one", "--frames", 9, 9)
  assert code == 0 and not (tmp_path / "one" / "test").exists()
  assert [r.getMessage() for r in caplog.records if "test/" in r.getMessage()] == [
      "No clip goes to test/ (1 clips, --test-fraction 0.2), and training evaluates on test/: add another clip "
      "(a clip's frames never go to both splits, or the test would score scenes the model trained on)."]


def test_frame_rate_warning_capture_fps_and_min_fps(tmp_path, capsys, caplog, shake_clip):
  frames, _ = shake_clip
  clip = write_clip(tmp_path / "slowmo.mkv", frames[:18], rate=30)
  with caplog.at_level(logging.WARNING):
    code, _, _ = run(capsys, "--source", clip, "--out", tmp_path / "a", "--frames", 9, 9)
  warnings = [r.getMessage() for r in caplog.records if "fps" in r.getMessage()]
  assert code == 0 and warnings == [
      "1 of the clips are below 120 fps (slowmo.mkv: 30 fps, where 9 frames are a 300 ms exposure whose averaged "
      "frames ghost rather than blur; GoPro: 240 fps, 29–54 ms): pass --capture-fps if it is slow motion re-timed, "
      "or --min-fps to skip such clips."]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    code, _, _ = run(capsys, "--source", clip, "--out", tmp_path / "b", "--frames", 9, 9, "--capture-fps", 240)
  assert code == 0 and not [r for r in caplog.records if "fps" in r.getMessage()]
  assert json.loads((tmp_path / "b" / "meta.json").read_text())["pairs"][0]["exposure_ms"] == 37.5
  code, _, stderr = run(capsys, "--source", clip, "--out", tmp_path / "c", "--min-fps", 100)
  assert code == 1 and stderr == [
      "error: All 1 clips are below --min-fps 100 (the fastest is 30 fps); lower --min-fps or pass --capture-fps."]


def test_rotation_and_size(tmp_path, capsys, shake_clip):
  """A portrait clip stored as landscape frames plus a display rotation comes out upright; --size scales to
  cover and crops the centre."""
  frames, _ = shake_clip
  clip = write_clip(tmp_path / "portrait.mkv", frames[:9], rotation=90)
  code, _, stderr = run(capsys, "--source", clip, "--out", tmp_path / "a", "--frames", 9, 9)
  assert code == 0, stderr
  # FFmpeg's own autorotate turns a display rotation of +90° a quarter turn counter-clockwise (transpose=cclock).
  np.testing.assert_array_equal(read(tmp_path / "a", "train", "portrait", "sharp", 4), np.rot90(frames[4]))
  code, _, stderr = run(capsys, "--source", clip, "--out", tmp_path / "b", "--frames", 9, 9, "--size", 24, 40)
  assert code == 0, stderr
  upright = Image.fromarray(np.ascontiguousarray(np.rot90(frames[4])))  # 64 wide, 96 high: ×5/8 covers 40×24
  expected = np.asarray(upright.resize((40, 24), Image.Resampling.LANCZOS, box=(0, 28.8, 64, 67.2)))
  np.testing.assert_array_equal(read(tmp_path / "b", "train", "portrait", "sharp", 4), expected)


def test_default_size_fits_gopros_frame_in_either_orientation():
  landscape, portrait = video_pairs.Resize.plan(1080, 1920, None), video_pairs.Resize.plan(3840, 2160, None)
  assert (landscape.out_height, landscape.out_width, landscape.box) == (720, 1280, (0, 0, 1920, 1080))
  assert (portrait.out_height, portrait.out_width) == (1280, 720)
  assert video_pairs.Resize.plan(480, 640, None).identity  # smaller than GoPro's: kept as it is


def test_truncated_clip_keeps_the_pairs_that_decode_and_names_the_lost_frames(tmp_path, capsys, shake_clip):
  frames, _ = shake_clip
  clip = write_clip(tmp_path / "cut_short.mkv", frames)  # 36 frames
  data = clip.read_bytes()
  clip.write_bytes(data[:int(len(data) * 0.6)])
  out = tmp_path / "pairs"
  code, stdout, stderr = run(capsys, "--source", clip, "--out", out, "--frames", 9, 9)
  assert code == 1
  meta = json.loads((out / "meta.json").read_text())
  (record,) = meta["clips"]
  first_lost, last_lost = record["lost_frames"][0]
  assert 9 <= first_lost < 36 and last_lost == 35 and record["decoded_frames"] == first_lost
  assert record["pairs"] == first_lost // 9 >= 1 and f"train: {record['pairs']} pairs" in stdout
  assert stderr == [f"error: {clip.resolve()} is damaged: {36 - first_lost} of 36 frames did not decode (frames "
                    f"{first_lost}–35; the stream ends early), so its {record['pairs']} pairs come from the frames "
                    "that did; copy or export the clip again to use the rest."]


def audio_only(path: pathlib.Path) -> pathlib.Path:
  with av.open(str(path), "w") as container:
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


@pytest.mark.parametrize("case", ["text named .mp4", "audio only", "unwritable out", "empty folder",
                                  "missing source", "even frames", "existing out"])
def test_bad_input_is_one_sentence_and_exit_1(tmp_path, capsys, shake_clip, case):
  clip = write_clip(tmp_path / "ok.mkv", shake_clip[0][:9])
  out, args = tmp_path / "pairs", []
  if case == "text named .mp4":
    (tmp_path / "notes.mp4").write_text("hello")
    source = tmp_path / "notes.mp4"
    expected = (f"error: {source} is not a video FFmpeg can read (Invalid data found when processing input); "
                "remove it from --source, or export it again if the recording was cut short.")
  elif case == "audio only":
    source = audio_only(tmp_path / "voice.mkv")
    expected = f"error: {source} has no video stream (it holds audio); remove it from --source."
  elif case == "unwritable out":
    (tmp_path / "file").write_text("")
    source, out = clip, tmp_path / "file" / "pairs"
    expected = f"error: Cannot write to {out} (Not a directory); pass --out a folder you can write."
  elif case == "empty folder":
    (tmp_path / "empty").mkdir()
    source = tmp_path / "empty"
    expected = (f"error: No videos (.mp4, .mov, .m4v, .mkv, .webm, .avi) found in {source}; pass --source video "
                "files or folders that hold them.")
  elif case == "missing source":
    source = tmp_path / "nowhere"
    expected = f"error: --source {source} does not exist; pass video files or folders that hold them."
  elif case == "even frames":
    source, args = clip, ["--frames", 8, 8]
    expected = ("error: --frames 8 8 holds no odd frame count; give a range such as 7 13 (GoPro's), whose middle "
                "frame is the sharp target.")
  else:
    (out / "train").mkdir(parents=True)
    source = clip
    expected = f"error: {out} exists and is not empty; pass --overwrite to replace it, or choose another --out."
  code, stdout, stderr = run(capsys, "--source", source, "--out", out, *args)
  assert code == 1 and len(stderr) == 1 and stderr[0].startswith(expected), stderr
  assert stderr[0].endswith(".") and "Traceback" not in stdout
  if case != "existing out":
    assert not out.exists() or not any(out.iterdir())
  assert not list(tmp_path.glob("**/*.partial"))


@pytest.mark.slow
def test_command_line_pairs_feed_prepare_and_bad_input_has_no_traceback(tmp_path, shake_clip):
  clips = [write_clip(tmp_path / "shake.mkv", shake_clip[0]), write_clip(tmp_path / "again.mkv", shake_clip[0][:18])]
  (tmp_path / "notes.mp4").write_text("hello")

  def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)

  out = tmp_path / "pairs"
  done = cli("simplenet_jax.data.from_video", "--source", *clips, "--out", out, "--frames", 9, 9)
  assert done.returncode == 0 and not done.stderr, done.stderr
  assert "train: 2 pairs from 1 clips" in done.stdout and "test: 4 pairs from 1 clips" in done.stdout
  assert f"Wrote the data set to {out}" in done.stdout
  built = cli("simplenet_jax.data.prepare", "--dataset", "folder", "--source", out)  # as the README says
  assert built.returncode == 0, built.stderr[-2000:]
  assert "train: 2 pairs" in built.stdout and "test: 4 pairs" in built.stdout
  bad = cli("simplenet_jax.data.from_video", "--source", tmp_path / "notes.mp4", "--out", tmp_path / "other")
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.startswith(f"error: {tmp_path / 'notes.mp4'} is not a video FFmpeg can read (")
