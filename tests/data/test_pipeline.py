"""Tests for lm.data.pipeline: step-indexed batches, eval batches, to_global."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lm.data.packing import TokenStream
from lm.data.pipeline import TrainBatches, eval_batches, to_global
from lm.errors import LmError

KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")


def _stream(n_tokens, doc_len=7, seed=0):
  """A stream of `n_tokens` ids with a new document every `doc_len` tokens."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, 1000, n_tokens).astype(np.uint16)
  doc_starts = np.arange(0, n_tokens, doc_len, dtype=np.int64)
  tokens[doc_starts] = 2
  return TokenStream(tokens, doc_starts)


def _equal(a, b):
  return all(np.array_equal(a[k], b[k]) for k in KEYS)


@pytest.mark.parametrize("mode", ["shuffle", "random"])
def test_batch_is_a_pure_function_of_step(mode):
  stream = _stream(1000)
  make = lambda: TrainBatches(stream, global_batch_size=8, seq_len=16, seed=3,
                              mode=mode)
  a, b = make(), make()
  for step in (0, 5, 1, 123, 5):  # any order, fresh or reused instance
    assert _equal(a.batch(step), b.batch(step))
  assert not _equal(a.batch(0), a.batch(1))
  other_seed = TrainBatches(stream, global_batch_size=8, seq_len=16, seed=4,
                            mode=mode)
  assert not _equal(a.batch(0), other_seed.batch(0))
  batch = a.batch(7)
  for key in KEYS:
    assert batch[key].shape == (8, 16)


@pytest.mark.parametrize("mode", ["shuffle", "random"])
def test_process_slices_concatenate_to_the_global_batch(mode):
  stream = _stream(1000)
  kw = dict(global_batch_size=8, seq_len=16, seed=1, mode=mode)
  whole = TrainBatches(stream, **kw)
  parts = [TrainBatches(stream, process_index=i, process_count=2, **kw)
           for i in range(2)]
  for step in (0, 1, 9, 40):  # 40 * 8 rows is past several epochs
    want = whole.batch(step)
    got = [p.batch(step) for p in parts]
    for key in KEYS:
      assert got[0][key].shape == (4, 16)
      np.testing.assert_array_equal(
          np.concatenate([g[key] for g in got]), want[key], err_msg=key)


def test_shuffle_visits_every_window_once_per_epoch():
  seq_len, n_windows = 10, 7
  stream = _stream(seq_len * n_windows + 1)  # exactly 7 full windows
  batches = TrainBatches(stream, global_batch_size=3, seq_len=seq_len,
                         seed=0)
  assert batches.n_windows == n_windows
  starts = np.concatenate([batches.starts(s) for s in range(7)])  # 21 rows
  epochs = starts.reshape(3, n_windows)
  for e, row in enumerate(epochs):
    assert sorted(row.tolist()) == list(range(0, 70, 10)), e
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
  # Full windows only: no padding anywhere.
  for s in range(7):
    assert batches.batch(s)["segment_ids"].min() >= 1


def test_random_mode_offsets_stay_in_range():
  stream = _stream(40)
  batches = TrainBatches(stream, global_batch_size=64, seq_len=16, seed=0,
                         mode="random")
  starts = np.concatenate([batches.starts(s) for s in range(50)])
  assert starts.min() == 0 and starts.max() == 40 - 16 - 1
  batch = batches.batch(3)
  assert batch["segment_ids"].min() >= 1  # never runs past the end
  expected = np.random.default_rng([0, 3]).integers(0, 40 - 16, size=64)
  np.testing.assert_array_equal(batches.starts(3), expected)


def test_rows_are_windows_of_the_stream():
  stream = _stream(500)
  batches = TrainBatches(stream, global_batch_size=4, seq_len=8, seed=0)
  batch = batches.batch(2)
  for r, start in enumerate(batches.starts(2)):
    np.testing.assert_array_equal(batch["inputs"][r],
                                  stream.tokens[start:start + 8])
    np.testing.assert_array_equal(batch["targets"][r],
                                  stream.tokens[start + 1:start + 9])


def test_epoch_and_state():
  stream = _stream(101)
  batches = TrainBatches(stream, global_batch_size=4, seq_len=10, seed=5)
  assert batches.n_windows == 10
  assert batches.epoch(0) == 0.0 and batches.epoch(5) == 2.0
  state = batches.state(5)
  assert json.loads(json.dumps(state)) == state
  assert state["step"] == 5 and state["epoch"] == 2.0
  assert state["mode"] == "shuffle" and state["seed"] == 5
  assert state["n_tokens"] == 101
  rand = TrainBatches(stream, global_batch_size=4, seq_len=10, seed=5,
                      mode="random")
  assert rand.epoch(10) == pytest.approx(400 / 101)


def test_errors():
  stream = _stream(16)
  with pytest.raises(LmError, match="16 tokens.*seq_len"):
    TrainBatches(stream, global_batch_size=2, seq_len=16, seed=0)
  TrainBatches(stream, global_batch_size=2, seq_len=15, seed=0)  # just fits
  with pytest.raises(LmError, match="process count 4"):
    TrainBatches(stream, global_batch_size=6, seq_len=4, seed=0,
                 process_count=4)
  with pytest.raises(LmError, match="'sorted'"):
    TrainBatches(stream, global_batch_size=2, seq_len=4, seed=0,
                 mode="sorted")
  with pytest.raises(LmError, match="16 tokens"):
    next(eval_batches(stream, batch_size=2, seq_len=32, max_batches=None))


# --- eval_batches -------------------------------------------------------------


def test_eval_batches_cover_the_stream_in_order_with_padding():
  stream = _stream(50)
  seq_len, batch_size = 8, 4
  batches = list(eval_batches(stream, batch_size=batch_size, seq_len=seq_len,
                              max_batches=None))
  # 49 targets -> 7 windows (the last partial) -> 2 batches, 1 padding row.
  assert len(batches) == 2
  for b in batches:
    for key in KEYS:
      assert b[key].shape == (batch_size, seq_len)
  inputs = np.concatenate([b["inputs"] for b in batches])
  segs = np.concatenate([b["segment_ids"] for b in batches])
  targets = np.concatenate([b["targets"] for b in batches])
  np.testing.assert_array_equal(inputs[segs > 0], stream.tokens[:50])
  np.testing.assert_array_equal(targets[:7].reshape(-1)[:49],
                                stream.tokens[1:])
  last = batches[-1]
  assert not last["loss_mask"][-1].any() and not last["inputs"][-1].any()
  assert not last["segment_ids"][-1].any()
  again = list(eval_batches(stream, batch_size=batch_size, seq_len=seq_len,
                            max_batches=None))
  assert all(_equal(a, b) for a, b in zip(batches, again))


def test_eval_batches_max_batches():
  stream = _stream(1000)
  got = list(eval_batches(stream, batch_size=2, seq_len=10, max_batches=3))
  assert len(got) == 3
  assert got[2]["inputs"][1].tolist() == stream.tokens[50:60].tolist()


# --- to_global ----------------------------------------------------------------


def test_to_global_on_an_8_device_mesh():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  batches = TrainBatches(_stream(2000), global_batch_size=16, seq_len=32,
                         seed=0)
  local = batches.batch(0)
  arrays = to_global(local, sharding)
  assert set(arrays) == set(KEYS)
  for key in KEYS:
    assert isinstance(arrays[key], jax.Array)
    assert arrays[key].shape == (16, 32)
    assert arrays[key].sharding == sharding
    assert len(arrays[key].addressable_shards) == 8
    assert arrays[key].addressable_shards[0].data.shape == (2, 32)
    np.testing.assert_array_equal(np.asarray(arrays[key]), local[key])
  assert arrays["loss_mask"].dtype == np.float32
  assert arrays["inputs"].dtype == np.int32
