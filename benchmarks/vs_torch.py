"""The train step of `lm` against Hugging Face transformers' GPT-2 in
PyTorch, on the same machine, the same shapes and the same optimizer.

  python benchmarks/vs_torch.py [--rounds 5] [--steps 10] [--threads 0]

Both sides train a GPT-2 layout (learned positions, pre-LN LayerNorm, GELU
MLP of 4·D, biases, tied embeddings, no dropout) in float32 with AdamW on
random tokens of a 2,048-piece vocabulary, at two shapes:

  small   4 layers x 128 wide, 4 heads, T 64, B 12   (nanoGPT's CPU recipe)
  d384    6 layers x 384 wide, 6 heads, T 256, B 8

`lm` runs its jitted train step (`lm.training.step`, the step of
`launch.train`: loss, gradients, clipping, masked weight decay, norms);
torch runs `GPT2LMHeadModel` (attn_implementation="sdpa", eager) with
`torch.optim.AdamW`, forward + backward + step + zero_grad. After a
warm-up (compile for `lm`), the two are timed in alternating rounds
(A B A B ...) of `--steps` steps each, so drift in the machine's speed hits
both; the script prints each side's median tokens/s, the median of the
per-round ratios, and `lm`'s MFU against the float32 matmul peak measured
in the same run (FLOPs per token = 6·N + 12·L·T·D, N without the position
table). The last column is the ratio a step running every FLOP at that peak
would reach against the same torch rate: no change to lm's step can beat it
on this machine. Goals (issue: performance): lm >= 1.3x torch at both shapes, MFU
>= 50% at d384.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SHAPES = {"small": dict(layers=4, width=128, heads=4, seq=64, batch=12),
          "d384": dict(layers=6, width=384, heads=6, seq=256, batch=8)}
VOCAB = 2048
LR, BETAS, EPS, WD = 6e-4, (0.9, 0.95), 1e-8, 0.1


def lm_step(shape: dict, with_parts: bool = False):
  """(run(n), tokens per step, FLOPs per token) of lm's jitted train step;
  with `with_parts` also (train_fn, current state, batch, mesh, rules)."""
  import jax  # pylint: disable=g-import-not-at-top
  from lm.experiments import base_config, make_objective  # pylint: disable=g-import-not-at-top
  from lm.models import build_model  # pylint: disable=g-import-not-at-top
  from lm.models.config import make_model_config  # pylint: disable=g-import-not-at-top
  from lm.models.transformer import count_params  # pylint: disable=g-import-not-at-top
  from lm.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from lm.parallel.mesh import make_mesh  # pylint: disable=g-import-not-at-top
  from lm.training import optim, step as step_lib  # pylint: disable=g-import-not-at-top
  from lm.training.state import init_state  # pylint: disable=g-import-not-at-top
  b, t = shape["batch"], shape["seq"]
  cfg = make_model_config(
      "small", vocab_size=VOCAB, max_len=t, num_layers=shape["layers"],
      d_model=shape["width"], num_heads=shape["heads"],
      d_ff=4 * shape["width"], dropout=0.0, attention_dropout=0.0)
  config = base_config()
  config.objective = "causal"
  config.seq_len = t
  config.optimizer.lr = LR
  objective = make_objective(config)
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = sharding_lib.logical_rules()
  tx, schedule = optim.make_optimizer(config.optimizer, 1000)
  model = build_model(cfg)
  state, _, shardings = init_state(model, tx, mesh, rules, 0, t)
  train_fn, _ = step_lib.jit_steps(model, objective.loss, tx, schedule, 0,
                                   mesh, rules, shardings,
                                   summarize=objective.summarize)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, (b, t + 1)).astype(np.int32)
  host = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "positions": np.broadcast_to(np.arange(t, dtype=np.int32),
                                       (b, t)).copy(),
          "segment_ids": np.ones((b, t), np.int32),
          "loss_mask": np.ones((b, t), np.float32)}
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
           for k, v in host.items()}
  box = [state]

  def step():
    box[0], metrics = train_fn(box[0], batch)
    return metrics

  def run(n):
    for _ in range(n):
      m = step()
    jax.block_until_ready(m)
  n = count_params(state.params) - t * shape["width"]
  fpt = 6 * n + 12 * shape["layers"] * t * shape["width"]
  if with_parts:
    return run, b * t, fpt, (train_fn, lambda: box[0], batch, mesh, rules)
  return run, b * t, fpt


def torch_step(shape: dict):
  """The same for transformers' GPT2LMHeadModel in PyTorch."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=g-import-not-at-top
  b, t = shape["batch"], shape["seq"]
  torch.manual_seed(0)
  config = GPT2Config(vocab_size=VOCAB, n_positions=t, n_embd=shape["width"],
                      n_layer=shape["layers"], n_head=shape["heads"],
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=0, eos_token_id=0)
  config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  model = GPT2LMHeadModel(config)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                          weight_decay=WD)
  rng = np.random.default_rng(0)
  tokens = torch.from_numpy(rng.integers(0, VOCAB, (b, t)).astype(np.int64))

  def run(n):
    for _ in range(n):
      loss = model(input_ids=tokens, labels=tokens).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
  return run, b * t


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shapes", default="small,d384")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--threads", type=int, default=0,
                 help="torch intra-op threads (0: torch's default)")
  args = p.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from lm.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  peak = metrics_lib.measure_matmul_peak(repeats=10)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); measured "
        f"float32 matmul peak {peak / 1e12:.3f} TFLOP/s; {args.rounds} "
        f"alternating rounds of {args.steps} steps")
  print("| shape | lm tokens/s | torch tokens/s | lm / torch (median of "
        "rounds) | lm MFU | lm / torch at 100% of the peak |")
  print("|---|---|---|---|---|---|")
  for name in args.shapes.split(","):
    shape = SHAPES[name]
    lm_run, lm_tokens, fpt = lm_step(shape)
    torch_run, torch_tokens = torch_step(shape)
    lm_run(2)          # compile and warm up
    torch_run(2)
    lm_rates, torch_rates = [], []
    for _ in range(args.rounds):
      t0 = time.perf_counter()
      lm_run(args.steps)
      lm_rates.append(lm_tokens * args.steps / (time.perf_counter() - t0))
      t0 = time.perf_counter()
      torch_run(args.steps)
      torch_rates.append(torch_tokens * args.steps / (time.perf_counter() - t0))
    ratio = statistics.median(a / b for a, b in zip(lm_rates, torch_rates))
    lm_med = statistics.median(lm_rates)
    torch_med = statistics.median(torch_rates)
    print(f"| {name} ({shape['layers']}x{shape['width']}, T {shape['seq']}, "
          f"B {shape['batch']}) | {lm_med:,.0f} | "
          f"{torch_med:,.0f} | {ratio:.2f} | "
          f"{100 * lm_med * fpt / peak:.1f}% | "
          f"{peak / fpt / torch_med:.2f} |", flush=True)


if __name__ == "__main__":
  main()
