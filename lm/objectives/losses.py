"""Loss functions shared by objectives (all computed in float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits, targets, mask):
  """Masked next-token cross-entropy.

  logits [B, T, V], targets [B, T] int, mask [B, T] (1 = counts).
  Returns (loss_sum, correct_sum, token_count), each a float32 scalar.

  A token is correct when its target holds the unique largest logit (a tie
  for the top counts as wrong). That is argmax accuracy without the argmax:
  the row maximum is computed once for both the log-normalizer and the
  accuracy, and the index-carrying argmax reduction (the costliest non-matmul
  kernel of a small CPU train step, `benchmarks/step_profile.py`) is gone.
  """
  logits = logits.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))                  # [B, T]
  logz = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), -1))    # [B, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  nll = logz - target_logit                                               # [B, T]
  at_top = jnp.sum((logits == top[..., None]).astype(jnp.float32), -1)
  correct = ((target_logit >= top) & (at_top == 1)).astype(jnp.float32)
  return (jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask))


def token_loss(logits, targets, mask):
  """`(mean loss, sums)` of `token_cross_entropy`: the sums (`loss_sum`,
  `correct`, `tokens`) that evaluation adds over batches and hosts before
  dividing (`token_metrics`)."""
  loss_sum, correct, tokens = token_cross_entropy(logits, targets, mask)
  return (loss_sum / jnp.maximum(tokens, 1.0),
          {"loss_sum": loss_sum, "correct": correct, "tokens": tokens})


def token_metrics(sums) -> dict:
  """Loss, perplexity and token accuracy from summed `token_loss` sums."""
  tokens = jnp.maximum(sums["tokens"], 1.0)
  loss = sums["loss_sum"] / tokens
  return {"loss": loss, "perplexity": jnp.exp(jnp.minimum(loss, 50.0)),
          "accuracy": sums["correct"] / tokens}
