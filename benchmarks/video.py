"""Video: frames/s of `simplenet-deblur` on a clip, and the share of decoding + encoding in it.

    python benchmarks/video.py [--json PATH] [--frames 8] [--models demo gopro] [--sizes 640x360 1280x720]
                               [--smoke]

For each size, an H.264 clip of `--frames` frames (a moving photo, made here) goes through
`video.deblur_video`, the code `simplenet-deblur` runs, twice: with the network of each model (parameters as
initialised: the arithmetic is that of a trained one) and with an identity in its place, which leaves
decoding, colour conversion, H.264 encoding and muxing. Frames/s is over the whole clip after one batch
that compiled the network; "codec share" is the identity run's time over the network run's. Minutes of
compute per second of video assume 30 frames/s.
"""

from __future__ import annotations

import argparse
import fractions
import functools
import pathlib
import sys
import tempfile
import time

from common import print_table
from common import write_json

import av
import jax
import numpy as np
import skimage.data
from flax import nnx
from PIL import Image

from configs import demo
from configs import gopro
from simplenet_jax import inference
from simplenet_jax import video
from simplenet_jax.models import SimpleNet

MODELS = {"demo": demo, "gopro": gopro}


def make_clip(path: pathlib.Path, frames: int, width: int, height: int) -> None:
  """An H.264 clip at 30 frames/s of a photo panning sideways (2 px a frame)."""
  photo = Image.fromarray(skimage.data.astronaut()).resize((width + 2 * frames, height), Image.Resampling.BICUBIC)
  pixels = np.asarray(photo)
  with av.open(str(path), "w") as output:
    stream = output.add_stream("libx264", rate=30, options={"crf": "18"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[:, 2 * i:2 * i + width]), format="rgb24")
      frame.pts, frame.time_base = i, fractions.Fraction(1, 30)
      output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def network_of(name: str):
  config = MODELS[name].get_config()
  model = SimpleNet.from_config(inference.any_size_fields(config.model), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  forward = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image))
  return functools.partial(forward, params)


def seconds_for(make_frames_fn, clip: pathlib.Path, out: pathlib.Path) -> float:
  target = out / clip.name
  start = time.perf_counter()
  video.deblur_video(make_frames_fn, clip, target, video.VideoSettings(), identity={},
                     max_pixels=inference.tiling.DEFAULT_MAX_PIXELS)
  seconds = time.perf_counter() - start
  target.unlink()
  return seconds


def measure(name: str, width: int, height: int, frames: int, folder: pathlib.Path) -> dict:
  clip = folder / f"clip_{width}x{height}.mp4"
  if not clip.exists():
    make_clip(clip, frames, width, height)
  network = network_of(name)

  def deblurring(h, w, batch_size):
    return inference.frames_fn(network, h, w, batch_size=batch_size)

  def identity(h, w, batch_size):
    del h, w, batch_size
    return lambda frames: np.stack(frames)

  out = folder / "out"
  out.mkdir(exist_ok=True)
  batch_size = video.batch_size_for(video.VideoSettings(), width * height, inference.tiling.DEFAULT_MAX_PIXELS)
  deblurring(height, width, batch_size)([np.zeros((height, width, 3), np.uint8)])  # compiles for this size
  total = seconds_for(deblurring, clip, out)
  codec = seconds_for(identity, clip, out)
  fps = frames / total
  return {"model": name, "size": f"{width}x{height}", "frames": frames, "seconds": round(total, 3),
          "frames_per_s": fps, "codec_share": codec / total, "minutes_per_video_second": 30 / fps / 60}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", default=None)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
  parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"])
  parser.add_argument("--smoke", action="store_true", help="a 4-frame 64×36 clip with the demo model")
  args = parser.parse_args(argv)
  if args.smoke:
    args.frames, args.models, args.sizes = 4, ["demo"], ["64x36"]
  try:
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
  except ValueError:
    parser.error(f"--sizes takes WIDTHxHEIGHT, e.g. 640x360, got {' '.join(args.sizes)}.")
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    for name in args.models:
      for width, height in sizes:
        rows.append(measure(name, width, height, args.frames, pathlib.Path(folder)))
        print(f"  {name} {width}x{height}: {rows[-1]['frames_per_s']:.3f} frames/s", file=sys.stderr)
  print_table("simplenet-deblur on an H.264 clip (this machine's CPU; 30 frames/s video)",
              [("model", "model", "s"), ("size", "size", "s"), ("frames/s", "frames_per_s", ".3f"),
               ("codec share", "codec_share", ".1%"), ("min per video s", "minutes_per_video_second", ".2f")],
              rows)
  write_json(args.json, {"benchmark": "video", "frames": args.frames, "rows": rows})
  return 0


if __name__ == "__main__":
  sys.exit(main())
