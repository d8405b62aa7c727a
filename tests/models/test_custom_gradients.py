"""The hand-written backward passes (norms, softmax attention) against
autodiff of the plain formulas, including padding rows and grouped heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.models import attention, layers


def _reference_layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  y = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
  return y * scale + (0.0 if bias is None else bias)


def _reference_rms_norm(x, scale, eps):
  return x / jnp.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * scale


def _close(a, b, tol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol,
                               atol=tol)


@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_gradient_equals_autodiff(with_bias):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(2.0, 3.0, (3, 5, 16)), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.5, 16), jnp.float32)
  bias = jnp.asarray(rng.normal(size=16), jnp.float32) if with_bias else None
  w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  ours = jax.grad(lambda *a: jnp.sum(w * layers.layer_norm(*a, 1e-5)),
                  argnums=(0, 1, 2) if with_bias else (0, 1))
  ref = jax.grad(lambda *a: jnp.sum(w * _reference_layer_norm(*a, 1e-5)),
                 argnums=(0, 1, 2) if with_bias else (0, 1))
  _close(layers.layer_norm(x, scale, bias, 1e-5),
         _reference_layer_norm(x, scale, bias, 1e-5))
  _close(ours(x, scale, bias), ref(x, scale, bias))


def test_rms_norm_gradient_equals_autodiff():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 7, 8)), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.5, 8), jnp.float32)
  w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  ours = jax.grad(lambda x, s: jnp.sum(w * layers.rms_norm(x, s, 1e-6)), (0, 1))
  ref = jax.grad(lambda x, s: jnp.sum(w * _reference_rms_norm(x, s, 1e-6)),
                 (0, 1))
  _close(ours(x, scale), ref(x, scale))


@pytest.mark.parametrize("kv_heads,mask_heads", [(4, 1), (2, 1), (1, 1),
                                                 (4, 4)])
def test_softmax_attention_gradient_equals_autodiff(kv_heads, mask_heads):
  rng = np.random.default_rng(2)
  b, t, n, h = 2, 6, 4, 8
  q = jnp.asarray(rng.normal(size=(b, t, n, h)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, t, kv_heads, h)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, t, kv_heads, h)), jnp.float32)
  segments = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
  mask = attention.make_attention_mask(segments, causal=True)  # padding rows
  mask = jnp.broadcast_to(mask, (b, mask_heads, t, t))
  w = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  scale = 1.0 / np.sqrt(h)

  def ours(q, k, v):
    return jnp.sum(w * attention.softmax_attention(q, k, v, mask, scale))

  def ref(q, k, v):
    return jnp.sum(w * attention.einsum_attention(q, k, v, mask))
  _close(ours(q, k, v), ref(q, k, v))
  _close(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v))
