"""Deblurring a video: decode, deblur in batches through the photo path, encode, keep the rest of the file.

`deblur_video` reads a clip with PyAV (FFmpeg), deblurs its frames with the same function as photos
(`inference.make_deblur_fn`: tiles above the same pixel threshold, the ×8 ensemble), and writes a clip of the
same size (even, for 4:2:0 codecs), timestamps (variable frame rates stay variable), rotation and colour tags,
with the audio streams copied packet by packet (never re-encoded).

Nothing is lost on a kill: the frames are encoded in chunks of CHUNK_FRAMES, each written to a temporary name
and renamed when complete, in a hidden folder beside the output (`.NAME.chunks/`). A rerun of the same
command decodes again but deblurs only the frames of unfinished chunks; the finished chunks' packets and the
source's audio are then muxed into the output (no re-encoding), which is itself written under a temporary
name. A rerun with other settings (codec, quality, model, part of the clip) starts the chunks afresh.
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import heapq
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

import av
import av.logging
import numpy as np
import tqdm
from etils import epath

from simplenet_jax import paths

# --codec names → FFmpeg encoders in PyAV's wheel. H.264 plays everywhere; VP9 is webm's; FFV1 in an RGB
# pixel format is lossless (yuv444p is not, from RGB: its conversion rounds).
CODECS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1", "ffv1": "ffv1"}
DEFAULT_CRF = {"libx264": 18, "libvpx-vp9": 31, "libsvtav1": 35}  # visually lossless for H.264
CRF_RANGE = {"libx264": (0, 51), "libvpx-vp9": (0, 63), "libsvtav1": (1, 63)}
LOSSLESS_PIX_FMT = "bgr0"  # FFV1's 8-bit RGB
# Which codecs each container takes; a codec a container cannot hold goes to .mkv (Matroska takes them all).
CONTAINER_CODECS = {".mp4": {"libx264", "libvpx-vp9", "libsvtav1"}, ".m4v": {"libx264"},
                    ".mov": {"libx264", "libsvtav1"},
                    ".webm": {"libvpx-vp9", "libsvtav1"}, ".avi": {"libx264"}, ".mkv": set(CODECS.values())}
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
CHUNK_FRAMES = 64  # frames per resumable chunk: what a kill can cost, against a key frame per chunk


class VideoError(ValueError):
  """A clip that cannot be deblurred, or an output that cannot be written, in one sentence."""


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  codec: str | None = None  # a CODECS key or an encoder name; None: H.264, VP9 for webm
  crf: int | None = None  # quality of lossy codecs, lower is better; None: DEFAULT_CRF
  start: float | None = None  # seconds
  end: float | None = None
  batch_size: int | None = None  # frames per network call; None: as many as fit in max_pixels
  chunk_frames: int = CHUNK_FRAMES


@dataclasses.dataclass
class VideoRun:
  frames: int = 0  # frames written
  deblurred: int = 0  # frames deblurred in this run (the rest came from chunks of an earlier run)
  lost: list[str] = dataclasses.field(default_factory=list)  # frames that could not be decoded, in words
  notes: list[str] = dataclasses.field(default_factory=list)  # what was left out of the output, in words


def encoder_for(source: pathlib.Path, codec: str | None) -> str:
  """The FFmpeg encoder of `codec` (a CODECS key or an encoder name), or the default for the source's
  container; VideoError if this FFmpeg has no such encoder."""
  if codec is None:
    return "libvpx-vp9" if source.suffix.lower() == ".webm" else "libx264"
  encoder = CODECS.get(codec.lower(), codec)
  if encoder not in av.codecs_available:
    raise VideoError(f"the codec {codec!r} is not available in this FFmpeg; use one of {', '.join(CODECS)}.")
  try:
    if av.codec.Codec(encoder, "w").type != "video":
      raise VideoError(f"{codec!r} is not a video codec; use one of {', '.join(CODECS)}.")
  except av.codec.codec.UnknownCodecError:
    raise VideoError(f"the codec {codec!r} has no encoder in this FFmpeg; use one of {', '.join(CODECS)}.") from None
  return encoder


def check_settings(settings: VideoSettings, encoder: str) -> None:
  """One VideoError sentence for settings that cannot work with `encoder`."""
  crf = settings.crf
  if crf is not None and encoder in CRF_RANGE and not CRF_RANGE[encoder][0] <= crf <= CRF_RANGE[encoder][1]:
    low, high = CRF_RANGE[encoder]
    raise VideoError(f"--crf for {encoder} must be in {low}..{high}, got {crf}.")
  if settings.start is not None and settings.end is not None and settings.end <= settings.start:
    raise VideoError(f"--end ({settings.end} s) must come after --start ({settings.start} s).")


def output_path(out: epath.Path, source: pathlib.Path, encoder: str) -> epath.Path:
  """OUT/<stem> with the source's container, or .mkv when that container cannot hold `encoder`."""
  suffix = source.suffix.lower()
  if encoder not in CONTAINER_CODECS.get(suffix, set()):
    suffix = ".mkv"
  return out / f"{source.stem}{suffix}"


def _pix_fmt(encoder: str) -> str:
  return LOSSLESS_PIX_FMT if encoder == "ffv1" else "yuv420p"


@dataclasses.dataclass(frozen=True)
class _Probe:
  width: int
  height: int
  time_base: fractions.Fraction
  rate: fractions.Fraction | None
  expected_frames: int | None  # from the container's header or duration, for the progress bar
  duration: float | None  # seconds, of the video stream when known
  counted: bool  # expected_frames is the header's count (mp4, mov), not an estimate from the duration


def _open(source: pathlib.Path):
  try:
    container = av.open(str(source))
  except av.error.FileNotFoundError:
    raise VideoError("no such file") from None
  except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as error:
    raise VideoError(f"not a video FFmpeg can read ({paths.first_line(error)})") from None
  if not container.streams:
    container.close()
    raise VideoError("not a video FFmpeg can read (no streams found: cut off or damaged?)")
  if not container.streams.video:
    container.close()
    raise VideoError("no video stream (an audio file?)")
  return container


def _probe(container) -> _Probe:
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate
  duration = None
  if stream.duration is not None and stream.time_base:
    duration = float(stream.duration * stream.time_base)
  elif (tagged := _tag_seconds(stream.metadata.get("DURATION"))) is not None:  # Matroska's per-track duration
    duration = tagged
  elif container.duration and not container.streams.audio:  # else it may be the audio's
    duration = container.duration / av.time_base
  # For the progress bar, the container's duration will do when the stream has none.
  estimate = duration or (container.duration / av.time_base if container.duration else None)
  expected = stream.frames or (round(estimate * rate) if estimate and rate else None)
  return _Probe(stream.codec_context.width, stream.codec_context.height, stream.time_base, rate, expected or None,
                duration, bool(stream.frames))


def _tag_seconds(tag: str | None) -> float | None:
  """Seconds of an "HH:MM:SS.nnnnnnnnn" tag, or None."""
  try:
    hours, minutes, seconds = (tag or "").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
  except ValueError:
    return None


class _ErrorLog(logging.Handler):
  """FFmpeg's error messages (PyAV passes them to the "libav" loggers), kept instead of printed."""

  def __init__(self):
    super().__init__(logging.ERROR)
    self.messages: list[str] = []

  def emit(self, record: logging.LogRecord) -> None:
    self.messages.append(record.getMessage().strip())


def _frames(container, start: float | None, end: float | None, lost: list[str]) -> Iterator[av.VideoFrame]:
  """The decoded frames of the first video stream with start ≤ time < end.

  FFmpeg conceals damaged data and says so only in its log: what it logs as an error while a packet is read
  or decoded is noted in `lost` with the packet's time (the concealed frames are kept, so that the clip keeps
  its length), and a packet that does not decode at all is noted and skipped, so that the rest still comes.
  """
  stream = container.streams.video[0]
  stream.thread_type = "AUTO"
  if start:
    container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
  errors, logger = _ErrorLog(), logging.getLogger("libav")
  logger.addHandler(errors)
  propagate, logger.propagate = logger.propagate, False
  previous_level, last = av.logging.get_level(), 0.0
  av.logging.set_level(av.logging.ERROR)
  try:
    for packet in container.demux(stream):
      decoded, failure = [], None
      try:
        decoded = packet.decode()
      except av.error.FFmpegError as error:
        failure = paths.first_line(error)
      if failure or errors.messages:
        reason = failure or errors.messages[0]
        if packet.pts is None:  # the demuxer's last, empty packet: the file stopped before its end
          lost.append(f"the file ends early after {last:.3f} s (truncated?): {reason}")
        else:
          what = "could not be decoded" if failure else "decoded with errors (concealed)"
          lost.append(f"the frame at {float(packet.pts * stream.time_base):.3f} s {what}: {reason}")
        errors.messages.clear()
      for frame in decoded:
        time = frame.time if frame.time is not None else 0.0
        last = time
        if end is not None and time >= end:
          return
        if start is None or time >= start - 1e-6:
          yield frame
  finally:
    logger.removeHandler(errors)
    logger.propagate = propagate
    av.logging.set_level(previous_level)


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
  """uint8 RGB in the colour matrix and range the frame is tagged with (limited range when untagged)."""
  return frame.reformat(format="rgb24", src_color_range=frame.color_range or None).to_ndarray()


class _ChunkWriter:
  """One chunk: the encoder for its frames, into a temporary file renamed to `path` by `close`."""

  def __init__(self, path: pathlib.Path, container_format: str, encoder: str, crf: int | None,
               template: av.VideoFrame, rate, time_base, width: int, height: int):
    self.path = path
    self.partial = path.with_name(path.name + paths.PARTIAL)
    self.output = av.open(str(self.partial), "w", format=container_format)
    options = {}
    if encoder in DEFAULT_CRF:
      options["crf"] = str(crf if crf is not None else DEFAULT_CRF[encoder])
    if encoder == "libx264":
      options["bf"] = "0"  # decode order = display order, so that the chunks' packets concatenate
    elif encoder == "libvpx-vp9":
      options.update({"b": "0", "row-mt": "1"})  # constant quality; VP9's multithreading
    self.stream = self.output.add_stream(encoder, rate=rate, options=options)
    self.stream.width, self.stream.height = width, height
    self.stream.pix_fmt = _pix_fmt(encoder)
    self.stream.codec_context.time_base = time_base
    context = self.stream.codec_context
    if self.stream.pix_fmt != LOSSLESS_PIX_FMT:  # RGB formats have no colour matrix
      for tag in ("colorspace", "color_range", "color_primaries", "color_trc"):
        value = getattr(template, tag)
        if value:
          setattr(context, tag, value)
    if template.rotation:
      self.stream.set_display_rotation(template.rotation)

  def write(self, rgb: np.ndarray, source: av.VideoFrame) -> None:
    height, width = self.stream.height, self.stream.width
    if rgb.shape[:2] != (height, width):  # 4:2:0 needs even sizes: repeat the last row/column
      rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if self.stream.pix_fmt == LOSSLESS_PIX_FMT:
      frame = frame.reformat(format=LOSSLESS_PIX_FMT)
    else:
      frame = frame.reformat(format=self.stream.pix_fmt, dst_colorspace=source.colorspace or None,
                             dst_color_range=source.color_range or None)
    frame.pts, frame.time_base = source.pts, source.time_base
    self.output.mux(self.stream.encode(frame))

  def close(self) -> None:
    self.output.mux(self.stream.encode(None))
    self.output.close()
    os.replace(self.partial, self.path)


def _chunk_dir(target: epath.Path) -> pathlib.Path:
  """The hidden folder of `target`'s finished chunks: beside it, or for a bucket in a local cache folder."""
  if paths.is_url(target):
    key = hashlib.sha256(os.fspath(target).encode()).hexdigest()[:16]
    return pathlib.Path(tempfile.gettempdir()) / "simplenet-video-chunks" / key
  return pathlib.Path(os.fspath(target.parent)) / f".{target.name}.chunks"


def batch_size_for(settings: VideoSettings, pixels: int, max_pixels: int) -> int:
  """Frames per network call: --batch-size, else as many frames as `max_pixels` holds (1 to 8)."""
  if settings.batch_size:
    return settings.batch_size
  return int(np.clip(max_pixels // max(pixels, 1), 1, 8))


FramesFn = Callable[[list[np.ndarray]], np.ndarray]  # uint8 RGB frames of one size → their deblurred uint8 frames


def deblur_video(make_frames_fn: Callable[[int, int, int], FramesFn], source: pathlib.Path, target: epath.Path,
                 settings: VideoSettings, *, identity: dict, max_pixels: int) -> VideoRun:
  """Deblurs `source` into `target` (see the module's docstring); VideoError for a clip or output that
  cannot be used.

  `make_frames_fn(height, width, batch_size)` gives the function that deblurs lists of up to `batch_size`
  uint8 RGB frames of that size (`inference.frames_fn`); `identity` names what else decides the result (the
  model's checkpoint, tiles, ensemble): a rerun with the same identity continues the chunks of an earlier run.
  """
  encoder = encoder_for(source, settings.codec)
  check_settings(settings, encoder)
  crf = settings.crf
  container_format = FORMATS[target.suffix.lower()]
  run = VideoRun()
  with _open(source) as container:
    probe = _probe(container)
    if probe.width < 4 or probe.height < 4:
      raise VideoError(f"{probe.width}×{probe.height} pixels, too small to deblur")
    width, height = probe.width, probe.height
    if _pix_fmt(encoder) == "yuv420p":
      width, height = width + width % 2, height + height % 2
    stat = source.stat()
    manifest = {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "encoder": encoder, "crf": crf, "start": settings.start, "end": settings.end,
                "chunk_frames": settings.chunk_frames, **identity}
    chunks = _chunk_dir(target)
    _reset_if_changed(chunks, manifest)
    batch_size = batch_size_for(settings, probe.width * probe.height, max_pixels)
    deblur_fn = make_frames_fn(probe.height, probe.width, batch_size)
    total = probe.expected_frames
    if total and (settings.start is not None or settings.end is not None) and probe.rate:
      length = total / float(probe.rate)
      span = min(settings.end or length, length) - (settings.start or 0.0)
      total = max(0, round(span * float(probe.rate)))
    bar = tqdm.tqdm(total=total, desc=source.name, unit="frame", dynamic_ncols=True)
    writer, pending, index, rotation, last_time = None, [], 0, 0, None
    chunk_frames = settings.chunk_frames
    try:
      for frame in _frames(container, settings.start, settings.end, run.lost):
        chunk_path = chunks / f"{index // chunk_frames:06d}.{target.suffix.lstrip('.')}"
        if index == 0:
          rotation = int(frame.rotation or 0)
        index += 1
        last_time = frame.time
        if chunk_path.exists():
          bar.update(1)
          continue
        if writer is None:
          writer = _ChunkWriter(chunk_path, container_format, encoder, crf, frame, probe.rate, probe.time_base,
                                width, height)
        pending.append((to_rgb(frame), frame))
        if len(pending) == batch_size or index % chunk_frames == 0:
          _flush(deblur_fn, pending, writer, bar, run)
        if index % chunk_frames == 0:
          writer.close()
          writer = None
      if pending:
        _flush(deblur_fn, pending, writer, bar, run)
      if writer is not None:
        writer.close()
        writer = None
    except OSError as error:
      raise VideoError(f"cannot write {target} ({error.strerror or paths.first_line(error)}); "
                       "free some space or pass another --out; a rerun continues where this one stopped.") from None
    finally:
      bar.close()
      if writer is not None:
        writer.output.close()  # an unfinished chunk stays a temporary file, which the next run replaces
    if index == 0:
      raise VideoError("no frame to deblur" + (" in the --start/--end range" if settings.start or settings.end
                                              else ""))
    run.frames = index
    if settings.end is None and not run.lost:
      if probe.counted and probe.expected_frames - index > 0 and not settings.start:
        run.lost.append(f"{probe.expected_frames - index} frame(s) after the first {index} of the "
                        f"{probe.expected_frames} the header counts (the file ends early: truncated?)")
      elif not probe.counted and probe.duration and last_time is not None and probe.rate:
        gap = probe.duration - last_time
        if gap > 3 / float(probe.rate):  # the last frame lasts about one frame; a cut-off file lacks more
          run.lost.append(f"the frames after {last_time:.3f} s of the {probe.duration:.3f} s the header gives "
                          "(the file ends early: truncated?)")
  try:
    _assemble(sorted(chunks.glob(f"*.{target.suffix.lstrip('.')}")), source, target, container_format, settings,
              rotation, probe.rate, run.notes)
  except OSError as error:
    raise VideoError(f"cannot write {target} ({error.strerror or paths.first_line(error)}); "
                     "free some space or pass another --out; a rerun continues where this one stopped.") from None
  shutil.rmtree(chunks, ignore_errors=True)
  return run


def _flush(deblur_fn, pending: list, writer: _ChunkWriter, bar, run: VideoRun) -> None:
  results = deblur_fn([rgb for rgb, _ in pending])
  for result, (_, frame) in zip(results, pending):
    writer.write(result, frame)
  bar.update(len(pending))
  run.deblurred += len(pending)
  pending.clear()


def _reset_if_changed(chunks: pathlib.Path, manifest: dict) -> None:
  """Keeps the chunks of an earlier run with the same manifest; anything else starts afresh."""
  record = chunks / "manifest.json"
  try:
    same = json.loads(record.read_text()) == json.loads(json.dumps(manifest))
  except (OSError, ValueError):
    same = False
  if not same:
    shutil.rmtree(chunks, ignore_errors=True)
    chunks.mkdir(parents=True)
    with paths.atomic_write(record, "w") as f:
      json.dump(manifest, f)
  for leftover in chunks.glob(f"*{paths.PARTIAL}"):
    leftover.unlink()


def _packets(container, *streams) -> Iterator[tuple[float, int, av.Packet]]:
  for packet in container.demux(*streams):
    if packet.dts is None and packet.pts is None:
      continue  # the demuxer's empty flush packet
    when = packet.dts if packet.dts is not None else packet.pts
    yield float(when * packet.time_base), packet.stream.index, packet


def _assemble(chunk_files: list[pathlib.Path], source: pathlib.Path, target: epath.Path, container_format: str,
              settings: VideoSettings, rotation: int, rate, skipped: list[str]) -> None:
  """Muxes the chunks' video packets and the source's audio packets (cut to --start/--end at packet
  boundaries) into `target`, in time order, under a temporary name renamed when complete."""
  local = target if not paths.is_url(target) else None
  staging = tempfile.TemporaryDirectory() if local is None else None
  final = pathlib.Path(os.fspath(target)) if local is not None else pathlib.Path(staging.name) / target.name
  partial = final.with_name(f".{final.name}{paths.PARTIAL}")
  try:
    with av.open(str(partial), "w", format=container_format) as output, av.open(str(source)) as original:
      inputs = [av.open(str(path)) for path in chunk_files]
      try:
        video = output.add_stream_from_template(inputs[0].streams.video[0])
        if rate:
          video.codec_context.framerate = rate  # the frame rate players show (Matroska's default duration)
        if rotation:
          video.set_display_rotation(rotation)
        audio = [stream for stream in original.streams.audio
                 if stream.codec_context.name in output.supported_codecs]
        copies = {stream.index: output.add_stream_from_template(stream) for stream in audio}
        skipped.extend(f"audio stream {stream.index} ({stream.codec_context.name}: {target.suffix} cannot hold it)"
                       for stream in original.streams.audio if stream not in audio)
        shift = settings.start or 0.0

        def video_packets():
          for chunk in inputs:
            for when, _, packet in _packets(chunk, chunk.streams.video[0]):
              yield when, -1, packet

        def audio_packets():
          if not audio:
            return
          if settings.start:
            original.seek(int(settings.start / audio[0].time_base), stream=audio[0], backward=True)
          for when, index, packet in _packets(original, *audio):
            if settings.start is not None and when < settings.start - 1e-9:
              continue
            if settings.end is not None and when >= settings.end:
              continue
            yield when, index, packet

        for _, index, packet in heapq.merge(video_packets(), audio_packets(), key=lambda item: item[:2]):
          out_stream = copies.get(index, video)
          if shift:
            offset = round(shift / packet.time_base)
            packet.pts = None if packet.pts is None else packet.pts - offset
            packet.dts = None if packet.dts is None else packet.dts - offset
          packet.stream = out_stream
          output.mux(packet)
      finally:
        for chunk in inputs:
          chunk.close()
    if local is not None:
      os.replace(partial, final)
    else:
      epath.Path(partial).copy(target, overwrite=True)
  finally:
    if staging is not None:
      staging.cleanup()
    elif partial.exists():
      partial.unlink()

