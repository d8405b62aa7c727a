"""The train-state digest: exact, mesh-independent, sensitive to any bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.training.digest import state_digest


def _tree():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.bfloat16),
          "step": jnp.int32(7), "flag": jnp.bool_(True)}


@pytest.mark.parametrize("name,index", [("w", (0, 0)), ("w", (15, 7)),
                                        ("w", (9, 3)), ("b", (2, 3, 4)),
                                        ("step", ())])
def test_every_single_bit_flip_changes_the_digest(name, index):
  tree = _tree()
  base = state_digest(tree)["sums"][name]
  host = np.array(tree[name])
  bits = host.view({4: np.uint32, 2: np.uint16}[host.dtype.itemsize])
  for bit in range(8 * host.dtype.itemsize):
    flipped = bits.copy()
    flipped[index] ^= type(flipped[index])(1 << bit)
    changed = dict(tree, **{name: jnp.asarray(flipped.view(host.dtype))})
    assert state_digest(changed)["sums"][name] != base, (index, bit)


def test_swapped_values_change_the_digest():
  tree = _tree()
  w = np.array(tree["w"])
  swapped = w.copy()
  swapped[[2, 5]] = w[[5, 2]]
  assert (state_digest(dict(tree, w=jnp.asarray(swapped)))["sums"]["w"]
          != state_digest(tree)["sums"]["w"])


def test_digest_does_not_depend_on_the_sharding():
  tree = _tree()
  mesh = jax.make_mesh((4, 2), ("data", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  spec = jax.sharding.PartitionSpec("data", "tensor")
  sharded = dict(tree, w=jax.device_put(
      tree["w"], jax.sharding.NamedSharding(mesh, spec)))
  assert state_digest(sharded) == state_digest(tree)


def test_non_finite_values_are_reported():
  tree = _tree()
  assert state_digest(tree)["finite"]
  assert not state_digest(dict(tree, w=tree["w"].at[3, 1].set(jnp.inf)))["finite"]
  assert not state_digest(dict(tree, b=tree["b"].at[0, 0, 0].set(jnp.nan)))["finite"]
