"""Transformer blocks, layer stacks (scan / remat) and the decoder-only LM.

The same `Block` serves both stacks: `Decoder` (causal) here and `Encoder`
(bidirectional), which `lm.models.bert.BertModel` builds on.

`DecoderLM(config).apply({'params': p}, tokens, positions=..., segment_ids=...,
deterministic=...)` returns `(logits, aux)`: float32 logits `[B, T, V]` and a
dict of intermediates (`aux["hidden"]` is the final hidden state).

Parameter tree (scan_layers=True; a Python loop names blocks `layers_0` ...):

  token_embed/embedding            [V, D]     (vocab, embed)
  position_embed/embedding         [P, D]     (position, embed)  learned only
  decoder/layers/attention_norm/…  [L, D]     (layers, norm)
  decoder/layers/attention/query/kernel [L, D, N, H] …
  decoder/final_norm/scale         [D]        pre-LN only
  unembed/kernel                   [D, V]     (embed, vocab)     untied only

Legend: B batch, T length, D model width, V vocabulary, L layers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.models.attention import MultiHeadAttention, make_attention_mask
from lm.models.config import ModelConfig
from lm.models.heads import lm_head
from lm.models.layers import Embed, Mlp, make_norm
from lm.models.positional import add_positions, default_positions
from lm.parallel import axes

EMBED_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)

_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
  """One Transformer block: self-attention and MLP, each with a residual.

  pre-LN:  x = x + drop(attn(norm(x)));  x = x + drop(mlp(norm(x)))
  post-LN: x = norm(x + drop(attn(x)));  x = norm(x + drop(mlp(x)))

  Arguments are positional so `nn.remat` can mark `deterministic` static
  (argument 4, counting `self`) and `nn.scan` can broadcast them.

  Attributes:
    config: model config.
    causal: causal self-attention (decoder) or bidirectional (encoder).
    scanned: return `(x, None)` as `nn.scan`'s body must.
  """

  config: ModelConfig
  causal: bool = True
  scanned: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array,
               mask: jax.Array | None, deterministic: bool = True) -> Any:
    """Maps `[B, T, D]` to `[B, T, D]` (or `([B, T, D], None)` if scanned).

    Args:
      x: `[B, T, D]` residual stream.
      positions: int `[B, T]`.
      mask: bool `[B, 1, T, T]` attention mask or None.
      deterministic: disable dropout.
    """
    cfg = self.config
    attn = MultiHeadAttention(cfg, causal=self.causal, decode=self.decode,
                              name="attention")
    mlp = Mlp(cfg, name="mlp")
    attn_norm = make_norm(cfg, "attention_norm")
    mlp_norm = make_norm(cfg, "mlp_norm")
    drop = nn.Dropout(rate=cfg.dropout)

    def attend(h):
      return attn(h, positions=positions, mask=mask,
                  deterministic=deterministic)

    if cfg.norm_position == "pre":
      x = x + drop(attend(attn_norm(x)), deterministic=deterministic)
      x = x + drop(mlp(mlp_norm(x)), deterministic=deterministic)
    else:
      x = attn_norm(x + drop(attend(x), deterministic=deterministic))
      x = mlp_norm(x + drop(mlp(x), deterministic=deterministic))
    x = nn.with_logical_constraint(x, EMBED_AXES)
    # read only by an apply with mutable=["intermediates"] (distillation's
    # hidden-state matching); a no-op otherwise
    self.sow("intermediates", "hidden", x)
    return (x, None) if self.scanned else x


class TransformerStack(nn.Module):
  """`config.num_layers` blocks, scanned or looped, plus the final norm.

  With `config.scan_layers` the blocks are one `nn.scan` named `layers` whose
  params carry a leading `[L]` axis named `axes.LAYERS`; otherwise they are
  `layers_0` … `layers_{L-1}`. A scan over at most `config.scan_unroll`
  blocks is fully unrolled (same parameters, faster step). `config.remat`
  wraps each block in `nn.remat` either way. A final norm follows pre-LN
  stacks.

  Attributes:
    config: model config.
    causal: causal (decoder) or bidirectional (encoder) self-attention.
  """

  config: ModelConfig
  causal: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array,
               mask: jax.Array | None, deterministic: bool = True
               ) -> jax.Array:
    """Maps `[B, T, D]` to `[B, T, D]`; arguments as `Block`."""
    cfg = self.config
    block_cls = Block
    if cfg.remat != "none":
      block_cls = nn.remat(block_cls, policy=_REMAT_POLICIES[cfg.remat],
                           prevent_cse=not cfg.scan_layers,
                           static_argnums=(4,))
    if cfg.scan_layers:
      stack = nn.scan(
          block_cls,
          variable_axes={"params": 0, "cache": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
          length=cfg.num_layers,
          unroll=(cfg.num_layers if cfg.num_layers <= cfg.scan_unroll
                  else 1),
          metadata_params={nn.PARTITION_NAME: axes.LAYERS},
      )(cfg, causal=self.causal, scanned=True, decode=self.decode,
        name="layers")
      x, _ = stack(x, positions, mask, deterministic)
    else:
      for i in range(cfg.num_layers):
        x = block_cls(cfg, causal=self.causal, decode=self.decode,
                      name=f"layers_{i}")(
            x, positions, mask, deterministic)
    if cfg.norm_position == "pre":
      x = make_norm(cfg, "final_norm")(x)
    return nn.with_logical_constraint(x, EMBED_AXES)


class Decoder(TransformerStack):
  """A causal `TransformerStack`."""

  causal: bool = True


class Encoder(TransformerStack):
  """A bidirectional `TransformerStack` (BERT's encoder)."""

  causal: bool = False


class DecoderLM(nn.Module):
  """Decoder-only (GPT-style) language model.

  Attributes:
    config: a validated model config.
  """

  config: ModelConfig

  def reorder_cache(self, cache, indices):
    """The cache with its batch rows replaced by rows `indices` (beam
    search); see `reorder_layer_cache`."""
    return reorder_layer_cache(cache, indices, self.config.scan_layers)

  def grow_cache(self, cache, length: int):
    """The cache with room for `length` tokens: key/value slots and the
    `valid` row padded with empty (invalid) slots at the end. Decoding
    attends over every slot of its cache, so `Decoder` starts with a short
    cache and grows it between chunks instead of attending over the whole
    context from the first token."""

    def pad(path, x):
      name = getattr(path[-1], "key", None)
      if name == "cached_key":                       # [..., H, S]
        axis = x.ndim - 1
      elif name == "cached_value":                   # [..., S, H]
        axis = x.ndim - 2
      elif name == "valid":                          # [B, S]
        axis = 1
      else:
        return x
      widths = [(0, 0)] * x.ndim
      widths[axis] = (0, length - x.shape[axis])
      return jnp.pad(x, widths)

    return jax.tree_util.tree_map_with_path(pad, cache)

  def _decode_mask(self, valid: jax.Array | None, shape) -> jax.Array:
    """Mask `[B, 1, T, S]` over the whole KV cache for a decode call.

    The cache keeps which slots hold real tokens (`valid`, False for left
    padding); query t of this call sits at slot `index + t` and sees every
    valid slot up to and including its own.
    """
    b, t = shape
    initialising = not self.has_variable("cache", "index")
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    slots = self.variable("cache", "valid", jnp.zeros, (b, t), jnp.bool_)
    valid = jnp.ones((b, t), jnp.bool_) if valid is None else valid.astype(bool)
    if initialising:
      return make_attention_mask(valid.astype(jnp.int32), causal=True)
    i = index.value
    slots.value = jax.lax.dynamic_update_slice(slots.value, valid, (0, i))
    index.value = i + t
    s = slots.value.shape[1]
    query_slot = i + jnp.arange(t)                                   # [T]
    seen = jnp.arange(s)[None, :] <= query_slot[:, None]             # [T, S]
    return slots.value[:, None, None, :] & seen[None, None]          # [B, 1, T, S]

  @nn.compact
  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               deterministic: bool = True, decode: bool = False,
               valid: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Next-token logits.

    Args:
      tokens: int `[B, T]`.
      positions: int `[B, T]` (restarting at 0 per packed document); defaults
        to `arange(T)` in every row.
      segment_ids: int `[B, T]` packed-document ids, 0 = padding; None means
        one unpadded sequence per row (plain causal mask).
      deterministic: disable dropout (needs a 'dropout' RNG when False).
      decode: use and extend the KV cache in the 'cache' collection (apply
        with `mutable=['cache']`). `init(..., decode=True)` on tokens
        `[B, S]` sizes the cache for S tokens; later calls append their T
        tokens. Pass explicit `positions` when decoding.
      valid: bool `[B, T]`, decode only: False marks left padding that no
        later token may attend to.

    Returns:
      `(logits, aux)`: float32 `[B, T, V]` logits and `{"hidden": [B, T, D]}`.
    """
    cfg = self.config
    if positions is None:
      positions = default_positions(cfg, tokens)
    if decode:
      mask = self._decode_mask(valid, tokens.shape)
    else:
      mask = (None if segment_ids is None
              else make_attention_mask(segment_ids, causal=True))

    embed = Embed(cfg, name="token_embed")
    x = embed(tokens)  # [B, T, D]
    x = add_positions(cfg, x, positions)
    x = nn.Dropout(rate=cfg.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, EMBED_AXES)

    hidden = Decoder(cfg, decode=decode, name="decoder")(
        x, positions, mask, deterministic)
    logits = lm_head(cfg, embed, hidden)  # [B, T, V]
    return logits, {"hidden": hidden}


def reorder_layer_cache(cache, indices, scanned: bool):
  """`cache` with its batch rows replaced by rows `indices`. Arrays under a
  scanned `layers` carry a leading layer axis, so their batch is axis 1;
  the per-layer and top-level indices (no batch axis) are left alone."""

  def take(path, x):
    in_scan = scanned and any(getattr(k, "key", None) == "layers" for k in path)
    axis = 1 if in_scan else 0
    return jnp.take(x, indices, axis=axis) if x.ndim > axis else x

  return jax.tree_util.tree_map_with_path(take, cache)


def count_params(params: Any) -> int:
  """Number of scalars in a param tree (boxed or not, arrays or shapes)."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))
