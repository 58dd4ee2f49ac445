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
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
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
# Limits that keep one visitor from holding the machine (each has a flag): larger photos are refused
# (simplenet-deblur is the tool for them), a request stops at its next tile past the time budget, the queue
# refuses more waiting requests, uploads above the file size are refused by Gradio, and results and uploads
# older than RESULT_AGE_S are deleted (all of them at exit).
MAX_PIXELS = 12_000_000
MAX_SECONDS = 300.0
QUEUE_SIZE = 8
MAX_FILE_SIZE = "25mb"
RESULT_AGE_S = 3600
POLL_S = 0.5  # how often a waiting request yields to Gradio
ABANDONED_S = 5.0  # a request not resumed by Gradio for this long has lost its visitor
AUTH_VARIABLE = "SIMPLENET_DEMO_AUTH"  # "user:password"; never on the command line, where `ps` shows it
TILE_CHOICES = ("auto", "whole photo", "256", "512", "1024")


class Deblurrer:
  """A workdir's network (jitted once: it compiles once per image size) and where its results go."""

  def __init__(self, workdir: str, checkpoint: str = "latest", out: pathlib.Path | None = None, *,
               max_pixels: int = MAX_PIXELS, max_seconds: float = MAX_SECONDS):
    self.config, self.network, self.step = inference.load_model(workdir, checkpoint)
    self.out = out or pathlib.Path(tempfile.mkdtemp(prefix="simplenet-demo-"))
    self.out.mkdir(parents=True, exist_ok=True)
    self.max_pixels, self.max_seconds = max_pixels, max_seconds

  def prune(self, age_s: float = RESULT_AGE_S) -> None:
    """Deletes the results older than `age_s` seconds."""
    now = time.time()
    for folder in self.out.iterdir():
      if now - folder.stat().st_mtime > age_s:
        shutil.rmtree(folder, ignore_errors=True)

  def __call__(self, path: str | None, ensemble: bool, tile_choice: str, progress=None, wanted=None):
    """(before, after) uint8 for the slider, the PNG's path, a status line; gr.Error for a bad upload.
    `wanted()` is asked after every tile: False (its visitor left) stops the work there."""
    self.prune()
    photo, name = read_upload(path, self.max_pixels)
    height, width = photo.rgb.shape[:2]
    tile = resolve_tile(tile_choice, height * width)
    if progress is not None:
      progress(0, desc="deblurring (the first photo of a size also compiles the network)")
    start = time.perf_counter()

    def report(done, total):  # after every tile: the time budget and the visitor's presence are checked here
      if wanted is not None and not wanted() and done < total:
        raise Abandoned(f"{name}: its visitor left; stopped after {done} of {total} tiles.")
      if time.perf_counter() - start > self.max_seconds and done < total:
        raise _refusal(f"{name} takes longer than this demo's {self.max_seconds:.0f} s; choose smaller tiles "
                       "or no ensemble, or deblur it with simplenet-deblur.")
      if progress is not None:
        progress((done, total), desc="tiles", unit="tiles")

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


def _refusal(message: str) -> gr.Error:
  """A refused request: its sentence on the page, and one line in the server's log instead of the traceback
  Gradio prints for every error a handler raises."""
  logging.getLogger(__name__).warning("refused: %s", message)
  return gr.Error(message, print_exception=False)


def read_upload(path: str | None, max_pixels: int = MAX_PIXELS) -> tuple[photos.Photo, str]:
  """The uploaded photo and its file name, or a gr.Error of one sentence."""
  if not path:
    raise _refusal("Choose a photo to deblur first.")
  name = pathlib.Path(path).name
  try:
    with Image.open(path) as image:  # the size, before decoding a photo too large to decode
      width, height = image.size
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    raise _refusal(f"{name} is not an image this demo can read; upload a JPEG, PNG or WebP photo.") from None
  if min(width, height) < MIN_SIDE:
    raise _refusal(f"{name} is {width}×{height} pixels, too small to deblur; the demo needs at least "
                   f"{MIN_SIDE} pixels on each side.")
  if width * height > max_pixels:
    raise _refusal(f"{name} has {width * height / 1e6:.0f} megapixels, more than this demo's "
                   f"{max_pixels / 1e6:g}; deblur it with simplenet-deblur, which has no limit.")
  try:
    return photos.read_photo(pathlib.Path(path)), name
  except photos.READ_ERRORS:
    raise _refusal(f"{name} is damaged or not an image this demo can read; upload a JPEG, PNG or WebP "
                   "photo.") from None


def resolve_tile(choice: str, pixels: int) -> int:
  """Tile size in pixels (0: the whole photo); "auto" tiles as simplenet-deblur does."""
  if choice == "auto":
    return tiling.auto_tile(pixels)
  return 0 if choice == "whole photo" else int(choice)


class Abandoned(Exception):
  """The visitor of a request left before its result was ready."""


def request_handler(deblurrer: Deblurrer):
  """The page's handler: the deblurring runs in a thread while this generator waits, yielding "no change" every
  POLL_S. Gradio stops iterating the generator of a visitor who leaves; the thread notices at its next tile that
  the generator has not been resumed for ABANDONED_S, and stops, so the machine is free for the next visitor."""

  def run(path, ensemble, tile_choice, progress=gr.Progress()):
    last_resumed, box = [time.monotonic()], {}

    def work():
      try:
        box["result"] = deblurrer(path, ensemble, tile_choice, progress,
                                  wanted=lambda: time.monotonic() - last_resumed[0] < ABANDONED_S)
      except Abandoned as error:
        logging.getLogger(__name__).info("%s", error)
      except BaseException as error:  # pylint: disable=broad-except  # raised again to Gradio below
        box["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while True:
      worker.join(POLL_S)
      if not worker.is_alive():
        break
      yield gr.skip(), gr.skip(), gr.skip()
      last_resumed[0] = time.monotonic()
    if "error" in box:
      raise box["error"]
    if "result" in box:
      yield box["result"]

  return run


def build(deblurrer: Deblurrer) -> gr.Blocks:
  """The page: a photo, the two options and a button; the slider, the download and a status line."""

  run = request_handler(deblurrer)

  name = deblurrer.config.get("name", "?")
  # Gradio's own copies of uploads and results are deleted by age too, checked every 10 minutes.
  with gr.Blocks(title="SimpleNet deblurring", delete_cache=(600, RESULT_AGE_S)) as page:
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
  parser.add_argument("--max-pixels", type=float, default=MAX_PIXELS / 1e6, metavar="MP",
                      help=f"largest photo in megapixels; default {MAX_PIXELS / 1e6:g}")
  parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                      help=f"a request stops at its next tile after this long; default {MAX_SECONDS:g}")
  parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                      help=f"requests that may wait (one runs at a time); default {QUEUE_SIZE}")
  parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help=f"largest upload; default {MAX_FILE_SIZE}")
  parser.add_argument("--auth-file", default=None,
                      help=f"a file of user:password lines that the page asks for (or set {AUTH_VARIABLE})")
  args = parser.parse_args(argv)
  if not 0 < args.port < 65536:
    parser.error(f"--port must be from 1 to 65535, got {args.port}.")
  for flag, value in (("--max-pixels", args.max_pixels), ("--max-seconds", args.max_seconds),
                      ("--queue-size", args.queue_size)):
    if value <= 0:
      parser.error(f"{flag} must be more than 0, got {value:g}.")
  try:
    auth = _credentials(args.auth_file)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  if args.host not in ("127.0.0.1", "localhost", "::1"):
    print(f"warning: --host {args.host} opens the demo to every machine that can reach this one"
          + ("; it asks for the credentials given." if auth else
             f"; set {AUTH_VARIABLE}=user:password or pass --auth-file to require a login."), file=sys.stderr)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    deblurrer = Deblurrer(args.workdir, args.checkpoint, max_pixels=int(args.max_pixels * 1e6),
                          max_seconds=args.max_seconds)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  page = build(deblurrer)
  # SIGTERM (a service manager's stop, `kill`) ends Python without its `finally` blocks: as SystemExit it
  # unwinds like Ctrl-C, so that the results folder below is deleted either way.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  try:
    page.queue(max_size=args.queue_size, default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(deblurrer.out)], inbrowser=False,
        quiet=False, auth=auth, max_file_size=args.max_file_size)
  except OSError as error:  # the port is taken
    print(f"error: cannot listen on {args.host}:{args.port} ({error}); pass --port with a free port.",
          file=sys.stderr)
    return 1
  finally:
    shutil.rmtree(deblurrer.out, ignore_errors=True)
  return 0


def _credentials(auth_file: str | None) -> list[tuple[str, str]] | None:
  """[(user, password)] from --auth-file or the environment variable, or None; ValueError if malformed."""
  if auth_file:
    try:
      lines = pathlib.Path(auth_file).read_text().splitlines()
    except OSError as error:
      raise ValueError(f"cannot read --auth-file {auth_file} ({error.strerror}).") from None
    source = f"--auth-file {auth_file}"
  elif os.environ.get(AUTH_VARIABLE):
    lines, source = [os.environ[AUTH_VARIABLE]], AUTH_VARIABLE
  else:
    return None
  pairs = [tuple(line.strip().split(":", 1)) for line in lines if line.strip()]
  if not pairs or any(len(pair) != 2 or not all(pair) for pair in pairs):
    raise ValueError(f"{source} must hold user:password (one per line).")
  return pairs


def run() -> None:
  """Console-script entry point (`simplenet-demo`)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
