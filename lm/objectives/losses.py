"""Loss functions shared by objectives (all computed in float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits, targets, mask):
  """Masked next-token cross-entropy.

  logits [B, T, V], targets [B, T] int, mask [B, T] (1 = counts).
  Returns (loss_sum, correct_sum, token_count), each a float32 scalar.
  """
  logits = logits.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)                                # [B, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  nll = logz - target_logit                                               # [B, T]
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask))
