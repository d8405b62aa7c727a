"""Tests for lm.data.records: labeled examples from jsonl/csv/tsv/conll/tfds."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm.data import records
from lm.data.records import KINDS, Records, open_records
from lm.errors import LmError
from tests.data.files import one_sentence as _error, write as _write, write_jsonl as _write_jsonl

PAIR = {"text": ("s1", "text"), "text_b": ("s2", "text"),
        "label": ("y", "label")}
NER = {"tokens": ("words", "tokens"), "tags": ("ner", "tags")}
QA = {"question": ("question", "text"), "context": ("context", "text"),
      "answers": ("answers", "answers"), "id": ("id", "text")}




# --- Records ------------------------------------------------------------------


def test_records_len_iter_and_fingerprint():
  recs = Records("mem:", {"text": ["a b", "c"], "label": ["1", "0"],
                          "tokens": [["x", "y"], ["z"]],
                          "tags": [["O", "O"], ["B"]]}, {}, key=[1])
  assert KINDS == ("text", "label", "tokens", "tags", "answers")
  assert len(recs) == 2 and list(recs) == ["a b", "x y", "c", "z"]
  same = Records("mem:", {"text": ["q", "r"]}, {}, key=[1])
  assert recs.fingerprint() == same.fingerprint()
  assert recs.fingerprint() != Records("mem:", {"text": ["q"]}, {},
                                       key=[1]).fingerprint()
  assert recs.fingerprint() != Records("mem:", {"text": ["q", "r"]}, {},
                                       key=[2]).fingerprint()


# --- jsonl / csv / tsv classification -----------------------------------------


def test_jsonl_text_pair_classification_and_slices(tmp_path):
  rows = [{"s1": f"first {i}", "s2": f"second {i}", "y": i % 2}
          for i in range(10)]
  rows[3]["y"] = "entailment"
  _write_jsonl(tmp_path / "a.jsonl", rows[:4])
  _write_jsonl(tmp_path / "b.jsonl", rows[4:])
  recs = open_records(f"jsonl:{tmp_path}/*.jsonl", PAIR)
  assert len(recs) == 10 and recs.uri == f"jsonl:{tmp_path}/*.jsonl"
  assert recs.columns["text"] == [f"first {i}" for i in range(10)]
  assert recs.columns["text_b"][9] == "second 9"
  assert recs.columns["label"][:4] == ["0", "1", "0", "entailment"]
  assert recs.label_names == {}
  assert list(recs)[:3] == ["first 0", "second 0", "first 1"]
  head = open_records(f"jsonl:{tmp_path}/*.jsonl[:80%]", PAIR)
  tail = open_records(f"jsonl:{tmp_path}/*.jsonl[80%:]", PAIR)
  assert head.columns["text"] == recs.columns["text"][:8]
  assert tail.columns["label"] == ["0", "1"]
  assert len({head.fingerprint(), tail.fingerprint(), recs.fingerprint()}) == 3
  one = open_records(f"jsonl:{tmp_path}/a.jsonl",
                     {"text": ("s1", "text"), "text_b": ("", "text")})
  assert list(one.columns) == ["text"] and len(one) == 4


def test_jsonl_fingerprint_tracks_file_changes(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"s1": "x", "s2": "y", "y": 1}])
  before = open_records(f"jsonl:{path}", PAIR).fingerprint()
  _write_jsonl(path, [{"s1": "x", "s2": "z", "y": 1}])
  os.utime(path, ns=(1, 2))
  assert open_records(f"jsonl:{path}", PAIR).fingerprint() != before


def test_csv_and_tsv_text_pairs(tmp_path):
  _write(tmp_path / "a.csv", 's1,s2,y\n"a, quoted",b,1\nc,"d ""e""",0\n')
  recs = open_records(f"csv:{tmp_path}/a.csv", PAIR)
  assert recs.columns == {"text": ["a, quoted", "c"],
                          "text_b": ["b", 'd "e"'], "label": ["1", "0"]}
  # SST-2 style: quotes are part of the text in TSV.
  _write(tmp_path / "sst.tsv", 'sentence\tlabel\nit \'s "fine"\t1\n'
         '"odd\t0\nthird one\t1\n')
  fields = {"text": ("sentence", "text"), "label": ("label", "label")}
  tsv = open_records(f"tsv:{tmp_path}/sst.tsv", fields)
  assert tsv.columns["text"] == ['it \'s "fine"', '"odd', "third one"]
  assert tsv.columns["label"] == ["1", "0", "1"]
  assert open_records(f"tsv:{tmp_path}/sst.tsv[:34%]", fields).columns[
      "label"] == ["1"]


def test_csv_latin1_warns_once_and_binary_is_refused(tmp_path, capfd):
  fields = {"text": ("s", "text"), "label": ("y", "label")}
  path = tmp_path / "a.csv"
  path.write_bytes(b"\xef\xbb\xbfs,y\r\ncaf\xe9,1\r\nna\xefve,0\r\n")
  recs = open_records(f"csv:{path}", fields)
  assert recs.columns == {"text": ["caf\ufffd", "na\ufffdve"],
                          "label": ["1", "0"]}
  open_records(f"csv:{path}[:50%]", fields)
  err = [l for l in capfd.readouterr().err.splitlines() if "warning" in l]
  assert err == [f"warning: {path} is not valid UTF-8 (2 undecodable bytes); "
                 "they are read as U+FFFD replacement characters (re-save "
                 "the file as UTF-8 to keep that text)."]
  tsv = tmp_path / "b.tsv"
  tsv.write_bytes(b"s\ty\n\x00\x01\x02\t1\n")
  with pytest.raises(LmError, match=f"{tsv} is a binary file, not text"):
    open_records(f"tsv:{tsv}", fields)


def test_csv_tokens_tags_and_answers_cells(tmp_path):
  answers = json.dumps({"text": ["cat"], "answer_start": [4]}).replace(
      '"', '""')
  _write(tmp_path / "a.csv", "words,ner,context,answers\n"
         f'EU rejects,B-ORG O,the cat,"{answers}"\n')
  recs = open_records(f"csv:{tmp_path}/a.csv", {
      "tokens": ("words", "tokens"), "tags": ("ner", "tags"),
      "context": ("context", "text"), "answers": ("answers", "answers")})
  assert recs.columns["tokens"] == [["EU", "rejects"]]
  assert recs.columns["tags"] == [["B-ORG", "O"]]
  assert recs.columns["answers"] == [[("cat", 4)]]


def test_missing_field_and_header_column(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"s1": "a", "s2": "b", "y": 1},
                                             {"s1": "a", "label": 1}])
  msg = _error(open_records, f"jsonl:{path}", PAIR)
  assert str(path) in msg and "line 2" in msg and "'s2'" in msg
  assert "['label', 's1']" in msg
  csv_path = _write(tmp_path / "a.csv", "s1,label\na,1\n")
  msg = _error(open_records, f"csv:{csv_path}", PAIR)
  assert str(csv_path) in msg and "'s2'" in msg and "['s1', 'label']" in msg
  short = _write(tmp_path / "b.csv", "s1,s2,y\na,b\n")
  assert "fewer cells" in _error(open_records, f"csv:{short}", PAIR)
  empty = _write(tmp_path / "c.tsv", "")
  assert "header" in _error(open_records, f"tsv:{empty}", PAIR)


def test_wrong_types_name_line_and_field(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"s1": 3, "s2": "b", "y": 1}])
  msg = _error(open_records, f"jsonl:{path}", PAIR)
  assert "line 1" in msg and "'s1'" in msg and "not a string" in msg
  path = _write_jsonl(tmp_path / "b.jsonl", [{"s1": "a", "s2": "b", "y": 0.5}])
  assert "not a string or integer" in _error(open_records, f"jsonl:{path}",
                                             PAIR)
  path = _write_jsonl(tmp_path / "c.jsonl", [{"words": "a b", "ner": ["O"]}])
  assert "not a list of tokens" in _error(open_records, f"jsonl:{path}", NER)
  path = _write_jsonl(tmp_path / "d.jsonl", [{"words": ["a"], "ner": [None]}])
  assert "'ner'" in _error(open_records, f"jsonl:{path}", NER)


def test_bad_uris_fields_and_empty_selection(tmp_path):
  for uri in ("text:data/input.txt", "data/input.txt", "parquet:x"):
    msg = _error(open_records, uri, PAIR)
    assert "'jsonl:'" in msg and "'conll:'" in msg and "'tfds:'" in msg
  path = _write_jsonl(tmp_path / "a.jsonl", [{"s1": "a", "s2": "b", "y": 1}])
  assert "No files match" in _error(open_records, f"jsonl:{tmp_path}/x*",
                                    PAIR)
  assert "selects no examples" in _error(open_records,
                                         f"jsonl:{path}[:10%]", PAIR)
  assert "kind one of" in _error(open_records, f"jsonl:{path}",
                                 {"text": ("s1", "string")})
  assert "name no data field" in _error(open_records, f"jsonl:{path}",
                                        {"text": ("", "text")})
  blank = _write(tmp_path / "blank.conll", "-DOCSTART- O\n\n")
  assert "selects no examples" in _error(open_records, f"conll:{blank}", NER)


# --- token classification -----------------------------------------------------


def test_conll_text_with_docstart_and_blank_lines(tmp_path):
  _write(tmp_path / "eng.train",
         "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
         "German JJ B-NP B-MISC\n\n\nPeter NNP B-NP B-PER\n"
         "-DOCSTART- -X- O\nBlair B-PER\n")
  recs = open_records(f"conll:{tmp_path}/eng.train", NER)
  assert recs.columns == {
      "tokens": [["EU", "rejects", "German"], ["Peter"], ["Blair"]],
      "tags": [["B-ORG", "O", "B-MISC"], ["B-PER"], ["B-PER"]]}
  assert list(recs) == ["EU rejects German", "Peter", "Blair"]
  tail = open_records(f"conll:{tmp_path}/eng.train[67%:]", {})
  assert tail.columns["tokens"] == [["Blair"]]
  with pytest.raises(LmError, match="only the roles"):
    open_records(f"conll:{tmp_path}/eng.train", {**NER, "label": ("y",
                                                                   "label")})


def test_conll_single_column_line(tmp_path):
  path = _write(tmp_path / "bad.conll", "EU B-ORG\nrejects\n")
  msg = _error(open_records, f"conll:{path}", NER)
  assert str(path) in msg and "line 2" in msg and "single column" in msg


def test_jsonl_token_classification_and_ragged_tags(tmp_path):
  path = _write_jsonl(tmp_path / "ner.jsonl", [
      {"words": ["EU", "rejects"], "ner": [3, 0]},
      {"words": ["Peter"], "ner": ["B-PER"]}])
  recs = open_records(f"jsonl:{path}", NER)
  assert recs.columns["tags"] == [["3", "0"], ["B-PER"]]
  assert recs.columns["tokens"] == [["EU", "rejects"], ["Peter"]]
  bad = _write_jsonl(tmp_path / "bad.jsonl", [
      {"words": ["EU"], "ner": ["O"]}, {"words": ["a", "b"], "ner": ["O"]}])
  msg = _error(open_records, f"jsonl:{bad}", NER)
  assert str(bad) in msg and "line 2" in msg
  assert "2 tokens" in msg and "1 tags" in msg


# --- extractive QA ------------------------------------------------------------


def test_jsonl_answers_both_formats_and_mismatch(tmp_path):
  ctx = "Paris is the capital of France."
  path = _write_jsonl(tmp_path / "qa.jsonl", [
      {"id": "q1", "question": "What?", "context": ctx,
       "answers": {"text": ["Paris", "Paris"], "answer_start": [0, 0]}},
      {"id": 7, "question": "Where?", "context": ctx,
       "answers": [{"text": "France", "answer_start": 24}]},
      {"id": "q3", "question": "None?", "context": ctx,
       "answers": {"text": [], "answer_start": []}}])
  recs = open_records(f"jsonl:{path}", QA)
  assert recs.columns["answers"] == [[("Paris", 0), ("Paris", 0)],
                                     [("France", 24)], []]
  assert recs.columns["id"] == ["q1", "7", "q3"]
  assert list(recs)[:2] == ["What?", ctx]
  bad = _write_jsonl(tmp_path / "bad.jsonl", [
      {"id": "q1", "question": "What?", "context": ctx,
       "answers": [{"text": "France", "answer_start": 20}]}])
  msg = _error(open_records, f"jsonl:{bad}", QA)
  assert str(bad) in msg and "line 1" in msg and "'France'" in msg
  assert "answer_start 20" in msg
  for answers, needle in [({"text": ["a"]}, "not 'text' and 'answer_start'"),
                          ({"text": ["a", "b"], "answer_start": [0]},
                           "2 answer texts but 1"),
                          ([{"text": "a", "answer_start": "0"}], "integer"),
                          ("Paris", "not JSON answers")]:
    path = _write_jsonl(tmp_path / "x.jsonl", [
        {"id": "q", "question": "?", "context": ctx, "answers": answers}])
    assert needle in _error(open_records, f"jsonl:{path}", QA)


# --- TFDS ---------------------------------------------------------------------


def test_tfds_imdb_reviews_label_names():
  with tfds.testing.mock_data(num_examples=4):
    recs = open_records("tfds:imdb_reviews:test", {
        "text": ("text", "text"), "label": ("label", "label")})
    raw = [int(tfds.data_source("imdb_reviews", split="test")[i]["label"])
           for i in range(4)]
  assert recs.uri == "tfds:imdb_reviews:test" and len(recs) == 4
  assert recs.label_names == {"label": ["neg", "pos"]}
  assert recs.columns["label"] == [["neg", "pos"][r] for r in raw]
  assert all(isinstance(t, str) for t in recs.columns["text"])


def test_tfds_glue_sst2_and_mrpc():
  with tfds.testing.mock_data(num_examples=3):
    sst = open_records("tfds:glue/sst2:validation", {
        "text": ("sentence", "text"), "label": ("label", "label"),
        "id": ("idx", "label")})
    mrpc = open_records("tfds:glue/mrpc:train", {
        "text": ("sentence1", "text"), "text_b": ("sentence2", "text"),
        "label": ("label", "label")})
    msg = _error(open_records, "tfds:glue/sst2",
                 {"text": ("sentence1", "text")})
  assert sst.label_names == {"label": ["negative", "positive"]}
  assert set(sst.columns["label"]) <= {"negative", "positive"}
  assert all(i.isdigit() for i in sst.columns["id"])
  assert len(mrpc) == 3 and len(list(mrpc)) == 6
  assert mrpc.label_names == {"label": ["not_equivalent", "equivalent"]}
  assert "'sentence1'" in msg and "['idx', 'label', 'sentence']" in msg


def test_tfds_conll2003_mock_is_ragged():
  # The mock generates `tokens` and `ner` of unrelated lengths.
  with tfds.testing.mock_data(num_examples=3):
    msg = _error(open_records, "tfds:conll2003:train", {
        "tokens": ("tokens", "tokens"), "tags": ("ner", "tags")})
    tags = open_records("tfds:conll2003:train", {"tags": ("ner", "tags")})
  assert "TFDS dataset 'conll2003'" in msg and "example 0" in msg
  assert "tokens but 'tags' has" in msg
  names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC",
           "B-MISC", "I-MISC"]
  assert tags.label_names == {"tags": names}
  assert all(t in names for row in tags.columns["tags"] for t in row)


def test_tfds_squad_mock():
  with tfds.testing.mock_data(num_examples=3):
    recs = open_records("tfds:squad:validation", {
        "question": ("question", "text"), "id": ("id", "text")})
    # The mock's answer texts and starts have unrelated lengths.
    msg = _error(open_records, "tfds:squad:validation",
                 {"answers": ("answers", "answers")})
  assert len(recs) == 3 and recs.label_names == {}
  assert all(isinstance(q, str) for q in recs.columns["question"])
  assert "example 0" in msg and "answer texts but" in msg


def _fake_source(monkeypatch, examples):
  monkeypatch.setattr(tfds, "data_source",
                      lambda name, split, data_dir, download=True: examples)


def test_tfds_squad_answers_bytes_and_context_check(monkeypatch):
  ctx = "Paris is the capital of France."
  ok = {"question": b"Capital?", "context": ctx.encode(), "id": b"a1",
        "answers": {"text": np.array([b"Paris", b"France"]),
                    "answer_start": np.array([0, 24], dtype=np.int32)}}
  _fake_source(monkeypatch, [ok])
  recs = open_records("tfds:squad:validation", QA)
  assert recs.columns == {"question": ["Capital?"], "context": [ctx],
                          "answers": [[("Paris", 0), ("France", 24)]],
                          "id": ["a1"]}
  bad = dict(ok, answers={"text": np.array([b"Paris"]),
                          "answer_start": np.array([3])})
  _fake_source(monkeypatch, [ok, bad])
  msg = _error(open_records, "tfds:squad:validation", QA)
  assert "example 1" in msg and "'Paris'" in msg


def test_tfds_unlabelled_split_and_bytes_tokens(monkeypatch):
  _fake_source(monkeypatch, [{"sentence": b"x", "label": np.int64(-1)}])
  msg = _error(open_records, "tfds:glue/sst2:test", {
      "text": ("sentence", "text"), "label": ("label", "label")})
  assert "has no labels" in msg and "labelled split" in msg
  _fake_source(monkeypatch, [{"tokens": np.array([b"EU", b"caf\xc3\xa9"]),
                              "ner": np.array([3, 0])}])
  recs = open_records("tfds:x", {"tokens": ("tokens", "tokens"),
                                 "tags": ("ner", "tags")})
  assert recs.columns == {"tokens": [["EU", "caf\u00e9"]],
                          "tags": [["3", "0"]]}
  assert recs.uri == "tfds:x:train" and list(recs) == ["EU caf\u00e9"]


def test_tfds_unknown_dataset():
  assert "does not exist" in _error(open_records, "tfds:no_such_dataset_xyz",
                                    PAIR)
  assert records.SCHEMES == ("jsonl", "csv", "tsv", "conll", "squad", "tfds",
                             "hf")


@pytest.mark.parametrize("uri,fields", [
    ("tfds:wmt14_translate/de-en:validation", ("de", "en")),
    ("tfds:cnn_dailymail:test", ("article", "highlights"))],
    ids=["wmt14", "cnn_dailymail"])
def test_tfds_seq2seq_datasets_mock(uri, fields):
  # Their builders are in TFDS packages it does not register without h5py.
  with tfds.testing.mock_data(num_examples=3):
    recs = open_records(uri, {"input": (fields[0], "text"),
                              "target": (fields[1], "text")})
  assert len(recs) == 3 and recs.label_names == {}
  assert all(isinstance(t, str) and t for t in recs.columns["input"])
  assert all(isinstance(t, str) and t for t in recs.columns["target"])
