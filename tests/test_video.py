"""simplenet-deblur on videos (simplenet_jax/video.py): real encoded files, made here with PyAV.

The reference for every frame is the photo path: the same frame written as a PNG and deblurred by the same
command. Timestamps, rotation and audio are read back from the files with PyAV, independently of the code
under test.
"""

import fractions
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")  # the video extra; scripts/setup.sh installs it

from simplenet_jax import deblur  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MS = fractions.Fraction(1, 1000)


def make_clip(path: pathlib.Path, frames: int = 40, size: tuple[int, int] = (37, 65), codec: str = "ffv1",
              rotation: int = 90, audio: bool = True, seed: int = 0, options: dict | None = None
              ) -> tuple[list[np.ndarray], np.ndarray]:
  """A clip of a moving textured scene at a variable frame rate (steps of 20–49 ms), rotated for display,
  with a mono 8 kHz audio track of noise; returns (the frames as encoded, their timestamps in ms)."""
  rng = np.random.default_rng(seed)
  height, width = size
  scene = np.asarray(Image.fromarray(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), np.uint8))
                     .resize((width + frames, height), Image.Resampling.BICUBIC))
  stamps = np.concatenate([[0], np.cumsum(rng.integers(20, 50, frames - 1))])
  output = av.open(str(path), "w")
  video = output.add_stream(codec, rate=30, options=options or {})
  video.width, video.height = width, height
  video.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
  video.codec_context.time_base = MS
  if rotation:
    video.set_display_rotation(rotation)
  sound = None
  if audio:
    sound = output.add_stream("pcm_s16le" if path.suffix == ".mkv" else "aac", rate=8000, layout="mono")
  images = []
  for i, stamp in enumerate(stamps):
    image = np.ascontiguousarray(scene[:, i:i + width])
    images.append(image)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts, frame.time_base = int(stamp), MS
    output.mux(video.encode(frame))
  output.mux(video.encode(None))
  if sound is not None:
    samples = (rng.standard_normal((1, int(8 * (stamps[-1] + 33)))) * 3000).astype(np.int16)
    pcm = sound.codec_context.name == "pcm_s16le"
    for start in range(0, samples.shape[1], 1024):
      part = samples[:, start:start + 1024]
      frame = av.AudioFrame.from_ndarray(part if pcm else (part / 32768).astype(np.float32),
                                         format="s16" if pcm else "fltp", layout="mono")
      frame.sample_rate, frame.pts = 8000, start
      output.mux(sound.encode(frame))
    output.mux(sound.encode(None))
  output.close()
  return images, stamps


def read_clip(path: pathlib.Path) -> dict:
  """What a player sees: frames (RGB), their times, rotation, the stream's codec and size, and the audio."""
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
            "size": (stream.codec_context.height, stream.codec_context.width), "rate": stream.average_rate}
    frames = list(container.decode(video=0))
    info["images"] = [frame.to_ndarray(format="rgb24") for frame in frames]
    info["times"] = np.array([frame.time for frame in frames])
    info["rotation"] = {frame.rotation for frame in frames}
  with av.open(str(path)) as container:
    info["audio_codec"] = container.streams.audio[0].codec_context.name if container.streams.audio else None
    info["audio_packets"] = [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(audio=0)
                             if p.size] if container.streams.audio else []
  return info


@pytest.fixture(scope="module")
def lossless_clip(tmp_path_factory):
  path = tmp_path_factory.mktemp("clips") / "walk.mkv"
  images, stamps = make_clip(path)
  return path, images, stamps


def _deblur(workdir, *args) -> int:
  return deblur.main(["--workdir", str(workdir), *map(str, args)])


def test_lossless_clip_matches_the_photo_path_frame_by_frame(trained_workdir, lossless_clip, tmp_path):
  path, images, stamps = lossless_clip
  assert _deblur(trained_workdir, path, "--out", tmp_path / "video", "--codec", "ffv1", "--chunk-frames", 16) == 0
  result = read_clip(tmp_path / "video" / "walk.mkv")
  source = read_clip(path)
  # The photo path on the same frames, one PNG each.
  stills = tmp_path / "stills"
  stills.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image).save(stills / f"{i:03d}.png")
  assert _deblur(trained_workdir, stills, "--out", tmp_path / "photos") == 0
  photos = [np.asarray(Image.open(tmp_path / "photos" / f"{i:03d}.png")) for i in range(len(images))]

  assert len(result["images"]) == len(images) == 40
  assert result["codec"] == "ffv1" and result["size"] == (37, 65)  # lossless keeps the odd size
  np.testing.assert_allclose(result["times"], stamps / 1000, atol=1e-9)  # variable frame rate kept
  assert result["rate"] == source["rate"]
  assert result["rotation"] == {90}
  assert result["audio_packets"] == source["audio_packets"]  # copied, not re-encoded
  changed = 0
  for frame, photo, original in zip(result["images"], photos, images):
    assert np.abs(frame.astype(int) - photo.astype(int)).max() <= 1
    changed += not np.array_equal(frame, original)
  assert changed == len(images)  # the network did change every frame


def test_h264_default_plays_everywhere_and_pads_odd_sizes(trained_workdir, tmp_path):
  path = tmp_path / "odd.mkv"  # odd sizes come from lossless sources; 4:2:0 needs even ones
  make_clip(path, frames=12, size=(37, 65), audio=False)
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out") == 0
  result = read_clip(tmp_path / "out" / "odd.mkv")
  assert (result["codec"], result["pix_fmt"]) == ("h264", "yuv420p")
  assert result["size"] == (38, 66) and len(result["images"]) == 12
  # The padding repeats the last row and column.
  for frame in result["images"]:
    assert np.abs(frame[-1].astype(int) - frame[-2].astype(int)).mean() < 4
    assert np.abs(frame[:, -1].astype(int) - frame[:, -2].astype(int)).mean() < 4


def test_mp4_with_aac_keeps_container_audio_and_times(trained_workdir, tmp_path):
  path = tmp_path / "phone.mp4"
  images, stamps = make_clip(path, frames=20, size=(36, 64), codec="libx264")
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--crf", "10") == 0
  result, source = read_clip(tmp_path / "out" / "phone.mp4"), read_clip(path)
  assert result["codec"] == "h264" and result["audio_codec"] == "aac"
  assert result["audio_packets"] == source["audio_packets"]
  np.testing.assert_allclose(result["times"], source["times"], atol=1e-4)
  assert result["rotation"] == {90}


def test_webm_gets_vp9(trained_workdir, tmp_path):
  path = tmp_path / "clip.mkv"
  make_clip(path, frames=6, size=(36, 64), audio=False)
  webm = tmp_path / "clip.webm"
  with av.open(str(path)) as src, av.open(str(webm), "w") as dst:
    stream = dst.add_stream("libvpx-vp9", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
    for frame in src.decode(video=0):
      frame.pts = None
      dst.mux(stream.encode(frame.reformat(format="yuv420p")))
    dst.mux(stream.encode(None))
  assert _deblur(trained_workdir, webm, "--out", tmp_path / "out") == 0
  result = read_clip(tmp_path / "out" / "clip.webm")
  assert result["codec"] == "vp9" and len(result["images"]) == 6


def test_start_and_end_deblur_a_part(trained_workdir, lossless_clip, tmp_path):
  path, _, stamps = lossless_clip
  start, end = 0.3, 0.9
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--codec", "ffv1", "--start", start,
                 "--end", end) == 0
  result = read_clip(tmp_path / "out" / "walk.mkv")
  kept = stamps[(stamps >= start * 1000) & (stamps < end * 1000)] / 1000
  np.testing.assert_allclose(result["times"], kept - start, atol=1e-9)
  source_audio = [(t - start, data) for t, data in read_clip(path)["audio_packets"] if start <= t < end]
  assert [data for _, data in result["audio_packets"]] == [data for _, data in source_audio]
  np.testing.assert_allclose([t for t, _ in result["audio_packets"]], [t for t, _ in source_audio], atol=1e-3)


def test_existing_output_is_kept_unless_overwrite(trained_workdir, lossless_clip, tmp_path, capsys):
  path, _, _ = lossless_clip
  out = tmp_path / "out"
  out.mkdir()
  (out / "walk.mkv").write_bytes(b"earlier")
  assert _deblur(trained_workdir, path, "--out", out, "--end", 0.2) == 0
  assert (out / "walk.mkv").read_bytes() == b"earlier"
  assert "kept the existing" in capsys.readouterr().out
  assert _deblur(trained_workdir, path, "--out", out, "--end", 0.2, "--overwrite") == 0
  assert len(read_clip(out / "walk.mkv")["images"]) > 0
  assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no chunks or partial files left


def _error_lines(capsys) -> list[str]:
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return [line.strip() for line in err.splitlines() if line.strip()]


def test_bad_videos_are_one_sentence_each_and_the_rest_is_deblurred(trained_workdir, lossless_clip, tmp_path,
                                                                     capsys):
  path, _, _ = lossless_clip
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  (inputs / "notes.mp4").write_text("this is not a video\n")
  audio_only = inputs / "song.mkv"
  with av.open(str(audio_only), "w") as output:
    stream = output.add_stream("pcm_s16le", rate=8000, layout="mono")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, 0
    output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
  good = inputs / "good.mkv"
  good.write_bytes(path.read_bytes())
  assert _deblur(trained_workdir, inputs, "--out", tmp_path / "out", "--end", 0.2) == 1
  lines = _error_lines(capsys)
  assert any("notes.mp4: not a video FFmpeg can read" in line for line in lines)
  assert any("song.mkv: no video stream" in line for line in lines)
  assert (tmp_path / "out" / "good.mkv").exists()
  assert not (tmp_path / "out" / "notes.mp4").exists() and not (tmp_path / "out" / "song.mkv").exists()


def test_a_clip_corrupt_mid_way_keeps_what_decodes_and_names_what_was_lost(trained_workdir, tmp_path, capsys):
  path = tmp_path / "damaged.mkv"
  # FFV1 version 3 checks each slice's CRC, so FFmpeg notices the damage (and conceals it).
  make_clip(path, frames=30, audio=False, options={"level": "3", "slicecrc": "1"})
  data = bytearray(path.read_bytes())
  for at in (len(data) // 3, len(data) // 2):
    data[at:at + 100] = bytes(100)
  path.write_bytes(bytes(data))
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--codec", "ffv1") == 1
  lines = _error_lines(capsys)
  report = [line for line in lines if "damaged.mkv: the clip is damaged in 2 place(s)" in line]
  assert report and report[0].count("decoded with errors") == 2 and "CRC" in report[0]
  assert len(read_clip(tmp_path / "out" / "damaged.mkv")["images"]) == 30


def test_a_truncated_clip_keeps_what_decodes_and_says_it_ends_early(trained_workdir, tmp_path, capsys):
  path = tmp_path / "cut.mkv"
  make_clip(path, frames=30, audio=True)
  path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--codec", "ffv1") == 1
  assert any("cut.mkv" in line and "ends early" in line for line in _error_lines(capsys))
  assert 10 < len(read_clip(tmp_path / "out" / "cut.mkv")["images"]) < 30


def test_a_cut_off_mp4_is_not_readable_and_says_so(trained_workdir, tmp_path, capsys):
  path = tmp_path / "cut.mp4"
  make_clip(path, frames=30, size=(36, 64), codec="libx264", audio=False)
  # mp4 keeps its index at the end: a cut-off mp4 cannot be read at all.
  path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out") == 1
  assert any("cut.mp4: not a video FFmpeg can read" in line for line in _error_lines(capsys))


def test_unavailable_codec_and_bad_numbers_are_one_sentence(trained_workdir, lossless_clip, tmp_path, capsys):
  path, _, _ = lossless_clip
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--codec", "prores_nonexistent") == 1
  assert any("not available" in line for line in _error_lines(capsys))
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--crf", "99") == 1
  assert any("--crf for libx264 must be in 0..51" in line for line in _error_lines(capsys))
  assert _deblur(trained_workdir, path, "--out", tmp_path / "out", "--start", "2", "--end", "1") == 1
  assert any("must come after --start" in line for line in _error_lines(capsys))
  with pytest.raises(SystemExit):
    _deblur(trained_workdir, path, "--out", tmp_path / "out", "--batch-size", "0")
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert _deblur(trained_workdir, path, "--out", blocker / "out") == 1
  assert any(f"cannot write to the output folder {blocker / 'out'}" in line for line in _error_lines(capsys))
  assert not (tmp_path / "out" / "walk.mp4").exists() and not (tmp_path / "out" / "walk.mkv").exists()


@pytest.mark.slow
def test_kill_9_mid_clip_then_rerun_gives_the_uninterrupted_file(trained_workdir, tmp_path, capsys):
  path = tmp_path / "long.mkv"
  make_clip(path, frames=120, audio=True)
  flags = ["--workdir", str(trained_workdir), str(path), "--codec", "ffv1", "--chunk-frames", "8", "--batch-size", "1"]
  command = [sys.executable, "-m", "simplenet_jax.deblur", *flags]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  reference = tmp_path / "reference"
  assert deblur.main(flags + ["--out", str(reference)]) == 0  # uninterrupted, in this process

  out = tmp_path / "out"
  chunks = out / ".long.mkv.chunks"
  process = subprocess.Popen(command + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 300
  while len(list(chunks.glob("*.mkv"))) < 3 and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (out / "long.mkv").exists()
  finished = len(list(chunks.glob("*.mkv")))
  assert 3 <= finished < 15

  capsys.readouterr()
  assert deblur.main(flags + ["--out", str(out)]) == 0  # the same command again (in this process: no new start)
  assert f"({finished * 8} from the chunks of an earlier run)" in capsys.readouterr().out
  result, expected = read_clip(out / "long.mkv"), read_clip(reference / "long.mkv")
  assert len(result["images"]) == 120
  np.testing.assert_array_equal(result["times"], expected["times"])
  for frame, reference_frame in zip(result["images"], expected["images"]):
    np.testing.assert_array_equal(frame, reference_frame)
  assert result["audio_packets"] == expected["audio_packets"]
  assert not chunks.exists()


def test_both_video_commands_take_the_same_files():
  from simplenet_jax import photos  # pylint: disable=g-import-not-at-top
  from simplenet_jax.data import video_pairs  # pylint: disable=g-import-not-at-top
  from simplenet_jax import video  # pylint: disable=g-import-not-at-top
  assert photos.VIDEO_SUFFIXES == video_pairs.VIDEO_SUFFIXES
  assert set(video.FORMATS) == set(photos.VIDEO_SUFFIXES) == set(video.CONTAINER_CODECS)
