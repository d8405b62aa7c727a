"""Encoder-decoder decoding speed: cached greedy generation, tokens/s.

  python benchmarks/decode_seq2seq.py [--size t5_small] [--vocab 2048]
      [--input 64] [--new 128] [--batch 1] [--repeats 3]

Random weights of the named encoder-decoder size (speed does not depend on
the weights); `lm.generation.seq2seq.Seq2SeqDecoder.generate` as
`launch.sample` and the seq2seq evaluations run it: the encoder once, then
one token per step inside a jitted while_loop over the cached decoder. It
always runs exactly `--new` tokens (no end token). Compile time is excluded
(one call before timing); the figure is the best of `--repeats` calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lm.generation.seq2seq import Seq2SeqDecoder  # noqa: E402
from lm.models import build_model  # noqa: E402
from lm.models.config import make_model_config  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", default="t5_small")
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--input", type=int, default=64)
  p.add_argument("--new", type=int, default=128)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  cfg = make_model_config(args.size, vocab_size=args.vocab,
                          max_len=max(args.input, args.new + 1, 64))
  if cfg.arch != "encoder_decoder":
    sys.exit(f"error: --size {args.size} is a {cfg.arch!r} model; name an "
             "encoder-decoder size (t5_tiny, t5_small, ...), or use "
             "benchmarks/decode.py for decoder-only ones.")
  model = build_model(cfg)
  ids = jnp.zeros((1, 8), jnp.int32)
  params = jax.jit(lambda: model.init(jax.random.key(0), ids, ids)["params"])()
  inputs = np.random.default_rng(0).integers(
      4, args.vocab, size=(args.batch, args.input)).tolist()
  decoder = Seq2SeqDecoder(model)

  def run():
    return decoder.generate(params, inputs, max_new_tokens=args.new,
                            start_id=0)
  run()
  best = float("inf")
  for _ in range(args.repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  print(f"{args.size} (scan_layers={cfg.scan_layers}), vocab {args.vocab}, "
        f"batch {args.batch}, {args.input} input tokens, {args.new} new, "
        f"greedy: {args.batch * args.new / best:,.0f} tokens/s")


if __name__ == "__main__":
  main()
