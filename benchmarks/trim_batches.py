"""Fine-tuning on short examples: full rows against trimmed and length-grouped
batches (`task.trim_batches`, `task.group_by_length`), on SST-2's phrases.

  python benchmarks/trim_batches.py [--data ../shared/data/sst2]
      [--workdir runs/trim_bench] [--size bert_mini] [--seq_len 128]
      [--steps 200] [--batch 32] [--rounds 2]

Each setting fine-tunes the same classifier from the same initialisation
(`benchmarks/sst2.py`'s classification config, trained from scratch with one
SentencePiece vocabulary built beforehand) for `--steps` steps and scores
the whole dev split at the end. The settings run in turn, `--rounds` times
(A B C A B C ...), each in a fresh workdir, and the table gives each one's
median wall time of the whole run (data, compiles, steps, the dev
evaluation), the speed-up over full rows, the mean padded width of its
training batches and its dev accuracy. Trimming alone changes no
arithmetic that touches a real token, but dropout (0.1 here) draws its
masks for the cut shape, so the accuracies differ as two draws of the same
training do; grouping also changes which phrases share a batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import types

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))

import sst2 as sst2_bench  # noqa: E402  (benchmarks/sst2.py)
from lm import experiments  # noqa: E402
from lm.experiments import load_trained, make_objective  # noqa: E402

SETTINGS = (("full rows", 0, 0), ("trim_batches=16", 16, 0),
            ("trim_batches=16, group_by_length=50", 16, 50))


def config(args, tokenizer: str | None, trim: int, group: int, steps: int):
  ns = types.SimpleNamespace(
      size=args.size, dropout=0.1, seq_len=args.seq_len, ft_batch=args.batch,
      ft_steps=steps, ft_eval_every=steps, vocab_size=8000, pooling="mean",
      ft_lr=5e-4)
  c = sst2_bench.finetune_config(ns, args.data, None)
  c.keep_checkpoints = 1
  if tokenizer:
    c.data.tokenizer.path = tokenizer
  c.task.trim_batches, c.task.group_by_length = trim, group
  return c


def mean_width(workdir: str, steps: int) -> float:
  """The mean width of the run's training batches (its own batch order)."""
  trained = load_trained(workdir)
  objective = make_objective(trained.config, stored=trained.objective.stored)
  split = objective.open_data(
      objective.open_source(trained.config.data.train, train=True),
      trained.tokenizer, os.path.join(workdir, "data"), None)
  batches = objective.train_batches(split, 0, 1)
  return float(np.mean([batches.batch(s)["tokens"].shape[1]
                        for s in range(steps)]))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=os.path.join(_ROOT, "..", "shared", "data",
                                                "sst2"))
  p.add_argument("--workdir", default=os.path.join(_ROOT, "runs",
                                                   "trim_bench"))
  p.add_argument("--size", default="bert_mini")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=2)
  args = p.parse_args()
  if min(args.steps, args.batch, args.rounds) < 1:
    sys.exit("error: --steps, --batch and --rounds must be positive.")
  args.data = os.path.abspath(args.data)
  root = os.path.abspath(args.workdir)
  os.makedirs(root, exist_ok=True)

  vocab = os.path.join(root, "vocabulary")     # the tokenizer, built once
  if not os.path.isdir(os.path.join(vocab, "checkpoints")):
    shutil.rmtree(vocab, ignore_errors=True)
    experiments.train(config(args, None, 0, 0, 1), vocab)
  tokenizer = load_trained(vocab).tokenizer.path

  seconds = {name: [] for name, _, _ in SETTINGS}
  results = {}
  for r in range(args.rounds):
    for name, trim, group in SETTINGS:
      workdir = os.path.join(root, f"{trim}_{group}")
      shutil.rmtree(workdir, ignore_errors=True)
      start = time.perf_counter()
      out = experiments.train(config(args, tokenizer, trim, group, args.steps),
                              workdir)
      seconds[name].append(time.perf_counter() - start)
      results[name] = (out, workdir)
      print(f"round {r}: {name}: {seconds[name][-1]:.1f} s, dev accuracy "
            f"{out['eval_accuracy']:.4f}", flush=True)

  full = statistics.median(seconds[SETTINGS[0][0]])
  print(f"\ntrim_batches: {args.size} on {args.data}, {args.steps} steps of "
        f"{args.batch} x {args.seq_len}, {args.rounds} rounds")
  print("| setting | wall time (s, median) | speed-up | mean batch width | "
        "dev accuracy |")
  print("|---|---|---|---|---|")
  for name, _, _ in SETTINGS:
    out, workdir = results[name]
    median = statistics.median(seconds[name])
    print(f"| {name} | {median:.1f} | {full / median:.2f}x | "
          f"{mean_width(workdir, args.steps):.1f} | "
          f"{out['eval_accuracy']:.4f} |")


if __name__ == "__main__":
  main()
