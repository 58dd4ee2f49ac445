"""Training pairs from your own high-frame-rate clips, made the way GoPro was (Nah et al. 2017).

A window of N consecutive frames (N odd, drawn from GoPro's 7–13) is averaged in linear light, as a sensor
integrates light over a longer exposure; the middle frame is the sharp target. Each clip is one scene, and a
clip goes wholly to train or to test, so that the test split scores scenes the model never saw.
`build_pairs` writes `DIR/{train,test}/<scene>/{blur,sharp}/NNNNNN.png` (NNNNNN: the middle frame's index in
the clip) and `DIR/meta.json`, the layout that `layouts.gopro_layout_pairs` (the `folder` data set) reads.

Clips are decoded one frame at a time (PyAV) and only the last window's frames are held, so a clip of any
length fits in memory. Windows that are no use for training are skipped and counted: one that holds a scene
cut (its average mixes two shots), and one whose blur is already as sharp as its target (a still camera and
scene: nothing to learn).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import shutil
from collections.abc import Iterator
from collections.abc import Sequence

import av
import numpy as np
import tqdm
from PIL import Image

from simplenet_jax import paths
from simplenet_jax import video
from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data.images import DatasetError
from simplenet_jax.data.synthesis import linear_light

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")  # as photos.VIDEO_SUFFIXES (photos imports JAX)
GOPRO_FRAMES = (7, 13)  # frames averaged per blurred image in GoPro
GOPRO_FPS = 240  # GoPro's capture rate: 7–13 frames are a 29–54 ms exposure
LOW_FPS = 120  # below this, a 7-frame window is over 58 ms and moving edges ghost rather than smear
MAX_SIZE = (720, 1280)  # GoPro's frames; larger clips are scaled down to fit (either orientation)
DEFAULT_STATIC_PSNR = 40.0  # dB: a blurred image this close to its target has no blur worth learning
DEFAULT_TEST_FRACTION = 0.2
META_FILE = "meta.json"
META_VERSION = 1

# A scene cut is one frame-to-frame change far larger than any other in the window; camera motion, however
# fast, changes consecutive pairs of frames alike. Luma is compared at about CUT_SIDE pixels across, where
# motion of a few pixels barely registers but a different shot does.
CUT_RATIO = 4.0
CUT_MIN_LEVELS = 10.0  # mean absolute luma difference, 8-bit levels, below which no change is a cut
CUT_SIDE = 32

# A duration-based frame count can be off by a frame from rounding; more missing frames than this are lost.
_COUNT_SLACK = 0.01

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How pairs are cut from the clips (meta.json's "recipe").

  Attributes:
    frames: (min, max) frames averaged per blurred image; each window draws an odd N in that range, as GoPro's
      sharp frames sit in the middle of their exposure.
    stride: frames from one window's start to the next's; None: the window's own length, so no frame is in
      two pairs (overlapping windows give near-duplicate pairs).
    size: (height, width) of every pair: frames are scaled to cover it and centre-cropped; None: the clip's
      size, scaled down to fit MAX_SIZE.
    max_pairs_per_clip: the first this many pairs of each clip; None: all.
    test_fraction: share of the clips (not pairs) in the test split.
    seed: draws the window lengths and the split.
    static_psnr: windows whose blurred image is above this PSNR against its target are skipped.
    min_fps: clips captured below this rate are skipped.
    capture_fps: the rate the clips were captured at, for slow motion re-timed to a slower container rate;
      None: each stream's own rate.
  """

  frames: tuple[int, int] = GOPRO_FRAMES
  stride: int | None = None
  size: tuple[int, int] | None = None
  max_pairs_per_clip: int | None = None
  test_fraction: float = DEFAULT_TEST_FRACTION
  seed: int = 0
  static_psnr: float = DEFAULT_STATIC_PSNR
  min_fps: float = 0.0
  capture_fps: float | None = None

  def check(self) -> None:
    """One DatasetError sentence for a setting no clip could use."""
    low, high = self.frames
    if low < 1 or high < low or not odd_lengths(self.frames):
      raise DatasetError(f"--frames {low} {high} holds no odd frame count; give a range such as 7 13 (GoPro's), "
                         "whose middle frame is the sharp target.")
    if self.stride is not None and self.stride < 1:
      raise DatasetError(f"--stride must be at least 1, got {self.stride}.")
    if self.size is not None and min(self.size) < 1:
      raise DatasetError(f"--size {self.size[0]} {self.size[1]} is empty; give a height and width in pixels.")
    if self.max_pairs_per_clip is not None and self.max_pairs_per_clip < 1:
      raise DatasetError(f"--max-pairs-per-clip must be at least 1, got {self.max_pairs_per_clip}.")
    if not 0 <= self.test_fraction < 1:
      raise DatasetError(f"--test-fraction must be in [0, 1), got {self.test_fraction}.")
    if self.capture_fps is not None and self.capture_fps <= 0:
      raise DatasetError(f"--capture-fps must be positive, got {self.capture_fps}.")


def odd_lengths(frames: tuple[int, int]) -> list[int]:
  low, high = frames
  return [n for n in range(max(low, 1), high + 1) if n % 2]


# --- Finding and probing clips ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clip:
  """A video file as its container describes it, before any frame is decoded."""

  path: pathlib.Path
  scene: str
  fps: float  # capture rate: --capture-fps, or the stream's average rate
  stream_fps: float
  expected_frames: int | None  # from the container: exact (a frame count) or from the duration
  exact_count: bool


def find_clips(sources: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
  """The files named and the videos (VIDEO_SUFFIXES) in the folders named, each once, in order."""
  found: list[pathlib.Path] = []
  for source in sources:
    source = pathlib.Path(source).expanduser()
    if source.is_dir():
      found += sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(source).parts))
    elif source.is_file():
      found.append(source)
    else:
      raise DatasetError(f"--source {source} does not exist; pass video files or folders that hold them.")
  unique = list(dict.fromkeys(p.resolve() for p in found))
  if not unique:
    raise DatasetError(f"No videos ({', '.join(VIDEO_SUFFIXES)}) found in {', '.join(map(str, sources))}; pass "
                       "--source video files or folders that hold them.")
  return unique


def scene_names(clips: Sequence[pathlib.Path]) -> list[str]:
  """Each clip's file stem, made safe as a folder name; a repeated stem gets -2, -3, … in order."""
  names, seen = [], collections.Counter()
  for clip in clips:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip.stem).strip("._") or "clip"
    seen[stem] += 1
    name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
    while name in names:  # a stem that already ends in -2
      seen[stem] += 1
      name = f"{stem}-{seen[stem]}"
    names.append(name)
  return names


def probe_clip(path: pathlib.Path, scene: str, capture_fps: float | None) -> Clip:
  """Opens the container and reads its video stream's rate and length: one DatasetError sentence for a file
  that is not a video, has no video stream or does not say its frame rate."""
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
        raise DatasetError(f"{path} has no video stream (it holds {', '.join(kinds)}); remove it from --source.")
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      if rate is None and capture_fps is None:
        raise DatasetError(f"{path} does not say its frame rate; pass --capture-fps.")
      stream_fps = float(rate) if rate else float(capture_fps)
      expected, exact = _expected_frames(container, stream, stream_fps)
  except av.FFmpegError as error:
    raise DatasetError(f"{path} is not a video FFmpeg can read ({_reason(error)}); remove it from "
                       "--source, or export it again if the recording was cut short.") from None
  return Clip(path, scene, float(capture_fps or stream_fps), stream_fps, expected, exact)


def _reason(error: av.FFmpegError) -> str:
  """FFmpeg's words without the errno and the file name, which the sentence around them already gives."""
  return getattr(error, "strerror", None) or paths.first_line(error)


def _expected_frames(container, stream, fps: float) -> tuple[int | None, bool]:
  if stream.frames:
    return int(stream.frames), True
  if stream.duration is not None and stream.time_base is not None:
    seconds = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    seconds = container.duration / av.time_base
  else:
    return None, False
  return round(seconds * fps), False


def split_clips(count: int, test_fraction: float, seed: int) -> list[str]:
  """The split of each clip: a `test_fraction` share of them in test (at least one of each when there are two
  or more clips and the fraction is above 0), drawn by `seed`."""
  tests = round(test_fraction * count)
  if count >= 2 and test_fraction > 0:
    tests = min(max(tests, 1), count - 1)
  tests = min(tests, count - 1) if count else 0
  order = np.random.default_rng([seed, count]).permutation(count)
  in_test = set(order[:tests].tolist())
  return ["test" if i in in_test else "train" for i in range(count)]


# --- Frames -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Decoding:
  """What decoding a clip found: frames that decoded and the frames lost to damage."""

  decoded: int = 0
  lost: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # [first, last] frame ranges
  reason: str = ""  # the first decoder or demuxer error
  finished: bool = False  # decoding reached the end of the file (not stopped by the pair cap)

  @property
  def lost_count(self) -> int:
    return sum(last - first + 1 for first, last in self.lost)

  def lose(self, first: int, last: int, reason: str) -> None:
    self.reason = self.reason or reason
    if self.lost and self.lost[-1][1] + 1 == first:
      self.lost[-1] = (self.lost[-1][0], last)
    else:
      self.lost.append((first, last))


def decode_frames(path: pathlib.Path, decoding: Decoding) -> Iterator[tuple[int, av.VideoFrame | None]]:
  """(index, frame) for every frame of the clip's first video stream in order, None for a frame lost to a
  damaged packet; a file that ends early just ends (the caller compares the count with the container's).

  Packets are decoded one by one, so that a damaged one costs its frame rather than the rest of the clip.
  """
  index = 0
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
      for packet in container.demux(stream):
        try:
          frames = packet.decode()
        except av.FFmpegError as error:
          if packet.size:
            decoding.lose(index, index, _reason(error))
            yield index, None
            index += 1
          continue
        for frame in frames:
          if frame.is_corrupt:
            decoding.lose(index, index, "a corrupt frame")
            yield index, None
          else:
            decoding.decoded += 1
            yield index, frame
          index += 1
    except av.FFmpegError as error:  # the demuxer cannot go on: the rest of the file is lost
      decoding.reason = decoding.reason or _reason(error)
  decoding.finished = True


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
  """uint8 RGB [H, W, 3] of a decoded frame, turned as the stream's display matrix says (phones record
  portrait clips as landscape frames plus a rotation). Rotations other than quarter turns are left as they are."""
  rgb = video.to_rgb(frame)  # in the frame's own colour matrix and range, as simplenet-deblur reads it
  turns = (frame.rotation or 0) / 90
  if turns != round(turns):
    return rgb
  return np.ascontiguousarray(np.rot90(rgb, int(round(turns)) % 4))  # rotation is counter-clockwise


@dataclasses.dataclass(frozen=True)
class Resize:
  """Frames of (height, width) → (out_height, out_width): scaled to cover it, centre-cropped (`box`)."""

  out_height: int
  out_width: int
  box: tuple[float, float, float, float]  # left, top, right, bottom in source pixels
  identity: bool

  @classmethod
  def plan(cls, height: int, width: int, size: tuple[int, int] | None) -> Resize:
    if size is None:  # fit GoPro's 1280×720 in the frame's own orientation, never scaling up
      limits = MAX_SIZE if height <= width else MAX_SIZE[::-1]
      scale = min(1.0, limits[0] / height, limits[1] / width)
      out = (max(1, round(height * scale)), max(1, round(width * scale)))
      box = (0.0, 0.0, float(width), float(height))
    else:
      out = tuple(size)
      scale = max(out[0] / height, out[1] / width)
      box_w, box_h = out[1] / scale, out[0] / scale
      left, top = (width - box_w) / 2, (height - box_h) / 2
      box = (left, top, left + box_w, top + box_h)
    identity = out == (height, width) and box == (0.0, 0.0, float(width), float(height))
    return cls(out[0], out[1], box, identity)

  def __call__(self, rgb: np.ndarray) -> np.ndarray:
    if self.identity:
      return rgb
    image = Image.fromarray(rgb).resize((self.out_width, self.out_height), Image.Resampling.LANCZOS, box=self.box)
    return np.asarray(image)


# --- Pairs ------------------------------------------------------------------------------------------------------


def gopro_pair(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """The blurred image and its sharp target from N consecutive uint8 sRGB frames, N odd: the frames' mean in
  linear light, and the middle frame.

  Nah et al. (2017) average through the inverse of the camera response (a gamma of 2.2); here it is the sRGB
  curve of `linear_light`, the one the synthesizer blurs with, so that both kinds of pair agree.
  """
  total = np.zeros(frames[0].shape, np.float64)
  for frame in frames:
    total += linear_light.linear_from_uint8(frame)
  return linear_light.uint8_from_linear(total / len(frames)), frames[len(frames) // 2]


def small_luma(rgb: np.ndarray) -> np.ndarray:
  """Luma (8-bit levels) averaged over blocks, about CUT_SIDE blocks across the longer side."""
  block = max(1, max(rgb.shape[:2]) // CUT_SIDE)
  luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  height, width = (luma.shape[0] // block) * block, (luma.shape[1] // block) * block
  return luma[:height, :width].reshape(height // block, block, width // block, block).mean(axis=(1, 3))


def has_scene_cut(lumas: Sequence[np.ndarray]) -> bool:
  """Whether one frame-to-frame change is `CUT_RATIO` times any other in the window.

  Against the second-largest change rather than the median: a camera that starts moving mid-window changes
  half its frame pairs a lot and half not at all, and that is blur, not a cut.
  """
  changes = sorted(float(np.abs(b - a).mean()) for a, b in zip(lumas, lumas[1:]))
  if not changes:
    return False
  runner_up = changes[-2] if len(changes) > 1 else 0.0
  return changes[-1] > max(CUT_MIN_LEVELS, CUT_RATIO * runner_up)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
  return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclasses.dataclass
class ClipResult:
  """meta.json's record of one clip."""

  file: str
  scene: str
  split: str
  fps: float
  stream_fps: float
  expected_frames: int | None
  decoded_frames: int = 0
  lost_frames: list[tuple[int, int]] = dataclasses.field(default_factory=list)
  lost_reason: str = ""
  rotation_deg: int = 0
  size: tuple[int, int] | None = None
  pairs: int = 0
  scene_cuts: int = 0
  static: int = 0
  skipped: str = ""  # why the whole clip was skipped


def clip_pairs(clip: Clip, split: str, out: pathlib.Path, recipe: Recipe, records: list[dict]) -> ClipResult:
  """Decodes the clip, writes its pairs under `out/split/scene/` and appends their records."""
  result = ClipResult(str(clip.path), clip.scene, split, clip.fps, clip.stream_fps, clip.expected_frames)
  rng = np.random.default_rng([recipe.seed, *clip.scene.encode()])
  lengths = odd_lengths(recipe.frames)
  length = int(rng.choice(lengths))
  start = 0
  recent: collections.deque = collections.deque(maxlen=max(lengths))  # (index, rgb, luma) of the last frames
  resize, first_shape = None, None
  decoding = Decoding()
  frames = decode_frames(clip.path, decoding)
  bar = tqdm.tqdm(total=clip.expected_frames, desc=clip.scene, unit="frame", disable=None, leave=False)
  try:
    for index, frame in frames:
      bar.update()
      if frame is None:  # no window may span a lost frame
        recent.clear()
        start = max(start, index + 1)
        continue
      if index < start:
        continue  # between windows (a stride longer than the window): not even converted
      rgb = upright_rgb(frame)
      if resize is None:
        first_shape, resize = rgb.shape, Resize.plan(rgb.shape[0], rgb.shape[1], recipe.size)
        result.rotation_deg, result.size = int(frame.rotation or 0), (resize.out_height, resize.out_width)
        if result.rotation_deg % 90:
          _log.warning("%s asks to be shown turned by %d°; only quarter turns are applied, so its pairs are not "
                       "turned.", clip.path, result.rotation_deg)
      if rgb.shape != first_shape:  # a stream that changes size mid-way: keep the first frame's
        rgb = np.asarray(Image.fromarray(rgb).resize(first_shape[1::-1], Image.Resampling.LANCZOS))
      rgb = resize(rgb)
      recent.append((index, rgb, small_luma(rgb)))
      if index < start + length - 1:
        continue
      window = list(recent)[-length:]
      if window[0][0] != start:  # frames went missing inside it
        start, length = index + 1, int(rng.choice(lengths))
        continue
      middle = start + length // 2
      start, length = start + (recipe.stride or length), int(rng.choice(lengths))
      if has_scene_cut([luma for _, _, luma in window]):
        result.scene_cuts += 1
        continue
      blur, sharp = gopro_pair([rgb for _, rgb, _ in window])
      input_psnr = psnr(blur, sharp)
      if input_psnr > recipe.static_psnr:
        result.static += 1
        continue
      _write_pair(out / split / clip.scene, f"{middle:06d}.png", blur, sharp)
      records.append({"split": split, "scene": clip.scene, "frame": f"{middle:06d}.png",
                      "first_frame": window[0][0], "frames": len(window),
                      "exposure_ms": round(1000 * len(window) / clip.fps, 2), "input_psnr_db": round(input_psnr, 3)})
      result.pairs += 1
      if recipe.max_pairs_per_clip and result.pairs >= recipe.max_pairs_per_clip:
        break
  finally:
    frames.close()
    bar.close()
  result.decoded_frames = decoding.decoded
  if decoding.finished:
    _count_lost_tail(clip, decoding)
  result.lost_frames, result.lost_reason = decoding.lost, decoding.reason
  return result


def _count_lost_tail(clip: Clip, decoding: Decoding) -> None:
  """Frames the container promises beyond those that decoded were lost where the file breaks off."""
  seen = decoding.decoded + decoding.lost_count
  if clip.expected_frames is None:
    return
  missing = clip.expected_frames - seen
  if missing > (0 if clip.exact_count else max(1, _COUNT_SLACK * clip.expected_frames)):
    decoding.lose(seen, clip.expected_frames - 1, decoding.reason or "the stream ends early")


def _write_pair(scene_dir: pathlib.Path, name: str, blur: np.ndarray, sharp: np.ndarray) -> None:
  for kind, pixels in (("blur", blur), ("sharp", sharp)):
    (scene_dir / kind).mkdir(parents=True, exist_ok=True)
    (scene_dir / kind / name).write_bytes(images.encode_png(pixels))


# --- The data set -----------------------------------------------------------------------------------------------


def lost_text(result: ClipResult) -> str:
  """One sentence naming a damaged clip's lost frames (for the command line's error line)."""
  ranges = [f"{a}–{b}" if b > a else f"{a}" for a, b in result.lost_frames]
  shown = ", ".join(ranges[:3]) + (", …" if len(ranges) > 3 else "")
  lost = sum(b - a + 1 for a, b in result.lost_frames)
  total = f" of {result.expected_frames}" if result.expected_frames else ""
  return (f"{result.file} is damaged: {lost}{total} frames did not decode (frames {shown}; "
          f"{result.lost_reason or 'unknown error'}), so its {result.pairs} pairs come from the frames that did; "
          "copy or export the clip again to use the rest.")


def build_pairs(out: str | os.PathLike, sources: Sequence[str | os.PathLike], recipe: Recipe = Recipe(), *,
                overwrite: bool = False) -> dict:
  """Writes the GoPro-layout data set of the clips in `sources` to `out`; returns its meta.json content.

  Every clip is opened before any is decoded, so that a file that is not a video stops the run before work is
  done. The set is written in a hidden `.partial` folder beside `out`, renamed when complete. A clip that is
  damaged mid-way still gives the pairs of the frames that decoded; meta.json's `clips` names its lost frames.
  """
  recipe.check()
  out = pathlib.Path(out).expanduser().resolve()
  clip_paths = find_clips(sources)
  if any(out == p or out in p.parents for p in clip_paths):
    raise DatasetError(f"--out {out} holds the videos it would be made from; choose another --out.")
  if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
    raise DatasetError(f"{out} exists and is not empty; pass --overwrite to replace it, or choose another --out.")
  clips = [probe_clip(path, scene, recipe.capture_fps) for path, scene in zip(clip_paths, scene_names(clip_paths))]
  kept = [clip for clip in clips if clip.fps >= recipe.min_fps]
  _warn_low_fps([clip for clip in kept if clip.fps < LOW_FPS], recipe)
  if not kept:
    raise DatasetError(f"All {len(clips)} clips are below --min-fps {recipe.min_fps:g} (the fastest is "
                       f"{max(c.fps for c in clips):g} fps); lower --min-fps or pass --capture-fps.")
  splits = dict(zip((c.path for c in kept), split_clips(len(kept), recipe.test_fraction, recipe.seed)))
  if "test" not in splits.values():
    _log.warning("No clip goes to test/ (%d clips, --test-fraction %g), and training evaluates on test/: add "
                 "another clip (a clip's frames never go to both splits, or the test would score scenes the model "
                 "trained on).", len(kept), recipe.test_fraction)

  partial = paths.partial_path(out)
  try:
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
  except OSError as error:
    raise DatasetError(f"Cannot write to {out} ({error.strerror or error}); pass --out a folder you can "
                       "write.") from None
  records: list[dict] = []
  results = []
  for clip in clips:
    if clip not in kept:
      results.append(ClipResult(str(clip.path), clip.scene, "", clip.fps, clip.stream_fps, clip.expected_frames,
                                skipped=f"below --min-fps {recipe.min_fps:g}"))
      continue
    results.append(clip_pairs(clip, splits[clip.path], partial, recipe, records))
  meta = _meta(recipe, sources, results, records)
  if not records:
    shutil.rmtree(partial, ignore_errors=True)
    skipped = meta["summary"]["skipped"]
    raise DatasetError(f"No pairs: every window of the {len(kept)} clips was skipped ({skipped['scene_cut']} with "
                       f"a scene cut, {skipped['static']} near-static above {recipe.static_psnr:g} dB); use clips "
                       "with camera or subject motion, or raise --static-psnr.")
  if not meta["summary"]["test"]["pairs"] and "test" in splits.values():
    _log.warning("The test/ split has no pairs (its clips' windows were all skipped); training evaluates on it.")
  (partial / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
  if out.is_dir():
    shutil.rmtree(out)
  elif out.exists():
    out.unlink()
  partial.rename(out)
  return meta


def _warn_low_fps(slow: list[Clip], recipe: Recipe) -> None:
  """One line for all the slow clips, naming the slowest."""
  if not slow:
    return
  low, high = min(odd_lengths(recipe.frames)), max(odd_lengths(recipe.frames))
  clip = min(slow, key=lambda c: c.fps)

  def span(a: float, b: float, unit: str = "") -> str:
    return f"{a:.0f}{unit}" if round(a) == round(b) else f"{a:.0f}–{b:.0f}{unit}"

  _log.warning("%d of the clips are below %d fps (%s: %g fps, where %s frames are a %s exposure whose averaged "
               "frames ghost rather than blur; GoPro: %d fps, %s): pass --capture-fps if it is slow motion "
               "re-timed, or --min-fps to skip such clips.", len(slow), LOW_FPS, clip.path.name, clip.fps,
               span(low, high), span(1000 * low / clip.fps, 1000 * high / clip.fps, " ms"), GOPRO_FPS,
               span(1000 * GOPRO_FRAMES[0] / GOPRO_FPS, 1000 * GOPRO_FRAMES[1] / GOPRO_FPS, " ms"))


def _psnr_summary(values: Sequence[float]) -> dict:
  values = np.asarray(values, np.float64)
  if not values.size:
    return {}
  return {"min": round(float(values.min()), 3), "mean": round(float(values.mean()), 3),
          "median": round(float(np.median(values)), 3), "max": round(float(values.max()), 3)}


def _meta(recipe: Recipe, sources, results: list[ClipResult], records: list[dict]) -> dict:
  summary = {}
  for split in layouts.SPLITS:
    psnrs = [r["input_psnr_db"] for r in records if r["split"] == split]
    summary[split] = {"clips": sum(r.split == split for r in results), "pairs": len(psnrs),
                      "input_psnr_db": _psnr_summary(psnrs)}
  summary["skipped"] = {"scene_cut": sum(r.scene_cuts for r in results), "static": sum(r.static for r in results),
                        "slow_clips": sum(bool(r.skipped) for r in results)}
  summary["damaged_clips"] = sum(bool(r.lost_frames) for r in results)
  recipe_record = {"version": META_VERSION, "sources": [str(s) for s in sources], **dataclasses.asdict(recipe)}
  return json.loads(json.dumps({"recipe": recipe_record, "summary": summary,
                                "clips": [dataclasses.asdict(r) for r in results], "pairs": records}))
