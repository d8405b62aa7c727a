"""The formats people have: headerless CSV/TSV named by column index (and
columns joined with "+"), the official nested SQuAD JSON, and gzip / Zstandard
compressed text and JSON lines."""

import gzip
import json

import zstandard

from lm.data.records import open_records
from lm.data.sources import open_source
from tests.data.files import one_sentence as _error, write as _write

QA = {"question": ("question", "text"), "context": ("context", "text"),
      "answers": ("answers", "answers"), "id": ("id", "text")}




def test_headerless_csv_by_column_index_joins_text_columns(tmp_path):
  # AG News as published: class,title,description and no header row
  path = _write(tmp_path / "train.csv",
                '"3","Wall St. Bears","Short-sellers are back."\n'
                '"4","New chip","Faster, and ""cooler""."\n')
  recs = open_records(f"csv:{path}", {"text": ("1+2", "text"),
                                      "label": ("0", "label")})
  assert recs.columns["text"] == ["Wall St. Bears Short-sellers are back.",
                                  'New chip Faster, and "cooler".']
  assert recs.columns["label"] == ["3", "4"]
  tsv = _write(tmp_path / "t.tsv", "pos\tgood film\nneg\tdull\n")
  recs = open_records(f"tsv:{tsv}", {"text": ("1", "text"),
                                     "label": ("0", "label")})
  assert recs.columns["text"] == ["good film", "dull"]
  # with a header, "+" joins named columns
  named = _write(tmp_path / "n.csv", "y,title,body\n1,A,b c\n")
  recs = open_records(f"csv:{named}", {"text": ("title+body", "text"),
                                       "label": ("y", "label")})
  assert recs.columns["text"] == ["A b c"]


def test_headerless_csv_errors_are_one_sentence(tmp_path):
  path = _write(tmp_path / "a.csv", "1,only\n")
  msg = _error(open_records, f"csv:{path}", {"text": ("1+2", "text"),
                                              "label": ("0", "label")})
  assert "line 1 has 2 cells" in msg and "column 2" in msg
  msg = _error(open_records, f"csv:{path}", {"text": ("1", "text"),
                                              "label": ("label", "label")})
  assert "mix column indices and column names" in msg
  msg = _error(open_records, f"csv:{path}", {"text": ("1", "text"),
                                              "label": ("0+1", "label")})
  assert "only text fields may join columns" in msg


def _squad(version, qas):
  return {"version": version, "data": [{"title": "Paris", "paragraphs": [
      {"context": "Paris is the capital of France.", "qas": qas}]}]}


def test_official_squad_json_v1_and_answerable_v2(tmp_path):
  qas = [{"id": "q1", "question": "What is Paris?",
          "answers": [{"text": "the capital of France", "answer_start": 9}]},
         {"id": "q2", "question": "Capital of?",
          "answers": [{"text": "France", "answer_start": 24},
                      {"text": "France.", "answer_start": 24}]}]
  path = _write(tmp_path / "dev-v1.1.json", json.dumps(_squad("1.1", qas)))
  recs = open_records(f"squad:{path}", QA)
  assert recs.columns["id"] == ["q1", "q2"]
  assert recs.columns["context"] == ["Paris is the capital of France."] * 2
  assert recs.columns["answers"][1] == [("France", 24), ("France.", 24)]
  v2 = [dict(q, is_impossible=False) for q in qas]
  path2 = _write(tmp_path / "dev-v2.0.json", json.dumps(_squad("v2.0", v2)))
  assert len(open_records(f"squad:{path2}[50%:]", QA)) == 1


def test_squad_v2_unanswerable_and_wrong_files_are_one_sentence(tmp_path):
  qas = [{"id": "q9", "question": "Who?", "answers": [],
          "plausible_answers": [{"text": "Paris", "answer_start": 0}],
          "is_impossible": True}]
  path = _write(tmp_path / "train-v2.0.json", json.dumps(_squad("v2.0", qas)))
  msg = _error(open_records, f"squad:{path}", QA)
  assert "1 unanswerable question(s)" in msg and "'q9'" in msg
  assert "use SQuAD v1.1" in msg
  lines = _write(tmp_path / "q.jsonl", '{"question": "x"}\n{"question": "y"}\n')
  assert "not valid JSON" in _error(open_records, f"squad:{lines}", QA)
  flat = _write(tmp_path / "f.json", json.dumps([1, 2]))
  assert "is not a SQuAD file" in _error(open_records, f"squad:{flat}", QA)
  bad = _write(tmp_path / "b.json", json.dumps({"data": [{"title": "x"}]}))
  assert "does not follow the SQuAD layout" in _error(
      open_records, f"squad:{bad}", QA)


def test_gzip_and_zstd_text_and_jsonl(tmp_path):
  text = "def f():\n  return 1\n"
  (tmp_path / "a.py.gz").write_bytes(gzip.compress(text.encode()))
  (tmp_path / "b.py.zst").write_bytes(
      zstandard.ZstdCompressor().compress(text.upper().encode()))
  src = open_source(f"text:{tmp_path}/*.py.*")
  assert [src[0], src[1]] == [text, text.upper()]
  rows = "".join(json.dumps({"text": t, "label": i}) + "\n"
                 for i, t in enumerate(["good", "bad"]))
  (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(rows.encode()))
  (tmp_path / "r.jsonl.zst").write_bytes(
      zstandard.ZstdCompressor().compress(rows.encode()))
  docs = open_source(f"jsonl:{tmp_path}/r.jsonl.zst")
  assert [docs[0], docs[1]] == ["good", "bad"]
  recs = open_records(f"jsonl:{tmp_path}/r.jsonl.gz",
                      {"text": ("text", "text"), "label": ("label", "label")})
  assert recs.columns["label"] == ["0", "1"]


def test_a_file_that_does_not_decompress_is_one_sentence(tmp_path):
  _write(tmp_path / "x.txt.gz", "plain, not gzip")
  assert "is not a valid gz file" in _error(open_source, f"text:{tmp_path}/x.txt.gz")
  _write(tmp_path / "y.jsonl.zst", "plain, not zstd")
  assert "is not a valid zst file" in _error(
      open_source, f"jsonl:{tmp_path}/y.jsonl.zst")
