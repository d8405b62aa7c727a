"""Encoder-decoder Transformer: T5 (v1.1), BART and the original Transformer.

`EncoderDecoderLM(config)` embeds the inputs with a shared token table, runs
them through a bidirectional encoder, and a causal decoder whose blocks also
attend to the encoder's output (cross-attention). The same `ModelConfig`
fields choose between the two classic layouts:

  T5 v1.1 (`t5_tiny`, `t5_small`, `t5_base`): position="relative" (a learned
    bias per head on the attention logits, indexed by T5's log-spaced
    relative-distance buckets; one table per stack, shared by its blocks),
    RMSNorm without biases, pre-LN, gated-GELU MLP, untied LM head, attention
    logits not scaled by 1/sqrt(H) (scale_attention=False).
  Vaswani et al. 2017 (`transformer_base`): sinusoidal positions added to the
    embeddings, post-LN LayerNorm, ReLU MLP, biases, tied embeddings.
  BART (imported, `lm.interop.bart`): learned positions read two rows on
    (position_offset=2), a LayerNorm after the embeddings of each stack
    (embed_norm), post-LN LayerNorm with biases, exact-GELU MLP, a tied head
    applied unscaled (scale_tied_head=False) plus a logits bias
    (logits_bias), token embeddings optionally scaled by sqrt(D)
    (scale_embeddings), and the decoder started from EOS
    (decoder_start_id, read by the objectives and `lm.generation.seq2seq`).

With a tied head the decoder output is multiplied by D^-0.5 before the
logits (T5's convention for a shared table) unless `scale_tied_head` is
False.

`apply({'params': p}, inputs, decoder_inputs, input_segment_ids=...,
decoder_segment_ids=..., deterministic=...)` returns `(logits, aux)`: float32
logits `[B, T, V]` over the decoder positions, and `aux` with `hidden`
(decoder output `[B, T, D]`) and `encoded` (encoder output `[B, S, D]`).
Segment ids (0 = padding) both pad and pack: a decoder token attends to
encoder tokens of its own segment id only. `method="encode"` runs the encoder
alone.

Decoding (`EncoderDecoderLM(config, decode=True)`, the same parameters): the
decoder's self-attention keys and values go to a KV cache `[B, N, S, H]`;
cross-attention keys and values are computed from `encoded` once, by the
first call that passes it, and read from the cache by later calls, which
pass `encoded=None` (`lm.generation.seq2seq`).

Parameter tree (scan_layers=True; a Python loop names blocks `layers_0` ...):

  token_embed/embedding                       [V, D]
  encoder/relative_bias                       [buckets, N]  relative only
  encoder/position_embed/embedding            [max_len + offset, D]  learned
  encoder/embed_norm/{scale,bias}             [D]  embed_norm only
  encoder/layers/attention/{query,key,value}/kernel  [L, D, N, H]
  encoder/layers/attention/out/kernel         [L, N, H, D]
  encoder/layers/mlp/{wi_gate,wi_up,wo}/kernel
  encoder/layers/{attention_norm,mlp_norm}/scale
  encoder/final_norm/scale                    pre-LN only
  decoder/...  as the encoder, plus layers/cross_attention/... and
               layers/cross_attention_norm/scale
  unembed/kernel                              [D, V]  untied only
  logits_bias                                 [V]  logits_bias only

Legend: B batch, T decoder length, S encoder (or cache) length, D width,
N heads, H head width, F MLP width, V vocabulary, L layers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.attention import causal_mask, segment_mask
from lm.models.config import ModelConfig
from lm.models.layers import Einsum, Embed, Mlp, make_norm, param_std
from lm.models.positional import add_positions
from lm.models.transformer import reorder_layer_cache
from lm.parallel import axes

EMBED_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)
_HEAD_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS,
              axes.ACT_HEAD_DIM)
_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def relative_buckets(relative: jax.Array, *, bidirectional: bool,
                     num_buckets: int, max_distance: int) -> jax.Array:
  """T5's bucket of each relative position `key - query` (int array).

  Half the buckets (all of them when not bidirectional, where only the past
  is seen) hold exact distances 0 .. n/2 - 1; the rest cover distances up to
  `max_distance` on a log scale, and farther ones share the last bucket.
  Bidirectional buckets put keys after the query in the upper half.

  >>> relative_buckets(jnp.array([-3, 0, 2]), bidirectional=True,
  ...                  num_buckets=8, max_distance=16).tolist()
  [2, 0, 6]
  """
  n = num_buckets
  offset = jnp.zeros_like(relative)
  if bidirectional:
    n //= 2
    offset = (relative > 0).astype(relative.dtype) * n
    distance = jnp.abs(relative)
  else:
    distance = jnp.maximum(-relative, 0)
  exact = n // 2
  far = exact + (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact)
                 / math.log(max_distance / exact)
                 * (n - exact)).astype(relative.dtype)
  far = jnp.minimum(far, n - 1)
  return offset + jnp.where(distance < exact, distance, far)


def attend(q, k, v, mask, bias, scale, dropout_rate=0.0, dropout_rng=None):
  """softmax(q k^T * scale + bias) v: q `[B, T, N, H]`, k and v heads first
  `[B, N, S, H]`, bool mask and float bias broadcastable to `[B, N, T, S]`.
  Logits and softmax in float32; a fully masked row attends uniformly."""
  logits = jnp.einsum("BTNH,BNSH->BNTS", q, k,
                      preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits,
                       jnp.asarray(-0.7 * jnp.finfo(jnp.float32).max))
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("BNTS,BNSH->BTNH", probs.astype(v.dtype), v)


class Attention(nn.Module):
  """Self- or cross-attention with an optional logit bias and KV cache.

  Attributes:
    config: model config.
    cross: keys and values come from `kv` (the encoder output).
    decode: self-attention appends its keys/values to the 'cache'
      collection (`cached_key`/`cached_value` `[B, N, S, H]`, `cache_index`);
      cross-attention stores the encoder's once (`cross_key`/`cross_value`)
      when `kv` is given and reads them when it is None.
  """

  config: ModelConfig
  cross: bool = False
  decode: bool = False

  def _proj(self, equation, shape, kernel_axes, bias_dims, std, name):
    cfg = self.config
    return Einsum(equation, shape, kernel_axes,
                  bias_dims=bias_dims if cfg.use_bias else 0, init_std=std,
                  dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  name=name)

  def _kv(self, source):
    cfg = self.config
    d, n, h = cfg.d_model, cfg.num_heads, cfg.head_size
    kv_axes = (axes.EMBED, axes.HEADS, axes.HEAD_DIM)
    k = self._proj("BSD,DNH->BSNH", (d, n, h), kv_axes, 2,
                   param_std(cfg, "key"), "key")(source)
    v = self._proj("BSD,DNH->BSNH", (d, n, h), kv_axes, 2,
                   param_std(cfg, "value"), "value")(source)
    k = nn.with_logical_constraint(k, _HEAD_AXES)
    v = nn.with_logical_constraint(v, _HEAD_AXES)
    return k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)   # [B, N, S, H]

  @nn.compact
  def __call__(self, x, kv, mask, bias, deterministic=True):
    """`x` `[B, T, D]` attends to itself, or (cross) to `kv` `[B, S, D]`."""
    cfg = self.config
    d, n, h = cfg.d_model, cfg.num_heads, cfg.head_size
    q = self._proj("BTD,DNH->BTNH", (d, n, h),
                   (axes.EMBED, axes.HEADS, axes.HEAD_DIM), 2,
                   param_std(cfg, "query"), "query")(x)         # [B, T, N, H]
    q = nn.with_logical_constraint(q, _HEAD_AXES)
    if self.cross:
      if self.decode:
        if kv is not None:
          k, v = self._kv(kv)
          ck = self.variable("cache", "cross_key", jnp.zeros, k.shape, k.dtype)
          cv = self.variable("cache", "cross_value", jnp.zeros, v.shape,
                             v.dtype)
          ck.value, cv.value = k, v
        else:
          k = self.get_variable("cache", "cross_key")
          v = self.get_variable("cache", "cross_value")
      else:
        k, v = self._kv(kv)
    else:
      k, v = self._kv(x)
      if self.decode:
        k, v = self._extend_cache(k, v)
    dropout = cfg.attention_dropout > 0.0 and not deterministic
    out = attend(q, k, v, mask, bias,
                 1.0 / math.sqrt(h) if cfg.scale_attention else 1.0,
                 cfg.attention_dropout if dropout else 0.0,
                 self.make_rng("dropout") if dropout else None)
    out = nn.with_logical_constraint(out, _HEAD_AXES)
    return self._proj("BTNH,NHD->BTD", (n, h, d),
                      (axes.HEADS, axes.HEAD_DIM, axes.EMBED), 1,
                      param_std(cfg, "out"), "out")(out)        # [B, T, D]

  def _extend_cache(self, k, v):
    initialising = not self.has_variable("cache", "cached_key")
    ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    index = self.variable("cache", "cache_index",
                          lambda: jnp.zeros((), jnp.int32))
    if initialising:
      return k, v
    i = index.value
    ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype),
                                            (0, 0, i, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype),
                                            (0, 0, i, 0))
    index.value = i + k.shape[2]
    return ck.value, cv.value


class EncoderDecoderBlock(nn.Module):
  """An encoder block (self-attention, MLP) or, with `cross`, a decoder block
  (causal self-attention, cross-attention, MLP); pre- or post-LN residuals
  as `Block` in `lm.models.transformer`.

  Arguments are positional so `nn.remat` can mark `deterministic` static
  (argument 7, counting `self`) and `nn.scan` can broadcast them.
  """

  config: ModelConfig
  cross: bool = False
  scanned: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x, encoded, self_mask, self_bias, cross_mask,
               deterministic=True):
    cfg = self.config
    drop = nn.Dropout(rate=cfg.dropout)
    parts = [("attention", lambda h: Attention(
        cfg, decode=self.decode, name="attention")(
            h, None, self_mask, self_bias, deterministic))]
    if self.cross:
      parts.append(("cross_attention", lambda h: Attention(
          cfg, cross=True, decode=self.decode, name="cross_attention")(
              h, encoded, cross_mask, None, deterministic)))
    parts.append(("mlp", lambda h: Mlp(cfg, name="mlp")(h)))
    for name, layer in parts:
      norm = make_norm(cfg, f"{name}_norm")
      if cfg.norm_position == "pre":
        x = x + drop(layer(norm(x)), deterministic=deterministic)
      else:
        x = norm(x + drop(layer(x), deterministic=deterministic))
    x = nn.with_logical_constraint(x, EMBED_AXES)
    return (x, None) if self.scanned else x


class EncoderDecoderStack(nn.Module):
  """The encoder (`cross=False`, bidirectional) or decoder (`cross=True`,
  causal, cross-attending) stack: positions, embedding norm (BART), blocks,
  final norm (pre-LN).

  It owns the stack's relative-position table and, when decoding, the
  decoder's bookkeeping in the cache: `index` (tokens so far), `filled`
  `[B, S]` (self-attention slots written) and `encoder_valid` `[B, S_enc]`.
  """

  config: ModelConfig
  cross: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, encoded, self_mask, cross_mask,
               deterministic=True):
    """`x` `[B, T, D]` embedded tokens -> `[B, T, D]`.

    `self_mask` / `cross_mask` bool `[B, 1, T, T|S]` (or None); when
    decoding the stack makes both itself and `cross_mask` is the encoder's
    validity `[B, S]` (None after the first call).
    """
    cfg = self.config
    t = x.shape[1]
    query_pos = key_pos = jnp.arange(t)
    if self.decode:
      initialising = not self.has_variable("cache", "index")
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      filled = self.variable("cache", "filled", jnp.zeros, (x.shape[0], t),
                             jnp.bool_)
      enc_valid = self.variable("cache", "encoder_valid", lambda: cross_mask)
      if cross_mask is not None:
        enc_valid.value = cross_mask
      cross_mask = enc_valid.value[:, None, None, :]            # [B, 1, 1, S]
      if initialising:
        self_mask = causal_mask(t)
      else:
        i = index.value
        filled.value = jax.lax.dynamic_update_slice(
            filled.value, jnp.ones((x.shape[0], t), jnp.bool_), (0, i))
        index.value = i + t
        s = filled.value.shape[1]
        query_pos, key_pos = i + jnp.arange(t), jnp.arange(s)
        seen = key_pos[None, :] <= query_pos[:, None]           # [T, S]
        self_mask = filled.value[:, None, None, :] & seen[None, None]
    x = add_positions(cfg, x, positions)
    if cfg.embed_norm:
      x = make_norm(cfg, "embed_norm")(x)
    x = nn.Dropout(rate=cfg.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, EMBED_AXES)
    bias = None
    if cfg.position == "relative":
      table = self.param(
          "relative_bias",
          nn.with_logical_partitioning(
              nn.initializers.normal(param_std(cfg, "relative")),
              (axes.POSITION, axes.HEADS)),
          (cfg.relative_buckets, cfg.num_heads), cfg.weight_dtype)
      buckets = relative_buckets(
          key_pos[None, :] - query_pos[:, None], bidirectional=not self.cross,
          num_buckets=cfg.relative_buckets,
          max_distance=cfg.relative_max_distance)               # [T, S]
      bias = jnp.take(table, buckets, axis=0).transpose(2, 0, 1)[None]
    layers = cfg.decoder_layers if self.cross else cfg.num_layers
    block_cls = EncoderDecoderBlock
    if cfg.remat != "none":
      block_cls = nn.remat(block_cls, policy=_REMAT_POLICIES[cfg.remat],
                           prevent_cse=not cfg.scan_layers,
                           static_argnums=(6,))
    if cfg.scan_layers:
      stack = nn.scan(
          block_cls, variable_axes={"params": 0, "cache": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * 5, length=layers,
          unroll=layers if layers <= cfg.scan_unroll else 1,
          metadata_params={nn.PARTITION_NAME: axes.LAYERS},
      )(cfg, cross=self.cross, scanned=True, decode=self.decode,
        name="layers")
      x, _ = stack(x, encoded, self_mask, bias, cross_mask, deterministic)
    else:
      for i in range(layers):
        x = block_cls(cfg, cross=self.cross, decode=self.decode,
                      name=f"layers_{i}")(
            x, encoded, self_mask, bias, cross_mask, deterministic)
    if cfg.norm_position == "pre":
      x = make_norm(cfg, "final_norm")(x)
    return nn.with_logical_constraint(x, EMBED_AXES)


def _valid(segment_ids, tokens):
  return (jnp.ones(tokens.shape, jnp.int32) if segment_ids is None
          else segment_ids)


class EncoderDecoderLM(nn.Module):
  """Encoder-decoder language model (T5 / BART / the original Transformer).

  Attributes:
    config: a validated model config with `arch="encoder_decoder"`.
    decode: the decoding variant (same parameters; see the module notes).
  """

  config: ModelConfig
  decode: bool = False

  def setup(self):
    cfg = self.config
    self.token_embed = Embed(cfg)
    self.encoder = EncoderDecoderStack(cfg, cross=False)
    self.decoder = EncoderDecoderStack(cfg, cross=True, decode=self.decode)
    if not cfg.tie_embeddings:
      self.unembed = Einsum("BTD,DV->BTV", (cfg.d_model, cfg.vocab_size),
                            (axes.EMBED, axes.VOCAB),
                            init_std=param_std(cfg, "head"),
                            dtype=cfg.compute_dtype,
                            param_dtype=cfg.weight_dtype,
                            out_dtype=jnp.float32)
    if cfg.logits_bias:
      self.logits_bias = self.param(
          "logits_bias",
          nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                       (axes.VOCAB,)),
          (cfg.vocab_size,), cfg.weight_dtype)

  def embed(self, tokens):
    """Token embeddings `[B, T, D]` of int `tokens` `[B, T]`, times sqrt(D)
    with `scale_embeddings`."""
    x = self.token_embed(tokens)
    if self.config.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(self.config.d_model), x.dtype)
    return x

  def encode(self, inputs, *, segment_ids=None, positions=None,
             deterministic: bool = True):
    """Encoder output `[B, S, D]` of int `inputs` `[B, S]` (segment ids 0 =
    padding; positions restart per packed segment, default arange)."""
    seg = _valid(segment_ids, inputs)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    return self.encoder(self.embed(inputs), positions, None,
                        segment_mask(seg), None, deterministic)

  def logits(self, hidden):
    """Float32 logits `[B, T, V]` of decoder output `[B, T, D]`."""
    cfg = self.config
    if not cfg.tie_embeddings:
      logits = self.unembed(hidden)
    elif cfg.scale_tied_head:
      logits = self.token_embed.attend(hidden * cfg.d_model ** -0.5)
    else:
      logits = self.token_embed.attend(hidden)
    if cfg.logits_bias:
      logits = logits + self.logits_bias.astype(jnp.float32)
    return logits

  def decode_step(self, decoder_inputs, positions, encoded=None,
                  encoder_valid=None):
    """One cached decoder call (decode=True): `(logits [B, T, V], hidden)`.

    The first call after `init` passes `encoded` `[B, S, D]` and its bool
    validity `encoder_valid` `[B, S]`; later calls pass neither.
    """
    hidden = self.decoder(self.embed(decoder_inputs), positions,
                          encoded, None, encoder_valid, True)
    return self.logits(hidden), hidden

  def __call__(self, inputs, decoder_inputs=None, *, input_segment_ids=None,
               decoder_segment_ids=None, input_positions=None,
               decoder_positions=None, deterministic: bool = True):
    """Teacher-forced logits.

    Args:
      inputs: int `[B, S]` encoder tokens.
      decoder_inputs: int `[B, T]` decoder tokens (targets shifted right,
        each segment starting with the decoder start id); None (an `init`
        on one array, as the engine's) uses `inputs`.
      input_segment_ids, decoder_segment_ids: int `[B, S]` / `[B, T]`
        example ids of packed rows, 0 = padding; a decoder token sees the
        encoder tokens of its own id. None: one unpadded example per row.
      input_positions, decoder_positions: positions restarting per segment
        (used by learned / sinusoidal positions); default arange.
      deterministic: disable dropout.

    Returns:
      `(logits, aux)`: float32 `[B, T, V]` and `{"hidden", "encoded"}`.
    """
    if decoder_inputs is None:   # `init` on one array: same-length sides
      decoder_inputs = inputs
    if self.decode:   # `init` of the decoding variant sizes its cache
      encoded = self.encode(inputs, segment_ids=input_segment_ids)
      positions = jnp.broadcast_to(jnp.arange(decoder_inputs.shape[1]),
                                   decoder_inputs.shape)
      valid = _valid(input_segment_ids, inputs) != 0
      logits, hidden = self.decode_step(decoder_inputs, positions, encoded,
                                        valid)
      return logits, {"hidden": hidden, "encoded": encoded}
    encoded = self.encode(inputs, segment_ids=input_segment_ids,
                          positions=input_positions,
                          deterministic=deterministic)
    in_seg = _valid(input_segment_ids, inputs)
    out_seg = _valid(decoder_segment_ids, decoder_inputs)
    if decoder_positions is None:
      decoder_positions = jnp.broadcast_to(
          jnp.arange(decoder_inputs.shape[1]), decoder_inputs.shape)
    self_mask = segment_mask(out_seg) & causal_mask(decoder_inputs.shape[1])
    hidden = self.decoder(self.embed(decoder_inputs), decoder_positions,
                          encoded, self_mask, segment_mask(out_seg, in_seg),
                          deterministic)
    return self.logits(hidden), {"hidden": hidden, "encoded": encoded}

  def reorder_cache(self, cache, indices):
    """The cache with its batch rows replaced by rows `indices` (beam
    search); see `reorder_layer_cache`."""
    return reorder_layer_cache(cache, indices, self.config.scan_layers)
