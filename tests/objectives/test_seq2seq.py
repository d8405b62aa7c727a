"""Seq2seq fine-tuning: rows, text metrics, warm start from span corruption,
launch.predict, the TFDS datasets of the configs."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm import experiments
from lm.errors import LmError
from lm.experiments import base_config, make_objective
from lm.objectives import seq2seq
from lm.training.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rows_truncate_and_shift():
  r = seq2seq.seq2seq_rows([[5, 6, 7, 8, 9], [4]], [[10, 11, 12, 13], [14]],
                           seq_len=4, target_len=3, eos_id=1, pad_id=0)
  assert r["inputs"].tolist() == [[5, 6, 7, 1], [4, 1, 0, 0]]
  assert r["input_segment_ids"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
  assert r["targets"].tolist() == [[10, 11, 1], [14, 1, 0]]
  assert r["decoder_inputs"].tolist() == [[0, 10, 11], [0, 14, 0]]
  assert r["loss_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_text_scores():
  import sacrebleu
  hyps = ["the cat sat on the mat", "a dog ran"]
  refs = ["the cat sat on a mat", "the dog ran fast"]
  got = seq2seq.text_scores(hyps, refs)
  assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
  assert seq2seq.text_scores(refs, refs)["rouge2"] == pytest.approx(100.0)
  assert 0 < got["rougeL"] < 100 and got["rouge1"] >= got["rouge2"]


def test_bad_settings_and_sources_are_one_sentence():
  c = base_config()
  c.objective = "seq2seq"
  c.model.size = "t5_tiny"
  c.seq2seq.metric = "meteor"
  with pytest.raises(LmError, match="metric='meteor' is not one of"):
    make_objective(c)
  c.seq2seq.metric = "bleu"
  c.seq2seq.no_repeat_ngram = -1
  with pytest.raises(LmError, match="no_repeat_ngram=-1 must be 0"):
    make_objective(c)
  c.seq2seq.no_repeat_ngram = 3
  objective = make_objective(c)
  causal = base_config()
  with pytest.raises(LmError, match="is a 'causal' run, whose model is not"):
    objective.set_source(make_objective(causal))


def _train(args):
  r = subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return r.stdout + r.stderr


def test_translation_run_warm_started_from_span_corruption(tmp_path):
  rng = np.random.default_rng(0)
  words = "the cat dog sat ran on mat log big red".split()
  data = tmp_path / "data"
  data.mkdir()
  for split, n in (("train", 64), ("dev", 8)):
    with open(data / f"{split}.jsonl", "w") as f:
      for _ in range(n):
        s = " ".join(rng.choice(words, rng.integers(3, 7)))
        f.write(json.dumps({"de": s, "en": " ".join(reversed(s.split()))}) + "\n")
  pre, tuned = str(tmp_path / "pre"), str(tmp_path / "tuned")
  _train(["--config", "configs/t5_quickstart.py:runlocal", f"--workdir={pre}",
          "--config.steps=2", "--config.eval_every=2",
          "--config.checkpoint_every=2"])
  out = _train(["--config",
                f"configs/finetune_translate.py:{pre},data={data},runlocal",
                f"--workdir={tuned}"])
  assert f"the backbone comes from {pre}" in out
  with open(os.path.join(tuned, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if "eval_bleu" in r]
  assert [r["step"] for r in evals] == [2, 4]
  for key in ("eval_loss", "eval_accuracy", "eval_bleu", "eval_rouge1",
              "eval_rouge2", "eval_rougeL"):
    assert all(np.isfinite(r[key]) for r in evals)
  assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]

  # launch.sample serves both runs: text in, text out (and beam search
  # without repeated bigrams)
  for workdir, prompt, more in (
      (tuned, "the cat sat", []), (pre, "def f(<extra_id_0>):", []),
      (tuned, "the dog ran", ["--beam_size=2", "--no_repeat_ngram=2"])):
    r = subprocess.run([sys.executable, "-m", "launch.sample",
                        f"--workdir={workdir}", f"--prompt={prompt}",
                        "--temperature=0", "--max_new_tokens=5", *more],
                       cwd=ROOT,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"input: {prompt}\noutput: " in r.stdout

  # launch.predict serves the seq2seq run: --text, and a JSONL --input with
  # the run's field name, written to --output in order
  def predict(*args):
    return subprocess.run([sys.executable, "-m", "launch.predict",
                           f"--workdir={tuned}", *args], cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=300)
  out_path = tmp_path / "preds.jsonl"
  r = predict(f"--input={data / 'dev.jsonl'}", f"--output={out_path}")
  assert r.returncode == 0, r.stderr[-2000:]
  with open(data / "dev.jsonl") as f:
    inputs = [json.loads(l)["de"] for l in f]
  with open(out_path) as f:
    preds = [json.loads(l) for l in f]
  assert [p["input"] for p in preds] == inputs
  assert all(isinstance(p["output"], str) for p in preds)
  assert "8 predictions from step 4" in r.stdout
  # the same input alone gives the same (greedy) output as in the batch
  r = predict(f"--text={inputs[1]}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.splitlines()[0] == f"{preds[1]['output']}\t{inputs[1]}"
  r = predict("--text=a", "--text_b=b")
  assert r.returncode != 0
  assert "maps one input text to one output" in r.stderr
  assert "Traceback" not in r.stderr

  # a finished run, started again with its config, has nothing to do
  out = _train(["--config",
                f"configs/finetune_translate.py:{pre},data={data},runlocal",
                f"--workdir={tuned}"])
  assert "already trained to step 4" in out


@pytest.mark.parametrize("config,metric", [
    ("finetune_translate", "eval_bleu"), ("finetune_summarize", "eval_rougeL")])
def test_runlocal_on_tfds_mock_data(tmp_path, config, metric):
  """The configs' default TFDS datasets (wmt14_translate/de-en and
  cnn_dailymail), through the mock: t5_tiny from scratch, the best
  checkpoint by the task metric."""
  c = importlib.import_module(f"configs.{config}").get_config("runlocal")
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=24):
    out = experiments.train(c, workdir)
  assert out["step"] == c.steps
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if metric in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(0.0 <= r[metric] <= 100.0 for r in evals)
  ckpt = Checkpointer(workdir, best_metric=metric, best_mode="max")
  assert ckpt.best_step() in ckpt.all_steps()
