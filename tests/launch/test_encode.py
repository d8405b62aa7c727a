"""launch.encode and launch.evaluate on a contrastive workdir (subprocesses)."""

import json

import numpy as np
import pytest

from configs import code_search
from launch import evaluate as evaluate_cli
from lm import experiments
from lm.errors import LmError
from lm.objectives.contrastive import embed_texts
from lm.tasks import embed
from lm.experiments import load_trained
from tests.launch.test_sample_evaluate import cli, workdir as causal_workdir  # noqa: F401


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("contrastive")
  c = code_search.get_config("runlocal")
  c.steps = 4
  c.checkpoint_every = 4
  c.eval_every = 4
  experiments.train(c, str(tmp / "run"))
  return str(tmp / "run")


def test_encode_writes_one_row_per_line(run, tmp_path):
  texts = ["Return the sum of a and b.", "", "def add(a, b):\n"]
  (tmp_path / "in.txt").write_text("\n".join(texts))
  out = cli("launch.encode", "--workdir", run, "--input", str(tmp_path / "in.txt"),
            "--output", str(tmp_path / "emb.npy"))
  assert out.returncode == 0, out.stderr
  assert "wrote 3 x 128 embeddings" in out.stdout
  emb = np.load(tmp_path / "emb.npy")
  assert emb.shape == (3, 128) and emb.dtype == np.float32
  want = embed_texts(load_trained(run), ["Return the sum of a and b.", "",
                                         "def add(a, b):"], batch_size=2)
  np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(emb[0], emb[2])


def test_encode_errors_are_one_sentence(run, causal_workdir, tmp_path):  # noqa: F811
  out = cli("launch.encode", "--workdir", run, "--input", str(tmp_path / "no.txt"),
            "--output", str(tmp_path / "e.npy"))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: --input {tmp_path / 'no.txt'} does not exist; pass a text file "
      "with one text per line."]
  (tmp_path / "in.txt").write_text("x\n")
  with pytest.raises(LmError, match="holds a 'causal' run; embeddings come"):
    embed.encode_file(causal_workdir, str(tmp_path / "in.txt"),
                      str(tmp_path / "e.npy"), load_trained=load_trained)
  with pytest.raises(LmError, match="must end in .npy"):
    embed.encode_file(run, str(tmp_path / "in.txt"), str(tmp_path / "e.txt"),
                      load_trained=load_trained)
  assert not (tmp_path / "e.npy").exists()


def test_evaluate_reports_retrieval_and_sts(run, causal_workdir, tmp_path):  # noqa: F811
  rows = [("sort a list of numbers", "order the numbers in a list", 4.5),
          ("open a file for reading", "read the contents of a file", 4.0),
          ("sort a list of numbers", "the cat sat on the mat", 0.2),
          ("compute a hash of bytes", "hash some bytes", 4.2),
          ("compute a hash of bytes", "open a network socket", 0.5)]
  with open(tmp_path / "sts.jsonl", "w") as f:
    for a, b, s in rows:
      f.write(json.dumps({"text_a": a, "text_b": b, "score": s}) + "\n")
  r = evaluate_cli.evaluate_workdir(run, sts=f"jsonl:{tmp_path / 'sts.jsonl'}",
                                    data="pystdlib:validation")
  assert {"recall@1", "recall@10", "mrr", "loss", "accuracy",
          "sts_spearman"} <= set(r)
  assert r["candidates"] == 32 and 0.0 <= r["recall@1"] <= r["recall@10"] <= 1.0
  assert -1.0 <= r["sts_spearman"] <= 1.0
  with open(r["path"]) as f:
    assert json.load(f)["mrr"] == r["mrr"]
  out = cli("launch.evaluate", "--workdir", run)
  assert out.returncode == 0, out.stderr
  assert "recall@1" in out.stdout and "over 32 pairs" in out.stdout
  with pytest.raises(LmError, match="holds a 'causal' run; drop --sts"):
    evaluate_cli.evaluate_workdir(causal_workdir, sts="jsonl:x.jsonl")
