"""Evaluation (SPEC §5): metrics in both SSIM conventions (`metrics`), RealBlur-J's aligned protocol
(`realblur`), per-image and mean scores (`scoring`), the files of a run (`reports`) and the loop that puts them
together over a workdir's test split (`loop`). Submodules are imported where they are used, so that reading
one does not load OpenCV or the data pipeline."""
