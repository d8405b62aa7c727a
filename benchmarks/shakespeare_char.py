"""Character-level Tiny Shakespeare: Transformer vs LSTM, through the real loop.

  python benchmarks/shakespeare_char.py --data ../shared/data/tinyshakespeare/input.txt
  python benchmarks/shakespeare_char.py --model lstm --steps 500

Trains `configs/shakespeare_char.py` (nanoGPT's CPU recipe: 4 layers, 4 heads,
d=128) and/or `configs/lstm_shakespeare_char.py` (2-layer LSTM, d=224, a
comparable parameter count), both with block 64, batch 12, 2,000 steps, the
first 90% of the file for training and the last 10% for validation, each in a
fresh workdir, and prints one table row per model: parameters, steps,
validation loss over the whole held-out 10%, and wall time from the start of
the run (tokenizer training, data, compilation, the steps, every evaluation
and the end-of-training sample). nanoGPT reports 1.88 for the Transformer recipe.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import lstm_shakespeare_char, shakespeare_char  # noqa: E402
from lm import experiments
from lm.models.transformer import count_params  # noqa: E402

MODELS = {
    # name: (config module, table label, expected module class name)
    "transformer": (shakespeare_char, "transformer 4×128", "DecoderLM"),
    "lstm": (lstm_shakespeare_char, "lstm 2×224", "LstmLM"),
}


def _param_count(model, seq_len: int) -> int:
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)},
                         jnp.zeros((1, seq_len), jnp.int32)))
  return count_params(variables["params"])


def run_one(name: str, data: str, steps: int, workdir: str) -> dict:
  """Trains one model in `workdir`; returns its table row as a dict."""
  module, label, expected = MODELS[name]
  c = module.get_config(f"path={os.path.abspath(data)}")
  c.steps = steps
  c.progress_bar = False
  # Builds the model exactly as `loop.train` will (and the tokenizer and data
  # cache, which `train` then reuses), so a loop that ignores `model.arch`
  # stops here instead of silently training the wrong architecture.
  start = time.perf_counter()   # end to end: tokenizer, data, steps, evals
  run = experiments.prepare(c, workdir)
  if type(run.model).__name__ != expected:
    sys.exit(f"error: the training loop built {type(run.model).__name__} for "
             f"model.arch={run.model_cfg.arch!r}; it must build models with "
             "lm.models.build_model before --model lstm can run.")
  params = _param_count(run.model, c.seq_len)
  summary = bench_train.train(c, workdir)
  wall = time.perf_counter() - start
  return dict(label=label, params=params, steps=steps,
              loss=summary["eval_loss"], wall=wall)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
  p.add_argument("--model", choices=("transformer", "lstm", "both"),
                 default="both")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--workdir", default=None,
                 help="parent of one workdir per model; default: fresh temp dirs")
  args = p.parse_args()
  if not os.path.exists(args.data):
    sys.exit(f"error: {args.data} does not exist; pass --data PATH to input.txt.")
  names = list(MODELS) if args.model == "both" else [args.model]
  rows = []
  for name in names:
    workdir = (os.path.join(args.workdir, name) if args.workdir
               else tempfile.mkdtemp(prefix=f"shakespeare_char_{name}_"))
    try:
      rows.append(run_one(name, args.data, args.steps, workdir))
    finally:
      if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
  print("| model | params | steps | val loss | wall time (s) |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['label']} | {r['params']:,} | {r['steps']} | "
          f"{r['loss']:.4f} | {r['wall']:.0f} |")
  print("nanoGPT reports val loss 1.88 for the transformer recipe.")


if __name__ == "__main__":
  main()
