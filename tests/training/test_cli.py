"""Bad command-line input stops with one sentence and exit status 2."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_train(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=300)


def one_line_error(result):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert "Traceback" not in result.stderr
  return lines[0]


@pytest.mark.parametrize("override,needle", [
    ("--config.modle.d_model=3", "modle"),
    ("--config.model.num_heads=5", "num_heads"),
    ("--config.data.train=text:/no/such/dir/*.txt", "/no/such/dir"),
    ("--config.data.train=tfds:no_such_dataset_xyz", "no_such_dataset_xyz"),
    ("--config.seq_len=4096", "seq_len"),
    ("--config.steps=abc", "config.steps"),
])
def test_bad_input_is_one_sentence(tmp_path, override, needle):
  workdir = tmp_path / "run"
  r = run_train("--config", "configs/quickstart.py:runlocal",
                f"--workdir={workdir}", override)
  assert needle in one_line_error(r)
  assert not (workdir / "checkpoints").exists()
  if needle in ("modle", "num_heads", "seq_len", "config.steps"):
    assert not workdir.exists()   # config errors stop before anything is written


def test_missing_workdir_flag():
  r = run_train("--config", "configs/quickstart.py:runlocal")
  assert "--workdir" in one_line_error(r)


def test_missing_config_file(tmp_path):
  r = run_train("--config", "configs/no_such_config.py", f"--workdir={tmp_path / 'run'}")
  assert "no_such_config.py" in one_line_error(r)
  assert not (tmp_path / "run").exists()
