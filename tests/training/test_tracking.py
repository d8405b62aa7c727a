"""Experiment tracking: TensorBoard gets the config, the sample and the
hparams with the final metrics; Weights & Biases (offline) gets the same run
across a resume."""

import glob
import json
import os

import pytest

from configs import quickstart
from lm import experiments
from lm.errors import LmError
from tests.training.corpus import set_keys, write_corpus


def _config(corpus, steps):
  c = quickstart.get_config("runlocal")
  return set_keys(c, {"data.train": f"text:{corpus}", "data.eval": f"text:{corpus}",
                      "data.tokenizer.vocab_size": 300, "steps": steps,
                      "log_every": 1, "eval_every": 3, "checkpoint_every": 3,
                      "sample.prompt": "def ", "sample.max_new_tokens": 4,
                      "peak_tflops": 1.0, "wandb.project": "lm-tests"})


def _events(workdir) -> bytes:
  return b"".join(open(p, "rb").read() for p in glob.glob(
      os.path.join(workdir, "tensorboard", "**", "events.out.tfevents.*"),
      recursive=True))


def test_tensorboard_and_wandb_follow_the_run_across_a_resume(tmp_path,
                                                              monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  corpus = write_corpus(tmp_path / "corpus", n_docs=20)
  workdir = str(tmp_path / "run")
  first = experiments.train(_config(corpus, 3), workdir)
  run_id = open(os.path.join(workdir, "wandb_run_id")).read().strip()
  final = experiments.train(_config(corpus, 6), workdir)      # resumes at 3
  assert open(os.path.join(workdir, "wandb_run_id")).read().strip() == run_id
  # one W&B run, offline, inside the workdir, written by both processes:
  # each wrote its own steps' rows, the config and the summary
  runs = sorted(glob.glob(os.path.join(workdir, "wandb", f"offline-run-*-{run_id}")))
  assert len(runs) == 2, os.listdir(os.path.join(workdir, "wandb"))
  logs = [open(os.path.join(r, f"run-{run_id}.wandb"), "rb").read() for r in runs]
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  for row in rows:
    # (numbers W&B writes as Python does: small ones it spells otherwise)
    values = [json.dumps(row[k]).encode() for k in ("loss", "grad_norm",
                                                     "param_norm", "eval_loss")
              if k in row]
    mine, other = (logs[0], logs[1]) if row["step"] <= 3 else (logs[1], logs[0])
    assert all(v in mine for v in values), row
    assert values and not any(v in other for v in values), row
  for log, step in zip(logs, (3, 6)):
    assert b"lm-tests" in log and b"optimizer" in log       # project, config
    assert f"--- sample (step {step}) ---".encode() in log  # summary
  # TensorBoard: scalars, the config text, the sample and the hparams view
  events = _events(workdir)
  for tag in (b"loss", b"eval_loss", b"config/text_summary",
              b"sample/text_summary", b"lm-tests", b"final/loss"):
    assert tag in events, tag
  assert first["step"] == 3 and final["step"] == 6


def test_a_wandb_project_without_the_package_is_one_sentence(tmp_path,
                                                             monkeypatch):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else real(name, *a))
  c = _config(write_corpus(tmp_path / "corpus", n_docs=4), 3)
  with pytest.raises(LmError, match=r"config.wandb.project='lm-tests' needs the "
                     r"wandb package; pip install -e '.\[wandb\]'"):
    experiments.train(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
