"""One blurred/sharp pair from a sharp photo: a random crop (for training also turned and recoloured), blurred
by a random camera shake, noised, and maybe saved by the camera as JPEG (the blurred input only; the target
stays lossless).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
from skimage import metrics as sk_metrics

from simplenet_jax.data import images
from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import linear_light
from simplenet_jax.data.synthesis.camera_shake import BlurSettings
from simplenet_jax.data.synthesis.camera_shake import Shake

# Crops drawn at most per pair before the most textured one is kept (see `BlurSettings.min_texture`).
TEXTURE_DRAWS = 20


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


@dataclasses.dataclass(frozen=True)
class SynthesizedPair:
  """A pair's pixels and the draws that made it (its record in meta.json)."""

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
  return linear_light.uint8_from_linear(linear_light.linear_from_uint8(canvas) @ matrix.astype(np.float32))


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
    # Drawn only when asked for, so that sets made without near-sharp pairs keep their bytes.
    if settings.near_sharp_fraction > 0 and rng.random() < settings.near_sharp_fraction:
      length = rng.uniform(0.0, settings.min_length)
    else:
      length = settings.min_length + (settings.max_length - settings.min_length) * rng.beta(*settings.length_beta)
    shake = camera_shake.random_shake(rng, length, (height, width), settings)
  margin = camera_shake.margin_for(shake, height, width)
  min_scale = settings.min_scale if min_scale is None else min_scale
  dihedral = augment is not None and augment.dihedral
  # Flat crops teach nothing about blur; draw again, keeping the most textured one if none passes.
  best = None
  for _ in range(TEXTURE_DRAWS):
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
  clean = camera_shake.render_blur(canvas, shake, height, width, margin)
  linear, noise_sigma = camera_shake.add_sensor_noise(clean, rng, settings.noise)
  blur = linear_light.uint8_from_linear(linear)
  if settings.target_noise:
    sharp = linear_light.uint8_from_linear(linear_light.linear_from_uint8(sharp) + (linear - clean))
  jpeg_quality = 0
  if rng.random() < settings.jpeg_fraction:
    jpeg_quality = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
    blur = save_as_jpeg(blur, jpeg_quality)
  with np.errstate(divide="ignore"):  # a still camera gives blur == sharp: inf dB
    input_psnr = float(sk_metrics.peak_signal_noise_ratio(sharp, blur, data_range=255))
  info = {
      "trajectory_length_px": round(shake.path_length, 3),
      "sub_frames": shake.num_sub_frames,
      "max_roll_deg": round(float(np.rad2deg(np.abs(shake.rolls).max())), 4),
      "focal_px": round(shake.focal, 2),
      "scale": round(scale, 4),
      "noise_sigma": round(noise_sigma, 5),
      "jpeg_quality": jpeg_quality,
      **colour_info,
      "input_psnr_db": round(input_psnr, 3),
  }
  return SynthesizedPair(blur, sharp, info)
