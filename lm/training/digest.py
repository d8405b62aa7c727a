"""Checksums and finiteness of a train state, computed on its devices.

A checkpoint stores, next to the arrays, a digest of what it stores: for each
array two 32-bit weighted sums of its bits, `sum(u * w)` with `u` the array's
bit pattern as unsigned integers and `w` an odd weight that depends on the
element's position (both wrap modulo 2**32; see `_leaf_digest`). The sums are
exact integer arithmetic, so they do not depend on the mesh, the sharding or
the order XLA reduces in: a state restored onto another mesh gives the same
digest. Flipping any one bit of any element changes both sums (by an odd
multiple of a power of two below 2**32), and moving values between positions
changes them too.

The same jitted pass says whether every floating-point array is finite, so the
save path costs one reduction over the state and one small device-to-host copy
rather than a sync per step.

Why not a file hash: the state is sharded across hosts and written by
TensorStore on each of them; a digest of the arrays checks what is loaded, on
any mesh, without reading the files twice.

Example:
  digest = state_digest(state)        # {"finite": True, "sums": {"params/...": [a, b]}}
  same = state_digest(restored)["sums"] == digest["sums"]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def path_name(path) -> str:
  """`params/decoder/layers/mlp/wi/kernel` for a key path of any pytree."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _bits(x) -> jax.Array:
  """The elements of `x` as uint32 bit patterns (64-bit values fold their
  two halves together)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 8:
    halves = jax.lax.bitcast_convert_type(x, jnp.uint32)     # [..., 2]
    return halves[..., 0] ^ (halves[..., 1] * jnp.uint32(0x9E3779B1))
  return jax.lax.bitcast_convert_type(x, _UNSIGNED[size]).astype(jnp.uint32)


def _odd_weights(shape) -> jax.Array:
  """`2i + 1` (uint32) for every element of `shape`, `i` its flat index."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(
        stride % 2**32)
    stride *= shape[axis]
  return index * jnp.uint32(2) + jnp.uint32(1)


def _leaf_digest(x):
  """`[sum(u * w), sum(u * c)]` where `c` is odd per position along the
  last axis and `w` is `c` times an odd weight per position of the leading
  axes: every element gets an odd weight in both sums, and the reduction
  runs along the last axis first (one pass over the array, no reshape, so a
  sharded array stays where it is)."""
  u = _bits(x)
  if u.ndim == 0:
    u = u[None]
  cols = _odd_weights(u.shape[-1:])                          # [C]
  rows = jnp.sum(u * cols, axis=-1, dtype=jnp.uint32)        # [...]
  lead = _odd_weights(rows.shape)
  return jnp.stack([jnp.sum(rows * lead, dtype=jnp.uint32),
                    jnp.sum(rows, dtype=jnp.uint32)])


def _leaf_finite(x):
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.all(jnp.isfinite(x))
  return jnp.array(True)


@jax.jit
def _device_digest(tree):
  sums = jax.tree.map(_leaf_digest, tree)
  finite = jnp.all(jnp.stack(
      [_leaf_finite(x) for x in jax.tree.leaves(tree)] or [jnp.array(True)]))
  return sums, finite


def state_digest(tree) -> dict:
  """`{"finite": bool, "sums": {leaf path: [s1, s2]}}` of a pytree of arrays
  (a train state), computed where the arrays live."""
  sums, finite = jax.device_get(_device_digest(tree))
  flat = jax.tree_util.tree_flatten_with_path(sums)[0]
  return {"finite": bool(finite),
          "sums": {path_name(p): [int(v) for v in np.asarray(s)] for p, s in flat}}
