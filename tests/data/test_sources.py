"""Tests for lm.data.sources: every URI scheme, slices and error messages."""

import json
import os
import socket
import sysconfig
import time

import pytest
import tensorflow_datasets as tfds

from lm.data import sources, tfds_source
from lm.data.sources import open_source
from lm.errors import LmError
from tests.data.files import one_sentence


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


# --- pystdlib -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stdlib_splits():
  return open_source("pystdlib:train"), open_source("pystdlib:validation")


def test_pystdlib_splits_are_disjoint_and_cover_stdlib(stdlib_splits):
  train, val = stdlib_splits
  assert set(train.paths).isdisjoint(val.paths)
  assert train.paths == sorted(train.paths) and val.paths == sorted(val.paths)
  assert len(train) > 300 and 5 <= len(val) < 0.12 * len(train)
  root = sysconfig.get_paths()["stdlib"]
  assert os.path.join(root, "os.py") in set(train.paths) | set(val.paths)


def test_pystdlib_excludes_tests_and_site_packages(stdlib_splits):
  root = sysconfig.get_paths()["stdlib"]
  for path in stdlib_splits[0].paths + stdlib_splits[1].paths:
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    assert rel.endswith(".py")
    assert not parts[-1].startswith("test_"), rel
    assert not {"test", "tests", "idle_test", "site-packages",
                "dist-packages"} & set(parts[:-1]), rel


def test_pystdlib_is_deterministic_and_defaults_to_train(stdlib_splits):
  train, val = stdlib_splits
  again = open_source("pystdlib")
  assert again.uri == "pystdlib:train"
  assert again.paths == train.paths
  assert again.fingerprint() == train.fingerprint() != val.fingerprint()
  doc = val[0]
  assert isinstance(doc, str) and doc == val[-len(val)]
  assert "import" in "".join(val[i] for i in range(min(5, len(val))))


def test_pystdlib_bad_split():
  with pytest.raises(LmError, match="pystdlib:validation"):
    open_source("pystdlib:test")


# --- text ---------------------------------------------------------------------


def test_text_glob_sorted_one_document_per_file(tmp_path):
  _write(tmp_path / "b.txt", "bee")
  _write(tmp_path / "a.txt", "ay\nay")
  _write(tmp_path / "sub" / "c.txt", "see")
  src = open_source(f"text:{tmp_path}/*.txt")
  assert list(src) == ["ay\nay", "bee"]
  assert len(src) == 2 and src[1] == "bee" and src[-1] == "bee"
  with pytest.raises(IndexError):
    src[2]
  assert list(open_source(f"text:{tmp_path}/**/*.txt")) == [
      "ay\nay", "bee", "see"]


def test_text_slices_split_each_file_in_order(tmp_path):
  text = "".join(chr(ord("a") + i % 26) for i in range(1001))
  _write(tmp_path / "input.txt", text)
  _write(tmp_path / "other.txt", "0123456789")
  head = open_source(f"text:{tmp_path}/input.txt[:90%]")
  tail = open_source(f"text:{tmp_path}/input.txt[90%:]")
  assert head[0] == text[:900] and tail[0] == text[900:]
  both = open_source(f"text:{tmp_path}/*.txt[20%:50%]")
  assert list(both) == [text[200:500], "234"]
  assert head.fingerprint() != tail.fingerprint()


def test_text_keeps_exact_bytes_and_replaces_bad_utf8(tmp_path):
  (tmp_path / "crlf.txt").write_bytes(b"a\r\nb\r\n\xff\xfe end")
  doc = open_source(f"text:{tmp_path}/crlf.txt")[0]
  assert doc == "a\r\nb\r\n\ufffd\ufffd end"


def _warnings(err):
  return [l for l in err.splitlines() if l.startswith("warning:")]


def test_text_latin1_file_warns_once_with_the_byte_count(tmp_path, capfd):
  path = tmp_path / "latin1.txt"
  path.write_bytes("naïve café résumé\n".encode("latin-1") + b"ok \xe2\x82")
  train = open_source(f"text:{path}[:50%]")
  evals = open_source(f"text:{path}[50%:]")
  for _ in range(3):  # tokenizer training, tokenization, another pass
    docs = list(train) + list(evals)
  assert "".join(docs).count("\ufffd") == 5
  lines = _warnings(capfd.readouterr().err)
  # Four 1-byte errors and one truncated 2-byte sequence: 6 bytes.
  assert lines == [f"warning: {path} is not valid UTF-8 (6 undecodable "
                   "bytes); they are read as U+FFFD replacement characters "
                   "(re-save the file as UTF-8 to keep that text)."]


def test_valid_utf8_gives_no_warning(tmp_path, capfd):
  _write(tmp_path / "ok.txt", "naïve café ✓\n")
  assert open_source(f"text:{tmp_path}/ok.txt")[0] == "naïve café ✓\n"
  assert not _warnings(capfd.readouterr().err)


def test_text_binary_file_is_refused_when_opened(tmp_path):
  _write(tmp_path / "a.txt", "text")
  (tmp_path / "b.bin").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
  with pytest.raises(LmError) as e:
    open_source(f"text:{tmp_path}/*")
  assert str(e.value) == (
      f"{tmp_path}/b.bin is a binary file, not text (it has a NUL byte at "
      "offset 4); leave it out of the data URI, or re-save it as UTF-8 text "
      "if it is UTF-16.")
  (tmp_path / "c.txt").write_bytes("utf-16 text".encode("utf-16"))
  with pytest.raises(LmError, match="c.txt is a binary file"):
    open_source(f"text:{tmp_path}/*.txt")
  # A NUL byte past the first 8 KiB is text (with one odd character).
  (tmp_path / "c.txt").write_bytes(b"x" * 8192 + b"\x00")
  assert len(open_source(f"text:{tmp_path}/*.txt")[1]) == 8193


def test_text_bracket_glob_is_not_a_slice(tmp_path):
  _write(tmp_path / "a.txt", "A")
  _write(tmp_path / "b.txt", "B")
  _write(tmp_path / "c.txt", "C")
  assert list(open_source(f"text:{tmp_path}/[ab].txt")) == ["A", "B"]


def test_text_bad_slice(tmp_path):
  _write(tmp_path / "a.txt", "A")
  with pytest.raises(LmError, match="Bad slice"):
    open_source(f"text:{tmp_path}/a.txt[90%:10%]")


def test_text_empty_glob_names_the_glob(tmp_path):
  pattern = f"{tmp_path}/nothing*.txt"
  with pytest.raises(LmError, match="nothing\\*.txt"):
    open_source(f"text:{pattern}")


def test_text_empty_files(tmp_path):
  _write(tmp_path / "a.txt", "")
  _write(tmp_path / "b.txt", "x")
  assert list(open_source(f"text:{tmp_path}/*.txt")) == ["", "x"]
  with pytest.raises(LmError, match="empty"):
    open_source(f"text:{tmp_path}/a.txt")


def test_text_fingerprint_tracks_file_changes(tmp_path):
  path = _write(tmp_path / "a.txt", "one")
  before = open_source(f"text:{path}").fingerprint()
  assert open_source(f"text:{path}").fingerprint() == before
  path.write_text("three", encoding="utf-8")
  os.utime(path, ns=(1, 2))
  assert open_source(f"text:{path}").fingerprint() != before


# --- jsonl --------------------------------------------------------------------


def _write_jsonl(path, rows):
  return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_documents_and_slices(tmp_path):
  _write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc{i}", "id": i}
                                      for i in range(6)])
  _write_jsonl(tmp_path / "b.jsonl", [{"text": "last", "body": "B"}])
  (tmp_path / "b.jsonl").write_text(
      (tmp_path / "b.jsonl").read_text() + "\n\n", encoding="utf-8")
  src = open_source(f"jsonl:{tmp_path}/*.jsonl")
  assert list(src) == [f"doc{i}" for i in range(6)] + ["last"]
  head = open_source(f"jsonl:{tmp_path}/a.jsonl[:50%]")
  tail = open_source(f"jsonl:{tmp_path}/a.jsonl[50%:]")
  assert list(head) == ["doc0", "doc1", "doc2"]
  assert list(tail) == ["doc3", "doc4", "doc5"]
  assert head.fingerprint() != tail.fingerprint()
  assert list(open_source(f"jsonl:{tmp_path}/b.jsonl", field="body")) == ["B"]


def test_jsonl_missing_field_names_file_line_and_field(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"body": "no"}])
  with pytest.raises(LmError) as e:
    open_source(f"jsonl:{path}")
  msg = str(e.value)
  assert str(path) in msg and "line 2" in msg and "'text'" in msg
  assert "--config.data.field" in msg


def test_jsonl_bad_json_and_non_string(tmp_path):
  bad = _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": \n')
  with pytest.raises(LmError, match="line 2 is not valid JSON"):
    open_source(f"jsonl:{bad}")
  num = _write_jsonl(tmp_path / "num.jsonl", [{"text": 3}])
  with pytest.raises(LmError, match="not a string"):
    open_source(f"jsonl:{num}")


def test_jsonl_bad_utf8_warns_once_and_binary_is_refused(tmp_path, capfd):
  path = tmp_path / "a.jsonl"
  path.write_bytes(b'{"text": "caf\xe9"}\n{"text": "ok"}\n')
  src = open_source(f"jsonl:{path}")
  assert list(src) == ["caf\ufffd", "ok"]
  open_source(f"jsonl:{path}")
  assert _warnings(capfd.readouterr().err) == [
      f"warning: {path} is not valid UTF-8 (1 undecodable byte); they are "
      "read as U+FFFD replacement characters (re-save the file as UTF-8 to "
      "keep that text)."]
  path.write_bytes(b'{"text": "a"}\n\x00\x00')
  with pytest.raises(LmError, match=f"{path} is a binary file, not text"):
    open_source(f"jsonl:{path}")


def test_jsonl_empty_glob(tmp_path):
  with pytest.raises(LmError, match="No files match"):
    open_source(f"jsonl:{tmp_path}/*.jsonl")


# --- unknown scheme -----------------------------------------------------------


@pytest.mark.parametrize("uri", ["csv:data.csv", "data/input.txt", "parquet:x"])
def test_unknown_scheme_lists_supported_ones(uri):
  with pytest.raises(LmError) as e:
    open_source(uri)
  for scheme in ("pystdlib", "text:", "jsonl:", "tfds:"):
    assert scheme in str(e.value)


# --- tfds ---------------------------------------------------------------------


def test_tfds_mock_imdb_reviews():
  with tfds.testing.mock_data(num_examples=7):
    src = open_source("tfds:imdb_reviews:train[:90%]")
    assert len(src) == 7
    docs = list(src)
    assert all(isinstance(d, str) and d for d in docs)
    assert src.uri == "tfds:imdb_reviews:train[:90%]"
    fp = src.fingerprint()
    assert fp == open_source("tfds:imdb_reviews:train[:90%]").fingerprint()
    assert fp != open_source("tfds:imdb_reviews:test").fingerprint()


def test_tfds_mock_lm1b_default_split():
  with tfds.testing.mock_data(num_examples=3):
    src = open_source("tfds:lm1b")
    assert src.uri == "tfds:lm1b:train"
    assert len(src) == 3 and all(isinstance(d, str) for d in src)


def test_tfds_decodes_bytes():
  src = tfds_source.TfdsSource("tfds:x:train", [{"text": "é".encode()}], "text",
                           key=[])
  assert src[0] == "é"


def test_tfds_missing_field_lists_features():
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(LmError) as e:
      open_source("tfds:imdb_reviews", field="review")
  msg = str(e.value)
  assert "'review'" in msg and "'label'" in msg and "'text'" in msg


def test_tfds_unknown_dataset():
  with pytest.raises(LmError) as e:
    open_source("tfds:no_such_dataset_xyz:train")
  msg = str(e.value)
  assert "'no_such_dataset_xyz' does not exist" in msg
  assert "tfds.list_builders()" in msg
  assert "\n" not in msg


def test_tfds_download_failure_is_one_clear_sentence(monkeypatch, tmp_path):
  def fail(*args, **kwargs):
    raise ConnectionError("Failed to resolve 'storage.googleapis.com'\n"
                          "(many more lines of traceback text)")
  monkeypatch.setattr(tfds, "data_source", fail)
  monkeypatch.setattr(tfds_source, "network_reachable", lambda: True)
  with pytest.raises(LmError) as e:
    open_source("tfds:tiny_shakespeare", data_dir=str(tmp_path))
  msg = str(e.value)
  assert "could not be downloaded or prepared" in msg
  assert "Failed to resolve 'storage.googleapis.com'" in msg
  assert "many more lines" not in msg and "\n" not in msg
  assert "tfds build tiny_shakespeare --file_format=array_record" in msg
  assert "data_dir" in msg


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_tfds_not_prepared_offline_fails_in_seconds(monkeypatch, tmp_path):
  monkeypatch.setenv("LM_NETWORK_PROBE", f"127.0.0.1:{_closed_port()}")
  assert not tfds_source.network_reachable()
  start = time.monotonic()
  msg = one_sentence(open_source, "tfds:tiny_shakespeare",
                     data_dir=str(tmp_path))
  assert time.monotonic() - start < 30
  assert "not prepared in" in msg and str(tmp_path) in msg
  assert "--config.data.data_dir" in msg
  assert "tfds build tiny_shakespeare --file_format=array_record" in msg
  monkeypatch.setattr(tfds_source, "data_dir_flag", "--data_dir")
  assert "with --data_dir." in one_sentence(
      open_source, "tfds:tiny_shakespeare", data_dir=str(tmp_path))


def test_tfds_error_mapping_for_bad_config():
  exc = ValueError('Failed to construct dataset "imdb_reviews": BuilderConfig '
                   "nope not found.\nHere are 10 BuilderConfigs ...")
  msg = str(tfds_source.tfds_error("imdb_reviews/nope", "train", exc))
  assert "imdb_reviews/nope" in msg and "BuilderConfig nope not found" in msg
  assert "\n" not in msg


def test_tfds_error_mapping_for_bad_split_and_wrong_format():
  exc = ValueError('Unknown split "nope". Should be one of [\'train\'].')
  msg = str(tfds_source.tfds_error("imdb_reviews", "nope", exc))
  assert msg.startswith("Could not open TFDS dataset 'imdb_reviews' split")
  exc = NotImplementedError("Random access data source for file format "
                            "tfrecord is not supported.\n\t* details")
  msg = str(tfds_source.tfds_error("lm1b", "train", exc))
  assert "could not be downloaded or prepared" in msg and "tfrecord" in msg
  assert "--file_format=array_record" in msg and "\n" not in msg


def test_tfds_passes_data_dir(monkeypatch, tmp_path):
  seen = {}

  def fake(name, split, data_dir, download=True):
    seen.update(name=name, split=split, data_dir=data_dir)
    assert not download   # a prepared dataset never downloads
    return [{"text": b"hello", "label": 0}]
  monkeypatch.setattr(tfds, "data_source", fake)
  src = open_source("tfds:imdb_reviews/plain_text:test[10%:]",
                    data_dir=str(tmp_path))
  assert seen == {"name": "imdb_reviews/plain_text", "split": "test[10%:]",
                  "data_dir": str(tmp_path)}
  assert list(src) == ["hello"]
