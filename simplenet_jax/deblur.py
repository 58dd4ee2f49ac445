"""Deblur your own photos and videos with a trained workdir.

    python -m simplenet_jax.deblur --workdir DIR INPUT... --out DIR [--tile SIZE --overlap PX] [--ensemble]
    simplenet-deblur --workdir DIR INPUT... --out DIR            (the same, as a console script)

INPUT: files, folders (their jpg/png/webp photos and mp4/mov/mkv/webm/avi videos) or glob patterns. Each
photo is written losslessly as OUT/<name>.png: EXIF orientation is applied first, 16-bit PNGs stay 16-bit, an
alpha channel is carried over untouched. Each video is written as OUT/<name> in its own container
(`simplenet_jax.video`: H.264 by default, VP9 for webm, --codec ffv1 lossless; audio copied; a killed run
continues where it stopped). Large frames are processed in overlapping tiles (automatically above
--max-pixels), so memory stays bounded at any size. Existing outputs are kept unless --overwrite. An input
that cannot be read is reported at the end; the others are still processed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from etils import epath

from simplenet_jax import extras
from simplenet_jax import paths
from simplenet_jax import tiling


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="simplenet-deblur", description=__doc__.split("\n")[0])
  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="folder for the deblurred PNGs")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--tile", type=int, default=None,
                      help=f"tile size in pixels; default: {tiling.DEFAULT_TILE} for photos over --max-pixels, else "
                      "the whole photo; 0 never tiles")
  parser.add_argument("--overlap", type=int, default=tiling.DEFAULT_OVERLAP,
                      help="overlap of neighbouring tiles (blended)")
  parser.add_argument("--max-pixels", type=int, default=tiling.DEFAULT_MAX_PIXELS,
                      help="photos with more pixels are tiled when --tile is not given")
  parser.add_argument("--ensemble", action="store_true", help="average over 8 flips/rotations (8× slower)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  video_options = parser.add_argument_group("videos")
  video_options.add_argument("--codec", default=None,
                             help="h264 (default; VP9 for webm), vp9, av1, or ffv1 (lossless RGB, in .mkv)")
  video_options.add_argument("--crf", type=int, default=None,
                             help="quality of lossy codecs, lower is better (default: H.264 18, VP9 31, AV1 35)")
  video_options.add_argument("--start", type=float, default=None, help="deblur from this second on")
  video_options.add_argument("--end", type=float, default=None, help="deblur up to this second")
  video_options.add_argument("--batch-size", type=int, default=None,
                             help="frames per network call (default: as many as --max-pixels holds, at most 8)")
  video_options.add_argument("--chunk-frames", type=int, default=64,
                             help="frames per chunk: a killed run restarts at its last finished chunk")
  args = parser.parse_args(argv)
  for flag, value, low in (("--max-pixels", args.max_pixels, 1), ("--batch-size", args.batch_size, 1),
                           ("--chunk-frames", args.chunk_frames, 1),
                           ("--start", args.start, 0), ("--end", args.end, 0)):
    if value is not None and value < low:
      parser.error(f"{flag} must be at least {low}, got {value}.")
  # JAX (and with it the network) is imported only now: --help and argument mistakes answer at once.
  from simplenet_jax import inference  # pylint: disable=g-import-not-at-top
  from simplenet_jax import photos  # pylint: disable=g-import-not-at-top
  logging.getLogger("absl").setLevel(logging.ERROR)

  out = paths.user_path(args.out)  # a local folder or a bucket URL
  try:
    paths.check_writable(out, "output folder", "--out")
  except ValueError as error:
    return _fail(str(error))
  suffixes = photos.PHOTO_SUFFIXES + photos.VIDEO_SUFFIXES
  found, unmatched = photos.find_photos(args.inputs, suffixes)
  if not found:
    return _fail(f"no jpg/png/webp images or mp4/mov/mkv/webm/avi videos in {', '.join(args.inputs)}.")
  files = [f for f in found if f.suffix.lower() in photos.PHOTO_SUFFIXES]
  videos = [f for f in found if f.suffix.lower() in photos.VIDEO_SUFFIXES]
  if videos:
    extras.require("video", "simplenet-deblur on videos", "av")
    from simplenet_jax import video  # pylint: disable=g-import-not-at-top
    settings = video.VideoSettings(codec=args.codec, crf=args.crf, start=args.start, end=args.end,
                                   batch_size=args.batch_size, chunk_frames=args.chunk_frames)
    try:
      targets = {}
      for source in videos:
        encoder = video.encoder_for(source, args.codec)
        video.check_settings(settings, encoder)
        targets[source] = video.output_path(out, source, encoder)
    except video.VideoError as error:
      return _fail(str(error))
  else:
    targets = {}
  clashes = _duplicates([photos.output_path(out, f) for f in files] + list(targets.values()))
  if clashes:
    return _fail(f"several inputs would be written to the same file {clashes[0]}; deblur them into "
                 "separate --out folders.")
  try:
    tiling.check_tiling(tiling.DEFAULT_TILE if args.tile is None else args.tile, args.overlap)
    _, network, step = inference.load_model(args.workdir, args.checkpoint)
  except ValueError as error:
    return _fail(str(error))
  failures = [(pattern, "matched no photo or video") for pattern in unmatched]
  if files:
    try:
      run = inference.deblur_photos(network, files, out, tile=args.tile, overlap=args.overlap,
                                    max_pixels=args.max_pixels, ensemble=args.ensemble, overwrite=args.overwrite)
    except ValueError as error:
      return _fail(str(error))
    failures += run.failures
    print(f"deblurred {run.done} photo(s) into {out} with the checkpoint of step {step}"
          + (f"; kept {run.skipped} existing output(s) (--overwrite replaces them)" if run.skipped else ""))
  if videos:
    failures += _deblur_videos(args, network, step, targets, settings)
  if failures:
    print(f"{len(failures)} input(s) failed:", file=sys.stderr)
    for name, reason in failures:
      print(f"  {name}: {reason}", file=sys.stderr)
    return 1
  return 0


def _deblur_videos(args, network, step: int, targets: dict, settings) -> list[tuple[str, str]]:
  """Deblurs each video into its target with `settings` (video.VideoSettings); returns the failures (video,
  sentence)."""
  from simplenet_jax import inference  # pylint: disable=g-import-not-at-top
  from simplenet_jax import video  # pylint: disable=g-import-not-at-top
  identity = {"workdir": str(paths.user_path(args.workdir)), "step": step, "tile": args.tile,
              "overlap": args.overlap, "max_pixels": args.max_pixels, "ensemble": args.ensemble}

  def make_frames_fn(height: int, width: int, batch_size: int):
    return inference.frames_fn(network, height, width, tile=args.tile, overlap=args.overlap,
                               max_pixels=args.max_pixels, ensemble=args.ensemble, batch_size=batch_size)

  failures = []
  for source, target in targets.items():
    if target.exists() and not args.overwrite:
      print(f"kept the existing {target} (--overwrite replaces it)")
      continue
    try:
      run = video.deblur_video(make_frames_fn, source, target, settings, identity=identity,
                               max_pixels=args.max_pixels)
    except video.VideoError as error:
      failures.append((str(source), str(error)))
      continue
    resumed = run.frames - run.deblurred
    print(f"deblurred {run.frames} frame(s) of {source} into {target} with the checkpoint of step {step}"
          + (f" ({resumed} from the chunks of an earlier run)" if resumed else ""))
    for note in run.notes:
      print(f"  left out {note}")
    if run.lost:
      failures.append((str(source), f"the clip is damaged in {len(run.lost)} place(s), and {target} holds what "
                       f"could be decoded: {'; '.join(run.lost[:5])}" + ("; …" if len(run.lost) > 5 else "")))
  return failures


def _duplicates(targets: list[epath.Path]) -> list[epath.Path]:
  seen, clashes = set(), []
  for path in targets:
    if path in seen:
      clashes.append(path)
    seen.add(path)
  return clashes


def _fail(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 1


def run() -> None:
  """Console-script entry point (`simplenet-deblur`)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
