"""Tests for lm.models.layers: einsum projection, norms, MLP, embedding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.models.config import make_model_config
from lm.models.layers import (Einsum, Embed, LayerNorm, Mlp, RMSNorm,
                              _matmul_split, make_norm, projection)
from lm.parallel import axes


def _rand(shape, seed=0):
  """float32 normal noise from numpy (jax.random would compile per shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _init(module, *args, seed=0):
  """Boxed random params with `module`'s structure, without compiling init.

  Compiling `init` (threefry) costs about a second per shape on a small CPU;
  `eval_shape` plus numpy keeps the suite fast.
  """
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *args))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), abstract)


def _apply(module, variables, *args, **kwargs):
  return jax.jit(lambda v, *a: module.apply(v, *a, **kwargs))(variables,
                                                              *args)


def _names(params):
  return jax.tree.map(lambda p: p.names, params,
                      is_leaf=lambda p: isinstance(p, nn.Partitioned))


def test_einsum_projection_with_bias():
  module = Einsum("BTD,DNH->BTNH", (8, 2, 3),
                  (axes.EMBED, axes.HEADS, axes.HEAD_DIM), bias_dims=2,
                  init_std=0.5)
  x = _rand((2, 5, 8))
  variables = module.init(jax.random.key(1), x)
  assert _names(variables["params"]) == {
      "kernel": (axes.EMBED, axes.HEADS, axes.HEAD_DIM),
      "bias": (axes.HEADS, axes.HEAD_DIM)}
  params = nn.meta.unbox(variables["params"])
  assert params["bias"].shape == (2, 3)
  assert not np.any(params["bias"])
  assert float(jnp.std(params["kernel"])) == pytest.approx(0.5, rel=0.3)
  params = {"kernel": params["kernel"], "bias": _rand((2, 3), 2)}
  y = _apply(module, {"params": params}, x)
  expected = np.einsum("btd,dnh->btnh", x, params["kernel"]) + params["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  assert y.shape == (2, 5, 2, 3)


def test_einsum_without_bias_and_dtypes():
  module = Einsum("BTD,DF->BTF", (4, 6), (axes.EMBED, axes.MLP),
                  dtype=jnp.bfloat16, out_dtype=jnp.float32)
  variables = _init(module, jnp.ones((1, 2, 4)))
  assert set(variables["params"]) == {"kernel"}
  assert variables["params"]["kernel"].value.dtype == jnp.float32
  assert _apply(module, variables, jnp.ones((1, 2, 4))).dtype == jnp.float32
  with pytest.raises(ValueError, match="rank"):
    _init(Einsum("BTD,DF->BTF", (4, 6), (axes.EMBED,)), jnp.ones((1, 2, 4)))


def test_matmul_split_finds_matmuls_over_the_last_dims():
  assert _matmul_split("BTD,DF->BTF") == (2, 1)
  assert _matmul_split("BTD,DNH->BTNH") == (2, 1)
  assert _matmul_split("BTNH,NHD->BTD") == (2, 2)
  assert _matmul_split("BTD, DF -> BTF") == (2, 1)
  # Not a matmul over x's trailing dims in order: left to einsum.
  assert _matmul_split("BTD,DKH->BKTH") is None
  assert _matmul_split("BTNH,HND->BTD") is None
  assert _matmul_split("BTD,VD->BTV") is None
  assert _matmul_split("BTKGH,BSKH->BKGTS") is None


@pytest.mark.parametrize("equation,x_shape,k_shape", [
    ("BTD,DF->BTF", (2, 3, 4), (4, 5)),
    ("BTD,DNH->BTNH", (2, 3, 4), (4, 2, 3)),
    ("BTNH,NHD->BTD", (2, 3, 2, 3), (2, 3, 4)),
    ("BTD,DKH->BKTH", (2, 3, 4), (4, 2, 3)),
])
def test_projection_equals_einsum_with_gradients(equation, x_shape, k_shape):
  x, k = _rand(x_shape, 1), _rand(k_shape, 2)
  np.testing.assert_allclose(projection(equation, x, k),
                             jnp.einsum(equation, x, k), rtol=1e-5, atol=1e-6)
  c = _rand(jnp.einsum(equation, x, k).shape, 3)
  grads = jax.grad(lambda x, k: jnp.sum(projection(equation, x, k) * c),
                   argnums=(0, 1))(x, k)
  want = jax.grad(lambda x, k: jnp.sum(jnp.einsum(equation, x, k) * c),
                  argnums=(0, 1))(x, k)
  for got, ref in zip(grads, want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  y = projection(equation, x.astype(jnp.bfloat16), k.astype(jnp.bfloat16),
                 jnp.float32)
  assert y.dtype == jnp.float32


def _numpy_layernorm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_layernorm_matches_numpy():
  x = np.asarray(_rand((2, 3, 16))) * 3 + 1
  module = LayerNorm(eps=1e-5)
  variables = _init(module, x)
  assert _names(variables["params"]) == {"scale": (axes.NORM,),
                                         "bias": (axes.NORM,)}
  scale, bias = np.asarray(_rand((16,), 1)), np.asarray(_rand((16,), 2))
  y = _apply(module, {"params": {"scale": scale, "bias": bias}}, x)
  np.testing.assert_allclose(y, _numpy_layernorm(x, scale, bias, 1e-5),
                             rtol=1e-5, atol=1e-5)


def test_rmsnorm_matches_numpy():
  x = np.asarray(_rand((2, 3, 16))) * 3 + 1
  module = RMSNorm(eps=1e-6)
  variables = _init(module, x)
  assert _names(variables["params"]) == {"scale": (axes.NORM,)}
  scale = np.asarray(_rand((16,), 1))
  y = _apply(module, {"params": {"scale": scale}}, x)
  expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * scale
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_norms_compute_in_float32_and_return_compute_dtype():
  x = (_rand((1, 2, 32)) * 100 + 1000).astype(jnp.bfloat16)
  for module in (LayerNorm(dtype=jnp.bfloat16), RMSNorm(dtype=jnp.bfloat16)):
    variables = _init(module, x)
    y = _apply(module, variables, x)
    assert y.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))


def test_make_norm_follows_config():
  cfg = make_model_config("tiny", vocab_size=8, norm="rmsnorm")
  assert isinstance(make_norm(cfg), RMSNorm)
  cfg = make_model_config("tiny", vocab_size=8, use_bias=False)
  norm = make_norm(cfg)
  assert isinstance(norm, LayerNorm) and not norm.use_bias


def test_gelu_mlp_matches_manual():
  cfg = make_model_config("tiny", vocab_size=8, d_model=8, num_heads=2,
                          d_ff=16)
  x = _rand((2, 3, 8))
  module = Mlp(cfg)
  variables = _init(module, x)
  assert _names(variables["params"]) == {
      "wi": {"kernel": (axes.EMBED, axes.MLP), "bias": (axes.MLP,)},
      "wo": {"kernel": (axes.MLP, axes.EMBED), "bias": (axes.EMBED,)}}
  p = nn.meta.unbox(variables["params"])
  p["wi"]["bias"] = _rand((16,), 5)
  p["wo"]["bias"] = _rand((8,), 6)
  y = _apply(module, {"params": p}, x)
  h = jax.nn.gelu(x @ p["wi"]["kernel"] + p["wi"]["bias"], approximate=True)
  np.testing.assert_allclose(y, h @ p["wo"]["kernel"] + p["wo"]["bias"],
                             rtol=1e-5, atol=1e-5)


def test_swiglu_mlp_matches_manual():
  cfg = make_model_config("tiny", vocab_size=8, d_model=8, num_heads=2,
                          d_ff=16, mlp="swiglu", use_bias=False)
  x = _rand((2, 3, 8))
  module = Mlp(cfg)
  variables = _init(module, x)
  p = nn.meta.unbox(variables["params"])
  assert set(p) == {"wi_gate", "wi_up", "wo"}
  assert all(set(v) == {"kernel"} for v in p.values())
  y = _apply(module, {"params": p}, x)
  h = jax.nn.silu(x @ p["wi_gate"]["kernel"]) * (x @ p["wi_up"]["kernel"])
  np.testing.assert_allclose(y, h @ p["wo"]["kernel"], rtol=1e-5, atol=1e-5)


def test_embed_lookup_and_tied_attend():
  cfg = make_model_config("tiny", vocab_size=10, d_model=8, num_heads=2,
                          dtype="bfloat16")
  tokens = jnp.array([[1, 2, 9], [0, 0, 3]])
  module = Embed(cfg)
  variables = _init(module, tokens)
  assert _names(variables["params"]) == {"embedding": (axes.VOCAB,
                                                       axes.EMBED)}
  table = variables["params"]["embedding"].value
  assert table.shape == (10, 8) and table.dtype == jnp.float32
  x = _apply(module, variables, tokens)
  assert x.dtype == jnp.bfloat16
  np.testing.assert_array_equal(x, table[tokens].astype(jnp.bfloat16))
  logits = _apply(module, variables, x, method=Embed.attend)
  assert logits.shape == (2, 3, 10) and logits.dtype == jnp.float32
  expected = (x.astype(jnp.float32)
              @ table.astype(jnp.bfloat16).astype(jnp.float32).T)
  np.testing.assert_allclose(logits, expected, rtol=1e-2, atol=1e-2)


def test_embed_out_of_range_token_is_nan_not_clamped():
  cfg = make_model_config("tiny", vocab_size=10, d_model=8, num_heads=2)
  module = Embed(cfg)
  tokens = jnp.array([[3, 10]])
  x = _apply(module, _init(module, tokens), tokens)
  assert bool(jnp.all(jnp.isfinite(x[0, 0])))
  assert bool(jnp.all(jnp.isnan(x[0, 1])))
