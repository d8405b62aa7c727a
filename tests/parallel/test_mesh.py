import jax
import pytest

from lm.errors import LmError
from lm.parallel import mesh as mesh_lib
from lm.parallel import sharding


def test_fill_axis():
  assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert mesh_lib.mesh_shape({"data": 2, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)


@pytest.mark.parametrize("sizes", [
    {"data": -1, "fsdp": -1}, {"data": 3, "fsdp": 1, "tensor": 1},
    {"data": -1, "fsdp": 3}, {"data": 0},
])
def test_bad_meshes(sizes):
  with pytest.raises(LmError, match="mesh"):
    mesh_lib.mesh_shape(sizes, 8)


def test_make_mesh_uses_all_devices():
  m = mesh_lib.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)


def test_rule_overrides():
  rules = dict(sharding.logical_rules([("embed", None), ("mlp", ("fsdp", "tensor"))]))
  assert rules["embed"] is None and rules["mlp"] == ("fsdp", "tensor")
  assert rules["act_batch"] == ("data", "fsdp")
  with pytest.raises(LmError, match="unknown mesh axis"):
    sharding.logical_rules([("embed", "model")])
