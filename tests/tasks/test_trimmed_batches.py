"""Fine-tuning with trimmed, length-grouped batches (`task.trim_batches`,
`task.group_by_length`): the same training and evaluation as full rows, one
sentence for bad settings."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs import finetune_conll, finetune_squad, finetune_sst2
from lm import experiments
from lm.errors import LmError
from lm.experiments import load_trained, make_objective
from lm.training import loop
from lm.training import step as step_lib
from lm.training.workdir import read_resolved
from tests.tasks import data
from tests.training.corpus import set_keys


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _evaluate(workdir: str, trim: int) -> dict:
  """The run's eval split scored by its final checkpoint, through the
  objective's own evaluation, with `task.trim_batches` set to `trim`."""
  trained = load_trained(workdir)
  c = trained.config
  c.task.trim_batches, c.task.group_by_length = trim, 0
  objective = make_objective(c, stored=trained.objective.stored)
  source = objective.open_source(c.data.eval, train=False)
  split = objective.open_data(source, trained.tokenizer,
                              os.path.join(workdir, "data"), None)
  eval_fn = step_lib.jit_eval_step(trained.model, objective.loss, trained.mesh,
                                   trained.rules, trained.state_shardings.params)
  return loop.evaluate_data(objective, split, eval_fn, trained.params,
                            trained.mesh, batch_size=c.batch_size,
                            max_batches=None)


def test_trimmed_training_matches_full_rows(tmp_path):
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 96, seed=0)
  dev = data.write_pairs_tsv(tmp_path / "dev.tsv", 40, seed=1)
  base = {"data.train": f"tsv:{train}", "data.eval": f"tsv:{dev}",
          "task.text_field": "premise", "task.text_b_field": "review",
          "task.pooling": "mean", "data.tokenizer.vocab_size": 300,
          "seq_len": 64, "steps": 6, "eval_every": 6, "checkpoint_every": 6,
          "batch_size": 16, "log_every": 3, "model.dropout": 0.0}
  out, params = {}, {}
  for trim in (0, 8):
    c = set_keys(finetune_sst2.get_config("runlocal"),
                 {**base, "task.trim_batches": trim})
    workdir = str(tmp_path / f"trim{trim}")
    out[trim] = experiments.train(c, workdir)
    params[trim] = _leaves(load_trained(workdir).params)
  # Rows of about 35 pieces in 64 slots: the trimmed run cuts its batches,
  # and learns the same parameters and metrics.
  for a, b in zip(params[0], params[8]):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for key in ("eval_loss", "eval_accuracy", "loss"):
    assert out[8][key] == pytest.approx(out[0][key], rel=1e-4, abs=1e-5), key
  assert read_resolved(str(tmp_path / "trim8"))["batch"]["trim_batches"] == 8
  trained = load_trained(str(tmp_path / "trim8"))
  objective = make_objective(trained.config, stored=trained.objective.stored)
  split = objective.open_data(objective.open_source(f"tsv:{train}", train=True),
                              trained.tokenizer, str(tmp_path / "data"), None)
  widths = {objective.train_batches(split, 0, 1).batch(s)["tokens"].shape[1]
            for s in range(6)}
  assert widths and max(widths) < 64, widths
  assert "trim_batches" not in read_resolved(str(tmp_path / "trim0"))["batch"]


def test_tagging_and_qa_with_grouped_batches(tmp_path):
  """Both keep per-token outputs in evaluation (tags, answer-span logits):
  cut per batch, shortest rows first, they are put back in row order."""
  (tmp_path / "conll").mkdir()
  (tmp_path / "squad").mkdir()
  data.write_conll(tmp_path / "conll" / "train.txt", 200, seed=0)
  data.write_conll(tmp_path / "conll" / "valid.txt", 40, seed=1)
  data.write_squad_jsonl(tmp_path / "squad" / "train.jsonl", 160, seed=0)
  data.write_squad_jsonl(tmp_path / "squad" / "dev.jsonl", 40, seed=1)
  grouped = {"data.tokenizer.vocab_size": 300, "batch_size": 16,
             "log_every": 10, "task.trim_batches": 8,
             "task.group_by_length": 4}
  tag = set_keys(finetune_conll.get_config(f"data={tmp_path}/conll,runlocal"),
                 {**grouped, "steps": 40, "eval_every": 40,
                  "checkpoint_every": 40})
  qa = set_keys(finetune_squad.get_config(f"data={tmp_path}/squad,runlocal"),
                {**grouped, "data.tokenizer.byte_fallback": False,
                 "seq_len": 64, "steps": 20, "eval_every": 20,
                 "checkpoint_every": 20})
  tag_out = experiments.train(tag, str(tmp_path / "tag"))
  assert tag_out["eval_f1"] > 0.8, tag_out
  qa_out = experiments.train(qa, str(tmp_path / "qa"))
  assert qa_out["eval_questions"] == 40.0
  for run, keys in (("tag", ("loss", "accuracy", "f1", "precision")),
                    ("qa", ("loss", "accuracy", "f1", "exact_match"))):
    full = _evaluate(str(tmp_path / run), 0)
    cut = _evaluate(str(tmp_path / run), 8)
    for key in keys:
      assert cut[f"eval_{key}"] == pytest.approx(
          full[f"eval_{key}"], rel=1e-4, abs=1e-5), (run, key)


@pytest.mark.parametrize("overrides,match", [
    ({"task.trim_batches": -1}, "trim_batches=-1 must be a non-negative"),
    ({"task.trim_batches": 0, "task.group_by_length": 4},
     "set config.task.trim_batches"),
])
def test_bad_padding_settings_are_one_sentence(tmp_path, overrides, match):
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 40, seed=0)
  c = set_keys(finetune_sst2.get_config("runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": "",
      "task.text_field": "premise"})
  with c.unlocked():
    for key, value in overrides.items():
      section, name = key.split(".")
      c[section][name] = value
  workdir = tmp_path / "run"
  with pytest.raises(LmError, match=match):
    experiments.train(c, str(workdir))
  assert not workdir.exists()


def test_grouped_fine_tuning_resumes_exactly(tmp_path):
  """A classification run stopped after a checkpoint resumes into the same
  parameters as the run that was never stopped (the length-grouped order
  is a function of the step), and a finished run re-run is left as it is."""
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 64, seed=0)
  c = set_keys(finetune_sst2.get_config("runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": "",
      "task.text_field": "premise", "task.text_b_field": "review",
      "data.tokenizer.vocab_size": 300, "steps": 6, "eval_every": 3,
      "checkpoint_every": 3, "keep_checkpoints": 3, "batch_size": 8,
      "log_every": 3, "task.trim_batches": 4, "task.group_by_length": 3})
  straight = str(tmp_path / "straight")
  experiments.train(c, straight)
  stopped = str(tmp_path / "stopped")
  shutil.copytree(straight, stopped)
  shutil.rmtree(os.path.join(stopped, "checkpoints", "6"))
  assert experiments.train(c, stopped)["step"] == 6
  for a, b in zip(_leaves(load_trained(straight).params),
                  _leaves(load_trained(stopped).params)):
    np.testing.assert_array_equal(a, b)
  again = experiments.train(c, straight)      # nothing left to do
  assert again["step"] == 6
  # Other padding settings would not see the same batches.
  with pytest.raises(LmError, match="batch/data settings"):
    experiments.train(set_keys(c, {"task.group_by_length": 2}), stopped)
