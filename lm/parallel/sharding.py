"""Logical-axis rules and the shardings of state and batches.

The model names every parameter and block-boundary activation with the
logical axes of `lm.parallel.axes`; the rule table below (overridable from
`config.mesh.rules`) maps them to mesh axes, so the config, not the model,
decides the parallelism.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm.errors import LmError
from lm.parallel import axes
from lm.parallel.mesh import MESH_AXES

BATCH_AXES = ("data", "fsdp")

# batch -> data+fsdp; embed -> fsdp; mlp/heads/vocab -> tensor.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    (axes.ACT_BATCH, BATCH_AXES),
    (axes.EMBED, "fsdp"),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.KV_HEADS, "tensor"),
    (axes.VOCAB, "tensor"),
    (axes.ACT_HEADS, "tensor"),
    (axes.ACT_KV_HEADS, "tensor"),
    (axes.ACT_MLP, "tensor"),
    (axes.ACT_VOCAB, "tensor"),
)


def logical_rules(overrides: Sequence[Sequence[Any]] | None = None):
  """The default rule table with `overrides` (pairs) replacing same-named rules."""
  rules = dict(DEFAULT_RULES)
  for pair in overrides or ():
    if len(pair) != 2:
      raise LmError(f"mesh.rules entry {pair!r} is not a (logical_axis, "
                    "mesh_axes) pair; write e.g. ('embed', 'fsdp').")
    name, target = pair
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    for t in targets:
      if t not in MESH_AXES:
        raise LmError(f"mesh.rules maps {name!r} to unknown mesh axis {t!r}; "
                      f"use one of {MESH_AXES} or None.")
    rules[name] = target if target is None or isinstance(target, str) else tuple(target)
  return tuple(rules.items())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows of a `[B, T]` batch are split over data and fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_to_shardings(logical_specs, mesh: Mesh, rules) -> Any:
  """Maps a tree of logical PartitionSpecs to NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def describe(params_shardings, params_shapes) -> list[str]:
  """One line per parameter: path, shape and mesh partition spec."""
  lines = []
  flat_s = jax.tree_util.tree_flatten_with_path(params_shardings)[0]
  flat_x = jax.tree_util.tree_leaves(params_shapes)
  for (path, sharding), x in zip(flat_s, flat_x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    lines.append(f"{name:60s} {str(tuple(x.shape)):22s} {sharding.spec}")
  return lines
