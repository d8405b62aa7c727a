"""Tests for lm.data.mlm_stream: masked-LM (+ NSP) rows streamed from
documents: chunks in order, pairs, masking keyed on the row's place,
process-count independence, resume, workers, evaluation, refusals."""

import numpy as np
import pytest

from lm.data import mlm_stream, nsp, streaming
from lm.data.segments import build_segment_stream
from lm.data.sources import ListSource
from tests.data.files import one_sentence

CLS, SEP, MASK = 4, 5, 6


class WordTokenizer:
  """Words "w<i>" -> id i (ids >= 10); specials as a BERT tokenizer's.
  Picklable: worker processes import it by name."""

  vocab_size = 5000
  pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
  cls_id, sep_id, mask_id = CLS, SEP, MASK
  special_ids = [0, 1, 2, 3, 4, 5, 6]
  has_bert_specials = True
  path = "words"

  def encode_batch(self, texts):
    return [[int(w[1:]) for w in t.split()] for t in texts]


def _docs(n, seed=0, words_per_line=1):
  """Documents of lines of unique words (chunks of seq_len 12 have at least
  2 tokens); some documents empty."""
  rng = np.random.default_rng(seed)
  docs, t = [], 10
  for i in range(n):
    lines = []
    n_lines = 0 if i % 7 == 3 else int(rng.integers(2, 30))
    n_lines += n_lines % 10 == 1   # no 1-token chunk at a document's end
    for _ in range(n_lines):
      lines.append(" ".join(f"w{t + j}" for j in range(words_per_line)))
      t += words_per_line
    docs.append("".join(line + "\n" for line in lines))
  return docs


DOCS = _docs(40)


def _corpus(docs=DOCS, **kw):
  return streaming.StreamCorpus(ListSource("mem:", docs, key=[len(docs)]),
                                WordTokenizer(), **kw)


def _batches(corpus=None, g=4, seq_len=12, **kw):
  kw.setdefault("documents", "source")
  kw.setdefault("segments", "lines")
  return mlm_stream.MlmStreamBatches(
      corpus or _corpus(), WordTokenizer(), global_batch_size=g,
      seq_len=seq_len, seed=3, **kw)


def _text_ids(row):
  """The unmasked ids of a row's text (specials and padding dropped)."""
  return [t for t in row if t > MASK]


def _doc_id(token, docs=DOCS):
  for d, text in enumerate(docs):
    if f"w{token}\n" in text:
      return d
  raise AssertionError(token)


def test_without_nsp_each_stream_reads_its_documents_chunk_by_chunk():
  g, seq_len = 4, 12
  b = _batches(g=g, seq_len=seq_len, nsp=False, mask_rate=0.0,
               short_seq_prob=0.0)
  rows = [b.batch(s)["inputs"] for s in range(20)]
  order = streaming.DocumentOrder(3, len(DOCS), "shuffle")
  for r in range(g):
    got = [t for s in range(20) for t in _text_ids(rows[s][r])]
    want, k = [], 0
    while len(want) < len(got):
      want += WordTokenizer().encode_batch(
          [DOCS[int(order.take([k * g + r])[0])]])[0]
      k += 1
    assert got == want[:len(got)]
    for s in range(20):
      assert rows[s][r][0] == CLS


def test_pairs_follow_on_or_come_from_another_document():
  b = _batches(g=8, seq_len=16, mask_rate=0.0)
  labels = []
  for s in range(30):
    out = b.batch(s)
    for r in range(8):
      row, types = out["inputs"][r], out["token_types"][r]
      a = [t for t, y in zip(row, types) if t > MASK and y == 0]
      bb = [t for t, y in zip(row, types) if t > MASK and y == 1]
      assert a and bb
      label = int(out["nsp_labels"][r])
      labels.append(label)
      if label == 0:
        assert bb[0] == a[-1] + 1          # B continues A
      else:
        assert _doc_id(bb[0]) != _doc_id(a[0])
  assert 0.35 < np.mean(labels) < 0.65


def test_masking_is_keyed_on_the_rows_place():
  a = _batches(whole_word=False)
  first = [a.batch(s) for s in range(6)]
  b = _batches()
  again = [b.batch(s) for s in range(6)]
  for x, y in zip(first, again):
    for k in nsp.KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  masked = np.concatenate([x["masked_weights"] for x in first])
  assert 0.05 < masked.sum() / (first[0]["segment_ids"].sum() * 6) < 0.3


def test_two_processes_and_a_resume_on_another_count_see_the_same_batches():
  ref = _batches(g=4)
  want = [ref.batch(s) for s in range(10)]
  halves = [_batches(g=4, process_index=p, process_count=2) for p in range(2)]
  for s in range(5):
    parts = [h.batch(s) for h in halves]
    for k in nsp.KEYS:
      np.testing.assert_array_equal(
          np.concatenate([p[k] for p in parts]), want[s][k])
  # the state at step 5 (both halves' streams), resumed in one process
  state = halves[0].state(5)
  state["streams"] += halves[1].state(5)["streams"]
  resumed = _batches(g=4, data_state=state)
  for s in range(5, 10):
    out = resumed.batch(s)
    for k in nsp.KEYS:
      np.testing.assert_array_equal(out[k], want[s][k])
  assert ref.state(10)["streams"] == resumed.state(10)["streams"]


def test_worker_processes_give_the_same_rows():
  want = [_batches().batch(s) for s in range(1)]
  b = _batches(_corpus(workers=1))
  try:
    got = b.batch(0)
  finally:
    b.close()
  for k in nsp.KEYS:
    np.testing.assert_array_equal(got[k], want[0][k])


def test_eval_batches_are_the_packed_pipelines_over_the_same_documents():
  src = ListSource("mem:", DOCS, key=[len(DOCS)])
  stream = build_segment_stream(src, WordTokenizer(), documents="source",
                                segments="lines")
  options = dict(batch_size=4, seq_len=12, seed=1, nsp=True)
  want = list(nsp.mlm_eval_batches(stream, WordTokenizer(), **options))
  corpus = _corpus()
  got = list(mlm_stream.eval_batches(
      corpus, WordTokenizer(), max_batches=None, documents="source",
      segments="lines", **options))
  assert len(got) == len(want)
  for x, y in zip(got, want):
    for k in nsp.KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  two = list(mlm_stream.eval_batches(
      corpus, WordTokenizer(), max_batches=2, documents="source",
      segments="lines", **options))
  assert len(two) == 2
  np.testing.assert_array_equal(two[1]["inputs"], want[1]["inputs"])


def test_blank_line_documents_split_a_source_document():
  docs = ["w10\nw11\n\nw12\nw13\n", "w14\nw15\n"]
  b = _batches(_corpus(docs), g=1, seq_len=5, documents="blank_lines",
               nsp=False, mask_rate=0.0, short_seq_prob=0.0)
  rows = [_text_ids(b.batch(s)["inputs"][0]) for s in range(3)]
  assert sorted(map(tuple, rows)) == [(10, 11), (12, 13), (14, 15)]


def test_refusals_are_one_sentence():
  assert "two documents" in one_sentence(_batches, _corpus(["w10 w11\n"]))
  empty = _batches(_corpus(["w10\n", ""]), nsp=False)
  assert "at least 2 tokens" in one_sentence(empty.batch, 0)
  with pytest.raises(ValueError):
    _batches().batch(1)
