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
                 "import_hf": "A local Hugging Face model directory.",
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
