"""N steps straight == N/2 steps, a new process, N/2 more: bitwise."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from lm.training.checkpoint import Checkpointer
from tests.training.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_cli(workdir, glob, steps, *extra):
  cmd = [sys.executable, "-m", "launch.train", "--config",
         "configs/quickstart.py:runlocal", f"--workdir={workdir}",
         f"--config.data.train=text:{glob}[:90%]",
         f"--config.data.eval=text:{glob}[90%:]",
         "--config.data.tokenizer.vocab_size=300",
         f"--config.steps={steps}", "--config.optimizer.decay_steps=8",
         "--config.log_every=1", "--config.checkpoint_every=4",
         "--config.eval_every=4", "--config.model.dropout=0.1",
         "--config.sample.prompt=", "--config.peak_tflops=1", *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def final_params(workdir):
  ckpt = Checkpointer(workdir)
  step = ckpt.latest_step()
  state, data = ckpt.restore_unsharded(step)
  assert data["step"] == step
  return step, jax.tree.leaves(state["params"])


def test_resume_is_bitwise(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=40)
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  r = train_cli(straight, glob, 8)
  assert r.returncode == 0, r.stderr[-3000:]
  r = train_cli(split, glob, 4)
  assert r.returncode == 0, r.stderr[-3000:]
  r = train_cli(split, glob, 8)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming at step 4" in r.stdout + r.stderr
  a, b = losses(straight), losses(split)
  assert sorted(a) == list(range(1, 9)) and a == b
  (sa, pa), (sb, pb) = final_params(straight), final_params(split)
  assert sa == sb == 8
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
