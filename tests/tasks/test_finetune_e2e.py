"""Fine-tuning end to end: TFDS mock data, written files, a pretrained
backbone, best checkpoints and launch.predict."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import (bert_quickstart, finetune_conll, finetune_imdb,
                     finetune_sst2, finetune_squad)
from launch.evaluate import evaluate_workdir
from lm import experiments
from lm.errors import LmError
from lm.tasks.predict import read_inputs
from lm.training.checkpoint import Checkpointer
from lm.experiments import load_trained
from lm.training.workdir import read_resolved
from tests.cli import cli
from tests.tasks import data
from tests.training.corpus import set_keys, write_corpus

def _leaves(tree):
  return {"/".join(str(k.key) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("config,names", [
    (finetune_sst2, ["negative", "positive"]),
    (finetune_imdb, ["neg", "pos"])], ids=["sst2", "imdb"])
def test_classification_on_tfds_mock_data(tmp_path, config, names):
  c = config.get_config("runlocal")
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=40):
    out = experiments.train(c, workdir)
  assert out["step"] == c.steps
  for key in ("eval_accuracy", "eval_macro_f1", "eval_loss"):
    assert 0.0 <= out[key] <= (1.0 if key != "eval_loss" else 10.0), key
  assert -1.0 <= out["eval_mcc"] <= 1.0
  # The label vocabulary is the ClassLabel's, stored with the run.
  assert read_resolved(workdir)["batch"]["labels"] == names
  ckpt = Checkpointer(workdir, best_metric="eval_accuracy", best_mode="max")
  assert ckpt.best_step() in ckpt.all_steps()


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
  """A bert_tiny classifier of text pairs trained from scratch on TSV."""
  tmp = tmp_path_factory.mktemp("pairs")
  train = data.write_pairs_tsv(tmp / "train.tsv", 320, seed=0)
  dev = data.write_pairs_tsv(tmp / "dev.tsv", 48, seed=1)
  c = set_keys(finetune_sst2.get_config("runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": f"tsv:{dev}",
      "task.text_field": "premise", "task.text_b_field": "review",
      "task.pooling": "mean", "data.tokenizer.vocab_size": 300,
      "task.class_weights": "balanced",
      "steps": 40, "eval_every": 20, "checkpoint_every": 20,
      "batch_size": 16, "log_every": 10})
  workdir = str(tmp / "run")
  return experiments.train(c, workdir), workdir, tmp


def test_pair_classifier_learns_and_predicts(pairs_run):
  out, workdir, tmp = pairs_run
  # The label is the review's sentiment: learnable from the second text.
  assert out["eval_accuracy"] >= 0.9, out
  assert read_resolved(workdir)["batch"]["labels"] == ["no", "yes"]
  # A classifier counts examples, not tokens, in training and evaluation.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval_loss" in r]
  assert train and all(r["examples"] == 16 and "tokens" not in r
                       for r in train)
  assert evals and all(r["eval_examples"] == 48 and r["eval_batches"] == 3
                       and "eval_tokens" not in r for r in evals)
  r = evaluate_workdir(workdir, best=True)
  assert r["accuracy"] >= 0.9 and r["examples"] == 48
  assert r["counted"] == "examples" and "tokens" not in r
  # Balanced class weights come from the training labels, stored with the
  # run: evaluating again gives the logged loss, and a one-class file works.
  again = evaluate_workdir(workdir, step=40)
  assert again["loss"] == pytest.approx(out["eval_loss"], rel=1e-5)
  one = tmp / "yes.tsv"
  one.write_text("premise\treview\tlabel\nthe plot\tgreat fine movie\tyes\n")
  assert evaluate_workdir(workdir, data=f"tsv:{one}")["examples"] == 1
  # Repeated --text values are predicted in order, each with its --text_b.
  p = cli("launch.predict", "--workdir", workdir, "--text", "the plot",
          "--text_b", "great superb movie", "--text", "a film",
          "--text_b", "awful dull movie")
  assert p.returncode == 0, p.stderr
  lines = p.stdout.splitlines()
  assert lines[0].startswith("yes\t") and lines[0].endswith("\tthe plot")
  assert lines[1].startswith("no\t") and lines[1].endswith("\ta film")
  assert lines[2].startswith("2 predictions from step")
  with pytest.raises(LmError, match="3 --text values but 2 --text_b"):
    read_inputs(load_trained(workdir), text=["a", "b", "c"], text_b=["x", "y"])
  inputs = tmp / "in.jsonl"
  inputs.write_text(json.dumps({"premise": "a", "review": "awful dull"}) + "\n"
                    + json.dumps({"premise": "b", "review": "lovely fine"}) + "\n")
  p = cli("launch.predict", "--workdir", workdir, "--input", str(inputs),
          "--output", str(tmp / "out.jsonl"))
  assert p.returncode == 0, p.stderr
  rows = [json.loads(l) for l in open(tmp / "out.jsonl")]
  assert [r["label"] for r in rows] == ["no", "yes"]
  assert all(0.5 < r["probability"] <= 1.0 for r in rows)
  # A pair model given one text is one sentence, not a traceback.
  p = cli("launch.predict", "--workdir", workdir, "--text", "great")
  assert p.returncode == 2 and "needs a second text" in p.stderr
  assert "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
  """A 3-step masked-LM run (with its pooler) on a written corpus."""
  tmp = tmp_path_factory.mktemp("mlm")
  train = write_corpus(tmp / "corpus", n_docs=30)
  c = set_keys(bert_quickstart.get_config("runlocal"), {
      "steps": 3, "checkpoint_every": 3, "eval_every": 100, "log_every": 1,
      "data.train": f"text:{train}", "data.eval": "",
      "data.tokenizer.vocab_size": 300})
  experiments.train(c, str(tmp / "mlm"))
  return str(tmp / "mlm")


def test_backbone_only_restore_and_linear_probe(mlm_run, tmp_path):
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 64)
  source = os.path.join(mlm_run, "checkpoints", "3")   # a checkpoint path
  c = set_keys(finetune_sst2.get_config(f"{source},runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": f"tsv:{train}",
      "task.text_field": "review", "optimizer.freeze_backbone": True,
      "steps": 2, "eval_every": 2, "checkpoint_every": 2})
  assert c.init_from == source and c.model.size == "bert_tiny"
  workdir = str(tmp_path / "probe")
  experiments.train(c, workdir)
  tuned, src = load_trained(workdir), load_trained(mlm_run)
  assert tuned.tokenizer.fingerprint() == src.tokenizer.fingerprint()
  got, want = _leaves(tuned.params["backbone"]), _leaves(src.params)
  # Frozen: after two steps the backbone (pooler included) is still exactly
  # the pretraining checkpoint's; MLM and NSP heads were left behind.
  assert "pooler/dense/kernel" in got
  for name, value in got.items():
    np.testing.assert_array_equal(value, want[name], err_msg=name)
  assert all(n.split("/")[0] in ("mlm_head", "nsp_head")
             for n in set(want) - set(got))
  # The head is new, and it trained.
  head = _leaves(tuned.params["head"])
  assert head["dense/kernel"].shape == (128, 2)
  assert np.abs(head["dense/bias"]).sum() > 0
  # Full fine-tuning moves the backbone.
  c.optimizer.freeze_backbone = False
  experiments.train(c, str(tmp_path / "full"))
  full = _leaves(load_trained(str(tmp_path / "full")).params["backbone"])
  assert any(not np.array_equal(full[n], want[n]) for n in full)


def test_init_from_errors_are_one_sentence(mlm_run, pairs_run, tmp_path):
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 64)
  base = {"data.train": f"tsv:{train}", "data.eval": "",
          "task.text_field": "review", "data.tokenizer.vocab_size": 300}
  c = set_keys(finetune_sst2.get_config(f"{mlm_run},runlocal"),
               {**base, "model.d_ff": 1024})
  with pytest.raises(LmError, match="holds a model with model.d_ff=512"):
    experiments.prepare(c, str(tmp_path / "a"))
  c = set_keys(finetune_sst2.get_config(f"{mlm_run},runlocal"), base)
  c.data.tokenizer.path = os.path.join(pairs_run[1], "tokenizer.model")
  with pytest.raises(LmError, match="is not the tokenizer of config.init_from"):
    experiments.prepare(c, str(tmp_path / "b"))
  c = set_keys(finetune_sst2.get_config("runlocal"),
               {**base, "init_from": os.path.join(mlm_run, "checkpoints", "9")})
  with pytest.raises(LmError, match="checkpoint step 9 does not exist"):
    experiments.train(c, str(tmp_path / "c"))
  c = set_keys(finetune_sst2.get_config("runlocal"),
               {**base, "task.metric": "f1"})
  with pytest.raises(LmError, match="not a classification metric"):
    experiments.prepare(c, str(tmp_path / "d"))
  c = set_keys(finetune_sst2.get_config("runlocal"),
               {**base, "task.class_weights": "maybe=2"})
  with pytest.raises(LmError, match="does not name a label"):
    experiments.prepare(c, str(tmp_path / "e"))


def test_tagging_end_to_end_on_conll_files(tmp_path):
  train = data.write_conll(tmp_path / "train.txt", 200, seed=0)
  data.write_conll(tmp_path / "valid.txt", 40, seed=1)
  c = set_keys(finetune_conll.get_config(f"data={tmp_path},runlocal"), {
      "data.tokenizer.vocab_size": 300, "steps": 40, "eval_every": 20, "checkpoint_every": 20,
      "batch_size": 16, "log_every": 10})
  assert c.data.train == f"conll:{train}"
  workdir = str(tmp_path / "run")
  out = experiments.train(c, workdir)
  assert out["eval_f1"] > 0.8 and out["eval_entities"] == 80.0, out
  labels = read_resolved(workdir)["batch"]["labels"]
  assert labels[0] == "O" and set(labels) == {"O", "B-PER", "I-PER", "B-LOC",
                                              "I-LOC"}
  p = cli("launch.predict", "--workdir", workdir, "--text",
          "went to see John Smith with friends today")
  assert p.returncode == 0, p.stderr
  assert "PER 'John Smith' [12:22]" in p.stdout


def test_qa_end_to_end_on_jsonl(tmp_path):
  data.write_squad_jsonl(tmp_path / "train.jsonl", 240, seed=0)
  data.write_squad_jsonl(tmp_path / "dev.jsonl", 40, seed=1)
  c = set_keys(finetune_squad.get_config(f"data={tmp_path},runlocal"), {
      "data.tokenizer.vocab_size": 300, "data.tokenizer.byte_fallback": False,
      "seq_len": 64, "steps": 120,
      "eval_every": 60, "checkpoint_every": 60,
      "batch_size": 16, "log_every": 20})
  workdir = str(tmp_path / "run")
  out = experiments.train(c, workdir)
  assert out["eval_questions"] == 40.0
  assert out["eval_windows"] >= 40.0 and "eval_tokens" not in out
  assert out["eval_f1"] > 0.8 and out["eval_exact_match"] > 0.7, out
  context = "the movie was. Ann Lee lives in Rome. went to see the city."
  p = cli("launch.predict", "--workdir", workdir, "--text",
          "Where does Ann Lee live?", "--context", context)
  assert p.returncode == 0, p.stderr
  assert p.stdout.splitlines()[0].startswith("'Rome'\t")
  assert "[32:36]" in p.stdout     # character offsets into the context


def test_mock_conll_and_squad_fail_in_one_sentence(tmp_path):
  # TFDS mock data gives tokens and tags (and answer texts and starts) of
  # unrelated lengths; the reader says so instead of guessing.
  for config, match in ((finetune_conll, "tags"), (finetune_squad, "answer")):
    with tfds.testing.mock_data(num_examples=4):
      with pytest.raises(LmError, match=match):
        experiments.prepare(config.get_config("runlocal"), str(tmp_path / match))


@pytest.mark.parametrize("kind", ["causal", "contrastive"])
def test_fine_tune_from_causal_and_contrastive_runs(tmp_path, kind):
  from configs import quickstart, simcse_quickstart
  corpus = write_corpus(tmp_path / "corpus", n_docs=30)
  mod = quickstart if kind == "causal" else simcse_quickstart
  src = set_keys(mod.get_config("runlocal"), {
      "steps": 2, "checkpoint_every": 2, "eval_every": 100, "log_every": 1,
      "data.train": f"text:{corpus}", "data.eval": "",
      "data.tokenizer.vocab_size": 300})
  if kind == "causal":
    src.sample.prompt = ""
  experiments.train(src, str(tmp_path / kind))
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 64)
  c = set_keys(finetune_sst2.get_config(f"{tmp_path / kind},runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": f"tsv:{train}",
      "task.text_field": "review", "steps": 2, "eval_every": 2,
      "checkpoint_every": 2})
  assert c.model.size == src.model.size
  if kind == "contrastive":
    # SimCSE trains no pooler: asking for it is one sentence, and BERT's
    # default pooling ("auto") reads [CLS] instead.
    c.task.pooling = "pooler"
    with pytest.raises(LmError, match="has no pretrained BERT pooler"):
      experiments.train(c, str(tmp_path / "no_pooler"))
    c.task.pooling = "auto"
  out = experiments.train(c, str(tmp_path / "tuned"))
  assert out["step"] == 2 and 0.0 <= out["eval_accuracy"] <= 1.0
  tuned = load_trained(str(tmp_path / "tuned"))
  source = load_trained(str(tmp_path / kind))
  backbone = source.params if kind == "causal" else source.params["backbone"]
  # Fine-tuning moved the weights; the backbone's names and shapes are the
  # source's, and decoders pool their last real token.
  assert {n: v.shape for n, v in _leaves(tuned.params["backbone"]).items()} == {
      n: v.shape for n, v in _leaves(backbone).items()}
  assert tuned.model.pooling == ("last" if kind == "causal" else "cls")
