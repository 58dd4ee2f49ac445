"""Command line: GoPro-style training pairs from your own high-frame-rate clips (`video_pairs`).

    python -m simplenet_jax.data.from_video --source my_clips/ --out data/my_pairs

writes `DIR/{train,test}/<scene>/{blur,sharp}/NNNNNN.png` (one scene per clip) and `DIR/meta.json`; the
`folder` data set reads it, so `python -m simplenet_jax.data.prepare --dataset folder` and training take it
unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from simplenet_jax import extras

extras.require("video", "python -m simplenet_jax.data.from_video", "av")
from simplenet_jax.data import video_pairs  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data.images import DatasetError  # pylint: disable=g-import-not-at-top,wrong-import-position


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m simplenet_jax.data.from_video",
      description="GoPro-style blurred/sharp pairs from high-frame-rate clips: N consecutive frames averaged in "
                  "linear light, the middle one sharp; one scene per clip, each clip in train or test.")
  parser.add_argument("--source", required=True, nargs="+",
                      help=f"video files and folders of them ({', '.join(video_pairs.VIDEO_SUFFIXES)})")
  parser.add_argument("--out", required=True, help="folder to create, e.g. data/my_pairs")
  parser.add_argument("--frames", type=int, nargs=2, default=list(video_pairs.GOPRO_FRAMES), metavar=("MIN", "MAX"),
                      help="frames averaged per blurred image, an odd count drawn in this range (default: GoPro's "
                           "7 13; at 240 fps a 29–54 ms exposure)")
  parser.add_argument("--stride", type=int, default=None,
                      help="frames from one window's start to the next's (default: the window's length, so no "
                           "frame is in two pairs)")
  parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="scale the frames to cover H×W and crop the centre (default: the clip's size, scaled "
                           "down to fit 1280×720 as GoPro's)")
  parser.add_argument("--max-pairs-per-clip", type=int, default=None,
                      help="keep the first this many pairs of each clip (with --stride, spread them out)")
  parser.add_argument("--test-fraction", type=float, default=video_pairs.DEFAULT_TEST_FRACTION,
                      help="share of the clips (not pairs) in the test split; at least one clip in each split")
  parser.add_argument("--seed", type=int, default=0, help="draws the window lengths and which clips are test")
  parser.add_argument("--static-psnr", type=float, default=video_pairs.DEFAULT_STATIC_PSNR,
                      help="skip windows whose blurred image is above this PSNR (dB) against its sharp one")
  parser.add_argument("--min-fps", type=float, default=0.0, help="skip clips captured below this frame rate")
  parser.add_argument("--capture-fps", type=float, default=None,
                      help="the rate the clips were captured at, for slow motion saved at a slower rate (e.g. "
                           "240 for a 240 fps clip played back at 30 fps)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  recipe = video_pairs.Recipe(
      frames=tuple(args.frames), stride=args.stride, size=tuple(args.size) if args.size else None,
      max_pairs_per_clip=args.max_pairs_per_clip, test_fraction=args.test_fraction, seed=args.seed,
      static_psnr=args.static_psnr, min_fps=args.min_fps, capture_fps=args.capture_fps)
  start = time.perf_counter()
  try:
    meta = video_pairs.build_pairs(args.out, args.source, recipe, overwrite=args.overwrite)
  except DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  summary = meta["summary"]
  for split in ("train", "test"):
    stats = summary[split]
    psnr = stats["input_psnr_db"]
    line = f"{split}: {stats['pairs']} pairs from {stats['clips']} clips"
    if psnr:
      line += (f", input PSNR min {psnr['min']:.2f} / mean {psnr['mean']:.2f} / median {psnr['median']:.2f} / "
               f"max {psnr['max']:.2f} dB")
    print(line)
  skipped = summary["skipped"]
  print(f"Skipped {skipped['scene_cut']} windows with a scene cut, {skipped['static']} near-static windows (above "
        f"{args.static_psnr:g} dB) and {skipped['slow_clips']} clips below --min-fps.")
  print(f"Wrote the data set to {args.out} in {time.perf_counter() - start:.1f} s.")
  damaged = [clip for clip in meta["clips"] if clip["lost_frames"]]
  for clip in damaged:
    print(f"error: {video_pairs.lost_text(video_pairs.ClipResult(**clip))}", file=sys.stderr)
  return 1 if damaged else 0


if __name__ == "__main__":
  logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
  sys.exit(main())
