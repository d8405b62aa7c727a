"""Output heads shared by the model families."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.config import ModelConfig
from lm.models.layers import Einsum, Embed
from lm.parallel import axes


def lm_head(cfg: ModelConfig, embed: Embed, hidden: jax.Array) -> jax.Array:
  """Float32 next-token logits `[B, T, V]` from `hidden` `[B, T, D]`.

  Tied: `embed.attend` (the input embedding transposed). Untied: a separate
  `unembed` kernel `[D, V]`, created in the calling module's scope, so call
  this from inside a compact `__call__`. No bias, as GPT-2.
  """
  if cfg.tie_embeddings:
    logits = embed.attend(hidden)
  else:
    logits = Einsum("BTD,DV->BTV", (cfg.d_model, cfg.vocab_size),
                    (axes.EMBED, axes.VOCAB), init_std=cfg.init_std,
                    dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                    out_dtype=jnp.float32, name="unembed")(hidden)
  return nn.with_logical_constraint(
      logits.astype(jnp.float32),
      (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))  # [B, T, V]
