"""InfoNCE (SimCSE / CLIP-style) contrastive loss with in-batch negatives.

Legend: B = batch rows (anchors), C = candidate columns (B positives plus
any hard negatives), M = hard negatives, D = embedding width.

Global negatives come for free. Under `jax.jit`, with the batch sharded over
the mesh's `data`/`fsdp` axes (`lm.parallel.sharding.batch_sharding`), the
arrays this module sees are the *global* `[B, D]` arrays. The einsum
`a @ p.T` over them is, after GSPMD partitioning, exactly the all-gather of
the embeddings across devices and hosts: every anchor is scored against every
positive (and hard negative) in the global batch, and the gradient flows back
through the gather to every shard. No manual collective (`all_gather`,
`psum`) is needed, and none should be added: that would only be right inside
`shard_map`, where arrays are per-device.

Example:
  >>> a = jnp.eye(2, 4); p = jnp.eye(2, 4)
  >>> loss_sum, correct, count = info_nce(a, p, 0.05)
  >>> float(correct), float(count)        # both rows pick their own positive
  (2.0, 2.0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm.errors import LmError


# Added to the logits of padding columns: exp() of it is exactly 0, yet it
# stays finite, so an all-padding batch gives zeros rather than NaN.
_MASKED = -1e9


def l2_normalize(x, eps: float = 1e-6):
  """Rows scaled to unit L2 norm over the last axis, in float32.

  `eps` guards an all-zero row (it stays zero instead of becoming NaN).

  Example:
    >>> l2_normalize(jnp.array([[3., 4.]]))   # [[0.6, 0.8]]
  """
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _row_cross_entropy(logits, rows):
  """Sum over rows of -log softmax(logits)[i, i], and the argmax hits.

  logits [B, C] with C >= B; the target of row i is column i; `rows` [B]
  float weights (0 drops a row from both sums).
  """
  logz = jax.nn.logsumexp(logits, axis=-1)                       # [B]
  target = jnp.diagonal(logits[:, :logits.shape[0]])             # [B]
  hits = jnp.argmax(logits, axis=-1) == jnp.arange(logits.shape[0])
  return (jnp.sum((logz - target) * rows),
          jnp.sum(hits.astype(jnp.float32) * rows))


def info_nce(anchors, positives, temperature, *, symmetric: bool = False,
             negatives=None, valid=None):
  """InfoNCE over the batch: row i's positive is column i, the rest negatives.

  anchors [B, D], positives [B, D]; `temperature` a float or traced scalar
  (e.g. `jnp.exp(log_tau)` for a learned temperature). `negatives` adds hard
  negatives as extra columns: `[M, D]` are seen by every anchor; `[B, M, D]`
  (one set per row, SimCSE supervised) are flattened so every anchor sees all
  B*M of the batch's hard negatives. `symmetric=True` also scores the
  positives -> anchors direction (no hard negatives) and averages the two
  directions' sums; `correct` always comes from the anchor direction.
  `valid` [B] (bool or 0/1) marks real rows: a padding row is neither scored
  nor a negative for the others (its per-row hard negatives drop out too).

  Returns (loss_sum, correct, count), float32 scalars; count = B (the valid
  rows), so the mean loss is loss_sum / count.

  Example:
    >>> a = jnp.eye(3, 8); n = jnp.ones((3, 2, 8))
    >>> info_nce(a, a, 0.1, negatives=n)[2]     # 3.0: logits are [3, 3 + 6]
  """
  if anchors.ndim != 2 or anchors.shape != positives.shape:
    raise LmError(f"info_nce needs anchors and positives of one shape [B, D], "
                  f"got {anchors.shape} and {positives.shape}.")
  b, d = anchors.shape
  if b == 0:
    raise LmError("info_nce got an empty batch (B = 0); pass at least one row.")
  a = l2_normalize(anchors)
  p = l2_normalize(positives)
  tau = jnp.asarray(temperature, jnp.float32)
  cands = p                                                      # [C, D]
  negatives_per_row = False
  if negatives is not None:
    if negatives.ndim == 3 and negatives.shape[0] == b and negatives.shape[2] == d:
      negatives = negatives.reshape(-1, d)                       # [B*M, D]
      negatives_per_row = True
    elif negatives.ndim != 2 or negatives.shape[1] != d:
      raise LmError(f"info_nce negatives must be [M, {d}] or [{b}, M, {d}], "
                    f"got {negatives.shape}.")
    cands = jnp.concatenate([p, l2_normalize(negatives)], axis=0)
  rows = (jnp.ones((b,), jnp.float32) if valid is None
          else jnp.asarray(valid).astype(jnp.float32))           # [B]
  cols = rows
  if cands.shape[0] > b:     # hard negatives: shared [M] or per row [B*M]
    m = cands.shape[0] - b
    extra = (jnp.repeat(rows, m // b) if negatives_per_row
             else jnp.ones((m,), jnp.float32))
    cols = jnp.concatenate([rows, extra])
  off = jnp.where(cols > 0, 0.0, _MASKED)                        # [C]
  logits = jnp.einsum("bd,cd->bc", a, cands) / tau + off         # [B, C]
  loss_sum, correct = _row_cross_entropy(logits, rows)
  if symmetric:
    logits_p = jnp.einsum("bd,cd->bc", p, a) / tau + off[:b]     # [B, B]
    loss_p, _ = _row_cross_entropy(logits_p, rows)
    loss_sum = (loss_sum + loss_p) / 2
  return loss_sum, correct, jnp.sum(rows)
