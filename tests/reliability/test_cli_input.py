"""Entry points and bad input: help pages, config keys, sweep files, HF shard
paths, file modes and tpu_vm.sh arguments.

Each command-line case runs the real `python -m launch.X` in a subprocess
(several at once where they are independent) and checks the exact exit status,
that no traceback is shown and, for bad input, that stderr is one
`error: ...` line and nothing was written.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli import ROOT, cli

ENTRY_POINTS = ("train", "sample", "evaluate", "encode", "predict", "import_hf",
                "export_hf", "sweep")


def run_all(cases):
  """`cli(*case)` for every case, a few at a time; results in case order."""
  with ThreadPoolExecutor(max_workers=4) as pool:
    return list(pool.map(lambda case: cli(*case), cases))


def one_error_line(result) -> str:
  """The single `error: ...` line of a refused command (exit status 2)."""
  assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
  assert "Traceback" not in result.stdout + result.stderr, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def defined_flags(module: str) -> list[str]:
  """The flag names an entry point defines, read from its source."""
  with open(os.path.join(ROOT, "launch", f"{module}.py"), encoding="utf-8") as f:
    source = f.read()
  names = re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)
  names += re.findall(r"add_argument\(\s*\"--(\w+)\"", source)
  assert names, module
  return names


# --- 1. --help and -h ---------------------------------------------------------


def test_help_prints_usage_and_every_flag_and_exits_0():
  cases = [(f"launch.{m}", flag) for m in ENTRY_POINTS for flag in ("--help", "-h")]
  for (module, flag), result in zip(cases, run_all(cases)):
    name = module.split(".")[1]
    out = result.stdout
    assert result.returncode == 0, (module, flag, result.stderr)
    assert "Traceback" not in out + result.stderr, (module, flag, result.stderr)
    assert result.stderr == "", (module, flag, result.stderr)
    # The module's usage (its docstring's first line) and each of its flags.
    with open(os.path.join(ROOT, "launch", f"{name}.py"), encoding="utf-8") as f:
      first_doc_line = f.read().split('"""')[1].strip().splitlines()[0]
    assert first_doc_line in out, (module, flag, out)
    assert f"python -m {module}" in out, (module, flag, out)
    for flag_name in defined_flags(name):
      assert re.search(rf"--(\[no\])?{flag_name}\b", out), (module, flag, flag_name, out)
    # Flag help text is shown, not just the names.
    help_text = {"train": "Directory for everything the run writes.",
                 "import_hf": "A Hugging Face model directory (a local path or a gs:// URI).",
                 "sweep": "print the commands only"}.get(name)
    assert help_text is None or help_text in out, (module, flag, out)


def test_flag_errors_stay_one_sentence_with_status_2(tmp_path):
  results = run_all([("launch.sample", "--bogus"), ("launch.train", "--helpp"),
                     ("launch.sweep", "--config", "c.py")])
  assert "bogus" in one_error_line(results[0])
  assert "helpp" in one_error_line(results[1])
  assert "--sweep" in one_error_line(results[2])


# --- 2. unknown config keys ---------------------------------------------------


def test_unknown_config_key_is_one_sentence_and_writes_nothing(tmp_path):
  workdirs = [tmp_path / f"w{i}" for i in range(4)]
  overrides = ["--config.stepz=3", "--config.optimizer.lrr=1",
               "--config.optimizer.qqqqqqqq=1", "--config.steps.x=1"]
  results = run_all([("launch.train", "--config", "configs/quickstart.py:runlocal",
                      f"--workdir={w}", o) for w, o in zip(workdirs, overrides)])
  lines = [one_error_line(r) for r in results]
  assert lines[0] == ("error: unknown config key 'stepz' (--config.stepz); "
                      "did you mean 'steps'?")
  assert lines[1] == ("error: unknown config key 'optimizer.lrr' "
                      "(--config.optimizer.lrr); did you mean 'optimizer.lr'?")
  # No close match: the section's keys are listed instead.
  assert lines[2].startswith("error: unknown config key 'optimizer.qqqqqqqq' "
                             "(--config.optimizer.qqqqqqqq); 'optimizer' has ")
  assert " lr," in lines[2]
  assert "'steps'" in lines[3] and "not a section" in lines[3]
  for w in workdirs:
    assert not w.exists()


# --- 3. broken sweep files ----------------------------------------------------


SWEEP_FILES = {
    "syntax.py": ("def get_sweep():\n  return [{'seed': 1}\n\nx = (\n",
                  r"sweep file \S+syntax\.py has a Python syntax error at line \d+"),
    "missing.py": ("SWEEP = [{'seed': 1}]\n",
                   r"sweep file \S+missing\.py does not define get_sweep\(\)"),
    "raises.py": ("def get_sweep():\n  runs = []\n  return runs[3]\n",
                  r"get_sweep\(\) in \S+raises\.py raised at line 3: IndexError"),
    "import_fails.py": ("import json\nimport no_such_module_for_lm_tests\n",
                        r"sweep file \S+import_fails\.py failed while loading at "
                        r"line 2: ModuleNotFoundError"),
}


def test_broken_sweep_file_is_one_sentence_with_file_and_line(tmp_path):
  cases, roots = [], []
  for name, (text, _) in SWEEP_FILES.items():
    (tmp_path / name).write_text(text)
    roots.append(tmp_path / f"root_{name}")
    cases.append(("launch.sweep", "--config", "configs/quickstart.py:runlocal",
                  "--sweep", str(tmp_path / name), "--workdir_root", str(roots[-1])))
  for (name, (_, pattern)), root, result in zip(SWEEP_FILES.items(), roots, run_all(cases)):
    line = one_error_line(result)
    assert re.match("error: " + pattern, line), (name, line)
    assert line.endswith("fix the file.") or "get_sweep()" in line, line
    assert not root.exists(), name


# --- 4. HF shards outside --hf_dir --------------------------------------------


def test_index_shard_outside_hf_dir_is_refused_before_anything_is_written(tmp_path):
  # A tiny GPT-2 config.json and an index only: the refusal must come before
  # any shard is opened, so no real tensors are needed.
  outside = tmp_path / "outside.safetensors"
  outside.write_bytes(b"not read")
  cases, workdirs = [], []
  for i, shard in enumerate(["../outside.safetensors", str(outside)]):
    hf_dir = tmp_path / f"hf{i}"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(
        '{"model_type": "gpt2", "vocab_size": 64, "n_positions": 32, '
        '"n_embd": 16, "n_layer": 1, "n_head": 2}')
    (hf_dir / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"wte.weight": "model-00001.safetensors", '
        f'"wpe.weight": "{shard}"}}}}')
    workdirs.append(tmp_path / f"run{i}")
    cases.append(("launch.import_hf", "--hf_dir", str(hf_dir),
                  "--workdir", str(workdirs[-1])))
  for i, result in enumerate(run_all(cases)):
    line = one_error_line(result)
    shard = "../outside.safetensors" if i == 0 else str(outside)
    assert f"names the shard {shard!r}, which lies outside" in line, line
    assert "model.safetensors.index.json" in line, line
    assert not workdirs[i].exists()


def test_shard_names_inside_the_model_directory_pass_the_check(tmp_path):
  from lm.errors import LmError
  from lm.interop import tensors
  for name in ("model-00001-of-00002.safetensors", "sub/../model.safetensors"):
    tensors._check_shard_name(name, "index.json", str(tmp_path))
  for name in ("../x.safetensors", "/abs/x.safetensors", "a/../../x", "", 3):
    with pytest.raises(LmError, match="index.json names the shard"):
      tensors._check_shard_name(name, "index.json", str(tmp_path))


# --- 5. written files follow the umask ----------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
  import numpy as np
  from lm import files
  from lm.interop.tensors import read_state, write_state
  old = os.umask(umask)
  try:
    assert files.default_file_mode() == mode
    target = write_state(str(tmp_path), {"w": np.arange(6, dtype=np.float32)})
    files.write_atomic(str(tmp_path / "blob.bin"), b"abc")
  finally:
    os.umask(old)
  assert os.stat(target).st_mode & 0o777 == mode
  assert os.stat(tmp_path / "blob.bin").st_mode & 0o777 == mode
  assert (tmp_path / "blob.bin").read_bytes() == b"abc"
  np.testing.assert_array_equal(read_state(str(tmp_path))["w"], np.arange(6))
  assert sorted(os.listdir(tmp_path)) == ["blob.bin", "model.safetensors"]


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path):
  from lm import files
  target = tmp_path / "out.bin"
  target.write_bytes(b"old")
  with pytest.raises(RuntimeError):
    with files.atomic_path(str(target)) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("writer failed")
  assert target.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["out.bin"]


# --- 6. tpu_vm.sh values that look like flags ---------------------------------


def test_tpu_vm_refuses_values_that_begin_with_a_dash(tmp_path):
  import subprocess
  # gcloud on PATH records any call: a refused command must not reach it.
  calls = tmp_path / "calls"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
  fake.chmod(0o755)
  env = dict(os.environ, PATH=f"{fake.parent}:/usr/bin:/bin")
  base = ["--zone", "us-central2-b"]
  cases = [
      (["delete", "--name", "--zone", "us-central2-b"], "--name", "'--zone'"),
      (["delete", "--name=--zone", "us-central2-b"], "--name", "'--zone'"),
      (["delete", "--name", "-x", *base], "--name", "'-x'"),
      (["delete", "--name=-x", *base], "--name", "'-x'"),
      (["setup", "--name", "n", *base, "--repo", "--upload-pack=touch x"], "--repo",
       "'--upload-pack=touch x'"),
      (["setup", "--name", "n", *base, "--repo=-uevil"], "--repo", "'-uevil'"),
      (["run", "--name", "n", *base, "--config", "-c", "--workdir", "gs://b/r"],
       "--config", "'-c'"),
      (["logs", "--name", "n", *base, "--worker", "-1"], "--worker", "'-1'"),
      (["create", "--name", "n", "--zone", "z", "--type", "--spot"], "--type", "'--spot'"),
  ]
  procs = [subprocess.Popen(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for args, _, _ in cases]
  for (args, flag, value), proc in zip(cases, procs):
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (args, out, err)
    assert out == "" and "Traceback" not in err, (args, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"error: {flag} needs a value, not {value} (a value cannot begin with '-'); "
        f"put it right after {flag}."), (args, lines)
  assert not calls.exists()
  # A real value still goes through to gcloud.
  ok = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "delete",
                       "--name=my-tpu", *base], cwd=ROOT, env=env, capture_output=True,
                      text=True, timeout=30)
  assert ok.returncode == 0, ok.stderr
  assert calls.read_text() == "compute tpus tpu-vm delete my-tpu --zone=us-central2-b --quiet\n"
