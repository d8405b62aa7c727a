"""`launch.prepare`: a corpus tokenized once by an Apache Beam pipeline into
ArrayRecord shards (lm.data.prepared), read back by record, and the
refusals of the command and of the `prepared:` URI."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from configs import quickstart  # pylint: disable=g-import-not-at-top
from lm.data.prepare_pipeline import beam_args, prepare
from lm.data import prepared
from lm.data.indexed import open_indexed
from lm.data.tokenizer import load_tokenizer, train_tokenizer
from lm.objectives import open_documents
from tests.cli import cli
from tests.data.files import one_sentence, write_jsonl


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(jsonl glob, tokenizer path, prepared dir) of a small corpus with an
  empty line, prepared in 3 shards in this process."""
  tmp = tmp_path_factory.mktemp("prep")
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "mu", "nu", "x", "y", "zeta"]
  texts = [" ".join(words[int(w)] for w in rng.integers(0, 9, int(m)))
           for m in rng.integers(0, 30, 50)]
  texts[7] = ""
  write_jsonl(tmp / "a.jsonl", [{"text": t} for t in texts[:30]])
  write_jsonl(tmp / "b.jsonl", [{"text": t} for t in texts[30:]])
  tok = train_tokenizer(iter(texts), str(tmp / "tok.model"), vocab_size=300)
  glob = f"jsonl:{tmp}/*.jsonl"
  out = str(tmp / "prepared")
  prepare(glob, tok.path, out, shards=3)
  return glob, tok.path, out


def test_records_are_the_documents_token_ids_in_order(corpus):
  glob, tok_path, out = corpus
  src = prepared.open_prepared(f"prepared:{out}")
  text = open_indexed(glob)
  tok = load_tokenizer(tok_path)
  assert len(src) == len(text) == 50
  for i in range(50):
    want = tok.encode_batch([text[i]])[0] if text[i] else []
    np.testing.assert_array_equal(src.token_ids(i), want)
  manifest = json.load(open(os.path.join(out, "prepared.json")))
  assert [s["documents"] for s in manifest["shards"]] == [17, 16, 17]
  assert manifest["tokens"] == sum(len(src.token_ids(i)) for i in range(50))
  assert sorted(os.listdir(out)) == [
      "prepared.json", "tokenizer.model", "tokenizer.vocab",
      *[prepared.shard_name(s, 3) for s in range(3)]]
  tail = prepared.open_prepared(f"prepared:{out}[90%:]")
  assert len(tail) == 5
  np.testing.assert_array_equal(tail.token_ids(0), src.token_ids(45))
  src.check_tokenizer(tok)


def test_worker_processes_write_the_same_shards(corpus, tmp_path):
  glob, tok_path, out = corpus
  again = str(tmp_path / "again")
  prepare(glob, tok_path, again, shards=3, workers=2)
  for s in range(3):
    name = prepared.shard_name(s, 3)
    assert (open(os.path.join(again, name), "rb").read()
            == open(os.path.join(out, name), "rb").read())


def test_the_command_prints_what_it_wrote_and_refuses_in_one_sentence(
    corpus, tmp_path):
  glob, tok_path, out = corpus
  target = str(tmp_path / "cli")
  r = cli("launch.prepare", f"--data={glob}[:50%]", f"--tokenizer={tok_path}",
          f"--out={target}", "--shards=2")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "prepared 25 documents" in r.stdout and "2 shards" in r.stdout
  r = cli("launch.prepare", f"--data={glob}", f"--tokenizer={tok_path}",
          f"--out={target}")
  assert r.returncode == 2
  assert "already holds a prepared corpus" in r.stderr
  assert r.stderr.count("\n") == 1
  r = cli("launch.prepare", "--data=jsonl:/nowhere/*.jsonl",
          f"--tokenizer={tok_path}", f"--out={tmp_path / 'none'}")
  assert r.returncode == 2 and "No files match" in r.stderr
  assert not os.path.exists(tmp_path / "none")


def test_refusals_of_prepared_uris_and_options(corpus, tmp_path):
  _, tok_path, out = corpus
  assert "not a prepared corpus" in one_sentence(
      prepared.open_prepared, f"prepared:{tmp_path}")
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in os.listdir(out):
    if name != "prepared.json":
      (broken / name).write_bytes(open(os.path.join(out, name), "rb").read())
  assert "did not finish" in one_sentence(prepared.open_prepared,
                                          f"prepared:{broken}")
  (broken / "prepared.json").write_text("{not json")
  assert "damaged" in one_sentence(prepared.open_prepared,
                                   f"prepared:{broken}")
  assert "local files only" in one_sentence(prepared.open_prepared,
                                            "prepared:gs://bucket/c4")
  assert "key=value" in one_sentence(beam_args, "runner", 0)
  assert beam_args("", 2)[-1] == "--direct_running_mode=multi_processing"
  other = train_tokenizer(iter(["q r s t uvw xyz"] * 50), str(tmp_path / "o.model"),
                          vocab_size=280)
  src = prepared.open_prepared(f"prepared:{out}")
  assert "was tokenized with" in one_sentence(src.check_tokenizer, other)
  config = quickstart.get_config()
  config.data.train = f"prepared:{out}"
  assert "streaming pipeline" in one_sentence(
      open_documents, config, config.data.train, token_ids=True)
  config.data.pipeline = "stream"
  assert "only causal training" in one_sentence(
      open_documents, config, config.data.train)
  assert len(open_documents(config, config.data.train, token_ids=True)) == 50
  assert "already prepared" in one_sentence(
      prepare, f"prepared:{out}", tok_path, str(tmp_path / "x"), shards=1)
