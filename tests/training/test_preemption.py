"""SIGTERM mid-training: exit 0 with a checkpoint; the restart finishes with
the same final loss as a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

from lm.training.checkpoint import Checkpointer
from tests.training.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 300


def command(workdir, glob):
  return [sys.executable, "-m", "launch.train", "--config",
          "configs/quickstart.py:runlocal", f"--workdir={workdir}",
          f"--config.data.train=text:{glob}", "--config.data.eval=",
          "--config.data.tokenizer.vocab_size=300", f"--config.steps={STEPS}",
          "--config.log_every=1", f"--config.checkpoint_every={STEPS}",
          f"--config.eval_every={STEPS}", "--config.sample.prompt=",
          "--config.peak_tflops=1"]


def final_loss(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["loss"] for r in rows if r["step"] == STEPS and "loss" in r][-1]


def test_sigterm_saves_and_resumes_exactly(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=30)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  straight = str(tmp_path / "straight")
  r = subprocess.run(command(straight, glob), cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]

  workdir = str(tmp_path / "preempted")
  proc = subprocess.Popen(command(workdir, glob), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 5:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "preempted: saved checkpoint" in out + err
  stopped_at = Checkpointer(workdir).latest_step()
  assert stopped_at is not None and 5 <= stopped_at < STEPS

  r = subprocess.run(command(workdir, glob), cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"resuming at step {stopped_at}" in r.stdout + r.stderr
  assert final_loss(workdir) == final_loss(straight)
