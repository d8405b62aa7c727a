"""A training run interrupted at the worst moments resumes exactly.

Every test drives the real command line (`python -m launch.train`) in a
subprocess and interrupts it: kill -9 before the first checkpoint, kill -9
in the middle of writing a checkpoint, kill -9 in the middle of deleting an
old one, a full disk while a checkpoint is written, and SIGTERM before the
first step. Re-running the same command must then finish with exit 0 and a
final checkpoint bitwise equal to the one of a run that was never
interrupted (compared through the checkpoints' digests: two sums per array
of the train state).

Faults inside a save are injected deterministically, not by timing: the
command runs through a small wrapper that patches one Orbax function (the
JSON item writer, or the step-directory deleter) so that the process kills
itself, or sees ENOSPC, at a known point of the write for a known step.

All runs are the tiny quickstart for 9 steps keeping one checkpoint (saves
at 3, 6, 9; each new checkpoint deletes the previous one), about 20 s each
on 2 cores; the reference run trains in the background while the first test
runs.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.cli import ROOT

STEPS = 9
ARGS = ("--config", "configs/quickstart.py:runlocal", f"--config.steps={STEPS}",
        "--config.keep_checkpoints=1")
TIMEOUT = 400
TMP_SUFFIX = ".orbax-checkpoint-tmp"

# Patches run before `launch.train`, in the training process. Each targets
# one step's directory ("/checkpoints/{step}" or its temporary twin).

_ON_JSON_WRITE = """
import errno, os, re, signal, time
import orbax.checkpoint as ocp

_write = ocp.JsonCheckpointHandler._save_fn

def _target(directory):
  return re.search(r"/checkpoints/{step}(\\.[^/]*)?/digest", str(directory))

async def _save_fn(self, x, directory):
  if not _target(directory):
    return await _write(self, x, directory)
  {action}

ocp.JsonCheckpointHandler._save_fn = _save_fn
"""

# kill -9 while checkpoint {step} is half written: the digest item is
# written and the state item's array files have started to appear.
KILL_DURING_SAVE = _ON_JSON_WRITE.replace("{action}", """
  step_dir = os.path.dirname(str(directory))
  deadline = time.time() + 120
  while time.time() < deadline:
    states = [os.path.join(step_dir, n) for n in os.listdir(step_dir)
              if n.startswith("state")]
    if any(files for s in states for _, _, files in os.walk(s)):
      break
    time.sleep(0.01)
  else:
    os._exit(97)        # the state item never started: the test must fail
  await _write(self, x, directory)
  os.kill(os.getpid(), signal.SIGKILL)
""")

# The disk fills up while the digest item of checkpoint {step} is written.
DISK_FULL_DURING_SAVE = _ON_JSON_WRITE.replace("{action}", """
  raise OSError(errno.ENOSPC, "No space left on device")
""")

# kill -9 halfway through deleting old checkpoint {step}: half of its files
# (in sorted order, so the top-level metadata goes first) are removed.
KILL_DURING_DELETE = """
import os, signal
from orbax.checkpoint._src.path import deleter

_delete = deleter.PathDeleter.delete

def delete(self, path, *args, **kwargs):
  if (kwargs.get("destination") is None and os.path.basename(str(path)) == "{step}"
      and os.path.basename(os.path.dirname(str(path))) == "checkpoints"):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(str(path))
                   for f in fs)
    if len(files) < 4:
      os._exit(97)      # not a full checkpoint: the test must fail
    for f in files[:len(files) // 2]:
      os.unlink(f)
    os.kill(os.getpid(), signal.SIGKILL)
  return _delete(self, path, *args, **kwargs)

deleter.PathDeleter.delete = delete
"""


def command(workdir: str, patch: str | None = None, step: int = 0) -> list[str]:
  """The training command for `workdir`, run through `patch` (with `{step}`
  naming the checkpoint it targets) when given."""
  args = [*ARGS, "--workdir", workdir]
  if patch is None:
    return [sys.executable, "-m", "launch.train", *args]
  code = (patch.replace("{step}", str(step))
          + "\nimport runpy, sys\n"
          + f"sys.argv = {['launch/train.py', *args]!r}\n"
          + "runpy.run_module('launch.train', run_name='__main__', alter_sys=True)\n")
  return [sys.executable, "-c", code]


def start(cmd: list[str]) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  try:
    out, err = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"training did not finish in {TIMEOUT} s:\n{(out + err)[-3000:]}")
  return proc.returncode, out, err


def run(cmd: list[str]) -> tuple[int, str, str]:
  return finish(start(cmd))


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
  """Returns once `path` exists; fails if `proc` ends or time runs out first."""
  deadline = time.time() + timeout
  while not os.path.exists(path):
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"the run ended (exit {proc.returncode}) before {path} "
                  f"existed:\n{(out + err)[-3000:]}")
    if time.time() > deadline:
      proc.kill()
      proc.communicate()
      pytest.fail(f"{path} did not appear within {timeout} s")
    time.sleep(0.01)


def step_dirs(workdir: str) -> list[str]:
  """Every entry of `workdir/checkpoints`, sorted."""
  directory = os.path.join(workdir, "checkpoints")
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def finished_steps(workdir: str) -> list[int]:
  """The steps Orbax lists as finished checkpoints of `workdir`."""
  from lm.training.checkpoint import Checkpointer
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def state_digest(workdir: str, step: int) -> dict:
  """The per-array sums the digest item of checkpoint `step` records."""
  with open(os.path.join(workdir, "checkpoints", str(step), "digest",
                         "metadata")) as f:
    sums = json.load(f)["state"]
  assert sums, f"checkpoint {step} of {workdir} records no arrays"
  return sums


def assert_clean(rc: int, out: str, err: str, expected: int = 0) -> None:
  assert rc == expected, f"exit {rc}, expected {expected}:\n{(out + err)[-3000:]}"
  assert "Traceback" not in out + err, (out + err)[-5000:]


def assert_resumed_exactly(workdir: str, reference, resumed_at: int | None):
  """Re-runs the plain command in `workdir`; it must finish, resume at
  `resumed_at` (None: start over) and end bitwise on the reference."""
  rc, out, err = run(command(workdir))
  assert_clean(rc, out, err)
  if resumed_at is None:
    assert "; starting;" in out, out
  else:
    assert f"resuming at step {resumed_at};" in out, out
  assert re.search(r"^final: loss ", out, re.M), out
  assert state_digest(workdir, STEPS) == reference.digest(), (
      f"checkpoint {STEPS} of the resumed run differs from the uninterrupted one")
  assert not [n for n in step_dirs(workdir) if TMP_SUFFIX in n], step_dirs(workdir)
  return out, err


class Reference:
  """An uninterrupted run, trained in the background until first needed."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._proc = start(command(workdir))
    self._digest = None

  def digest(self) -> dict:
    if self._digest is None:
      rc, out, err = finish(self._proc)
      assert_clean(rc, out, err)
      self._digest = state_digest(self.workdir, STEPS)
    return self._digest


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  ref = Reference(str(tmp_path_factory.mktemp("reference") / "w"))
  yield ref
  if ref._proc.poll() is None:  # pylint: disable=protected-access
    ref._proc.kill()            # pylint: disable=protected-access
    ref._proc.communicate()     # pylint: disable=protected-access


def test_kill_before_first_checkpoint_then_rerun_matches(reference, tmp_path):
  workdir = str(tmp_path / "w")
  proc = start(command(workdir))
  wait_for(os.path.join(workdir, "lock"), proc)
  proc.send_signal(signal.SIGKILL)
  rc, _, _ = finish(proc)
  assert rc == -signal.SIGKILL
  assert not [n for n in step_dirs(workdir) if n.isdigit()], step_dirs(workdir)
  assert_resumed_exactly(workdir, reference, resumed_at=None)


def test_kill_during_save_leaves_step_unlisted_and_resumes(reference, tmp_path):
  workdir = str(tmp_path / "w")
  rc, out, err = run(command(workdir, KILL_DURING_SAVE, step=6))
  assert rc == -signal.SIGKILL, f"exit {rc}:\n{(out + err)[-3000:]}"
  assert "step 6:" in out, out          # it got as far as checkpoint 6
  names = step_dirs(workdir)
  assert "6" not in names and f"6{TMP_SUFFIX}" in names, names
  assert finished_steps(workdir) == [3]
  assert_resumed_exactly(workdir, reference, resumed_at=3)


def test_kill_during_retention_delete_resumes_newest(reference, tmp_path):
  workdir = str(tmp_path / "w")
  # Saving checkpoint 6 deletes checkpoint 3 once 6 is committed.
  rc, out, err = run(command(workdir, KILL_DURING_DELETE, step=3))
  assert rc == -signal.SIGKILL, f"exit {rc}:\n{(out + err)[-3000:]}"
  names = step_dirs(workdir)
  assert "6" in names and "3" in names, names
  assert finished_steps(workdir)[-1] == 6
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "3",
                                         "_CHECKPOINT_METADATA"))
  out, err = assert_resumed_exactly(workdir, reference, resumed_at=6)
  for line in (out + err).splitlines():
    assert not line.startswith("error:"), line
    if line.startswith("warning:"):
      assert re.match(r"warning: checkpoint .*/checkpoints/3 is damaged", line), line
  # The half-deleted step does not linger once retention runs again.
  assert [n for n in step_dirs(workdir) if n.isdigit()] == [str(STEPS)], (
      step_dirs(workdir))


def test_disk_full_during_save_stops_with_one_line_and_resumes(reference, tmp_path):
  workdir = str(tmp_path / "w")
  rc, out, err = run(command(workdir, DISK_FULL_DURING_SAVE, step=6))
  assert_clean(rc, out, err, expected=2)
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, err
  assert "writing checkpoint 6 to" in errors[0], errors[0]
  assert "(No space left on device)" in errors[0], errors[0]
  assert "checkpoint 3 is intact" in errors[0], errors[0]
  assert err.strip().splitlines() == errors, err   # nothing else on stderr
  assert not re.search(r"^final:", out, re.M), out
  assert finished_steps(workdir) == [3]
  assert_resumed_exactly(workdir, reference, resumed_at=3)


def test_sigterm_before_first_step_saves_nothing(reference, tmp_path):
  workdir = str(tmp_path / "w")
  proc = start(command(workdir))
  wait_for(os.path.join(workdir, "lock"), proc)
  proc.send_signal(signal.SIGTERM)
  rc, out, err = finish(proc)
  assert_clean(rc, out, err)
  assert "stopped by SIGTERM before the first step; nothing was saved." in out, out
  assert not re.search(r"^final:", out, re.M), out
  assert not [n for n in step_dirs(workdir) if n.isdigit()], step_dirs(workdir)
  assert_resumed_exactly(workdir, reference, resumed_at=None)
