"""Fine-tuning batches from fixed rows: epochs, determinism, process slices,
padded eval batches."""

import numpy as np
import pytest

from lm.data.pipeline import (EpochPermutations, RowBatches, row_eval_batches,
                              row_lengths, trimmed_width)
from lm.errors import LmError


def _arrays(n):
  """Row i holds i (so a batch names its rows) in two arrays."""
  return {"tokens": np.arange(n * 3, dtype=np.int32).reshape(n, 3) // 3,
          "label": np.arange(n, dtype=np.int32)}


# --- EpochPermutations --------------------------------------------------------


def test_epoch_permutations_take():
  perms = EpochPermutations(seed=3, n=4)
  p0, p1, p2 = perms(0), perms(1), perms(2)
  for p in (p0, p1, p2):
    assert sorted(p.tolist()) == [0, 1, 2, 3]
  np.testing.assert_array_equal(
      p0, np.random.default_rng([3, 0]).permutation(4))
  # Position g is perm_{g // 4}[g % 4].
  assert perms.take(np.array([3, 4])).tolist() == [p0[3], p1[0]]
  assert perms.take(np.arange(12)).tolist() == [*p0, *p1, *p2]
  assert perms.take(np.array([9, 0, 5])).tolist() == [p2[1], p0[0], p1[1]]
  # A fresh object (another process, a resumed run) agrees.
  assert EpochPermutations(3, 4).take(np.array([11, 2])).tolist() == [
      p2[3], p0[2]]
  assert not np.array_equal(EpochPermutations(4, 4).take(np.arange(12)),
                            perms.take(np.arange(12)))


# --- RowBatches ---------------------------------------------------------------


@pytest.mark.parametrize("n,g", [(10, 5), (10, 4), (7, 3), (6, 6)])
def test_each_epoch_visits_every_row_once(n, g):
  rows = RowBatches(_arrays(n), global_batch_size=g, seed=0)
  steps = 3 * n // np.gcd(n, g)      # a whole number of epochs (>= 3)
  seen = np.concatenate([rows.batch(s)["label"] for s in range(steps)])
  assert len(seen) % n == 0
  for e in range(len(seen) // n):
    assert sorted(seen[e * n:(e + 1) * n].tolist()) == list(range(n))
  # Epochs are shuffled differently.
  assert not all(np.array_equal(seen[:n], seen[e * n:(e + 1) * n])
                 for e in range(1, len(seen) // n))


def test_batch_contents_and_epoch_counter():
  arrays = _arrays(10)
  rows = RowBatches(arrays, global_batch_size=4, seed=1)
  b = rows.batch(2)
  assert set(b) == {"tokens", "label", "weights"}
  assert b["tokens"].shape == (4, 3) and b["tokens"].dtype == np.int32
  # Each batch row is one whole example row.
  np.testing.assert_array_equal(b["tokens"], arrays["tokens"][b["label"]])
  assert b["weights"].dtype == np.float32 and b["weights"].tolist() == [1] * 4
  # Step 2 of 10 examples, G = 4: perm_0[8:10] then perm_1[0:2].
  p0 = np.random.default_rng([1, 0]).permutation(10)
  p1 = np.random.default_rng([1, 1]).permutation(10)
  assert b["label"].tolist() == [*p0[8:], *p1[:2]]
  assert rows.items(2).tolist() == b["label"].tolist()
  assert rows.epoch(5) == 2.0
  assert rows.state(5) == {"step": 5, "epoch": 2.0, "seed": 1, "items": 10,
                           "global_batch_size": 4}


def test_batches_are_a_pure_function_of_the_step():
  a = RowBatches(_arrays(9), global_batch_size=4, seed=5)
  b = RowBatches(_arrays(9), global_batch_size=4, seed=5)
  forward = [a.batch(s)["label"].tolist() for s in range(8)]
  # Any order, a fresh object, repeated calls: the same rows.
  backward = [b.batch(s)["label"].tolist() for s in reversed(range(8))][::-1]
  assert forward == backward
  assert a.batch(3)["label"].tolist() == forward[3]
  assert a.batch(0)["label"].tolist() == forward[0]   # after the cache moved
  other = RowBatches(_arrays(9), global_batch_size=4, seed=6)
  assert [other.batch(s)["label"].tolist() for s in range(8)] != forward


@pytest.mark.parametrize("count", [2, 4])
def test_process_slices_concatenate_to_the_global_batch(count):
  g = 8
  whole = RowBatches(_arrays(11), global_batch_size=g, seed=2)
  parts = [RowBatches(_arrays(11), global_batch_size=g, seed=2,
                      process_index=i, process_count=count)
           for i in range(count)]
  for step in (0, 1, 5):
    want = whole.batch(step)
    got = [p.batch(step) for p in parts]
    for k in want:
      assert all(len(x[k]) == g // count for x in got)
      np.testing.assert_array_equal(np.concatenate([x[k] for x in got]),
                                    want[k])


def test_row_batches_errors():
  with pytest.raises(LmError, match="3 examples, fewer than.*batch_size=4"):
    RowBatches(_arrays(3), global_batch_size=4, seed=0)
  RowBatches(_arrays(4), global_batch_size=4, seed=0)      # exactly enough
  with pytest.raises(LmError, match="multiple of the process count"):
    RowBatches(_arrays(10), global_batch_size=5, seed=0, process_count=2)
  with pytest.raises(LmError, match="outside"):
    RowBatches(_arrays(10), global_batch_size=4, seed=0, process_index=2,
               process_count=2)


# --- row_eval_batches ---------------------------------------------------------


def test_eval_batches_in_order_with_padding():
  # Docstring example: 5 rows, batch 4 -> [0..3], [4, pad, pad, pad].
  arrays = _arrays(5)
  batches = list(row_eval_batches(arrays, batch_size=4))
  assert len(batches) == 2
  assert batches[0]["index"].tolist() == [0, 1, 2, 3]
  assert batches[0]["weights"].tolist() == [1, 1, 1, 1]
  assert batches[1]["index"].tolist() == [4, -1, -1, -1]
  assert batches[1]["weights"].tolist() == [1, 0, 0, 0]
  assert batches[1]["index"].dtype == np.int32
  assert batches[1]["weights"].dtype == np.float32
  # Padding rows are copies of the batch's first row.
  assert batches[1]["label"].tolist() == [4, 4, 4, 4]
  np.testing.assert_array_equal(batches[1]["tokens"],
                                np.repeat(arrays["tokens"][4:5], 4, axis=0))
  # Every real row exactly once, in order.
  real = np.concatenate([b["label"][b["weights"] > 0] for b in batches])
  assert real.tolist() == [0, 1, 2, 3, 4]


def test_eval_batches_exact_fit_limit_and_errors():
  batches = list(row_eval_batches(_arrays(6), batch_size=3))
  assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]
  assert all(b["weights"].tolist() == [1, 1, 1] for b in batches)
  # `limit` keeps the first rows only; a limit past the end is the end.
  batches = list(row_eval_batches(_arrays(6), batch_size=4, limit=5))
  assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3],
                                                    [4, -1, -1, -1]]
  assert len(list(row_eval_batches(_arrays(6), batch_size=4, limit=99))) == 2
  assert list(row_eval_batches(_arrays(6), batch_size=4, limit=0)) == []
  with pytest.raises(LmError, match="positive"):
    list(row_eval_batches(_arrays(6), batch_size=0))


# --- trimmed and length-grouped batches ----------------------------------------


def _ragged(n, width=8, seed=0):
  """Right-padded rows of random lengths 1..width, mostly short (as
  sentences are); row i's tokens are i + 1 and its label i."""
  lengths = np.minimum(np.random.default_rng(seed).geometric(0.3, size=n),
                       width)
  mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
  tokens = (np.arange(n, dtype=np.int32)[:, None] + 1) * mask
  return {"tokens": tokens, "mask": mask,
          "label": np.arange(n, dtype=np.int32)}, lengths


def test_row_lengths_and_trimmed_width():
  mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
  assert row_lengths(mask).tolist() == [2, 3, 0, 4]
  assert trimmed_width(np.array([5, 17]), 16, 64) == 32
  assert trimmed_width(np.array([16]), 16, 64) == 16
  assert trimmed_width(np.array([0]), 16, 64) == 16
  assert trimmed_width(np.array([60]), 16, 50) == 50   # never wider than rows


def test_trimmed_batches_cut_only_padding_and_agree_across_processes():
  arrays, lengths = _ragged(40)
  full = RowBatches(arrays, global_batch_size=8, seed=2)
  cut = RowBatches(arrays, global_batch_size=8, seed=2, lengths=lengths,
                   trim=2)
  halves = [RowBatches(arrays, global_batch_size=8, seed=2, lengths=lengths,
                       trim=2, process_index=p, process_count=2)
            for p in range(2)]
  widths = set()
  for s in range(12):
    a, b = full.batch(s), cut.batch(s)
    assert b["label"].tolist() == a["label"].tolist()   # same rows
    w = b["tokens"].shape[1]
    widths.add(w)
    assert w % 2 == 0 and w >= lengths[a["label"]].max()
    assert w <= lengths[a["label"]].max() + 1
    np.testing.assert_array_equal(b["tokens"], a["tokens"][:, :w])
    np.testing.assert_array_equal(b["mask"], a["mask"][:, :w])
    assert not a["mask"][:, w:].any()                  # only padding cut
    assert b["label"].shape == (8,) and b["weights"].shape == (8,)
    # Each process cuts its half to the global batch's width.
    parts = [h.batch(s) for h in halves]
    assert [p["tokens"].shape[1] for p in parts] == [w, w]
    assert np.concatenate([p["label"] for p in parts]).tolist() == \
        b["label"].tolist()
  assert len(widths) > 1


def test_length_grouped_batches():
  arrays, lengths = _ragged(100, width=16, seed=1)
  plain = RowBatches(arrays, global_batch_size=5, seed=3)
  grouped = RowBatches(arrays, global_batch_size=5, seed=3, lengths=lengths,
                       trim=1, group=4)
  fresh = RowBatches(arrays, global_batch_size=5, seed=3, lengths=lengths,
                     trim=1, group=4)
  spread_plain, spread_grouped = [], []
  for pool in range(6):
    steps = range(pool * 4, pool * 4 + 4)
    a = [plain.batch(s)["label"] for s in steps]
    b = [grouped.batch(s)["label"] for s in steps]
    # A pool's steps hold the same examples as the plain order's steps.
    assert sorted(np.concatenate(a).tolist()) == \
        sorted(np.concatenate(b).tolist())
    spread_plain += [np.ptp(lengths[x]) for x in a]
    spread_grouped += [np.ptp(lengths[x]) for x in b]
    # Each batch is cut to its own longest row.
    for s, x in zip(steps, b):
      assert grouped.batch(s)["tokens"].shape[1] == lengths[x].max()
  assert np.mean(spread_grouped) < 0.5 * np.mean(spread_plain)
  # A pure function of the step: any order, a fresh object.
  assert [fresh.batch(s)["label"].tolist() for s in reversed(range(24))] == [
      grouped.batch(s)["label"].tolist() for s in reversed(range(24))]
  # The batches of a pool come in a seeded order, not shortest first.
  firsts = [lengths[grouped.batch(s)["label"]].max() for s in range(24)]
  assert firsts != sorted(firsts)
  other = RowBatches(arrays, global_batch_size=5, seed=4, lengths=lengths,
                     trim=1, group=4)
  assert other.batch(0)["label"].tolist() != grouped.batch(0)["label"].tolist()


def test_trimmed_eval_batches_shortest_first():
  arrays, lengths = _ragged(11, width=8, seed=4)
  batches = list(row_eval_batches(arrays, batch_size=4, lengths=lengths,
                                  trim=2))
  index = np.concatenate([b["index"] for b in batches])
  real = index[index >= 0]
  assert sorted(real.tolist()) == list(range(11))
  assert lengths[real].tolist() == sorted(lengths.tolist())
  for b in batches:
    rows = np.where(b["index"] >= 0, b["index"], b["index"].max())
    w = b["tokens"].shape[1]
    assert w == min(8, -(-lengths[rows].max() // 2) * 2)
    np.testing.assert_array_equal(b["tokens"], arrays["tokens"][rows][:, :w])
  assert batches[-1]["weights"].tolist() == [1, 1, 1, 0]
  # A limit keeps the first rows, then sorts them.
  limited = list(row_eval_batches(arrays, batch_size=4, limit=5,
                                  lengths=lengths, trim=2))
  got = np.concatenate([b["index"] for b in limited])
  assert sorted(got[got >= 0].tolist()) == [0, 1, 2, 3, 4]
