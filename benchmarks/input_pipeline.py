"""The streaming input pipeline at two corpus sizes: time to the first
batch, peak memory, and sustained input tokens/s against what the
quickstart train step consumes.

  python benchmarks/input_pipeline.py [--sizes_mb 10,2048] [--workers 2]
                                      [--seconds 20] [--dir /tmp/lm-input]

For each size the script writes a synthetic text corpus (`text:` files of
64 MB, lines of random words from a 5,000-word vocabulary with Zipf
frequencies; made once, kept in --dir), trains one SentencePiece tokenizer
(vocab 2048, the quickstart's) on the first 2 MB of the small corpus, then
measures in a fresh process per corpus:

  * first batch: seconds from opening the source (the offset-index scan
    included, no cached index) to `batch(0)` of the quickstart shape
    (16 rows of 128 tokens), with `--workers` Grain worker processes;
  * peak RSS: the measuring process's maximum resident set (its worker
    processes are listed apart);
  * input tokens/s: rows cut per second over `--seconds` after the first
    batch, as tokens (16 x 128 per batch).

The quickstart train step's consumption is measured in the same run (the
step of `benchmarks/train_throughput.py` on random tokens), and the ratio
printed. Goals: the first-batch times and the peak RSS of the two corpora
within 1.5x of each other, and input throughput >= 5x the step's.

With `--prepare_mb N` (one of the sizes) the N MB corpus is also tokenized
once by `launch.prepare` (its Beam pipeline, `--workers` local worker
processes, 8 shards; wall time and tokens/s of the command), and the
input rate of streaming the `prepared:` corpus is measured as above.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SHARD_MB = 64
BATCH, SEQ = 16, 128


def write_corpus(directory: str, size_mb: int) -> str:
  """`size_mb` MB of synthetic text in shards under `directory` (kept)."""
  os.makedirs(directory, exist_ok=True)
  done = os.path.join(directory, "DONE")
  if os.path.exists(done):
    return os.path.join(directory, "*.txt")
  rng = np.random.default_rng(size_mb)
  words = np.array(["".join(chr(97 + c) for c in rng.integers(0, 26, n))
                    for n in rng.integers(2, 10, 5000)])
  p = 1.0 / np.arange(1, 5001)
  pool = [" ".join(line) + "\n"
          for line in words[rng.choice(5000, (200_000, 12), p=p / p.sum())]]
  left, shard = size_mb << 20, 0
  while left > 0:
    n = min(left, SHARD_MB << 20)
    lines = rng.integers(0, len(pool), n // 40)
    text = "".join(pool[i] for i in lines)[:n]
    with open(os.path.join(directory, f"shard{shard:04d}.txt"), "w") as f:
      f.write(text[:text.rfind("\n") + 1])
    left -= n
    shard += 1
  open(done, "w").close()
  return os.path.join(directory, "*.txt")


def measure(glob: str, tokenizer: str, workers: int, seconds: float) -> dict:
  """Runs in a fresh process (see the module docstring); `glob` is a text
  glob, or "prepared:DIR"."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from lm.data import indexed, prepared, streaming  # pylint: disable=g-import-not-at-top
  from lm.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  tok = Tokenizer.load(tokenizer)
  start = time.perf_counter()
  src = (prepared.open_prepared(glob) if glob.startswith("prepared:")
         else indexed.open_indexed(f"text:{glob}"))
  with tempfile.TemporaryDirectory() as cache:
    corpus = streaming.StreamCorpus(src, tok, cache_dir=cache, workers=workers)
    indexed_s = time.perf_counter() - start
    batches = streaming.StreamBatches(corpus, global_batch_size=BATCH,
                                      seq_len=SEQ, seed=0)
    batches.batch(0)
    first = time.perf_counter() - start
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      batches.batch(n + 1)
      n += 1
    rate = n * BATCH * SEQ / (time.perf_counter() - t0)
    batches.close()
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  return {"documents": corpus.n_docs, "index_s": indexed_s,
          "first_batch_s": first, "peak_rss_mb": rss,
          "worker_peak_rss_mb": kids, "tokens_per_s": rate}


def step_consumption() -> float:
  """Tokens/s the quickstart train step consumes (random tokens)."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  from train_throughput import bench  # pylint: disable=g-import-not-at-top
  return bench("quickstart", 20, "float32", 2048, BATCH, SEQ)["tok_s"]


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sizes_mb", default="10,2048")
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--seconds", type=float, default=20.0)
  ap.add_argument("--dir", default="/tmp/lm-input-bench")
  ap.add_argument("--prepare_mb", type=int, default=0)
  ap.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.measure:
    print(json.dumps(measure(*args.measure, args.workers, args.seconds)))
    return
  sizes = [int(s) for s in args.sizes_mb.split(",")]
  globs = {s: write_corpus(os.path.join(args.dir, f"{s}mb"), s) for s in sizes}
  tok_path = os.path.join(args.dir, "tokenizer.model")
  if not os.path.exists(tok_path):
    from lm.data.sources import open_source  # pylint: disable=g-import-not-at-top
    from lm.data.tokenizer import train_tokenizer  # pylint: disable=g-import-not-at-top
    train_tokenizer(open_source(f"text:{globs[min(sizes)]}"), tok_path,
                    vocab_size=2048, max_chars=2_000_000)
  def run_measure(what):
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, tok_path,
         f"--workers={args.workers}", f"--seconds={args.seconds}"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])

  rows = {s: run_measure(globs[s]) for s in sizes}
  prep = None
  if args.prepare_mb:
    import shutil  # pylint: disable=g-import-not-at-top
    out_dir = os.path.join(args.dir, f"prepared-{args.prepare_mb}mb")
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "launch.prepare",
         f"--data=text:{globs[args.prepare_mb]}", f"--tokenizer={tok_path}",
         f"--out={out_dir}", "--shards=8", f"--workers={args.workers}"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    with open(os.path.join(out_dir, "prepared.json")) as f:
      manifest = json.load(f)
    prep = {"wall_s": wall, "tokens": manifest["tokens"],
            "documents": manifest["documents"],
            "stream": run_measure(f"prepared:{out_dir}")}
    del done
  step = step_consumption()
  print(f"quickstart train step consumes {step:,.0f} tokens/s "
        f"({BATCH} x {SEQ}); {args.workers} Grain workers")
  print("| corpus | documents | index scan s | first batch s | peak RSS MB "
        "| worker peak RSS MB | input tokens/s | input / step |")
  print("|---|---|---|---|---|---|---|---|")
  for s, r in rows.items():
    print(f"| {s:,} MB | {r['documents']:,} | {r['index_s']:.2f} | "
          f"{r['first_batch_s']:.2f} | {r['peak_rss_mb']:.0f} | "
          f"{r['worker_peak_rss_mb']:.0f} | {r['tokens_per_s']:,.0f} | "
          f"{r['tokens_per_s'] / step:.1f}x |")
  if prep is not None:
    r = prep["stream"]
    print(f"launch.prepare of the {args.prepare_mb:,} MB corpus: "
          f"{prep['documents']:,} documents, {prep['tokens']:,} tokens in "
          f"{prep['wall_s']:.1f} s ({prep['tokens'] / prep['wall_s']:,.0f} "
          f"tokens/s, {args.workers} Beam workers, 8 shards); streaming the "
          f"prepared corpus: first batch {r['first_batch_s']:.2f} s, peak RSS "
          f"{r['peak_rss_mb']:.0f} MB, {r['tokens_per_s']:,.0f} input "
          f"tokens/s ({r['tokens_per_s'] / step:.1f}x the step)")
  if len(sizes) == 2:
    a, b = rows[sizes[0]], rows[sizes[1]]
    print(f"first batch {b['first_batch_s'] / a['first_batch_s']:.2f}x, "
          f"peak RSS {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x "
          f"({sizes[1]:,} MB vs {sizes[0]:,} MB)")


if __name__ == "__main__":
  main()
