"""TaskModel and TaskHead: output shapes per task and pooling, parameter
layout, pooling checks and a frozen backbone's zero gradients."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.models.config import make_model_config
from lm.models.heads import TaskHead
from lm.models.task_model import TaskModel, check_pooling

B, T, V, C = 2, 8, 64, 3
# Looped layers: running a scanned stack unjitted costs seconds on CPU.
BERT = make_model_config("bert_tiny", vocab_size=V, max_len=16,
                         scan_layers=False)
GPT = make_model_config("tiny", vocab_size=V, max_len=16, scan_layers=False)
LSTM = make_model_config("lstm_tiny", vocab_size=V)


def _inputs():
  tokens = np.random.default_rng(0).integers(1, V, (B, T)).astype(np.int32)
  mask = np.ones((B, T), np.int32)
  mask[1, 5:] = 0
  return jnp.asarray(tokens * mask), jnp.asarray(mask)


def _shapes(model):
  """`(param shapes, output shapes)` without running anything."""
  tokens, mask = _inputs()
  types = jnp.zeros_like(tokens)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), tokens, token_types=types, segment_ids=mask))
  out = jax.eval_shape(lambda p: model.apply(
      p, tokens, token_types=types, segment_ids=mask), params)
  return nn.meta.unbox(params)["params"], out


def _paths(tree):
  return {"/".join(str(k.key) for k in p): leaf.shape for p, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


def _random_params(model, seed=0):
  """Parameters of `model` drawn with numpy (no init to compile): N(0, 0.1),
  norm scales 1."""
  shapes, _ = _shapes(model)
  rng = np.random.default_rng(seed)
  def fill(path, s):
    if str(path[-1].key) == "scale":
      return jnp.ones(s.shape, s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# --- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("cfg,pooling", [
    (BERT, "pooler"), (BERT, "cls"), (BERT, "mean"), (BERT, "last"),
    (GPT, "last"), (GPT, "mean"), (LSTM, "last"), (LSTM, "mean")])
def test_classification_logits_shape(cfg, pooling):
  _, out = _shapes(TaskModel(cfg, head="sequence", num_labels=C,
                             pooling=pooling))
  assert set(out) == {"logits"}
  assert out["logits"].shape == (B, C) and out["logits"].dtype == jnp.float32


@pytest.mark.parametrize("cfg", [BERT, GPT, LSTM])
def test_tagging_and_qa_shapes(cfg):
  _, out = _shapes(TaskModel(cfg, head="token", num_labels=5))
  assert set(out) == {"logits"} and out["logits"].shape == (B, T, 5)
  _, out = _shapes(TaskModel(cfg, head="span", num_labels=2))
  assert set(out) == {"start_logits", "end_logits"}
  assert out["start_logits"].shape == out["end_logits"].shape == (B, T)
  assert out["start_logits"].dtype == jnp.float32


def test_task_head_shapes():
  head = TaskHead(GPT, 4)
  for shape, want in (((B, GPT.d_model), (B, 4)),
                      ((B, T, GPT.d_model), (B, T, 4))):
    x = jnp.ones(shape, jnp.float32)
    params = jax.eval_shape(lambda: head.init(jax.random.key(0), x))
    assert _paths(nn.meta.unbox(params)["params"]) == {
        "dense/kernel": (GPT.d_model, 4), "dense/bias": (4,)}
    assert jax.eval_shape(lambda p: head.apply(p, x), params).shape == want


def test_task_head_is_an_affine_map():
  head = TaskHead(GPT, 3)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, GPT.d_model)),
                  jnp.float32)
  kernel = np.random.default_rng(2).normal(size=(GPT.d_model, 3))
  bias = np.array([0.5, -1.0, 2.0])
  params = {"params": {"dense": {"kernel": jnp.asarray(kernel, jnp.float32),
                                 "bias": jnp.asarray(bias, jnp.float32)}}}
  got = head.apply(params, x)
  np.testing.assert_allclose(got, np.asarray(x) @ kernel + bias, rtol=1e-5,
                             atol=1e-5)


# --- parameter tree -----------------------------------------------------------


def test_parameter_tree_bert_with_and_without_pooler():
  d = BERT.d_model
  params, _ = _shapes(TaskModel(BERT, head="sequence", num_labels=C,
                                pooling="pooler"))
  assert set(params) == {"backbone", "head"}
  assert _paths(params["head"]) == {"dense/kernel": (d, C), "dense/bias": (C,)}
  assert _paths(params["backbone"]["pooler"]) == {
      "dense/kernel": (d, d), "dense/bias": (d,)}
  assert {"token_embed", "encoder"} <= set(params["backbone"])
  for pooling in ("cls", "mean", "last"):
    params, _ = _shapes(TaskModel(BERT, head="sequence", num_labels=C,
                                  pooling=pooling))
    assert "pooler" not in params["backbone"]
  for head, width in (("token", 7), ("span", 2)):
    # The default pooling ("pooler") only matters for classification.
    params, _ = _shapes(TaskModel(BERT, head=head, num_labels=7))
    assert "pooler" not in params["backbone"]
    assert _paths(params["head"]) == {"dense/kernel": (d, width),
                                      "dense/bias": (width,)}


def test_parameter_tree_backbone_matches_the_bare_model():
  from lm.models import build_model
  from lm.models.bert import BertModel
  tokens, mask = _inputs()
  for cfg, bare, pooling in ((GPT, build_model(GPT), "last"),
                             (LSTM, build_model(LSTM), "mean"),
                             (BERT, BertModel(BERT, heads=False), "mean")):
    params, _ = _shapes(TaskModel(cfg, head="sequence", num_labels=C,
                                  pooling=pooling))
    want = jax.eval_shape(lambda m=bare: m.init(jax.random.key(0), tokens,
                                                segment_ids=mask))
    assert _paths(params["backbone"]) == _paths(
        nn.meta.unbox(want)["params"])
    assert set(params) == {"backbone", "head"}


def test_parameter_tree_scanned_layers():
  cfg = make_model_config("bert_tiny", vocab_size=V, max_len=16)
  params, _ = _shapes(TaskModel(cfg, head="token", num_labels=C))
  paths = _paths(params)
  assert paths["backbone/encoder/layers/mlp/wi/kernel"][0] == cfg.num_layers
  assert paths["head/dense/kernel"] == (cfg.d_model, C)


# --- pooling checks -----------------------------------------------------------


@pytest.mark.parametrize("cfg", [GPT, LSTM])
@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_first_token_pooling_on_a_decoder_raises(cfg, pooling):
  with pytest.raises(LmError, match="'last' or 'mean'"):
    _shapes(TaskModel(cfg, head="sequence", num_labels=C,
                      pooling=pooling))


def test_check_pooling():
  check_pooling("bert", "pooler")
  check_pooling("bert", "cls")
  check_pooling("transformer", "last")
  check_pooling("lstm", "mean")
  with pytest.raises(LmError, match="pooling='max'"):
    check_pooling("bert", "max")
  with pytest.raises(LmError, match="transformer"):
    check_pooling("transformer", "cls")


def test_unknown_head_raises():
  with pytest.raises(LmError, match="head 'ner'"):
    _shapes(TaskModel(GPT, head="ner", num_labels=C))


# --- pooled values ------------------------------------------------------------


def test_last_pooling_ignores_padding():
  """A decoder's "last" pooling reads the last real token: changing padding
  tokens leaves the logits unchanged."""
  model = TaskModel(GPT, head="sequence", num_labels=C, pooling="last")
  params = _random_params(model)
  tokens, mask = _inputs()
  other = tokens.at[1, 5:].set(7)
  apply = jax.jit(lambda t: model.apply({"params": params}, t,
                                        segment_ids=mask)["logits"])
  a, b = apply(tokens), apply(other)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(a[1], apply(tokens.at[1, 4].set(7))[1])


# --- frozen backbone ----------------------------------------------------------


# One layer: compiling the gradient of a deeper model only costs time.
@pytest.mark.parametrize("cfg,head,pooling", [
    (dataclasses.replace(BERT, num_layers=1), "sequence", "pooler"),
    (dataclasses.replace(GPT, num_layers=1), "span", "last")])
def test_freeze_backbone_zero_gradients(cfg, head, pooling):
  tokens, mask = _inputs()
  free = TaskModel(cfg, head=head, num_labels=C, pooling=pooling)
  frozen = TaskModel(cfg, head=head, num_labels=C, pooling=pooling,
                     freeze_backbone=True)
  params = _random_params(free)

  @jax.jit
  def grads(p):
    def loss(p, model):
      out = model.apply({"params": p}, tokens, segment_ids=mask)
      return sum(jnp.sum(jnp.sin(v)) for v in out.values())
    return (jax.value_and_grad(loss)(p, free),
            jax.value_and_grad(loss)(p, frozen))

  (l_free, g_free), (l_frozen, g_frozen) = grads(params)
  np.testing.assert_allclose(l_free, l_frozen, rtol=1e-6)  # same forward
  for path, g in _flat(g_frozen["backbone"]).items():
    assert not np.any(np.asarray(g)), path
  for path, g in _flat(g_frozen["head"]).items():
    assert np.any(np.asarray(g)), path
    np.testing.assert_allclose(g, _flat(g_free["head"])[path], rtol=1e-4,
                               atol=1e-6)  # two programs, rounded apart
  # Without freezing, the backbone does learn (e.g. the token embedding and,
  # for the pooler head, the pooler).
  assert np.any(np.asarray(g_free["backbone"]["token_embed"]["embedding"]))
  if pooling == "pooler":
    assert np.any(np.asarray(g_free["backbone"]["pooler"]["dense"]["kernel"]))


def _flat(tree):
  return {"/".join(str(k.key) for k in p): leaf for p, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]}
