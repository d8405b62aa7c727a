"""Device mesh from config: axes `data`, `fsdp`, `tensor`.

A size of -1 fills the remaining devices. The mesh uses `AxisType.Auto` axes
(jax >= 0.10 defaults to Explicit axes, which Linen layers do not support) and
is entered with `jax.set_mesh` by the caller.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from lm.errors import LmError

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves `{data, fsdp, tensor}` sizes (one may be -1) to a full shape.

  >>> mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8)
  (4, 2, 1)
  """
  shape = [int(sizes.get(name, 1)) for name in MESH_AXES]
  fill = [i for i, s in enumerate(shape) if s == -1]
  if len(fill) > 1:
    raise LmError("only one of mesh.data, mesh.fsdp, mesh.tensor may be -1; "
                  "give explicit sizes for the others.")
  for name, s in zip(MESH_AXES, shape):
    if s == 0 or s < -1:
      raise LmError(f"mesh.{name}={s} is not a valid axis size; use a "
                    "positive size or -1 to fill the remaining devices.")
  known = math.prod(s for s in shape if s != -1)
  if fill:
    if num_devices % known:
      raise LmError(f"the mesh sizes {dict(zip(MESH_AXES, shape))} do not "
                    f"divide the {num_devices} available devices; change "
                    "the mesh config.")
    shape[fill[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise LmError(f"the mesh {dict(zip(MESH_AXES, shape))} needs "
                  f"{math.prod(shape)} devices but {num_devices} are "
                  "available; set one axis to -1 or change the sizes.")
  return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices=None) -> Mesh:
  """Builds the `(data, fsdp, tensor)` mesh over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(sizes, len(devices))
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))
