"""Camera shake: the random camera path of one exposure, its poses, and the blurred image it records.

GoPro's blurred frames are averages of consecutive sharp frames from a hand-held camera (Nah et al. 2017). A
random-walk camera-shake trajectory (Boracchi & Foi 2012) sets the camera pose at each sub-frame; each pose is a
homography of the sharp photo (translation, a little roll, and the keystone of a pan/tilt); the sub-frames are
averaged in linear light, the middle one being the sharp image; the sensor then adds shot and read noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
from skimage import transform as sk_transform

from simplenet_jax.data.synthesis import linear_light


@dataclasses.dataclass(frozen=True)
class BlurSettings:
  """The blur model's knobs. The defaults give mild to moderate shake (input PSNR mostly 24–36 dB at 256×256,
  mean 28–30 dB): the demo's test split. GoPro's blur is heavier (mean input 25.6 dB at 720p); the demo's
  training pairs (`dataset.TRAIN_BLUR`) reach 30 px.

  The camera's other knobs (noise, JPEG) and the crop's (texture, scale) are here too, so that a data set's
  recipe (meta.json) records the whole blur model as one flat record.

  Attributes:
    min_length, max_length: range of the camera path length during one exposure, in output pixels.
    near_sharp_fraction: share of pairs whose camera moves less than that, at most `min_length` (uniformly
      from 0): pairs that teach a network to leave what is already sharp as it is.
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
    target_noise: give the sharp target the blurred image's own noise (the same draw, added in linear light),
      so that a network learns to remove blur and never noise: a sharp input is then its own target.
  """

  min_length: float = 1.0
  max_length: float = 15.0
  near_sharp_fraction: float = 0.0
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
  target_noise: bool = False


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


def render_sub_frames(canvas: np.ndarray, shake: Shake, height: int, width: int,
                      margin: int) -> Iterator[np.ndarray]:
  """The sub-frames a high-speed camera would record during the exposure, one at a time: float
  [height, width, 3] in [0, 1] (linear).

  `canvas` is uint8 sRGB with `margin` extra pixels on every side. Each sub-frame is sampled bilinearly from the
  canvas in linear light (light, not sRGB codes, mixes between pixels); a still pose (the middle sub-frame) is
  copied exactly. One at a time, so that a long exposure never holds all its sub-frames in memory.
  """
  linear = linear_light.linear_from_uint8(canvas)
  inside = linear[margin:margin + height, margin:margin + width]
  for homography, pixel_map in zip(shake.homographies(), pixel_maps(shake, height, width, margin)):
    if np.array_equal(homography, np.eye(3)):
      yield inside
    else:
      yield sk_transform.warp(linear, sk_transform.ProjectiveTransform(matrix=pixel_map),
                              output_shape=(height, width), order=1, mode="edge", preserve_range=True)


def render_blur(canvas: np.ndarray, shake: Shake, height: int, width: int, margin: int) -> np.ndarray:
  """Average of the sub-frames (`render_sub_frames`) in linear light: float [height, width, 3] in [0, 1]
  (linear)."""
  total = np.zeros((height, width, 3), dtype=np.float64)
  for sub_frame in render_sub_frames(canvas, shake, height, width, margin):
    total += sub_frame
  return total / shake.num_sub_frames


def add_sensor_noise(linear: np.ndarray, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, float]:
  """Mild shot + read noise in linear light; returns the noisy image and the noise std at white."""
  sigma_white = noise * rng.random()
  if sigma_white <= 0:
    return linear, 0.0
  variance = sigma_white**2 * (linear + 0.01)  # shot noise ∝ signal, read noise = a tenth of it at white
  return linear + np.sqrt(variance) * rng.standard_normal(linear.shape), float(sigma_white)
