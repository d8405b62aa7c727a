"""Tests for lm.models.positional: sinusoidal, learned and rotary."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.models.config import make_model_config
from lm.models.positional import (LearnedPositions, apply_rope,
                                  sinusoidal_embedding, sinusoidal_table)
from lm.parallel import axes


def _numpy_sinusoid(length, dim):
  table = np.zeros((length, dim))
  for pos in range(length):
    for j in range(dim):
      i = j // 2
      angle = pos / 10000 ** (2 * i / dim)
      table[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
  return table


@pytest.mark.parametrize("dim", [16, 7])
def test_sinusoidal_table_matches_formula(dim):
  table = sinusoidal_table(50, dim)
  assert table.shape == (50, dim) and table.dtype == jnp.float32
  np.testing.assert_allclose(table, _numpy_sinusoid(50, dim), atol=1e-5)


def test_sinusoidal_embedding_indexes_by_position_value():
  positions = jnp.array([[0, 1, 2, 0, 1], [4, 3, 2, 1, 0]])
  emb = sinusoidal_embedding(positions, 8)
  assert emb.shape == (2, 5, 8)
  np.testing.assert_allclose(emb, sinusoidal_table(5, 8)[positions],
                             atol=1e-6)


def test_learned_positions_table_and_lookup():
  cfg = make_model_config("tiny", vocab_size=64, max_len=16)
  module = LearnedPositions(cfg)
  positions = jnp.array([[0, 1, 2, 0, 1, 2]])
  variables = module.init(jax.random.key(0), positions)
  boxed = variables["params"]["embedding"]
  assert isinstance(boxed, nn.Partitioned)
  assert boxed.names == (axes.POSITION, axes.EMBED)
  assert boxed.value.shape == (16, cfg.d_model)
  out = module.apply(variables, positions)
  assert out.shape == (1, 6, cfg.d_model)
  np.testing.assert_array_equal(out[0, :3], out[0, 3:])
  np.testing.assert_array_equal(out[0], boxed.value[positions[0]])


def _rand(shape, seed=0):
  """float32 normal noise from numpy (jax.random would compile per shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def test_rope_preserves_norm_and_is_identity_at_zero():
  x = _rand((2, 5, 3, 8), 0)
  positions = jnp.array([[0, 1, 2, 3, 4], [7, 100, 3, 0, 2048]])
  out = apply_rope(x, positions)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1),
                             jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  zero = apply_rope(x, jnp.zeros((2, 5), jnp.int32))
  np.testing.assert_allclose(zero, x, atol=1e-6)


def test_rope_dot_product_depends_only_on_offset():
  q = _rand((1, 1, 1, 16), 1)
  k = _rand((1, 1, 1, 16), 2)

  def score(m, n):
    qm = apply_rope(q, jnp.array([[m]]))
    kn = apply_rope(k, jnp.array([[n]]))
    return float(jnp.sum(qm * kn))

  for m, n in [(5, 2), (9, 9), (0, 7)]:
    for shift in (1, 13, 300):
      np.testing.assert_allclose(score(m, n), score(m + shift, n + shift),
                                 rtol=1e-4, atol=1e-4)
  assert abs(score(5, 2) - score(6, 2)) > 1e-3


def test_rope_rotate_half_convention():
  # Pair (x_j, x_{j+H/2}) read as a complex number is multiplied by
  # exp(i * pos * theta^(-2j/H)).
  h, pos, theta = 8, 3, 10000.0
  x = np.asarray(_rand((1, 1, 1, h), 3))
  out = np.asarray(apply_rope(jnp.asarray(x), jnp.array([[pos]]), theta))
  z = x[..., : h // 2] + 1j * x[..., h // 2:]
  freq = theta ** (-np.arange(0, h, 2) / h)
  rotated = z * np.exp(1j * pos * freq)
  np.testing.assert_allclose(out[..., : h // 2], rotated.real, atol=1e-5)
  np.testing.assert_allclose(out[..., h // 2:], rotated.imag, atol=1e-5)


def test_rope_keeps_bfloat16():
  x = _rand((1, 4, 2, 8), 4).astype(jnp.bfloat16)
  assert apply_rope(x, jnp.arange(4)[None]).dtype == jnp.bfloat16
