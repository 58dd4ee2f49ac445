"""SimpleNet (Li, Tan, Yan, ICCV 2021) motion deblurring in JAX/Flax NNX."""

__version__ = "0.1.0"
