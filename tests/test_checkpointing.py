"""simplenet_jax.checkpointing: a hand-built training state of a tiny nnx model saved and read back, the data
iterator's position, which steps are kept, and the model-config check (no training)."""

import hashlib
import json
import logging
import os

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import smoke
from simplenet_jax import checkpointing
from simplenet_jax.models.config import EXECUTION_FIELDS
from simplenet_jax.models.config import ModelConfig


@flax.struct.dataclass
class State:
  """The shape of `train.TrainState`, built here so that no training code runs."""
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState


def _state(seed=0, tx=None):
  """A 7→5 linear layer and its Adam state after one random update (non-zero moments)."""
  tx = tx or optax.adam(1e-3)
  params = nnx.split(nnx.Linear(7, 5, rngs=nnx.Rngs(seed)))[1]
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(seed).normal(size=p.shape), p.dtype), params)
  _, opt_state = tx.update(grads, opt_state, params)
  return State(step=jnp.asarray(11 + seed, jnp.int32), params=params, opt_state=opt_state)


def _iterator(skip=0):
  iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
  for _ in range(skip):
    next(iterator)
  return iterator


def _host(tree):
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


PSNRS = {1: 20.0, 2: 25.0, 3: 22.0, 4: None, 5: 19.0, 6: 18.0}  # step 4 saved without an evaluation


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A workdir with steps 1–6 saved by a manager keeping 2 (step s holds _state(s), its iterator s elements on)."""
  workdir = tmp_path_factory.mktemp("workdir")
  manager = checkpointing.create_manager(workdir, keep=2)
  for step, psnr in PSNRS.items():
    checkpointing.save(manager, step, _state(step), _iterator(step), smoke.get_config(),
                       metrics=None if psnr is None else {"psnr": psnr})
  manager.wait_until_finished()
  return workdir, manager


def test_checkpoint_dir_is_under_the_absolute_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(checkpointing.checkpoint_dir("runs/a")) == os.fspath(tmp_path / "runs" / "a" / "checkpoints")


def test_a_read_only_manager_of_a_new_workdir_creates_nothing(tmp_path):
  manager = checkpointing.create_manager(tmp_path / "new", keep=1, read_only=True)
  assert manager.all_steps() == [] and manager.latest_step() is None
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("save_every", [None, 1, 3, 5])
def test_should_save_every_n_steps(tmp_path, save_every):
  manager = checkpointing.create_manager(tmp_path, keep=1, save_every=save_every)
  assert [s for s in range(17) if manager.should_save(s)] == [s for s in range(17) if s % (save_every or 1) == 0]


def test_the_latest_steps_and_the_best_by_psnr_are_kept(saved):
  workdir, manager = saved
  latest = sorted(PSNRS)[-2:]
  best = max((psnr, step) for step, psnr in PSNRS.items() if psnr is not None)[1]
  assert manager.all_steps() == sorted({*latest, best}) == [2, 5, 6]
  assert checkpointing.create_manager(workdir, keep=1, read_only=True).all_steps() == [2, 5, 6]
  assert manager.latest_step() == 6


def test_best_step_is_the_highest_psnr(saved):
  workdir, manager = saved
  assert checkpointing.create_manager(workdir, keep=1, read_only=True).best_step() == 2
  assert manager.best_step() == 2


def test_the_best_step_outlives_a_resume(tmp_path):
  manager = checkpointing.create_manager(tmp_path, keep=1)
  for step, psnr in ((1, 30.0), (2, 20.0)):
    checkpointing.save(manager, step, _state(), None, smoke.get_config(), metrics={"psnr": psnr})
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 2]
  resumed = checkpointing.create_manager(tmp_path, keep=1)
  for step in (3, 4):
    checkpointing.save(resumed, step, _state(), None, smoke.get_config(), metrics={"psnr": 10.0})
  resumed.wait_until_finished()
  assert resumed.all_steps() == [1, 4]


def test_a_state_round_trips_exactly(saved):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  expected = _state(5)
  restored = checkpointing.restore(manager, 5, checkpointing.abstract_like(_state(0)))
  assert isinstance(restored, State) and int(restored.step) == 16
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for got, want in zip(_host(restored), _host(expected)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  assert not all(np.array_equal(a, b) for a, b in zip(_host(restored), _host(_state(0))))  # not the abstract's


def test_abstract_like_keeps_shape_dtype_and_sharding_only():
  state = _state()
  abstract = checkpointing.abstract_like(state)
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for leaf, original in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
    assert isinstance(leaf, jax.ShapeDtypeStruct)
    assert (leaf.shape, leaf.dtype, leaf.sharding) == (original.shape, original.dtype, original.sharding)


def _plain(tree):
  """A config as JSON holds it: tuples become lists."""
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  return [_plain(v) for v in tree] if isinstance(tree, (tuple, list)) else tree


def test_saved_meta_is_the_config_and_the_process_count(saved):
  workdir, _ = saved
  meta = checkpointing.saved_meta(checkpointing.create_manager(workdir, keep=1, read_only=True), 6)
  assert meta.keys() == {"config", "process_count", "hashes"} and meta["process_count"] == 1
  # The hashes are SHA-256 of each array's bytes, recomputed here with hashlib alone.
  state = _state(6)
  assert meta["hashes"]["params"] == {
      name: hashlib.sha256(np.asarray(state.params[name.split("/")[0]].value).tobytes()).hexdigest()
      for name in ("bias", "kernel")}
  assert meta["config"] == _plain(smoke.get_config().to_dict())
  assert meta["config"]["model"]["widths"] == [4, 4, 4] and meta["config"]["name"] == "smoke"


def test_the_data_iterator_resumes_at_the_next_element(saved):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  iterator = _iterator()
  checkpointing.restore(manager, 5, checkpointing.abstract_like(_state()), iterator, num_workers=0)
  assert [next(iterator) for _ in range(3)] == [5, 6, 7]


def test_another_worker_count_restores_the_state_and_starts_the_data_afresh(saved, caplog):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  iterator = _iterator()
  with caplog.at_level(logging.WARNING):
    restored = checkpointing.restore(manager, 5, checkpointing.abstract_like(_state()), iterator, num_workers=3)
  assert int(restored.step) == 16
  assert [next(iterator) for _ in range(2)] == [0, 1]
  assert "(processes, workers) = (1, 0) and this run has (1, 3)" in caplog.text


def test_restore_params_reads_only_the_parameters(saved):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)  # a fresh one, as inference makes
  abstract = nnx.eval_shape(lambda: nnx.split(nnx.Linear(7, 5, rngs=nnx.Rngs(99)))[1])
  params = checkpointing.restore_params(manager, 2, abstract)
  assert isinstance(params, nnx.State)
  assert jax.tree.structure(params) == jax.tree.structure(_state(2).params)
  for got, want in zip(jax.tree.leaves(params), _host(_state(2).params)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got), want)


def test_restore_params_puts_the_parameters_on_the_default_device(saved):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  abstract = nnx.eval_shape(lambda: nnx.split(nnx.Linear(7, 5, rngs=nnx.Rngs(99)))[1])
  for leaf in jax.tree.leaves(checkpointing.restore_params(manager, 2, abstract)):
    assert isinstance(leaf, jax.Array) and leaf.devices() == {jax.devices()[0]}


def test_a_state_of_another_optimizer_is_one_sentence(saved):
  workdir, _ = saved
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  other = _state(tx=optax.sgd(0.1, momentum=0.9))
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    checkpointing.restore(manager, 6, checkpointing.abstract_like(other))
  assert str(info.value) == (
      f"the checkpoint of step 6 in {workdir / 'checkpoints'} holds a training state of another structure (an "
      "earlier version of simplenet-jax, or another optimizer setting); use a new --workdir to train, or eval.py "
      "and simplenet-deblur, which read only its parameters.")


def _saved_model(config):
  """`config.model` as a checkpoint's saved config holds it (through JSON: lists, not tuples)."""
  return json.loads(json.dumps(_plain(config.to_dict())))["model"]


def test_the_same_model_is_compatible_whatever_its_execution_fields():
  config = smoke.get_config()
  saved = _saved_model(config)
  checkpointing.check_compatible({"model": saved}, config, "w")
  checkpointing.check_compatible({"model": config.model.to_dict()}, config, "w")  # tuples, not through JSON
  assert set(EXECUTION_FIELDS) <= set(ModelConfig().to_dict())
  changed = {"dcn_tile_bytes": config.model.dcn_tile_bytes * 3 + 1, "remat": not config.model.remat,
             "dcn_sampling": "matmul"}
  assert changed.keys() == set(EXECUTION_FIELDS)
  for field, value in changed.items():
    now = smoke.get_config()
    now.model[field] = value
    now.model.dcn_max_offset = 4.0 if field == "dcn_sampling" else now.model.dcn_max_offset
    before = {**saved, "dcn_max_offset": now.model.dcn_max_offset}
    checkpointing.check_compatible({"model": before}, now, "w")
  checkpointing.check_compatible({"model": {k: v for k, v in saved.items() if k not in EXECUTION_FIELDS}},
                                 config, "w")  # a checkpoint from before these fields existed


def test_a_checkpoint_from_before_offsets_were_bounded_is_an_unbounded_model():
  saved = _saved_model(smoke.get_config())
  del saved["dcn_max_offset"], saved["dcn_sampling"]
  checkpointing.check_compatible({"model": saved}, smoke.get_config(), "w")
  bounded = smoke.get_config()
  bounded.model.dcn_max_offset = 8.0
  with pytest.raises(checkpointing.CheckpointMismatchError, match="dcn_max_offset: 0.0 in the checkpoint vs 8.0 now"):
    checkpointing.check_compatible({"model": saved}, bounded, "w")


def test_another_model_is_one_sentence_naming_each_differing_field():
  config = smoke.get_config()
  saved = _saved_model(config)
  now = smoke.get_config()
  now.model.widths = (4, 8, 4)
  now.model.use_pvb = False
  now.model.remat = True  # an execution field: not named
  del saved["lgcr_rank"]  # a checkpoint from before this field existed: trained with its default, 64
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    checkpointing.check_compatible({"model": saved}, now, "runs/w")
  assert str(info.value) == (
      "workdir runs/w holds a checkpoint of a different model (lgcr_rank: 64 in the checkpoint vs 2 now, "
      "use_pvb: True in the checkpoint vs False now, widths: [4, 4, 4] in the checkpoint vs [4, 8, 4] now); use "
      "a new --workdir, or the config it was trained with.")
  assert isinstance(info.value, ValueError)


def test_check_compatible_of_the_saved_meta(saved):
  """The whole path train.py takes on a resume: the saved meta of a real checkpoint against the config now."""
  workdir, _ = saved
  meta = checkpointing.saved_meta(checkpointing.create_manager(workdir, keep=1, read_only=True), 6)
  checkpointing.check_compatible(meta["config"], smoke.get_config(), workdir)
  wider = smoke.get_config()
  wider.model.lgcr_rank = 3
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"\(lgcr_rank: 2 in the checkpoint vs 3 now\)"):
    checkpointing.check_compatible(meta["config"], wider, workdir)


def test_a_save_without_metrics_logs_no_warning(tmp_path, caplog):
  """Saves between evaluations have no metrics on purpose; orbax's warning for each would only be noise."""
  manager = checkpointing.create_manager(tmp_path, keep=2)
  with caplog.at_level(logging.WARNING, logger="absl"):
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave({"a": jnp.zeros(3)})))
    manager.wait_until_finished()
  assert manager.all_steps() == [1]
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]


ZSTD_MAGIC = bytes.fromhex("28b52ffd")  # each array chunk in an OCDBT data file is one zstd frame


def _frames(data: bytes) -> list[tuple[int, int]]:
  starts = [i for i in range(len(data)) if data.startswith(ZSTD_MAGIC, i)]
  return list(zip(starts, starts[1:] + [len(data)]))


def _flip_bytes(step_dir):
  """Flips the lowest bit of 8 bytes in the middle of every large zstd frame of a checkpoint's state: the
  large arrays' bytes, which no checksum covers (tensorstore checks its b-tree nodes and the small files, the
  arrays' metadata). The files keep their size. Whether a flipped frame still decodes (to other, finite
  values, which only the hashes can tell) depends on the bytes hit; for the one large array of
  `test_flipped_bytes_or_non_finite_parameters_are_a_damaged_checkpoint` it does. Every large frame, not the
  file's middle: the order in which orbax's concurrent writes land differs from run to run, and the middle
  may hold another array's small frame or an optimizer array where a test reads only the parameters."""
  files = list((step_dir / "state").glob("ocdbt.process_*/d/*"))
  assert files
  flipped = 0
  for f in files:
    data = bytearray(f.read_bytes())
    for start, end in _frames(data):
      if end - start > 4096:
        middle = (start + end) // 2
        data[middle:middle + 8] = bytes(b ^ 0x01 for b in data[middle:middle + 8])
        flipped += 1
    f.write_bytes(bytes(data))
  assert flipped


def _break_frames(step_dir):
  """Overwrites the magic number of every zstd frame of a checkpoint's state: no array of it decodes."""
  files = list((step_dir / "state").glob("ocdbt.process_*/d/*"))
  assert files
  for f in files:
    data = bytearray(f.read_bytes())
    for start, _ in _frames(data):
      data[start:start + 4] = b"\0\0\0\0"
    f.write_bytes(bytes(data))


def test_flipped_bytes_or_non_finite_parameters_are_a_damaged_checkpoint(tmp_path):
  manager = checkpointing.create_manager(tmp_path, keep=3)
  # Large enough that the middle of each data file is array data, not the arrays' metadata.
  params = nnx.split(nnx.Linear(300, 200, rngs=nnx.Rngs(0)))[1]
  tx = optax.adam(1e-3)
  state = State(step=jnp.asarray(3, jnp.int32), params=params, opt_state=tx.init(params))
  checkpointing.save(manager, 1, state, None, smoke.get_config())
  bad = state.replace(params=jax.tree.map(lambda p: p.at[0].set(jnp.nan), state.params))
  checkpointing.save(manager, 2, bad, None, smoke.get_config())
  checkpointing.save(manager, 3, state, None, smoke.get_config())
  manager.wait_until_finished()
  abstract = checkpointing.abstract_like(state)
  checkpointing.restore(manager, 1, abstract)  # intact
  with pytest.raises(checkpointing.CheckpointDamagedError, match=r"^the checkpoint of step 2 in .* is damaged: "
                                                                 r"\d of its parameter arrays hold NaN or infinity"):
    checkpointing.restore_params(checkpointing.create_manager(tmp_path, keep=3, read_only=True), 2, state.params)
  _flip_bytes(tmp_path / "checkpoints" / "3")
  with pytest.raises(checkpointing.CheckpointDamagedError,
                     match=r"^the checkpoint of step 3 in .* is damaged: \d of its (parameter|optimizer) arrays "
                           r"differ from what was saved"):
    checkpointing.restore(manager, 3, abstract)


def test_an_array_that_does_not_decode_is_a_damaged_checkpoint(tmp_path, capfd):
  """tensorstore's error for an undecodable chunk reaches orbax's shard reader, which wraps it in a bare
  Exception: both restores still say "damaged" in one sentence, and print no tracebacks of their own."""
  manager = checkpointing.create_manager(tmp_path, keep=3)
  params = nnx.split(nnx.Linear(30, 20, rngs=nnx.Rngs(0)))[1]
  tx = optax.adam(1e-3)
  state = State(step=jnp.asarray(3, jnp.int32), params=params, opt_state=tx.init(params))
  checkpointing.save(manager, 1, state, None, smoke.get_config())
  manager.wait_until_finished()
  _break_frames(tmp_path / "checkpoints" / "1")
  capfd.readouterr()
  with pytest.raises(checkpointing.CheckpointDamagedError,
                     match=r"^the checkpoint of step 1 in .* is damaged: incomplete or corrupt: [A-Z_]+: Error reading .*\.$"):
    checkpointing.restore(manager, 1, checkpointing.abstract_like(state))
  with pytest.raises(checkpointing.CheckpointDamagedError, match=r"^the checkpoint of step 1 in .* is damaged: "):
    checkpointing.restore_params(checkpointing.create_manager(tmp_path, keep=3, read_only=True), 1, state.params)
  assert "Traceback" not in capfd.readouterr().err
