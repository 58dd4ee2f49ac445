"""The web demo: drop a photo, compare before and after, download the result.

    python -m simplenet_jax.app --workdir DIR [--port 7860] [--host 127.0.0.1] [--checkpoint latest]
    simplenet-demo --workdir DIR ...                                  (the same, as a console script)

A Gradio page over the inference path of `simplenet-deblur` (`simplenet_jax.inference`, `simplenet_jax.photos`):
the same reading (EXIF orientation, 16-bit PNG, alpha), the same network and the same tiling
(`simplenet_jax.tiling`). The result is shown in a before/after slider and offered for download as a lossless
PNG at full resolution and the input's bit depth. Tiled photos report progress tile by tile. It listens on 127.0.0.1 unless
--host says otherwise; the first photo of each size waits for XLA to compile the network.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import png
from etils import epath
from PIL import Image

from simplenet_jax import extras

extras.require("web", "simplenet-demo", "gradio")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
import gradio as gr  # pylint: disable=g-import-not-at-top,wrong-import-position

from simplenet_jax import inference  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax import photos  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax import tiling  # pylint: disable=g-import-not-at-top,wrong-import-position

MIN_SIDE = tiling.MIN_TILE  # pixels: smaller photos are refused with one sentence
MAX_PIXELS = 50_000_000  # larger uploads are refused: simplenet-deblur is the tool for them
TILE_CHOICES = ("auto", "whole photo", "256", "512", "1024")


class Deblurrer:
  """A workdir's network (jitted once: it compiles once per image size) and where its results go."""

  def __init__(self, workdir: str, checkpoint: str = "latest", out: pathlib.Path | None = None):
    self.config, self.network, self.step = inference.load_model(workdir, checkpoint)
    self.out = out or pathlib.Path(tempfile.mkdtemp(prefix="simplenet-demo-"))

  def __call__(self, path: str | None, ensemble: bool, tile_choice: str, progress=None):
    """(before, after) uint8 for the slider, the PNG's path, a status line; gr.Error for a bad upload."""
    photo, name = read_upload(path)
    height, width = photo.rgb.shape[:2]
    tile = resolve_tile(tile_choice, height * width)
    report = None
    if progress is not None:
      progress(0, desc="deblurring (the first photo of a size also compiles the network)")
      report = lambda done, total: progress((done, total), desc="tiles", unit="tiles")
    start = time.perf_counter()
    deblur_fn = inference.make_deblur_fn(self.network, ensemble=bool(ensemble), tile=tile, progress=report)
    result = np.asarray(deblur_fn(photo.rgb[None]))[0]
    seconds = time.perf_counter() - start
    target = self.out / f"{time.time_ns()}" / f"{pathlib.Path(name).stem}-deblurred.png"
    target.parent.mkdir(parents=True)
    photos.write_photo(epath.Path(target), result, photo.alpha, photo.bits)
    how = f"tiles of {tile} px" if tile else "the whole photo at once"
    status = (f"Deblurred {name} ({width}×{height}) in {seconds:.1f} s with the checkpoint of step {self.step}: "
              f"{how}{', ensemble ×8' if ensemble else ''}.")
    before, after = (np.asarray(photos.to_uint8(x)) for x in (photo.rgb, result))
    return (before, after), str(target), status


def read_upload(path: str | None) -> tuple[photos.Photo, str]:
  """The uploaded photo and its file name, or a gr.Error of one sentence."""
  if not path:
    raise gr.Error("Choose a photo to deblur first.")
  name = pathlib.Path(path).name
  try:
    with Image.open(path) as image:  # the size, before decoding a photo too large to decode
      width, height = image.size
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    raise gr.Error(f"{name} is not an image this demo can read; upload a JPEG, PNG or WebP photo.") from None
  if min(width, height) < MIN_SIDE:
    raise gr.Error(f"{name} is {width}×{height} pixels, too small to deblur; the demo needs at least "
                   f"{MIN_SIDE} pixels on each side.")
  if width * height > MAX_PIXELS:
    raise gr.Error(f"{name} has {width * height / 1e6:.0f} megapixels, more than this demo's "
                   f"{MAX_PIXELS // 1_000_000}; deblur it with simplenet-deblur, which has no limit.")
  try:
    return photos.read_photo(pathlib.Path(path)), name
  except (OSError, ValueError, SyntaxError, png.Error):
    raise gr.Error(f"{name} is damaged or not an image this demo can read; upload a JPEG, PNG or WebP "
                   "photo.") from None


def resolve_tile(choice: str, pixels: int) -> int:
  """Tile size in pixels (0: the whole photo); "auto" tiles as simplenet-deblur does."""
  if choice == "auto":
    return tiling.auto_tile(pixels)
  return 0 if choice == "whole photo" else int(choice)


def build(deblurrer: Deblurrer) -> gr.Blocks:
  """The page: a photo, the two options and a button; the slider, the download and a status line."""

  def run(path, ensemble, tile_choice, progress=gr.Progress()):
    return deblurrer(path, ensemble, tile_choice, progress)

  name = deblurrer.config.get("name", "?")
  with gr.Blocks(title="SimpleNet deblurring") as page:
    gr.Markdown(f"# SimpleNet motion deblurring\nThe model of this workdir: config `{name}`, checkpoint step "
                f"{deblurrer.step}. Upload a blurred photo, press **Deblur**, drag the slider to compare.")
    with gr.Row():
      with gr.Column():
        photo = gr.File(label="Photo (JPEG, PNG or WebP)", file_types=["image"], type="filepath",
                        elem_id="photo")
        ensemble = gr.Checkbox(label="Ensemble ×8: average over flips and rotations (8× slower)",
                               elem_id="ensemble")
        tile = gr.Dropdown(list(TILE_CHOICES), value="auto", label="Tiles",
                           info=f"auto: tiles of {tiling.DEFAULT_TILE} px above "
                           f"{tiling.DEFAULT_MAX_PIXELS / 1e6:.1f} megapixels, as simplenet-deblur does",
                           elem_id="tile")
        button = gr.Button("Deblur", variant="primary", elem_id="deblur")
      with gr.Column():
        slider = gr.ImageSlider(label="Before | after", type="numpy", format="png", elem_id="slider")
        download = gr.File(label="The deblurred photo at full resolution (PNG)", elem_id="download")
        status = gr.Markdown(elem_id="status")
    # The previous result goes first, so that a refused upload does not leave it standing beside the sentence.
    button.click(lambda: (None, None, ""), None, [slider, download, status], queue=False).then(
        run, [photo, ensemble, tile], [slider, download, status])
  return page


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="simplenet-demo", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--host", default="127.0.0.1", help="address to listen on; default 127.0.0.1 (this "
                      "machine only; 0.0.0.0 opens it to the network)")
  parser.add_argument("--port", type=int, default=7860, help="default 7860")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    deblurrer = Deblurrer(args.workdir, args.checkpoint)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  page = build(deblurrer)
  try:
    page.queue().launch(server_name=args.host, server_port=args.port, allowed_paths=[str(deblurrer.out)],
                        inbrowser=False, quiet=False)
  except OSError as error:  # the port is taken
    print(f"error: cannot listen on {args.host}:{args.port} ({error}); pass --port with a free port.",
          file=sys.stderr)
    return 1
  return 0


def run() -> None:
  """Console-script entry point (`simplenet-demo`)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
