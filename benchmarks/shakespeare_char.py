"""nanoGPT's CPU recipe on Tiny Shakespeare, through the real training loop.

  python benchmarks/shakespeare_char.py --data ../shared/data/tinyshakespeare/input.txt

Trains `configs/shakespeare_char.py` (4 layers, 4 heads, d=128, block 64,
batch 12, 2,000 steps, first 90% of the file for training, last 10% for
validation) in a fresh workdir and prints the validation loss over the whole
held-out 10% and the wall time. nanoGPT reports 1.88 for this recipe.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import shakespeare_char  # noqa: E402
from lm.training import loop  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--workdir", default=None, help="default: a fresh temp dir")
  args = p.parse_args()
  if not os.path.exists(args.data):
    sys.exit(f"error: {args.data} does not exist; pass --data PATH to input.txt.")
  c = shakespeare_char.get_config(f"path={os.path.abspath(args.data)}")
  c.steps = args.steps
  c.progress_bar = False
  workdir = args.workdir or tempfile.mkdtemp(prefix="shakespeare_char_")
  start = time.perf_counter()
  summary = loop.train(c, workdir)
  wall = time.perf_counter() - start
  print(f"| model | steps | val loss | wall time (s) | nanoGPT val loss |")
  print(f"|---|---|---|---|---|")
  print(f"| transformer 4×128 | {c.steps} | {summary['eval_loss']:.4f} | {wall:.0f} | 1.88 |")
  if args.workdir is None:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
