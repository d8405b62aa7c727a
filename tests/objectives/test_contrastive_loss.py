"""InfoNCE against a float64 numpy reference, and on a sharded global batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.objectives.contrastive_loss import info_nce, l2_normalize
from lm.parallel.mesh import make_mesh
from lm.parallel.sharding import batch_sharding


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ce_rows(logits):
  m = logits.max(-1, keepdims=True)
  logz = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
  b = logits.shape[0]
  return np.sum(logz - logits[np.arange(b), np.arange(b)])


def reference(a, p, tau, symmetric=False, negatives=None):
  a, p = _unit(a), _unit(p)
  cands = p
  if negatives is not None:
    cands = np.concatenate([p, _unit(negatives).reshape(-1, a.shape[1])], 0)
  logits = a @ cands.T / tau
  loss = _ce_rows(logits)
  correct = np.sum(np.argmax(logits, -1) == np.arange(a.shape[0]))
  if symmetric:
    loss = (loss + _ce_rows(p @ a.T / tau)) / 2
  return loss, correct, a.shape[0]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("neg_shape", [None, (5, 8), (6, 3, 8)])
def test_matches_numpy_reference(symmetric, neg_shape):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 8)).astype(np.float32)
  p = (a + 0.7 * rng.normal(size=(6, 8))).astype(np.float32)
  neg = None if neg_shape is None else rng.normal(size=neg_shape).astype(np.float32)
  got = info_nce(jnp.asarray(a), jnp.asarray(p), 0.2, symmetric=symmetric,
                 negatives=None if neg is None else jnp.asarray(neg))
  want = reference(a, p, 0.2, symmetric, neg)
  np.testing.assert_allclose(float(got[0]), want[0], rtol=1e-5)
  assert float(got[1]) == want[1]
  assert float(got[2]) == want[2] == 6.0
  assert all(x.dtype == jnp.float32 for x in got)


def test_batched_hard_negatives_seen_by_every_anchor():
  # Row 0's hard negative equals anchor 1 exactly: it must hurt anchor 1 too.
  a = jnp.eye(2, 4)
  neg = jnp.stack([jnp.eye(4)[1:2], jnp.eye(4)[3:4]])            # [2, 1, 4]
  base = info_nce(a, a, 0.1)[0]
  with_neg = info_nce(a, a, 0.1, negatives=neg)[0]
  # Anchor 1 gets logit 10 on neg[0] (tie with its positive): +log 2 at least.
  assert float(with_neg - base) > np.log(2) - 1e-4


def test_temperature_and_degenerate_cases():
  a = jnp.eye(4, 8)
  low, correct, _ = info_nce(a, a, 0.05)
  high, _, _ = info_nce(a, a, 1.0)
  assert float(low) < float(high)
  assert float(correct) == 4.0
  # All embeddings equal: every row is uniform over B columns -> log(B) each.
  same = jnp.ones((4, 8))
  for tau in (0.05, 1.0):
    loss, _, count = info_nce(same, same, tau, symmetric=True)
    np.testing.assert_allclose(float(loss / count), np.log(4), rtol=1e-6)


def test_traced_temperature_gets_a_gradient():
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  p = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  g = jax.jit(jax.grad(lambda lt: info_nce(a, p, jnp.exp(lt))[0]))(jnp.log(0.1))
  assert np.isfinite(float(g)) and float(g) != 0.0


def test_l2_normalize_and_errors():
  np.testing.assert_allclose(l2_normalize(jnp.array([[3., 4.], [0., 0.]])),
                             [[0.6, 0.8], [0., 0.]], rtol=1e-6)
  with pytest.raises(LmError):
    info_nce(jnp.ones((3, 4)), jnp.ones((2, 4)), 0.1)
  with pytest.raises(LmError):
    info_nce(jnp.ones((3, 4)), jnp.ones((3, 4)), 0.1, negatives=jnp.ones((2, 5)))


def test_sharded_global_batch_equals_single_device():
  assert jax.device_count() == 8
  mesh = make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
  rng = np.random.default_rng(2)
  a = rng.normal(size=(16, 8)).astype(np.float32)
  p = (a + 0.5 * rng.normal(size=(16, 8))).astype(np.float32)

  def loss(x, y):
    return info_nce(x, y, 0.1, symmetric=True)[0]

  ref = loss(jnp.asarray(a), jnp.asarray(p))
  ref_ga, ref_gp = jax.grad(loss, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(p))
  sh = batch_sharding(mesh)
  xa, xp = jax.device_put(a, sh), jax.device_put(p, sh)
  assert len(xa.sharding.device_set) == 8
  got = jax.jit(loss)(xa, xp)
  ga, gp = jax.jit(jax.grad(loss, argnums=(0, 1)))(xa, xp)
  np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ga), np.asarray(ref_ga), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gp), np.asarray(ref_gp), rtol=1e-5, atol=1e-6)
  # Negatives span the global batch: a per-shard (2-row) loss would differ.
  per_shard = sum(float(loss(jnp.asarray(a[i:i + 2]), jnp.asarray(p[i:i + 2])))
                  for i in range(0, 16, 2))
  assert abs(per_shard - float(ref)) > 1.0


@pytest.mark.parametrize("symmetric", [False, True])
def test_padding_rows_are_neither_scored_nor_negatives(symmetric):
  rng = np.random.default_rng(3)
  a = rng.normal(size=(5, 8)).astype(np.float32)
  p = (a + 0.5 * rng.normal(size=(5, 8))).astype(np.float32)
  neg = rng.normal(size=(5, 2, 8)).astype(np.float32)
  valid = np.array([1, 0, 1, 1, 0], bool)
  got = info_nce(jnp.asarray(a), jnp.asarray(p), 0.1, symmetric=symmetric,
                 negatives=jnp.asarray(neg), valid=jnp.asarray(valid))
  want = reference(a[valid], p[valid], 0.1, symmetric, neg[valid])
  np.testing.assert_allclose(float(got[0]), want[0], rtol=1e-5)
  assert float(got[1]) == want[1]
  assert float(got[2]) == 3.0
  # An all-padding batch gives zeros, and finite gradients.
  none = jnp.zeros((5,), bool)
  out = info_nce(jnp.asarray(a), jnp.asarray(p), 0.1, valid=none)
  assert [float(x) for x in out] == [0.0, 0.0, 0.0]
  g = jax.grad(lambda x: info_nce(x, jnp.asarray(p), 0.1, valid=none)[0])(
      jnp.asarray(a))
  assert np.all(np.isfinite(np.asarray(g)))
