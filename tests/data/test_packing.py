"""Tests for lm.data.packing: stream building, caching and row cutting."""

import hashlib
import json
import os
import stat

import numpy as np
import pytest

from lm.data import packing
from lm.data.packing import (TokenStream, build_stream, cached_stream,
                             load_stream, make_rows, save_stream)
from lm.data.sources import ListSource
from lm.data.tokenizer import train_tokenizer
from lm.errors import LmError


class FakeTokenizer:
  """Letters a..z -> ids 10..35; bos=2, eos=3."""

  bos_id, eos_id, pad_id = 2, 3, 0

  def __init__(self, vocab_size=64):
    self.vocab_size = vocab_size
    self.calls = 0

  def encode_batch(self, texts):
    self.calls += 1
    return [[10 + ord(c) - ord("a") for c in t] for t in texts]

  def fingerprint(self):
    return f"fake-{self.vocab_size}"


def _stream(docs):
  """A TokenStream from lists of token ids (each already with bos/eos)."""
  tokens = np.concatenate([np.asarray(d) for d in docs]).astype(np.uint16)
  starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
  return TokenStream(tokens, starts.astype(np.int64))


# --- build_stream -------------------------------------------------------------


def test_build_stream_packs_documents_with_bos_eos():
  src = ListSource("mem:", ["ab", "", "c", "de"], key=[])
  stream = build_stream(src, FakeTokenizer())
  assert stream.tokens.dtype == np.uint16
  assert stream.doc_starts.dtype == np.int64
  assert stream.tokens.tolist() == [2, 10, 11, 3, 2, 12, 3, 2, 13, 14, 3]
  assert stream.doc_starts.tolist() == [0, 4, 7]
  assert len(stream) == 11 and stream.n_docs == 3


def test_build_stream_max_chars_stops_after_reaching_it():
  src = ListSource("mem:", ["ab", "cd", "ef"], key=[])
  stream = build_stream(src, FakeTokenizer(), max_chars=3)
  assert stream.tokens.tolist() == [2, 10, 11, 3, 2, 12, 13, 3]
  stream = build_stream(src, FakeTokenizer(), max_chars=2)
  assert stream.tokens.tolist() == [2, 10, 11, 3]


def test_build_stream_large_vocab_uses_int32():
  src = ListSource("mem:", ["a"], key=[])
  assert build_stream(src, FakeTokenizer(2**16)).tokens.dtype == np.uint16
  assert build_stream(src, FakeTokenizer(2**16 + 1)).tokens.dtype == np.int32


def test_build_stream_chunks_match_one_shot(monkeypatch):
  docs = ["abc"[: 1 + i % 3] * (1 + i % 5) for i in range(50)]
  whole = build_stream(ListSource("mem:", docs, key=[]), FakeTokenizer())
  monkeypatch.setattr(packing, "_CHUNK_DOCS", 7)
  tok = FakeTokenizer()
  chunked = build_stream(ListSource("mem:", docs, key=[]), tok)
  assert tok.calls == 8
  np.testing.assert_array_equal(whole.tokens, chunked.tokens)
  np.testing.assert_array_equal(whole.doc_starts, chunked.doc_starts)


def test_build_stream_with_real_tokenizer_round_trips(tmp_path):
  docs = ["def f(x):\n    return x\n", "", "print('hi')\n\n"]
  tok = train_tokenizer(docs, str(tmp_path / "t.model"), vocab_size=16,
                        model_type="char", byte_fallback=False)
  stream = build_stream(ListSource("mem:", docs, key=[]), tok)
  bounds = list(stream.doc_starts) + [len(stream)]
  texts = [tok.decode(stream.tokens[a:b]) for a, b in zip(bounds, bounds[1:])]
  assert texts == [docs[0], docs[2]]
  assert all(stream.tokens[a] == tok.bos_id for a in bounds[:-1])


def test_build_stream_empty_source():
  with pytest.raises(LmError, match="mem:empty"):
    build_stream(ListSource("mem:empty", ["", ""], key=[]), FakeTokenizer())


# --- save / load / cache ------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
  stream = _stream([[2, 5, 6, 3], [2, 7, 3]])
  path = str(tmp_path / "s")
  save_stream(stream, path)
  assert sorted(os.listdir(tmp_path)) == ["s"]  # no temporary leftovers
  loaded = load_stream(path)
  assert isinstance(loaded.tokens, np.memmap)
  np.testing.assert_array_equal(loaded.tokens, stream.tokens)
  np.testing.assert_array_equal(loaded.doc_starts, stream.doc_starts)
  assert loaded.tokens.dtype == np.uint16
  in_memory = load_stream(path, mmap=False)
  assert not isinstance(in_memory.tokens, np.memmap)
  save_stream(_stream([[2, 9, 3]]), path)  # overwrite
  assert load_stream(path).tokens.tolist() == [2, 9, 3]


def test_load_missing_stream(tmp_path):
  with pytest.raises(LmError, match="tokens.npy"):
    load_stream(str(tmp_path / "nope"))


def test_cached_stream_builds_once(tmp_path, monkeypatch):
  src = ListSource("mem:", ["ab", "c"], key=["v1"])
  tok = FakeTokenizer()
  first = cached_stream(src, tok, str(tmp_path))
  assert tok.calls == 1
  assert isinstance(first.tokens, np.memmap)

  def no_build(*args, **kwargs):
    raise AssertionError("rebuilt a cached stream")
  monkeypatch.setattr(packing, "build_stream", no_build)
  again = cached_stream(src, tok, str(tmp_path))
  np.testing.assert_array_equal(again.tokens, first.tokens)
  monkeypatch.undo()
  # A different max_chars, tokenizer or source gets its own entry.
  cached_stream(src, tok, str(tmp_path), max_chars=1)
  cached_stream(src, FakeTokenizer(100), str(tmp_path))
  cached_stream(ListSource("mem:", ["ab", "c"], key=["v2"]), tok,
                str(tmp_path))
  assert len(os.listdir(tmp_path)) == 4


def _flip_byte(file, offset=None):
  """Flips every bit of one byte of `file` (by default the last one, which
  is in the array data, after the .npy header)."""
  data = bytearray(file.read_bytes())
  offset = len(data) - 1 if offset is None else offset
  data[offset] ^= 0xFF
  file.write_bytes(bytes(data))


def test_save_arrays_writes_checksums(tmp_path):
  stream = _stream([[2, 5, 6, 3], [2, 7, 3]])
  save_stream(stream, str(tmp_path / "s"))
  assert sorted(os.listdir(tmp_path / "s")) == [
      "checksums.json", "doc_starts.npy", "tokens.npy"]
  files = json.loads((tmp_path / "s" / "checksums.json").read_text())["files"]
  tokens = tmp_path / "s" / "tokens.npy"
  assert files["tokens.npy"] == {
      "sha256": hashlib.sha256(tokens.read_bytes()).hexdigest(),
      "shape": [7], "dtype": "<u2"}
  assert files["doc_starts.npy"]["shape"] == [2]
  assert files["doc_starts.npy"]["dtype"] == "<i8"


@pytest.mark.parametrize("mmap", [True, False])
def test_load_stream_refuses_a_flipped_byte(tmp_path, mmap):
  path = tmp_path / "stream-x"
  save_stream(_stream([[2, 5, 6, 3], [2, 7, 3]]), str(path))
  _flip_byte(path / "tokens.npy")
  with pytest.raises(LmError) as e:
    load_stream(str(path), mmap=mmap)
  msg = str(e.value)
  assert f"Token stream {path} has a tokens.npy that does not match" in msg
  assert "delete the directory" in msg and "rebuilt" in msg
  assert "\n" not in msg


def test_load_stream_refuses_missing_checksums_and_files(tmp_path):
  path = tmp_path / "s"
  save_stream(_stream([[2, 5, 3]]), str(path))
  (path / "checksums.json").write_text("{not json")
  with pytest.raises(LmError, match=f"{path} has an unreadable checksums.json;"
                     " delete the directory"):
    load_stream(str(path))
  os.remove(path / "checksums.json")
  with pytest.raises(LmError, match=f"{path} has no checksums.json .*; delete "
                     "the directory"):
    load_stream(str(path))
  save_stream(_stream([[2, 5, 3]]), str(path))
  os.remove(path / "doc_starts.npy")
  with pytest.raises(LmError, match=f"{path} is missing doc_starts.npy; "
                     "delete the directory"):
    load_stream(str(path))


def test_load_stream_refuses_a_changed_shape(tmp_path):
  # A file replaced by another valid .npy (here: the same bytes under a
  # checksums.json edited to match) with a different shape is refused too.
  path = tmp_path / "s"
  save_stream(_stream([[2, 5, 3]]), str(path))
  table = json.loads((path / "checksums.json").read_text())
  table["files"]["tokens.npy"]["shape"] = [4]
  (path / "checksums.json").write_text(json.dumps(table))
  with pytest.raises(LmError, match=r"tokens.npy of shape \[3\] and dtype "
                     r"<u2, not the \[4\] and <u2"):
    load_stream(str(path))


def test_cached_stream_refuses_a_flipped_byte_and_does_not_rebuild(
    tmp_path, monkeypatch):
  src = ListSource("mem:", ["ab", "c"], key=["v1"])
  tok = FakeTokenizer()
  cached_stream(src, tok, str(tmp_path))
  (entry,) = os.listdir(tmp_path)
  _flip_byte(tmp_path / entry / "tokens.npy")

  def no_build(*args, **kwargs):
    raise AssertionError("rebuilt a damaged cache entry")
  monkeypatch.setattr(packing, "build_stream", no_build)
  with pytest.raises(LmError, match=f"{tmp_path / entry} has a tokens.npy "
                     "that does not match its sha256"):
    cached_stream(src, tok, str(tmp_path))


def test_cached_stream_refuses_ids_outside_the_vocabulary(tmp_path):
  src = ListSource("mem:", ["ab"], key=["v1"])
  tok = FakeTokenizer(vocab_size=64)
  path = packing.stream_cache_path(src, tok, str(tmp_path))
  save_stream(_stream([[2, 10, 64, 3]]), path)  # 64 is not an id of `tok`
  with pytest.raises(LmError, match=f"{path} holds token id 64, outside the "
                     "tokenizer's vocabulary of 64 ids"):
    cached_stream(src, tok, str(tmp_path))
  save_stream(_stream([[2, 10, 63, 3]]), path)
  assert cached_stream(src, tok, str(tmp_path)).tokens.tolist() == [
      2, 10, 63, 3]
  with pytest.raises(LmError, match="holds token id 63"):
    load_stream(path, vocab_size=63)


def test_cached_arrays_refuses_a_flipped_byte(tmp_path):
  build = lambda: {"tokens": np.arange(100, dtype=np.int32),
                   "label": np.zeros(100, np.int32)}
  first = packing.cached_arrays(("k",), build, str(tmp_path), "rows",
                                vocab_size=100)
  assert sorted(first) == ["label", "tokens"]
  with pytest.raises(LmError, match="holds token id 99, outside"):
    packing.cached_arrays(("k",), build, str(tmp_path), "rows", vocab_size=99)
  (entry,) = os.listdir(tmp_path)
  _flip_byte(tmp_path / entry / "label.npy")
  with pytest.raises(LmError, match=f"Cached arrays {tmp_path / entry} has a "
                     "label.npy that does not match its sha256"):
    packing.cached_arrays(("k",), build, str(tmp_path), "rows")


def test_cached_arrays_keeps_an_entry_another_process_wrote_meanwhile(
    tmp_path):
  # Two processes sharing a cache both miss the entry and build it; the
  # second to finish must not remove the first one's entry, which the first
  # process may already be reading.
  arrays = {"tokens": np.arange(10, dtype=np.int32)}
  seen = {}

  def build():  # the other process finishes first and starts reading
    packing.save_arrays(os.path.join(tmp_path, entry_name()), arrays)
    seen["entry"] = os.path.join(tmp_path, entry_name())
    seen["inode"] = os.stat(seen["entry"]).st_ino
    seen["reader"] = open(os.path.join(seen["entry"], "tokens.npy"), "rb")
    return arrays

  def entry_name():
    digest = hashlib.sha256(repr(["k"]).encode()).hexdigest()[:16]
    return f"rows-{digest}"

  out = packing.cached_arrays(("k",), build, str(tmp_path), "rows")
  np.testing.assert_array_equal(out["tokens"], arrays["tokens"])
  assert os.stat(seen["entry"]).st_ino == seen["inode"]
  seen["reader"].close()
  assert os.listdir(tmp_path) == [entry_name()]  # no temporary left behind


def test_save_arrays_modes_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    save_stream(_stream([[2, 5, 3]]), str(tmp_path / "s"))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o755
  for name in os.listdir(tmp_path / "s"):
    assert stat.S_IMODE(os.stat(tmp_path / "s" / name).st_mode) == 0o644, name


# --- make_rows ----------------------------------------------------------------


def test_make_rows_docstring_example():
  stream = _stream([[2, 5, 6, 3], [2, 7, 3]])
  rows = make_rows(stream, np.array([0, 3]), 4)
  expected = {
      "inputs": [[2, 5, 6, 3], [3, 2, 7, 3]],
      "targets": [[5, 6, 3, 2], [2, 7, 3, 0]],
      "segment_ids": [[1, 1, 1, 1], [1, 2, 2, 2]],
      "positions": [[0, 1, 2, 3], [0, 0, 1, 2]],
      "loss_mask": [[1, 1, 1, 0], [0, 1, 1, 0]],
  }
  for key, want in expected.items():
    np.testing.assert_array_equal(rows[key], np.array(want), err_msg=key)
  assert rows["loss_mask"].dtype == np.float32
  for key in ("inputs", "targets", "segment_ids", "positions"):
    assert rows[key].dtype == np.int32 and rows[key].shape == (2, 4)


def test_make_rows_mid_document_start_and_three_segments():
  stream = _stream([[2, 5, 6, 7, 3], [2, 3], [2, 8, 9, 3]])
  rows = make_rows(stream, np.array([2]), 7)
  # window: tokens[2:10] = [6, 7, 3, 2, 3, 2, 8, 9]
  np.testing.assert_array_equal(rows["inputs"], [[6, 7, 3, 2, 3, 2, 8]])
  np.testing.assert_array_equal(rows["targets"], [[7, 3, 2, 3, 2, 8, 9]])
  np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 2, 2, 3, 3]])
  np.testing.assert_array_equal(rows["positions"], [[0, 1, 2, 0, 1, 0, 1]])
  np.testing.assert_array_equal(rows["loss_mask"], [[1, 1, 0, 1, 0, 1, 1]])


def test_make_rows_pads_past_the_end():
  stream = _stream([[2, 5, 6, 3], [2, 7, 3]])
  rows = make_rows(stream, np.array([5, 7, 100]), 4)
  np.testing.assert_array_equal(rows["inputs"],
                                [[7, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows["targets"],
                                [[3, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows["segment_ids"],
                                [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows["positions"],
                                [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows["loss_mask"],
                                [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def _reference_row(tokens, doc_of, start, seq_len):
  """Slow per-token reference for one row of make_rows."""
  n = len(tokens)
  tok = lambda i: int(tokens[i]) if i < n else 0
  doc = lambda i: int(doc_of[i]) if i < n else -1
  row = {k: [] for k in ("inputs", "targets", "segment_ids", "positions",
                         "loss_mask")}
  seg, pos = 0, 0
  for t in range(seq_len):
    i = start + t
    row["inputs"].append(tok(i))
    row["targets"].append(tok(i + 1))
    if i >= n:
      row["segment_ids"].append(0)
      row["positions"].append(0)
      row["loss_mask"].append(0.0)
      continue
    if t == 0 or doc(i) != doc(i - 1):
      seg, pos = seg + 1, 0
    row["segment_ids"].append(seg)
    row["positions"].append(pos)
    pos += 1
    row["loss_mask"].append(float(i + 1 < n and doc(i + 1) == doc(i)))
  return row


def test_make_rows_matches_reference_on_random_streams():
  rng = np.random.default_rng(0)
  docs = [[2] + rng.integers(4, 50, rng.integers(0, 12)).tolist() + [3]
          for _ in range(40)]
  stream = _stream(docs)
  doc_of = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
  for seq_len in (1, 5, 16):
    starts = rng.integers(0, len(stream) + 3, size=30)
    rows = make_rows(stream, starts, seq_len)
    for r, start in enumerate(starts):
      want = _reference_row(stream.tokens, doc_of, int(start), seq_len)
      for key, value in want.items():
        np.testing.assert_array_equal(rows[key][r], value,
                                      err_msg=f"{key} start={start}")
