"""Per-parameter learning-rate scales for a head over a backbone: layer-wise
decay (scanned and looped blocks), head rate, frozen backbone, and the
optimizer's checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm.errors import LmError
from lm.training import optim
from lm.experiments import base_config

L, D = 3, 4


def _opt(**kw):
  c = base_config().optimizer
  c.update(dict(lr=0.1, warmup_steps=0, schedule="constant", clip_norm=0.0,
                weight_decay=0.0))
  c.update(kw)
  return c


def _scanned():
  """A BERT-like tree with `L` blocks stacked on a leading axis."""
  return {
      "backbone": {
          "token_embed": {"embedding": jnp.zeros((8, D))},
          "embed_norm": {"scale": jnp.zeros((D,))},
          "encoder": {"layers": {"mlp": {"kernel": jnp.zeros((L, D, D)),
                                         "bias": jnp.zeros((L, D))}}},
          "pooler": {"dense": {"kernel": jnp.zeros((D, D))}}},
      "head": {"dense": {"kernel": jnp.zeros((D, 2)),
                         "bias": jnp.zeros((2,))}}}


def _looped():
  """A decoder-like tree with blocks `layers_0` .. `layers_{L-1}`."""
  blocks = {f"layers_{i}": {"mlp": {"kernel": jnp.zeros((D, D)),
                                    "bias": jnp.zeros((D,))}}
            for i in range(L)}
  return {
      "backbone": {
          "token_embed": {"embedding": jnp.zeros((8, D))},
          "position_embed": {"embedding": jnp.zeros((5, D))},
          "decoder": {**blocks, "final_norm": {"scale": jnp.zeros((D,))}}},
      "head": {"dense": {"kernel": jnp.zeros((D, 2)),
                         "bias": jnp.zeros((2,))}}}


def _scales(tree, **kw):
  kw = {"backbone_path": ("backbone",), "num_layers": L, **kw}
  return jax.tree.map(np.asarray, optim.lr_scales(tree, **kw))


# --- lr_scales ----------------------------------------------------------------


def test_layer_decay_scanned_blocks():
  # L = 3, decay 0.5: block l gets 0.5 ** (3 - l) = 0.125, 0.25, 0.5; the
  # embeddings (below the blocks) 0.5 ** 4; the pooler (above) 1.
  s = _scales(_scanned(), layer_decay=0.5, head_scale=7.0)
  layers = s["backbone"]["encoder"]["layers"]["mlp"]
  assert layers["kernel"].shape == (L, 1, 1)
  assert layers["bias"].shape == (L, 1)
  np.testing.assert_allclose(layers["kernel"].ravel(), [0.125, 0.25, 0.5])
  np.testing.assert_allclose(layers["bias"].ravel(), [0.125, 0.25, 0.5])
  assert s["backbone"]["token_embed"]["embedding"] == 0.0625
  assert s["backbone"]["embed_norm"]["scale"] == 0.0625
  assert s["backbone"]["pooler"]["dense"]["kernel"] == 1.0
  assert s["head"]["dense"]["kernel"] == s["head"]["dense"]["bias"] == 7.0


def test_layer_decay_looped_blocks():
  s = _scales(_looped(), layer_decay=0.5)
  dec = s["backbone"]["decoder"]
  for i, want in enumerate([0.125, 0.25, 0.5]):
    assert dec[f"layers_{i}"]["mlp"]["kernel"].shape == ()
    assert dec[f"layers_{i}"]["mlp"]["kernel"] == want
    assert dec[f"layers_{i}"]["mlp"]["bias"] == want
  assert dec["final_norm"]["scale"] == 1.0
  assert s["backbone"]["token_embed"]["embedding"] == 0.0625
  assert s["backbone"]["position_embed"]["embedding"] == 0.0625
  assert s["head"]["dense"]["kernel"] == 1.0


def test_scanned_and_looped_blocks_agree():
  scanned = _scales(_scanned(), layer_decay=0.8)
  looped = _scales(_looped(), layer_decay=0.8)
  stacked = scanned["backbone"]["encoder"]["layers"]["mlp"]["kernel"].ravel()
  np.testing.assert_allclose(
      stacked, [looped["backbone"]["decoder"][f"layers_{i}"]["mlp"]["kernel"]
                for i in range(L)], rtol=1e-6)
  np.testing.assert_allclose(stacked, 0.8 ** (L - np.arange(L)), rtol=1e-6)


def test_no_decay_freeze_and_head_scale():
  for s in (_scales(_scanned()), _scales(_looped())):
    assert all(v.shape == () and v == 1.0 for v in jax.tree.leaves(s))
  # Freezing zeroes the whole backbone (layer decay or not), not the head.
  for tree in (_scanned(), _looped()):
    for decay in (1.0, 0.5):
      s = _scales(tree, freeze_backbone=True, layer_decay=decay,
                  head_scale=3.0)
      assert all(v.shape == () and v == 0.0
                 for v in jax.tree.leaves(s["backbone"]))
      assert all(v == 3.0 for v in jax.tree.leaves(s["head"]))


def test_longer_backbone_path():
  tree = {"model": {"backbone": {"layers_0": {"w": jnp.zeros((2, 2))},
                                 "token_embed": {"embedding": jnp.zeros(2)}},
                    "projection": {"w": jnp.zeros(2)}},
          "log_temperature": jnp.zeros(())}
  s = _scales(tree, backbone_path=("model", "backbone"), num_layers=1,
              layer_decay=0.5, head_scale=2.0)
  assert s["model"]["backbone"]["layers_0"]["w"] == 0.5
  assert s["model"]["backbone"]["token_embed"]["embedding"] == 0.25
  assert s["model"]["projection"]["w"] == 2.0
  assert s["log_temperature"] == 2.0


# --- scale_by_tree ------------------------------------------------------------


def test_scale_by_tree_multiplies_updates():
  tree = _scanned()
  tx = optim.scale_by_tree(functools.partial(
      optim.lr_scales, backbone_path=("backbone",), num_layers=L,
      layer_decay=0.5, head_scale=4.0))
  state = tx.init(tree)
  updates = jax.tree.map(lambda x: jnp.full(x.shape, 2.0, jnp.bfloat16), tree)
  out, state2 = tx.update(updates, state, tree)
  assert state2 == state
  kernel = np.asarray(out["backbone"]["encoder"]["layers"]["mlp"]["kernel"],
                      np.float32)
  assert kernel.shape == (L, D, D)
  np.testing.assert_allclose(kernel[:, 0, 0], [0.25, 0.5, 1.0])
  assert (kernel == kernel[:, :1, :1]).all()
  assert out["head"]["dense"]["kernel"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["head"]["dense"]["kernel"],
                                        np.float32), 8.0)
  np.testing.assert_allclose(
      np.asarray(out["backbone"]["token_embed"]["embedding"], np.float32),
      0.125)


# --- make_optimizer -----------------------------------------------------------


def _ones(tree):
  return jax.tree.map(jnp.ones_like, tree)


def _random(tree, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                            jnp.float32), tree)


def _first_update(opt_cfg, tree, grads):
  tx, _ = optim.make_optimizer(opt_cfg, steps=10, backbone_path=("backbone",),
                               num_layers=L)
  updates, _ = tx.update(grads, tx.init(tree), tree)
  return updates


@pytest.mark.parametrize("make_tree", [_scanned, _looped])
def test_freeze_gives_zero_backbone_updates(make_tree):
  params = _ones(make_tree())
  updates = _first_update(_opt(freeze_backbone=True, weight_decay=0.1),
                          params, _random(params))
  for u in jax.tree.leaves(updates["backbone"]):
    assert not np.any(np.asarray(u))
  for u in jax.tree.leaves(updates["head"]):
    assert np.all(np.asarray(u) != 0)
  new = optax.apply_updates(params, updates)
  for a, b in zip(jax.tree.leaves(new["backbone"]),
                  jax.tree.leaves(params["backbone"])):
    np.testing.assert_array_equal(a, b)


def test_head_lr_scales_the_head():
  # Adam's first step is lr * g / (|g| + eps) ~ lr * sign(g): 0.1 for the
  # backbone, head_lr = 0.5 for the head.
  params = _ones(_looped())
  grads = _ones(params)
  updates = _first_update(_opt(head_lr=0.5), params, grads)
  for u in jax.tree.leaves(updates["backbone"]):
    np.testing.assert_allclose(u, -0.1, rtol=1e-5)
  for u in jax.tree.leaves(updates["head"]):
    np.testing.assert_allclose(u, -0.5, rtol=1e-5)


def test_layer_decay_scales_weight_decay_and_steps():
  # Zero gradients: the update is the weight decay alone, -lr * wd * p for
  # matrices (0 for biases and norm scales), times each parameter's scale.
  params = _ones(_scanned())
  updates = _first_update(_opt(layer_decay=0.5, weight_decay=0.5), params,
                          jax.tree.map(jnp.zeros_like, params))
  kernel = np.asarray(updates["backbone"]["encoder"]["layers"]["mlp"]["kernel"])
  np.testing.assert_allclose(kernel[:, 0, 0], -0.05 * np.array([0.125, 0.25,
                                                                0.5]),
                             rtol=1e-5)
  np.testing.assert_allclose(
      updates["backbone"]["token_embed"]["embedding"], -0.05 * 0.0625,
      rtol=1e-5)
  np.testing.assert_allclose(updates["backbone"]["pooler"]["dense"]["kernel"],
                             -0.05, rtol=1e-5)
  np.testing.assert_allclose(updates["head"]["dense"]["kernel"], -0.05,
                             rtol=1e-5)
  np.testing.assert_array_equal(
      updates["backbone"]["encoder"]["layers"]["mlp"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["head"]["dense"]["bias"], 0.0)


@pytest.mark.parametrize("kw", [dict(head_lr=1e-3), dict(layer_decay=0.9),
                                dict(freeze_backbone=True)])
def test_make_optimizer_rejects_scales_without_a_backbone(kw):
  with pytest.raises(LmError, match="head over a backbone"):
    optim.make_optimizer(_opt(**kw), steps=10)
  with pytest.raises(LmError, match="head over a backbone"):
    optim.make_optimizer(_opt(**kw), steps=10, backbone_path=(),
                         num_layers=2)
  optim.make_optimizer(_opt(**kw), steps=10, backbone_path=("backbone",),
                       num_layers=2)


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_make_optimizer_rejects_layer_decay_outside_unit_interval(decay):
  with pytest.raises(LmError, match=r"layer_decay=.*\(0, 1\]"):
    optim.make_optimizer(_opt(layer_decay=decay), steps=10,
                         backbone_path=("backbone",), num_layers=2)


def test_make_optimizer_rejects_negative_head_lr():
  with pytest.raises(LmError, match="head_lr"):
    optim.make_optimizer(_opt(head_lr=-1.0), steps=10,
                         backbone_path=("backbone",), num_layers=2)


def test_make_optimizer_plain_run_without_scales():
  # The defaults (head_lr 0, layer_decay 1, no freezing) need no backbone.
  tree = {"w": jnp.ones((2, 2))}
  tx, _ = optim.make_optimizer(_opt(), steps=10)
  updates, _ = tx.update(_ones(tree), tx.init(tree), tree)
  np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-5)
