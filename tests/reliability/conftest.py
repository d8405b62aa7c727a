"""Shared pieces of the run-guarantee tests: one finished quickstart run,
command lines run as a user would, and the checks every case makes."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.cli import ROOT, cli

CONFIG = "configs/quickstart.py:runlocal"


def spawn(module: str, *args: str, cwd: str = ROOT, env=None) -> subprocess.Popen:
  """`python -m module args...` started in the background (CPU, text pipes)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_all(*commands) -> list[subprocess.CompletedProcess]:
  """Runs `(module, *args)` commands two at a time (the CI machine has two
  cores); results in order."""
  results = [None] * len(commands)
  for start in range(0, len(commands), 2):
    procs = [(i, spawn(*commands[i]))
             for i in range(start, min(start + 2, len(commands)))]
    for i, proc in procs:
      results[i] = finish(proc)
  return results


def no_traceback(result) -> None:
  assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]


def one_error(result) -> str:
  """The single `error: ...` line of a refused command (exit status 2)."""
  no_traceback(result)
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1, result.stderr
  return errors[0]


def warnings_of(result) -> list[str]:
  return [l for l in (result.stdout + result.stderr).splitlines()
          if l.startswith("warning: ")]


def digest(workdir: str, step: int) -> dict:
  """The stored array sums of checkpoint `step`: equal digests mean
  bitwise-equal train states."""
  path = os.path.join(workdir, "checkpoints", str(step), "digest", "metadata")
  with open(path, encoding="utf-8") as f:
    return json.load(f)["state"]


def tree(workdir: str, skip=("lock",)) -> dict:
  """Every file under `workdir` with its size and mtime (a write shows)."""
  out = {}
  for dirpath, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, workdir)
      if rel not in skip:
        st = os.stat(path)
        out[rel] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> str:
  """A quickstart runlocal workdir trained to step 6 (checkpoints 3 and 6);
  copy it with `copy_run` before changing anything."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  result = cli("launch.train", "--config", CONFIG, "--workdir", workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture
def copy_run(finished_run, tmp_path):
  """`copy_run(name)` -> a fresh copy of `finished_run` under tmp_path."""
  def make(name: str = "run") -> str:
    target = str(tmp_path / name)
    shutil.copytree(finished_run, target)
    return target
  return make
