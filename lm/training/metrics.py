"""Metric sinks: `metrics.jsonl`, TensorBoard event files and a console bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np


def flops_per_token(num_matmul_params: int, num_layers: int, seq_len: int,
                    attn_width: int) -> float:
  """Training FLOPs per token: 6·N + 12·L·T·(N_heads·H).

  N counts the parameters that take part in matmuls (everything but the
  position table and the input-embedding lookup; the LM head is counted).
  6N is the forward (2N) and backward (4N) matmuls; 12·L·T·(N_heads·H) is the
  attention score and value matmuls (PaLM, appendix B).
  """
  return 6.0 * num_matmul_params + 12.0 * num_layers * seq_len * attn_width


def encoder_flops_per_token(model_cfg, n_params: int, seq_len: int) -> float:
  """`flops_per_token` of a backbone whose hidden states feed a small head
  (sentence embeddings, fine-tuning): N leaves out the lookup tables and
  any LM head that never runs."""
  d, v = model_cfg.d_model, model_cfg.vocab_size
  n = n_params - v * d
  if not model_cfg.tie_embeddings and model_cfg.arch != "bert":
    n -= v * d                  # the decoder's unused output kernel
  if model_cfg.arch == "bert":
    n -= model_cfg.type_vocab_size * d
  if model_cfg.arch != "lstm" and model_cfg.position == "learned":
    n -= model_cfg.max_len * d
  attn = (model_cfg.num_heads * model_cfg.head_size
          if model_cfg.arch != "lstm" else 0)
  return flops_per_token(n, model_cfg.num_layers, seq_len, attn)


def measure_matmul_peak(seconds: float = 1.0, n: int | None = None,
                        dtype: str = "float32") -> float:
  """FLOP/s of one n×n matmul on the default device, best of repeated runs.

  This is the rate of a single device; the caller scales it by the device
  count where devices are separate chips (not for simulated CPU devices).
  """
  import jax
  import jax.numpy as jnp
  if n is None:
    n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best, deadline = 0.0, time.perf_counter() + seconds
  while time.perf_counter() < deadline:
    t = time.perf_counter()
    f(a).block_until_ready()
    best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t))
  return best


def final_metrics(workdir: str, step: int) -> dict:
  """The metrics `metrics.jsonl` holds for `step` (the train row and the
  eval row merged), for a re-run of a finished run. Example:
  final_metrics("runs/q", 500) -> {"loss": 1.91, "eval_loss": 1.95, ...}."""
  merged: dict = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return merged
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and row.get("step") == step:
        merged.update({k: v for k, v in row.items() if k != "step"})
  return merged


class MetricsWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  On resume from `start_step`, lines for steps after it (written by a run that
  stopped before its next checkpoint) are dropped so the file reads as one
  uninterrupted run.
  """

  def __init__(self, workdir: str, start_step: int = 0, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            if json.loads(line).get("step", 0) <= start_step:
              kept.append(line)
          except json.JSONDecodeError:
            continue
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, self.path)
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    record = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      record[k] = v if math.isfinite(v) else str(v)
      if self._tb is not None and math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()


class ProgressBar:
  """tqdm bar with loss, tokens/s and MFU; a plain log line when not a TTY."""

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self._bar = None
    if enabled:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True,
                       file=sys.stderr, mininterval=1.0)

  def update(self, step: int, n: int, info: dict) -> None:
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix(
          loss=f"{info['loss']:.3f}", tok_s=f"{info['tokens_per_second']:.0f}",
          mfu=f"{100 * info['mfu']:.1f}%", refresh=False)

  def message(self, text: str) -> None:
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
