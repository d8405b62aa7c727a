"""Cached decoding: prefill a batch of prompts, then one token per step.

Prompts of different lengths are LEFT-padded to a common length P, so every
row's next token sits at the same cache slot and one scalar index serves the
whole batch. Padding slots are marked invalid in the cache and never attended
to; positions count from each row's first real token.

  tokens  [[pad pad a b], [c d e f]]   valid [[0 0 1 1], [1 1 1 1]]
  positions [[0 0 0 1], [0 1 2 3]]

`generate` runs the decode loop inside a jitted `lax.while_loop` in chunks of
`chunk` tokens (one compile, whatever the number of tokens), so that stop
strings can be checked between chunks. Any model with the decode contract of
`DecoderLM` works: `apply(..., decode=True, valid=..., mutable=['cache'])`
and, for beam search, a `reorder_cache(cache, rows)` method (the LSTM
baseline has both).

A Transformer trained with `scan_layers` decodes unrolled (`unrolled`): the
same weights, sliced per layer once per jitted call, and one cache per
layer. Under `nn.scan` the stacked `[L, B, S, K, H]` cache is sliced and
re-stacked at every token; measured 1.33x fewer tokens/s at 128 new tokens
(quickstart size, batch 1, `benchmarks/decode.py`).

Each decode step attends over every slot of its cache, so for a model with
`grow_cache(cache, length)` (`DecoderLM`) the cache starts at the smallest
power of two (at least `min_cache`) that holds the prompt and the first
chunk, and doubles between chunks as the text grows, up to prompt +
`max_new_tokens`: a step attends over at most twice the filled length
instead of the whole context. Each cache size is one more compile of the
chunk function (about log2(context / min_cache) in all), kept for later
calls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.generation.beam import beam_search
from lm.generation.sampling import ban_repeated_ngrams, sample_logits


def unrolled(model):
  """`(decoding model, params_fn)`: for a Transformer or encoder-decoder with
  scanned layers, the same model with a Python loop over its blocks and the
  function that maps its stacked parameters (`.../layers/...`, leading axis
  L) to that model's (`.../layers_0/...` ...); otherwise `(model,
  identity)`. Decoding a scanned stack token by token slices and re-stacks
  its whole `[L, ...]` cache at every token; the loop keeps one cache per
  layer and slices the weights once per jitted call."""
  cfg = getattr(model, "config", None)
  if (cfg is None or getattr(cfg, "arch", None) not in (
      "transformer", "encoder_decoder") or not cfg.scan_layers):
    return model, lambda params: params

  def unstack(tree):
    if not hasattr(tree, "items"):   # a leaf
      return tree
    out = {}
    for key, value in tree.items():
      if key == "layers":
        depth = jax.tree.leaves(value)[0].shape[0]   # this stack's blocks
        for i in range(depth):
          out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], value)
      else:
        out[key] = unstack(value)
    return out

  return (type(model)(dataclasses.replace(cfg, scan_layers=False)),
          lambda params: unstack(nn.meta.unbox(params)))


def cache_shapes(model, batch_size: int, length: int):
  """The shapes and dtypes of the cache for `batch_size` rows of up to
  `length` tokens (traces the model once)."""
  return jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)},
                         jnp.zeros((batch_size, length), jnp.int32),
                         decode=True))["cache"]


def init_cache(model, batch_size: int, length: int, shapes=None):
  """An empty cache for `batch_size` rows of up to `length` tokens."""
  if shapes is None:
    shapes = cache_shapes(model, batch_size, length)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0):
  """(tokens, valid, positions), each `[B, P]`, for prompts padded on the left.

  >>> left_pad([[5, 6], [7, 8, 9]])[0].tolist()
  [[0, 5, 6], [7, 8, 9]]
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  valid = np.zeros((len(prompts), width), bool)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):] = p
    valid[i, width - len(p):] = True
  positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
  return tokens, valid, positions


def forward_step(model, params, cache, tokens, positions, valid):
  """One cached call: `(logits [B, T, V], new cache)`."""
  (logits, _), variables = model.apply(
      {"params": params, "cache": cache}, tokens, positions=positions,
      valid=valid, decode=True, deterministic=True, mutable=["cache"])
  return logits, variables["cache"]


@dataclasses.dataclass
class Generation:
  """Generated ids per row (prompt excluded, stop token/string cut off) and
  each row's reason to stop: "eos", "stop", or "length"."""
  tokens: list[list[int]]
  finish_reasons: list[str]


class Decoder:
  """Jitted prefill and decode-chunk functions for one model and sampler.

  Build once and call `generate` many times: nothing recompiles for new
  prompts of the same padded shape or for more tokens.
  """

  def __init__(self, model, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, chunk: int = 32, min_cache: int = 64,
               no_repeat_ngram: int = 0):
    model, per_layer = unrolled(model)
    self.model = model
    self.chunk = chunk
    self.min_cache = min_cache
    self._shapes = {}   # (batch, length) -> cache shapes
    sample = functools.partial(sample_logits, temperature=temperature,
                               top_k=top_k, top_p=top_p)

    def prefill(params, cache, tokens, positions, valid):
      params = per_layer(params)
      logits, cache = forward_step(model, params, cache, tokens, positions, valid)
      return logits[:, -1], cache

    def run_chunk(params, cache, last_logits, next_pos, done, out, start,
                  stop_at, eos_id, rng):
      """Samples tokens `start .. min(start+chunk, stop_at)` into `out`."""
      params = per_layer(params)
      end = jnp.minimum(start + chunk, stop_at)

      def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < end) & ~jnp.all(done)

      def body(carry):
        i, cache, logits, pos, done, out = carry
        logits = ban_repeated_ngrams(logits, out, i, no_repeat_ngram,
                                     jnp.finfo(logits.dtype).min)
        tok = sample(logits, jax.random.fold_in(rng, i)).astype(jnp.int32)
        tok = jnp.where(done, 0, tok)
        out = out.at[:, i].set(tok)
        done = done | (tok == eos_id)
        logits, cache = forward_step(model, params, cache, tok[:, None],
                                     pos[:, None], jnp.ones_like(done)[:, None])
        return i + 1, cache, logits[:, 0], pos + 1, done, out

      i, cache, logits, pos, done, out = jax.lax.while_loop(
          cond, body, (start, cache, last_logits, next_pos, done, out))
      return i, cache, logits, pos, done, out

    self._prefill = jax.jit(prefill)
    self._chunk = jax.jit(run_chunk, donate_argnums=(1,))

  def generate(self, params, prompts: Sequence[Sequence[int]], *,
               max_new_tokens: int, max_len: int, seed: int = 0,
               eos_id: int | None = None,
               stop_check: Callable[[list[int]], bool] | None = None
               ) -> Generation:
    """Samples up to `max_new_tokens` per prompt.

    `max_len` bounds prompt + new tokens (the model's context). `stop_check`
    gets a row's generated ids and returns True once a stop string appeared;
    it runs between chunks, and the caller cuts the text at the stop string.
    """
    tokens, valid, positions = left_pad(prompts)
    b, p = tokens.shape
    total = p + max_new_tokens
    if total > max_len:
      raise ValueError(f"prompt ({p} tokens) + max_new_tokens "
                       f"({max_new_tokens}) exceeds the context of {max_len}")
    length = self._cache_length(p + min(self.chunk, max_new_tokens), total)
    if (b, length) not in self._shapes:
      self._shapes[(b, length)] = cache_shapes(self.model, b, length)
    cache = init_cache(self.model, b, length, self._shapes[(b, length)])
    last, cache = self._prefill(params, cache, jnp.asarray(tokens),
                                jnp.asarray(positions), jnp.asarray(valid))
    next_pos = jnp.asarray(positions[:, -1] + 1)
    done = jnp.zeros((b,), bool)
    out = jnp.zeros((b, max_new_tokens), jnp.int32)
    eos = jnp.asarray(-1 if eos_id is None else eos_id, jnp.int32)
    rng = jax.random.key(seed)
    i = 0
    stopped = np.zeros(b, bool)
    while i < max_new_tokens:
      need = p + min(i + self.chunk, max_new_tokens)
      if need > length:
        length = self._cache_length(need, total)
        cache = self.model.grow_cache(cache, length)
      i, cache, last, next_pos, done, out = self._chunk(
          params, cache, last, next_pos, done, out, jnp.asarray(i, jnp.int32),
          jnp.asarray(max_new_tokens, jnp.int32), eos, rng)
      i = int(i)
      if stop_check is not None:
        host = np.asarray(out[:, :i])
        for r in range(b):
          if not stopped[r] and stop_check(cut_eos(host[r], eos_id)):
            stopped[r] = True
        done = done | jnp.asarray(stopped)
      if bool(jnp.all(done)):
        break
    host = np.asarray(out[:, :i])
    rows, reasons = [], []
    for r in range(b):
      ids = cut_eos(host[r], eos_id)
      rows.append(ids)
      if stopped[r]:
        reasons.append("stop")
      elif eos_id is not None and eos_id in host[r]:
        reasons.append("eos")
      else:
        reasons.append("length")
    return Generation(rows, reasons)

  def _cache_length(self, need: int, total: int) -> int:
    """Cache slots for `need` tokens: the next power of two from `min_cache`,
    at most `total`; `total` for a model that cannot grow its cache."""
    if not hasattr(self.model, "grow_cache"):
      return total
    length = max(self.min_cache, 1)
    while length < need:
      length *= 2
    return min(length, total)


def cut_eos(row, eos_id) -> list[int]:
  row = [int(t) for t in row]
  if eos_id is not None and eos_id in row:
    row = row[:row.index(eos_id)]
  return row


def beam_generate(model, params, prompts: Sequence[Sequence[int]], *,
                  beam_size: int, max_new_tokens: int, max_len: int,
                  eos_id: int, alpha: float = 0.6, no_repeat_ngram: int = 0):
  """Beam search for each prompt: (ids per prompt, best first; scores).

  Returns `(beams, scores)`: `beams[b][j]` is beam j of prompt b (EOS and
  what follows it cut off) and `scores[b][j]` its length-normalised log-prob.
  """
  k = beam_size
  model, per_layer = unrolled(model)
  repeated = [p for p in prompts for _ in range(k)]
  tokens, valid, positions = left_pad(repeated)
  bk, p = tokens.shape
  if p + max_new_tokens > max_len:
    raise ValueError(f"prompt ({p} tokens) + max_new_tokens "
                     f"({max_new_tokens}) exceeds the context of {max_len}")
  base = positions[:, -1] + 1

  @jax.jit
  def run(params, cache, tokens, positions, valid, base):
    params = per_layer(params)
    logits, cache = forward_step(model, params, cache, tokens, positions, valid)

    def step_fn(cache, tok, i):
      out, cache = forward_step(model, params, cache, tok[:, None],
                                (base + i)[:, None], jnp.ones((bk, 1), bool))
      return out[:, 0], cache

    return beam_search(step_fn, cache, logits[:, -1], beam_size=k,
                       max_new_tokens=max_new_tokens, eos_id=eos_id,
                       reorder_fn=model.reorder_cache, alpha=alpha,
                       no_repeat_ngram=no_repeat_ngram)

  cache = init_cache(model, bk, p + max_new_tokens)
  seqs, scores = run(params, cache, jnp.asarray(tokens), jnp.asarray(positions),
                     jnp.asarray(valid), jnp.asarray(base))
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  beams = [[cut_eos(seqs[b, j], eos_id) for j in range(k)]
           for b in range(len(prompts))]
  return beams, scores.tolist()
