import jax
import jax.numpy as jnp
import numpy as np

from lm.training.checkpoint import Checkpointer


def test_keeps_latest_n_and_the_best_by_eval_loss(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=True)
  state = {"w": jnp.arange(4.0)}
  losses = {1: 3.0, 2: 1.0, 3: 2.5, 4: None, 5: 2.8, 6: None}
  for step, loss in losses.items():
    ckpt.save(step, jax.tree.map(lambda x: x + step, state), {"step": step},
              {"model": {}},
              metrics=None if loss is None else {"eval_loss": loss})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 5, 6]      # best (2) + latest two
  assert ckpt.best_step() == 2
  restored, data = ckpt.restore_unsharded(2)
  np.testing.assert_array_equal(restored["w"], np.arange(4.0) + 2)
  assert data == {"step": 2}
  assert ckpt.read_config(6) == {"model": {}}
  ckpt.close()
  # a new manager (a restarted run) still knows which step is best
  again = Checkpointer(str(tmp_path), keep=2)
  assert again.best_step() == 2
  again.save(7, state, {"step": 7}, {}, metrics={"eval_loss": 2.0})
  again.wait()
  assert again.all_steps() == [2, 6, 7]


def test_keeps_the_best_by_a_metric_to_maximise(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=1, async_save=False,
                      best_metric="eval_accuracy", best_mode="max")
  state = {"w": jnp.zeros(2)}
  for step, acc in {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.6}.items():
    ckpt.save(step, state, {"step": step}, {},
              metrics={"eval_accuracy": acc, "eval_loss": -acc})
  # metrics without the best metric do not rank a step
  ckpt.save(5, state, {"step": 5}, {}, metrics={"eval_loss": 0.0})
  assert ckpt.all_steps() == [2, 5]         # best accuracy (2) + latest
  assert ckpt.best_step() == 2
  ckpt.close()


def test_restore_places_arrays_with_target_shardings(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  state = {"w": jax.device_put(jnp.arange(16.0), sharding)}
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(3, state, {"step": 3}, {})
  ckpt.wait()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, _ = ckpt.restore(3, abstract, {"w": sharding})
  assert restored["w"].sharding == sharding
  np.testing.assert_array_equal(restored["w"], np.arange(16.0))


def _flip_a_bit_of_the_state(tmp_path, step: int) -> None:
  import glob, os  # pylint: disable=g-import-not-at-top,multiple-imports
  files = [f for f in glob.glob(str(tmp_path / "checkpoints" / str(step) /
                                    "state" / "**" / "*"), recursive=True)
           if os.path.isfile(f)]
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01
  open(path, "wb").write(bytes(data))


def test_non_finite_state_is_never_saved(tmp_path):
  import pytest  # pylint: disable=g-import-not-at-top
  from lm.training.checkpoint import NonFiniteState  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=False)
  with pytest.raises(NonFiniteState, match="step 1"):
    ckpt.save(1, {"w": jnp.array([1.0, jnp.nan])}, {"step": 1}, {})
  assert ckpt.all_steps() == []
  ckpt.close()


def test_newest_intact_checkpoint_is_restored_and_damaged_ones_moved(tmp_path):
  from lm.training.checkpoint import DamagedCheckpoint  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  big = {"w": jnp.arange(4096.0).reshape(64, 64)}
  ckpt = Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, jax.tree.map(lambda x: x + step, big), {"step": step}, {})
  ckpt.close()
  _flip_a_bit_of_the_state(tmp_path, 3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), big)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = {"w": device}
  reader = Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(DamagedCheckpoint, match="checksum"):
    reader.restore(3, abstract, shardings)
  said = []
  step, state, data = reader.restore_newest(abstract, shardings, say=said.append)
  assert (step, data) == (2, {"step": 2}) and len(said) == 1
  assert (tmp_path / "checkpoints" / "3").is_dir()      # readers move nothing
  reader.close()
  writer = Checkpointer(str(tmp_path), keep=3)
  step, state, _ = writer.restore_newest(abstract, shardings, say=said.append)
  np.testing.assert_array_equal(state["w"], np.asarray(big["w"]) + 2)
  assert writer.all_steps() == [1, 2]
  assert (tmp_path / "damaged_checkpoints" / "3" / "state").is_dir()
  writer.close()


def test_unretrieved_tensorstore_read_errors_are_not_logged(caplog):
  """The reads a damaged checkpoint abandons stay quiet even when asyncio
  collects their tasks unretrieved; any other task error is still logged."""
  import logging  # pylint: disable=g-import-not-at-top
  from lm.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  checkpoint_lib._quiet_abandoned_reads()  # pylint: disable=protected-access
  log = logging.getLogger("asyncio")
  read = ValueError('NOT_FOUND: Error opening "zarr" driver [tensorstore_spec=\'{}\']')
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    log.error("Task exception was never retrieved\nfuture: <Task>",
              exc_info=(ValueError, read, None))
    assert not caplog.records
    log.error("Task exception was never retrieved\nfuture: <Task>",
              exc_info=(ValueError, ValueError("something else"), None))
    assert len(caplog.records) == 1


def test_abandoned_reads_of_a_truncated_checkpoint_are_not_logged(tmp_path, caplog):
  """TensorStore's bare errors for the other reads of a checkpoint whose
  restore failed (asyncio: "Future exception was never retrieved") are
  dropped once that checkpoint is known damaged; the same error for a path
  never reported damaged is still logged."""
  import glob, logging, os  # pylint: disable=g-import-not-at-top,multiple-imports
  import pytest  # pylint: disable=g-import-not-at-top
  from lm.training.checkpoint import DamagedCheckpoint  # pylint: disable=g-import-not-at-top
  tree = {"w": jnp.arange(4096.0).reshape(64, 64)}
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=False)
  ckpt.save(1, tree, {"step": 1}, {})
  ckpt.close()
  step_dir = str(tmp_path / "checkpoints" / "1")
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"),
                                recursive=True) if os.path.isfile(f)]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  reader = Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(DamagedCheckpoint, match="cannot read its arrays"):
    reader.restore(1, abstract, {"w": device})
  reader.close()
  log = logging.getLogger("asyncio")
  def error_reading(directory):
    return ValueError(f'OUT_OF_RANGE: Error reading "w/0.0" in OCDBT database '
                      f'at local file "{directory}/state/": Requested byte '
                      'range [0, 9) is not valid for value of size 4')
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    err = error_reading(step_dir)
    log.error("Future exception was never retrieved\nfuture: <Future>",
              exc_info=(ValueError, err, None))
    assert not caplog.records
    err = error_reading(str(tmp_path / "elsewhere" / "1"))
    log.error("Future exception was never retrieved\nfuture: <Future>",
              exc_info=(ValueError, err, None))
    assert len(caplog.records) == 1
