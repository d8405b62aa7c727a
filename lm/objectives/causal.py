"""Causal language modelling: predict token t+1 from tokens <= t.

Batches come from `lm.data.pipeline`: `inputs`, `targets`, `positions`,
`segment_ids` and `loss_mask`, all [B, T]. Packed documents are kept apart by
the segment mask when `use_segments` is on.
"""

from __future__ import annotations

import jax.numpy as jnp

from lm.objectives.losses import token_cross_entropy


def causal_lm_loss(params, batch, rng, model, *, deterministic: bool = False,
                   use_segments: bool = True):
  """Objective contract: `(params, batch, rng, model) -> (loss, metrics)`.

  `metrics` holds sums (`loss_sum`, `correct`, `tokens`) so that evaluation can
  add them over batches and hosts before dividing.
  """
  logits, _ = model.apply(
      {"params": params}, batch["inputs"],
      positions=batch["positions"],
      segment_ids=batch["segment_ids"] if use_segments else None,
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})
  loss_sum, correct, tokens = token_cross_entropy(
      logits, batch["targets"], batch["loss_mask"])
  loss = loss_sum / jnp.maximum(tokens, 1.0)
  return loss, {"loss_sum": loss_sum, "correct": correct, "tokens": tokens}
