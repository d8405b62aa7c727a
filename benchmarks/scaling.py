"""Step time per mesh layout and per-device state memory, on 8 simulated CPU devices.

  python benchmarks/scaling.py [--size quickstart] [--steps 5]

For each (data, fsdp, tensor) layout of 8 devices: the jitted train-step time
of the named model on random tokens (global batch 16 × 128), and the bytes of
parameters + optimizer state that device 0 holds. Under pure data parallelism
every device holds the whole state; fsdp divides the sharded parameters (and
their Adam moments) by the fsdp size. On simulated CPU devices the step times
only show the relative cost of the collectives each layout adds (all eight
"devices" share the same cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from lm.models import build_model  # noqa: E402
from lm.models.config import make_model_config  # noqa: E402
from lm.objectives.causal import causal_lm_loss, summarize as causal_summarize  # noqa: E402
from lm.parallel import sharding as sharding_lib  # noqa: E402
from lm.parallel.mesh import make_mesh  # noqa: E402
from lm.training import optim, step as step_lib  # noqa: E402
from lm.experiments import base_config  # noqa: E402
from lm.training.state import init_state  # noqa: E402

LAYOUTS = [(8, 1, 1), (1, 8, 1), (2, 4, 1), (4, 1, 2), (2, 2, 2), (1, 4, 2)]


def device0_bytes(tree) -> int:
  dev = jax.devices()[0]
  total = 0
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      if shard.device == dev:
        total += shard.data.nbytes
  return total


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", default="quickstart")
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq_len", type=int, default=128)
  args = p.parse_args()
  cfg = make_model_config(args.size, vocab_size=args.vocab)
  model = build_model(cfg)
  b, t = args.batch, args.seq_len
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, args.vocab, size=(b, t + 1)).astype(np.int32)
  batch_np = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
              "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
              "segment_ids": np.ones((b, t), np.int32),
              "loss_mask": np.ones((b, t), np.float32)}
  opt = base_config().optimizer
  tx, schedule = optim.make_optimizer(opt, 1000)
  print(f"model {args.size} (vocab {args.vocab}), global batch {b}×{t}, "
        f"{len(jax.devices())} simulated CPU devices")
  print("| mesh (data, fsdp, tensor) | step (ms) | params+opt on device 0 (MB) | vs data-only |")
  print("|---|---|---|---|")
  base_bytes = None
  for layout in LAYOUTS:
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), layout)))
    rules = sharding_lib.logical_rules()
    state, _, shardings = init_state(model, tx, mesh, rules, 0, t)
    train, _ = step_lib.jit_steps(model, causal_lm_loss, tx, schedule, 0, mesh,
                                  rules, shardings,
                                  summarize=causal_summarize)
    batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
             for k, v in batch_np.items()}
    state, m = train(state, batch)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(args.steps):
      state, m = train(state, batch)
    jax.block_until_ready(m)
    ms = 1e3 * (time.perf_counter() - start) / args.steps
    nbytes = device0_bytes((state.params, state.opt_state))
    base_bytes = base_bytes or nbytes
    print(f"| {layout} | {ms:.0f} | {nbytes / 1e6:.2f} | {base_bytes / nbytes:.2f}× smaller |",
          flush=True)


if __name__ == "__main__":
  main()
