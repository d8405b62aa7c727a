"""SST-2 sentiment: a small BERT pretrained and fine-tuned on a CPU, next to
TF-IDF + logistic regression.

  python benchmarks/sst2.py [--data ../shared/data/sst2]
      [--workdir runs/sst2_bench] [--size bert_tiny] [--seq_len 64]
      [--vocab_size 8000]
      [--mlm_steps 3000] [--mlm_batch 64] [--mlm_lr 1e-3]
      [--ft_steps 3000] [--ft_batch 32] [--ft_lr 5e-4] [--ft_eval_every 500]
      [--pooling mean|cls] [--dropout 0.1] [--no-scratch] [--no-pretrain]
      [--resume]

Data (`--data`): `train.tsv` (phrases), `dev.tsv` (held-out phrases: picks
the L2 of the baseline and the best fine-tuning checkpoint) and `test.tsv`
(GLUE's 872 validation sentences, used only for the reported accuracy),
each with the header `sentence<TAB>label` (1 = positive).

Rows of the table:
  * TF-IDF + LR: `lm.tasks.baseline` (unigrams + bigrams, sublinear tf),
    the L2 (`--l2`) with the best dev accuracy.
  * BERT, MLM-pretrained: masked LM without NSP on the training sentences
    only (written one per line to WORKDIR/corpus.txt; consecutive lines are
    packed into rows of `--seq_len`), then fine-tuned on train.tsv
    (objective "classification"; `--pooling` over the hidden states, since
    BERT's pooler is trained only by NSP), keeping the checkpoint with the
    best dev accuracy, which is evaluated on test.tsv.
  * BERT, no pretraining (`--no-scratch` skips it): the same fine-tuning
    from a random initialisation, with the pretraining run's tokenizer.
Wall times are the training runs' (tokenizer, data, compiles and periodic
dev evals included); the baseline's covers features, every L2 tried and
the predictions. The runs live in WORKDIR/{mlm,finetune,scratch}; they are
deleted and retrained unless --resume (which reuses finished runs, so their
times then cover only the work left). Defaults take about 25 minutes on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import common  # noqa: E402
from launch.evaluate import evaluate_workdir  # noqa: E402
from lm import experiments
from lm.errors import LmError  # noqa: E402
from lm.tasks import baseline  # noqa: E402
from lm.experiments import load_trained  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_tsv(path: str) -> tuple[list[str], np.ndarray]:
  """(sentences, int labels) of a `sentence<TAB>label` file."""
  if not os.path.isfile(path):
    raise LmError(f"{path} does not exist; pass --data, a directory with "
                  "train.tsv, dev.tsv and test.tsv.")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return ([r["sentence"].strip() for r in rows],
          np.array([int(r["label"]) for r in rows], np.int64))


def run_baseline(data: str, l2s) -> dict:
  """TF-IDF + LR on train, L2 picked on dev, accuracy on test."""
  start = time.perf_counter()
  train, dev, test = (read_tsv(os.path.join(data, f"{s}.tsv"))
                      for s in ("train", "dev", "test"))
  vec = baseline.TfidfVectorizer.fit(train[0], ngrams=(1, 2),
                                     sublinear_tf=True)
  x_train, x_dev, x_test = (vec.transform(t) for t, _ in (train, dev, test))
  best = None
  for l2 in l2s:
    model = baseline.SoftmaxRegression.fit(x_train, train[1], l2=l2)
    dev_acc = float(np.mean(model.predict(x_dev) == dev[1]))
    if best is None or dev_acc > best[0]:
      best = (dev_acc, l2, model)
  dev_acc, l2, model = best
  return {"test_accuracy": float(np.mean(model.predict(x_test) == test[1])),
          "dev_accuracy": dev_acc, "l2": l2, "features": x_train.shape[1],
          "seconds": time.perf_counter() - start}


def write_corpus(data: str, path: str) -> int:
  """The training sentences, one per line (the MLM corpus); their count."""
  texts, _ = read_tsv(os.path.join(data, "train.tsv"))
  texts = [t for t in texts if t]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(texts) + "\n")
  os.replace(path + ".tmp", path)
  return len(texts)


def mlm_config(args, corpus: str):
  c = experiments.base_config()
  c.objective = "mlm"
  c.progress_bar = False
  c.model.size = args.size
  c.model.dropout = args.mlm_dropout
  c.model.attention_dropout = args.mlm_dropout
  c.seq_len = args.seq_len
  c.batch_size = args.mlm_batch
  c.steps = args.mlm_steps
  c.log_every = max(1, args.mlm_steps // 10)
  c.eval_every = args.mlm_steps
  c.checkpoint_every = args.mlm_steps
  c.keep_checkpoints = 1
  c.data.train = f"text:{corpus}"
  c.data.eval = ""
  c.data.tokenizer.vocab_size = args.vocab_size
  c.mlm.nsp = False
  c.mlm.documents = "source"     # one document; lines are packed into rows
  c.mlm.segments = "lines"
  c.optimizer.lr = args.mlm_lr
  c.optimizer.warmup_steps = max(1, args.mlm_steps // 20)
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01
  return c


def finetune_config(args, data: str, init_from: str | None):
  c = experiments.base_config()
  c.objective = "classification"
  c.progress_bar = False
  c.model.size = args.size
  if init_from:
    common.from_backbone(c, init_from)   # c.init_from and the model's size
  c.model.dropout = args.dropout
  c.model.attention_dropout = args.dropout
  c.seq_len = args.seq_len
  c.batch_size = args.ft_batch
  c.steps = args.ft_steps
  c.log_every = max(1, args.ft_eval_every // 2)
  c.eval_every = args.ft_eval_every
  c.checkpoint_every = args.ft_eval_every
  c.keep_checkpoints = 1          # plus the best by dev accuracy
  c.eval_steps = 0                # the whole dev split
  c.data.train = f"tsv:{data}/train.tsv"
  c.data.eval = f"tsv:{data}/dev.tsv"
  c.data.tokenizer.vocab_size = args.vocab_size
  c.task.text_field = "sentence"
  c.task.label_field = "label"
  c.task.pooling = args.pooling
  c.optimizer.lr = args.ft_lr
  c.optimizer.warmup_steps = max(1, args.ft_steps // 10)
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01
  return c


def train_timed(config, workdir: str) -> float:
  start = time.perf_counter()
  bench_train.train(config, workdir)
  return time.perf_counter() - start


def test_accuracy(workdir: str, data: str) -> dict:
  """Accuracy on test.tsv of the best-on-dev checkpoint in `workdir`."""
  best = load_trained(workdir, best=True)
  result = evaluate_workdir(workdir, data=f"tsv:{data}/test.tsv",
                            step=best.step)
  dev = evaluate_workdir(workdir, step=best.step)
  return {"test_accuracy": result["accuracy"], "dev_accuracy": dev["accuracy"],
          "step": best.step}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=os.path.join(_ROOT, "..", "shared", "data",
                                                "sst2"))
  p.add_argument("--workdir", default=os.path.join(_ROOT, "runs",
                                                   "sst2_bench"))
  p.add_argument("--size", default="bert_tiny")
  p.add_argument("--seq_len", type=int, default=64)
  p.add_argument("--vocab_size", type=int, default=8000)
  p.add_argument("--mlm_steps", type=int, default=3000)
  p.add_argument("--mlm_batch", type=int, default=64)
  p.add_argument("--mlm_lr", type=float, default=1e-3)
  p.add_argument("--mlm_dropout", type=float, default=0.0)
  p.add_argument("--ft_steps", type=int, default=3000)
  p.add_argument("--ft_batch", type=int, default=32)
  p.add_argument("--ft_lr", type=float, default=5e-4)
  p.add_argument("--ft_eval_every", type=int, default=500)
  p.add_argument("--pooling", choices=("cls", "mean"), default="mean")
  p.add_argument("--dropout", type=float, default=0.1)
  p.add_argument("--l2", type=float, nargs="+",
                 default=[1e-7, 1e-6, 1e-5, 1e-4])
  p.add_argument("--scratch", action=argparse.BooleanOptionalAction,
                 default=True, help="also fine-tune from random init")
  p.add_argument("--pretrain", action=argparse.BooleanOptionalAction,
                 default=True, help="pretrain and fine-tune the BERT")
  p.add_argument("--resume", action="store_true",
                 help="reuse the runs in --workdir instead of retraining")
  args = p.parse_args()
  data = os.path.abspath(args.data)
  work = os.path.abspath(args.workdir)
  if not args.resume:
    for name in ("mlm", "finetune", "scratch"):
      shutil.rmtree(os.path.join(work, name), ignore_errors=True)
  start = time.perf_counter()
  rows = []

  b = run_baseline(data, args.l2)
  rows.append(("TF-IDF + LR (uni+bigrams, L2 %g)" % b["l2"],
               b["dev_accuracy"], b["test_accuracy"], b["seconds"], "-"))
  print(f"baseline: {b}", flush=True)

  if args.pretrain:
    corpus = os.path.join(work, "corpus.txt")
    write_corpus(data, corpus)
    mlm_dir = os.path.join(work, "mlm")
    mlm_seconds = train_timed(mlm_config(args, corpus), mlm_dir)
    ft_dir = os.path.join(work, "finetune")
    ft_seconds = train_timed(finetune_config(args, data, mlm_dir), ft_dir)
    r = test_accuracy(ft_dir, data)
    print(f"pretrained: {r}", flush=True)
    rows.append((f"{args.size} MLM {args.mlm_steps} + fine-tune "
                 f"({args.pooling})", r["dev_accuracy"], r["test_accuracy"],
                 mlm_seconds + ft_seconds,
                 f"{args.mlm_steps} MLM + {r['step']}/{args.ft_steps}"))
  if args.scratch:
    sc_dir = os.path.join(work, "scratch")
    c = finetune_config(args, data, None)
    if args.pretrain:    # the same tokenizer as the pretrained row
      c.data.tokenizer.path = os.path.join(work, "mlm", "tokenizer.model")
    sc_seconds = train_timed(c, sc_dir)
    r = test_accuracy(sc_dir, data)
    print(f"scratch: {r}", flush=True)
    rows.append((f"{args.size} no pretraining ({args.pooling})",
                 r["dev_accuracy"], r["test_accuracy"], sc_seconds,
                 f"{r['step']}/{args.ft_steps}"))

  total = time.perf_counter() - start
  print(f"SST-2 ({data}): seq_len {args.seq_len}, vocab {args.vocab_size}; "
        f"total {total / 60:.1f} min")
  print("| method | dev accuracy | test accuracy | train wall time (s) | "
        "steps (best/total) |")
  print("|---|---|---|---|---|")
  for name, dev, test, seconds, steps in rows:
    print(f"| {name} | {dev:.4f} | {test:.4f} | {seconds:.0f} | {steps} |")


if __name__ == "__main__":
  main()
