"""Data (SPEC §4): blur synthesis (`synthesis/`), readers of GoPro / RealBlur-J / GoPro-layout folders
(`layouts`), their TFDS builders (`builders`), the catalogue of built sets (`catalogue`), and the grain input
pipeline (`pipeline`). Imports no model code; modules are imported by name (e.g. `from simplenet_jax.data
import pipeline`), so that the command-line tools and grain's worker processes load only what they use.
"""

from simplenet_jax.data.images import DatasetError

__all__ = ["DatasetError"]
