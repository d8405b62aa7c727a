"""token_cross_entropy against a float64 numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np

from lm.objectives.losses import token_cross_entropy


def _reference(logits, targets, mask):
  x = np.asarray(logits, np.float64)
  m = x.max(-1, keepdims=True)
  logz = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]
  tl = np.take_along_axis(x, targets[..., None], -1)[..., 0]
  return np.sum((logz - tl) * mask), np.sum((x.argmax(-1) == targets) * mask)


def test_loss_accuracy_and_gradient_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 4
  targets = rng.integers(0, 11, (3, 5))
  targets[0, :3] = logits[0, :3].argmax(-1)               # some right answers
  mask = (rng.random((3, 5)) > 0.3).astype(np.float32)
  loss, correct, count = token_cross_entropy(jnp.asarray(logits), targets, mask)
  ref_loss, ref_correct = _reference(logits, targets, mask)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(correct) == ref_correct and ref_correct > 0
  assert float(count) == mask.sum()
  grad = jax.grad(lambda l: token_cross_entropy(l, targets, mask)[0])(
      jnp.asarray(logits))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  onehot = np.eye(11)[targets]
  np.testing.assert_allclose(np.asarray(grad), (p - onehot) * mask[..., None],
                             atol=1e-6)


def test_a_tie_for_the_top_logit_is_not_correct():
  logits = jnp.zeros((1, 2, 4)).at[0, 1, 2].set(1.0)     # row 0 all tied
  _, correct, _ = token_cross_entropy(logits, np.array([[0, 2]]),
                                      np.ones((1, 2)))
  assert float(correct) == 1.0
