"""LSTM language model: the recurrent baseline with `DecoderLM`'s contract.

`LstmLM(config).apply({'params': p}, tokens, positions=..., segment_ids=...,
deterministic=...)` returns `(logits, aux)` exactly as `DecoderLM` does:
float32 logits `[B, T, V]` and `aux["hidden"]`, the last layer's output
`[B, T, D]` (before the head's dropout). `positions` are accepted and ignored:
the recurrence itself carries the order.

Parameter tree (`config.arch == "lstm"`):

  token_embed/embedding             [V, D]     (vocab, embed)
  layers_{i}/input_kernel           [D, 4, H]  (embed, None, mlp)
  layers_{i}/recurrent_kernel       [H, 4, H]  (embed, None, mlp)
  layers_{i}/bias                   [4, H]     (None, mlp)
  unembed/kernel                    [D, V]     (embed, vocab)  untied only

The gate axis (size 4, order: input, forget, cell, output) is named None on
purpose: it is never sharded, so the four gates of one hidden unit always
live on the same device and the cell update needs no communication; the
hidden axis H takes the `mlp` rule (tensor parallelism over hidden units).
The gate bias is always present (`use_bias` is ignored) and its forget row
starts at 1.0, so a fresh cell remembers by default.

Packed rows: with `segment_ids`, the state is reset to zero wherever the id
differs from the previous position's, so documents packed into one row never
see each other; padding (id 0) runs from a zero state and stays finite.

Decoding: with `decode=True` each layer keeps `h` and `c` (float32 `[B, H]`,
batch on axis 0) in the 'cache' collection; an all-zeros cache is the empty
state. A decode call continues from the cached state over its T tokens and
writes the final state back. Where `valid[b, t]` is False (left padding) row
b's state is carried through unchanged, so a left-padded prompt ends in the
same state as the unpadded one.

Legend: B batch, T length, D width a kernel reads (the layer input, or the
previous hidden state for the recurrent kernel), G the four gates, H hidden
width written (H = D = d_model; separate letters because a kernel's input
and output dims need distinct names), V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.errors import LmError
from lm.models.config import ModelConfig
from lm.models.heads import lm_head
from lm.models.layers import Embed
from lm.parallel import axes

EMBED_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)
KERNEL_AXES = (axes.EMBED, None, axes.MLP)  # [D, G, H]; gates never sharded
BIAS_AXES = (None, axes.MLP)                # [G, H]
NUM_GATES = 4                               # input, forget, cell, output
FORGET_GATE = 1

# Time steps per loop iteration of `jax.lax.scan`: fewer loop trips (each
# costs a little on CPU) against a larger compiled body.
SCAN_UNROLL = 4

# Gate kernels: truncated normal with variance 1 / fan_in (LeCun), fan_in
# being the width read (axis 0), not the 4 * H outputs.
_kernel_init = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2))


def _bias_init(key, shape, dtype=jnp.float32):
  """Zeros, except the forget-gate row, which starts at 1.0."""
  del key
  return jnp.zeros(shape, dtype).at[FORGET_GATE].set(1.0)


def segment_starts(segment_ids: jax.Array) -> jax.Array:
  """bool `[B, T]`: True where a new packed document starts (after position 0).

  Position 0 is always False: every call begins from its initial state (zeros,
  or the decode cache), so no reset is needed there.

  >>> segment_starts(jnp.array([[1, 1, 2, 2, 0]]))
  Array([[False, False,  True, False,  True]], dtype=bool)
  """
  change = segment_ids[:, 1:] != segment_ids[:, :-1]  # [B, T-1]
  return jnp.pad(change, ((0, 0), (1, 0)), constant_values=False)


class LstmLayer(nn.Module):
  """One LSTM layer run over the whole sequence with `jax.lax.scan`.

  z = x_t W_in + h_{t-1} W_rec + b   (per gate, [B, 4, H])
  c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
  h_t = sigmoid(o) * tanh(c_t)

  The input projection of all T steps is one einsum before the scan; only the
  recurrent einsum runs inside it. Gates and state are float32 whatever the
  compute dtype (the state is a running sum over time).

  Attributes:
    config: model config (d_model, dtypes).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, resets: jax.Array, valid: jax.Array,
               decode: bool = False) -> jax.Array:
    """Maps `[B, T, D]` to `[B, T, H]` (compute dtype).

    Args:
      x: `[B, T, D]` layer input.
      resets: bool `[B, T]`: zero the state before this step.
      valid: bool `[B, T]`: False leaves the state untouched at this step.
      decode: start from (and write back) the 'cache' collection's state.
    """
    cfg = self.config
    dtype = cfg.compute_dtype
    batch, _, width = x.shape
    hidden = cfg.d_model
    w_in = self.param(
        "input_kernel", nn.with_logical_partitioning(_kernel_init, KERNEL_AXES),
        (width, NUM_GATES, hidden), cfg.weight_dtype)  # [D, G, H]
    w_rec = self.param(
        "recurrent_kernel",
        nn.with_logical_partitioning(_kernel_init, KERNEL_AXES),
        (hidden, NUM_GATES, hidden), cfg.weight_dtype)  # [H, G, H]
    bias = self.param(
        "bias", nn.with_logical_partitioning(_bias_init, BIAS_AXES),
        (NUM_GATES, hidden), cfg.weight_dtype)  # [G, H]

    gates_x = jnp.einsum("BTD,DGH->BTGH", x.astype(dtype), w_in.astype(dtype),
                         preferred_element_type=jnp.float32)
    gates_x = gates_x + bias.astype(jnp.float32)  # [B, T, G, H]
    w_rec = w_rec.astype(dtype)

    zeros = jnp.zeros((batch, hidden), jnp.float32)
    if decode:
      initialized = self.has_variable("cache", "h")
      h_var = self.variable("cache", "h", jnp.zeros, (batch, hidden),
                            jnp.float32)
      c_var = self.variable("cache", "c", jnp.zeros, (batch, hidden),
                            jnp.float32)
      if h_var.value.shape != (batch, hidden):
        raise LmError(
            f"the decode cache holds state of shape {h_var.value.shape} but "
            f"the tokens need ({batch}, {hidden}); build the cache with the "
            "same batch size as the decode calls.")
      carry = (h_var.value.astype(jnp.float32),
               c_var.value.astype(jnp.float32))
    else:
      carry = (zeros, zeros)

    def step(carry, inputs):
      h_prev, c_prev = carry  # [B, H] each
      g_x, reset, ok = inputs  # [B, G, H], [B], [B]
      h = jnp.where(reset[:, None], 0.0, h_prev)
      c = jnp.where(reset[:, None], 0.0, c_prev)
      z = g_x + jnp.einsum("BD,DGH->BGH", h.astype(dtype), w_rec,
                           preferred_element_type=jnp.float32)  # [B, G, H]
      i, f, g, o = (z[:, k] for k in range(NUM_GATES))
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      h = jnp.where(ok[:, None], h, h_prev)
      c = jnp.where(ok[:, None], c, c_prev)
      return (h, c), h

    xs = (jnp.swapaxes(gates_x, 0, 1), resets.T, valid.T)  # time-major
    (h_last, c_last), ys = jax.lax.scan(step, carry, xs, unroll=SCAN_UNROLL)
    if decode and initialized:
      h_var.value, c_var.value = h_last, c_last
    return jnp.swapaxes(ys, 0, 1).astype(dtype)  # [B, T, H]


class LstmLM(nn.Module):
  """Stacked-LSTM language model with `DecoderLM`'s call contract.

  embed -> dropout -> (LSTM -> dropout between layers) x L -> dropout -> head

  Attributes:
    config: a validated model config (`arch="lstm"`).
  """

  config: ModelConfig

  def reorder_cache(self, cache, indices):
    """The cache with its batch rows replaced by rows `indices` (beam search);
    every cached `h`/`c` is `[B, D]`."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), cache)

  @nn.compact
  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               deterministic: bool = True, decode: bool = False,
               valid: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Next-token logits.

    Args:
      tokens: int `[B, T]`.
      positions: int `[B, T]`; accepted for the shared contract and ignored.
      segment_ids: int `[B, T]` packed-document ids, 0 = padding; the state
        restarts from zero wherever the id changes. None: one sequence per
        row.
      deterministic: disable dropout (needs a 'dropout' RNG when False).
      decode: continue from the 'cache' collection's state and write the
        final state back (apply with `mutable=['cache']`).
      valid: bool `[B, T]`; where False the state is not updated (left
        padding). None means all valid.

    Returns:
      `(logits, aux)`: float32 `[B, T, V]` logits and `{"hidden": [B, T, D]}`.
    """
    del positions  # the recurrence carries the order
    cfg = self.config
    if tokens.ndim != 2:
      raise LmError(
          f"LstmLM takes tokens of shape [batch, length] but got shape "
          f"{tokens.shape}; add or remove a batch axis.")
    resets = (jnp.zeros(tokens.shape, bool) if segment_ids is None
              else segment_starts(segment_ids))
    valid = (jnp.ones(tokens.shape, bool) if valid is None
             else valid.astype(bool))
    drop = nn.Dropout(rate=cfg.dropout)

    embed = Embed(cfg, name="token_embed")
    x = drop(embed(tokens), deterministic=deterministic)  # [B, T, D]
    x = nn.with_logical_constraint(x, EMBED_AXES)
    for i in range(cfg.num_layers):
      if i:
        x = drop(x, deterministic=deterministic)
      x = LstmLayer(cfg, name=f"layers_{i}")(x, resets, valid, decode)
      x = nn.with_logical_constraint(x, EMBED_AXES)  # [B, T, H]
    hidden = x

    head_in = drop(hidden, deterministic=deterministic)
    logits = lm_head(cfg, embed, head_in)  # [B, T, V]
    return logits, {"hidden": hidden}
