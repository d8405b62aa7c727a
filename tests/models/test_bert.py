"""Tests for lm.models.bert: BertModel, its heads and the BERT sizes."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.models import build_model
from lm.models.bert import BertModel
from lm.models.config import SIZES, make_model_config
from lm.models.transformer import count_params
from lm.parallel import axes

B, T, V = 2, 16, 64
CFG = make_model_config("bert_tiny", vocab_size=V, max_len=32)
ALL_AXES = {getattr(axes, name) for name in dir(axes) if name.isupper()}
BERT_SIZES = sorted(s for s in SIZES if SIZES[s].get("arch") == "bert")


def _tokens(seed=0, shape=(B, T)):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, shape),
                     jnp.int32)


def _abstract(cfg, length=T):
  return jax.eval_shape(
      lambda: BertModel(cfg).init({"params": jax.random.key(0)},
                                  jnp.zeros((1, length), jnp.int32)))


def _init(cfg, seed=0):
  """Unboxed random params without compiling init (threefry is slow to
  compile on a small CPU); norm scales near 1 so every layer matters."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return jnp.asarray(base + rng.normal(0.0, 0.1, s.shape), s.dtype)

  abstract = nn.meta.unbox(_abstract(cfg))
  return jax.tree_util.tree_map_with_path(draw, abstract)


@functools.partial(jax.jit, static_argnames=("cfg", "deterministic"))
def _run(cfg, variables, tokens, arrays, rngs=None, deterministic=True):
  """Jitted `BertModel(cfg).apply`; `arrays` holds the keyword inputs."""
  return BertModel(cfg).apply(variables, tokens, rngs=rngs,
                              deterministic=deterministic, **arrays)


def _forward(cfg, variables, tokens, **arrays):
  return _run(cfg, variables, tokens, arrays)


def _close(a, b, atol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                             atol=atol)


def test_real_init_creates_every_head_from_tokens_alone():
  model = BertModel(CFG)
  variables = jax.jit(
      lambda k: model.init({"params": k}, jnp.zeros((1, T), jnp.int32)))(
          jax.random.key(0))
  params = nn.meta.unbox(variables["params"])
  assert set(params) == {"token_embed", "position_embed", "type_embed",
                         "embed_norm", "encoder", "pooler", "mlm_head",
                         "nsp_head"}
  assert "final_norm" not in params["encoder"]  # post-LN
  assert params["type_embed"]["embedding"].shape == (2, CFG.d_model)
  assert not np.any(params["mlm_head"]["bias"])
  logits, aux = _forward(CFG, variables, _tokens())
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert float(jnp.abs(logits).max()) < 10.0


def test_shapes_and_gathered_logits_match_full_logits():
  variables = _init(CFG)
  tokens = _tokens()
  masked = jnp.array([[0, 3, 15], [7, 7, 2]], jnp.int32)
  full, aux = _forward(CFG, variables, tokens)
  gathered, aux_g = _forward(CFG, variables, tokens, masked_positions=masked)
  assert full.shape == (B, T, V) and full.dtype == jnp.float32
  assert gathered.shape == (B, 3, V) and gathered.dtype == jnp.float32
  assert aux["hidden"].shape == (B, T, CFG.d_model)
  assert aux["pooled"].shape == (B, CFG.d_model)
  assert aux["nsp_logits"].shape == (B, 2)
  assert aux["nsp_logits"].dtype == jnp.float32
  expected = np.take_along_axis(np.asarray(full),
                                np.asarray(masked)[:, :, None], axis=1)
  _close(gathered, expected)
  for key in aux:
    _close(aux_g[key], aux[key])


def test_attention_is_bidirectional():
  variables = _init(CFG)
  tokens = _tokens()
  changed = tokens.at[:, -1].set((tokens[:, -1] % (V - 1)) + 1)
  a = _forward(CFG, variables, tokens)[1]["hidden"]
  b = _forward(CFG, variables, changed)[1]["hidden"]
  assert np.all(np.abs(np.asarray(a[:, 0] - b[:, 0])).max(-1) > 1e-4)


def test_padding_leaves_real_positions_unchanged():
  variables = _init(CFG)
  lengths = (T, 11)
  pad = 6
  tokens = _tokens(1, (B, T + pad))
  segment_ids = jnp.asarray(
      [[1] * n + [0] * (T + pad - n) for n in lengths], jnp.int32)
  tokens = jnp.where(segment_ids > 0, tokens, 0)
  types = jnp.asarray([[0] * 5 + [1] * (T + pad - 5)] * B, jnp.int32)
  logits, aux = _forward(CFG, variables, tokens, segment_ids=segment_ids,
                         token_types=types)
  assert bool(jnp.all(jnp.isfinite(logits)))  # padded rows too
  for row, n in enumerate(lengths):
    alone_logits, alone = _forward(CFG, variables, tokens[row:row + 1, :n],
                                   token_types=types[row:row + 1, :n])
    _close(logits[row, :n], alone_logits[0])
    _close(aux["hidden"][row, :n], alone["hidden"][0])
    _close(aux["pooled"][row], alone["pooled"][0])
    _close(aux["nsp_logits"][row], alone["nsp_logits"][0])


def test_token_types_change_the_output():
  variables = _init(CFG)
  tokens = _tokens()
  types = jnp.broadcast_to((jnp.arange(T) >= T // 2).astype(jnp.int32),
                           (B, T))
  plain, aux = _forward(CFG, variables, tokens)
  zeros, aux_z = _forward(CFG, variables, tokens,
                          token_types=jnp.zeros((B, T), jnp.int32))
  _close(plain, zeros)  # the default is all segment A
  typed, aux_t = _forward(CFG, variables, tokens, token_types=types)
  assert not np.allclose(plain, typed, atol=1e-4)
  assert not np.allclose(aux["nsp_logits"], aux_t["nsp_logits"], atol=1e-5)


def _unstack(params, num_layers):
  """Scanned params {'layers': [L, ...]} -> {'layers_i': [...]}."""
  encoder = dict(params["encoder"])
  stacked = encoder.pop("layers")
  for i in range(num_layers):
    encoder[f"layers_{i}"] = jax.tree.map(lambda x: x[i], stacked)
  return {**params, "encoder": encoder}


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_scan_and_loop_give_identical_outputs(norm_position):
  cfg = dataclasses.replace(CFG, norm_position=norm_position)
  variables = _init(cfg)
  assert ("final_norm" in variables["params"]["encoder"]) == (
      norm_position == "pre")
  tokens = _tokens()
  scanned, aux = _forward(cfg, variables, tokens)
  assert bool(jnp.all(jnp.isfinite(scanned)))
  loop_cfg = dataclasses.replace(cfg, scan_layers=False)
  loop_params = _unstack(variables["params"], cfg.num_layers)
  expected = jax.tree.structure(nn.meta.unbox(_abstract(loop_cfg)["params"]))
  assert jax.tree.structure(loop_params) == expected
  looped, aux_l = _forward(loop_cfg, {"params": loop_params}, tokens)
  _close(scanned, looped)
  _close(aux["pooled"], aux_l["pooled"])


def _layer_norm(x, p, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


_erf = np.vectorize(math.erf)


def _gelu(x):
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _reference_bert(cfg, params, tokens, types, segment_ids):
  """HF `BertForPreTraining`'s forward in numpy (float64), unrolled layers."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  tokens, types = np.asarray(tokens), np.asarray(types)
  eps, n, h = cfg.norm_eps, cfg.num_heads, cfg.head_size
  pos = np.arange(tokens.shape[1])
  x = (p["token_embed"]["embedding"][tokens]
       + p["position_embed"]["embedding"][pos][None]
       + p["type_embed"]["embedding"][types])
  x = _layer_norm(x, p["embed_norm"], eps)
  valid = np.asarray(segment_ids) > 0
  bias = np.where(valid[:, None, None, :], 0.0, -1e9)  # [B, 1, 1, S]
  for i in range(cfg.num_layers):
    layer = p["encoder"][f"layers_{i}"]
    att = layer["attention"]
    q, k, v = (np.einsum("btd,dnh->bnth", x, att[name]["kernel"])
               + att[name]["bias"].reshape(1, n, 1, h)
               for name in ("query", "key", "value"))
    scores = np.einsum("bnth,bnsh->bnts", q, k) / math.sqrt(h) + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = np.einsum("bnts,bnsh->btnh", probs, v)
    out = np.einsum("btnh,nhd->btd", ctx, att["out"]["kernel"])
    x = _layer_norm(x + out + att["out"]["bias"], layer["attention_norm"], eps)
    mlp = layer["mlp"]
    inner = _gelu(x @ mlp["wi"]["kernel"] + mlp["wi"]["bias"])
    x = _layer_norm(x + inner @ mlp["wo"]["kernel"] + mlp["wo"]["bias"],
                    layer["mlp_norm"], eps)
  pooled = np.tanh(x[:, 0] @ p["pooler"]["dense"]["kernel"]
                   + p["pooler"]["dense"]["bias"])
  nsp = pooled @ p["nsp_head"]["dense"]["kernel"] + p["nsp_head"]["dense"][
      "bias"]
  head = p["mlm_head"]
  t = _gelu(x @ head["transform"]["kernel"] + head["transform"]["bias"])
  t = _layer_norm(t, head["transform_norm"], eps)
  logits = t @ p["token_embed"]["embedding"].T + head["bias"]
  return logits, x, pooled, nsp


def test_matches_a_numpy_reference_bert():
  """Post-LN order, exact GELU, eps 1e-12, tied decoder + bias, pooler, NSP."""
  cfg = dataclasses.replace(CFG, scan_layers=False)
  variables = _init(cfg, seed=3)
  tokens = _tokens(4)
  types = jnp.asarray([[0] * 6 + [1] * (T - 6), [0] * 9 + [1] * (T - 9)],
                      jnp.int32)
  segment_ids = jnp.asarray([[1] * T, [1] * 12 + [0] * (T - 12)], jnp.int32)
  logits, aux = _forward(cfg, variables, tokens, token_types=types,
                         segment_ids=segment_ids)
  ref_logits, ref_hidden, ref_pooled, ref_nsp = _reference_bert(
      cfg, variables["params"], tokens, types, segment_ids)
  real = np.asarray(segment_ids) > 0
  np.testing.assert_allclose(np.asarray(aux["hidden"])[real],
                             ref_hidden[real], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real],
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(aux["pooled"], ref_pooled, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(aux["nsp_logits"], ref_nsp, rtol=1e-4,
                             atol=1e-4)


def test_gelu_approximate_is_honoured():
  variables = _init(CFG)
  tokens = _tokens()
  exact = _forward(CFG, variables, tokens)[0]
  tanh = _forward(dataclasses.replace(CFG, gelu_approximate=True), variables,
                  tokens)[0]
  assert not np.allclose(exact, tanh, atol=1e-6)
  _close(exact, tanh, atol=0.05)  # the approximation is close


def test_dropout_only_when_not_deterministic():
  cfg = dataclasses.replace(CFG, dropout=0.3, attention_dropout=0.3)
  variables = _init(cfg)
  tokens = _tokens()
  plain = _forward(cfg, variables, tokens)[0]
  _close(plain, _forward(CFG, variables, tokens)[0])
  drop = [_run(cfg, variables, tokens, {}, {"dropout": jax.random.key(s)},
               deterministic=False)[0] for s in (0, 1)]
  assert bool(jnp.all(jnp.isfinite(drop[0])))
  assert not np.allclose(drop[0], plain)
  assert not np.allclose(drop[0], drop[1])


def _named_leaves(cfg):
  params = _abstract(cfg)["params"]
  leaves = jax.tree_util.tree_leaves_with_path(
      params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return {jax.tree_util.keystr(p): leaf for p, leaf in leaves}


# Dims deliberately unnamed: the token-type rows, the output dim of the D x D
# pooler / MLM transform (a name may not repeat within one parameter) and the
# two NSP classes.
_UNNAMED = ("['type_embed']", "['pooler']", "['transform']", "['nsp_head']")


@pytest.mark.parametrize("overrides", [{}, dict(scan_layers=False)])
def test_every_param_has_logical_axes(overrides):
  cfg = dataclasses.replace(CFG, **overrides)
  leaves = _named_leaves(cfg)
  assert leaves
  for name, leaf in leaves.items():
    assert isinstance(leaf, nn.Partitioned), name
    assert len(leaf.names) == leaf.value.ndim, name
    names = set(leaf.names)
    if any(part in name for part in _UNNAMED):
      names.discard(None)
    assert names <= ALL_AXES, name
    if cfg.scan_layers and "'layers'" in name:
      assert leaf.names[0] == axes.LAYERS, name
      assert leaf.value.shape[0] == cfg.num_layers, name
  assert leaves["['type_embed']['embedding']"].names == (None, axes.EMBED)
  assert leaves["['mlm_head']['bias']"].names == (axes.VOCAB,)


def test_untied_head_adds_one_kernel():
  tied = _named_leaves(CFG)
  untied = _named_leaves(dataclasses.replace(CFG, tie_embeddings=False))
  assert set(untied) - set(tied) == {"['mlm_head']['unembed']['kernel']"}
  kernel = untied["['mlm_head']['unembed']['kernel']"]
  assert kernel.names == (axes.EMBED, axes.VOCAB)
  assert kernel.value.shape == (CFG.d_model, V)


def test_bert_base_parameter_count():
  # HF BertModel (vocab 30522, 512 positions, 2 types) incl. pooler:
  embeddings = 30522 * 768 + 512 * 768 + 2 * 768 + 2 * 768
  layer = (4 * (768 * 768 + 768) + 2 * 768 + (768 * 3072 + 3072)
           + (3072 * 768 + 768) + 2 * 768)
  pooler = 768 * 768 + 768
  assert embeddings + 12 * layer + pooler == 109_482_240
  # + MLM transform, its LayerNorm, the decoder bias (tied kernel counted
  # once) and the NSP dense.
  heads = (768 * 768 + 768) + 2 * 768 + 30522 + (768 * 2 + 2)
  assert 109_482_240 + heads == 110_106_428

  cfg = make_model_config("bert_base")
  params = nn.meta.unbox(_abstract(cfg, length=8)["params"])
  assert count_params(params) == 110_106_428
  body = {k: v for k, v in params.items() if k not in ("mlm_head", "nsp_head")}
  assert count_params(body) == 109_482_240


def test_sequence_longer_than_max_len_is_an_error():
  with pytest.raises(LmError, match="model.max_len=32"):
    _abstract(CFG, length=33)


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_bad_type_vocab_size_is_an_error(value):
  with pytest.raises(LmError) as info:
    make_model_config("bert_tiny", vocab_size=V, type_vocab_size=value)
  message = str(info.value)
  assert f"model.type_vocab_size={value!r}" in message
  assert message.count(". ") == 0  # one sentence
  # Only BERT reads the field.
  make_model_config("tiny", vocab_size=V, type_vocab_size=value)


@pytest.mark.parametrize("size", BERT_SIZES)
def test_bert_sizes_build_bert_models(size):
  cfg = make_model_config(size, vocab_size=V)
  assert isinstance(build_model(cfg), BertModel)
  assert (cfg.arch, cfg.position, cfg.norm, cfg.norm_position, cfg.mlp) == (
      "bert", "learned", "layernorm", "post", "gelu")
  assert cfg.norm_eps == 1e-12 and not cfg.gelu_approximate
  assert cfg.use_bias and cfg.tie_embeddings
  assert cfg.type_vocab_size == 2 and cfg.max_len == 512
  assert cfg.mlp_size == 4 * cfg.d_model


def test_bert_size_table():
  expected = {"bert_tiny": (2, 128, 2, 0.0), "bert_mini": (4, 256, 4, 0.1),
              "bert_small": (4, 512, 8, 0.1), "bert_base": (12, 768, 12, 0.1)}
  assert set(BERT_SIZES) == set(expected)
  for size, (layers, width, heads, dropout) in expected.items():
    cfg = make_model_config(size, vocab_size=V)
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads) == (layers, width,
                                                             heads)
    assert cfg.dropout == cfg.attention_dropout == dropout
  assert make_model_config("bert_base").vocab_size == 30522
