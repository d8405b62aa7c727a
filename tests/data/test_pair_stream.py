"""Tests for lm.data.pair_stream: SimCSE sentences streamed per row stream
and supervised pairs read ahead by step, from jsonl: and hf: records."""

import numpy as np
import pytest

from lm.data import pair_stream, streaming
from lm.data.pipeline import ShuffledItems
from lm.data.sources import ListSource
from tests.data.files import one_sentence, write_jsonl

FIRST, LAST, PAD = 2, 3, 0
FRAME = dict(first=FIRST, last=LAST, pad=PAD)


class CharTokenizer:
  """Letters a..z -> ids 10..35 (picklable: worker processes import it)."""

  bos_id, eos_id, pad_id, vocab_size = 2, 3, 0, 64

  def encode_batch(self, texts):
    return [[10 + (ord(c) - ord("a")) % 26 for c in t if c.isalpha()]
            for t in texts]


def _docs(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    lines = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(m)))
             for m in rng.integers(1, 9, int(rng.integers(0, 5)))]
    out.append("\n".join(lines) + ("\n\n  \n" if i % 3 == 0 else ""))
  return out


DOCS = _docs(30)


def _corpus(docs=DOCS, source=None, **kw):
  return streaming.StreamCorpus(
      source or ListSource("mem:", docs, key=[len(docs)]), CharTokenizer(),
      **kw)


def _sentences(g=4, seq_len=8, corpus=None, **kw):
  return pair_stream.SentenceBatches(
      corpus or _corpus(), global_batch_size=g, seq_len=seq_len, seed=5,
      texts=kw.pop("texts", "lines"), **FRAME, **kw)


def _ids(row):
  return [t for t in row if t >= 10]


def test_sentence_rows_are_each_streams_lines_in_order():
  g, steps = 4, 15
  b = _sentences(g=g, seq_len=12)
  rows = [b.batch(s) for s in range(steps)]
  order = streaming.DocumentOrder(5, len(DOCS), "shuffle")
  for r in range(g):
    want, k = [], 0
    while len(want) < steps:
      doc = DOCS[int(order.take([k * g + r])[0])]
      want += [line.strip() for line in doc.splitlines() if line.strip()]
      k += 1
    for s in range(steps):
      row = rows[s]["anchor"][r]
      assert row[0] == FIRST
      assert _ids(row) == CharTokenizer().encode_batch([want[s]])[0][:10]
      assert rows[s]["anchor_mask"][r].sum() == len(_ids(row)) + 2


def test_sentences_on_two_processes_and_a_resume_on_one_match():
  ref = _sentences()
  want = [ref.batch(s) for s in range(8)]
  halves = [_sentences(process_index=p, process_count=2) for p in range(2)]
  for s in range(4):
    got = np.concatenate([h.batch(s)["anchor"] for h in halves])
    np.testing.assert_array_equal(got, want[s]["anchor"])
  state = halves[0].state(4)
  state["streams"] += halves[1].state(4)["streams"]
  resumed = _sentences(data_state=state)
  for s in range(4, 8):
    np.testing.assert_array_equal(resumed.batch(s)["anchor"],
                                  want[s]["anchor"])


def test_whole_documents_and_no_text_refused():
  b = _sentences(texts="documents", g=2, seq_len=40)
  row = b.batch(0)["anchor"][0]
  assert FIRST in row and LAST in row
  empty = _sentences(corpus=_corpus(["", " \n"]), g=2)
  assert "no non-empty lines" in one_sentence(empty.batch, 0)


def _pairs_file(tmp_path, n=40):
  rows = []
  for i in range(n):
    a = "".join(chr(97 + (i + j) % 26) for j in range(3 + i % 4))
    rows.append({"q": a if i % 9 != 4 else "", "d": a[::-1] + "zz",
                 "neg": "x" * (1 + i % 3)})
  write_jsonl(tmp_path / "pairs.jsonl", rows)
  return rows


def _pair_batches(uri, names=("anchor", "positive"), fields=("q", "d"),
                  g=4, workers=0, **kw):
  src = pair_stream.open_pair_records(uri, fields=list(fields))
  corpus = _corpus(source=src, workers=workers)
  return pair_stream.PairBatches(corpus, list(names), global_batch_size=g,
                                 seq_len=10, seed=7, **FRAME, **kw)


def test_pairs_are_the_records_of_each_step_read_ahead(tmp_path):
  rows = _pairs_file(tmp_path)
  uri = f"jsonl:{tmp_path}/pairs.jsonl"
  b = _pair_batches(uri, names=("anchor", "positive", "negative"),
                    fields=("q", "d", "neg"))
  items = ShuffledItems(40, global_batch_size=4, seed=7)
  tok = CharTokenizer()
  for step in (0, 1, 2, 11, 12):   # a jump restarts the read-ahead
    out = b.batch(step)
    for r, i in enumerate(items.items(step).tolist()):
      rec = rows[i]
      assert out["weights"][r] == (1.0 if rec["q"] else 0.0)
      if rec["q"]:
        assert _ids(out["anchor"][r]) == tok.encode_batch([rec["q"]])[0]
        assert _ids(out["positive"][r]) == tok.encode_batch([rec["d"]])[0]
        assert _ids(out["negative"][r]) == tok.encode_batch([rec["neg"]])[0]
      else:
        assert out["anchor_mask"][r].sum() == 0
  b.close()
  assert b.state(3)["items"] == 40


def test_pairs_two_processes_and_workers_give_the_same_rows(tmp_path):
  _pairs_file(tmp_path)
  uri = f"jsonl:{tmp_path}/pairs.jsonl"
  want = _pair_batches(uri).batch(3)
  halves = [_pair_batches(uri, process_index=p, process_count=2)
            for p in range(2)]
  got = np.concatenate([h.batch(3)["positive"] for h in halves])
  np.testing.assert_array_equal(got, want["positive"])
  b = _pair_batches(uri, workers=1)
  try:
    np.testing.assert_array_equal(b.batch(3)["anchor"], want["anchor"])
  finally:
    b.close()


def test_pairs_from_an_hf_dataset(tmp_path):
  datasets = pytest.importorskip("datasets")
  datasets.Dataset.from_dict(
      {"q": [f"q{'a' * i}" for i in range(8)],
       "d": [f"d{'b' * i}" for i in range(8)]}).save_to_disk(
           str(tmp_path / "hf"))
  b = _pair_batches(f"hf:{tmp_path}/hf", g=8)
  out = b.batch(0)
  lengths = sorted(int(m.sum()) for m in out["anchor_mask"])
  assert lengths == [3 + i for i in range(8)]   # [first] q a*i [last]


def test_a_wrong_field_is_refused_when_the_source_opens(tmp_path):
  _pairs_file(tmp_path)
  msg = one_sentence(pair_stream.open_pair_records,
                     f"jsonl:{tmp_path}/pairs.jsonl", fields=["q", "answer"])
  assert "'answer'" in msg and "line 1" in msg
