"""Decoding speed with and without the KV cache.

  python benchmarks/decode.py [--size quickstart] [--new 128,512] [--batch 1,8]

Greedy decoding of random-weight models of the named size (speed does not
depend on the weights; `max_len` is raised to fit prompt + new tokens). The
cached path is `lm.generation.decode.Decoder` (prefill, then one token per
step inside a jitted while_loop). The uncached reference recomputes the full
forward pass over the whole fixed-size buffer for every new token, also
inside one jitted loop, so neither side pays Python dispatch per token.
Compile time is excluded (each function runs once before timing).

The last column (batch 1 and 8, the default `quickstart` size, which has
GPT-2's layout) is `transformers`' `GPT2LMHeadModel.generate` in PyTorch on
the same shape: greedy, KV cache, the same prompt, exactly `new` tokens;
printed as lm's cached tokens/s over torch's (`--torch 0` skips it).
Goals (issue: performance): cached >= 10x uncached at 128 new tokens and
>= 25x at 512 (batch 1); lm >= 1.5x transformers' generate.
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


def torch_generate_fn(cfg, total: int, prompts, new: int):
  """`transformers`' GPT-2 of `cfg`'s shape generating `new` greedy tokens
  with its KV cache, or None when the model is not GPT-2-shaped."""
  if (cfg.arch != "transformer" or cfg.position != "learned"
      or cfg.norm != "layernorm" or cfg.mlp != "gelu"):
    return None
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=total,
                      n_embd=cfg.d_model, n_layer=cfg.num_layers,
                      n_head=cfg.num_heads, n_inner=cfg.mlp_size,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
  config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  model = GPT2LMHeadModel(config).eval()
  ids = torch.tensor(prompts, dtype=torch.long)

  def run():
    with torch.inference_mode():
      return model.generate(ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=new, min_new_tokens=new,
                            do_sample=False, use_cache=True)
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
                 help="1: layers under nn.scan, 0: a loop")
  p.add_argument("--torch", type=int, default=1,
                 help="1: also time transformers' generate on the same shape")
  args = p.parse_args()
  news = [int(x) for x in args.new.split(",")]
  batches = [int(x) for x in args.batch.split(",")]
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}); model {args.size}, "
        f"vocab {args.vocab}, prompt {PROMPT} tokens, greedy, "
        f"scan_layers={bool(args.scan_layers)}")
  print("| new tokens | batch | cached tok/s | uncached tok/s | speed-up | "
        "transformers generate tok/s | lm / transformers |")
  print("|---|---|---|---|---|---|---|")
  for new in news:
    total = PROMPT + new
    cfg = make_model_config(args.size, vocab_size=args.vocab, max_len=max(total, 64),
                            scan_layers=bool(args.scan_layers))
    model = build_model(cfg)
    params = model.init({"params": jax.random.key(0)},
                        jnp.zeros((1, 8), jnp.int32))["params"]
    decoder = Decoder(model)   # as `launch.sample` builds it: chunks of 32
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
      torch_run = (torch_generate_fn(cfg, total, prompts, new) if args.torch
                   else None)
      vs = "| – | – |"
      if torch_run is not None:
        t_t = timed(torch_run)
        vs = f"| {b * new / t_t:,.0f} | {t_t / t_c:.2f}× |"
      print(f"| {new} | {b} | {b * new / t_c:,.0f} | {b * new / t_u:,.0f} | "
            f"{t_u / t_c:.1f}×{same} {vs}", flush=True)


if __name__ == "__main__":
  main()
