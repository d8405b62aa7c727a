"""Training on the streaming pipeline (data.pipeline='stream') end to end:
a kill -9 in the middle of a checkpoint resumes bitwise for the causal,
masked-LM and SimCSE objectives, Grain worker processes change nothing,
a run trained by two processes resumes in one on the same global batches,
and a corpus pre-tokenized by launch.prepare trains exactly as its text."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from lm.training.checkpoint import Checkpointer
from tests.cli import ROOT, cli
from tests.parallel.test_multiprocess import free_port, losses
from tests.reliability.test_interruptions import (KILL_DURING_SAVE,
                                                  assert_clean, finish, start,
                                                  state_digest)

STEPS = 6


def _corpus(tmp_path) -> str:
  """Two JSON-lines files of short generated documents."""
  rng = np.random.default_rng(0)
  words = ["the", "cat", "sat", "on", "a", "mat", "def", "return", "x", "y"]
  for i in range(2):
    with open(tmp_path / f"part{i}.jsonl", "w", encoding="utf-8") as f:
      for _ in range(120):
        text = " ".join(words[int(w)] for w in rng.integers(0, 10, 40))
        f.write(json.dumps({"text": text}) + "\n")
  return str(tmp_path / "part*.jsonl")


def _args(workdir, glob, *extra, steps=STEPS, data=None):
  train, evals = data or (f"jsonl:{glob}[:90%]", f"jsonl:{glob}[90%:]")
  return ["--config", "configs/quickstart.py:runlocal", f"--workdir={workdir}",
          "--config.data.pipeline=stream", "--config.data.max_chars=0",
          f"--config.data.train={train}", f"--config.data.eval={evals}",
          "--config.data.tokenizer.vocab_size=300", f"--config.steps={steps}",
          "--config.checkpoint_every=3", "--config.keep_checkpoints=3",
          "--config.eval_every=3", "--config.log_every=1",
          "--config.sample.prompt=", "--config.peak_tflops=1", *extra]


def _train(args, patch=None, env=None):
  if patch is None:
    cmd = [sys.executable, "-m", "launch.train", *args]
  else:
    cmd = [sys.executable, "-c", patch.replace("{step}", str(STEPS))
           + "\nimport runpy, sys\n"
           + f"sys.argv = {['launch/train.py', *args]!r}\n"
           + "runpy.run_module('launch.train', run_name='__main__', "
           "alter_sys=True)\n"]
  proc = start(cmd) if env is None else subprocess.Popen(
      cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)
  return finish(proc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(corpus glob, workdir) of an uninterrupted one-process run."""
  tmp = tmp_path_factory.mktemp("stream")
  glob = _corpus(tmp)
  ref = str(tmp / "ref")
  rc, out, err = _train(_args(ref, glob))
  assert_clean(rc, out, err)
  assert "documents, streamed" in out
  assert "eval loss" in out
  return glob, ref


def test_kill_9_resume_is_bitwise_and_workers_change_nothing(reference,
                                                             tmp_path):
  glob, ref = reference
  # killed while checkpoint 6 is half written, then resumed with two
  # Grain worker processes reading ahead
  run = str(tmp_path / "run")
  rc, out, err = _train(_args(run, glob), patch=KILL_DURING_SAVE)
  assert rc == -signal.SIGKILL, (out + err)[-3000:]
  rc, out, err = _train(_args(run, glob, "--config.data.workers=2"))
  assert_clean(rc, out, err)
  assert "resuming at step 3;" in out, out
  assert state_digest(run, STEPS) == state_digest(ref, STEPS)
  # the uncached data: no token stream was written, only the offset index
  assert not [n for n in os.listdir(os.path.join(ref, "data"))
              if n.startswith("stream-")]
  assert [n for n in os.listdir(os.path.join(ref, "data"))
          if n.startswith("index-")]


def test_two_processes_then_one_see_the_same_global_batches(reference,
                                                            tmp_path):
  glob, single = reference
  multi = tmp_path / "multi"
  multi.mkdir()
  (multi / "tokenizer.model").write_bytes(
      open(os.path.join(single, "tokenizer.model"), "rb").read())
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  logs = [open(tmp_path / f"process{i}.log", "w+", encoding="utf-8")
          for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.train",
       *_args(str(multi), glob, steps=3),
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}", "--config.mesh.data=1", "--config.mesh.dcn_data=2",
       "--config.mesh.dcn_granule=process"], cwd=ROOT, env=env, stdout=log,
      stderr=subprocess.STDOUT, text=True) for i, log in enumerate(logs)]
  for p in procs:
    p.wait(timeout=600)
  for log, p in zip(logs, procs):
    log.seek(0)
    text = log.read()
    log.close()
    assert p.returncode == 0, text[-3000:]
  # the two processes' checkpoint holds every row stream's position, the
  # same as the one-process run's at that step
  _, data = Checkpointer(str(multi)).restore_unsharded(3)
  _, ref_data = Checkpointer(single).restore_unsharded(3)
  assert data["streams"] == ref_data["streams"]
  # one process carries on from it and sees the one-process batches
  rc, out, err = _train(_args(str(multi), glob), env=env)
  assert_clean(rc, out, err)
  assert "resuming at step 3;" in out, out
  np.testing.assert_allclose(losses(str(multi)), losses(single), rtol=1e-5)


def _pairs(tmp_path) -> str:
  """Held-out anchor/positive pairs for the SimCSE run's retrieval eval."""
  rng = np.random.default_rng(1)
  with open(tmp_path / "pairs.jsonl", "w", encoding="utf-8") as f:
    for i in range(16):
      words = " ".join(str(int(w)) for w in rng.integers(0, 99, 6))
      f.write(json.dumps({"anchor": f"n{i} {words}",
                          "positive": f"{words} n{i}"}) + "\n")
  return str(tmp_path / "pairs.jsonl")


def _objective_args(name, workdir, glob, pairs):
  """The streamed run of the masked-LM or SimCSE quickstart on the corpus."""
  config = {"mlm": "configs/bert_quickstart.py:runlocal",
            "simcse": "configs/simcse_quickstart.py:runlocal"}[name]
  evals = (f"jsonl:{glob}[90%:]" if name == "mlm" else f"jsonl:{pairs}")
  return ["--config", config, f"--workdir={workdir}",
          "--config.data.pipeline=stream", "--config.data.max_chars=0",
          f"--config.data.train=jsonl:{glob}[:90%]",
          f"--config.data.eval={evals}",
          "--config.data.tokenizer.vocab_size=300", f"--config.steps={STEPS}",
          "--config.checkpoint_every=3", "--config.keep_checkpoints=3",
          "--config.eval_every=3", "--config.log_every=1",
          "--config.peak_tflops=1"]


@pytest.mark.parametrize("name", ["mlm", "simcse"])
def test_other_objectives_resume_bitwise_after_a_kill_9(name, reference,
                                                        tmp_path):
  glob, _ = reference
  pairs = _pairs(tmp_path)
  ref = str(tmp_path / "ref")
  rc, out, err = _train(_objective_args(name, ref, glob, pairs))
  assert_clean(rc, out, err)
  assert "documents, streamed" in out
  run = str(tmp_path / "run")
  rc, out, err = _train(_objective_args(name, run, glob, pairs),
                        patch=KILL_DURING_SAVE)
  assert rc == -signal.SIGKILL, (out + err)[-3000:]
  rc, out, err = _train([*_objective_args(name, run, glob, pairs),
                         "--config.data.workers=1"])
  assert_clean(rc, out, err)
  assert "resuming at step 3;" in out, out
  assert state_digest(run, STEPS) == state_digest(ref, STEPS)


def test_a_prepared_corpus_trains_as_the_text_it_came_from(reference,
                                                          tmp_path):
  pytest.importorskip("apache_beam")
  glob, ref = reference
  out = tmp_path / "prepared"
  r = cli("launch.prepare", f"--data=jsonl:{glob}",
          f"--tokenizer={os.path.join(ref, 'tokenizer.model')}",
          f"--out={out}", "--shards=2")
  assert r.returncode == 0, r.stderr[-3000:]
  # the run names no tokenizer: it takes the corpus's, the reference's
  run = str(tmp_path / "run")
  rc, text, err = _train(_args(run, glob, data=(f"prepared:{out}[:90%]",
                                                f"prepared:{out}[90%:]")))
  assert_clean(rc, text, err)
  assert losses(run) == losses(ref)
