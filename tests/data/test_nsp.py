"""Tests for lm.data.nsp: chunks, sentence pairs, masking and batches."""

import itertools
import json

import numpy as np
import pytest

from lm.data import masking, nsp
from lm.data.nsp import KEYS, MlmBatches, make_chunks, mlm_eval_batches
from lm.data.segments import build_segment_stream, stream_from_segments
from lm.data.sources import open_source
from lm.data.tokenizer import train_tokenizer
from lm.errors import LmError

PAD, UNK, CLS, SEP, MASK = 0, 1, 4, 5, 6
BASE = 10  # token id = BASE + its offset in the stream (every id unique)


class FakeTokenizer:
  """Special ids as a BERT tokenizer's; id i is the piece "▁w<i>" or "w<i>"."""

  vocab_size = 5000
  pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
  cls_id, sep_id, mask_id = 4, 5, 6
  special_ids = [0, 1, 2, 3, 4, 5, 6]
  has_bert_specials = True
  path = "fake.model"

  def id_to_piece(self, i):
    return f"\u2581w{i}" if i % 3 == 0 else f"w{i}"


TOK = FakeTokenizer()


def _unique_stream(n_docs=40, seed=0):
  """Documents of 1..8 segments of 1..12 tokens; token ids are unique."""
  rng = np.random.default_rng(seed)
  docs, t = [], BASE
  for _ in range(n_docs):
    doc = []
    for _ in range(int(rng.integers(1, 9))):
      n = int(rng.integers(1, 13))
      doc.append(list(range(t, t + n)))
      t += n
    docs.append(doc)
  return stream_from_segments(docs)


STREAM = _unique_stream()


def _doc_of(stream, offsets):
  seg = np.searchsorted(stream.seg_starts, offsets, side="right") - 1
  return np.searchsorted(stream.doc_starts, seg, side="right") - 1


def _original(batch):
  """The rows before masking (masked positions restored from targets)."""
  orig = batch["inputs"].copy()
  for r in range(orig.shape[0]):
    w = batch["masked_weights"][r] > 0
    orig[r, batch["masked_positions"][r, w]] = batch["masked_targets"][r, w]
  return orig


def _pairs(batch):
  """(A, B, label) of each real row, as original token ids."""
  orig = _original(batch)
  out = []
  for r in range(orig.shape[0]):
    n = int(batch["segment_ids"][r].sum())
    seps = np.flatnonzero(orig[r, :n] == SEP)
    assert orig[r, 0] == CLS and len(seps) == 2 and seps[1] == n - 1
    out.append((orig[r, 1:seps[0]], orig[r, seps[0] + 1:n - 1],
                int(batch["nsp_labels"][r])))
  return out


# --- chunks and truncation ----------------------------------------------------


def test_make_chunks_example():
  stream = stream_from_segments([[[10] * 3, [11] * 2, [12] * 4, [13]],
                                 [[14]], [[15] * 9, [16]]])
  chunks = make_chunks(stream, 5)
  # Doc 1 (one token) is dropped; doc 2's first segment already reaches 5,
  # and its last chunk, [16], has fewer than 2 tokens.
  assert chunks.tolist() == [[0, 0, 2], [0, 2, 4], [2, 5, 6]]


@pytest.mark.parametrize("max_len", [2, 7, 29, 200])
def test_chunks_cover_each_document_greedily(max_len):
  chunks = make_chunks(STREAM, max_len)
  ss, ds = STREAM.seg_starts, STREAM.doc_starts
  n_tok = ss[chunks[:, 2]] - ss[chunks[:, 1]]
  assert (n_tok >= 2).all()
  for d in range(STREAM.n_docs):
    mine = chunks[chunks[:, 0] == d]
    # Rebuild the greedy grouping and compare (dropping < 2 tokens).
    expected, s = [], ds[d]
    while s < ds[d + 1]:
      j = s + 1
      while j < ds[d + 1] and ss[j] - ss[s] < max_len:
        j += 1
      if ss[j] - ss[s] >= 2:
        expected.append([d, s, j])
      s = j
    assert mine.tolist() == expected


def test_truncate_matches_trimming_loop():
  for a, b, limit in itertools.product(range(1, 15), range(1, 15),
                                       range(2, 20)):
    x, y = a, b
    while x + y > limit:
      if x > y:
        x -= 1
      else:
        y -= 1
    assert nsp._truncate(a, b, limit) == (x, y), (a, b, limit)


# --- NSP instances ------------------------------------------------------------


@pytest.fixture(scope="module")
def nsp_batch():
  batches = MlmBatches(STREAM, TOK, global_batch_size=1000, seq_len=32,
                       seed=3)
  steps = [batches.batch(s) for s in range(2)]
  return {k: np.concatenate([b[k] for b in steps]) for k in KEYS}


def test_is_next_fraction(nsp_batch):
  frac = (nsp_batch["nsp_labels"] == 0).mean()
  assert abs(frac - 0.5) < 0.04, frac  # std 0.011 over 2000 rows
  assert (nsp_batch["nsp_weights"] == 1).all()


def test_is_next_b_follows_a_in_the_stream(nsp_batch):
  n_next = 0
  for a, b, label in _pairs(nsp_batch):
    assert len(a) >= 1 and len(b) >= 1
    assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all()
    off_a, off_b = a - BASE, b - BASE
    doc_a, doc_b = _doc_of(STREAM, off_a[[0, -1]]), _doc_of(STREAM,
                                                             off_b[[0, -1]])
    assert doc_a[0] == doc_a[1] and doc_b[0] == doc_b[1]
    if label == 0:
      n_next += 1
      assert b[0] == a[-1] + 1  # B is exactly what follows A
      assert doc_a[0] == doc_b[0]
    else:
      assert doc_a[0] != doc_b[0]  # B from another document...
      assert off_b[0] in STREAM.seg_starts  # ...from a segment start
  assert n_next > 0


def test_layout(nsp_batch):
  b = nsp_batch
  orig = _original(b)
  for r in range(orig.shape[0]):
    n = int(b["segment_ids"][r].sum())
    assert 5 <= n <= 32
    assert (b["segment_ids"][r, :n] == 1).all()
    assert (b["segment_ids"][r, n:] == 0).all()
    assert (b["inputs"][r, n:] == PAD).all()
    np.testing.assert_array_equal(b["positions"][r, :n], np.arange(n))
    assert (b["positions"][r, n:] == 0).all()
    sep = int(np.flatnonzero(orig[r] == SEP)[0])
    types = np.zeros(32, np.int32)
    types[sep + 1:n] = 1
    np.testing.assert_array_equal(b["token_types"][r], types)
    # Specials are never masked: [CLS] and [SEP] stay in the inputs.
    assert b["inputs"][r, 0] == CLS
    assert b["inputs"][r, sep] == SEP and b["inputs"][r, n - 1] == SEP


def test_masking_inside_batches(nsp_batch):
  b = nsp_batch
  assert b["masked_positions"].shape == (2000, 5)  # ceil(32 * 0.15)
  n = b["segment_ids"].sum(1)
  maskable = n - 3
  expected = np.minimum(5, np.maximum(1, np.round(maskable * 0.15)))
  np.testing.assert_array_equal(b["masked_weights"].sum(1), expected)
  orig = _original(b)
  w = b["masked_weights"] > 0
  rows = np.nonzero(w)[0]
  pos = b["masked_positions"][w]
  assert (orig[rows, pos] >= BASE).all()  # real, non-special tokens only
  assert (pos < n[rows]).all()
  assert abs((b["inputs"][rows, pos] == MASK).mean() - 0.8) < 0.03


def test_long_segments_are_truncated_to_fit():
  stream = stream_from_segments([[list(range(10, 110))],
                                 [list(range(200, 260))]])
  batches = MlmBatches(stream, TOK, global_batch_size=64, seq_len=16, seed=0)
  b = batches.batch(0)
  for a, bb, label in _pairs(b):
    assert len(a) + len(bb) == 13  # always filled to max_tokens
    assert (np.diff(a) == 1).all() and (np.diff(bb) == 1).all()
    if label == 0:
      assert bb[0] == a[-1] + 1


def test_short_seq_prob_gives_shorter_rows():
  kw = dict(global_batch_size=400, seq_len=64, seed=0)
  long = MlmBatches(STREAM, TOK, short_seq_prob=0.0, **kw).batch(0)
  short = MlmBatches(STREAM, TOK, short_seq_prob=1.0, **kw).batch(0)
  assert (short["segment_ids"].sum(1).mean()
          < long["segment_ids"].sum(1).mean() - 5)


def test_without_nsp():
  batches = MlmBatches(STREAM, TOK, global_batch_size=500, seq_len=32,
                       seed=1, nsp=False, short_seq_prob=0.0)
  b = batches.batch(0)
  orig = _original(b)
  starts = set((STREAM.seg_starts[batches.chunks[:, 1]] + BASE).tolist())
  assert (b["nsp_labels"] == 0).all() and (b["token_types"] == 0).all()
  assert b["masked_positions"].shape[1] == 5
  for r in range(orig.shape[0]):
    n = int(b["segment_ids"][r].sum())
    assert orig[r, 0] == CLS and orig[r, n - 1] == SEP and n <= 32
    text = orig[r, 1:n - 1]
    assert SEP not in text and (np.diff(text) == 1).all()
    assert text[0] in starts  # the start of a chunk


def test_unknown_tokens_are_never_masked():
  docs = [[[UNK if i % 2 else 100 + i for i in range(20)]] for _ in range(4)]
  b = MlmBatches(stream_from_segments(docs), TOK, global_batch_size=200,
                 seq_len=24, seed=0).batch(0)
  w = b["masked_weights"] > 0
  assert w.any() and UNK not in b["masked_targets"][w]


# --- determinism --------------------------------------------------------------


def _equal(x, y):
  assert x.keys() == y.keys() == set(KEYS)
  for k in KEYS:
    np.testing.assert_array_equal(x[k], y[k])


def test_batches_are_a_function_of_step_and_seed():
  kw = dict(global_batch_size=8, seq_len=32, seed=5)
  one, two = MlmBatches(STREAM, TOK, **kw), MlmBatches(STREAM, TOK, **kw)
  for step in (7, 0, 123):
    _equal(one.batch(step), two.batch(step))
  parts = [MlmBatches(STREAM, TOK, process_index=p, process_count=2, **kw)
           for p in range(2)]
  for step in (0, 9):
    whole = one.batch(step)
    halves = [p.batch(step) for p in parts]
    assert halves[0]["inputs"].shape == (4, 32)
    _equal(whole, {k: np.concatenate([h[k] for h in halves]) for k in KEYS})
  assert not np.array_equal(one.batch(0)["inputs"], one.batch(1)["inputs"])
  other = MlmBatches(STREAM, TOK, **{**kw, "seed": 6})
  assert not np.array_equal(one.batch(0)["inputs"], other.batch(0)["inputs"])


def test_each_epoch_visits_every_chunk_and_masks_afresh():
  kw = dict(seq_len=32, seed=2, nsp=False, short_seq_prob=0.0)
  n_chunks = MlmBatches(STREAM, TOK, global_batch_size=1, **kw).n_chunks
  batches = MlmBatches(STREAM, TOK, global_batch_size=n_chunks, **kw)
  assert batches.epoch(1) == 1.0 and batches.epoch(0) == 0.0
  by_epoch = []
  for step in range(2):
    b = batches.batch(step)
    first = _original(b)[:, 1]
    assert sorted(first.tolist()) == sorted(
        (STREAM.seg_starts[batches.chunks[:, 1]] + BASE).tolist())
    by_epoch.append({int(f): tuple(b["masked_positions"][r])
                     for r, f in enumerate(first)})
  assert by_epoch[0].keys() == by_epoch[1].keys()
  differ = sum(by_epoch[0][c] != by_epoch[1][c] for c in by_epoch[0])
  assert differ > 0.5 * n_chunks


def test_state_is_json():
  batches = MlmBatches(STREAM, TOK, global_batch_size=10, seq_len=32, seed=0)
  state = json.loads(json.dumps(batches.state(4)))
  assert state["step"] == 4 and state["seed"] == 0 and state["nsp"] is True
  assert state["epoch"] == pytest.approx(40 / batches.n_chunks)
  assert state["n_chunks"] == batches.n_chunks == len(make_chunks(STREAM, 29))


def test_eval_batches_are_identical_and_padded():
  kw = dict(batch_size=16, seq_len=32, seed=0)
  first = list(mlm_eval_batches(STREAM, TOK, **kw))
  again = list(mlm_eval_batches(STREAM, TOK, **kw))
  n_chunks = len(make_chunks(STREAM, 29))
  assert len(first) == -(-n_chunks // 16)
  for x, y in zip(first, again):
    _equal(x, y)
  weights = np.concatenate([b["nsp_weights"] for b in first])
  assert weights.sum() == n_chunks and (weights[n_chunks:] == 0).all()
  last = first[-1]
  filler = last["nsp_weights"] == 0
  if filler.any():
    assert (last["masked_weights"][filler] == 0).all()
    assert (last["segment_ids"][filler] == 0).all()
    assert (last["inputs"][filler] == PAD).all()
  assert len(list(mlm_eval_batches(STREAM, TOK, max_batches=2, **kw))) == 2


def test_eval_reads_chunks_in_order():
  b = next(mlm_eval_batches(STREAM, TOK, batch_size=8, seq_len=32, seed=0,
                            nsp=False, short_seq_prob=0.0))
  chunks = make_chunks(STREAM, 30)
  np.testing.assert_array_equal(
      _original(b)[:, 1], STREAM.seg_starts[chunks[:8, 1]] + BASE)


# --- errors -------------------------------------------------------------------


def test_nsp_needs_two_documents():
  one_doc = stream_from_segments([[[10, 11, 12], [13, 14]]])
  with pytest.raises(LmError) as e:
    MlmBatches(one_doc, TOK, global_batch_size=2, seq_len=16, seed=0)
  assert "at least two documents" in str(e.value)
  assert "config.mlm.nsp" in str(e.value)
  b = MlmBatches(one_doc, TOK, global_batch_size=2, seq_len=16, seed=0,
                 nsp=False).batch(0)
  assert b["inputs"].shape == (2, 16)


class PlainTokenizer(FakeTokenizer):
  cls_id = sep_id = mask_id = None
  has_bert_specials = False
  special_ids = [0, 1, 2, 3]


@pytest.mark.parametrize("kw, match", [
    (dict(global_batch_size=3, process_count=2), "multiple of the process"),
    (dict(seq_len=4), "seq_len 4"),
    (dict(mask_rate=-0.5), "config.mlm.mask_rate"),
    (dict(mask_token_rate=0.95, random_token_rate=0.1), "exceeds 1"),
    (dict(short_seq_prob=2.0), "config.mlm.short_seq_prob"),
    (dict(max_predictions=-1), "config.mlm.max_predictions"),
    (dict(seed=-1), "seed"),
])
def test_bad_options(kw, match):
  args = dict(global_batch_size=2, seq_len=16, seed=0)
  args.update(kw)
  with pytest.raises(LmError, match=match):
    MlmBatches(STREAM, TOK, **args)


def test_tokenizer_without_specials():
  with pytest.raises(LmError, match=r"fake\.model.*\[CLS\]/\[SEP\]/\[MASK\]"):
    MlmBatches(STREAM, PlainTokenizer(), global_batch_size=2, seq_len=16,
               seed=0)


# --- end to end with a real tokenizer -----------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "tok.model"
  src = open_source("pystdlib:validation")
  tok = train_tokenizer(src, str(path), vocab_size=500, max_chars=100_000,
                        bert_specials=True)
  stream = build_segment_stream(src, tok, documents="blank_lines",
                                segments="lines", max_chars=60_000)
  return tok, stream


def test_real_tokenizer_whole_word_batches(real):
  tok, stream = real
  batches = MlmBatches(stream, tok, global_batch_size=64, seq_len=64, seed=0,
                       whole_word=True)
  b = batches.batch(0)
  orig = _original(b)
  tables = masking._tables(tok)
  n_chosen = 0
  for r in range(64):
    n = int(b["segment_ids"][r].sum())
    row = orig[r, :n]
    assert row[0] == tok.cls_id and row[-1] == tok.sep_id
    assert (row == tok.sep_id).sum() == 2
    maskable = ~np.isin(row, tok.special_ids)
    starts = masking.word_starts(row, *tables)
    k = int(b["masked_weights"][r].sum())
    pos = b["masked_positions"][r, :k]
    n_chosen += k
    chosen = np.zeros(n, bool)
    chosen[pos] = True
    # Every chosen word is chosen entirely: a chosen non-start token's
    # predecessor is chosen too, and a chosen word's continuation as well.
    for t in range(1, n):
      is_start = starts[t] or not maskable[t - 1]
      if maskable[t] and not is_start:
        assert chosen[t] == chosen[t - 1], (r, t)
  assert n_chosen > 64 * 3
  text = tok.decode(_original(b)[0].tolist())
  assert text and "[CLS]" not in text
