"""`hf:` URIs through Hugging Face `datasets`, offline, on datasets the tests
build: save_to_disk directories (a Dataset and a DatasetDict) and Parquet
files, for pretraining text, task records (with ClassLabel names) and
contrastive pairs."""

import os

import pytest

datasets = pytest.importorskip("datasets")

from lm.data.pairs import open_pairs  # pylint: disable=g-import-not-at-top
from lm.data.records import open_records
from lm.data.sources import open_source
from tests.data.files import one_sentence as _error


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  features = datasets.Features({
      "sentence": datasets.Value("string"),
      "label": datasets.ClassLabel(names=["neg", "pos"]),
      "other": datasets.Value("string")})
  split = lambda texts, labels: datasets.Dataset.from_dict(
      {"sentence": texts, "label": labels, "other": [t.upper() for t in texts]},
      features=features)
  datasets.DatasetDict({
      "train": split(["a fine film", "dull", "great"], [1, 0, 1]),
      "validation": split(["bad", "good"], [0, 1])}).save_to_disk(
          str(root / "dict"))
  split(["only one"], [1]).save_to_disk(str(root / "single"))
  os.makedirs(root / "parquet" / "test")
  split(["p one", "p two"], [0, 1]).to_parquet(
      str(root / "parquet" / "test" / "part-0.parquet"))
  return root


def test_pretraining_text_from_saved_and_parquet_dirs(saved):
  src = open_source(f"hf:{saved}/dict", field="sentence")
  assert [src[i] for i in range(len(src))] == ["a fine film", "dull", "great"]
  assert src.uri == f"hf:{saved}/dict:train"
  val = open_source(f"hf:{saved}/dict:validation", field="sentence")
  assert len(val) == 2 and val.fingerprint() != src.fingerprint()
  assert open_source(f"hf:{saved}/single", field="sentence")[0] == "only one"
  pq = open_source(f"hf:{saved}/parquet:test", field="other")
  assert [pq[0], pq[1]] == ["P ONE", "P TWO"]


def test_task_records_take_classlabel_names(saved):
  recs = open_records(f"hf:{saved}/dict:validation",
                      {"text": ("sentence", "text"), "label": ("label", "label")})
  assert recs.columns["text"] == ["bad", "good"]
  assert recs.columns["label"] == ["neg", "pos"]
  assert recs.label_names == {"label": ["neg", "pos"]}


def test_contrastive_pairs(saved):
  pairs = open_pairs(f"hf:{saved}/dict", fields=("sentence", "other"))
  assert pairs.anchors[0] == "a fine film" and pairs.positives[0] == "A FINE FILM"




def test_hf_errors_are_one_sentence(saved, tmp_path, monkeypatch):
  assert "has no split 'test'; its splits are ['train', 'validation']" in _error(
      open_source, f"hf:{saved}/dict:test", field="sentence")
  assert "has no feature 'text'" in _error(open_source, f"hf:{saved}/dict")
  assert "is not a directory" in _error(open_source, f"hf:{tmp_path}/nothing")
  (tmp_path / "empty").mkdir()
  assert "holds neither a save_to_disk dataset nor Parquet" in _error(
      open_source, f"hf:{tmp_path}/empty")
  assert "names no dataset" in _error(open_source, "hf:")
  # no network here: offline mode, read when `datasets` is imported
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  msg = _error(open_source, "hf:no-such-user/no-such-dataset:train")
  assert "Hugging Face dataset 'no-such-user/no-such-dataset'" in msg
