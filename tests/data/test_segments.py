"""Tests for lm.data.segments: splitting, segment streams and their cache."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm.data import segments
from lm.data.segments import (build_segment_stream, cached_segment_stream,
                              split_documents, split_segments,
                              stream_from_segments)
from lm.data.sources import ListSource, open_source
from lm.data.tokenizer import train_tokenizer
from lm.errors import LmError


class FakeTokenizer:
  """Letters a..z -> ids 10..35, "\\n" -> 4, anything else -> 5."""

  def __init__(self, vocab_size=64):
    self.vocab_size = vocab_size
    self.calls = 0

  def encode_batch(self, texts):
    self.calls += 1
    return [[10 + ord(c) - 97 if c.isalpha() else 4 if c == "\n" else 5
             for c in t] for t in texts]

  def fingerprint(self):
    return f"fake-{self.vocab_size}"


CORPUS = ("The cat sat. It was happy!\nThe end?\n\n"
          "  \t \n"
          "Second document here.\nIt has two lines.\n\n\n"
          "Third.\n")


def test_split_documents():
  assert split_documents("a\nb\n\n  \nc\n", "blank_lines") == ["a\nb\n", "c\n"]
  assert split_documents("a\nb\n\n  \nc\n", "source") == ["a\nb\n\n  \nc\n"]
  assert split_documents("\n\n a\n\n", "blank_lines") == [" a\n"]
  assert split_documents("x\r\n\r\ny", "blank_lines") == ["x\r\n", "y"]
  assert split_documents("", "source") == []
  assert split_documents(" \n\n", "blank_lines") == []
  assert len(split_documents(CORPUS, "blank_lines")) == 3


def test_split_segments():
  assert split_segments("Hi there. How are\nyou?  Fine!\n", "sentences") == [
      "Hi there.", "How are you?", "Fine!"]
  assert split_segments("x = 1\n\n  y = 2\n", "lines") == ["x = 1\n",
                                                           "  y = 2\n"]
  assert split_segments("a\n  \nb", "lines") == ["a\n", "b"]
  assert split_segments("v1.2 is out.Next", "sentences") == [
      "v1.2 is out.Next"]
  assert split_segments("  \n", "sentences") == []


def test_bad_modes_name_the_config_key():
  with pytest.raises(LmError, match=r"config\.mlm\.documents"):
    split_documents("a", "paragraphs")
  with pytest.raises(LmError, match=r"config\.mlm\.segments"):
    split_segments("a", "words")
  src = ListSource("mem:", ["a"], key=[])
  with pytest.raises(LmError, match=r"config\.mlm\.segments"):
    build_segment_stream(src, FakeTokenizer(), documents="source",
                         segments="tokens")


def _check_offsets(stream):
  s, d = stream.seg_starts, stream.doc_starts
  assert s.dtype == np.int64 and d.dtype == np.int64
  assert s[0] == 0 and s[-1] == len(stream)
  assert d[0] == 0 and d[-1] == stream.n_segments
  assert (np.diff(s) > 0).all() and (np.diff(d) > 0).all()


def test_build_segment_stream_small_example():
  src = ListSource("mem:", ["ab\ncd\n\n\ne\n", "", "\n\n", "f"], key=[])
  stream = build_segment_stream(src, FakeTokenizer(), documents="blank_lines",
                                segments="lines")
  assert stream.tokens.dtype == np.uint16
  assert stream.tokens.tolist() == [10, 11, 4, 12, 13, 4, 14, 4, 15]
  assert stream.seg_starts.tolist() == [0, 3, 6, 8, 9]
  assert stream.doc_starts.tolist() == [0, 2, 3, 4]
  assert (stream.n_docs, stream.n_segments, len(stream)) == (3, 4, 9)
  assert stream.segment(1).tolist() == [12, 13, 4]
  _check_offsets(stream)


def test_build_drops_segments_that_encode_to_nothing():
  class Dropper(FakeTokenizer):
    def encode_batch(self, texts):
      return [[] if t.startswith("x") else [10] for t in texts]
  src = ListSource("mem:", ["x\ny\n", "x\n", "z"], key=[])
  stream = build_segment_stream(src, Dropper(), documents="source",
                                segments="lines")
  assert stream.seg_starts.tolist() == [0, 1, 2]
  assert stream.doc_starts.tolist() == [0, 1, 2]
  with pytest.raises(LmError, match="no non-empty segments"):
    build_segment_stream(ListSource("mem:", ["x"], key=[]), Dropper(),
                         documents="source", segments="lines")


def test_build_in_batches_matches_one_shot(monkeypatch):
  docs = ["ab\ncd\n\nef. gh\n"[: 3 + i % 9] * (1 + i % 4) for i in range(60)]
  src = ListSource("mem:", docs, key=[])
  whole = build_segment_stream(src, FakeTokenizer(), documents="blank_lines",
                               segments="sentences")
  monkeypatch.setattr(segments, "_CHUNK_SEGMENTS", 5)
  tok = FakeTokenizer()
  parts = build_segment_stream(src, tok, documents="blank_lines",
                               segments="sentences")
  assert tok.calls > 5
  for name in ("tokens", "seg_starts", "doc_starts"):
    np.testing.assert_array_equal(getattr(whole, name), getattr(parts, name))


def test_max_chars_stops_after_reaching_it():
  src = ListSource("mem:", ["ab", "cd", "ef"], key=[])
  kw = dict(documents="source", segments="lines")
  assert build_segment_stream(src, FakeTokenizer(), max_chars=3,
                              **kw).n_docs == 2
  assert build_segment_stream(src, FakeTokenizer(), max_chars=2,
                              **kw).n_docs == 1


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "tok.model"
  src = open_source("pystdlib:validation")
  return train_tokenizer(src, str(path), vocab_size=400, max_chars=100_000,
                         bert_specials=True)


def test_text_files_with_blank_line_documents(tmp_path, tok):
  path = tmp_path / "corpus.txt"
  path.write_text(CORPUS, encoding="utf-8")
  src = open_source(f"text:{path}")
  stream = build_segment_stream(src, tok, documents="blank_lines",
                                segments="sentences")
  _check_offsets(stream)
  texts = [tok.decode(stream.segment(i).tolist())
           for i in range(stream.n_segments)]
  assert texts == ["The cat sat.", "It was happy!", "The end?",
                   "Second document here.", "It has two lines.", "Third."]
  assert stream.doc_starts.tolist() == [0, 3, 5, 6]
  lines = build_segment_stream(src, tok, documents="blank_lines",
                               segments="lines")
  assert [tok.decode(lines.segment(i).tolist())
          for i in range(lines.n_segments)] == [
              "The cat sat. It was happy!\n", "The end?\n",
              "Second document here.\n", "It has two lines.\n", "Third.\n"]


def test_pystdlib_lines_round_trip(tok):
  src = open_source("pystdlib:validation")
  stream = build_segment_stream(src, tok, documents="source",
                                segments="lines", max_chars=30_000)
  _check_offsets(stream)
  n_docs = 0
  total = 0
  for doc in src:
    n_docs += 1
    total += len(doc)
    if total >= 30_000:
      break
  assert stream.n_docs == n_docs
  first = src[0]
  d0 = range(stream.doc_starts[0], stream.doc_starts[1])
  decoded = "".join(tok.decode(stream.segment(i).tolist()) for i in d0)
  assert decoded == "".join(split_segments(first, "lines"))


def test_tfds_source():
  with tfds.testing.mock_data(num_examples=6):
    src = open_source("tfds:imdb_reviews:train")
    stream = build_segment_stream(src, FakeTokenizer(), documents="source",
                                  segments="lines")
  assert stream.n_docs == 6 and stream.n_segments == 6
  _check_offsets(stream)


def test_cache_is_reused_and_memory_mapped(tmp_path, monkeypatch):
  src = ListSource("mem:", ["ab\ncd\n\ne\n", "f. g."], key=["v1"])
  kw = dict(documents="blank_lines", segments="lines")
  first = cached_segment_stream(src, FakeTokenizer(), str(tmp_path), **kw)
  assert isinstance(first.tokens, np.memmap)
  entries = os.listdir(tmp_path)
  assert len(entries) == 1 and entries[0].startswith("segments-")

  def no_build(*args, **kwargs):
    raise AssertionError("rebuilt instead of reusing the cache")
  monkeypatch.setattr(segments, "build_segment_stream", no_build)
  again = cached_segment_stream(src, FakeTokenizer(), str(tmp_path), **kw)
  for name in ("tokens", "seg_starts", "doc_starts"):
    np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
  monkeypatch.undo()
  # Any change of options, tokenizer or corpus gets its own entry.
  cached_segment_stream(src, FakeTokenizer(), str(tmp_path),
                        documents="source", segments="lines")
  cached_segment_stream(src, FakeTokenizer(), str(tmp_path), max_chars=3, **kw)
  cached_segment_stream(src, FakeTokenizer(100), str(tmp_path), **kw)
  cached_segment_stream(ListSource("mem:", ["x"], key=["v2"]),
                        FakeTokenizer(), str(tmp_path), **kw)
  assert len(os.listdir(tmp_path)) == 5
  assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]


def test_broken_cache_entry_is_an_lm_error(tmp_path):
  src = ListSource("mem:", ["ab"], key=[])
  kw = dict(documents="source", segments="lines")
  cached_segment_stream(src, FakeTokenizer(), str(tmp_path), **kw)
  entry = tmp_path / os.listdir(tmp_path)[0]
  os.remove(entry / "seg_starts.npy")
  with pytest.raises(LmError, match="delete the directory"):
    cached_segment_stream(src, FakeTokenizer(), str(tmp_path), **kw)


def test_damaged_or_foreign_cache_entry_is_refused_not_rebuilt(tmp_path):
  src = ListSource("mem:", ["ab\ncd\n"], key=[])
  kw = dict(documents="source", segments="lines")
  tok = FakeTokenizer()
  cached_segment_stream(src, tok, str(tmp_path), **kw)
  (entry,) = os.listdir(tmp_path)
  file = tmp_path / entry / "seg_starts.npy"
  data = bytearray(file.read_bytes())
  data[-3] ^= 0x01
  file.write_bytes(bytes(data))
  with pytest.raises(LmError, match=f"Segment stream {tmp_path / entry} has a "
                     "seg_starts.npy that does not match its sha256"):
    cached_segment_stream(src, tok, str(tmp_path), **kw)
  assert tok.calls == 1  # refused, not silently rebuilt
  # Ids at or past the tokenizer's vocabulary (another tokenizer's stream).
  segments.save_segment_stream(stream_from_segments([[[10, 70]]]),
                               str(tmp_path / entry))
  with pytest.raises(LmError, match="holds token id 70, outside the "
                     "tokenizer's vocabulary of 64 ids"):
    cached_segment_stream(src, tok, str(tmp_path), **kw)


def test_stream_from_segments():
  s = stream_from_segments([[[10, 11], [12]], [], [[13], []]])
  assert s.tokens.tolist() == [10, 11, 12, 13]
  assert s.seg_starts.tolist() == [0, 2, 3, 4]
  assert s.doc_starts.tolist() == [0, 2, 3]
