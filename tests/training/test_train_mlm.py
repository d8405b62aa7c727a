"""End to end: a tiny BERT learns masked LM + NSP through the one train loop."""

import json
import math
import os

import numpy as np
import pytest

from configs import bert_quickstart
from launch import evaluate as evaluate_cli
from tests.launch.test_sample_evaluate import cli
from lm import experiments
from lm.errors import LmError
from lm.objectives.mlm import majority_baseline
from tests.training.corpus import set_keys, write_corpus


def mlm_config(train_uri, eval_uri, **overrides):
  c = bert_quickstart.get_config("runlocal")
  c.data.train = train_uri
  c.data.eval = eval_uri
  c.data.tokenizer.vocab_size = 300
  c.peak_tflops = 1.0
  return set_keys(c, overrides)


def test_tiny_bert_beats_the_majority_baseline_on_held_out_files(tmp_path):
  train = write_corpus(tmp_path / "train", n_docs=80, seed=0)
  held_out = write_corpus(tmp_path / "eval", n_docs=40, seed=1)
  workdir = str(tmp_path / "run")
  c = mlm_config(f"text:{train}", f"text:{held_out}", steps=300, log_every=50,
                 eval_every=150, checkpoint_every=150, eval_steps=0,
                 batch_size=16, seq_len=48)
  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 30
  summary = experiments.train(c, workdir)
  run = experiments.prepare(c, workdir)
  baseline = majority_baseline(
      run.objective.eval_batches(run.eval_data, run.config.batch_size, None))
  assert summary["eval_mlm_accuracy"] > baseline + 0.2, (summary, baseline)
  # NSP on this corpus means matching B's returned name to A's argument; a
  # few hundred steps only start to learn it: below chance-level loss.
  assert summary["eval_nsp_loss"] < math.log(2), summary
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train_rows = [r for r in records if "mlm_loss" in r]
  assert [r["step"] for r in train_rows] == [50, 100, 150, 200, 250, 300]
  assert {"nsp_accuracy", "nsp_loss", "mlm_accuracy", "mfu"} <= set(train_rows[0])
  assert train_rows[-1]["mlm_loss"] < train_rows[0]["mlm_loss"] - 1.0
  # launch.evaluate reports the same held-out metrics from the checkpoint.
  r = evaluate_cli.evaluate_workdir(workdir)
  assert r["mlm_accuracy"] == pytest.approx(summary["eval_mlm_accuracy"], abs=1e-6)
  assert r["nsp_accuracy"] == pytest.approx(summary["eval_nsp_accuracy"], abs=1e-6)


def test_resumed_mlm_run_is_bitwise_the_uninterrupted_run(tmp_path):
  train = write_corpus(tmp_path / "train", n_docs=30)
  c = mlm_config(f"text:{train}", "", steps=6, checkpoint_every=3,
                 eval_every=100, log_every=1)
  whole = experiments.train(c, str(tmp_path / "whole"))
  c.steps = 3
  experiments.train(c, str(tmp_path / "split"))
  c.steps = 6
  resumed = experiments.train(c, str(tmp_path / "split"))
  assert resumed["loss"] == whole["loss"]
  assert resumed["mlm_accuracy"] == whole["mlm_accuracy"]
  # An encoder workdir cannot be sampled from: one sentence, exit 2.
  out = cli("launch.sample", "--workdir", str(tmp_path / "whole"), "--prompt", "x")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'whole'} holds a model trained with objective "
      "'mlm', which does not generate text; sample from a run trained with "
      "objective 'causal'."]


def test_mlm_with_a_decoder_size_fails_before_writing(tmp_path):
  train = write_corpus(tmp_path / "train", n_docs=10)
  c = mlm_config(f"text:{train}", "")
  c.model.size = "tiny"
  workdir = tmp_path / "run"
  with pytest.raises(LmError, match="BERT size"):
    experiments.train(c, str(workdir))
  assert not workdir.exists()


def test_mlm_without_nsp_trains_and_reports_no_nsp_metrics(tmp_path):
  train = write_corpus(tmp_path / "train", n_docs=20)
  c = mlm_config(f"text:{train}", f"text:{train}", steps=4, eval_every=4,
                 checkpoint_every=4)
  c.mlm.nsp = False
  summary = experiments.train(c, str(tmp_path / "run"))
  assert np.isfinite(summary["eval_mlm_loss"])
  assert "eval_nsp_accuracy" not in summary
  assert summary["loss"] == pytest.approx(summary["mlm_loss"])
