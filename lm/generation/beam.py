"""Beam search with a GNMT length penalty, independent of the model type.

The search only needs a `step_fn(cache, tokens [B*K], i) -> (logits [B*K, V],
cache)` and a `reorder_fn(cache, rows [B*K]) -> cache` that picks batch rows
(each model knows its own cache layout), so decoder-only models (here) and
encoder-decoder models (whose step also reads encoder outputs) share it. Beams of one example occupy rows `b*K .. b*K+K-1`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm.generation.sampling import ban_repeated_ngrams, force_tokens


def length_penalty(length, alpha: float):
  """GNMT: ((5 + length) / 6) ** alpha; alpha 0 ranks by total log-prob."""
  return ((5.0 + length) / 6.0) ** alpha


def beam_search(step_fn, cache, first_logits, *, beam_size: int,
                max_new_tokens: int, eos_id: int, reorder_fn,
                alpha: float = 0.6, pad_id: int = 0,
                no_repeat_ngram: int = 0, forced_bos: int | None = None,
                forced_eos: int | None = None):
  """Returns (tokens [B, K, N], scores [B, K]), best beam first.

  `first_logits` [B*K, V] are the next-token logits after the prompt (each
  prompt repeated K times). A beam that emits `eos_id` is finished: it keeps
  its score and is extended only by `pad_id`. Scores are total log-probs
  divided by `length_penalty(length, alpha)`, length counting the EOS.
  `no_repeat_ngram` n > 0: no beam repeats an n-gram of its own tokens.
  `forced_bos` / `forced_eos`: every beam's first token, and the last one
  `max_new_tokens` allows, is that id (`sampling.force_tokens`).
  """
  bk, vocab = first_logits.shape
  k = beam_size
  b = bk // k
  neg = jnp.asarray(-1e9, jnp.float32)
  scores = jnp.where(jnp.arange(k) == 0, 0.0, neg)[None].repeat(b, 0)  # [B, K]
  finished = jnp.zeros((b, k), bool)
  lengths = jnp.zeros((b, k), jnp.int32)
  seqs = jnp.zeros((b, k, max_new_tokens), jnp.int32)
  only_pad = jnp.full((vocab,), neg).at[pad_id].set(0.0)
  offsets = (jnp.arange(b) * k)[:, None]

  def cond(carry):
    i, _, _, _, finished, _, _ = carry
    return (i < max_new_tokens) & ~jnp.all(finished)

  def body(carry):
    i, cache, logits, scores, finished, lengths, seqs = carry
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    logp = ban_repeated_ngrams(logp, seqs.reshape(bk, -1), i, no_repeat_ngram,
                               neg)
    logp = force_tokens(logp, i, max_new_tokens - 1, forced_bos, forced_eos,
                        neg).reshape(b, k, vocab)
    logp = jnp.where(finished[..., None], only_pad, logp)
    cand = (scores[..., None] + logp).reshape(b, k * vocab)
    scores, flat = jax.lax.top_k(cand, k)                            # [B, K]
    origin, tok = flat // vocab, (flat % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(seqs, origin[..., None], axis=1)
    seqs = seqs.at[:, :, i].set(tok)
    was_finished = jnp.take_along_axis(finished, origin, axis=1)
    lengths = jnp.take_along_axis(lengths, origin, axis=1) + (~was_finished)
    finished = was_finished | (tok == eos_id)
    cache = reorder_fn(cache, (origin + offsets).reshape(-1))
    logits, cache = step_fn(cache, tok.reshape(-1), i)
    return i + 1, cache, logits, scores, finished, lengths, seqs

  carry = (jnp.asarray(0), cache, first_logits, scores, finished, lengths, seqs)
  _, _, _, scores, finished, lengths, seqs = jax.lax.while_loop(cond, body, carry)
  normed = scores / length_penalty(jnp.maximum(lengths, 1).astype(jnp.float32), alpha)
  order = jnp.argsort(-normed, axis=1)
  return (jnp.take_along_axis(seqs, order[..., None], axis=1),
          jnp.take_along_axis(normed, order, axis=1))
