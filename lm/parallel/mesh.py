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


def hybrid_device_array(sizes: Mapping[str, int], dcn: Mapping[str, int],
                        devices, granule: str = "slice") -> np.ndarray:
  """Devices arranged for a multi-slice (ICI × DCN) mesh.

  `sizes` is the layout inside one slice (ICI; one axis may be -1) and `dcn`
  how many slices each axis spans over the data-centre network, so the full
  axis size is `ici * dcn`; a slice is the set of devices sharing
  `slice_index` (Cloud TPU multi-slice), or `process_index` when `granule` is
  "process" (e.g. GPU hosts). Keep the DCN factor on `data` (or `fsdp`), whose
  collectives tolerate the slower links.

  >>> # 2 slices of 8 chips, ICI (1, 4, 2) and DCN (2, 1, 1) -> shape (2, 4, 2)
  """
  from jax.experimental import mesh_utils
  dcn_shape = tuple(int(dcn.get(name, 1)) for name in MESH_AXES)
  if any(d < 1 for d in dcn_shape):
    raise LmError(f"mesh.dcn_* sizes {dict(zip(MESH_AXES, dcn_shape))} must be "
                  ">= 1; use 1 for axes that stay inside a slice.")
  slices = math.prod(dcn_shape)
  if len(devices) % slices:
    raise LmError(f"{len(devices)} devices cannot form {slices} equal slices "
                  f"(mesh.dcn_* = {dict(zip(MESH_AXES, dcn_shape))}); check the "
                  "DCN sizes against the number of slices.")
  ici_shape = mesh_shape(sizes, len(devices) // slices)
  try:
    return mesh_utils.create_hybrid_device_mesh(
        ici_shape, dcn_shape, devices, process_is_granule=granule == "process")
  except ValueError as e:
    raise LmError(f"cannot lay out a multi-slice mesh with ICI {ici_shape} and "
                  f"DCN {dcn_shape}: {str(e).splitlines()[0]}; set mesh.dcn_* "
                  "to the number of slices.") from None


def make_mesh(sizes: Mapping[str, int], devices=None,
              dcn: Mapping[str, int] | None = None, granule: str = "slice") -> Mesh:
  """Builds the `(data, fsdp, tensor)` mesh over `devices` (default: all).

  With `dcn` sizes whose product is above 1 the mesh spans several slices
  (see `hybrid_device_array`).
  """
  devices = list(jax.devices() if devices is None else devices)
  if dcn and math.prod(int(v) for v in dcn.values()) > 1:
    return Mesh(hybrid_device_array(sizes, dcn, devices, granule), MESH_AXES,
                axis_types=(AxisType.Auto,) * len(MESH_AXES))
  shape = mesh_shape(sizes, len(devices))
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))
