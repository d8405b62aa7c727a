"""Two real processes on 127.0.0.1 (gloo collectives) train like one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from lm.training.checkpoint import Checkpointer
from tests.training.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def args(workdir, glob):
  return ["-m", "launch.train", "--config", "configs/quickstart.py:runlocal",
          f"--workdir={workdir}", f"--config.data.train=text:{glob}",
          "--config.data.eval=", "--config.data.tokenizer.vocab_size=300",
          "--config.steps=3", "--config.log_every=1", "--config.checkpoint_every=3",
          "--config.eval_every=3", "--config.sample.prompt=", "--config.peak_tflops=1"]


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_two_processes_match_one(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=30)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  single = str(tmp_path / "single")
  r = subprocess.run([sys.executable, *args(single, glob)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  # the tokenizer is shared so both runs see the same token stream
  multi = tmp_path / "multi"
  multi.mkdir()
  (multi / "tokenizer.model").write_bytes(open(os.path.join(single, "tokenizer.model"), "rb").read())
  port = free_port()
  # output goes to files: a process never blocks on a pipe nobody reads yet
  logs = [open(tmp_path / f"process{i}.log", "w+", encoding="utf-8") for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, *args(str(multi), glob), f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}",
       # each process is one DCN granule: the data axis spans the two processes
       "--config.mesh.data=1", "--config.mesh.dcn_data=2",
       "--config.mesh.dcn_granule=process"], cwd=ROOT, env=env,
      stdout=log, stderr=subprocess.STDOUT, text=True) for i, log in enumerate(logs)]
  for p in procs:
    p.wait(timeout=600)
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  for i, p in enumerate(procs):
    assert p.returncode == 0, "\n".join(
        f"--- process {j} (exit {q.returncode}) ---\n{out[-2500:]}"
        for j, (q, out) in enumerate(zip(procs, outputs)))
  np.testing.assert_allclose(losses(str(multi)), losses(single), rtol=1e-5)
  # the joint checkpoint restores in one process
  state, data = Checkpointer(str(multi)).restore_unsharded(3)
  ref, _ = Checkpointer(single).restore_unsharded(3)
  assert data["step"] == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5),
               state["params"], ref["params"])
