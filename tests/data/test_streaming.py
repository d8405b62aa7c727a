"""Tests for lm.data.streaming: rows streamed from documents on Grain, their
state, resume and process-count independence; and lm.data.indexed."""

import json

import numpy as np
import pytest

from lm.data import indexed, streaming
from lm.data.sources import ListSource
from tests.data.files import one_sentence


class CharTokenizer:
  """Letters a..z -> ids 10..35; bos=2, eos=3 (picklable: worker processes
  import it by name)."""

  bos_id, eos_id, pad_id, vocab_size = 2, 3, 0, 64

  def encode_batch(self, texts):
    return [[10 + (ord(c) - ord("a")) % 26 for c in t] for t in texts]


def _docs(n, seed=0):
  rng = np.random.default_rng(seed)
  return ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(m)))
          for m in rng.integers(0, 30, n)]


def _corpus(docs, **kw):
  return streaming.StreamCorpus(ListSource("mem:", docs, key=[len(docs)]),
                                CharTokenizer(), **kw)


def _batches(corpus, g=4, seq_len=8, **kw):
  return streaming.StreamBatches(corpus, global_batch_size=g, seq_len=seq_len,
                                 seed=3, **kw)


def _reference_rows(docs, g, seq_len, steps, mode="shuffle"):
  """Each stream's concatenation built directly, cut every seq_len."""
  order = streaming.DocumentOrder(3, len(docs), mode)
  tok = CharTokenizer()
  out = np.zeros((steps, g, seq_len + 1), np.int64)
  for r in range(g):
    ids, k = [], 0
    while len(ids) < steps * seq_len + 1:
      d = docs[int(order.take([k * g + r])[0])]
      if d:
        ids += [2] + tok.encode_batch([d])[0] + [3]
      k += 1
    for s in range(steps):
      out[s, r] = ids[s * seq_len:s * seq_len + seq_len + 1]
  return out


@pytest.mark.parametrize("mode", ["shuffle", "random"])
def test_rows_are_each_streams_concatenation_cut_every_seq_len(mode):
  docs = _docs(37)
  b = _batches(_corpus(docs), mode=mode)
  ref = _reference_rows(docs, 4, 8, 12, mode)
  for s in range(12):
    rows = b.batch(s)
    np.testing.assert_array_equal(rows["inputs"], ref[s, :, :-1])
    np.testing.assert_array_equal(rows["targets"], ref[s, :, 1:])


def test_segments_positions_and_loss_mask_follow_documents():
  docs = ["ab", "", "cde", "f"]    # one stream: its docs in perm order
  b = _batches(_corpus(docs), g=1, seq_len=6)
  rows = b.batch(0)
  seq = rows["inputs"][0].tolist() + [rows["targets"][0, -1]]
  bos = [i for i, t in enumerate(seq) if t == 2]
  seg = rows["segment_ids"][0]
  for start in bos[1:]:
    if start < 6:
      assert seg[start] == seg[start - 1] + 1
      assert rows["positions"][0, start] == 0
      assert rows["loss_mask"][0, start - 1] == 0   # eos -> next bos
  assert rows["positions"][0, 0] == 0
  assert (rows["loss_mask"][0][seg == seg[0]][:-1] == 1).all()


def test_two_processes_see_the_one_process_global_batches():
  docs = _docs(50, seed=1)
  one = _batches(_corpus(docs), g=4)
  halves = [_batches(_corpus(docs), g=4, process_index=p, process_count=2)
            for p in range(2)]
  for s in range(10):
    whole = one.batch(s)
    parts = [h.batch(s) for h in halves]
    for key in whole:
      np.testing.assert_array_equal(
          whole[key], np.concatenate([p[key] for p in parts]))
  # Without jax.distributed each half reports only its own streams (a
  # multi-process run gathers them); together they are the whole state.
  np.testing.assert_array_equal(
      np.asarray(one.state(10)["streams"]),
      np.concatenate([np.asarray(h.state(10)["streams"]) for h in halves]))


def test_resume_from_state_continues_exactly_on_another_process_count():
  docs = _docs(41, seed=2)
  full = _batches(_corpus(docs))
  ref = [full.batch(s) for s in range(14)]
  first = _batches(_corpus(docs))
  for s in range(6):
    first.batch(s)
  saved = json.loads(json.dumps(first.state(6)))
  assert saved["step"] == 6 and len(saved["streams"]) == 4
  for count in (1, 2):
    parts = [_batches(_corpus(docs), process_index=p, process_count=count,
                      data_state=saved) for p in range(count)]
    for s in range(6, 14):
      got = [p.batch(s) for p in parts]
      np.testing.assert_array_equal(
          np.concatenate([g["inputs"] for g in got]), ref[s]["inputs"])


def test_steps_are_read_in_order_and_state_matches_the_step():
  b = _batches(_corpus(_docs(10)))
  b.batch(0)
  with pytest.raises(ValueError):
    b.batch(2)
  with pytest.raises(ValueError):
    b.state(3)


def test_worker_processes_give_the_same_rows():
  docs = _docs(30, seed=4)
  a = _batches(_corpus(docs))
  b = _batches(_corpus(docs, workers=2, threads=0))
  try:
    for s in range(5):
      np.testing.assert_array_equal(a.batch(s)["inputs"], b.batch(s)["inputs"])
  finally:
    b.close()


def test_no_documents_and_a_wrong_resume_state_are_one_sentence():
  one_sentence(_corpus, [])
  one_sentence(_batches(_corpus(["", ""]), g=1).batch, 0)
  assert "batch_size" in one_sentence(
      _batches, _corpus(["ab"]), data_state={"step": 1, "streams": [[0, 0]]})


def test_eval_batches_are_the_documents_in_order():
  docs = ["abc", "de", "fghij"]
  corpus = _corpus(docs)
  batches = list(streaming.eval_batches(corpus, batch_size=2, seq_len=4,
                                        max_batches=None))
  tokens = [2, 10, 11, 12, 3, 2, 13, 14, 3, 2, 15, 16, 17, 18, 19, 3]
  got = np.concatenate([b["inputs"] for b in batches])
  np.testing.assert_array_equal(got[0], tokens[0:4])
  np.testing.assert_array_equal(got[1], tokens[4:8])
  first = list(streaming.eval_batches(corpus, batch_size=2, seq_len=4,
                                      max_batches=1))
  assert len(first) == 1
  np.testing.assert_array_equal(first[0]["inputs"], batches[0]["inputs"])


# --- lm.data.indexed --------------------------------------------------------


def test_jsonl_index_reads_each_line_and_caches(tmp_path):
  lines = [json.dumps({"text": f"doc {i}", "n": i}) for i in range(20)]
  (tmp_path / "a.jsonl").write_text("\n".join(lines[:12]) + "\n\n")
  (tmp_path / "b.jsonl").write_text("\n".join(lines[12:]))
  src = indexed.open_indexed(f"jsonl:{tmp_path}/*.jsonl")
  cache = str(tmp_path / "cache")
  src.prepare(cache)
  assert len(src) == 20
  assert [src[i] for i in (0, 11, 12, 19)] == ["doc 0", "doc 11", "doc 12",
                                                "doc 19"]
  again = indexed.open_indexed(f"jsonl:{tmp_path}/*.jsonl[50%:]")
  again.prepare(cache)
  assert [again[i] for i in range(len(again))] == [f"doc {i}"
                                                   for i in range(10, 20)]


def test_text_pieces_cut_at_line_starts_and_slices(tmp_path, monkeypatch):
  text = "".join(f"line {i:03d}\n" for i in range(100))   # 9 bytes a line
  (tmp_path / "t.txt").write_text(text)
  src = indexed.open_indexed(f"text:{tmp_path}/t.txt", piece_bytes=40)
  pieces = [src[i] for i in range(len(src))]
  assert "".join(pieces) == text
  assert all(p.endswith("\n") for p in pieces)
  assert all(len(p) >= 40 for p in pieces[:-1])
  monkeypatch.setattr(indexed, "_BLOCK", 7)   # pieces span read blocks
  small = indexed.open_indexed(f"text:{tmp_path}/t.txt", piece_bytes=40)
  assert [small[i] for i in range(len(small))] == pieces
  monkeypatch.undo()
  head = indexed.open_indexed(f"text:{tmp_path}/t.txt[:90%]", piece_bytes=40)
  tail = indexed.open_indexed(f"text:{tmp_path}/t.txt[90%:]", piece_bytes=40)
  assert ("".join(head[i] for i in range(len(head)))
          + "".join(tail[i] for i in range(len(tail)))) == text
  assert len(tail) >= 1


def test_indexed_refusals_are_one_sentence(tmp_path):
  (tmp_path / "a.jsonl.gz").write_bytes(b"x")
  assert "compressed" in one_sentence(indexed.open_indexed,
                                      f"jsonl:{tmp_path}/a.jsonl.gz")
  (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
  src = indexed.open_indexed(f"jsonl:{tmp_path}/b.jsonl")
  assert "data.field" in one_sentence(src.__getitem__, 0)
