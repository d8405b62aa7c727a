"""Tokenized text columns, row framing and contrastive batches."""

import os

import numpy as np
import pytest

from lm.data import pair_batches
from lm.data.pair_batches import ContrastiveBatches, eval_batches, rows
from lm.errors import LmError

FRAME = dict(first=4, last=5, pad=0)


class _Tok:
  """Maps each character to its code point (enough to check framing)."""

  def encode_batch(self, texts):
    return [[ord(ch) for ch in t] for t in texts]


def _cols(n=10):
  texts = {"anchor": [f"a{i}" for i in range(n)],
           "positive": [f"p{i}" * (i % 3 + 1) for i in range(n)]}
  return pair_batches.columns_from_texts(texts, _Tok())


def test_columns_hold_every_text_and_rows_are_framed():
  cols = _cols(4)
  assert len(cols) == 4 and cols.names == ["anchor", "positive"]
  tok, mask = rows(cols, "positive", np.array([2, -1, 0]), seq_len=6, **FRAME)
  p2 = [ord(c) for c in "p2p2p2"][:4]
  np.testing.assert_array_equal(tok[0], [4] + p2 + [5])
  np.testing.assert_array_equal(mask[0], [1] * 6)
  np.testing.assert_array_equal(tok[1], [0] * 6)          # index -1: padding
  np.testing.assert_array_equal(mask[1], [0] * 6)
  np.testing.assert_array_equal(tok[2], [4, ord("p"), ord("0"), 5, 0, 0])
  np.testing.assert_array_equal(mask[2], [1, 1, 1, 1, 0, 0])
  with pytest.raises(LmError, match="seq_len=2 leaves no room"):
    rows(cols, "anchor", np.array([0]), seq_len=2, **FRAME)
  with pytest.raises(LmError, match="different lengths"):
    pair_batches.columns_from_texts({"a": ["x"], "b": []}, _Tok())


def test_cached_columns_round_trip(tmp_path):
  calls = []

  def build():
    calls.append(1)
    return pair_batches.columns_from_texts({"text": ["ab", "c"]}, _Tok(),
                                           scores=[0.5, 2.0])
  a = pair_batches.cached_columns(("k", 1), build, str(tmp_path))
  b = pair_batches.cached_columns(("k", 1), build, str(tmp_path))
  assert len(calls) == 1
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(b.starts["text"], [0, 2, 3])
  np.testing.assert_array_equal(b.scores, [0.5, 2.0])
  pair_batches.cached_columns(("k", 2), build, str(tmp_path))
  assert len(calls) == 2
  for entry in os.listdir(tmp_path):
    os.remove(os.path.join(tmp_path, entry, "tokens.npy"))
  with pytest.raises(LmError, match="missing tokens.npy; delete"):
    pair_batches.cached_columns(("k", 1), build, str(tmp_path))


def test_cached_columns_check_ids_against_the_vocabulary(tmp_path):
  build = lambda: pair_batches.columns_from_texts({"text": ["ab", "c"]},
                                                  _Tok())
  cols = pair_batches.cached_columns(("k",), build, str(tmp_path))
  top = int(np.max(cols.tokens))
  pair_batches.cached_columns(("k",), build, str(tmp_path),
                              vocab_size=top + 1)
  with pytest.raises(LmError, match=f"holds token id {top}, outside the "
                     f"tokenizer's vocabulary of {top} ids"):
    pair_batches.cached_columns(("k",), build, str(tmp_path), vocab_size=top)


def test_batches_cover_each_epoch_once_and_split_across_processes():
  cols = _cols(10)
  whole = ContrastiveBatches(cols, ["anchor", "positive"], global_batch_size=4,
                             seq_len=8, seed=3, **FRAME)
  seen = np.concatenate([whole.items(s) for s in range(5)])   # 2 epochs
  assert sorted(seen[:10]) == list(range(10))
  assert sorted(seen[10:]) == list(range(10))
  assert not np.array_equal(seen[:10], seen[10:])            # reshuffled
  assert whole.epoch(5) == 2.0
  parts = [ContrastiveBatches(cols, ["anchor", "positive"], global_batch_size=4,
                              seq_len=8, seed=3, process_index=i,
                              process_count=2, **FRAME) for i in range(2)]
  for s in range(4):
    b = whole.batch(s)
    halves = [p.batch(s) for p in parts]
    for k in b:
      np.testing.assert_array_equal(b[k], np.concatenate([h[k] for h in halves]))
  # Pairs stay aligned: the anchor and positive of a row are one pair.
  b = whole.batch(0)
  for r, i in enumerate(whole.items(0)):
    assert b["anchor"][r, 2] == ord(str(i)[0])
    assert b["positive"][r, 2] == ord(str(i)[0])
  assert set(b) == {"anchor", "anchor_mask", "positive", "positive_mask", "weights"}


def test_flattened_batches_read_every_text_of_every_column():
  cols = _cols(6)
  batches = ContrastiveBatches(cols, ["anchor", "positive"], global_batch_size=4,
                               seq_len=8, seed=0, flatten=True, **FRAME)
  assert batches.n_items == 12
  firsts = np.concatenate([batches.batch(s)["anchor"][:, 1] for s in range(3)])
  assert sorted(firsts.tolist()) == [ord("a")] * 6 + [ord("p")] * 6
  assert set(batches.batch(0)) == {"anchor", "anchor_mask", "weights"}
  with pytest.raises(LmError, match="fewer than config.batch_size=16"):
    ContrastiveBatches(_cols(3), ["anchor"], global_batch_size=16, seq_len=8,
                       seed=0, **FRAME)
  with pytest.raises(LmError, match="no 'negative' column"):
    ContrastiveBatches(cols, ["anchor", "negative"], global_batch_size=4,
                       seq_len=8, seed=0, **FRAME)


def test_eval_batches_are_in_order_and_padded():
  cols = _cols(10)
  out = list(eval_batches(cols, ["anchor", "positive"], batch_size=4, limit=6,
                          seq_len=8, **FRAME))
  assert len(out) == 2
  np.testing.assert_array_equal(out[1]["weights"], [1, 1, 0, 0])
  np.testing.assert_array_equal(out[1]["anchor_mask"][2:], 0)
  assert out[0]["anchor"][3, 2] == ord("3")
  assert len(list(eval_batches(cols, ["anchor"], batch_size=4, limit=100,
                               seq_len=8, **FRAME))) == 3
