"""Code search quality: held-out docstring -> function retrieval after a CPU
run of `configs/code_search.py`, next to a TF-IDF baseline.

  python benchmarks/code_search.py [--steps N] [--workdir DIR]

Trains the config through the real loop (or, with --workdir of a finished
run, only evaluates it), then embeds every held-out pair of
`pystdlib:validation` (up to `contrastive.eval_candidates`) and ranks, for
each docstring, its own function among all held-out functions. Prints
recall@1, recall@10 and MRR for the trained encoder, for the same encoder
at initialisation, and for bag-of-words TF-IDF cosine on exactly the same
candidates.
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
from configs import code_search  # noqa: E402
from lm import experiments
from lm.data import pairs as pairs_lib  # noqa: E402
from lm.objectives.contrastive import embed_texts  # noqa: E402
from lm.tasks import retrieval  # noqa: E402
from lm.experiments import load_trained  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=None, help="default: the config's")
  p.add_argument("--workdir", default=None,
                 help="a finished run to evaluate (default: train in a temp dir)")
  args = p.parse_args()
  c = code_search.get_config()
  c.progress_bar = False
  if args.steps:
    c.steps = args.steps
  tmp = tempfile.mkdtemp(prefix="code_search-")
  try:
    workdir = args.workdir
    seconds = None
    if workdir is None:
      workdir = os.path.join(tmp, "run")
      start = time.perf_counter()
      bench_train.train(c, workdir)
      seconds = time.perf_counter() - start
    trained = load_trained(workdir)
    c = trained.config
    held_out = pairs_lib.open_pairs(c.data.eval)
    n = min(len(held_out), c.contrastive.eval_candidates)
    queries, code = held_out.anchors[:n], held_out.positives[:n]
    a = embed_texts(trained, queries)
    b = embed_texts(trained, code)
    rows = {
        "trained": retrieval.retrieval_metrics(a, b, ks=(1, 10)),
        "untrained": {k[len("eval_"):]: v for k, v in experiments.evaluate_untrained(
            c, os.path.join(tmp, "untrained")).items()},
        "TF-IDF": retrieval.tfidf_baseline(queries, code, ks=(1, 10)),
    }
    print(f"code_search ({c.model.size}, {trained.step} steps of "
          f"{c.batch_size}x{c.seq_len}"
          + (f", {seconds / 60:.1f} min" if seconds else "")
          + f"): {n} held-out pairs of {c.data.eval}")
    print("| encoder | recall@1 | recall@10 | MRR |")
    print("|---|---|---|---|")
    for name, m in rows.items():
      print(f"| {name} | {m['recall@1']:.3f} | {m['recall@10']:.3f} | "
            f"{m['mrr']:.3f} |")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
