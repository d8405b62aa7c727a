"""Position information: sinusoidal, learned and rotary (RoPE).

Positions are always an explicit int array `[B, T]`; they restart at 0 at
packed-document boundaries, so every encoding here indexes by the position
value, never by the index along the sequence.

Legend: B batch, T length, N heads, H head dim, D model width, P table rows.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.errors import LmError
from lm.models.config import ModelConfig
from lm.parallel import axes


def sinusoidal_embedding(positions: jax.Array, dim: int,
                         max_wavelength: float = 10000.0) -> jax.Array:
  """Sinusoidal encodings of arbitrary positions, interleaved sin/cos.

  PE(pos, 2i) = sin(pos / 10000^(2i/d)) and PE(pos, 2i+1) = cos(same angle):
  even feature columns hold sines, odd columns cosines ("Attention Is All You
  Need", section 3.5). An odd `dim` drops the last cosine column.

  Args:
    positions: int or float array of any shape `[...]`.
    dim: feature width d.
    max_wavelength: the 10000 of the formula.

  Returns:
    float32 array `[..., dim]`.
  """
  half = (dim + 1) // 2
  # 2i / d for i = 0 .. ceil(d/2)-1.
  exponents = jnp.arange(half, dtype=jnp.float32) * 2.0 / dim
  inv_freq = 1.0 / (max_wavelength ** exponents)  # [half]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., half]
  table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  table = table.reshape(*angles.shape[:-1], 2 * half)  # [..., 2*half]
  return table[..., :dim]


def sinusoidal_table(length: int, dim: int,
                     max_wavelength: float = 10000.0) -> jax.Array:
  """The `[length, dim]` float32 table of `sinusoidal_embedding(arange)`.

  Example: `sinusoidal_table(2, 4)[1] == [sin 1, cos 1, sin .01, cos .01]`.
  """
  return sinusoidal_embedding(jnp.arange(length), dim, max_wavelength)


class LearnedPositions(nn.Module):
  """A learned `[max_len + position_offset, D]` position table indexed by
  position value plus `position_offset` (0, or BART's 2: its first two rows
  are never read).

  Attributes:
    config: model config (max_len, position_offset, d_model, init_std,
      dtypes).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, positions: jax.Array) -> jax.Array:
    """Looks up `positions [B, T]`; returns `[B, T, D]` in the compute dtype.

    A position >= max_len gives NaN (`jnp.take`'s fill mode) rather than
    silently reusing the last row.
    """
    cfg = self.config
    offset = cfg.position_offset
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                     (axes.POSITION, axes.EMBED)),
        (cfg.max_len + offset, cfg.d_model), cfg.weight_dtype)  # [P, D]
    if offset:
      positions = positions + offset
    return jnp.take(table, positions, axis=0).astype(cfg.compute_dtype)


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> jax.Array:
  """Inverse frequencies theta^(-2i/H), i = 0 .. H/2-1, as float32 `[H/2]`."""
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  return 1.0 / (theta ** exponents)


def apply_rope(x: jax.Array, positions: jax.Array,
               theta: float = 10000.0) -> jax.Array:
  """Rotary position embedding, rotate-half (GPT-NeoX / LLaMA) convention.

  Feature j < H/2 is paired with feature j + H/2 (not with its neighbour) and
  the pair is rotated by the angle `pos * theta^(-2j/H)`:

    out[..., :H/2] = x1 * cos - x2 * sin
    out[..., H/2:] = x2 * cos + x1 * sin

  with x1 = x[..., :H/2], x2 = x[..., H/2:]. Rotations preserve the norm of
  each head vector and q(m) . k(n) depends only on m - n. Computed in float32
  and returned in `x.dtype`.

  Args:
    x: `[B, T, N, H]` queries or keys (H even).
    positions: int `[B, T]`.
    theta: base wavelength.

  Returns:
    `[B, T, N, H]` rotated `x`.
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f"apply_rope needs an even head dim, got {head_dim}.")
  inv_freq = rope_frequencies(head_dim, theta)  # [H/2]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
  sin = jnp.sin(angles)[:, :, None, :]  # [B, T, 1, H/2]
  cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, H/2]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)  # [B, T, N, H/2] each
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)  # [B, T, N, H]


def default_positions(cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
  """`arange(T)` in every row of int `[B, T]` tokens.

  Raises LmError when a learned position table is shorter than T.
  """
  length = tokens.shape[1]
  if cfg.position == "learned" and length > cfg.max_len:
    raise LmError(
        f"sequence length {length} exceeds model.max_len={cfg.max_len}; "
        "raise model.max_len or shorten the inputs.")
  return jnp.broadcast_to(jnp.arange(length), tokens.shape)


def add_positions(cfg: ModelConfig, x: jax.Array,
                  positions: jax.Array) -> jax.Array:
  """`x` `[B, T, D]` plus the learned or sinusoidal embedding of `positions`.

  RoPE and "none" add nothing here (RoPE acts inside attention). The learned
  table is created as `position_embed` in the calling module's scope, so call
  this from inside a compact `__call__`.
  """
  if cfg.position == "learned":
    return x + LearnedPositions(cfg, name="position_embed")(positions)
  if cfg.position == "sinusoidal":
    return x + sinusoidal_embedding(positions, cfg.d_model).astype(x.dtype)
  return x
