"""Token sampling (greedy, temperature, top-k, top-p) and a simple decode loop.

`generate_uncached` recomputes the full forward pass for every new token over
a fixed-size window (one compile, no cache); it is what training uses to print
a sample at the end of a run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def repeated_ngram_mask(seqs, length, n: int):
  """Which tokens each row may not emit next without repeating an n-gram.

  `seqs` [R, N] holds each row's tokens, the first `length` of them
  generated so far. Returns `(banned, tokens)`, both [R, N - n + 1]: row r
  may not emit `tokens[r, j]` where `banned[r, j]`, because the n-gram
  starting at j is complete (j + n - 1 < length) and its first n - 1 tokens
  equal the row's last n - 1. Nothing is banned before n - 1 tokens exist.
  """
  r, total = seqs.shape
  starts = total - n + 1
  if starts <= 0:
    empty = jnp.zeros((r, 0), bool)
    return empty, empty.astype(seqs.dtype)
  j = jnp.arange(starts)
  match = jnp.broadcast_to(j <= length - n, (r, starts))   # complete n-grams
  for k in range(n - 1):
    last = jax.lax.dynamic_index_in_dim(
        seqs, jnp.maximum(length - n + 1 + k, 0), axis=1, keepdims=True)
    match &= seqs[:, k:k + starts] == last
  return match, seqs[:, n - 1:]


def ban_repeated_ngrams(scores, seqs, length, n: int, value):
  """`scores` [R, V] with `value` wherever the next token would complete an
  n-gram that the row's first `length` tokens of `seqs` [R, N] already hold
  (`no_repeat_ngram_size` of Hugging Face's `generate`; the standard cure for
  greedy and beam decoders that loop). n <= 0 leaves `scores` as they are.

  >>> s = ban_repeated_ngrams(jnp.zeros((1, 5)), jnp.array([[3, 4, 3, 0]]),
  ...                         3, 2, -1.0)
  >>> s.tolist()   # "3 4" was seen, the row ends in 3: 4 is banned
  [[0.0, 0.0, 0.0, 0.0, -1.0]]
  """
  if n <= 0:
    return scores
  banned, tokens = repeated_ngram_mask(seqs, length, n)
  rows = jnp.arange(scores.shape[0])[:, None]
  mask = jnp.zeros(scores.shape, bool).at[rows, tokens].max(banned)
  return jnp.where(mask, jnp.asarray(value, scores.dtype), scores)


def force_tokens(scores, index, last, forced_bos: int | None,
                 forced_eos: int | None, value):
  """`scores` [R, V] of the token at generated position `index` (0-based;
  `last` is the final position decoding allows) with every entry but the
  forced one set to `value` and the forced one to 0: `forced_bos` at
  position 0, `forced_eos` at `last` (Hugging Face's `forced_bos_token_id`
  and `forced_eos_token_id`, which score a forced token 0 as here). None
  forces nothing.

  >>> force_tokens(jnp.ones((1, 3)), 0, 4, 2, None, -9.0).tolist()
  [[-9.0, -9.0, 0.0]]
  """
  for token, at in ((forced_bos, 0), (forced_eos, last)):
    if token is not None:
      only = jnp.where(jnp.arange(scores.shape[-1]) == token, 0.0,
                       value).astype(scores.dtype)
      scores = jnp.where(index == at, only, scores)
  return scores


def sample_logits(logits, rng, *, temperature: float = 0.0, top_k: int = 0,
                  top_p: float = 1.0):
  """Picks one token per row of `logits` [B, V].

  temperature 0 is greedy (argmax). top_k > 0 keeps the k largest logits;
  top_p < 1 keeps the smallest set of tokens whose probability mass reaches
  top_p (the most likely token is always kept).
  """
  logits = logits.astype(jnp.float32)
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1)
  logits = logits / temperature
  neg = jnp.finfo(jnp.float32).min
  if top_k and top_k > 0:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < top_p
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, neg)
  return jax.random.categorical(rng, logits, axis=-1)


def generate_uncached(model, params, prompt_ids, *, max_new_tokens: int,
                      window: int, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, seed: int = 0, eos_id: int | None = None):
  """Extends `prompt_ids` (list of ints) by up to `max_new_tokens` tokens.

  Each step runs the model on the last `window` tokens (right-padded to the
  window) and samples from the logits at the last real position.
  """
  if not prompt_ids:
    raise ValueError("generate_uncached needs a non-empty prompt")

  @jax.jit
  def next_token(params, buf, last, rng):
    logits, _ = model.apply({"params": params}, buf, deterministic=True)
    row = jax.lax.dynamic_index_in_dim(logits[0], last, axis=0, keepdims=True)
    return sample_logits(row, rng, temperature=temperature, top_k=top_k,
                         top_p=top_p)[0]

  tokens = list(prompt_ids)
  key = jax.random.key(seed)
  for i in range(max_new_tokens):
    ctx = tokens[-window:]
    buf = np.zeros((1, window), np.int32)
    buf[0, :len(ctx)] = ctx
    tok = int(next_token(params, jnp.asarray(buf), len(ctx) - 1,
                         jax.random.fold_in(key, i)))
    tokens.append(tok)
    if eos_id is not None and tok == eos_id:
      break
  return tokens[len(prompt_ids):]
