"""Output heads shared by the model families.

`lm_head` is the next-token head of `DecoderLM`; `Pooler`, `MlmHead` and
`NspHead` are BERT's pooler and pretraining heads (`lm.models.bert`);
`TaskHead` is the fine-tuning head (classes per row, tags per token, or
start/end per token; `lm.models.task_model`). Logits are always float32.

Legend: B batch, T length (or P gathered positions), D model width, E output
width of a D -> D dense (E = D), V vocabulary, C classes (2 next-sentence classes; task labels; 2 span ends).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.config import ModelConfig
from lm.models.layers import Einsum, Embed, make_norm
from lm.parallel import axes

# A D -> D dense shards its input rows like every `embed` dim; logical names
# may not repeat within one parameter, so its output dim is left unnamed.
_DENSE_AXES = (axes.EMBED, None)
_LOGIT_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB)


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
  return nn.with_logical_constraint(logits.astype(jnp.float32),
                                    _LOGIT_AXES)  # [B, T, V]


class Pooler(nn.Module):
  """BERT's pooler: `tanh(dense(hidden[:, 0]))`, the [CLS] summary.

  Parameters: `dense/kernel [D, D]` (embed, None) and, with
  `config.use_bias`, `dense/bias [D]`.

  Attributes:
    config: model config.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    """Maps `[B, T, D]` to `[B, D]` (compute dtype) from position 0."""
    cfg = self.config
    d = cfg.d_model
    first = hidden[:, 0]  # [B, D]
    pooled = Einsum("BD,DE->BE", (d, d), _DENSE_AXES,
                    bias_dims=int(cfg.use_bias), init_std=cfg.init_std,
                    dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                    name="dense")(first)  # [B, D]
    return nn.with_logical_constraint(jnp.tanh(pooled),
                                      (axes.ACT_BATCH, axes.ACT_EMBED))


class MlmHead(nn.Module):
  """BERT's masked-LM head: transform, then the (tied) vocabulary projection.

  `logits = norm(gelu(dense(h))) @ embedding^T + bias`, GELU exact or tanh
  as `config.gelu_approximate`, the norm as `config.norm` (LayerNorm with
  `config.norm_eps` for BERT). Parameters: `transform/kernel [D, D]`
  (embed, None) and `transform/bias [D]` (with `config.use_bias`),
  `transform_norm/…`, `bias [V]` (vocab; always present, as BERT's decoder
  bias) and, when `config.tie_embeddings` is False, `unembed/kernel [D, V]`
  (embed, vocab).

  Attributes:
    config: model config.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, embed: Embed) -> jax.Array:
    """Float32 logits `[B, P, V]` from `hidden` `[B, P, D]`.

    Args:
      hidden: `[B, P, D]` hidden states (all positions, or gathered ones).
      embed: the model's token `Embed`, whose table the tied output reuses.
    """
    cfg = self.config
    d, v = cfg.d_model, cfg.vocab_size
    h = Einsum("BPD,DE->BPE", (d, d), _DENSE_AXES,
               bias_dims=int(cfg.use_bias), init_std=cfg.init_std,
               dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
               name="transform")(hidden)  # [B, P, D]
    h = nn.gelu(h, approximate=cfg.gelu_approximate)
    h = make_norm(cfg, "transform_norm")(h)  # [B, P, D]
    if cfg.tie_embeddings:
      logits = embed.attend(h)  # [B, P, V]
    else:
      logits = Einsum("BPD,DV->BPV", (d, v), (axes.EMBED, axes.VOCAB),
                      init_std=cfg.init_std, dtype=cfg.compute_dtype,
                      param_dtype=cfg.weight_dtype, out_dtype=jnp.float32,
                      name="unembed")(h)  # [B, P, V]
    bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                     (axes.VOCAB,)),
        (v,), cfg.weight_dtype)  # [V]
    logits = logits.astype(jnp.float32) + bias.astype(jnp.float32)
    return nn.with_logical_constraint(logits, _LOGIT_AXES)  # [B, P, V]


class NspHead(nn.Module):
  """BERT's next-sentence head: a dense `D -> 2` with bias on the pooled output.

  Class 0 is "B follows A" (IsNext), 1 is "B is random" (NotNext), as BERT.
  Parameters: `dense/kernel [D, 2]` (embed, None), `dense/bias [2]`.

  Attributes:
    config: model config.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    """Float32 logits `[B, 2]` from `pooled` `[B, D]`."""
    cfg = self.config
    return Einsum("BD,DC->BC", (cfg.d_model, 2), (axes.EMBED, None),
                  bias_dims=1, init_std=cfg.init_std,
                  dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  out_dtype=jnp.float32, name="dense")(pooled)  # [B, 2]


class TaskHead(nn.Module):
  """Dropout, then a dense `D -> C` with bias: a fine-tuning head.

  Works on pooled rows `[B, D] -> [B, C]` (sequence classification) and on
  every token `[B, T, D] -> [B, T, C]` (tagging; QA start/end with C = 2).
  Parameters: `dense/kernel [D, C]` (embed, None), `dense/bias [C]`.

  Attributes:
    config: model config (its `dropout` rate is the head's).
    num_classes: C.
  """

  config: ModelConfig
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Float32 logits `[..., C]` from `x` `[B, D]` or `[B, T, D]`."""
    cfg = self.config
    x = nn.Dropout(rate=cfg.dropout)(x, deterministic=deterministic)
    equation = "BD,DC->BC" if x.ndim == 2 else "BTD,DC->BTC"
    return Einsum(equation, (cfg.d_model, self.num_classes),
                  (axes.EMBED, None), bias_dims=1, init_std=cfg.init_std,
                  dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  out_dtype=jnp.float32, name="dense")(x)
