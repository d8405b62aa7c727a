"""Run one experiment config under a list of overrides (a sweep).

  python -m launch.sweep --config configs/quickstart.py \
      --sweep configs/sweeps/quickstart_lr.py --workdir_root runs/lr_sweep
  python -m launch.sweep ... --dry_run            # print the launch.train commands
  python -m launch.sweep ... --config.steps=100   # applied to every run, not named
  python -m launch.sweep ... --tpu my-tpu --zone us-central2-b --bucket gs://my-bucket

A sweep file defines `get_sweep()` returning a list of override dicts, flat dotted
config keys to values, built with `product` (cartesian product) and `zip_`
(element-wise); lists concatenate:

  def get_sweep():
    return (sweep.product(**{"optimizer.lr": [1e-3, 3e-3], "model.size": ["tiny"]})
            + sweep.zip_(**{"seed": [1, 2], "optimizer.warmup_steps": [10, 20]}))

Run names (and workdirs `WORKDIR_ROOT/<name>`) come from the overrides: each
`key=value` becomes `<key>_<value>` and pairs are joined by `-`, in the dict's
order, e.g. `{"optimizer.lr": 0.001, "model.size": "tiny"}` -> `lr_0.001-size_tiny`.
The key is its last dotted component, or the shortest dotted suffix that tells it
apart from the other keys of the sweep (`data.train.x` and `eval.x` -> `train.x`,
`eval.x`); characters other than letters, digits, `.`, `+` and `_` become `_`
(a `-` in a value too, so `-` only separates pairs), an empty value is `empty`,
values over 32 characters are cut to 24 plus a hash, and a run with no overrides
is `base`. Names that still collide get `-2`, `-3`, ... in sweep order, so
names are deterministic and unique.

Locally the runs train one after another in this process; a run that fails with
a user error is reported and the sweep goes on. The end prints a markdown table
of each run's final metrics and writes it to `WORKDIR_ROOT/sweep_summary.json`.
With `--tpu`, each run becomes one `launch/tpu_vm.sh run --wait` command on that
TPU VM (the runs take turns), with the workdir `gs://BUCKET/<sweep>/<name>`
(`<sweep>` is the sweep file's name).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Callable, Sequence

from lm import files
from lm.errors import LmError

METRICS = ("loss", "eval_loss", "eval_perplexity", "eval_accuracy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- building sweeps ---------------------------------------------------------


def product(**axes: Sequence[Any]) -> list[dict]:
  """The cartesian product of the axes; the last axis varies fastest.

  >>> product(**{"optimizer.lr": [1, 2], "model.size": ["tiny"]})
  [{'optimizer.lr': 1, 'model.size': 'tiny'}, {'optimizer.lr': 2, 'model.size': 'tiny'}]
  """
  keys = list(axes)
  values = [_axis(k, v) for k, v in axes.items()]
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def zip_(**axes: Sequence[Any]) -> list[dict]:
  """Element-wise combination: run i takes the i-th value of every axis.

  >>> zip_(seed=[1, 2], steps=[10, 20])
  [{'seed': 1, 'steps': 10}, {'seed': 2, 'steps': 20}]
  """
  values = {k: _axis(k, v) for k, v in axes.items()}
  lengths = {k: len(v) for k, v in values.items()}
  if len(set(lengths.values())) > 1:
    raise LmError("zip_ needs axes of equal length, got "
                  + ", ".join(f"{k}: {n}" for k, n in lengths.items()) + ".")
  n = next(iter(lengths.values()), 0)
  return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _axis(key: str, values) -> list:
  if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
    raise LmError(f"sweep axis {key!r} must be a list of values, got {values!r}.")
  return list(values)


# --- names -------------------------------------------------------------------


def _clean(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.+_]", "_", text)


def _value_text(value) -> str:
  text = _clean(format_value(value))
  if not text:
    return "empty"
  if len(text) > 32:
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    text = f"{text[:24]}_{digest}"
  return text


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Each key's shortest dotted suffix that no other key in `keys` ends with."""
  out = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
        break
    out[key] = _clean(suffix)
  return out


def run_names(runs: Sequence[dict]) -> list[str]:
  """Deterministic, unique names for the runs (see the module docstring)."""
  keys = list(dict.fromkeys(k for run in runs for k in run))
  short = _short_keys(keys)
  names, seen = [], {}
  for run in runs:
    name = "-".join(f"{short[k]}_{_value_text(v)}" for k, v in run.items()) or "base"
    seen[name] = seen.get(name, 0) + 1
    if seen[name] > 1:
      name = f"{name}-{seen[name]}"
      while name in seen:
        name += "_"
      seen[name] = 1
    names.append(name)
  return names


# --- configs -----------------------------------------------------------------


def load_config(spec: str):
  """Loads `path.py[:arg]` the way ml_collections' config_flags does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise LmError(f"config file {path} does not exist; pass --config configs/EXP.py[:ARG].")
  module = _load_module(path, "lm_sweep_config", "config file")
  if not hasattr(module, "get_config"):
    raise LmError(f"config file {path} does not define get_config().")
  return _call(module.get_config, path, "get_config()", *([arg] if arg else []))


def load_sweep(path: str) -> list[dict]:
  """The override dicts returned by `get_sweep()` in the sweep file `path`."""
  if not os.path.isfile(path):
    raise LmError(f"sweep file {path} does not exist; pass --sweep configs/sweeps/NAME.py.")
  module = _load_module(path, "lm_sweep_file", "sweep file")
  if not callable(getattr(module, "get_sweep", None)):
    raise LmError(f"sweep file {path} does not define get_sweep(); add a function "
                  "get_sweep() that returns a list of override dicts.")
  runs = _call(module.get_sweep, path, "get_sweep()")
  if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
    raise LmError(f"get_sweep() in {path} must return a list of override dicts.")
  if not runs:
    raise LmError(f"get_sweep() in {path} returned no runs.")
  return runs


def _load_module(path: str, name: str, kind: str):
  """Runs the Python file `path`; a syntax error or an exception while it runs
  becomes one sentence naming the `kind` of file, the file and the line."""
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None:
    raise LmError(f"{kind} {path} is not a Python file; pass a .py file.")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    line = f" at line {e.lineno}" if e.lineno else ""
    if e.filename and os.path.realpath(e.filename) != os.path.realpath(path):
      raise LmError(f"{kind} {path} imports {e.filename}, which has a Python syntax "
                    f"error{line} ({e.msg}); fix that file.") from None
    raise LmError(f"{kind} {path} has a Python syntax error{line} ({e.msg}); "
                  "fix the file.") from None
  except LmError:
    raise
  except Exception as e:
    raise LmError(f"{kind} {path} failed while loading{_where(e, path)}: "
                  f"{_brief(e)}; fix the file.") from None
  return module


def _call(fn: Callable, path: str, what: str, *args):
  """`fn(*args)`, where an exception other than `LmError` becomes one sentence
  naming the file and the line that raised it."""
  try:
    return fn(*args)
  except LmError:
    raise
  except Exception as e:
    raise LmError(f"{what} in {path} raised{_where(e, path)}: {_brief(e)}; "
                  "fix the file.") from None


def _where(error: BaseException, path: str) -> str:
  """` at line N`: the deepest line of `path` in the error's traceback."""
  import traceback
  target = os.path.realpath(path)
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if os.path.realpath(f.filename) == target]
  return f" at line {lines[-1]}" if lines else ""


def _brief(error: BaseException) -> str:
  """The error's type and the first line of its message."""
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def apply_overrides(config, overrides: dict):
  """Sets each dotted key on the ConfigDict in place; unknown keys and wrong
  types raise `LmError`. Returns the config."""
  import ml_collections
  for key, value in overrides.items():
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise LmError(f"override key {key!r} is not in the config "
                      f"({'.'.join(parts[:i + 1])} does not exist).")
      if i < len(parts) - 1:
        node = node[part]
    try:
      setattr(node, parts[-1], value)
    except (TypeError, ValueError) as e:
      raise LmError(f"override {key}={value!r} has the wrong type for the config "
                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__}).") from e
  return config


def parse_value(config, key: str, text: str):
  """A command-line `--config.KEY=TEXT` as a value of the field's type."""
  node = config
  for part in key.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise LmError(f"override key {key!r} is not in the config.") from None
  if isinstance(node, str):
    return text
  if isinstance(node, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise LmError(f"--config.{key} needs true or false, got {text!r}.")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def format_value(value) -> str:
  """A value as `launch.train --config.KEY=VALUE` takes it."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


# --- running -----------------------------------------------------------------


def _metric(summary: dict, key: str):
  value = summary.get(key)
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def run_local(config_spec: str, runs: Sequence[dict], workdir_root: str,
              base_overrides: dict | None = None,
              train_fn: Callable | None = None, say=print) -> list[dict]:
  """Trains each run in this process, one after another; returns the summary
  rows and writes them to `workdir_root/sweep_summary.json`.

  `base_overrides` apply to every run (before the run's own) and are not part
  of the run names. A run raising `LmError` is recorded as failed.
  """
  if train_fn is None:
    from lm import experiments
    train_fn = experiments.train
  names = run_names(runs)
  rows = []
  for i, (name, overrides) in enumerate(zip(names, runs)):
    workdir = files.join(workdir_root, name)
    say(f"[{i + 1}/{len(runs)}] {name}: {workdir}", flush=True)
    row = {"name": name, "workdir": workdir, "overrides": dict(overrides),
           "status": "ok", "error": None}
    try:
      config = load_config(config_spec)
      apply_overrides(config, dict(base_overrides or {}))
      apply_overrides(config, overrides)
      summary = train_fn(config, workdir) or {}
      row.update({k: _metric(summary, k) for k in METRICS})
    except LmError as e:
      row.update({"status": "failed", "error": str(e)}, **{k: None for k in METRICS})
      say(f"run {name} failed: {e}", flush=True)
    rows.append(row)
  files.makedirs(workdir_root)
  files.write_text_atomic(files.join(workdir_root, "sweep_summary.json"),
                          json.dumps(rows, indent=2, default=str))
  say(summary_table(rows), flush=True)
  return rows


def summary_table(rows: Sequence[dict]) -> str:
  """A markdown table: run name, status and the final metrics."""
  lines = ["| run | status | " + " | ".join(METRICS) + " |",
           "|---|---|" + "---:|" * len(METRICS)]
  for row in rows:
    cells = ["" if row.get(k) is None else f"{row[k]:.4f}" for k in METRICS]
    lines.append(f"| {row['name']} | {row['status']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def train_command(config_spec: str, workdir: str, overrides: dict) -> list[str]:
  """The `python -m launch.train` argv for one run."""
  return (["python", "-m", "launch.train", "--config", config_spec, "--workdir", workdir]
          + [f"--config.{k}={format_value(v)}" for k, v in overrides.items()])


def tpu_command(config_spec: str, workdir: str, overrides: dict, tpu: str, zone: str,
                project: str | None = None) -> list[str]:
  """The `launch/tpu_vm.sh run` argv for one run."""
  cmd = ["bash", os.path.join("launch", "tpu_vm.sh"), "run", "--wait",
         "--name", tpu, "--zone", zone]
  if project:
    cmd += ["--project", project]
  return (cmd + ["--config", config_spec, "--workdir", workdir]
          + [f"--config.{k}={format_value(v)}" for k, v in overrides.items()])


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one sentence (`LmError`), not the usage
  text; `--help`/`-h` still print the full usage and exit 0."""

  def error(self, message):
    raise LmError(f"{message}; see python -m launch.sweep --help.")


def _parse_args(argv: Sequence[str]):
  parser = _Parser(
      prog="python -m launch.sweep", description=__doc__.strip(),
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="--config.KEY=VALUE  set a config field in every run (not part of "
             "the run names)")
  parser.add_argument("--config", required=True, help="configs/EXP.py[:ARG]")
  parser.add_argument("--sweep", required=True, help="configs/sweeps/NAME.py")
  parser.add_argument("--workdir_root", help="local root; a run's workdir is ROOT/<name>")
  parser.add_argument("--dry_run", action="store_true", help="print the commands only")
  parser.add_argument("--tpu", help="run each job on this Cloud TPU VM")
  parser.add_argument("--zone", help="the TPU VM's zone (with --tpu)")
  parser.add_argument("--bucket", help="gs://BUCKET for the workdirs (with --tpu)")
  parser.add_argument("--project", help="Google Cloud project (with --tpu)")
  args, extra = parser.parse_known_args(argv)
  for item in extra:
    if not (item.startswith("--config.") and "=" in item):
      raise LmError(f"unexpected argument {item!r}; pass settings as --config.KEY=VALUE.")
  return args, extra


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (1 when a run failed)."""
  try:
    args, extra = _parse_args(sys.argv[1:] if argv is None else argv)
  except SystemExit as e:  # --help printed the usage (usage errors raise LmError)
    return 2 if e.code else 0
  runs = load_sweep(args.sweep)
  names = run_names(runs)
  config = load_config(args.config)
  base = {}
  for item in extra:
    key, _, text = item[len("--config."):].partition("=")
    base[key] = parse_value(config, key, text)
  # Check every override against the config before anything runs.
  apply_overrides(config, base)
  for overrides in runs:
    apply_overrides(load_config(args.config), overrides)
  sweep_name = _clean(os.path.splitext(os.path.basename(args.sweep))[0])

  if args.tpu:
    if not args.zone:
      raise LmError("--zone is required with --tpu, e.g. --zone us-central2-b.")
    if not args.bucket:
      raise LmError("--bucket is required with --tpu, e.g. --bucket gs://my-bucket.")
    bucket = args.bucket[len("gs://"):] if args.bucket.startswith("gs://") else args.bucket
    status = 0
    for name, overrides in zip(names, runs):
      workdir = f"gs://{bucket.rstrip('/')}/{sweep_name}/{name}"
      cmd = tpu_command(args.config, workdir, {**base, **overrides}, args.tpu,
                        args.zone, args.project)
      print(shlex.join(cmd), flush=True)
      if not args.dry_run:
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc:
          print(f"run {name} failed with exit status {rc}", flush=True)
          status = 1
    return status

  if not args.workdir_root:
    raise LmError("--workdir_root is required, e.g. --workdir_root runs/lr_sweep.")
  if args.dry_run:
    for name, overrides in zip(names, runs):
      workdir = files.join(args.workdir_root, name)
      print(shlex.join(train_command(args.config, workdir, {**base, **overrides})))
    return 0
  from launch import common
  common.quiet_logs()
  rows = run_local(args.config, runs, args.workdir_root, base_overrides=base)
  return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
  from launch import common as _common
  with _common.user_errors():
    sys.exit(main())
