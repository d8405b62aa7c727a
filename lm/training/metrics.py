"""Metric sinks and their text: `metrics.jsonl`, TensorBoard event files,
the console (a tqdm bar on a terminal, plain lines otherwise), the lines
that say what an evaluation covered, and MFU against a measured or given
peak (`MfuMeter`, which refuses ratios above 1)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid

import numpy as np

from lm import files


def summary_writer(logdir: str):
  """A tensorboardX `SummaryWriter` for `logdir`. tensorboardX imports
  PyTorch at import time when it is installed, only to accept torch
  tensors (which lm never passes), and that import costs ~3 s per process;
  so unless torch is already loaded, tensorboardX is imported with torch
  marked absent, and the mark removed after."""
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None   # `import torch` raises ImportError
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(logdir)


def measure_matmul_peak(repeats: int = 5, n: int | None = None,
                        dtype: str = "float32", warmup: int = 2,
                        min_seconds: float = 0.05) -> float:
  """FLOP/s of an n×n matmul on the default device: the best of `repeats`
  timed repetitions after `warmup` untimed calls (compile, caches, clocks).

  Each repetition runs enough back-to-back matmuls to last `min_seconds`, so
  timer resolution and dispatch do not count; the best one is the rate the
  device reaches when nothing else holds it, which a busy machine lowers
  only if it is busy throughout (`MfuMeter` catches that case). This is the
  rate of a single device; the caller scales it by the device count where
  devices are separate chips (not for simulated CPU devices).
  """
  import jax
  import jax.numpy as jnp
  if n is None:
    n = 1024 if jax.devices()[0].platform == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  for _ in range(max(warmup, 1)):
    f(a).block_until_ready()
  t = time.perf_counter()
  f(a).block_until_ready()
  inner = max(1, math.ceil(min_seconds / max(time.perf_counter() - t, 1e-9)))
  best = 0.0
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(inner):
      out = f(a)
    out.block_until_ready()
    best = max(best, 2.0 * n ** 3 * inner / (time.perf_counter() - t))
  return best


class MfuMeter:
  """Model FLOPs utilisation of the logged steps against a peak FLOP/s.

  `meter(flops_per_second)` is the ratio to `peak`, or None when there is
  no peak or the ratio is not believable: a run cannot beat the peak, so a
  ratio above 1 means the peak is wrong (measured low on a busy machine, or
  a `config.peak_tflops` below the device's). Then `warn` is called once
  with what to do, and MFU stays unreported for the rest of the run, since
  every ratio against that peak is inflated.

  Example: MfuMeter(1e12, measured=True, warn=print)(2e11) -> 0.2;
  (2e12) -> None, after one warning naming --config.peak_tflops.
  """

  def __init__(self, peak: float, *, measured: bool, warn):
    self.peak = float(peak)
    self.measured = measured
    self._warn = warn
    self.unreliable = False

  def __call__(self, flops_per_second: float) -> float | None:
    if self.unreliable or not self.peak > 0:
      return None
    ratio = float(flops_per_second) / self.peak
    if ratio <= 1.0:
      return ratio
    self.unreliable = True
    peak_tf = self.peak / 1e12
    if self.measured:
      where = (f"the matmul peak measured at start-up ({peak_tf:.3g} TFLOP/s),"
               " so that measurement was unreliable (a busy machine?)")
    else:
      where = (f"config.peak_tflops={peak_tf:g}, which is below what the "
               "device reached")
    self._warn(f"MFU came out at {100 * ratio:.0f}% of {where}; MFU is not "
               "reported for the rest of this run. Set --config.peak_tflops=N, "
               "the device's peak in TFLOP/s, to report it.")
    return None


def final_metrics(workdir: str, step: int) -> dict:
  """The metrics `metrics.jsonl` holds for `step` (the train row and the
  eval row merged), for a re-run of a finished run. Example:
  final_metrics("runs/q", 500) -> {"loss": 1.91, "eval_loss": 1.95, ...}."""
  merged: dict = {}
  path = files.join(workdir, "metrics.jsonl")
  if not files.exists(path):
    return merged
  for line in files.read_text(path, errors="replace").splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and row.get("step") == step:
      merged.update({k: v for k, v in row.items() if k != "step"})
  return merged


def eval_line(step: int, metrics: dict, count: str,
              eval_steps: int | None = None) -> str:
  """The log line of an evaluation, saying what it covered. Example:
  eval_line(250, {"eval_loss": 3.86, "eval_tokens": 20480.0,
  "eval_batches": 10.0}, "tokens", 10) -> "step 250: eval loss 3.8600 over
  20,480 tokens in 10 batches (config.eval_steps=10)"."""
  return (f"step {step}: eval " + describe_eval(
      {k[len("eval_"):]: v for k, v in metrics.items()}, count)
          + (f" (config.eval_steps={eval_steps})" if eval_steps
             else " (the whole split)"))


def describe_eval(result: dict, count: str, noun: str | None = None) -> str:
  """Metrics (without the `eval_` prefix) and what they were computed
  over. Example: ({"loss": 3.86, "tokens": 20480, "batches": 10}, "tokens")
  -> "loss 3.8600 over 20,480 tokens in 10 batches"; `noun` names the
  count in words ("pairs" for "tokens")."""
  shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result.items()
                    if k not in (count, "batches")
                    and isinstance(v, (int, float)))
  n = int(result.get("batches", 0))
  over = f"{int(result[count]):,} {noun or count} in " if count in result else ""
  return f"{shown} over {over}{n:,} batch{'' if n == 1 else 'es'}"


class MetricsWriter:
  """Appends one JSON object per logged step, mirrors scalars to
  TensorBoard, and to Weights & Biases when a project is given.

  On resume from `start_step`, lines for steps after it (written by a run that
  stopped before its next checkpoint) are dropped so the file reads as one
  uninterrupted run.

  A local `metrics.jsonl` is appended to and flushed on every row. An
  object store (`gs://` workdir) has no append: the writer keeps the rows
  and uploads the whole file again on `flush()` (after each checkpoint, at
  most every `flush_seconds` from `write`, and at `close`). A crash then
  loses at most the rows since the last upload, and since the resume drops
  every row after its checkpoint's step, no row is ever duplicated.
  TensorBoard event files are written to a local temporary directory there
  and uploaded to `WORKDIR/tensorboard/` on the same flushes.

  TensorBoard (`WORKDIR/tensorboard`) also gets the experiment config as text
  at the start, the texts of `text` (the end-of-training sample), and at
  `close` the config's scalars as hparams with the final metrics. W&B
  (`wandb`: the `config.wandb` section) gets the config, every row of
  scalars at its step, the texts and final metrics in the run summary; the
  run id is kept in `WORKDIR/wandb_run_id`, so a resumed run continues the
  same W&B run (rows of steps it already logged are not sent again).
  """

  def __init__(self, workdir: str, start_step: int = 0, tensorboard: bool = True,
               config: dict | None = None, wandb=None,
               flush_seconds: float = 60.0):
    self.path = files.join(workdir, "metrics.jsonl")
    self._remote = files.is_uri(workdir)
    kept = []
    if files.exists(self.path):
      text = files.read_text(self.path, errors="replace")
      for line in text.splitlines(True):
        try:
          if json.loads(line).get("step", 0) <= start_step:
            kept.append(line if line.endswith("\n") else line + "\n")
        except (json.JSONDecodeError, AttributeError):
          continue
      if "".join(kept) != text:       # rewritten only when rows are dropped
        files.write_text_atomic(self.path, "".join(kept))
    self._rows = kept                 # the whole file, for an object store
    self._file = None if self._remote else open(self.path, "a")
    self._flush_seconds = flush_seconds
    self._flushed_at = time.monotonic()
    self._config = config or {}
    self._tb = None
    self._tb_dir = files.join(workdir, "tensorboard")
    self._tb_local = None
    if tensorboard:
      if self._remote:
        self._tb_local = tempfile.mkdtemp(prefix="lm-tensorboard-")
      self._tb = summary_writer(self._tb_local or self._tb_dir)
      if config:
        self._tb.add_text("config", "```\n" + json.dumps(config, indent=2)
                          + "\n```", start_step)
    self._wandb = None
    if wandb is not None and wandb.get("project"):
      self._wandb = _wandb_run(workdir, wandb, self._config)

  def write(self, step: int, scalars: dict) -> None:
    record = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      record[k] = v if math.isfinite(v) else str(v)
      if self._tb is not None and math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    if self._wandb is not None and step >= self._wandb.step:
      self._wandb.log({k: v for k, v in record.items() if k != "step"},
                      step=int(step))
    line = json.dumps(record) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    else:
      self._rows.append(line)
      if time.monotonic() - self._flushed_at >= self._flush_seconds:
        self.flush()

  def flush(self) -> None:
    """Everything written so far reaches the workdir: on an object store the
    rows and the TensorBoard event files are uploaded (each file whole)."""
    if self._file is not None:
      self._file.flush()
      return
    files.write_text_atomic(self.path, "".join(self._rows))
    if self._tb is not None:
      self._tb.flush()
      self._upload_tensorboard()
    self._flushed_at = time.monotonic()

  def _upload_tensorboard(self) -> None:
    for rel in files.walk_files(self._tb_local):
      files.copyfile(os.path.join(self._tb_local, rel),
                     files.join(self._tb_dir, rel))

  def text(self, tag: str, text: str, step: int) -> None:
    """A text (the end-of-training sample) at `step`."""
    if self._tb is not None:
      self._tb.add_text(tag, "```\n" + text + "\n```", step)
    if self._wandb is not None:
      self._wandb.summary[tag] = text

  def close(self, final: dict | None = None) -> None:
    """Closes the files; `final` (the run's last metrics) goes to the
    hparams view and the W&B summary."""
    if self._file is not None:
      self._file.close()
    scalars = {k: float(v) for k, v in (final or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(float(v))}
    if self._tb is not None:
      if final:
        hparams = {k: v for k, v in _flat(self._config).items()
                   if isinstance(v, (bool, int, float, str))}
        self._tb.add_hparams(hparams, {f"final/{k}": v
                                       for k, v in scalars.items()},
                             name="hparams")
      self._tb.close()
      if self._remote:
        self._upload_tensorboard()
        shutil.rmtree(self._tb_local, ignore_errors=True)
    if self._remote:
      files.write_text_atomic(self.path, "".join(self._rows))
    if self._wandb is not None:
      if final:
        self._wandb.summary.update(scalars)
      self._wandb.finish()


def _flat(tree: dict, prefix: str = "") -> dict:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _wandb_run(workdir: str, settings, config: dict):
  """The W&B run of this workdir: the one whose id `WORKDIR/wandb_run_id`
  holds (resumed), or a new one whose id is written there. Its files go
  under the workdir (`dir`), so an offline run stays with the run."""
  import wandb  # pylint: disable=g-import-not-at-top  (optional dependency)
  id_file = files.join(workdir, "wandb_run_id")
  if files.exists(id_file):
    run_id = files.read_text(id_file).strip()
  else:
    run_id = uuid.uuid4().hex[:12]
    files.write_text_atomic(id_file, run_id + "\n")
  name = settings.get("name") or files.basename(files.abspath(workdir))
  # W&B keeps its files on a local disk: for an object-store workdir, in a
  # temporary directory (online runs upload them to W&B as they go).
  local = (tempfile.mkdtemp(prefix="lm-wandb-") if files.is_uri(workdir)
           else workdir)
  return wandb.init(project=settings["project"],
                    entity=settings.get("entity") or None, name=name,
                    id=run_id, resume="allow", config=config, dir=local)


class ProgressBar:
  """The console view of training, one update per log step.

  A tqdm bar with the loss, tokens/s and MFU just logged, when `enabled`
  and the console is a terminal (`tty`; default: stdout and stderr both
  are). Otherwise one plain line per log step on stdout, so a log file
  holds lines rather than the bar's `\\r` frames:

    step 20/200: loss 3.1234, 7,100 tok/s, mfu 12.3%, lr 1.00e-03, grad norm 0.812

  `message` prints a line above the bar (or on its own). A `quiet` bar
  (processes other than the first) shows nothing.
  """

  def __init__(self, total: int, initial: int, enabled: bool = True,
               tty: bool | None = None, file=None, quiet: bool = False):
    self._total = total
    self._quiet = quiet
    self._bar = None
    if tty is None:
      tty = sys.stdout.isatty() and sys.stderr.isatty()
    if enabled and tty and not quiet:
      from tqdm import tqdm
      # Redrawn on every update (they come once per log step), so the bar
      # never lags behind the numbers just logged.
      self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True,
                       file=file or sys.stderr, mininterval=0, miniters=1)

  def update(self, step: int, n: int, info: dict) -> None:
    """Advances by `n` steps to `step` and shows `info`, the metrics just
    logged (`loss`, `tokens_per_second`, optional `mfu`, ...)."""
    mfu = info.get("mfu")
    if self._bar is not None:
      postfix = {"loss": f"{info['loss']:.3f}",
                 "tok_s": f"{info['tokens_per_second']:.0f}"}
      if mfu is not None:
        postfix["mfu"] = f"{100 * mfu:.1f}%"
      # The postfix goes in before the update that draws it: set after it
      # (without a refresh) it would show only at the next log step.
      self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(n)
    elif not self._quiet:
      print(log_line(step, self._total, info), flush=True)

  def message(self, text: str) -> None:
    if self._bar is not None:
      self._bar.write(text)
    elif not self._quiet:
      print(text, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def log_line(step: int, total: int, info: dict) -> str:
  """One log step as text. Example: log_line(20, 200, {"loss": 3.1234,
  "tokens_per_second": 7100.4, "mfu": 0.123, "learning_rate": 1e-3}) ->
  "step 20/200: loss 3.1234, 7,100 tok/s, mfu 12.3%, lr 1.00e-03"."""
  parts = [f"loss {info['loss']:.4f}"]
  # the first step's compile is not timed: no speed until a step is
  if info.get("tokens_per_second"):
    parts.append(f"{info['tokens_per_second']:,.0f} tok/s")
    if info.get("mfu") is not None:
      parts.append(f"mfu {100 * info['mfu']:.1f}%")
  if "learning_rate" in info:
    parts.append(f"lr {info['learning_rate']:.2e}")
  if "grad_norm" in info:
    parts.append(f"grad norm {info['grad_norm']:.3g}")
  return f"step {step}/{total}: " + ", ".join(parts)
