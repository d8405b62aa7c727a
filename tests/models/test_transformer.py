"""Tests for lm.models.transformer: the block stack and DecoderLM."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.generation.decode import unrolled
from lm.models.config import make_model_config
from lm.models.transformer import DecoderLM, count_params
from lm.parallel import axes

B, T, V = 2, 16, 64
CFG = make_model_config("tiny", vocab_size=V, max_len=32)
ALL_AXES = {getattr(axes, name) for name in dir(axes) if name.isupper()}


def _tokens(seed=0, shape=(B, T)):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, shape),
                     jnp.int32)


def _abstract(cfg, length=T):
  return jax.eval_shape(
      lambda: DecoderLM(cfg).init({"params": jax.random.key(0)},
                                  jnp.zeros((1, length), jnp.int32)))


def _init(cfg, seed=0):
  """Boxed random params without compiling init (threefry is slow to compile
  on a small CPU); the real init is exercised by the mesh test."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape), s.dtype),
      _abstract(cfg))


def _forward(cfg, variables, tokens, *, deterministic=True, rngs=None,
             **arrays):
  """Jitted `DecoderLM(cfg).apply`; `arrays` are positions / segment_ids."""

  @jax.jit
  def run(variables, tokens, arrays, rngs):
    return DecoderLM(cfg).apply(variables, tokens, rngs=rngs,
                                deterministic=deterministic, **arrays)

  return run(variables, tokens, arrays, rngs)


def _logits(cfg, variables, tokens, **kwargs):
  return _forward(cfg, variables, tokens, **kwargs)[0]


def test_real_init_and_forward_shapes():
  model = DecoderLM(CFG)
  variables = jax.jit(
      lambda k: model.init({"params": k}, jnp.zeros((1, T), jnp.int32)))(
          jax.random.key(0))
  logits, aux = _forward(CFG, variables, _tokens())
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert aux["hidden"].shape == (B, T, CFG.d_model)
  assert bool(jnp.all(jnp.isfinite(logits)))
  # GPT-2 init: small logits, biases zero, norms one.
  params = nn.meta.unbox(variables["params"])
  assert float(jnp.abs(logits).max()) < 5.0
  assert not np.any(params["decoder"]["layers"]["mlp"]["wi"]["bias"])
  np.testing.assert_array_equal(params["decoder"]["final_norm"]["scale"], 1)


def _check_axes(cfg):
  params = _abstract(cfg)["params"]
  leaves = jax.tree_util.tree_leaves_with_path(
      params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.Partitioned), name
    assert len(leaf.names) == leaf.value.ndim, name
    assert set(leaf.names) <= ALL_AXES, name
    if cfg.scan_layers and "'layers'" in name:
      assert leaf.names[0] == axes.LAYERS, name
      assert leaf.value.shape[0] == cfg.num_layers, name
  return {jax.tree_util.keystr(p): leaf for p, leaf in leaves}


@pytest.mark.parametrize("overrides", [
    {},
    dict(scan_layers=False),
    dict(tie_embeddings=False, position="rope", mlp="swiglu",
         norm="rmsnorm", num_kv_heads=2, remat="full"),
])
def test_every_param_has_logical_axes(overrides):
  _check_axes(dataclasses.replace(CFG, **overrides))


def test_tied_versus_untied_trees():
  tied = _check_axes(CFG)
  untied = _check_axes(dataclasses.replace(CFG, tie_embeddings=False))
  extra = set(untied) - set(tied)
  assert extra == {"['unembed']['kernel']"}
  assert untied["['unembed']['kernel']"].names == (axes.EMBED, axes.VOCAB)
  assert untied["['unembed']['kernel']"].value.shape == (CFG.d_model, V)
  assert tied["['token_embed']['embedding']"].names == (axes.VOCAB,
                                                        axes.EMBED)
  assert (count_params(_abstract(dataclasses.replace(
      CFG, tie_embeddings=False))) - count_params(_abstract(CFG))
          == CFG.d_model * V)
  rope = _check_axes(dataclasses.replace(CFG, position="rope"))
  assert "['position_embed']['embedding']" in tied
  assert not any("position_embed" in k for k in rope)


def test_count_params_matches_manual_sum():
  variables = _init(CFG)
  total = sum(np.size(x) for x in jax.tree.leaves(nn.meta.unbox(variables)))
  assert count_params(variables) == total == count_params(
      nn.meta.unbox(variables))


def test_causality():
  variables = _init(CFG)
  tokens = _tokens(0)
  changed = tokens.at[:, 9:].set(_tokens(1)[:, 9:])
  a, b = _logits(CFG, variables, tokens), _logits(CFG, variables, changed)
  np.testing.assert_allclose(a[:, :9], b[:, :9], rtol=1e-5, atol=1e-5)
  assert not np.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_packed_documents_match_separate_runs(position):
  cfg = dataclasses.replace(CFG, position=position)
  variables = _init(cfg)
  doc_a, doc_b = _tokens(2, (1, 5)), _tokens(3, (1, 7))
  pad = 4
  packed = jnp.concatenate([doc_a, doc_b, jnp.zeros((1, pad), jnp.int32)], 1)
  segment_ids = jnp.array([[1] * 5 + [2] * 7 + [0] * pad])
  positions = jnp.array([list(range(5)) + list(range(7)) + [0] * pad])
  logits = _logits(cfg, variables, packed, positions=positions,
                   segment_ids=segment_ids)
  assert bool(jnp.all(jnp.isfinite(logits)))  # padded rows too
  alone_a = _logits(cfg, variables, doc_a)
  alone_b = _logits(cfg, variables, doc_b)
  np.testing.assert_allclose(logits[:, :5], alone_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[:, 5:12], alone_b, rtol=1e-5, atol=1e-5)


def test_positions_default_to_arange_and_index_the_table():
  variables = _init(CFG)
  tokens = _tokens()
  default = _logits(CFG, variables, tokens)
  arange = jnp.broadcast_to(jnp.arange(T), (B, T))
  np.testing.assert_array_equal(
      default, _logits(CFG, variables, tokens, positions=arange))
  shifted = _logits(CFG, variables, tokens, positions=arange + 3)
  assert not np.allclose(default, shifted)


def test_sequence_longer_than_max_len_is_an_error():
  with pytest.raises(LmError, match="model.max_len=32"):
    _abstract(CFG, length=33)


def test_scan_and_loop_give_identical_outputs():
  variables = nn.meta.unbox(_init(CFG))
  tokens = _tokens()
  scanned = _logits(CFG, variables, tokens)
  loop_cfg = dataclasses.replace(CFG, scan_layers=False)
  # the re-layout decoding uses (lm.generation.decode.unrolled)
  loop_model, per_layer = unrolled(DecoderLM(CFG))
  assert loop_model.config == loop_cfg
  loop_params = per_layer(variables["params"])
  expected = jax.tree.structure(nn.meta.unbox(_abstract(loop_cfg)["params"]))
  assert jax.tree.structure(loop_params) == expected
  looped = _logits(loop_cfg, {"params": loop_params}, tokens)
  np.testing.assert_allclose(scanned, looped, rtol=1e-5, atol=1e-5)


def test_an_unrolled_scan_gives_the_same_outputs_and_gradients():
  assert CFG.num_layers <= CFG.scan_unroll     # the default unrolls CFG
  rolled = dataclasses.replace(CFG, scan_unroll=0)
  variables = nn.meta.unbox(_init(CFG))
  tokens = _tokens()
  assert (jax.tree.structure(nn.meta.unbox(_abstract(rolled)["params"]))
          == jax.tree.structure(variables["params"]))
  want_loss, want_grads = _loss_and_grads(rolled, variables, tokens)
  loss, grads = _loss_and_grads(CFG, variables, tokens)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_a_negative_scan_unroll_is_one_sentence():
  with pytest.raises(LmError, match=r"model.scan_unroll=-1 must be 0"):
    dataclasses.replace(CFG, scan_unroll=-1).validate()


def _loss_and_grads(cfg, variables, tokens):
  def loss(params):
    logits, _ = DecoderLM(cfg).apply({"params": params}, tokens)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None],
                                         axis=-1))
  return jax.jit(jax.value_and_grad(loss))(variables["params"])


@pytest.mark.parametrize("remat, scan", [("full", True), ("dots", True),
                                         ("full", False)])
def test_remat_keeps_outputs_and_grads(remat, scan):
  base = dataclasses.replace(CFG, scan_layers=scan)
  variables = nn.meta.unbox(_init(base))
  tokens = _tokens()
  loss, grads = _loss_and_grads(base, variables, tokens)
  loss_r, grads_r = _loss_and_grads(
      dataclasses.replace(base, remat=remat), variables, tokens)
  np.testing.assert_allclose(loss, loss_r, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               grads, grads_r)
  assert float(_global_norm(grads)) > 0


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("overrides", [
    dict(norm_position="post", norm="rmsnorm"),
    dict(mlp="swiglu", position="rope", num_kv_heads=2, use_bias=False),
    dict(position="sinusoidal", num_kv_heads=1, tie_embeddings=False),
    dict(position="none", attention_impl="einsum", norm_position="post"),
    dict(dtype="bfloat16", position="rope", mlp="swiglu"),
])
def test_variants_run_and_are_finite(overrides):
  cfg = dataclasses.replace(CFG, **overrides).validate()
  variables = _init(cfg)
  params = variables["params"]
  assert ("final_norm" in params["decoder"]) == (cfg.norm_position == "pre")
  logits, aux = _forward(cfg, variables, _tokens())
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert aux["hidden"].dtype == cfg.compute_dtype
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_dropout_only_when_not_deterministic():
  cfg = dataclasses.replace(CFG, dropout=0.3, attention_dropout=0.3)
  variables = _init(cfg)
  tokens = _tokens()
  plain = _logits(CFG, variables, tokens)
  np.testing.assert_allclose(_logits(cfg, variables, tokens), plain,
                             rtol=1e-6, atol=1e-6)
  drop = [_logits(cfg, variables, tokens, deterministic=False,
                  rngs={"dropout": jax.random.key(s)}) for s in (0, 1)]
  assert bool(jnp.all(jnp.isfinite(drop[0])))
  assert not np.allclose(drop[0], plain)
  assert not np.allclose(drop[0], drop[1])


RULES = [
    (axes.ACT_BATCH, ("data", "fsdp")),
    (axes.EMBED, "fsdp"),
    (axes.HEADS, "tensor"), (axes.KV_HEADS, "tensor"), (axes.MLP, "tensor"),
    (axes.VOCAB, "tensor"), (axes.ACT_HEADS, "tensor"),
    (axes.ACT_MLP, "tensor"), (axes.ACT_VOCAB, "tensor"),
    (axes.LAYERS, None), (axes.POSITION, None), (axes.NORM, None),
    (axes.HEAD_DIM, None), (axes.ACT_LENGTH, None), (axes.ACT_EMBED, None),
    (axes.ACT_KV_HEADS, None), (axes.ACT_HEAD_DIM, None),
]


def test_sharded_forward_matches_unsharded():
  cfg = dataclasses.replace(CFG, num_kv_heads=2)
  model = DecoderLM(cfg)
  tokens = _tokens(5, (4, T))

  def init(key):
    return model.init({"params": key}, jnp.zeros((1, T), jnp.int32))

  def forward(variables, tokens):
    return model.apply(variables, tokens)[0]

  key = jax.random.key(0)
  reference = jax.jit(forward)(jax.jit(init)(key), tokens)

  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    abstract = jax.eval_shape(init, key)
    shardings = nn.logical_to_mesh_sharding(
        nn.get_partition_spec(abstract), mesh, RULES)
    variables = jax.jit(init, out_shardings=shardings)(key)
    embedding = variables["params"]["token_embed"]["embedding"].value
    assert embedding.sharding.spec == jax.sharding.PartitionSpec(
        "tensor", "fsdp")
    query = variables["params"]["decoder"]["layers"]["attention"]["query"]
    assert query["kernel"].value.sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor", None)
    logits = jax.jit(forward)(variables, tokens)
  np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
