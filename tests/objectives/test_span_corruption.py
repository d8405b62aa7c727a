"""Span corruption: noise statistics, sentinels, determinism, a resumed run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm.errors import LmError
from lm.objectives import span_corruption as sc
from lm.training.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_noise_density_and_span_lengths_over_many_rows():
  length = sc.raw_length(128, 0.15, 3.0)
  rng = np.random.default_rng(0)
  noise, spans, first_span = 0, 0, []
  lengths = []
  for _ in range(2000):
    mask = sc.noise_mask(length, 0.15, 3.0, rng)
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    ends = mask & ~np.concatenate([mask[1:], [False]])
    noise += mask.sum()
    spans += starts.sum()
    lengths.extend((np.flatnonzero(ends) - np.flatnonzero(starts) + 1).tolist())
    first_span.append(np.flatnonzero(starts)[0])
    assert not mask[0]                         # a kept run comes first
  assert abs(noise / (2000 * length) - 0.15) < 0.01
  assert abs(np.mean(lengths) - 3.0) < 0.15
  assert np.std(lengths) > 1.0                 # lengths vary, not all 3
  assert len(set(first_span)) > 20             # placement varies


def test_corrupted_rows_round_trip_and_fit_the_row():
  n = sc.raw_length(128, 0.15, 3.0)
  tokens = np.arange(10, 10 + n)
  mask = sc.noise_mask(n, 0.15, 3.0, np.random.default_rng(1))
  sentinels = np.arange(900, 910)
  inputs, targets = sc.corrupt(tokens, mask, sentinels, 1)
  assert len(inputs) <= 128 and sc.corrupted_lengths(n, 0.15, 3.0) == (
      len(inputs), len(targets))
  # filling each sentinel of the input with its target span restores the text
  spans, cur = {}, None
  for t in targets[:-1]:
    if t >= 900:
      cur = t
      spans[cur] = []
    else:
      spans[cur].append(t)
  restored = [u for t in inputs[:-1] for u in (spans[t] if t >= 900 else [t])]
  assert restored == tokens.tolist()


class _Tok:
  eos_id, pad_id, bos_id = 3, 0, 2

  def piece_ids(self, pieces):
    return [1000 + i for i in range(len(pieces))]


class _Stream:
  def __init__(self, n):
    self.tokens = np.random.default_rng(5).integers(10, 900, n).astype(np.int32)
    self.doc_starts = np.array([0])

  def __len__(self):
    return len(self.tokens)


def _batches(process_index=0, process_count=1):
  from lm.data import pipeline
  rows = sc.SpanCorruptionRows(_Tok(), seq_len=32, density=0.15, mean_span=3.0,
                               sentinels=8)
  windows = pipeline.TrainBatches(_Stream(5000), global_batch_size=4,
                                  seq_len=rows.raw_length, seed=7,
                                  process_index=process_index,
                                  process_count=process_count)
  return sc.SpanCorruptionBatches(windows, rows, 7)


def test_batches_are_a_pure_function_of_the_step_on_any_host_count():
  a, b = _batches().batch(3), _batches().batch(3)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  halves = [_batches(i, 2).batch(3) for i in range(2)]
  for k in a:
    np.testing.assert_array_equal(a[k], np.concatenate([h[k] for h in halves]))
  assert not np.array_equal(a["inputs"], _batches().batch(4)["inputs"])
  # decoder inputs are the targets shifted right after the start (pad) id
  np.testing.assert_array_equal(a["decoder_inputs"][:, 1:],
                                np.where(a["loss_mask"][:, :-1] > 0,
                                         a["targets"][:, :-1], 0))
  assert (a["decoder_inputs"][:, 0] == 0).all()
  assert (a["input_segment_ids"].sum(1) <= 32).all()


def test_too_few_sentinels_is_one_sentence():
  with pytest.raises(LmError, match="sentinels=2 is fewer than the 7 spans"):
    sc.SpanCorruptionRows(_Tok(), seq_len=128, density=0.15, mean_span=3.0,
                          sentinels=2)


def _train(workdir, steps, *extra):
  cmd = [sys.executable, "-m", "launch.train", "--config",
         "configs/t5_quickstart.py:runlocal", f"--workdir={workdir}",
         f"--config.steps={steps}", "--config.optimizer.decay_steps=6",
         "--config.log_every=1", "--config.model.dropout=0.1", *extra]
  r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return r.stdout + r.stderr


def test_span_corruption_run_resumes_bitwise_and_reserves_sentinels(tmp_path):
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  _train(straight, 6)
  _train(split, 3)
  assert "resuming at step 3" in _train(split, 6)

  def losses(w):
    with open(os.path.join(w, "metrics.jsonl")) as f:
      return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}

  assert losses(straight) == losses(split) and len(losses(straight)) == 6
  pa = jax.tree.leaves(Checkpointer(straight).restore_unsharded(6)[0]["params"])
  pb = jax.tree.leaves(Checkpointer(split).restore_unsharded(6)[0]["params"])
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  from lm.data.tokenizer import Tokenizer
  tok = Tokenizer.load(os.path.join(straight, "tokenizer.model"))
  ids = tok.piece_ids(sc.sentinel_pieces(16))
  assert None not in ids and len(set(ids)) == 16
  assert not set(ids) & set(tok.encode("def f(x):\n    return x\n"))


def test_too_few_sentinels_are_refused_when_the_objective_is_built():
  from lm.experiments import base_config, make_objective
  c = base_config()
  c.objective, c.model.size, c.seq_len = "span_corruption", "t5_tiny", 128
  c.span_corruption.sentinels = 2
  with pytest.raises(LmError, match="sentinels=2 is fewer than the 7 spans"):
    make_objective(c)
