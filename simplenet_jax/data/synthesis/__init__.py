"""Realistic blur pairs from sharp photos, made the way GoPro was made (SPEC §4, "Demo data").

GoPro's blurred frames are averages of consecutive sharp frames from a hand-held 240 fps camera, and the
middle frame is the ground truth (Nah et al. 2017). We do the same with a simulated camera, one module per
idea:

* `linear_light`: sRGB ↔ linear light, where the sub-frames are averaged;
* `camera_shake`: a random-walk camera-shake trajectory (Boracchi & Foi 2012) whose poses are homographies
  of the sharp photo; 15–31 sub-frames averaged, the middle one sharp; the sensor's shot and read noise;
* `sources`: the photos pairs are made from (built-in ones from installed wheels, or the user's);
* `pairs`: one pair: crop, training augmentations, blur, noise, the camera's JPEG;
* `dataset`: the GoPro-layout data set and its meta.json (`python -m simplenet_jax.data.synthesize`).

Modules are imported by name; none imports JAX, so the spawned workers that render pairs start quickly.
"""
