"""Int8 weight-only serving against float: bytes, eval quality and decoding
speed of one trained run.

  python benchmarks/quantize.py --workdir runs/quickstart [--max_batches N]
  python benchmarks/quantize.py [--steps 1000] [--max_batches 50] [--keep DIR]

With --workdir, measures that run; without, first trains
`configs/quickstart.py:runlocal` for --steps steps in a temporary directory
(or --keep DIR). Both sides are loaded as the entry points load them
(`lm.experiments.load_trained(..., quantize=None | "int8")`):

  bytes       the served parameter tree, all of it and the quantized part
              (dense kernels and the token embedding: float32 against int8
              plus float32 scales)
  eval        `launch.evaluate`'s metrics on the run's eval split (its
              config.eval_steps batches unless --max_batches), float, int8
              and the difference; writes both results under WORKDIR/eval/
  greedy      tokens/s of greedy cached decoding (`lm.generation.decode.
              Decoder`, as launch.sample) of --new tokens (capped to the
              model's context) for a batch of 1
              and of 8 prompts, EOS ignored so both sides decode the same
              count; median of --rounds alternating rounds, compile
              excluded; how many int8 greedy rows are the float model's
              exactly; and, teacher-forced on the float model's greedy
              rows, how often int8's next-token argmax is float's (greedy
              text forks at the first near-tie, so the rows alone
              understate agreement)
Prints one markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.traverse_util  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import quickstart  # noqa: E402
from launch.evaluate import evaluate_workdir  # noqa: E402
from lm import experiments  # noqa: E402
from lm.generation.decode import Decoder  # noqa: E402
from lm.generation.text import context_length  # noqa: E402
from lm.models import quantize  # noqa: E402

PROMPTS = ["def ", "import ", "class ", "return ", "for i in ", "if x",
           "    self.", "# "]
_METRICS = ("loss", "perplexity", "accuracy", "mlm_accuracy", "macro_f1")


def _train(workdir: str, steps: int) -> None:
  c = quickstart.get_config("runlocal")
  c.steps = steps
  c.eval_every = steps
  c.checkpoint_every = steps
  c.log_every = max(steps // 5, 1)
  c.sample.prompt = ""
  c.progress_bar = False
  with contextlib.redirect_stdout(io.StringIO()):
    bench_train.train(c, workdir)


def _kernel_bytes(flt, q8) -> tuple[int, int, int]:
  """(count, float bytes, int8 bytes) of the quantized params: `kernel` or
  `embedding` against its `*_q` and `*_scale`."""
  paths = quantize.quantizable_axes(flt.model, flt.config.seq_len)
  f = flax.traverse_util.flatten_dict(flt.params)
  q = flax.traverse_util.flatten_dict(q8.params)
  fb = sum(f[p].nbytes for p in paths)
  qb = sum(q[(*p[:-1], name(p[-1]))].nbytes for p in paths
           for name in (quantize.quantized_name, quantize.scale_name))
  return len(paths), fb, qb


def _prompts(trained, batch: int) -> list[list[int]]:
  tok = trained.tokenizer
  return [[tok.bos_id] + tok.encode(p) for p in PROMPTS[:batch]]


def _decode_speed(trained, decoder, batch: int, new: int, rounds_out: list):
  """One timed greedy decode of `new` tokens for `batch` prompts; appends
  tokens/s to `rounds_out`, returns the generated ids."""
  prompts = _prompts(trained, batch)
  max_len = max(len(p) for p in prompts) + new
  with jax.set_mesh(trained.mesh):
    start = time.perf_counter()
    gen = decoder.generate(trained.params, prompts, max_new_tokens=new,
                           max_len=max_len, eos_id=None)
    rounds_out.append(batch * new / (time.perf_counter() - start))
  return gen.tokens


def _agreement(runs, prompts, ref) -> float:
  """Share of positions where the int8 model's next-token argmax is the
  float model's, teacher-forced on the float model's greedy rows `ref`
  (each row run alone, unpadded)."""
  model = runs["none"].model
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t)[0])
  same = total = 0
  for prompt, gen in zip(prompts, ref):
    tokens = jnp.asarray([prompt + gen[:-1]])
    top = {m: np.asarray(apply(r.params, tokens))[0].argmax(-1)
           for m, r in runs.items()}
    first = len(prompt) - 1
    same += int((top["none"][first:] == top["int8"][first:]).sum())
    total += len(gen)
  return same / max(total, 1)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default=None,
                 help="a trained run (default: train quickstart:runlocal)")
  p.add_argument("--steps", type=int, default=1000,
                 help="steps of the run trained without --workdir")
  p.add_argument("--keep", default=None,
                 help="train into this directory and keep it")
  p.add_argument("--max_batches", type=int, default=None,
                 help="eval batches (default: the run's config.eval_steps)")
  p.add_argument("--new", type=int, default=100,
                 help="greedy tokens (at most what the context leaves)")
  p.add_argument("--rounds", type=int, default=5)
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="quantize-")
  try:
    workdir = args.workdir
    if workdir is None:
      workdir = args.keep or os.path.join(tmp, "run")
      start = time.perf_counter()
      _train(workdir, args.steps)
      print(f"trained configs/quickstart.py:runlocal for {args.steps} steps "
            f"in {time.perf_counter() - start:.0f} s -> {workdir}")
    runs = {m: experiments.load_trained(workdir, quantize=m)
            for m in ("none", "int8")}
    flt, q8 = runs["none"], runs["int8"]
    rows = []
    fb, qb = quantize.param_bytes(flt.params), quantize.param_bytes(q8.params)
    rows.append(("parameter bytes, whole model", f"{fb:,}", f"{qb:,}",
                 f"{qb / fb:.3f}x"))
    n, fk, qk = _kernel_bytes(flt, q8)
    rows.append((f"of which quantized ({n} arrays)",
                 f"{fk:,}", f"{qk:,}", f"{qk / fk:.3f}x"))
    evals = {m: evaluate_workdir(workdir, max_batches=args.max_batches,
                                 quantize=m) for m in runs}
    counted = evals["none"]["counted"]
    for key in _METRICS:
      if key in evals["none"]:
        a, b = evals["none"][key], evals["int8"][key]
        rows.append((f"eval {key}", f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"))
    if flt.objective.generates_text:
      decoders = {m: Decoder(r.model) for m, r in runs.items()}
      longest = max(len(p) for p in _prompts(flt, len(PROMPTS)))
      new = min(args.new, context_length(flt.model_cfg, longest, args.new)
                - longest)
      for batch in (1, 8):
        speeds = {m: [] for m in runs}
        out = {}
        for m in runs:      # compile and warm up, outside the timing
          out[m] = _decode_speed(runs[m], decoders[m], batch, new, [])
        for _ in range(args.rounds):
          for m in runs:
            _decode_speed(runs[m], decoders[m], batch, new, speeds[m])
        a, b = (statistics.median(speeds[m]) for m in runs)
        rows.append((f"greedy tokens/s, batch {batch}, {new} new",
                     f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.2f}x"))
        same_rows = sum(a == b for a, b in zip(out["none"], out["int8"]))
        rows.append((f"greedy rows identical to float's, batch {batch}", "",
                     f"{same_rows} of {batch}", ""))
    ref = out["none"]           # batch 8's float greedy rows
    agree = _agreement(runs, _prompts(flt, len(ref)), ref)
    rows.append(("next-token argmax = float's, teacher-forced on float's "
                 f"greedy text ({len(ref) * new:,} positions)", "",
                 f"{agree:.1%}", ""))
    dev = jax.devices()[0]
    e = evals["none"]
    print(f"{workdir} step {flt.step} ({flt.config.model.size}, "
          f"objective {flt.config.objective}); eval on {e['data']} over "
          f"{e[counted]:,} {counted} in {e['batches']} batches; "
          f"{dev.platform} ({dev.device_kind})")
    print("| | float32 | int8 | int8 vs float |")
    print("|---|---|---|---|")
    for row in rows:
      print("| " + " | ".join(row) + " |")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
