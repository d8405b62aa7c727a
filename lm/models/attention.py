"""Multi-head attention (MHA, GQA, MQA) and attention-mask helpers.

Masks are boolean, True where a query may attend to a key, shaped
`[B, 1 | N, T, S]` (or anything broadcastable to it). A fully masked query row
(a padding position) attends uniformly to every key instead of producing NaN;
its output is finite and meaningless, and losses must ignore it.

Legend: B batch, T query length, S key length, D model width, N query heads,
K key/value heads, G = N/K query heads per key/value head, H head dim.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.config import ModelConfig
from lm.models.layers import Einsum, out_proj_std
from lm.models.positional import apply_rope
from lm.parallel import axes


# Mask helpers.


def causal_mask(length: int) -> jax.Array:
  """Lower-triangular `[1, 1, T, T]` mask: query i sees keys 0..i.

  Example: `causal_mask(3)[0, 0]` is
  `[[1, 0, 0], [1, 1, 0], [1, 1, 1]]` (as bools).
  """
  idx = jnp.arange(length)
  return (idx[:, None] >= idx[None, :])[None, None]  # [1, 1, T, T]


def segment_mask(segment_ids_q: jax.Array,
                 segment_ids_kv: jax.Array | None = None) -> jax.Array:
  """Attend only within the same segment; segment 0 (padding) sees nothing.

  Example: ids `[[1, 1, 2, 0]]` give row 0 `[1, 1, 0, 0]`, row 2
  `[0, 0, 1, 0]` and row 3 (padding) all False.

  Args:
    segment_ids_q: int `[B, T]` segment of each query (0 = padding).
    segment_ids_kv: int `[B, S]` segment of each key; defaults to the queries'.

  Returns:
    bool `[B, 1, T, S]`.
  """
  if segment_ids_kv is None:
    segment_ids_kv = segment_ids_q
  q = segment_ids_q[:, None, :, None]  # [B, 1, T, 1]
  kv = segment_ids_kv[:, None, None, :]  # [B, 1, 1, S]
  return (q == kv) & (q != 0) & (kv != 0)  # [B, 1, T, S]


def padding_mask(valid_q: jax.Array,
                 valid_kv: jax.Array | None = None) -> jax.Array:
  """Attend only between real (non-padding) tokens.

  Args:
    valid_q: bool or 0/1 `[B, T]`, True at real query tokens.
    valid_kv: bool or 0/1 `[B, S]` for keys; defaults to `valid_q`.

  Returns:
    bool `[B, 1, T, S]`.
  """
  if valid_kv is None:
    valid_kv = valid_q
  q = valid_q.astype(bool)[:, None, :, None]  # [B, 1, T, 1]
  kv = valid_kv.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
  return q & kv  # [B, 1, T, S]


def make_attention_mask(segment_ids: jax.Array | None, causal: bool,
                        length: int | None = None) -> jax.Array | None:
  """The self-attention mask of a (possibly packed) batch.

  Args:
    segment_ids: int `[B, T]` document ids of a packed batch (0 = padding), or
      None for one unpadded sequence per row.
    causal: also mask future keys.
    length: T, needed only when `segment_ids` is None and `causal`.

  Returns:
    bool `[B, 1, T, T]` (`[1, 1, T, T]` when `segment_ids` is None), or None
    when nothing is masked (no segments, not causal).
  """
  if segment_ids is None:
    if not causal:
      return None
    if length is None:
      raise ValueError("make_attention_mask needs `length` without "
                       "segment ids.")
    return causal_mask(length)
  mask = segment_mask(segment_ids)
  if causal:
    mask = mask & causal_mask(segment_ids.shape[1])
  return mask


# Attention kernels.


def _large_negative(dtype: jnp.dtype) -> jax.Array:
  """The masked-logit fill, the same one `jax.nn.dot_product_attention` uses."""
  return jnp.asarray(-0.7 * jnp.finfo(dtype).max, dtype)


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     mask: jax.Array | None = None, *, causal: bool = False,
                     dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None) -> jax.Array:
  """Reference attention softmax(q k^T / sqrt(H)) v with grouped heads.

  Logits and softmax are float32; masked logits get a large negative value so
  a fully masked row is uniform (finite) rather than NaN.

  Args:
    q: `[B, T, N, H]` queries.
    k: `[B, S, K, H]` keys, K dividing N.
    v: `[B, S, K, H]` values.
    mask: bool broadcastable to `[B, N, T, S]` with a head dim of 1 or N.
    causal: also mask key j > query i.
    dropout_rate: dropout on the attention probabilities (needs dropout_rng).
    dropout_rng: PRNG key for that dropout.

  Returns:
    `[B, T, N, H]` in `v.dtype`.
  """
  t, h = q.shape[1], q.shape[3]
  # Heads first, so both products are 4-d batched matmuls (see
  # `_softmax_attention_fwd`); the probabilities keep their [B, K, G, T, S]
  # shape, and with it the dropout mask drawn for them.
  _, _, logits = _heads_first_logits(q, k)                     # [B, K, G, T, S]
  logits = logits * (1.0 / math.sqrt(h))
  if causal:
    mask = causal_mask(t) if mask is None else mask & causal_mask(t)
  if mask is not None:
    mask = _group_mask(mask, *logits.shape[1:3])
    logits = jnp.where(mask, logits, _large_negative(logits.dtype))
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  out = _probs_times_values(probs, v.transpose(0, 2, 1, 3))    # [B, K, G·T, H]
  return _heads_last(out, probs.shape[2])  # [B, T, N, H]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                      mask: jax.Array | None, scale: float) -> jax.Array:
  """softmax(q k^T * scale) v with grouped heads and the closed-form backward.

  The backward pass is the one FlashAttention uses, over materialised
  probabilities P: dV = P^T dO, dS = P (dO V^T - rowsum(dO * O)), dQ = dS K,
  dK = dS^T Q (times `scale`), so the softmax's own gradient needs one
  reduction over the head width instead of one over the keys. On the CPU
  backend this is the default kernel (`config.attention_impl == "xla"`):
  measured 62 -> 57 ms per train step against `jax.nn.dot_product_attention`
  at 4 layers x 128 (T 64, B 12, unrolled layers).

  Args:
    q: `[B, T, N, H]` queries.
    k: `[B, S, K, H]` keys, K dividing N.
    v: `[B, S, K, H]` values.
    mask: bool broadcastable to `[B, 1 | N, T, S]`, or None. Fully masked
      rows attend uniformly, as in `einsum_attention`.
    scale: the logit scale, usually 1/sqrt(H).

  Returns:
    `[B, T, N, H]` in `v.dtype`.
  """
  return _softmax_attention_fwd(q, k, v, mask, scale)[0]


def _group_mask(mask: jax.Array, kv_heads: int, groups: int) -> jax.Array:
  """A bool mask `[B, 1 | N, T, S]` as `[B, 1 | K, 1 | G, T, S]`, aligned
  with grouped logits `[B, K, G, T, S]`."""
  mask = jnp.asarray(mask, bool)
  if mask.shape[1] == 1:
    return mask[:, :, None]                                    # [B, 1, 1, T, S]
  return mask.reshape(mask.shape[0], kv_heads, groups, *mask.shape[2:])


def _heads_first(x: jax.Array, groups: int) -> jax.Array:
  """`[B, T, K·G, H]` -> `[B, K, G·T, H]`: each KV head's query rows (its G
  query heads' T positions) contiguous, the layout of a batched matmul."""
  b, t, n, h = x.shape
  x = x.reshape(b, t, n // groups, groups, h).transpose(0, 2, 3, 1, 4)
  return x.reshape(b, n // groups, groups * t, h)


def _heads_last(x: jax.Array, groups: int) -> jax.Array:
  """The inverse of `_heads_first`: `[B, K, G·T, H]` -> `[B, T, K·G, H]`."""
  b, kv, gt, h = x.shape
  t = gt // groups
  return x.reshape(b, kv, groups, t, h).transpose(0, 3, 1, 2, 4).reshape(
      b, t, kv * groups, h)


def _heads_first_logits(q: jax.Array, k: jax.Array):
  """`(queries [B, K, G·T, H], keys [B, K, S, H], float32 q·kᵀ
  [B, K, G, T, S])` of queries `[B, T, N, H]` and keys `[B, S, K, H]`:
  heads first, so the product is a 4-d batched matmul. With the grouped
  `[B, T, K, G, H]` operands as a 5-d einsum, XLA:CPU took 63 ms for a
  layer's attention (forward and backward) at T 256, B 8, 6 heads of 64,
  against 44 ms this way (1.8 against 1.6 ms at T 64, B 12, 4 heads of 32)."""
  b, t, n, _ = q.shape
  kv_heads, s = k.shape[2], k.shape[1]
  g = n // kv_heads
  qh = _heads_first(q, g)
  kh = k.transpose(0, 2, 1, 3)
  logits = jnp.einsum("BKTH,BKSH->BKTS", qh, kh,
                      preferred_element_type=jnp.float32)
  return qh, kh, logits.reshape(b, kv_heads, g, t, s)


def _probs_times_values(probs: jax.Array, vh: jax.Array) -> jax.Array:
  """`probs [B, K, G, T, S]` times heads-first values `[B, K, S, H]`:
  `[B, K, G·T, H]` in the values' dtype."""
  b, kv_heads, g, t, s = probs.shape
  return jnp.einsum("BKTS,BKSH->BKTH",
                    probs.reshape(b, kv_heads, g * t, s).astype(vh.dtype), vh)


def _softmax_attention_fwd(q, k, v, mask, scale):
  """The forward pass in heads-first layout (`_heads_first_logits`)."""
  qh, kh, logits = _heads_first_logits(q, k)
  logits = logits * scale                                      # [B, K, G, T, S]
  live = None
  if mask is not None:
    mask = _group_mask(mask, *logits.shape[1:3])
    logits = jnp.where(mask, logits, _large_negative(logits.dtype))
    # rows with a key to attend to; a fully masked row's uniform weights
    # have no logit gradient (elsewhere masked weights are exactly 0)
    live = jnp.any(mask, axis=-1, keepdims=True)
  probs = jax.nn.softmax(logits, axis=-1)                      # [B, K, G, T, S]
  vh = v.transpose(0, 2, 1, 3)                                 # [B, K, S, H]
  oh = _probs_times_values(probs, vh)                          # [B, K, G·T, H]
  return _heads_last(oh, probs.shape[2]), (qh, kh, vh, live, probs, oh)


def _softmax_attention_bwd(scale, res, d_out):
  qh, kh, vh, live, probs, oh = res
  b, kv_heads, g, t, s = probs.shape
  doh = _heads_first(d_out, g)                                 # [B, K, G·T, H]
  p = probs.reshape(b, kv_heads, g * t, s)
  dvh = jnp.einsum("BKTS,BKTH->BKSH", p.astype(vh.dtype), doh)
  dp = jnp.einsum("BKTH,BKSH->BKTS", doh, vh,
                  preferred_element_type=jnp.float32)
  rows = jnp.sum(doh.astype(jnp.float32) * oh.astype(jnp.float32), axis=-1,
                 keepdims=True)
  ds = p * (dp - rows) * scale                                 # [B, K, G·T, S]
  if live is not None:
    ds = (ds.reshape(probs.shape) * live).reshape(p.shape)
  ds = ds.astype(qh.dtype)
  dq = _heads_last(jnp.einsum("BKTS,BKSH->BKTH", ds, kh), g)
  dk = jnp.einsum("BKTS,BKTH->BKSH", ds, qh).transpose(0, 2, 1, 3)
  return dq, dk, dvh.transpose(0, 2, 1, 3), None


softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def attention_scores(q: jax.Array, k: jax.Array, mask: jax.Array | None,
                     causal: bool, scale: float) -> jax.Array:
  """The attention logits `[B, N, T, S]` (q k^T * scale, keys shared by
  their head group) with every masked entry 0, as TinyBERT matches them;
  computed apart from the kernels (an extra q k^T) for distillation.

  >>> q = jnp.ones((1, 2, 1, 4)); attention_scores(q, q, None, True, 0.5)[0, 0]
  Array([[2., 0.],
         [2., 2.]], dtype=float32)
  """
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  k = jnp.repeat(k, n // kv_heads, axis=2)
  logits = jnp.einsum("BTNH,BSNH->BNTS", q, k,
                      preferred_element_type=jnp.float32) * scale
  keep = jnp.ones((1, 1, t, k.shape[1]), bool)
  if causal:
    keep = keep & causal_mask(t)
  if mask is not None:
    keep = keep & jnp.asarray(mask, bool)
  return jnp.where(keep, logits, 0.0)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     mask: jax.Array | None, scale: float) -> jax.Array:
  """Attention of new queries `[B, T, N, H]` over a KV cache of keys
  `[B, K, H, S]` and values `[B, K, S, H]`; `mask` `[B, 1, T, S]` covers
  causality and padding (forward only: decoding takes no gradient)."""
  b, t, n, h = q.shape
  kv_heads = k.shape[1]
  qg = q.reshape(b, t, kv_heads, n // kv_heads, h)             # [B, T, K, G, H]
  logits = jnp.einsum("BTKGH,BKHS->BKGTS", qg, k,
                      preferred_element_type=jnp.float32) * scale
  if mask is not None:
    mask = _group_mask(mask, kv_heads, n // kv_heads)
    logits = jnp.where(mask, logits, _large_negative(logits.dtype))
  probs = jax.nn.softmax(logits, axis=-1)                      # [B, K, G, T, S]
  out = jnp.einsum("BKGTS,BKSH->BTKGH", probs.astype(v.dtype), v)
  return out.reshape(b, t, n, h)


class MultiHeadAttention(nn.Module):
  """Multi-head self-attention with grouped key/value heads.

  N query heads share K = config.kv_heads key/value heads in groups of N/K
  (K = N: MHA; 1 < K < N: GQA; K = 1: MQA). RoPE is applied to queries and
  keys when `config.position == "rope"`.

  The kernel is `jax.nn.dot_product_attention` (`implementation=None` for
  "xla", "cudnn" for "cudnn") unless attention dropout is active or
  `config.attention_impl == "einsum"`, which use `einsum_attention`; "xla"
  on the CPU backend uses `softmax_attention` (measured faster there).

  KV cache (`decode=True`): keys and values live in the 'cache' collection
  as `cached_key` `[B, K, H, S]` and `cached_value` `[B, K, S, H]` plus a
  `cache_index`; each
  call writes its T new keys/values at `cache_index` and attends over all S
  slots, so the caller must pass a mask that covers causality and padding
  over the whole cache (`DecoderLM` builds it). The first call (from `init`)
  only creates the cache, sized by its input length S.

  Attributes:
    config: model config.
    causal: mask key j > query i (aligned at position 0 of both; ignored when
      decoding, where the caller's mask covers causality).
    decode: read and extend the KV cache.
  """

  config: ModelConfig
  causal: bool = False
  decode: bool = False

  def _proj(self, equation: str, shape: tuple[int, ...],
            kernel_axes: tuple[str, ...], bias_dims: int, std: float,
            name: str) -> Einsum:
    cfg = self.config
    return Einsum(equation, shape, kernel_axes,
                  bias_dims=bias_dims if cfg.use_bias else 0, init_std=std,
                  dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  name=name)

  def _extend_cache(self, k: jax.Array, v: jax.Array):
    """Writes `k`, `v` `[B, T, K, H]` at the cache index; returns the full
    cache, heads first: keys `[B, K, H, S]` and values `[B, K, S, H]`, the
    operands of q k^T and p v as the matmuls take them, so the per-token
    attention transposes none of the S slots (`cached_attention`). (With
    keys `[B, K, S, H]`, XLA fused a second copy of each key update into
    the transposed read, and two updates of one buffer cost two copies of
    the whole key cache per layer and token in the decode loop.)"""
    initialising = not self.has_variable("cache", "cached_key")
    k = k.transpose(0, 2, 3, 1)                                # [B, K, H, T]
    v = v.transpose(0, 2, 1, 3)                                # [B, K, T, H]
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    index = self.variable("cache", "cache_index",
                          lambda: jnp.zeros((), jnp.int32))
    if initialising:
      return k, v
    i = index.value
    cached_k.value = jax.lax.dynamic_update_slice(
        cached_k.value, k.astype(cached_k.value.dtype), (0, 0, 0, i))
    cached_v.value = jax.lax.dynamic_update_slice(
        cached_v.value, v.astype(cached_v.value.dtype), (0, 0, i, 0))
    index.value = i + v.shape[2]
    return cached_k.value, cached_v.value  # [B, K, H, S], [B, K, S, H]

  @nn.compact
  def __call__(self, x: jax.Array, *, positions: jax.Array,
               mask: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    """Self-attention over `x`.

    Args:
      x: `[B, T, D]` inputs.
      positions: int `[B, T]` positions (used by RoPE).
      mask: bool `[B, 1 | N, T, T]` (or broadcastable), True = may attend;
        combined with the causal mask when `causal`.
      deterministic: disable attention dropout.

    Returns:
      `[B, T, D]`.
    """
    cfg = self.config
    d, n, kv, h = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
    q = self._proj("BTD,DNH->BTNH", (d, n, h),
                   (axes.EMBED, axes.HEADS, axes.HEAD_DIM), 2, cfg.init_std,
                   "query")(x)  # [B, T, N, H]
    k = self._proj("BSD,DKH->BSKH", (d, kv, h),
                   (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM), 2,
                   cfg.init_std, "key")(x)  # [B, S, K, H]
    v = self._proj("BSD,DKH->BSKH", (d, kv, h),
                   (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM), 2,
                   cfg.init_std, "value")(x)  # [B, S, K, H]
    if cfg.position == "rope":
      q = apply_rope(q, positions, cfg.rope_theta)
      k = apply_rope(k, positions, cfg.rope_theta)
    q = nn.with_logical_constraint(
        q, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, axes.ACT_HEAD_DIM))
    kv_axes = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_KV_HEADS,
               axes.ACT_HEAD_DIM)
    k = nn.with_logical_constraint(k, kv_axes)
    v = nn.with_logical_constraint(v, kv_axes)
    causal = self.causal
    dropout = cfg.attention_dropout > 0.0 and not deterministic
    if not self.decode and self.is_mutable_collection("intermediates"):
      self.sow("intermediates", "scores",
               attention_scores(q, k, mask, causal, 1.0 / math.sqrt(h)))
    if self.decode:
      k, v = self._extend_cache(k, v)
      out = cached_attention(q, k, v, mask, 1.0 / math.sqrt(h))
    elif dropout or cfg.attention_impl == "einsum":
      rng = self.make_rng("dropout") if dropout else None
      out = einsum_attention(q, k, v, mask, causal=causal,
                             dropout_rate=cfg.attention_dropout if dropout
                             else 0.0, dropout_rng=rng)
    elif cfg.attention_impl == "xla" and jax.default_backend() == "cpu":
      if causal:
        t = q.shape[1]
        mask = causal_mask(t) if mask is None else mask & causal_mask(t)
      out = softmax_attention(q, k, v, mask, 1.0 / math.sqrt(h))
    else:
      if mask is not None:
        mask = jnp.asarray(mask, bool)
      out = jax.nn.dot_product_attention(
          q, k, v, mask=mask, scale=1.0 / math.sqrt(h), is_causal=causal,
          implementation="cudnn" if cfg.attention_impl == "cudnn" else None)
    out = nn.with_logical_constraint(
        out,
        (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, axes.ACT_HEAD_DIM))
    return self._proj("BTNH,NHD->BTD", (n, h, d),
                      (axes.HEADS, axes.HEAD_DIM, axes.EMBED), 1,
                      out_proj_std(cfg), "out")(out)  # [B, T, D]
