"""Workdirs: one writer at a time, refusals that write nothing, runs that
hold their own tokenizer and can move, and one sentence for paths that
cannot be a workdir; all through the real command lines."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from lm.data.tokenizer import train_tokenizer
from tests.cli import ROOT, cli
from tests.reliability.conftest import (CONFIG, finish, no_traceback,
                                        one_error, spawn, tree)


def _hold_lock(workdir: str) -> subprocess.Popen:
  """A process that holds `workdir`'s writer lock until killed."""
  code = ("import sys, time; from lm.training.lock import WorkdirLock; "
          "WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); "
          "time.sleep(600)")
  proc = subprocess.Popen([sys.executable, "-c", code, workdir], cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_writer_stops_at_once_and_a_killed_one_leaves_no_lock(copy_run):
  workdir = copy_run()
  holder = _hold_lock(workdir)
  try:
    before = tree(workdir)
    refused = cli("launch.train", "--config", CONFIG, "--workdir", workdir,
                  "--config.steps=9")
    message = one_error(refused)
    assert f"pid {holder.pid}" in message and socket.gethostname() in message
    assert tree(workdir) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # kill -9 released the lock; readers never needed it. Re-running the
  # finished run prints its stored final metrics.
  again = cli("launch.train", "--config", CONFIG, "--workdir", workdir)
  no_traceback(again)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "already trained to step 6" in again.stdout
  final = [l for l in again.stdout.splitlines() if l.startswith("final: ")]
  assert final and "eval_loss" in final[0], again.stdout


def test_readers_need_no_lock(copy_run):
  workdir = copy_run()
  holder = _hold_lock(workdir)
  try:
    result = cli("launch.sample", "--workdir", workdir, "--prompt", "def ",
                 "--max_new_tokens", "2")
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  no_traceback(result)
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("tok") / "other.model")
  text = ["def f(x):\n    return x + 1\n", "class A:\n    pass\n"] * 200
  train_tokenizer(text, path, vocab_size=300)
  return path


def test_refused_resumes_write_nothing(copy_run, other_tokenizer):
  workdir = copy_run()
  before = tree(workdir)
  tokenizer, vocab = (
      finish(spawn("launch.train", "--config", CONFIG, "--workdir", workdir,
                   "--config.steps=9", *extra))
      for extra in ([f"--config.data.tokenizer.path={other_tokenizer}"],
                    ["--config.data.tokenizer.vocab_size=600"]))
  assert "different tokenizer" in one_error(tokenizer)
  assert "vocab_size" in one_error(vocab)
  assert tree(workdir) == before


def test_a_moved_workdir_works_from_any_cwd(copy_run, tmp_path, other_tokenizer):
  workdir = copy_run("a")
  elsewhere = tmp_path / "moved" / "deeper"
  elsewhere.parent.mkdir()
  os.rename(workdir, elsewhere)
  with open(elsewhere / "config.json", encoding="utf-8") as f:
    assert json.load(f)["tokenizer"]["path"] == "tokenizer.model"
  cwd = str(tmp_path / "moved")
  proc = spawn("launch.sample", "--workdir", "deeper", "--prompt", "def ",
               "--max_new_tokens", "2", cwd=cwd)
  result = finish(proc)
  no_traceback(result)
  assert result.returncode == 0, result.stderr[-2000:]
  # a tokenizer file that is not the one the run was trained with
  shutil.copyfile(other_tokenizer, elsewhere / "tokenizer.model")
  swapped = finish(spawn("launch.sample", "--workdir", "deeper", "--prompt",
                         "def ", cwd=cwd))
  assert "not the one the run" in one_error(swapped)


def test_a_run_from_a_named_tokenizer_holds_its_own_copy(tmp_path, finished_run):
  source = tmp_path / "source"
  shutil.copytree(finished_run, source)
  workdir = str(tmp_path / "named")
  result = cli("launch.train", "--config", CONFIG, "--workdir", workdir,
               f"--config.data.tokenizer.path={source / 'tokenizer.model'}",
               "--config.steps=3", "--config.sample.prompt=")
  no_traceback(result)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["tokenizer"]["path"] == "tokenizer.model"
  shutil.rmtree(source)            # the named file is gone; the run is not
  sample = cli("launch.sample", "--workdir", workdir, "--prompt", "def ",
               "--max_new_tokens", "2")
  no_traceback(sample)
  assert sample.returncode == 0, sample.stderr[-2000:]


# Run `launch.train` in a process where the file system refuses every write
# under $LM_TEST_READ_ONLY with EROFS, as a read-only mount does. Used when
# the tests run as root, whom permission bits do not stop.
_READ_ONLY_MOUNT = """
import builtins, errno, os, runpy, sys
root = os.path.abspath(os.environ["LM_TEST_READ_ONLY"])
def inside(path):
  path = os.path.abspath(os.fsdecode(os.fspath(path)))
  return path == root or path.startswith(root + os.sep)
def refuse(path):
  raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(os.fspath(path)))
real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open
def os_open(path, flags, *args, **kwargs):
  if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
    refuse(path)
  return real_open(path, flags, *args, **kwargs)
def mkdir(path, *args, **kwargs):
  if inside(path):
    refuse(path)
  return real_mkdir(path, *args, **kwargs)
def builtin_open(file, mode="r", *args, **kwargs):
  if (isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+")
      and inside(file)):
    refuse(file)
  return real_builtin_open(file, mode, *args, **kwargs)
os.open, os.mkdir, builtins.open = os_open, mkdir, builtin_open
sys.argv = ["launch.train", *sys.argv[1:]]
runpy.run_module("launch.train", run_name="__main__", alter_sys=True)
"""


def test_paths_that_cannot_be_a_workdir_are_one_sentence(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  read_only = tmp_path / "read_only"
  read_only.mkdir()
  args = ["--config", CONFIG]
  env = dict(os.environ, JAX_PLATFORMS="cpu", LM_TEST_READ_ONLY=str(read_only))
  if os.geteuid() == 0:     # root writes through permission bits
    unwritable = [sys.executable, "-c", _READ_ONLY_MOUNT, *args]
  else:
    read_only.chmod(0o555)
    unwritable = [sys.executable, "-m", "launch.train", *args]
  plain = [sys.executable, "-m", "launch.train", *args]
  procs = [subprocess.Popen(cmd + ["--workdir", w], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
           for cmd, w in ((plain, str(a_file)), (plain, str(a_file / "run")),
                          (unwritable, str(read_only / "run")),
                          (unwritable, str(read_only)))]
  results = [finish(p) for p in procs]
  contents = os.listdir(read_only)
  read_only.chmod(0o755)
  assert "is a file" in one_error(results[0])
  assert "which is a file" in one_error(results[1])
  for result in results[2:]:
    assert "cannot write to workdir" in one_error(result)
  assert contents == []
