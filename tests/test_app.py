"""simplenet_jax.app: the web demo's handler, and the page itself driven in a real (headless) Chromium."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from simplenet_jax import app
from simplenet_jax import inference
from simplenet_jax import photos

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As this machine's notes advise: no sandbox as root, and nothing that reaches for the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _photo(path: pathlib.Path, size=(44, 60), seed=0) -> np.ndarray:
  """A blurred-looking uint8 RGB photo of H×W = size, saved as PNG."""
  rng = np.random.default_rng(seed)
  pixels = np.clip(rng.normal(128, 40, (*size, 3)), 0, 255).astype(np.uint8)
  Image.fromarray(pixels).save(path)
  return pixels


@pytest.fixture(scope="module")
def deblurrer(trained_workdir, tmp_path_factory):
  return app.Deblurrer(str(trained_workdir), out=tmp_path_factory.mktemp("app_out"))


def test_the_handler_returns_the_networks_output_as_slider_and_png(deblurrer, tmp_path):
  pixels = _photo(tmp_path / "shot.png")
  (before, after), path, status = deblurrer(str(tmp_path / "shot.png"), False, "auto")
  expected = np.asarray(photos.to_uint8(inference.make_deblur_fn(deblurrer.network)(
      photos.to_float(pixels[None]))))[0]
  saved = np.asarray(Image.open(path))
  assert before.dtype == after.dtype == np.uint8
  np.testing.assert_array_equal(before, pixels)
  np.testing.assert_array_equal(saved, expected)
  np.testing.assert_array_equal(after, expected)
  assert (saved != pixels).mean() > 0.5  # the trained model changes the photo
  assert pathlib.Path(path).name == "shot-deblurred.png"
  assert status.startswith("Deblurred shot.png (60×44) in ") and "the whole photo at once" in status


def test_tiles_report_progress_once_per_window(deblurrer, tmp_path):
  _photo(tmp_path / "wide.png", size=(40, 70))
  calls = []
  progress = lambda value, desc=None, unit=None: calls.append(value)
  deblurrer(str(tmp_path / "wide.png"), False, "256", progress)  # one 40×70 window: tile ≥ photo
  assert calls[1:] == [(1, 1)]
  calls.clear()
  image = np.zeros((1, 40, 70, 3), np.float32)
  inference.tiled(lambda x: x, image, 16, 4, progress=lambda d, t: calls.append((d, t)))
  # rows start at 0, 12, 24 (and 24 = 40 − 16); columns at 0, 12, …, 48, 54 (= 70 − 16): 3 × 6 windows
  assert calls == [(i, 18) for i in range(1, 19)]


def test_resolve_tile_follows_simplenet_deblur():
  assert app.resolve_tile("auto", 1_000_000) == 0 and app.resolve_tile("auto", 2_000_000) == 512
  assert app.resolve_tile("whole photo", 9_000_000) == 0 and app.resolve_tile("256", 10) == 256


@pytest.mark.parametrize("case, message", [
    ("none", "Choose a photo to deblur first."),
    ("text", "notes.png is not an image this demo can read; upload a JPEG, PNG or WebP photo."),
    ("tiny", "tiny.png is 12×30 pixels, too small to deblur; the demo needs at least 16 pixels on each side."),
    ("truncated", "cut.png is damaged or not an image this demo can read; upload a JPEG, PNG or WebP photo."),
])
def test_a_bad_upload_is_one_sentence(deblurrer, tmp_path, case, message):
  path = None
  if case == "text":
    path = tmp_path / "notes.png"
    path.write_text("not a picture\n")
  elif case == "tiny":
    path = tmp_path / "tiny.png"
    _photo(path, size=(30, 12))
  elif case == "truncated":
    path = tmp_path / "cut.png"
    _photo(tmp_path / "whole.png", size=(64, 64))
    data = (tmp_path / "whole.png").read_bytes()
    path.write_bytes(data[:len(data) // 2])
  with pytest.raises(gr.Error) as info:
    deblurrer(None if path is None else str(path), False, "auto")
  assert info.value.message == message


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: pathlib.Path) -> None:
  deadline = time.monotonic() + 240
  while True:
    try:
      urllib.request.urlopen(url, timeout=5).read()
      return
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        pytest.fail(f"the demo did not come up on {url}:\n{log.read_text()[-3000:]}")
      time.sleep(0.5)


@pytest.fixture(scope="module")
def server(trained_workdir, tmp_path_factory):
  """`python -m simplenet_jax.app` on a free local port, until the module's tests are done."""
  port = _free_port()
  log = tmp_path_factory.mktemp("app_server") / "server.log"
  with log.open("w") as out:
    process = subprocess.Popen([sys.executable, "-m", "simplenet_jax.app", "--workdir", str(trained_workdir),
                                "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
  url = f"http://127.0.0.1:{port}/"
  _wait_until_up(url, process, log)
  yield url
  process.terminate()
  process.wait(timeout=30)


@pytest.mark.slow
def test_the_page_in_chromium_deblurs_an_upload(server, trained_workdir, tmp_path):
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  assert os.path.exists(CHROMIUM), f"the browser test needs Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)"
  pixels = _photo(tmp_path / "upload.png", size=(52, 76), seed=3)
  _, network, _ = inference.load_model(trained_workdir)
  expected = np.asarray(photos.to_uint8(inference.make_deblur_fn(network)(photos.to_float(pixels[None]))))[0]
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.goto(server, wait_until="domcontentloaded")
      page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "upload.png"))
      page.locator("#photo [aria-label='upload.png']").wait_for(timeout=60_000)  # the upload has landed
      page.locator("#deblur").click()
      page.locator("#status").get_by_text("Deblurred upload.png (76×52)").wait_for(timeout=240_000)
      page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
      link = page.locator("#download a").first
      with page.expect_download() as download:
        link.click()
      download.value.save_as(tmp_path / "result.png")
      slider_images = page.locator("#slider img").count()
      # A bad upload through the page: one sentence in an error notice, nothing else.
      (tmp_path / "notes.png").write_text("not a picture\n")
      page.locator("#photo button[aria-label='Clear'], #photo button[title='Clear']").first.click()
      page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "notes.png"))
      page.locator("#photo [aria-label='notes.png']").wait_for(timeout=60_000)
      page.locator("#deblur").click()
      page.get_by_text("notes.png is not an image this demo can read").first.wait_for(timeout=60_000)
      assert "Deblurred" not in page.locator("#status").inner_text()  # the previous result is gone
      page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
    finally:
      browser.close()
  result = np.asarray(Image.open(tmp_path / "result.png"))
  assert result.shape == pixels.shape
  np.testing.assert_array_equal(result, expected)  # the page's file is the network's output …
  assert (result != pixels).mean() > 0.5  # … which differs from the upload wherever the model changes it
  assert slider_images >= 2
  assert (tmp_path / "page.png").stat().st_size > 10_000


def test_limits_and_credentials_are_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
  for argv, message in ((["--port", "-1"], "--port must be from 1 to 65535, got -1."),
                        (["--max-pixels", "0"], "--max-pixels must be more than 0, got 0."),
                        (["--queue-size", "0"], "--queue-size must be more than 0, got 0.")):
    with pytest.raises(SystemExit):
      app.main(["--workdir", str(tmp_path), *argv])
    assert message in capsys.readouterr().err
  bad = tmp_path / "auth"
  bad.write_text("no colon here\n")
  assert app.main(["--workdir", str(tmp_path), "--auth-file", str(bad)]) == 1
  assert "must hold user:password" in capsys.readouterr().err
  bad.write_text("ann:secret\nbob:other:colon\n")
  assert app._credentials(str(bad)) == [("ann", "secret"), ("bob", "other:colon")]
  monkeypatch.setenv(app.AUTH_VARIABLE, "carl:pw")
  assert app._credentials(None) == [("carl", "pw")]


def test_an_open_host_warns_and_the_pixel_budget_refuses_large_photos(deblurrer, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(app.AUTH_VARIABLE, raising=False)
  assert app.main(["--workdir", str(tmp_path / "none"), "--host", "0.0.0.0"]) == 1  # no checkpoint: stops there
  err = capsys.readouterr().err
  assert "warning: --host 0.0.0.0 opens the demo to every machine" in err and app.AUTH_VARIABLE in err
  path = tmp_path / "big.png"
  _photo(path, size=(80, 60))
  with pytest.raises(gr.Error) as info:
    app.read_upload(str(path), max_pixels=4000)
  assert info.value.message == "big.png has 0 megapixels, more than this demo's 0.004; deblur it with " \
                               "simplenet-deblur, which has no limit."


def test_a_request_past_its_time_budget_stops_at_its_next_tile(trained_workdir, tmp_path):
  slow = app.Deblurrer(str(trained_workdir), out=tmp_path / "results", max_seconds=0.0)
  path = tmp_path / "photo.png"
  _photo(path, size=(300, 270))
  windows = []
  real = app.inference.tiled

  def counted(apply_fn, image, tile, overlap, progress=None):
    return real(lambda x: windows.append(1) or apply_fn(x), image, tile, overlap, progress)

  app.inference.tiled = counted
  try:
    with pytest.raises(gr.Error) as info:
      slow(str(path), False, "256")
  finally:
    app.inference.tiled = real
  assert info.value.message == ("photo.png takes longer than this demo's 0 s; choose smaller tiles or no ensemble, "
                                "or deblur it with simplenet-deblur.")
  assert len(windows) == 1  # of 4


def test_a_request_whose_visitor_left_stops_at_its_next_tile(trained_workdir, tmp_path, monkeypatch):
  monkeypatch.setattr(app, "ABANDONED_S", 0.5)
  monkeypatch.setattr(app, "POLL_S", 0.05)
  deblurrer = app.Deblurrer(str(trained_workdir), out=tmp_path / "results")
  path = tmp_path / "photo.png"
  _photo(path, size=(520, 600))  # 3 × 3 tiles of 256
  windows = []
  real = app.inference.tiled

  def counted(apply_fn, image, tile, overlap, progress=None):
    return real(lambda x: windows.append(1) or time.sleep(0.1) or apply_fn(x), image, tile, overlap, progress)

  monkeypatch.setattr(app.inference, "tiled", counted)
  handler = app.request_handler(deblurrer)
  stayed = list(handler(str(path), False, "256", progress=None))  # a visitor who waits: Gradio resumes it
  (before_after, png_path, status) = stayed[-1]
  assert len(windows) == 9 and pathlib.Path(png_path).exists() and status.startswith("Deblurred photo.png")
  assert all(update == (gr.skip(), gr.skip(), gr.skip()) for update in stayed[:-1])

  windows.clear()
  left = handler(str(path), False, "256", progress=None)
  next(left)  # the visitor is there, then leaves: Gradio never resumes the generator again
  time.sleep(3)  # the abandonment is noticed at the first tile that ends 0.5 s after the last resume
  assert 1 <= len(windows) < 9
  done = len(windows)
  time.sleep(1)
  assert len(windows) == done  # stopped for good


def _folder_bytes(folder: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _peak_rss_mb(pid: int) -> float:
  """The process's peak resident memory (VmHWM, Linux)."""
  status = pathlib.Path(f"/proc/{pid}/status").read_text()
  return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.mark.slow
def test_the_demo_under_load_answers_or_refuses_every_request(trained_workdir, tmp_path, monkeypatch):
  """simplenet-demo on 127.0.0.1, driven by gradio_client: 8 clients at once, an oversized upload, a
  decompression bomb and a client that leaves mid-request. Every request is answered or refused in one
  sentence, within a time bound; the server's peak memory and its temporary folders stay bounded."""
  from gradio_client import Client, handle_file  # pylint: disable=g-import-not-at-top
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  port = _free_port()
  gradio_tmp, downloads = tmp_path / "gradio", tmp_path / "downloads"  # none of it in the real /tmp
  # gradio_client 2.7 leaves an empty folder in the system's temporary folder for every file it downloads.
  (tmp_path / "client_tmp").mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "client_tmp"))
  log = tmp_path / "server.log"
  with log.open("w") as out:
    process = subprocess.Popen(
        [sys.executable, "-m", "simplenet_jax.app", "--workdir", str(trained_workdir), "--port", str(port),
         "--max-file-size", "1mb", "--max-pixels", "2"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "GRADIO_TEMP_DIR": str(gradio_tmp),
             "TMPDIR": str(tmp_path)})
  url = f"http://127.0.0.1:{port}/"
  try:
    _wait_until_up(url, process, log)
    photos_in = []
    for k in range(8):
      photos_in.append(tmp_path / f"photo{k}.png")
      _photo(photos_in[-1], size=(120 + 2 * k, 160), seed=k)
    oversized = tmp_path / "oversized.png"  # 1.9 MB of noise: over the 1 MB upload limit
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(oversized)
    bomb = tmp_path / "bomb.png"  # a few KB that would decode to 49 megapixels
    Image.new("1", (7000, 7000)).save(bomb)
    assert oversized.stat().st_size > 1_000_000 and bomb.stat().st_size < 20_000

    def deblur(path):
      started = time.monotonic()
      try:
        client = Client(url, verbose=False, download_files=str(downloads))
        slider, png, status = client.predict(handle_file(str(path)), False, "auto", api_name="/run")
        return "answered", status, time.monotonic() - started, png
      except Exception as error:  # pylint: disable=broad-except  # what a client sees of a refusal
        return "refused", str(error), time.monotonic() - started, None

    leaver = Client(url, verbose=False, download_files=str(downloads))
    big = tmp_path / "big.jpg"
    # 1.5 MP of smooth stripes (a small JPEG, under the upload limit): 30 tiles of 256, still running when left
    ys, xs = np.mgrid[:1100, :1400]
    stripes = (127 + 100 * np.sin(xs / 9.0 + ys / 23.0)).astype(np.uint8)
    Image.fromarray(np.stack([stripes, stripes[::-1], stripes[:, ::-1]], -1)).save(big, quality=90)
    assert big.stat().st_size < 1_000_000
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
      left = leaver.submit(handle_file(str(big)), False, "256", api_name="/run")
      time.sleep(2)
      left.cancel()
      futures = [pool.submit(deblur, p) for p in photos_in] + [pool.submit(deblur, oversized),
                                                                pool.submit(deblur, bomb)]
      outcomes = [f.result(timeout=600) for f in futures]
    for (kind, status, seconds, png), path in zip(outcomes[:8], photos_in):
      assert kind == "answered" and status.startswith(f"Deblurred {path.name}"), (kind, status)
      assert Image.open(png).size == Image.open(path).size
    kind, message, _, _ = outcomes[8]  # gradio_client checks the page's limit before it uploads
    assert kind == "refused" and "exceeds the maximum file size of 1048576 bytes" in message, message
    import httpx  # pylint: disable=g-import-not-at-top  # and the server refuses it from any other client
    with oversized.open("rb") as f:
      response = httpx.post(f"{url}gradio_api/upload", files={"files": ("oversized.png", f, "image/png")})
    assert response.status_code == 413, (response.status_code, response.text[:300])
    kind, message, _, _ = outcomes[9]
    assert "bomb.png" in message and "megapixels" in message and "\n" not in message.strip(), (kind, message)
    (results,) = tmp_path.glob("simplenet-demo-*")  # the demo's own results, in its TMPDIR
    written = sorted(f.name for f in results.rglob("*.png"))
    assert len(written) == 8 and not [name for name in written if "big" in name], written  # the leaver stopped
    peak = _peak_rss_mb(process.pid)
    held = _folder_bytes(gradio_tmp) + _folder_bytes(results)
    print(f"LOAD: 8 clients answered in {max(o[2] for o in outcomes[:8]):.1f} s at most; peak RSS {peak:.0f} MB; "
          f"temporary folders {held / 1e6:.1f} MB")
    assert peak < 3000, peak
    assert held < 5_000_000, held  # the refused 1.9 MB upload is not kept
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
  finally:
    process.terminate()
    process.wait(timeout=30)
  assert list(tmp_path.glob("simplenet-demo-*")) == []  # a demo stopped by SIGTERM deletes its results
