"""`arrayrecord:` corpora (lm.data.array_records): text and JSON records
read by index, sliced, streamed, and refused in one sentence."""

import json

import numpy as np
from array_record.python import array_record_module

from configs import quickstart
from lm.data import streaming
from lm.objectives import open_documents
from tests.data.files import one_sentence


def _write(path, records):
  w = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for r in records:
    w.write(r)
  w.close()
  return path


def _config(**data):
  c = quickstart.get_config()
  c.data.update(data)
  return c


def test_text_and_json_records_by_index_and_slice(tmp_path):
  texts = [f"document {i} " + "x" * i for i in range(10)]
  _write(tmp_path / "a.array_record", [t.encode() for t in texts[:6]])
  _write(tmp_path / "b.array_record", [t.encode() for t in texts[6:]])
  src = open_documents(_config(), f"arrayrecord:{tmp_path}/*.array_record")
  assert [src[i] for i in range(len(src))] == texts
  tail = open_documents(_config(), f"arrayrecord:{tmp_path}/*[80%:]")
  assert [tail[0], tail[1]] == texts[8:]
  assert tail.fingerprint() != src.fingerprint()
  _write(tmp_path / "j.arec", [json.dumps({"body": t, "n": i}).encode()
                               for i, t in enumerate(texts)])
  js = open_documents(_config(field="body"), f"arrayrecord:{tmp_path}/j.arec")
  assert js[3] == texts[3]


def test_records_stream_like_any_source(tmp_path):
  texts = ["ab cd", "", "efg", "hij klm"] * 5
  _write(tmp_path / "a.array_record", [t.encode() for t in texts])
  src = open_documents(_config(pipeline="stream"),
                       f"arrayrecord:{tmp_path}/a.array_record")

  class Tok:
    bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 200

    def encode_batch(self, batch):
      return [[3 + ord(c) % 100 for c in t] for t in batch]
  b = streaming.StreamBatches(streaming.StreamCorpus(src, Tok()),
                              global_batch_size=2, seq_len=6, seed=0)
  rows = b.batch(0)["inputs"]
  assert rows.shape == (2, 6) and (rows[:, 0] == 1).all()


def test_refusals_are_one_sentence(tmp_path):
  assert "local files only" in one_sentence(
      open_documents, _config(), "arrayrecord:gs://bucket/*.array_record")
  (tmp_path / "x.array_record").write_text("not an array record")
  assert "could not be opened as an ArrayRecord file" in one_sentence(
      open_documents, _config(), f"arrayrecord:{tmp_path}/x.array_record")
  _write(tmp_path / "j.arec", [b'{"t": "a"}', b"plain"])
  src = open_documents(_config(field="t"), f"arrayrecord:{tmp_path}/j.arec")
  assert src[0] == "a"
  assert "not valid JSON" in one_sentence(src.__getitem__, 1)
  other = open_documents(_config(field="body"), f"arrayrecord:{tmp_path}/j.arec")
  assert "no text field 'body'" in one_sentence(other.__getitem__, 0)
  assert np.isfinite(len(src))
