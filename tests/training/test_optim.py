import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm.training import optim
from lm.experiments import base_config


def _opt(**kw):
  c = base_config().optimizer
  c.update(kw)
  return c


def test_warmup_then_cosine_reaches_floor():
  sched = optim.learning_rate_schedule(_opt(lr=1.0, warmup_steps=10, min_lr_ratio=0.1), steps=110)
  vals = np.array([float(sched(s)) for s in range(0, 130)])
  np.testing.assert_allclose(vals[:10], (np.arange(10) + 1) / 10, rtol=1e-6)
  assert vals[10] == pytest.approx(1.0)
  assert np.all(np.diff(vals[10:111]) <= 1e-7)          # monotone decay
  assert vals[60] == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 0.5)), rel=1e-5)
  np.testing.assert_allclose(vals[110:], 0.1, rtol=1e-5)


def test_linear_and_constant_schedules():
  lin = optim.learning_rate_schedule(_opt(lr=2.0, warmup_steps=0, schedule="linear",
                                          min_lr_ratio=0.0), steps=100)
  assert float(lin(50)) == pytest.approx(1.0)
  const = optim.learning_rate_schedule(_opt(lr=2.0, warmup_steps=5, schedule="constant"), steps=100)
  assert float(const(80)) == pytest.approx(2.0)


def test_decay_mask_skips_norms_and_biases():
  params = {"mlp": {"wi": jnp.ones((2, 3)), "bias": jnp.ones(3)},
            "ln": {"scale": jnp.ones(2)}}
  mask = optim.decay_mask(params)
  assert mask == {"mlp": {"wi": True, "bias": False}, "ln": {"scale": False}}
  assert all(jax.tree.leaves(optim.decay_mask(params, decay_norms_and_biases=True)))


def test_weight_decay_only_touches_masked_params():
  params = {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  grads = jax.tree.map(jnp.zeros_like, params)
  tx, _ = optim.make_optimizer(_opt(lr=0.1, warmup_steps=0, schedule="constant",
                                    weight_decay=0.5, clip_norm=0.0), steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_allclose(updates["bias"], 0.0)


def test_clipping_bounds_update_direction():
  params = {"w": jnp.zeros(4)}
  tx, _ = optim.make_optimizer(_opt(lr=1.0, warmup_steps=0, schedule="constant",
                                    weight_decay=0.0, clip_norm=1.0), steps=10)
  state = tx.init(params)
  big = {"w": jnp.array([300.0, 400.0, 0.0, 0.0])}
  clipped = optax.clip_by_global_norm(1.0).update(big, optax.EmptyState())[0]
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-6)
  updates, _ = tx.update(big, state, params)
  assert np.all(np.isfinite(np.asarray(updates["w"])))
