"""End-to-end training runs on tiny configs (in-process)."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import quickstart
from lm import experiments
from lm.errors import LmError
from lm.training import loop
from lm.training.checkpoint import Checkpointer
from tests.training.corpus import set_keys, write_corpus


def tiny_config(train_uri, eval_uri, **overrides):
  c = quickstart.get_config("runlocal")
  c.data.train = train_uri
  c.data.eval = eval_uri
  c.data.tokenizer.vocab_size = 300
  c.sample.prompt = ""
  c.peak_tflops = 1.0
  return set_keys(c, overrides)


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_train_from_local_text_files(tmp_path):
  glob = write_corpus(tmp_path / "corpus")
  workdir = str(tmp_path / "run")
  c = tiny_config(f"text:{glob}[:90%]", f"text:{glob}[90%:]", steps=30,
                  log_every=5, eval_every=15, checkpoint_every=15)
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 5
  summary = experiments.train(c, workdir)
  records = read_metrics(workdir)
  train = [r for r in records if "loss" in r]
  assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
  for r in train:
    assert {"loss", "learning_rate", "tokens_per_second", "mfu"} <= set(r)
    assert np.isfinite(r["loss"]) and r["tokens_per_second"] > 0
  assert train[-1]["loss"] < train[0]["loss"] - 0.5
  evals = [r for r in records if "eval_loss" in r]
  assert [r["step"] for r in evals] == [15, 30]
  assert evals[-1]["eval_perplexity"] == pytest.approx(np.exp(evals[-1]["eval_loss"]), rel=1e-4)
  assert 0.0 <= evals[-1]["eval_accuracy"] <= 1.0
  assert summary["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  resolved = json.load(open(os.path.join(workdir, "config.json")))
  assert resolved["model"]["vocab_size"] == resolved["tokenizer"]["vocab_size"]
  assert Checkpointer(workdir).all_steps() == [15, 30]


def test_train_from_tfds_mock_data(tmp_path):
  c = tiny_config("tfds:lm1b:train", "tfds:lm1b:test", steps=4, log_every=2,
                  eval_every=4, checkpoint_every=4)
  with tfds.testing.mock_data(num_examples=64):
    summary = experiments.train(c, str(tmp_path / "run"))
  assert np.isfinite(summary["loss"]) and np.isfinite(summary["eval_loss"])


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=20)
  workdir = str(tmp_path / "run")
  c = tiny_config(f"text:{glob}", "", steps=6, log_every=1, checkpoint_every=1,
                  eval_every=100)
  c.optimizer.lr = 1e30
  c.optimizer.warmup_steps = 0
  c.optimizer.clip_norm = 0.0
  c.optimizer.schedule = "constant"
  with pytest.raises(loop.NonFiniteLoss, match=r"at step (\d+)") as err:
    experiments.train(c, workdir)
  bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
  ckpt = Checkpointer(workdir)
  steps = ckpt.all_steps()
  assert all(step < bad_step for step in steps)
  for step in steps:   # whatever was saved is finite and verifies
    state, _ = ckpt.restore_unsharded(step)
    assert all(np.isfinite(np.asarray(x)).all()
               for x in jax.tree.leaves(state))


def test_workdir_with_other_model_is_refused_untouched(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=20)
  workdir = str(tmp_path / "run")
  c = tiny_config(f"text:{glob}", "", steps=2, log_every=1, checkpoint_every=2,
                  eval_every=100)
  experiments.train(c, workdir)

  def snapshot():
    out = {}
    for root, _, files in os.walk(workdir):
      for f in files:
        p = os.path.join(root, f)
        out[p] = (os.path.getsize(p), os.path.getmtime(p))
    return out

  before = snapshot()
  c2 = tiny_config(f"text:{glob}", "", steps=4, log_every=1, checkpoint_every=2,
                   eval_every=100)
  c2.model.d_model = 32
  with pytest.raises(LmError, match=r"different model \(model.d_model"):
    experiments.train(c2, workdir)
  assert snapshot() == before


def test_missing_data_path_is_one_sentence(tmp_path):
  c = tiny_config(f"text:{tmp_path}/nothing/*.txt", "")
  with pytest.raises(LmError, match="nothing"):
    experiments.train(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_eval_batch_size_evaluates_the_same_split_in_fewer_batches(tmp_path):
  from launch.evaluate import evaluate_workdir  # pylint: disable=g-import-not-at-top
  glob = write_corpus(tmp_path / "corpus", n_docs=20)
  workdir = str(tmp_path / "run")
  c = tiny_config(f"text:{glob}[:80%]", f"text:{glob}[80%:]", steps=2,
                  log_every=2, eval_every=2, checkpoint_every=2, eval_steps=0)
  c.eval_batch_size = 4 * c.batch_size
  experiments.train(c, workdir)
  logged = [r for r in read_metrics(workdir) if "eval_loss" in r][-1]
  # launch.evaluate follows the run: the whole split in batches of 4x.
  same = evaluate_workdir(workdir)
  assert same["batches"] == logged["eval_batches"]
  # Rows of config.batch_size: the same tokens and loss, in more batches.
  small = evaluate_workdir(workdir, batch_size=c.batch_size)
  assert small["tokens"] == logged["eval_tokens"] > 0
  assert small["batches"] > 2 * logged["eval_batches"]
  assert small["loss"] == pytest.approx(logged["eval_loss"], rel=1e-5)


def test_bad_eval_batch_size_is_one_sentence(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=5)
  for size, match in [(-8, r"eval_batch_size=-8 must be >= 0"),
                      (12, r"eval_batch_size=12 is not divisible by the 8 "
                           r"batch shards")]:
    c = tiny_config(f"text:{glob}", "")
    c.eval_batch_size = size
    with pytest.raises(LmError, match=match):
      experiments.train(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_batch_not_divisible_by_mesh_is_one_sentence(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=5)
  c = tiny_config(f"text:{glob}", "", batch_size=12)
  with pytest.raises(LmError, match=r"batch_size=12 \(microbatch 12\) is not divisible by the 8 batch shards"):
    experiments.train(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
