"""ArrayRecord shards of blurred/sharp pairs (SPEC §4 "Shards"): written once, read with random access.

A data set in its published layout is many small files; training reads random pairs, across processes and
hosts, for days. So it is turned once into a few large ArrayRecord files that grain reads by record index.

Each record is a msgpack map ``{"blur": PNG bytes, "sharp": PNG bytes, "scene": str, "frame": str}``. PNG files
are stored byte for byte (lossless, and a reader gets exactly the source pixels); other formats are decoded and
stored as PNG. A shards folder holds::

    manifest.json                              written last: a reader accepts no shard without it
    train.array_record-00000-of-00003 …        one group per split
    test.array_record-00000-of-00001

Each shard is written under a temporary name and renamed when closed, and `plan.json` records an unfinished
run, so an interrupted run leaves nothing a reader would accept, and rerunning it finishes the job (shards
already complete are kept). Rerunning on finished shards of the same files is a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import sys
from collections.abc import Sequence

from array_record.python import array_record_module
import grain
import msgpack
import tqdm

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data.images import DatasetError

FORMAT = "simplenet_jax.pairs.v1"
MANIFEST = "manifest.json"
PLAN = "plan.json"
# group_size 1 so that reading one record decodes one record (random access); PNG is already compressed.
WRITER_OPTIONS = "group_size:1,uncompressed"
DEFAULT_SHARD_MB = 512
_UNFINISHED_SUFFIX = ".incomplete"


# --- Records ---------------------------------------------------------------------------------------------------


def encode_record(blur_png: bytes, sharp_png: bytes, scene: str, frame: str) -> bytes:
  return msgpack.packb({"blur": blur_png, "sharp": sharp_png, "scene": scene, "frame": frame}, use_bin_type=True)


def decode_record(record: bytes) -> dict:
  """The record's map: encoded `blur` and `sharp` images (bytes), `scene` and `frame` (str)."""
  return msgpack.unpackb(record, raw=False)


def pair_record(pair: layouts.Pair) -> bytes:
  return encode_record(images.png_bytes_of_file(pair.blur), images.png_bytes_of_file(pair.sharp), pair.scene,
                       pair.frame)


# --- Writing ---------------------------------------------------------------------------------------------------


def shard_names(split: str, num_shards: int) -> list[str]:
  """TFDS-style names, so that the split and the shard count read off the file name."""
  return [f"{split}.array_record-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def fingerprint(pairs: Sequence[layouts.Pair]) -> str:
  """Identifies a split's contents by names and file sizes, cheaply (no file is read)."""
  digest = hashlib.sha256()
  for pair in pairs:
    digest.update(f"{pair.name}\0{pair.blur.stat().st_size}\0{pair.sharp.stat().st_size}\n".encode())
  return digest.hexdigest()


def _split_plan(split: str, pairs: Sequence[layouts.Pair], shard_bytes: int) -> dict:
  """Consecutive runs of pairs, one per shard, of about `shard_bytes` each."""
  total = sum(p.blur.stat().st_size + p.sharp.stat().st_size for p in pairs)
  num_shards = max(1, min(len(pairs), math.ceil(total / shard_bytes)))
  bounds = [round(i * len(pairs) / num_shards) for i in range(num_shards + 1)]
  return {"num_pairs": len(pairs), "fingerprint": fingerprint(pairs),
          "shards": [{"file": name, "first": bounds[i], "num_records": bounds[i + 1] - bounds[i]}
                     for i, name in enumerate(shard_names(split, num_shards))]}


def _atomic_write_json(path: pathlib.Path, content: dict) -> None:
  partial = path.with_name(path.name + _UNFINISHED_SUFFIX)
  partial.write_text(json.dumps(content, indent=1) + "\n")
  os.replace(partial, path)


def _num_records(path: pathlib.Path) -> int:
  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    return reader.num_records()
  finally:
    reader.close()


def write_shard(path: pathlib.Path, pairs: Sequence[layouts.Pair], progress_bar: tqdm.tqdm | None = None) -> None:
  """Writes the pairs' records to `path`, which appears only once the shard is complete."""
  partial = path.with_name(path.name + _UNFINISHED_SUFFIX)
  writer = array_record_module.ArrayRecordWriter(str(partial), WRITER_OPTIONS)
  try:
    for pair in pairs:
      writer.write(pair_record(pair))
      if progress_bar is not None:
        progress_bar.update(1)
  finally:
    writer.close()
  os.replace(partial, path)


@dataclasses.dataclass(frozen=True)
class PrepareResult:
  manifest: dict
  already_done: bool


def prepare_shards(dataset: str, source: str | os.PathLike, out: str | os.PathLike, *,
                   splits: Sequence[str] = layouts.SPLITS, blur_kind: str = "blur", crop_size: int = 0,
                   shard_mb: float = DEFAULT_SHARD_MB, progress: bool | None = None) -> PrepareResult:
  """Turns a data set in its published layout into ArrayRecord shards in `out` (see the module docstring).

  Every image is checked (readable, pairs of one size, at least `crop_size` on each side) before the first
  shard is written.
  """
  source, out = pathlib.Path(source).resolve(), pathlib.Path(out)
  pairs = {split: layouts.list_pairs(dataset, source, split, blur_kind) for split in splits}
  request = {"format": FORMAT, "dataset": dataset, "blur_kind": blur_kind, "source": str(source),
             "splits": {split: _split_plan(split, pairs[split], int(shard_mb * 2**20)) for split in splits}}
  manifest_path, plan_path = out / MANIFEST, out / PLAN
  if manifest_path.is_file():
    manifest = json.loads(manifest_path.read_text())
    difference = _difference(manifest, request)
    if difference is None:
      return PrepareResult(manifest, already_done=True)
    raise DatasetError(f"{out} already holds finished shards {difference}; delete the folder or choose another "
                       "--out.")
  if plan_path.is_file():
    unfinished = json.loads(plan_path.read_text())
    if unfinished.get("splits") != request["splits"]:
      _remove_shards(out, unfinished)  # an interrupted run of other data or shard sizes: start afresh
  elif out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise DatasetError(f"{out} exists and is not empty; delete it or choose another --out.")

  sizes = {split: layouts.check_pairs(pairs[split], min_size=crop_size, progress=progress) for split in splits}
  out.mkdir(parents=True, exist_ok=True)
  _atomic_write_json(plan_path, request)
  for split in splits:
    plan = request["splits"][split]
    plan["min_height"] = min(h for h, _ in sizes[split])
    plan["min_width"] = min(w for _, w in sizes[split])
    with tqdm.tqdm(total=plan["num_pairs"], desc=f"writing {split} shards", unit="pair", file=sys.stderr,
                   disable=None if progress is None else not progress) as bar:
      for shard in plan["shards"]:
        path = out / shard["file"]
        if path.is_file() and _num_records(path) == shard["num_records"]:
          bar.update(shard["num_records"])  # finished by an earlier, interrupted run
          continue
        write_shard(path, pairs[split][shard["first"]:shard["first"] + shard["num_records"]], bar)
  for leftover in out.glob("*" + _UNFINISHED_SUFFIX):
    leftover.unlink()
  _atomic_write_json(manifest_path, request)
  plan_path.unlink()
  return PrepareResult(request, already_done=False)


def _difference(manifest: dict, request: dict) -> str | None:
  """How finished shards differ from the requested ones, as a phrase for an error, or None if they match.

  The source path and the shard sizes do not count: the same data set may have moved, and the fingerprints
  tell whether its files changed.
  """
  for field in ("format", "dataset", "blur_kind"):
    if manifest.get(field) != request[field]:
      return f"with {field} {manifest.get(field)!r}, not {request[field]!r}"
  if set(manifest["splits"]) != set(request["splits"]):
    return f"of splits {', '.join(manifest['splits'])}, not {', '.join(request['splits'])}"
  for split, plan in request["splits"].items():
    if manifest["splits"][split]["fingerprint"] != plan["fingerprint"]:
      return f"of a {split} split whose files differ from those in {request['source']}"
  return None


def _remove_shards(out: pathlib.Path, plan: dict) -> None:
  """Deletes the shard files an unfinished plan lists (only those: the folder may hold other files)."""
  for split_plan in plan.get("splits", {}).values():
    for shard in split_plan.get("shards", []):
      (out / shard["file"]).unlink(missing_ok=True)


# --- Reading ---------------------------------------------------------------------------------------------------


def read_manifest(shards_dir: str | os.PathLike) -> dict:
  """The manifest of a finished shards folder; a missing or unfinished one is a `DatasetError`."""
  shards_dir = pathlib.Path(shards_dir)
  if not shards_dir.is_dir():
    raise DatasetError(f"Shards folder {shards_dir} does not exist; write it first with "
                       "`python -m simplenet_jax.data.prepare --dataset … --source … --out {shards_dir}`.")
  if not (shards_dir / MANIFEST).is_file():
    if (shards_dir / PLAN).is_file():
      raise DatasetError(f"Shards in {shards_dir} are unfinished (prepare was interrupted); rerun the same prepare "
                         "command to finish them.")
    raise DatasetError(f"{shards_dir} has no {MANIFEST}, so it is not a shards folder written by "
                       "`python -m simplenet_jax.data.prepare`.")
  manifest = json.loads((shards_dir / MANIFEST).read_text())
  if manifest.get("format") != FORMAT:
    raise DatasetError(f"Shards in {shards_dir} have format {manifest.get('format')!r}, not {FORMAT!r}; prepare "
                       "them again with this version.")
  return manifest


def open_split(shards_dir: str | os.PathLike, split: str, *, dataset: str | None = None,
               blur_kind: str | None = None, min_size: int = 0) -> grain.sources.ArrayRecordDataSource:
  """A random-access source of a split's records (bytes; see `decode_record`), after checking the manifest
  against what the caller expects: the data set, the blur kind, and images at least `min_size` on each side."""
  shards_dir = pathlib.Path(shards_dir)
  manifest = read_manifest(shards_dir)
  for field, wanted in (("dataset", dataset), ("blur_kind", blur_kind)):
    if wanted is not None and manifest[field] != wanted:
      raise DatasetError(f"Shards in {shards_dir} hold {field} {manifest[field]!r} but {wanted!r} was asked for; "
                         "point the config at matching shards or prepare them.")
  if split not in manifest["splits"]:
    raise DatasetError(f"Shards in {shards_dir} have no {split} split (they hold {', '.join(manifest['splits'])}); "
                       "prepare with that split.")
  plan = manifest["splits"][split]
  paths = [shards_dir / shard["file"] for shard in plan["shards"]]
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise DatasetError(f"Shard {missing[0]} listed in {shards_dir / MANIFEST} is missing; prepare the shards again.")
  if plan["min_height"] < min_size or plan["min_width"] < min_size:
    raise DatasetError(f"Shards in {shards_dir} hold {split} images as small as {plan['min_width']}×"
                       f"{plan['min_height']}, smaller than the {min_size}×{min_size} training crop; lower the crop "
                       "size (config.data.crop_size).")
  for path, shard in zip(paths, plan["shards"]):
    try:
      count = _num_records(path)
    except (RuntimeError, OSError, ValueError) as err:
      reason = " ".join(str(err).split()) or type(err).__name__
      raise DatasetError(f"Shard {path} is damaged ({reason}); prepare the shards again.") from None
    if count != shard["num_records"]:
      raise DatasetError(f"Shard {path} holds {count} records but {shards_dir / MANIFEST} lists "
                         f"{shard['num_records']}; the shard is damaged, prepare the shards again.")
  return grain.sources.ArrayRecordDataSource([str(p) for p in paths])
