"""Training throughput: tokens/s and MFU for named model sizes.

  python benchmarks/train_throughput.py [--steps 10] [--sizes quickstart,d384]
  python benchmarks/train_throughput.py --sizes bert_mini,bert_small

Decoder sizes train the causal objective; BERT sizes (`bert_*`) train masked
LM + NSP with ceil(0.15·T) predictions per row. MFU = (FLOPs per token ×
tokens/s) / peak, with FLOPs per token = 6·N + 12·L·T·(heads·head_dim)
(N = parameters taking part in matmuls; for BERT the output layer counts only
for the masked predictions; see the objectives' `flops_per_token`), and the
peak measured in the same run as the best float32 (or bfloat16 with --dtype)
square-matmul rate on this machine. Batches are random tokens: the figure is
the cost of the train step itself, not of the input pipeline.

`--compile_layers 2,24` also prints the time to lower and compile the train
step of the first size at each depth (same width, batch and length), and
the ratio of the deepest to the shallowest. Goal: 24 layers within 1.5x of
2 (stacks deeper than `model.scan_unroll` keep their scan, so the step's
program does not grow with depth).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from lm.models.config import make_model_config  # noqa: E402
from lm.models import build_model  # noqa: E402
from lm.models.transformer import count_params  # noqa: E402
from lm.experiments import make_objective  # noqa: E402
from lm.parallel import sharding as sharding_lib  # noqa: E402
from lm.parallel.mesh import make_mesh  # noqa: E402
from lm.training import metrics as metrics_lib, optim, step as step_lib  # noqa: E402
from lm.experiments import base_config  # noqa: E402
from lm.training.state import init_state  # noqa: E402

# size -> (batch, seq_len) on a small machine
SHAPES = {"quickstart": (16, 128), "d384": (8, 256), "small": (8, 1024),
          "bert_mini": (32, 128), "bert_small": (16, 128),
          "bert_base": (8, 512)}


def random_batch(objective, b: int, t: int, vocab: int, rng) -> dict:
  """A batch of random tokens in the layout `objective` reads."""
  tokens = rng.integers(4, vocab, size=(b, t + 1)).astype(np.int32)
  positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
  if objective.name == "causal":
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": positions, "segment_ids": np.ones((b, t), np.int32),
            "loss_mask": np.ones((b, t), np.float32)}
  p = objective.max_predictions()
  masked = np.sort(np.stack([rng.choice(np.arange(1, t), p, replace=False)
                             for _ in range(b)]), axis=1).astype(np.int32)
  return {"inputs": tokens[:, :-1], "positions": positions,
          "token_types": (positions >= t // 2).astype(np.int32),
          "segment_ids": np.ones((b, t), np.int32),
          "masked_positions": masked,
          "masked_targets": rng.integers(4, vocab, (b, p)).astype(np.int32),
          "masked_weights": np.ones((b, p), np.float32),
          "nsp_labels": rng.integers(0, 2, b).astype(np.int32),
          "nsp_weights": np.ones(b, np.float32)}


def _setup(size, dtype, vocab, batch, seq_len, overrides):
  """(cfg, objective, train_fn, state, batch, mesh, rules) of `size`'s
  jitted train step on a random batch."""
  b, t = SHAPES.get(size, (8, 256))
  b, t = batch or b, seq_len or t
  cfg = make_model_config(size, vocab_size=vocab, dtype=dtype, **overrides)
  model = build_model(cfg)
  config = base_config()
  config.objective = "mlm" if cfg.arch == "bert" else "causal"
  config.seq_len = t
  objective = make_objective(config)
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = sharding_lib.logical_rules()
  opt = base_config().optimizer
  tx, schedule = optim.make_optimizer(opt, 1000)
  state, _, shardings = init_state(model, tx, mesh, rules, 0, t)
  train_fn, _ = step_lib.jit_steps(model, objective.loss, tx, schedule, 0, mesh,
                                   rules, shardings, summarize=objective.summarize)
  batch_np = random_batch(objective, b, t, vocab, np.random.default_rng(0))
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh)) for k, v in batch_np.items()}
  return cfg, objective, train_fn, state, batch, mesh, rules


def compile_seconds(size: str, layers: int, dtype: str, vocab: int,
                    batch: int | None, seq_len: int | None,
                    overrides: dict) -> float:
  """Seconds to lower and compile the train step of `size` at `layers`."""
  _, _, train_fn, state, batch, mesh, rules = _setup(
      size, dtype, vocab, batch, seq_len, {**overrides, "num_layers": layers})
  start = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    train_fn.jitted.lower(state, batch).compile()
  return time.perf_counter() - start


def bench(size: str, steps: int, dtype: str, vocab: int, batch: int | None,
          seq_len: int | None, dropout: float | None = None,
          overrides: dict | None = None):
  overrides = dict(overrides or {})
  if dropout is not None:
    overrides.update(dropout=dropout, attention_dropout=dropout)
  cfg, objective, train_fn, state, batch, _, _ = _setup(
      size, dtype, vocab, batch, seq_len, overrides)
  b, t = batch["inputs"].shape
  for _ in range(2):  # compile + warm up
    state, m = train_fn(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = train_fn(state, batch)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - start) / steps
  n = count_params(state.params)
  fpt = objective.flops_per_token(cfg, n)
  return dict(size=size, objective=objective.name, dropout=cfg.dropout, params=n, batch=b, seq=t, step_ms=1e3 * dt,
              tok_s=b * t / dt, tflops=fpt * b * t / dt / 1e12)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="quickstart,d384")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--seq_len", type=int, default=None)
  p.add_argument("--dropout", type=float, default=None,
                 help="dropout and attention dropout (default: the size's; "
                 "BERT sizes use 0.1)")
  p.add_argument("--attention_impl", default=None,
                 choices=["xla", "cudnn", "einsum"],
                 help="model.attention_impl (default: the size's)")
  p.add_argument("--scan_unroll", type=int, default=None,
                 help="model.scan_unroll (default: the size's; 0 keeps the "
                 "layer scan rolled)")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="MFU against this peak (e.g. 989 for an H100/H200's "
                 "dense bfloat16) instead of the measured matmul rate")
  p.add_argument("--compile_layers", default="",
                 help="comma-separated depths whose compile time to print "
                 "for the first size, e.g. 2,24")
  args = p.parse_args()
  overrides = {name: getattr(args, name)
               for name in ("attention_impl", "scan_unroll")
               if getattr(args, name) is not None}
  dev = jax.devices()[0]
  peak = metrics_lib.measure_matmul_peak(repeats=10, dtype=args.dtype)
  if dev.platform != "cpu":
    peak *= len(jax.devices())
  print(f"device: {dev.platform} ({dev.device_kind}) x{len(jax.devices())}; "
        f"measured {args.dtype} matmul peak {peak / 1e12:.3f} TFLOP/s")
  if args.peak_tflops:
    peak = args.peak_tflops * 1e12 * len(jax.devices())
    print(f"MFU against the given peak: {args.peak_tflops:g} TFLOP/s per "
          "device")
  print("| size | objective | dropout | params | batch×seq | step (ms) | tokens/s | TFLOP/s | MFU |")
  print("|---|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    r = bench(size, args.steps, args.dtype, args.vocab, args.batch, args.seq_len,
              args.dropout, overrides)
    print(f"| {r['size']} | {r['objective']} | {r['dropout']:g} | {r['params'] / 1e6:.1f}M | {r['batch']}×{r['seq']} | "
          f"{r['step_ms']:.0f} | {r['tok_s']:,.0f} | {r['tflops']:.3f} | "
          f"{100 * r['tflops'] * 1e12 / peak:.1f}% |", flush=True)
  if args.compile_layers:
    size = args.sizes.split(",")[0]
    depths = [int(d) for d in args.compile_layers.split(",")]
    secs = {d: compile_seconds(size, d, args.dtype, args.vocab, args.batch,
                               args.seq_len, overrides) for d in depths}
    print(f"\n| {size} layers | compile (s) |\n|---|---|")
    for d in depths:
      print(f"| {d} | {secs[d]:.2f} |")
    print(f"compile time {max(depths)} / {min(depths)} layers: "
          f"{secs[max(depths)] / secs[min(depths)]:.2f}x", flush=True)


if __name__ == "__main__":
  main()
