"""launch.sweep: building sweeps, naming runs, dry runs and a real local sweep."""

import json
import math
import os
import shlex
import subprocess
import sys

import pytest

from launch import sweep
from lm.errors import LmError
from tests.training.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_product_and_zip():
  runs = sweep.product(**{"optimizer.lr": [1e-3, 3e-3], "model.size": ["tiny", "d384"]})
  assert runs == [{"optimizer.lr": 1e-3, "model.size": "tiny"},
                  {"optimizer.lr": 1e-3, "model.size": "d384"},
                  {"optimizer.lr": 3e-3, "model.size": "tiny"},
                  {"optimizer.lr": 3e-3, "model.size": "d384"}]
  assert sweep.zip_(seed=[1, 2], steps=[10, 20]) == [{"seed": 1, "steps": 10},
                                                     {"seed": 2, "steps": 20}]
  both = sweep.product(seed=[0]) + sweep.zip_(seed=[1, 2])
  assert [r["seed"] for r in both] == [0, 1, 2]
  assert sweep.product() == [{}]
  with pytest.raises(LmError, match="equal length"):
    sweep.zip_(seed=[1, 2], steps=[10])
  with pytest.raises(LmError, match="list of values"):
    sweep.product(seed=3)


def test_run_names_are_readable_deterministic_and_unique():
  runs = sweep.product(**{"optimizer.lr": [0.001, 0.003], "model.size": ["tiny"]})
  assert sweep.run_names(runs) == ["lr_0.001-size_tiny", "lr_0.003-size_tiny"]
  assert sweep.run_names(runs) == sweep.run_names(list(runs))
  # Clashing last components keep one more component; odd characters become `_`.
  names = sweep.run_names([{"data.train.x": "a/b c", "eval.x": -1, "flag": True}])
  assert names == ["train.x_a_b_c-eval.x__1-flag_true"]
  # Values that sanitize alike, repeated runs and empty runs stay unique.
  names = sweep.run_names([{"p": "a/b"}, {"p": "a b"}, {"p": "a/b"}, {}, {"p": ""}])
  assert names == ["p_a_b", "p_a_b-2", "p_a_b-3", "base", "p_empty"]
  long = sweep.run_names([{"data.train": "text:/some/long/path/to/a/corpus/*.txt[:90%]"}])[0]
  assert long.startswith("train_text__some_long_path_") and len(long) <= 6 + 31
  assert len(set(sweep.run_names([{"p": "x" * 40 + str(i)} for i in range(3)]))) == 3


def test_overrides_are_checked_against_the_config():
  config = sweep.load_config("configs/quickstart.py:runlocal")
  sweep.apply_overrides(config, {"optimizer.lr": 0.01, "steps": 3, "model.num_kv_heads": 2})
  assert config.optimizer.lr == 0.01 and config.steps == 3 and config.model.num_kv_heads == 2
  with pytest.raises(LmError, match="optimizer.lrr"):
    sweep.apply_overrides(config, {"optimizer.lrr": 0.1})
  with pytest.raises(LmError, match="'nope.x'"):
    sweep.apply_overrides(config, {"nope.x": 1})
  with pytest.raises(LmError, match="wrong type"):
    sweep.apply_overrides(config, {"steps": "many"})
  with pytest.raises(LmError, match="does not exist"):
    sweep.load_config("configs/missing.py")


def cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_dry_run_prints_one_train_command_per_run(tmp_path):
  result = cli("--config", "configs/quickstart.py:runlocal",
               "--sweep", "configs/sweeps/quickstart_lr.py",
               "--workdir_root", str(tmp_path), "--dry_run", "--config.steps=5")
  assert result.returncode == 0, result.stderr
  out = result.stdout.splitlines()
  runs = sweep.load_sweep(os.path.join(ROOT, "configs/sweeps/quickstart_lr.py"))
  names = sweep.run_names(runs)
  assert len(out) == len(runs) >= 4
  for line, name, run in zip(out, names, runs):
    argv = shlex.split(line)
    assert argv[:7] == ["python", "-m", "launch.train", "--config",
                        "configs/quickstart.py:runlocal", "--workdir",
                        os.path.join(str(tmp_path), name)]
    assert argv[7:] == ["--config.steps=5"] + [f"--config.{k}={v}" for k, v in run.items()]
  assert not os.listdir(tmp_path)

  result = cli("--config", "configs/quickstart.py", "--sweep", "configs/sweeps/quickstart_lr.py",
               "--dry_run", "--tpu", "my-tpu", "--zone", "us-central2-b",
               "--bucket", "gs://bkt/")
  assert result.returncode == 0, result.stderr
  out = result.stdout.splitlines()
  assert len(out) == len(runs)
  assert out[0].startswith("bash launch/tpu_vm.sh run --wait --name my-tpu --zone us-central2-b "
                           "--config configs/quickstart.py --workdir "
                           f"gs://bkt/quickstart_lr/{names[0]} --config.optimizer.lr=")

  result = cli("--config", "configs/quickstart.py", "--sweep", "configs/sweeps/quickstart_lr.py",
               "--workdir_root", str(tmp_path), "--dry_run", "--config.optimizer.bogus=1")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: override key 'optimizer.bogus' is not in the config."]


def test_local_sweep_trains_each_run(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=30)
  base = {"steps": 2, "data.tokenizer.vocab_size": 300, "peak_tflops": 1.0,
          "sample.prompt": "", "data.train": f"text:{glob}[:90%]",
          "data.eval": f"text:{glob}[90%:]"}
  runs = sweep.product(**{"optimizer.lr": [1e-3, 3e-3]}) + [{"model.num_heads": 3}]
  printed = []
  rows = sweep.run_local("configs/quickstart.py:runlocal", runs, str(tmp_path / "sweep"),
                         base_overrides=base,
                         say=lambda *a, **k: printed.append(" ".join(map(str, a))))
  assert [r["name"] for r in rows] == ["lr_0.001", "lr_0.003", "num_heads_3"]
  for row in rows[:2]:
    assert row["status"] == "ok", row
    assert os.path.isfile(os.path.join(row["workdir"], "metrics.jsonl"))
    for key in sweep.METRICS:
      assert math.isfinite(row[key]), (key, row)
  assert rows[0]["eval_loss"] != rows[1]["eval_loss"]
  assert rows[2]["status"] == "failed" and rows[2]["error"]
  assert rows[2]["eval_loss"] is None
  with open(tmp_path / "sweep" / "sweep_summary.json") as f:
    assert json.load(f) == rows
  table = printed[-1].splitlines()
  assert table[0].startswith("| run | status | loss | eval_loss |")
  assert table[2].startswith("| lr_0.001 | ok | ") and table[4].endswith("failed |  |  |  |  |")
