"""Decoding speed with and without the KV cache.

  python benchmarks/decode.py [--size quickstart] [--new 128,512] [--batch 1,8]

Greedy decoding of random-weight models of the named size (speed does not
depend on the weights; `max_len` is raised to fit prompt + new tokens). The
cached path is `lm.generation.decode.Decoder` (prefill, then one token per
step inside a jitted while_loop). The uncached reference recomputes the full
forward pass over the whole fixed-size buffer for every new token, also
inside one jitted loop, so neither side pays Python dispatch per token.
Compile time is excluded (each function runs once before timing).
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

from lm.generation.decode import Decoder  # noqa: E402
from lm.models import build_model  # noqa: E402
from lm.models.config import make_model_config  # noqa: E402

PROMPT = 16


def uncached_fn(model, total: int):
  """Greedy decoding by full recompute over a `[B, total]` buffer."""

  @jax.jit
  def run(params, buf):
    def body(i, buf):
      logits, _ = model.apply({"params": params}, buf)
      nxt = jnp.argmax(logits[:, PROMPT + i - 1], axis=-1).astype(jnp.int32)
      return buf.at[:, PROMPT + i].set(nxt)
    return jax.lax.fori_loop(0, total - PROMPT, body, buf)

  return run


def timed(fn, repeats: int = 2) -> float:
  fn()  # compile and warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", default="quickstart")
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--new", default="128,512")
  p.add_argument("--batch", default="1,8")
  p.add_argument("--scan_layers", type=int, default=1,
                 help="1: layers under nn.scan (the cache is stacked), 0: a loop")
  args = p.parse_args()
  news = [int(x) for x in args.new.split(",")]
  batches = [int(x) for x in args.batch.split(",")]
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}); model {args.size}, "
        f"vocab {args.vocab}, prompt {PROMPT} tokens, greedy, "
        f"scan_layers={bool(args.scan_layers)}")
  print("| new tokens | batch | cached tok/s | uncached tok/s | speed-up |")
  print("|---|---|---|---|---|")
  for new in news:
    total = PROMPT + new
    cfg = make_model_config(args.size, vocab_size=args.vocab, max_len=max(total, 64),
                            scan_layers=bool(args.scan_layers))
    model = build_model(cfg)
    params = model.init({"params": jax.random.key(0)},
                        jnp.zeros((1, 8), jnp.int32))["params"]
    decoder = Decoder(model, chunk=new)
    uncached = uncached_fn(model, total)
    for b in batches:
      rng = np.random.default_rng(b)
      prompts = rng.integers(4, args.vocab, size=(b, PROMPT)).tolist()
      buf = np.zeros((b, total), np.int32)
      buf[:, :PROMPT] = prompts
      buf = jnp.asarray(buf)

      def cached_run():
        return decoder.generate(params, prompts, max_new_tokens=new,
                                max_len=total)

      def uncached_run():
        return uncached(params, buf).block_until_ready()

      t_c = timed(cached_run)
      t_u = timed(uncached_run, repeats=1)
      got = cached_run().tokens
      ref = np.asarray(uncached(params, buf))[:, PROMPT:].tolist()
      same = "" if got == ref else " (outputs differ!)"
      print(f"| {new} | {b} | {b * new / t_c:,.0f} | {b * new / t_u:,.0f} | "
            f"{t_u / t_c:.1f}×{same} |", flush=True)


if __name__ == "__main__":
  main()
