"""Realistic blur pairs from sharp photos, made the way GoPro was made (SPEC §4, "Demo data").

GoPro's blurred frames are averages of consecutive sharp frames from a hand-held 240 fps camera, and the
middle frame is the ground truth (Nah et al. 2017). We do the same with a simulated camera: a random-walk
camera-shake trajectory (Boracchi & Foi 2012) sets the camera pose at each sub-frame; each pose is a homography
of the sharp photo (translation, a little roll, and the keystone of a pan/tilt); 15–31 sub-frames are averaged
in linear light; the middle sub-frame is the sharp image. The sensor then adds shot and read noise, and some
pairs are saved by the camera as JPEG (the blurred input only; the target stays lossless).

Training pairs are random crops of the photos at random scales, turned by a random element of the square's
symmetry group and recoloured (channel order, hue, saturation, white balance, exposure), identically for blur
and sharp, so that a handful of photos yields hundreds of distinct pairs and the model cannot learn their
colours. The built-in test pairs are whole photos from *other* packages than the training photos, so the
demo's figure measures how well the model deblurs photos it never saw.

    python -m simplenet_jax.data.synthesize --out data/demo

writes a GoPro-layout folder `DIR/{train,test}/<scene>/{blur,sharp}/NNNNNN.png` (one scene per source photo,
train and test photos disjoint) and `DIR/meta.json`. The same command gives byte-identical files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import io
import json
import logging
import math
import multiprocessing
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image
from skimage import data as skimage_data
from skimage import transform as sk_transform
import tqdm

from simplenet_jax.data import images

# The built-in photos: real photos that ship inside wheels the project installs (no download).
# Train: scikit-image's photos. The two motorcycle views show one scene; the gray ones (cameraman, coins and
# three close-up textures) are used as RGB and get colour from the augmentations. Left out: `retina` (a fundus
# image, nearly flat at any crop), `cat` (the same photo as `chelsea`), `moon` (nearly flat), `cell` (a
# microscope field), `page` and `text` (too small to crop without upscaling), and the drawn images.
BUILTIN_TRAIN_PHOTOS = ("skimage.data:astronaut", "skimage.data:rocket", "skimage.data:motorcycle_left",
                        "skimage.data:motorcycle_right", "skimage.data:hubble_deep_field",
                        "skimage.data:immunohistochemistry", "skimage.data:chelsea", "skimage.data:coffee",
                        "skimage.data:camera", "skimage.data:coins", "skimage.data:brick", "skimage.data:grass",
                        "skimage.data:gravel")
# Test: the photos of two other packages (a building, a flower, a portrait), whole.
BUILTIN_TEST_PHOTOS = ("sklearn.datasets:china.jpg", "sklearn.datasets:flower.jpg",
                       "matplotlib:grace_hopper.jpg")
BUILTIN_SOURCE = "built-in"

DEFAULT_TRAIN_PAIRS = 420
DEFAULT_TEST_PAIRS = 12
DEFAULT_SIZE = (256, 256)
# Whole-photo test pairs: the photo scaled so that its longer side is at most this (GoPro's frame width), less a
# border from which the shake draws the content that moves into view.
MAX_TEST_SIDE = 1280
TEST_BORDER = 40

# Share of a user's photos that become test scenes.
USER_TEST_FRACTION = 0.2

SPLITS = ("train", "test")
META_FILE = "meta.json"
META_VERSION = 2


@dataclasses.dataclass(frozen=True)
class BlurSettings:
  """The blur model's knobs. The defaults give mild to moderate shake (input PSNR mostly 24–36 dB at 256×256,
  mean 28–30 dB), which a small model learns to undo in minutes on a CPU (the demo); GoPro's blur is heavier
  (mean input 25.6 dB at 720p): ``max_length=30`` (``--max-blur 30``) comes closer to it.

  Attributes:
    min_length, max_length: range of the camera path length during one exposure, in output pixels.
    length_beta: Beta(a, b) shape of the path length within that range; (1.3, 5) is mostly moderate blur
      (median ≈ 3.4 px, 95% under 8 px for the default range) with tails of small and large ones.
    min_sub_frames, max_sub_frames: sub-frames averaged per blurred image (odd, so one is the middle).
    max_step: largest path step between sub-frames, in pixels; longer paths get more sub-frames (up to
      max_sub_frames) so that the average looks like a smear rather than separate ghosts.
    max_roll_deg: largest in-plane camera rotation away from the middle pose, reached by the longest paths.
    focal_range: focal length as a multiple of the longer image side; shorter focal lengths give more pan/tilt
      keystone for the same shift of the image centre.
    noise: standard deviation of sensor noise at white, in linear light, for the noisiest pairs (0: none).
      Shot noise grows with brightness; a tenth of it is signal-independent read noise.
    min_texture: mean absolute luminance gradient below which a crop counts as flat (clear sky, black space)
      and is drawn again.
    min_scale: smallest zoom of a photo; more zoomed-out crops pack in more edges than a GoPro frame has.
    jpeg_fraction: share of pairs whose blurred image the camera saves as JPEG (decoded again before storing).
    jpeg_quality: range of those JPEGs' quality.
  """

  min_length: float = 1.0
  max_length: float = 15.0  # 30 at first: the demo then gained only 0.6 dB in its 10 minutes
  length_beta: tuple[float, float] = (1.3, 5.0)
  min_sub_frames: int = 15
  max_sub_frames: int = 31
  max_step: float = 1.0
  max_roll_deg: float = 1.0
  focal_range: tuple[float, float] = (1.0, 2.5)
  noise: float = 0.01
  min_texture: float = 0.01
  min_scale: float = 0.5
  jpeg_fraction: float = 0.3
  jpeg_quality: tuple[int, int] = (70, 95)


@dataclasses.dataclass(frozen=True)
class Augmentations:
  """Changes of a training crop before it is blurred, so that blur and sharp get them identically.

  Colours change in linear light, as a camera's white balance and exposure would: the channels are permuted,
  the hue turned about the gray axis, the saturation scaled, each channel given a white-balance gain and the
  whole an exposure gain (values above white clip, as a sensor's do). The gains are drawn log-uniformly in
  [1/g, g].

  Attributes:
    dihedral: turn the crop by a random multiple of 90° and maybe mirror it (lossless).
    permute_channels: shuffle R, G and B.
    max_hue_deg: largest hue rotation.
    saturation: largest saturation gain g.
    white_balance: largest per-channel gain g.
    exposure: largest overall gain g.
  """

  dihedral: bool = True
  permute_channels: bool = True
  max_hue_deg: float = 180.0
  saturation: float = 1.6
  white_balance: float = 1.25
  exposure: float = 1.6


# --- Linear light ----------------------------------------------------------------------------------------------


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
  """The sRGB transfer function inverted (IEC 61966-2-1): sRGB values in [0, 1] to linear light."""
  srgb = np.asarray(srgb, dtype=np.float64)
  return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
  """Linear light in [0, 1] to sRGB values in [0, 1]."""
  linear = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
  return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


# Linear light of each 8-bit sRGB code, so photos convert with one lookup.
_LINEAR_OF_CODE = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def linear_from_uint8(pixels: np.ndarray) -> np.ndarray:
  return _LINEAR_OF_CODE[pixels]


def uint8_from_linear(linear: np.ndarray) -> np.ndarray:
  return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)


def average_in_linear_light(frames: Sequence[np.ndarray]) -> np.ndarray:
  """Averages uint8 sRGB frames as a sensor integrates light: sRGB → linear → mean → sRGB.

  Averaging the sRGB codes instead (GoPro's `blur_gamma`) darkens every edge: black and white average to 128
  that way but to 188 in linear light.
  """
  return uint8_from_linear(np.mean([linear_from_uint8(f) for f in frames], axis=0))


# --- Camera shake ----------------------------------------------------------------------------------------------


def shake_path(rng: np.random.Generator, length: float, num_steps: int = 2000) -> np.ndarray:
  """Camera-shake trajectory of Boracchi & Foi (2012): complex positions along a path of total `length`.

  As in their createTrajectory.m, a particle moves at constant speed; at each step its velocity gets a
  Gaussian kick, a pull back towards the start (centripetal) and, rarely, an abrupt reversal (pressing the
  shutter). `anxiety` (their name) sets how much the heading wanders. We draw it log-uniformly in
  [3e-5, 5e-3], from nearly straight to looping paths: with their range (up to 0.1) most 2000-step paths are
  so tangled that even a long path spans only a few pixels, far milder than GoPro's blur.
  """
  positions = np.zeros(num_steps, dtype=np.complex128)
  if length <= 0:
    return positions
  anxiety = float(np.exp(rng.uniform(np.log(3e-5), np.log(5e-3))))
  centripetal = 0.7 * rng.random()
  gaussian_term = 10.0 * rng.random()
  big_shake_rate = 0.2 * rng.random()
  speed = length / (num_steps - 1)
  heading = np.exp(2j * np.pi * rng.random())
  velocity = heading * anxiety
  uniforms = rng.random((num_steps, 2))
  kicks = rng.standard_normal(num_steps) + 1j * rng.standard_normal(num_steps)
  for t in range(num_steps - 1):
    big_shake = 0.0
    if uniforms[t, 0] < big_shake_rate * anxiety:
      big_shake = 2 * velocity * np.exp(1j * (np.pi + uniforms[t, 1] - 0.5))
    velocity = velocity + big_shake + anxiety * (gaussian_term * kicks[t] - centripetal * positions[t]) * speed
    velocity = velocity / abs(velocity) * speed
    positions[t + 1] = positions[t] + velocity
  return positions


def sample_at_sub_frames(path: np.ndarray, num_sub_frames: int) -> np.ndarray:
  """The path at `num_sub_frames` evenly spaced instants of the exposure (linear interpolation)."""
  times = np.linspace(0, len(path) - 1, num_sub_frames)
  steps = np.arange(len(path))
  return np.interp(times, steps, path.real) + 1j * np.interp(times, steps, path.imag)


def num_sub_frames_for(length: float, settings: BlurSettings) -> int:
  """Enough sub-frames that consecutive ones are at most `max_step` apart along the path, odd, in range."""
  needed = math.ceil(length / settings.max_step) + 1
  odd = needed + (1 - needed % 2)
  return int(np.clip(odd, settings.min_sub_frames, settings.max_sub_frames))


@dataclasses.dataclass(frozen=True)
class Shake:
  """Camera poses at the sub-frames of one exposure, relative to the middle (sharp) sub-frame.

  A hand-held camera mostly rotates (Whyte et al. 2012), so a pose is a rotation: the path position (x, y) of
  the image centre sets yaw = atan(x / f) and pitch = atan(y / f), which shift the image and add the pan/tilt
  keystone; `rolls` turn it in the image plane.
  """

  offsets: np.ndarray  # complex [N]: x + iy shift of the image centre, in pixels; offsets[N // 2] == 0
  rolls: np.ndarray  # [N] radians; rolls[N // 2] == 0
  focal: float  # pixels

  @property
  def num_sub_frames(self) -> int:
    return len(self.offsets)

  @property
  def path_length(self) -> float:
    return float(np.abs(np.diff(self.offsets)).sum())

  @classmethod
  def still(cls, num_sub_frames: int = 15, focal: float = 256.0) -> Shake:
    """A camera that does not move: every sub-frame is the sharp one."""
    return cls(np.zeros(num_sub_frames, np.complex128), np.zeros(num_sub_frames), focal)

  def homographies(self) -> np.ndarray:
    """[N, 3, 3] maps from centred (x, y, 1) pixel coordinates of the sharp frame to those of each sub-frame.

    K·R·K⁻¹ with K = diag(f, f, 1), written out so that a still pose gives the identity exactly.
    """
    yaw = np.arctan(self.offsets.real / self.focal)
    pitch = np.arctan(self.offsets.imag / self.focal)
    result = np.empty((self.num_sub_frames, 3, 3))
    for k in range(self.num_sub_frames):
      r = _rotation_z(self.rolls[k]) @ _rotation_y(yaw[k]) @ _rotation_x(pitch[k])
      result[k] = [[r[0, 0], r[0, 1], self.focal * r[0, 2]],
                   [r[1, 0], r[1, 1], self.focal * r[1, 2]],
                   [r[2, 0] / self.focal, r[2, 1] / self.focal, r[2, 2]]]
    return result


def _rotation_x(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def _rotation_y(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rotation_z(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def random_shake(rng: np.random.Generator, length: float, image_size: tuple[int, int],
                 settings: BlurSettings) -> Shake:
  """A camera shake whose path is `length` pixels long, with roll and focal length drawn to match."""
  num_sub_frames = num_sub_frames_for(length, settings)
  middle = num_sub_frames // 2
  offsets = sample_at_sub_frames(shake_path(rng, length), num_sub_frames)
  offsets = offsets - offsets[middle]
  # Roll is a random walk too; its size grows with the path so that a steady camera is steady in every way.
  walk = np.cumsum(rng.standard_normal(num_sub_frames))
  walk = walk - walk[middle]
  peak = np.abs(walk).max()
  roll_size = np.deg2rad(settings.max_roll_deg) * rng.random() * min(1.0, length / settings.max_length)
  rolls = walk / peak * roll_size if peak > 0 else np.zeros(num_sub_frames)
  focal = rng.uniform(*settings.focal_range) * max(image_size)
  return Shake(offsets, rolls, float(focal))


def pixel_maps(shake: Shake, height: int, width: int, margin: int) -> np.ndarray:
  """[N, 3, 3] maps from output (col, row) pixels to (col, row) of a canvas that has `margin` pixels more on
  every side: centre, apply the sub-frame's homography, move to the canvas."""
  cx, cy = (width - 1) / 2, (height - 1) / 2
  to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
  to_canvas = np.array([[1, 0, cx + margin], [0, 1, cy + margin], [0, 0, 1]], dtype=np.float64)
  return to_canvas @ shake.homographies() @ to_centre


def margin_for(shake: Shake, height: int, width: int) -> int:
  """Pixels of context needed around the output so that every sub-frame samples real photo content."""
  xs = np.linspace(-(width - 1) / 2, (width - 1) / 2, 9)
  ys = np.linspace(-(height - 1) / 2, (height - 1) / 2, 9)
  border = np.concatenate([np.stack(np.meshgrid(xs, ys[[0, -1]]), -1).reshape(-1, 2),
                           np.stack(np.meshgrid(xs[[0, -1]], ys), -1).reshape(-1, 2)])
  points = np.concatenate([border, np.ones((len(border), 1))], axis=1)
  moved = points @ shake.homographies().transpose(0, 2, 1)
  moved = moved[..., :2] / moved[..., 2:]
  return int(math.ceil(np.abs(moved - border).max())) + 2


def render_blur(canvas: np.ndarray, shake: Shake, height: int, width: int, margin: int) -> np.ndarray:
  """Average of the sub-frames in linear light: float [height, width, 3] in [0, 1] (linear).

  `canvas` is uint8 sRGB with `margin` extra pixels on every side. Sub-frames are sampled bilinearly from the
  canvas in linear light (light, not sRGB codes, mixes between pixels); a still pose (the middle sub-frame)
  is copied exactly.
  """
  linear = linear_from_uint8(canvas)
  inside = linear[margin:margin + height, margin:margin + width]
  total = np.zeros((height, width, 3), dtype=np.float64)
  for homography, pixel_map in zip(shake.homographies(), pixel_maps(shake, height, width, margin)):
    if np.array_equal(homography, np.eye(3)):
      total += inside
    else:
      total += sk_transform.warp(linear, sk_transform.ProjectiveTransform(matrix=pixel_map),
                                 output_shape=(height, width), order=1, mode="edge", preserve_range=True)
  return total / shake.num_sub_frames


def add_sensor_noise(linear: np.ndarray, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, float]:
  """Mild shot + read noise in linear light; returns the noisy image and the noise std at white."""
  sigma_white = noise * rng.random()
  if sigma_white <= 0:
    return linear, 0.0
  variance = sigma_white**2 * (linear + 0.01)  # shot noise ∝ signal, read noise = a tenth of it at white
  return linear + np.sqrt(variance) * rng.standard_normal(linear.shape), float(sigma_white)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two uint8 images (SPEC §5), inf when identical."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# --- One pair --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SynthesizedPair:
  blur: np.ndarray  # uint8 [H, W, 3]
  sharp: np.ndarray  # uint8 [H, W, 3]
  info: dict


def texture(pixels: np.ndarray) -> float:
  """Mean absolute luminance gradient of uint8 RGB pixels, in [0, 1] units."""
  luma = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
  return float((np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean()) / 2)


def random_canvas(photo: Image.Image, rng: np.random.Generator, canvas_height: int, canvas_width: int,
                  min_scale: float = 0.0, dihedral: bool = False) -> tuple[np.ndarray, float]:
  """A random crop of the photo at a random scale in [min_scale, 1] (log-uniform), maybe mirrored; with
  `dihedral`, also turned by a random multiple of 90°.

  Scales above 1 are used only when the photo is too small for the canvas otherwise, since upscaling softens
  what must be a sharp target.
  """
  quarter_turns = int(rng.integers(4)) if dihedral else 0
  if quarter_turns % 2:  # crop the transposed box, so that the turned canvas has the requested shape
    canvas_height, canvas_width = canvas_width, canvas_height
  fit = max(canvas_height / photo.height, canvas_width / photo.width)
  smallest = max(fit, min_scale)
  scale = float(np.exp(rng.uniform(np.log(smallest), np.log(max(smallest, 1.0)))))
  box_width = min(float(photo.width), canvas_width / scale)
  box_height = min(float(photo.height), canvas_height / scale)
  left = rng.uniform(0, photo.width - box_width)
  top = rng.uniform(0, photo.height - box_height)
  box = (left, top, min(left + box_width, photo.width), min(top + box_height, photo.height))
  canvas = photo.resize((canvas_width, canvas_height), Image.Resampling.LANCZOS, box=box)
  if rng.random() < 0.5:
    canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.rot90(np.asarray(canvas, dtype=np.uint8), quarter_turns).copy(), scale


def hue_rotation(angle: float) -> np.ndarray:
  """3×3 rotation of RGB about the gray axis (1, 1, 1)/√3 by `angle` radians (Rodrigues' formula)."""
  axis = np.full(3, 3 ** -0.5)
  cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)


def colour_transform(rng: np.random.Generator, augment: Augmentations) -> tuple[np.ndarray, dict]:
  """A random 3×3 matrix M for linear RGB row vectors (new = old @ M), and its draws for the record."""
  def log_uniform(bound: float, size=None):
    return np.exp(rng.uniform(-np.log(bound), np.log(bound), size))

  order = rng.permutation(3) if augment.permute_channels else np.arange(3)
  hue = rng.uniform(-1, 1) * np.deg2rad(augment.max_hue_deg)
  saturation = float(log_uniform(augment.saturation))
  balance = log_uniform(augment.white_balance, 3)
  exposure = float(log_uniform(augment.exposure))
  gray = np.full((3, 3), 1 / 3)
  matrix = (np.eye(3)[:, order] @ hue_rotation(hue).T @ (gray + saturation * (np.eye(3) - gray))
            @ np.diag(balance * exposure))
  info = {"channel_order": "".join("RGB"[i] for i in order), "hue_deg": round(float(np.rad2deg(hue)), 2),
          "saturation": round(saturation, 3), "white_balance": [round(float(g), 3) for g in balance],
          "exposure": round(exposure, 3)}
  return matrix, info


def recolour(canvas: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """uint8 sRGB pixels through a linear-light colour matrix, clipped at black and white."""
  return uint8_from_linear(linear_from_uint8(canvas) @ matrix.astype(np.float32))


def save_as_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
  """The pixels after a round trip through a JPEG file of that quality (4:2:0, as cameras write)."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
  return images.decode_rgb(buffer.getvalue())


def synthesize_pair(photo: Image.Image, rng: np.random.Generator, height: int, width: int,
                    settings: BlurSettings = BlurSettings(), shake: Shake | None = None,
                    augment: Augmentations | None = None, min_scale: float | None = None) -> SynthesizedPair:
  """One blurred/sharp pair of size height×width from an RGB photo.

  `shake` overrides the random camera; `augment` (None: none) changes the crop before it is blurred;
  `min_scale` overrides the settings' (1 keeps the photo's own resolution).
  """
  if shake is None:
    length = settings.min_length + (settings.max_length - settings.min_length) * rng.beta(*settings.length_beta)
    shake = random_shake(rng, length, (height, width), settings)
  margin = margin_for(shake, height, width)
  min_scale = settings.min_scale if min_scale is None else min_scale
  dihedral = augment is not None and augment.dihedral
  # Flat crops teach nothing about blur; draw again, keeping the most textured one if none passes.
  best = None
  for _ in range(20):
    canvas, scale = random_canvas(photo, rng, height + 2 * margin, width + 2 * margin, min_scale, dihedral)
    score = texture(canvas[margin:margin + height, margin:margin + width])
    if best is None or score > best[0]:
      best = (score, canvas, scale)
    if score >= settings.min_texture:
      break
  _, canvas, scale = best
  colour_info = {}
  if augment is not None:
    matrix, colour_info = colour_transform(rng, augment)
    canvas = recolour(canvas, matrix)
  sharp = canvas[margin:margin + height, margin:margin + width].copy()
  linear = render_blur(canvas, shake, height, width, margin)
  linear, noise_sigma = add_sensor_noise(linear, rng, settings.noise)
  blur = uint8_from_linear(linear)
  jpeg_quality = 0
  if rng.random() < settings.jpeg_fraction:
    jpeg_quality = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
    blur = save_as_jpeg(blur, jpeg_quality)
  info = {
      "trajectory_length_px": round(shake.path_length, 3),
      "sub_frames": shake.num_sub_frames,
      "max_roll_deg": round(float(np.rad2deg(np.abs(shake.rolls).max())), 4),
      "focal_px": round(shake.focal, 2),
      "scale": round(scale, 4),
      "noise_sigma": round(noise_sigma, 5),
      "jpeg_quality": jpeg_quality,
      **colour_info,
      "input_psnr_db": round(psnr(blur, sharp), 3),
  }
  return SynthesizedPair(blur, sharp, info)


# --- Photos ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Photo:
  scene: str  # folder name of the scene made from this photo
  ref: str  # "<package>:<name>" for a built-in photo (BUILTIN_*_PHOTOS), or a file path


@functools.lru_cache(maxsize=16)
def load_photo(ref: str) -> Image.Image:
  """The photo behind `ref` as an RGB PIL image; cached, since every pair of a scene reads it."""
  if ref in BUILTIN_TRAIN_PHOTOS + BUILTIN_TEST_PHOTOS:
    return Image.fromarray(_builtin_pixels(*ref.split(":", 1))).convert("RGB")  # gray ones too
  return Image.fromarray(images.read_rgb(ref, apply_exif_orientation=True))


def _builtin_pixels(package: str, name: str) -> np.ndarray:
  """A photo that ships inside an installed wheel, through that package's own API."""
  if package == "skimage.data":
    if name in ("motorcycle_left", "motorcycle_right"):
      left, right, _ = skimage_data.stereo_motorcycle()
      return left if name == "motorcycle_left" else right
    return getattr(skimage_data, name)()
  if package == "sklearn.datasets":
    from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only the test photos need it)
    return datasets.load_sample_image(name)
  from matplotlib import cbook  # pylint: disable=g-import-not-at-top
  with cbook.get_sample_data(name) as file:
    return np.asarray(Image.open(file).convert("RGB"))


def builtin_photos() -> dict[str, list[Photo]]:
  def scene(ref: str) -> str:
    return pathlib.PurePath(ref.split(":", 1)[1]).stem
  return {"train": [Photo(scene(r), r) for r in BUILTIN_TRAIN_PHOTOS],
          "test": [Photo(scene(r), r) for r in BUILTIN_TEST_PHOTOS]}


def test_photo(ref: str) -> Image.Image:
  """A test photo at the resolution its pairs keep: its longer side at most MAX_TEST_SIDE."""
  photo = load_photo(ref)
  shrink = MAX_TEST_SIDE / max(photo.size)
  if shrink >= 1:
    return photo
  return photo.resize((round(photo.width * shrink), round(photo.height * shrink)), Image.Resampling.LANCZOS)


def whole_photo_size(photo: Image.Image) -> tuple[int, int]:
  """Height and width of a whole-photo test pair: the photo less TEST_BORDER on every side, rounded to even."""
  return tuple(max(16, side - 2 * TEST_BORDER) & ~1 for side in (photo.height, photo.width))


def user_photos(folder: pathlib.Path, height: int, width: int, seed: int) -> tuple[dict[str, list[Photo]], int]:
  """The user's photos split into train and test scenes, and how many were too small to use.

  A seeded draw puts about a fifth of the photos (at least one) in the test split.
  """
  if not folder.is_dir():
    raise images.DatasetError(f"Photo folder {folder} does not exist; pass --photos a folder of jpg/png photos.")
  files = sorted(p for p in folder.rglob("*") if images.is_image_file(p))
  usable, too_small, not_rgb = [], 0, []
  for path in files:
    info = images.inspect_image(path, verify=False)
    if info.height < height or info.width < width:
      too_small += 1
    else:
      usable.append(path)
      not_rgb += [info] if not info.is_rgb else []
  if not_rgb:
    logging.getLogger(__name__).warning(
        "%d of %d photos are not RGB (e.g. %s is %s); they are converted to RGB.", len(not_rgb), len(usable),
        not_rgb[0].path, not_rgb[0].mode)
  if len(usable) < 2:
    raise images.DatasetError(
        f"Photo folder {folder} has {len(usable)} usable photos ({len(files)} jpg/png files, {too_small} smaller "
        f"than {width}×{height}); add at least 2 photos of that size, one for train and one for test.")
  scenes = _scene_names([p.relative_to(folder) for p in usable])
  photos = [Photo(scene, str(path)) for scene, path in zip(scenes, usable)]
  num_test = max(1, round(USER_TEST_FRACTION * len(photos)))
  test_ids = set(np.random.default_rng([seed, 2]).permutation(len(photos))[:num_test].tolist())
  split = {"train": [p for i, p in enumerate(photos) if i not in test_ids],
           "test": [p for i, p in enumerate(photos) if i in test_ids]}
  return split, too_small


def _scene_names(relative_paths: Sequence[pathlib.Path]) -> list[str]:
  """Folder-safe, unique scene names from photo paths."""
  names, seen = [], set()
  for path in relative_paths:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", str(path.with_suffix(""))).strip("_") or "photo"
    name, k = base, 1
    while name in seen:
      k += 1
      name = f"{base}_{k}"
    seen.add(name)
    names.append(name)
  return names


# --- The data set ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
  split: str
  index: int  # pair index within the split; also seeds the pair
  frame: int  # frame number within the scene
  photo: Photo
  seed: int
  height: int
  width: int
  settings: BlurSettings
  augment: Augmentations | None  # train pairs only
  out_dir: str


def _render_job(job: _Job) -> dict:
  """Makes one pair and writes its two PNGs; runs in a worker process."""
  rng = np.random.default_rng([job.seed, SPLITS.index(job.split), job.index])
  if job.split == "train":
    pair = synthesize_pair(load_photo(job.photo.ref), rng, job.height, job.width, job.settings, augment=job.augment)
  else:  # at the photo's own resolution (scale 1), as a user's photo would be
    pair = synthesize_pair(test_photo(job.photo.ref), rng, job.height, job.width, job.settings, min_scale=1.0)
  scene_dir = pathlib.Path(job.out_dir) / job.split / job.photo.scene
  name = f"{job.frame:06d}.png"
  for kind, pixels in (("blur", pair.blur), ("sharp", pair.sharp)):
    (scene_dir / kind).mkdir(parents=True, exist_ok=True)
    (scene_dir / kind / name).write_bytes(images.encode_png(pixels))
  return {"split": job.split, "scene": job.photo.scene, "frame": name, "source_photo": job.photo.ref, **pair.info}


def _jobs(photos: dict[str, list[Photo]], counts: dict[str, int], seed: int, size: tuple[int, int],
          test_size: tuple[int, int] | None, settings: BlurSettings, augment: Augmentations,
          out_dir: pathlib.Path) -> list[_Job]:
  """Pairs go round-robin over a split's photos, so every scene gets about the same number."""
  jobs = []
  for split in SPLITS:
    split_photos = photos[split]
    for index in range(counts[split]):
      photo = split_photos[index % len(split_photos)]
      height, width = size if split == "train" else test_size or whole_photo_size(test_photo(photo.ref))
      jobs.append(_Job(split, index, index // len(split_photos), photo, seed, height, width, settings,
                       augment if split == "train" else None, str(out_dir)))
  return jobs


def psnr_summary(values: Sequence[float]) -> dict[str, float]:
  values = np.asarray(values, dtype=np.float64)
  return {"count": int(values.size), "min": round(float(values.min()), 3), "mean": round(float(values.mean()), 3),
          "median": round(float(np.median(values)), 3), "max": round(float(values.max()), 3)}


def synthesize_dataset(out: str | os.PathLike, *, photos_dir: str | os.PathLike | None = None,
                       train_pairs: int = DEFAULT_TRAIN_PAIRS, test_pairs: int = DEFAULT_TEST_PAIRS,
                       size: tuple[int, int] = DEFAULT_SIZE, test_size: tuple[int, int] | None = None,
                       seed: int = 0, workers: int | None = None, settings: BlurSettings = BlurSettings(),
                       augment: Augmentations = Augmentations(), progress: bool = True) -> dict:
  """Writes the GoPro-layout data set to `out` and returns its meta.json content.

  Train pairs are `size` crops; test pairs are `test_size` crops, or whole photos (less a border, scaled down
  to MAX_TEST_SIDE) when it is None.

  The set is built in `<out>.partial` and renamed when complete, so an interrupted run never leaves a folder
  that looks finished; rerunning the same command on a finished folder does nothing.
  """
  out = pathlib.Path(out)
  height, width = size
  for flag, shape in (("--size", size), ("--test-size", test_size or (16, 16))):
    if min(shape) < 16:
      raise images.DatasetError(f"{flag} {shape[0]} {shape[1]} is too small; use at least 16 16.")
  if train_pairs < 1 or test_pairs < 1:
    raise images.DatasetError(f"--train-pairs and --test-pairs must be at least 1, got {train_pairs}, {test_pairs}.")
  if photos_dir is None:
    photos, too_small, source = builtin_photos(), 0, BUILTIN_SOURCE
  else:
    photos, too_small = user_photos(pathlib.Path(photos_dir), height, width, seed)
    source = str(photos_dir)
  recipe = {"version": META_VERSION, "source": source, "seed": seed, "size": [height, width],
            "test_size": list(test_size) if test_size else "whole photos", "train_pairs": train_pairs,
            "test_pairs": test_pairs, "blur": dataclasses.asdict(settings), "augment": dataclasses.asdict(augment),
            "photos": {split: [dataclasses.asdict(p) for p in photos[split]] for split in SPLITS},
            "photos_too_small": too_small}
  recipe = json.loads(json.dumps(recipe))  # tuples → lists, as they will read back
  if (out / META_FILE).is_file():
    existing = json.loads((out / META_FILE).read_text())
    if existing.get("recipe") == recipe:
      return existing
    raise images.DatasetError(
        f"{out} already holds a synthesized data set made with other settings; delete it or choose another --out.")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise images.DatasetError(f"{out} exists and is not empty; delete it or choose another --out.")

  partial = out.with_name(out.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  jobs = _jobs(photos, {"train": train_pairs, "test": test_pairs}, seed, size, test_size, settings, augment,
               partial)
  records = _run_jobs(jobs, workers, progress)
  meta = {"recipe": recipe,
          "summary": {split: psnr_summary([r["input_psnr_db"] for r in records if r["split"] == split])
                      for split in SPLITS},
          "pairs": records}
  (partial / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
  if out.exists():
    out.rmdir()
  partial.rename(out)
  return meta


def _run_jobs(jobs: list[_Job], workers: int | None, progress: bool) -> list[dict]:
  """Runs the jobs in order, in worker processes when there is more than one core to use."""
  workers = min(workers or os.cpu_count() or 1, len(jobs))
  bar = functools.partial(tqdm.tqdm, total=len(jobs), unit="pair", disable=not progress, file=sys.stderr)
  if workers <= 1:
    return [_render_job(job) for job in bar(jobs)]
  # spawn, not fork: a caller may already run JAX's threads, which fork would copy mid-flight.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    return list(bar(pool.map(_render_job, jobs, chunksize=4)))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m simplenet_jax.data.synthesize",
      description="Synthesize a GoPro-layout deblurring data set from sharp photos (SPEC §4, Demo data).")
  parser.add_argument("--out", required=True, help="folder to create, e.g. data/demo")
  parser.add_argument("--photos", default=None,
                      help="folder of your own sharp jpg/png photos (default: the RGB photos in skimage.data)")
  parser.add_argument("--train-pairs", type=int, default=DEFAULT_TRAIN_PAIRS, help="pairs in the train split")
  parser.add_argument("--test-pairs", type=int, default=DEFAULT_TEST_PAIRS, help="pairs in the test split")
  parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_SIZE), metavar=("H", "W"),
                      help="height and width of every train pair")
  parser.add_argument("--test-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="height and width of every test pair (default: whole photos, scaled down to "
                           f"{MAX_TEST_SIDE} px at most)")
  parser.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
  parser.add_argument("--max-blur", type=float, default=BlurSettings.max_length,
                      help="longest camera path in pixels")
  parser.add_argument("--noise", type=float, default=BlurSettings.noise,
                      help="largest sensor-noise std at white, in linear light (0 for none)")
  parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  settings = BlurSettings(max_length=args.max_blur, noise=args.noise)
  start = time.perf_counter()
  already_built = (pathlib.Path(args.out) / META_FILE).is_file()
  try:
    meta = synthesize_dataset(args.out, photos_dir=args.photos, train_pairs=args.train_pairs,
                              test_pairs=args.test_pairs, size=tuple(args.size),
                              test_size=tuple(args.test_size) if args.test_size else None, seed=args.seed,
                              workers=args.workers, settings=settings)
  except images.DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  seconds = time.perf_counter() - start
  if meta["recipe"]["photos_too_small"]:
    print(f"Skipped {meta['recipe']['photos_too_small']} photos smaller than {args.size[1]}×{args.size[0]}.")
  for split, stats in meta["summary"].items():
    print(f"{split}: {stats['count']} pairs, input PSNR min {stats['min']:.2f} / mean {stats['mean']:.2f} / "
          f"median {stats['median']:.2f} / max {stats['max']:.2f} dB")
  if already_built:
    print(f"{args.out} already holds this data set; nothing to do.")
  else:
    print(f"Wrote the data set to {args.out} in {seconds:.1f} s.")
  return 0


if __name__ == "__main__":
  logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
  sys.exit(main())
