"""Code summarization on the standard library: a T5 fine-tuned from the
span-corruption quickstart against the same T5 from scratch and a TF-IDF
nearest-neighbour baseline.

  python benchmarks/code_summarize.py [--pretrained runs/t5_quickstart]
      [--steps 1000] [--size t5_tiny] [--keep DIR] [--beam_size 4]
      [--no_repeat_ngram 3]

The task: each documented function of `pystdlib` (its source with the
docstring removed, as `lm.data.pairs` extracts it for code search) -> the
first sentence of its docstring. Training pairs come from the training
files of `pystdlib:train` (the last 5% of them are the dev set that picks
the best checkpoint by ROUGE-L); the scores are on every pair of
`pystdlib:validation`, whose files no run here ever trained on (neither
span corruption nor fine-tuning) and whose code or docstring does not
occur in a training file.

Rows:
  TF-IDF nearest    the first docstring sentence of the training function
                    whose code is the TF-IDF-cosine nearest to the held-out
                    function's (bag of words, idf over the training code)
  pretrained        `configs/t5_quickstart.py` (600 steps of span corruption
                    on `pystdlib:train`; trained here unless --pretrained
                    names a finished run), then fine-tuned
                    (`configs/finetune_summarize.py` with its data set to
                    these pairs)
  from scratch      the same model, tokenizer, data and steps from random
                    weights

Each fine-tuned model decodes greedily, or with `--beam_size` beams, never
repeating an n-gram of its output with `--no_repeat_ngram n` (at most
`target_len` tokens; the same decoding picks the checkpoint on dev); BLEU is
sacrebleu's corpus BLEU and ROUGE the mean rouge-score F-measure (stemmed),
both 0-100 (`lm.objectives.seq2seq.text_scores`). Everything runs through
the training loop and `launch.predict`'s decoding path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import finetune_summarize, t5_quickstart  # noqa: E402
from lm import experiments  # noqa: E402
from lm.data import pairs as pairs_lib  # noqa: E402
from lm.objectives.seq2seq import text_scores  # noqa: E402
from lm.tasks import retrieval  # noqa: E402

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(doc: str) -> str:
  """The docstring's first sentence: its first paragraph with whitespace
  collapsed, cut after the first '.', '!' or '?' that a space follows.

  >>> first_sentence("Return x times two.  Not more.\\n\\nDetails.")
  'Return x times two.'
  >>> first_sentence("Split the path\\ninto parts\\n\\nMore.")
  'Split the path into parts'
  """
  paragraph = " ".join(doc.strip().split("\n\n")[0].split())
  return _SENTENCE_END.split(paragraph, maxsplit=1)[0].strip()


def examples(uri: str) -> list[dict]:
  """{"code", "summary"} for each docstring/code pair of `uri`."""
  src = pairs_lib.open_pairs(uri)
  out = []
  for doc, code in zip(src.anchors, src.positives):
    summary = first_sentence(doc)
    if summary:
      out.append({"code": code, "summary": summary})
  return out


def write_jsonl(path: str, rows: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def nearest_baseline(train: list[dict], test: list[dict]) -> list[str]:
  """The summary of the TF-IDF-nearest training function for each test
  function (`lm.tasks.retrieval.tfidf_vectors`, idf over the training code)."""
  q, c = retrieval.tfidf_vectors([r["code"] for r in test],
                                 [r["code"] for r in train])
  nearest = np.argmax(q @ c.T, axis=1)
  return [train[int(i)]["summary"] for i in nearest]


def fine_tune_config(data_dir: str, init_from: str | None, args, model: dict,
                     tokenizer: str):
  """`configs/finetune_summarize.py` on the pairs in `data_dir`."""
  arg = f"data={data_dir}" + (f",{init_from}" if init_from else "")
  c = finetune_summarize.get_config(arg)
  c.progress_bar = False
  c.seq2seq.input_field, c.seq2seq.target_field = "code", "summary"
  c.seq2seq.target_len = args.target_len
  c.seq2seq.generate_examples = args.dev_examples
  c.seq2seq.beam_size = args.beam_size
  c.seq2seq.no_repeat_ngram = args.no_repeat_ngram
  if args.lr:
    c.optimizer.lr = args.lr
  c.model.dropout = args.dropout
  c.seq_len, c.batch_size, c.steps = args.seq_len, args.batch_size, args.steps
  c.eval_every = c.checkpoint_every = max(args.steps // 4, 1)
  c.optimizer.warmup_steps = max(args.steps // 20, 1)
  c.data.tokenizer.path = tokenizer
  if not init_from:          # the pretrained run's architecture, fresh weights
    for key, value in model.items():
      if key in c.model:
        c.model[key] = value
  return c


def score_run(workdir: str, test: list[dict], batch_size: int) -> tuple[dict, list[str]]:
  """ROUGE/BLEU of the run's best checkpoint on `test`, decoded as
  `launch.predict` decodes."""
  trained = experiments.load_trained(workdir, best=True)
  outputs = trained.objective.predict_texts(
      trained, [r["code"] for r in test], batch_size=batch_size)
  hyps = [o["output"] for o in outputs]
  return text_scores(hyps, [r["summary"] for r in test]), hyps


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--pretrained", default=None,
                 help="a finished configs/t5_quickstart.py run (default: "
                      "train one here)")
  p.add_argument("--size", default=None,
                 help="model size of the pretraining run trained here "
                      "(default: the quickstart's, t5_tiny with 4 + 4 layers)")
  p.add_argument("--steps", type=int, default=1000, help="fine-tuning steps")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--seq_len", type=int, default=192, help="code tokens")
  p.add_argument("--target_len", type=int, default=32, help="summary tokens")
  p.add_argument("--dev_examples", type=int, default=128,
                 help="dev pairs decoded at each evaluation (ROUGE-L picks "
                      "the checkpoint)")
  p.add_argument("--lr", type=float, default=None,
                 help="fine-tuning peak learning rate (default: the config's, "
                      "1e-3)")
  p.add_argument("--dropout", type=float, default=0.0,
                 help="dropout while fine-tuning (T5 fine-tunes with 0.1)")
  p.add_argument("--beam_size", type=int, default=1,
                 help="beams of the fine-tuned models' decoding (1: greedy), "
                      "in the dev evaluations and on the held-out pairs")
  p.add_argument("--no_repeat_ngram", type=int, default=0,
                 help="the decoding never repeats an n-gram of its output "
                      "(0: off)")
  p.add_argument("--keep", default=None,
                 help="keep the runs in this directory (default: a temporary "
                      "one, removed at the end)")
  args = p.parse_args()
  root = args.keep or tempfile.mkdtemp(prefix="code_summarize-")
  os.makedirs(root, exist_ok=True)
  try:
    train = examples("pystdlib:train")
    test = examples("pystdlib:validation")
    n_dev = max(len(train) // 20, 1)
    train, dev = train[:-n_dev], train[-n_dev:]
    data_dir = os.path.join(root, "data")
    os.makedirs(data_dir, exist_ok=True)
    write_jsonl(os.path.join(data_dir, "train.jsonl"), train)
    write_jsonl(os.path.join(data_dir, "dev.jsonl"), dev)
    print(f"pairs: {len(train):,} train, {len(dev):,} dev (training files), "
          f"{len(test):,} test (pystdlib:validation files)", flush=True)

    seconds = {}
    pretrained = args.pretrained
    if pretrained is None:
      pretrained = os.path.join(root, "t5_quickstart")
      c = t5_quickstart.get_config()
      c.progress_bar = False
      if args.size:
        c.model.size = args.size
      start = time.perf_counter()
      bench_train.train(c, pretrained)
      seconds["pretraining"] = time.perf_counter() - start
    source = experiments.load_trained(pretrained)
    model = {k: v for k, v in source.config.model.items() if v is not None}
    tokenizer = source.tokenizer.path
    layers = (source.model_cfg.num_layers, source.model_cfg.decoder_layers)
    del source

    rows = {}
    start = time.perf_counter()
    nearest = nearest_baseline(train, test)
    rows["TF-IDF nearest training docstring"] = text_scores(
        nearest, [r["summary"] for r in test])
    seconds["TF-IDF nearest training docstring"] = time.perf_counter() - start
    samples = {}
    for name, init in (("pretrained (span corruption) + fine-tuned", pretrained),
                       ("from scratch", None)):
      workdir = os.path.join(root, "scratch" if init is None else "finetuned")
      c = fine_tune_config(data_dir, init, args, model, tokenizer)
      start = time.perf_counter()
      bench_train.train(c, workdir)
      seconds[name] = time.perf_counter() - start
      rows[name], samples[name] = score_run(workdir, test, args.batch_size)

    print(f"\ncode_summarize: {len(test)} held-out functions of "
          f"pystdlib:validation; fine-tuning {args.steps} steps of "
          f"{args.batch_size} x {args.seq_len} code tokens -> "
          f"{args.target_len} summary tokens; model {model.get('size')}"
          f" with {layers[0]} + {layers[1]} layers; decoding: beam "
          f"{args.beam_size}, no_repeat_ngram {args.no_repeat_ngram}")
    # a model that writes one generic sentence for everything can pass the
    # nearest neighbour on ROUGE-1/L; the distinct count shows it
    samples["TF-IDF nearest training docstring"] = nearest
    print("| model | ROUGE-L | ROUGE-1 | ROUGE-2 | BLEU | distinct outputs | "
          "wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, m in rows.items():
      distinct = len(set(samples[name]))
      print(f"| {name} | {m['rougeL']:.1f} | {m['rouge1']:.1f} | "
            f"{m['rouge2']:.1f} | {m['bleu']:.1f} | {distinct} of {len(test)} | "
            f"{seconds[name]:.0f} |")
    if "pretraining" in seconds:
      print(f"(span-corruption pretraining: {seconds['pretraining']:.0f} s)")
    print("\nfirst held-out functions:")
    for i in range(min(5, len(test))):
      print(f"- reference: {test[i]['summary']}")
      for name, hyps in samples.items():
        if name == "TF-IDF nearest training docstring":
          continue
        print(f"  {name}: {hyps[i]}")
  finally:
    if not args.keep:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
