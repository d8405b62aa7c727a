"""Tests for lm.models.rnn: the LSTM baseline and its recurrent-state cache."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm.errors import LmError
from lm.models import build_model
from lm.models.config import make_model_config
from lm.models.rnn import LstmLM, segment_starts
from lm.models.transformer import DecoderLM, count_params
from lm.parallel import axes
from lm.parallel.sharding import DEFAULT_RULES

B, T, V = 2, 12, 40
CFG = make_model_config("lstm_tiny", vocab_size=V)
D = CFG.d_model
ALL_AXES = {getattr(axes, name) for name in dir(axes) if name.isupper()}
TOL = dict(rtol=1e-5, atol=1e-5)


def _tokens(seed=0, shape=(B, T)):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, shape),
                     jnp.int32)


def _abstract(cfg, shape=(1, T), decode=False):
  return jax.eval_shape(
      lambda: LstmLM(cfg).init({"params": jax.random.key(0)},
                               jnp.zeros(shape, jnp.int32), decode=decode))


def _init(cfg, seed=0):
  """Unboxed random params (std 0.3, so every gate is far from saturation
  and from zero) without compiling init; the real init has its own test."""
  rng = np.random.default_rng(seed)
  return nn.meta.unbox(jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype),
      _abstract(cfg)["params"]))


def _empty_cache(cfg, batch):
  """What a decoder builds: zeros shaped like init(decode=True)['cache']."""
  return jax.tree.map(jnp.zeros_like, _abstract(cfg, (batch, 3), True)["cache"])


@functools.partial(jax.jit, static_argnames=("cfg", "deterministic"))
def _forward(cfg, params, tokens, arrays=None, rngs=None, deterministic=True):
  """`(logits, aux)` of a plain (non-decode) call; arrays: positions etc."""
  return LstmLM(cfg).apply({"params": params}, tokens, rngs=rngs,
                           deterministic=deterministic, **(arrays or {}))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _decode(cfg, params, cache, tokens, valid=None):
  """`(logits, new cache)` of a decode call continuing from `cache`."""
  positions = jnp.zeros_like(tokens)  # accepted and ignored
  (logits, _), mutated = LstmLM(cfg).apply(
      {"params": params, "cache": cache}, tokens, positions=positions,
      decode=True, valid=valid, mutable=["cache"])
  return logits, mutated["cache"]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm_lm(params, tokens, num_layers):
  """Step-by-step float64 reference: returns (hidden [B, T, D], logits)."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  emb = p["token_embed"]["embedding"]
  x = emb[np.asarray(tokens)]  # [B, T, D]
  batch, length, _ = x.shape
  for layer in range(num_layers):
    w = p[f"layers_{layer}"]
    h = np.zeros((batch, D))
    c = np.zeros((batch, D))
    out = []
    for t in range(length):
      z = (np.einsum("bd,dgh->bgh", x[:, t], w["input_kernel"])
           + np.einsum("bd,dgh->bgh", h, w["recurrent_kernel"]) + w["bias"])
      i, f, g, o = z[:, 0], z[:, 1], z[:, 2], z[:, 3]
      c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(c)
      out.append(h)
    x = np.stack(out, axis=1)
  return x, x @ emb.T


def test_real_init_shapes_and_finite_outputs():
  model = LstmLM(CFG)
  variables = jax.jit(
      lambda k: model.init({"params": k}, jnp.zeros((1, T), jnp.int32)))(
          jax.random.key(0))
  assert set(variables) == {"params"}  # a cache only with decode=True
  params = nn.meta.unbox(variables["params"])
  logits, aux = _forward(CFG, params, _tokens())
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert aux["hidden"].shape == (B, T, D)
  assert bool(jnp.all(jnp.isfinite(logits)))
  bias = np.asarray(params["layers_0"]["bias"])
  np.testing.assert_array_equal(bias[1], 1.0)  # forget gate
  np.testing.assert_array_equal(bias[[0, 2, 3]], 0.0)
  kernel = np.asarray(params["layers_1"]["recurrent_kernel"])
  assert 0.5 / np.sqrt(D) < kernel.std() < 1.5 / np.sqrt(D)  # fan-in scaling


def test_matches_numpy_reference_and_ignores_positions():
  params = _init(CFG)
  tokens = _tokens(1)
  logits, aux = _forward(CFG, params, tokens)
  hidden, expected = _numpy_lstm_lm(params, tokens, CFG.num_layers)
  np.testing.assert_allclose(aux["hidden"], hidden, **TOL)
  np.testing.assert_allclose(logits, expected, **TOL)
  shifted = jnp.broadcast_to(jnp.arange(T) + 7, (B, T))
  np.testing.assert_array_equal(
      _forward(CFG, params, tokens, {"positions": shifted})[0], logits)


def test_segment_starts():
  ids = jnp.array([[1, 1, 2, 2, 0, 0], [3, 3, 3, 3, 3, 3]])
  np.testing.assert_array_equal(segment_starts(ids), [
      [False, False, True, False, True, False], [False] * 6])


def test_packed_documents_match_separate_runs_and_padding_is_finite():
  params = _init(CFG)
  doc_a, doc_b, pad = _tokens(2, (1, 5)), _tokens(3, (1, 4)), 3
  row = jnp.concatenate([doc_a, doc_b, _tokens(4, (1, pad))], axis=1)
  tokens = jnp.concatenate([row, _tokens(5, (1, T))], axis=0)
  segment_ids = jnp.array([[1] * 5 + [2] * 4 + [0] * pad, [0] * T])
  logits, _ = _forward(CFG, params, tokens, {"segment_ids": segment_ids})
  assert bool(jnp.all(jnp.isfinite(logits)))  # padding, and an all-pad row
  alone_a = _forward(CFG, params, doc_a)[0]
  alone_b = _forward(CFG, params, doc_b)[0]
  np.testing.assert_allclose(logits[:1, :5], alone_a, **TOL)
  np.testing.assert_allclose(logits[:1, 5:9], alone_b, **TOL)
  unpacked = _forward(CFG, params, tokens)[0]  # without ids b sees a
  assert not np.allclose(unpacked[:1, 5:9], alone_b, atol=1e-3)


def test_cache_layout_and_batch_axis():
  variables = _abstract(CFG, (3, 5), decode=True)
  cache = variables["cache"]
  assert set(cache) == {f"layers_{i}" for i in range(CFG.num_layers)}
  for layer in cache.values():
    assert set(layer) == {"h", "c"}
    assert all(v.shape == (3, D) and v.dtype == jnp.float32
               for v in layer.values())
  real = jax.tree.map(lambda v: jnp.arange(3 * D, dtype=jnp.float32).reshape(3, D), cache)
  picked = LstmLM(CFG).reorder_cache(real, jnp.array([2, 2, 0]))
  for layer in picked.values():
    for v in layer.values():
      np.testing.assert_array_equal(v[0], np.arange(2 * D, 3 * D))
      np.testing.assert_array_equal(v[2], np.arange(D))


def test_prefill_then_single_token_decode_reproduces_forward():
  params = _init(CFG)
  tokens = _tokens(6)
  full = _forward(CFG, params, tokens)[0]
  prefill = 5
  logits, cache = _decode(CFG, params, _empty_cache(CFG, B),
                          tokens[:, :prefill])
  steps = [logits]
  for t in range(prefill, T):
    logits, cache = _decode(CFG, params, cache, tokens[:, t:t + 1])
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, **TOL)


def test_left_padded_decode_matches_unpadded():
  params = _init(CFG)
  long_prompt, short = _tokens(7, (1, 8)), _tokens(8, (1, 5))
  garbage = _tokens(9, (1, 3))  # left padding must not matter
  tokens = jnp.concatenate(
      [jnp.concatenate([garbage, short], axis=1), long_prompt], axis=0)
  valid = jnp.array([[False] * 3 + [True] * 5, [True] * 8])
  logits, cache = _decode(CFG, params, _empty_cache(CFG, 2), tokens, valid)
  np.testing.assert_allclose(logits[:1, 3:], _forward(CFG, params, short)[0],
                             **TOL)
  np.testing.assert_allclose(logits[1:], _forward(CFG, params, long_prompt)[0],
                             **TOL)
  _, short_cache = _decode(CFG, params, _empty_cache(CFG, 1), short)
  for layer, state in short_cache.items():
    for name in ("h", "c"):
      np.testing.assert_allclose(cache[layer][name][:1], state[name], **TOL)
  # The next token continues both rows as if they had never been padded.
  nxt = _tokens(10, (2, 1))
  step, _ = _decode(CFG, params, cache, nxt)
  np.testing.assert_allclose(
      step[0, 0], _forward(CFG, params, jnp.concatenate(
          [short, nxt[:1]], axis=1))[0][0, -1], **TOL)
  np.testing.assert_allclose(
      step[1, 0], _forward(CFG, params, jnp.concatenate(
          [long_prompt, nxt[1:]], axis=1))[0][0, -1], **TOL)


def test_decode_cache_of_another_batch_size_is_an_error():
  params = _init(CFG)
  with pytest.raises(LmError, match=r"decode cache.*\(3, 32\).*\(2, 32\)"):
    LstmLM(CFG).apply({"params": params, "cache": _empty_cache(CFG, 3)},
                      _tokens(), decode=True, mutable=["cache"])


def test_dropout_only_when_not_deterministic():
  cfg = dataclasses.replace(CFG, dropout=0.5)
  params = _init(cfg)
  tokens = _tokens(11)
  plain = _forward(cfg, params, tokens)[0]
  np.testing.assert_array_equal(plain, _forward(CFG, params, tokens)[0])
  rngs = {"dropout": jax.random.key(1)}
  dropped = _forward(cfg, params, tokens, rngs=rngs, deterministic=False)[0]
  again = _forward(cfg, params, tokens, rngs=rngs, deterministic=False)[0]
  other = _forward(cfg, params, tokens, rngs={"dropout": jax.random.key(2)},
                   deterministic=False)[0]
  assert not np.allclose(dropped, plain, atol=1e-3)
  assert not np.allclose(dropped, other, atol=1e-3)
  np.testing.assert_array_equal(dropped, again)


def _partitioned(cfg):
  params = _abstract(cfg)["params"]
  leaves = jax.tree_util.tree_leaves_with_path(
      params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return {jax.tree_util.keystr(p): leaf for p, leaf in leaves}


@pytest.mark.parametrize("tie", [True, False])
def test_every_param_has_logical_axes(tie):
  leaves = _partitioned(dataclasses.replace(CFG, tie_embeddings=tie))
  assert leaves
  for name, leaf in leaves.items():
    assert isinstance(leaf, nn.Partitioned), name
    assert len(leaf.names) == leaf.value.ndim, name
    named = [n for n in leaf.names if n is not None]
    assert set(named) <= ALL_AXES, name
    # Only the gate axis (size 4) is deliberately left unnamed.
    unnamed = [s for n, s in zip(leaf.names, leaf.value.shape) if n is None]
    assert unnamed in ([], [4]), name
  kernel = leaves["['layers_0']['input_kernel']"]
  assert kernel.names == (axes.EMBED, None, axes.MLP)
  assert kernel.value.shape == (D, 4, D)


def test_tied_versus_untied_trees():
  tied = _partitioned(CFG)
  untied = _partitioned(dataclasses.replace(CFG, tie_embeddings=False))
  assert set(untied) - set(tied) == {"['unembed']['kernel']"}
  assert untied["['unembed']['kernel']"].names == (axes.EMBED, axes.VOCAB)
  assert untied["['unembed']['kernel']"].value.shape == (D, V)
  assert tied["['token_embed']['embedding']"].names == (axes.VOCAB, axes.EMBED)
  n_tied = count_params(_abstract(CFG)["params"])
  assert n_tied == V * D + CFG.num_layers * (8 * D * D + 4 * D)
  assert count_params(_abstract(dataclasses.replace(
      CFG, tie_embeddings=False))["params"]) - n_tied == D * V


def test_build_model_picks_the_architecture():
  assert isinstance(build_model(CFG), LstmLM)
  transformer = make_model_config("tiny", vocab_size=V)
  assert type(build_model(transformer)) is DecoderLM
  with pytest.raises(LmError, match="model.arch='gru'"):
    build_model(dataclasses.replace(CFG, arch="gru"))


def test_tokens_must_be_two_dimensional():
  with pytest.raises(LmError, match=r"\[batch, length\].*\(12,\)"):
    _abstract(CFG, (T,))


def test_sharded_forward_matches_unsharded():
  model = LstmLM(CFG)
  tokens = _tokens(12, (4, T))

  def init(key):
    return model.init({"params": key}, jnp.zeros((1, T), jnp.int32))

  def forward(variables, tokens):
    return model.apply(variables, tokens)[0]

  key = jax.random.key(0)
  reference = jax.jit(forward)(jax.jit(init)(key), tokens)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
    shardings = nn.logical_to_mesh_sharding(
        nn.get_partition_spec(jax.eval_shape(init, key)), mesh, DEFAULT_RULES)
    variables = jax.jit(init, out_shardings=shardings)(key)
    kernel = variables["params"]["layers_0"]["recurrent_kernel"].value
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", None, "tensor")
    logits = jax.jit(forward)(variables, tokens)
  np.testing.assert_allclose(logits, reference, **TOL)


def test_bfloat16_compute_keeps_float32_logits():
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  params = _init(CFG)
  tokens = _tokens(13)
  logits, aux = _forward(cfg, params, tokens)
  assert logits.dtype == jnp.float32 and aux["hidden"].dtype == jnp.bfloat16
  np.testing.assert_allclose(logits, _forward(CFG, params, tokens)[0],
                             atol=0.1)


def test_a_few_adam_steps_learn_packed_periodic_text():
  """A tiny training loop: packed rows with padding, masked loss, AdamW."""
  model = LstmLM(CFG)
  period = np.array([3, 7, 1, 9, 4, 4, 2])
  rows = np.stack([np.roll(np.tile(period, 4), -k)[:T] for k in range(4)])
  segment_ids = np.array([[1] * 6 + [2] * 6, [1] * 12, [1] * 9 + [0] * 3,
                          [1] * 4 + [2] * 5 + [0] * 3])
  batch = {"inputs": jnp.asarray(rows), "segment_ids": jnp.asarray(segment_ids),
           "mask": jnp.asarray(
               (segment_ids > 0)
               & (np.roll(segment_ids, -1, axis=1) == segment_ids),
               jnp.float32)[:, :-1]}
  tx = optax.adamw(1e-2, weight_decay=0.1)

  def loss_fn(params):
    logits, _ = model.apply({"params": params}, batch["inputs"],
                            segment_ids=batch["segment_ids"])
    logp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(logp, batch["inputs"][:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * batch["mask"]) / jnp.sum(batch["mask"])

  @jax.jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g))
                                for g in jax.tree.leaves(grads)]))
    return optax.apply_updates(params, updates), opt_state, loss, finite

  params = _init(CFG)
  opt_state = tx.init(params)
  losses = []
  for _ in range(60):
    params, opt_state, loss, finite = train_step(params, opt_state)
    assert bool(finite)
    losses.append(float(loss))
  assert losses[0] > 2.0 and losses[-1] < 0.5 * losses[0], losses
