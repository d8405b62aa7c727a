"""BERT: a bidirectional Transformer encoder with MLM and NSP heads.

`BertModel(config).apply({'params': p}, tokens, token_types=...,
segment_ids=..., masked_positions=..., deterministic=...)` returns
`(logits, aux)`: float32 masked-LM logits `[B, P, V]` at `masked_positions`
(or `[B, T, V]` at every position) and
`aux = {"hidden": [B, T, D], "pooled": [B, D], "nsp_logits": [B, 2]}`.

The encoder is `lm.models.transformer.Encoder`, the same `Block` stack as the
decoder with bidirectional attention; BERT's sizes (`bert_tiny` …
`bert_base` in `lm.models.config.SIZES`) set post-LN, exact GELU and
LayerNorm eps 1e-12.

Parameter tree (scan_layers=True; a Python loop names blocks `layers_0` ...):

  token_embed/embedding            [V, D]     (vocab, embed)
  position_embed/embedding         [P, D]     (position, embed)  learned only
  type_embed/embedding             [Y, D]     (None, embed)
  embed_norm/scale, bias           [D]        (norm)
  encoder/layers/attention/query/kernel [L, D, N, H] …  (as `DecoderLM`)
  encoder/final_norm/scale         [D]        pre-LN only
  pooler/dense/kernel, bias        [D, D], [D]
  mlm_head/transform/kernel, bias  [D, D], [D]
  mlm_head/transform_norm/scale, bias [D]
  mlm_head/bias                    [V]        (vocab)
  mlm_head/unembed/kernel          [D, V]     (embed, vocab)     untied only
  nsp_head/dense/kernel, bias      [D, 2], [2]

Legend: B batch, T length, P masked positions (or position-table rows in the
tree), D model width, V vocabulary, Y token types, L layers, N heads, H head
width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.attention import make_attention_mask
from lm.models.config import ModelConfig
from lm.models.heads import MlmHead, NspHead, Pooler
from lm.models.layers import Embed, make_norm
from lm.models.positional import add_positions, default_positions
from lm.models.transformer import EMBED_AXES, Encoder
from lm.parallel import axes


class TokenTypeEmbed(nn.Module):
  """The token-type (segment A / B) table `[type_vocab_size, D]`.

  Its few rows get no logical name (they are never worth sharding).

  Attributes:
    config: model config (type_vocab_size, d_model, init_std, dtypes).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, token_types: jax.Array) -> jax.Array:
    """Looks up int `token_types [B, T]`; returns `[B, T, D]` (compute dtype).

    A type outside [0, type_vocab_size) gives NaN (`jnp.take`'s fill mode).
    """
    cfg = self.config
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                     (None, axes.EMBED)),
        (cfg.type_vocab_size, cfg.d_model), cfg.weight_dtype)  # [Y, D]
    return jnp.take(table, token_types, axis=0).astype(cfg.compute_dtype)


class BertModel(nn.Module):
  """BERT encoder with pooler, masked-LM and next-sentence heads.

  Attributes:
    config: a validated model config (normally `arch="bert"`).
    heads: False builds the encoder alone (no pooler, MLM or NSP
      parameters) and returns `(None, {"hidden": [B, T, D]})`: the backbone
      that sentence encoders (`lm.models.embedder`) and fine-tuning heads
      sit on, with the same parameter names as the full model.
    pooler: keep the pooler (its pretrained weights) and return
      `aux["pooled"]`: with `heads=False` the backbone of a classifier over
      BERT's pooled output (`lm.models.task_model`) or of a sentence encoder
      carrying an imported pooler; with `heads=True` and `nsp=False` a
      masked LM that keeps the pooler its checkpoint had.
    nsp: with `heads=True`, build the next-sentence head (and the pooler it
      reads); False is a masked LM alone, as `BertForMaskedLM`, whose
      `aux` has no "nsp_logits" (nor "pooled" unless `pooler`).
  """

  config: ModelConfig
  heads: bool = True
  pooler: bool = False
  nsp: bool = True

  @nn.compact
  def __call__(self, tokens: jax.Array, *,
               token_types: jax.Array | None = None,
               positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               masked_positions: jax.Array | None = None,
               deterministic: bool = True
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked-LM logits, pooled output and next-sentence logits.

    Args:
      tokens: int `[B, T]`.
      token_types: int `[B, T]`, 0 = segment A, 1 = segment B; defaults to
        zeros.
      positions: int `[B, T]`; defaults to `arange(T)` in every row.
      segment_ids: int `[B, T]`, 1.. = real tokens of a sequence, 0 =
        padding; None means no padding (nothing masked). Tokens attend only
        within their own segment, so packed sequences stay apart (the pooled
        output and NSP logits read position 0, i.e. the first sequence).
      masked_positions: int `[B, P]` indices into T at which to run the MLM
        head (an index outside [0, T) gives NaN logits); None runs it at
        every position.
      deterministic: disable dropout (needs a 'dropout' RNG when False).

    Returns:
      `(logits, aux)`: float32 logits `[B, P, V]` (`[B, T, V]` without
      `masked_positions`) and `{"hidden": [B, T, D], "pooled": [B, D],
      "nsp_logits": float32 [B, 2]}`.
    """
    cfg = self.config
    if positions is None:
      positions = default_positions(cfg, tokens)
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    mask = make_attention_mask(segment_ids, causal=False)

    embed = Embed(cfg, name="token_embed")
    x = embed(tokens)  # [B, T, D]
    x = add_positions(cfg, x, positions)
    x = x + TokenTypeEmbed(cfg, name="type_embed")(token_types)
    x = make_norm(cfg, "embed_norm")(x)
    x = nn.Dropout(rate=cfg.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, EMBED_AXES)

    hidden = Encoder(cfg, name="encoder")(x, positions, mask, deterministic)
    aux = {"hidden": hidden}
    if self.pooler or (self.heads and self.nsp):
      aux["pooled"] = Pooler(cfg, name="pooler")(hidden)  # [B, D]
    if not self.heads:
      return None, aux
    if self.nsp:
      aux["nsp_logits"] = NspHead(cfg, name="nsp_head")(aux["pooled"])  # [B, 2]
    if masked_positions is None:
      selected = hidden  # [B, T, D]
    else:
      selected = jnp.take_along_axis(
          hidden, masked_positions[:, :, None].astype(jnp.int32), axis=1,
          mode="fill")  # [B, P, D]
    logits = MlmHead(cfg, name="mlm_head")(selected, embed)
    return logits, aux
