"""BERT quickstart quality: held-out MLM and NSP accuracy after a CPU run.

  python benchmarks/bert_quickstart.py [--steps 600] [--norm_position post|pre]
      [--workdir DIR]

Trains `configs/bert_quickstart.py` (bert_mini, 4×256, on the `pystdlib`
corpus: files are documents, lines are segments) through the real loop, then
evaluates the whole held-out split (`pystdlib:validation`) and prints one
table row: held-out MLM accuracy next to the accuracy of always predicting
the most frequent masked token on the same predictions, NSP accuracy
(chance: 0.5), and the wall time of training (tokenizer, data, compiles and
periodic evals included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import bert_quickstart  # noqa: E402
from launch.evaluate import evaluate_workdir  # noqa: E402
from lm import experiments
from lm.objectives.mlm import majority_baseline  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=None, help="default: the config's")
  p.add_argument("--norm_position", choices=("post", "pre"), default=None)
  p.add_argument("--workdir", default=None, help="default: a fresh temp dir")
  args = p.parse_args()
  c = bert_quickstart.get_config()
  c.progress_bar = False
  if args.steps:
    c.steps = args.steps
  if args.norm_position:
    c.model.norm_position = args.norm_position
  workdir = args.workdir or tempfile.mkdtemp(prefix="bert_quickstart_")
  try:
    start = time.perf_counter()
    bench_train.train(c, workdir)
    wall = time.perf_counter() - start
    result = evaluate_workdir(workdir, full=True)   # the whole held-out split
    run = experiments.prepare(c, workdir)
    baseline = majority_baseline(
        run.objective.eval_batches(run.eval_data, c.batch_size, None))
  finally:
    if args.workdir is None:
      shutil.rmtree(workdir, ignore_errors=True)
  label = f"{c.model.size}, {c.model.norm_position or 'post'}-LN"
  print("| model | steps | held-out MLM accuracy | majority-token baseline | "
        "NSP accuracy | MLM predictions | wall time (s) |")
  print("|---|---|---|---|---|---|---|")
  print(f"| {label} | {c.steps} | {result['mlm_accuracy']:.4f} | "
        f"{baseline:.4f} | {result['nsp_accuracy']:.4f} | "
        f"{result['tokens']:,} | {wall:.0f} |")


if __name__ == "__main__":
  main()
