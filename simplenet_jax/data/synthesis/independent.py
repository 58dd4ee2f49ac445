"""The independent test set: photos the demo never trains on, blurred by a generator that is not its own.

The demo's own test split shares its blur model with its training pairs, so it cannot tell a model that
learned to deblur from one that learned the synthesizer. This set can:

* **Photos.** Eight real photographs that ship inside wheels on PyPI, none of them skimage's (the demo's
  training photos) or sklearn's and matplotlib's (its test photos): gradio's four, ultralytics' two, imgaug's
  and mahotas'. Each is read from the installed package when its pinned version is installed, or else from
  the pinned wheel (downloaded once into the cache with pip, without installing it), and checked against its
  SHA-256. Each is used whole, scaled so that its longer side is at most `MAX_SIDE`.
* **Blur.** One spatially uniform motion kernel per pair, not a camera-shake homography sweep: a straight
  line of a random direction (Sun et al. 2015) or a smooth curve, a cubic spline through six random points
  (after Chakrabarti 2016), travelled at constant speed, with the exposure's middle instant at the kernel's
  centre (the sharp image is the middle of the exposure, as in GoPro). It is convolved in linear light.
* **Bands.** Each photo gives one pair in each band of motion length: nearly sharp (at most 1 px), mild
  (2–12 px) and heavy (20–30 px), `BAND_LENGTHS`; `evaluation.bands` names a pair's band from its length.
* **Camera.** The same sensor noise in every band (signal-dependent shot noise and a floor of read noise, in
  linear light, `noise_std`), quantized to 8 bits; no JPEG.

`python -m simplenet_jax.data.synthesize --independent --out data/independent` writes it in the GoPro
layout (only a test split: `test/<photo>/{blur,sharp}/00000B.png`, frame B the band) with a meta.json;
`python eval.py --workdir DIR --data data/independent` scores a model on it, per band. Never train on it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
from scipy import interpolate
from scipy import signal
from skimage import metrics as sk_metrics

from simplenet_jax.data import images
from simplenet_jax.data.synthesis import dataset
from simplenet_jax.data.synthesis import linear_light
from simplenet_jax.paths import cache_dir

SEED = 31  # fixed with the generator, before any training change was measured on the set
MAX_SIDE = 512  # longest side of a pair's photo; keeps evaluating the set to seconds on a CPU
KERNEL_SIZE = 35  # a 30 px path reaches at most 15 px from its middle; a pixel more for the bilinear splat
MARGIN = KERNEL_SIZE // 2  # the photo's border that the convolution consumes: the sharp image is the rest
BAND_LENGTHS = {"nearly sharp": (0.0, 1.0), "mild": (2.0, 12.0), "heavy": (20.0, 30.0)}  # px of motion
SHOT_NOISE = (0.0, 0.006)  # std of shot noise at white, linear light, drawn per pair
READ_NOISE = 0.0005  # std of read noise, linear light (about 1.6 levels in the deepest shadows)
META_FILE = "meta.json"
META_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WheelPhoto:
  """A photo inside a pinned wheel of a package on PyPI."""

  name: str  # the scene's folder name
  package: str
  version: str
  member: str  # its path inside the wheel (and the installed package)
  sha256: str  # of the photo file
  platform: str = ""  # for a wheel with compiled code: the platform tag pip downloads it for


PHOTOS = (
    WheelPhoto("cheetah_running", "gradio", "6.31.0", "gradio/media_assets/images/cheetah.jpg",
               "29b0090f5ec471dad0264abc20ecc3c80a0133a63a03d11df920e39a093fe6c8"),
    WheelPhoto("cheetah_face", "gradio", "6.31.0", "gradio/media_assets/images/cheetah1.jpg",
               "35550bfbba996e59c242af00f6a14a9c0d055dfbc52ad069a1a4e8c1c39ca095"),
    WheelPhoto("lion", "gradio", "6.31.0", "gradio/media_assets/images/lion.jpg",
               "4c45ece00075f152cb2e6cfd5f1dfd7dc8e83042264685b4f470026240eff3ef"),
    WheelPhoto("eiffel_tower", "gradio", "6.31.0", "gradio/media_assets/images/tower.jpg",
               "f57f96f7a71f89739d27ae8ffc09f73cd2f17415d16c94d42dcb0d571f4eb0ee"),
    WheelPhoto("bus", "ultralytics", "8.4.190", "ultralytics/assets/bus.jpg",
               "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    WheelPhoto("football_players", "ultralytics", "8.4.190", "ultralytics/assets/zidane.jpg",
               "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    WheelPhoto("quokka", "imgaug", "0.4.0", "imgaug/quokka.jpg",
               "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e"),
    WheelPhoto("portrait", "mahotas", "1.4.19", "mahotas/demos/data/luispedro.jpg",
               "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1",
               platform="manylinux_2_28_x86_64"),
)


def photo_bytes(photo: WheelPhoto, cache: pathlib.Path | None = None) -> bytes:
  """The photo's file, from the installed package when its pinned version is installed, else from the pinned
  wheel (downloaded once); images.DatasetError in one sentence if neither gives the pinned bytes."""
  data = _installed_member(photo)
  if data is None:
    data = zipfile.ZipFile(_wheel(photo, cache or cache_dir())).read(photo.member)
  if hashlib.sha256(data).hexdigest() != photo.sha256:
    raise images.DatasetError(f"{photo.member} of {photo.package} {photo.version} is not the pinned photo "
                              f"(SHA-256 {hashlib.sha256(data).hexdigest()[:12]}…); delete {cache or cache_dir()} "
                              "and rerun.")
  return data


def _installed_member(photo: WheelPhoto) -> bytes | None:
  try:
    distribution = importlib.metadata.distribution(photo.package)
  except importlib.metadata.PackageNotFoundError:
    return None
  path = pathlib.Path(distribution.locate_file(photo.member))
  return path.read_bytes() if distribution.version == photo.version and path.is_file() else None


def _wheel(photo: WheelPhoto, cache: pathlib.Path) -> pathlib.Path:
  """The pinned wheel in `cache/wheels`, downloaded by pip (no dependencies, nothing installed) if missing."""
  folder = cache / "wheels"
  pattern = f"{photo.package}-{photo.version}-*.whl"
  found = sorted(folder.glob(pattern))
  if found:
    return found[0]
  partial = folder / f".{photo.package}-{photo.version}.partial"
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", str(partial), f"{photo.package}=={photo.version}"]
  if photo.platform:  # the same file on every machine, whatever this one's platform
    command[5:5] = ["--platform", photo.platform, "--python-version", "3.11", "--implementation", "cp"]
  run = subprocess.run(command, capture_output=True, text=True, check=False)
  wheels = sorted(partial.glob(pattern))
  if run.returncode != 0 or not wheels:
    shutil.rmtree(partial, ignore_errors=True)
    reason = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
    raise images.DatasetError(f"cannot download {photo.package}=={photo.version} from PyPI for its photo "
                              f"{photo.name} ({reason}); connect to PyPI, or put the wheel in {folder}.")
  os.replace(wheels[0], folder / wheels[0].name)
  shutil.rmtree(partial, ignore_errors=True)
  return folder / wheels[0].name


@functools.lru_cache(maxsize=len(PHOTOS))
def load_photo(photo: WheelPhoto) -> np.ndarray:
  """uint8 [H, W, 3] sRGB: the photo scaled (Lanczos) so that its longer side is at most MAX_SIDE."""
  image = Image.open(io.BytesIO(photo_bytes(photo))).convert("RGB")
  shrink = MAX_SIDE / max(image.size)
  if shrink < 1:
    image = image.resize((round(image.width * shrink), round(image.height * shrink)), Image.Resampling.LANCZOS)
  return np.asarray(image)


def motion_path(rng: np.random.Generator, length: float, shape: str, num_points: int = 512) -> np.ndarray:
  """[num_points, 2] (x, y) positions at evenly spaced instants of the exposure, at constant speed along a
  path `length` px long, relative to the middle instant's position.

  "line": a straight path of a uniformly drawn direction (Sun et al. 2015). "curve": a cubic spline through
  six points drawn uniformly in a square (after Chakrabarti 2016), resampled at equal arc lengths.
  """
  times = np.linspace(0.0, 1.0, num_points)
  if shape == "line":
    angle = rng.uniform(0.0, np.pi)
    path = np.outer(times - 0.5, [np.cos(angle), np.sin(angle)]) * length
  elif shape == "curve":
    knots = rng.uniform(0.0, 1.0, size=(6, 2))
    spline = interpolate.CubicSpline(np.linspace(0.0, 1.0, 6), knots, axis=0)
    dense = spline(np.linspace(0.0, 1.0, 20 * num_points))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    at = np.interp(times * arc[-1], arc, np.arange(len(dense)))  # equal arc lengths: constant speed
    path = np.stack([np.interp(at, np.arange(len(dense)), dense[:, k]) for k in range(2)], axis=1)
    path = path * (length / arc[-1]) if arc[-1] > 0 else np.zeros_like(path)
  else:
    raise ValueError(f"motion_path draws a 'line' or a 'curve', not {shape!r}.")
  return path - path[num_points // 2]


def kernel_from_path(path: np.ndarray, size: int = KERNEL_SIZE) -> np.ndarray:
  """[size, size] float64 summing to 1: the time the path spends near each pixel (bilinear splat), its
  middle instant at the centre pixel."""
  centre = (size - 1) / 2
  kernel = np.zeros((size, size))
  x, y = path[:, 0] + centre, path[:, 1] + centre
  if x.min() < 0 or y.min() < 0 or x.max() > size - 1 or y.max() > size - 1:
    raise ValueError(f"a path of {np.abs(path).max():.1f} px from its middle does not fit a {size}² kernel.")
  x0, y0 = np.minimum(np.floor(x).astype(int), size - 2), np.minimum(np.floor(y).astype(int), size - 2)
  fx, fy = x - x0, y - y0
  for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                         (1, 1, fy * fx)):
    np.add.at(kernel, (y0 + dy, x0 + dx), weight)
  return kernel / kernel.sum()


def noise_std(rng: np.random.Generator, linear: np.ndarray) -> tuple[np.ndarray, float]:
  """Per-pixel std of the sensor noise for a linear-light image: shot noise (its std at white drawn from
  SHOT_NOISE) and read noise READ_NOISE; and the drawn shot-noise std."""
  shot = rng.uniform(*SHOT_NOISE)
  return np.sqrt(shot**2 * linear + READ_NOISE**2), float(shot)


def make_pair(photo: np.ndarray, rng: np.random.Generator, length: float) -> tuple[np.ndarray, np.ndarray, dict]:
  """(blur, sharp, info) of one photo: uint8, both the photo less MARGIN on every side."""
  shape = "line" if rng.random() < 0.5 else "curve"
  path = motion_path(rng, length, shape)
  kernel = kernel_from_path(path)
  linear = linear_light.linear_from_uint8(photo).astype(np.float64)
  blurred = np.stack([signal.fftconvolve(linear[..., c], kernel, mode="valid") for c in range(3)], axis=-1)
  std, shot = noise_std(rng, np.clip(blurred, 0.0, 1.0))
  noisy = blurred + std * rng.standard_normal(blurred.shape)
  blur = linear_light.uint8_from_linear(noisy)
  sharp = photo[MARGIN:-MARGIN, MARGIN:-MARGIN]
  assert blur.shape == sharp.shape, (blur.shape, sharp.shape)
  info = {"trajectory_length_px": round(float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()), 3),
          "shape": shape, "shot_noise": round(shot, 5)}
  return blur, sharp, info


def pairs(seed: int = SEED):
  """Yields (photo, band, frame, blur, sharp, info) for every photo and band, in a fixed order; pair (p, b)
  draws from the generator [seed, p, b] alone."""
  for p, photo in enumerate(PHOTOS):
    pixels = load_photo(photo)
    for b, (band, (low, high)) in enumerate(BAND_LENGTHS.items()):
      rng = np.random.default_rng([seed, p, b])
      length = rng.uniform(low, high)
      blur, sharp, info = make_pair(pixels, rng, length)
      yield photo, band, b, blur, sharp, {"band": band, **info}


def write_dataset(out: str | os.PathLike, seed: int = SEED) -> dict:
  """Writes the set to `out` (built in `<out>.partial`, renamed when complete) and returns its meta.json;
  a folder already holding this set (same recipe) is left as it is."""
  out = pathlib.Path(out)
  recipe = {"version": META_VERSION, "generator": "independent", "seed": seed, "max_side": MAX_SIDE,
            "kernel_size": KERNEL_SIZE, "bands": BAND_LENGTHS, "shot_noise": SHOT_NOISE, "read_noise": READ_NOISE,
            "photos": [dataclasses.asdict(p) for p in PHOTOS]}
  recipe = json.loads(json.dumps(recipe))
  existing = dataset.existing_build(out, recipe)
  if existing is not None:
    return existing
  partial = dataset.start_build(out)
  records = []
  for photo, band, frame, blur, sharp, info in pairs(seed):
    name = f"{frame:06d}.png"
    for kind, pixels in (("blur", blur), ("sharp", sharp)):
      (partial / "test" / photo.name / kind).mkdir(parents=True, exist_ok=True)
      (partial / "test" / photo.name / kind / name).write_bytes(images.encode_png(pixels))
    records.append({"split": "test", "scene": photo.name, "frame": name, "source_photo": photo.member,
                    "input_psnr_db": round(float(sk_metrics.peak_signal_noise_ratio(sharp, blur, data_range=255)), 3), **info})
  by_band = {band: [r["input_psnr_db"] for r in records if r["band"] == band] for band in BAND_LENGTHS}
  meta = {"recipe": recipe, "summary": {band: {"count": len(v), "mean_input_psnr_db": round(float(np.mean(v)), 3)}
                                        for band, v in by_band.items()},
          "pairs": records}
  dataset.finish_build(partial, out, meta)
  return meta
