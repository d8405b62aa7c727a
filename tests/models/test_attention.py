"""Tests for lm.models.attention: masks, kernels, MHA/GQA/MQA."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.models.attention import (MultiHeadAttention, causal_mask,
                                 einsum_attention, make_attention_mask,
                                 padding_mask, segment_mask)
from lm.models.config import make_model_config
from lm.parallel import axes

B, T, D, N, H = 2, 8, 32, 4, 8
SEGMENTS = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0],
                      [1, 1, 1, 1, 1, 1, 1, 1]])


def _rand(shape, seed=0):
  """float32 normal noise from numpy (jax.random would compile per shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _config(**overrides):
  return make_model_config("tiny", **{
      "vocab_size": 16, "d_model": D, "num_heads": N, **overrides})


# Masks.


def test_causal_mask():
  expected = np.tril(np.ones((3, 3), bool))
  mask = causal_mask(3)
  assert mask.shape == (1, 1, 3, 3) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(mask[0, 0], expected)


def test_segment_mask_blocks_other_segments_and_padding():
  mask = segment_mask(jnp.array([[1, 1, 2, 0]]))
  assert mask.shape == (1, 1, 4, 4)
  np.testing.assert_array_equal(mask[0, 0], np.array([
      [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool))
  cross = segment_mask(jnp.array([[1, 2]]), jnp.array([[2, 2, 1]]))
  np.testing.assert_array_equal(cross[0, 0], [[0, 0, 1], [1, 1, 0]])


def test_padding_mask():
  mask = padding_mask(jnp.array([[1, 1, 0]]))
  np.testing.assert_array_equal(mask[0, 0], np.array([
      [1, 1, 0], [1, 1, 0], [0, 0, 0]], bool))
  mask = padding_mask(jnp.array([[True, False]]), jnp.array([[1, 0, 1]]))
  np.testing.assert_array_equal(mask[0, 0], [[1, 0, 1], [0, 0, 0]])


def test_make_attention_mask():
  assert make_attention_mask(None, causal=False) is None
  np.testing.assert_array_equal(make_attention_mask(None, True, length=4),
                                causal_mask(4))
  mask = make_attention_mask(SEGMENTS, causal=True)
  assert mask.shape == (B, 1, T, T)
  np.testing.assert_array_equal(
      mask, segment_mask(SEGMENTS) & causal_mask(T))
  np.testing.assert_array_equal(make_attention_mask(SEGMENTS, False),
                                segment_mask(SEGMENTS))
  with pytest.raises(ValueError, match="length"):
    make_attention_mask(None, causal=True)


# Kernels.


def _numpy_attention(q, k, v, mask):
  """softmax(q k^T / sqrt(H)) v per head, kv heads repeated for groups."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  g = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(np.broadcast_to(mask, logits.shape), logits, -1e30)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bnts,bsnh->btnh", probs, v)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_einsum_attention_matches_numpy(kv_heads):
  q = _rand((B, T, N, H), 1)
  k, v = _rand((B, T, kv_heads, H), 2), _rand((B, T, kv_heads, H), 3)
  mask = np.asarray(make_attention_mask(SEGMENTS, causal=True))
  out = einsum_attention(q, k, v, mask)
  valid = np.asarray(SEGMENTS != 0)  # padded rows are arbitrary
  np.testing.assert_allclose(np.asarray(out)[valid],
                             _numpy_attention(q, k, v, mask)[valid],
                             rtol=1e-5, atol=1e-5)
  causal = einsum_attention(q, k, v, causal=True)
  np.testing.assert_allclose(
      causal, _numpy_attention(q, k, v, np.asarray(causal_mask(T))),
      rtol=1e-5, atol=1e-5)


def test_einsum_attention_per_head_mask():
  q, k, v = _rand((1, 4, N, H), 1), _rand((1, 4, 2, H), 2), _rand(
      (1, 4, 2, H), 3)
  mask = np.random.default_rng(9).random((1, N, 4, 4)) < 0.6
  mask[..., 0] = True
  mask = jnp.asarray(mask)
  np.testing.assert_allclose(einsum_attention(q, k, v, mask),
                             _numpy_attention(q, k, v, np.asarray(mask)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      einsum_attention(q, k, v, mask),
      jax.nn.dot_product_attention(q, k, v, mask=mask), rtol=1e-5, atol=1e-5)


# Module.


def _init(cfg, seed=0):
  module = MultiHeadAttention(cfg, causal=True)
  x = _rand((B, T, D), 10)
  positions = jnp.broadcast_to(jnp.arange(T), (B, T))
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), x, positions=positions))
  # Random params from numpy: compiling init costs seconds on a small CPU.
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), abstract)
  return variables, x, positions


def _apply(cfg, variables, x, positions, mask=None, causal=True, **kw):
  return jax.jit(
      lambda v, x, p, m: MultiHeadAttention(cfg, causal=causal).apply(
          v, x, positions=p, mask=m, **kw))(variables, x, positions, mask)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_module_xla_matches_einsum(kv_heads):
  cfg = _config(num_kv_heads=kv_heads, position="rope")
  variables, x, positions = _init(cfg)
  ref_cfg = dataclasses.replace(cfg, attention_impl="einsum")
  seg_mask = make_attention_mask(SEGMENTS, causal=True)
  for mask in (None, seg_mask):
    out = _apply(cfg, variables, x, positions, mask)
    ref = _apply(ref_cfg, variables, x, positions, mask)
    assert out.shape == (B, T, D)
    assert bool(jnp.all(jnp.isfinite(out)))  # padded row included
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_module_param_shapes_and_axes():
  cfg = _config(num_kv_heads=2)
  variables, _, _ = _init(cfg)
  params = variables["params"]
  expected = {
      "query": ((D, N, H), (axes.EMBED, axes.HEADS, axes.HEAD_DIM)),
      "key": ((D, 2, H), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM)),
      "value": ((D, 2, H), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM)),
      "out": ((N, H, D), (axes.HEADS, axes.HEAD_DIM, axes.EMBED)),
  }
  for name, (shape, names) in expected.items():
    kernel = params[name]["kernel"]
    assert isinstance(kernel, nn.Partitioned)
    assert kernel.value.shape == shape and kernel.names == names
  assert params["query"]["bias"].names == (axes.HEADS, axes.HEAD_DIM)
  assert params["out"]["bias"].names == (axes.EMBED,)
  no_bias, _, _ = _init(_config(use_bias=False))
  assert all(set(p) == {"kernel"} for p in no_bias["params"].values())


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa_cfg = _config(num_kv_heads=2)
  mha_cfg = _config(num_kv_heads=4)
  variables, x, positions = _init(gqa_cfg)
  p = nn.meta.unbox(variables["params"])
  mha = jax.tree.map(lambda a: a, p)
  for name in ("key", "value"):
    # Query head n reads kv head n // G: repeat each kv head G times.
    mha[name] = {k: jnp.repeat(a, 2, axis=-2) for k, a in p[name].items()}
  mask = make_attention_mask(SEGMENTS, causal=True)
  gqa_out = _apply(gqa_cfg, {"params": p}, x, positions, mask)
  mha_out = _apply(mha_cfg, {"params": mha}, x, positions, mask)
  np.testing.assert_allclose(gqa_out, mha_out, rtol=1e-5, atol=1e-5)


def test_module_is_causal_and_non_causal_sees_future():
  cfg = _config()
  variables, x, positions = _init(cfg)
  x2 = x.at[:, 5:].set(_rand((B, T - 5, D), 11))
  out, out2 = (_apply(cfg, variables, a, positions) for a in (x, x2))
  np.testing.assert_allclose(out[:, :5], out2[:, :5], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out[:, 5:], out2[:, 5:])
  bi, bi2 = (_apply(cfg, variables, a, positions, causal=False)
             for a in (x, x2))
  assert not np.allclose(bi[:, :5], bi2[:, :5])


def test_rope_attention_is_shift_invariant():
  cfg = _config(position="rope")
  variables, x, positions = _init(cfg)
  out = _apply(cfg, variables, x, positions)
  shifted = _apply(cfg, variables, x, positions + 37)
  np.testing.assert_allclose(out, shifted, rtol=1e-4, atol=1e-4)


def test_attention_dropout_only_when_not_deterministic():
  cfg = _config(attention_dropout=0.5)
  variables, x, positions = _init(cfg)
  plain = _apply(_config(), variables, x, positions)
  det = _apply(cfg, variables, x, positions, deterministic=True)
  np.testing.assert_allclose(det, plain, rtol=1e-6, atol=1e-6)
  drop = [_apply(cfg, variables, x, positions, deterministic=False,
                 rngs={"dropout": jax.random.key(s)}) for s in (1, 2)]
  assert bool(jnp.all(jnp.isfinite(drop[0])))
  assert not np.allclose(drop[0], plain)
  assert not np.allclose(drop[0], drop[1])
