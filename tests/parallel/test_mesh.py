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


class FakeChip:
  """Stands in for a TPU chip of a multi-slice job (only what the layout reads)."""
  platform = "cpu"
  device_kind = "fake"

  def __init__(self, i, per_slice):
    self.id = i
    self.slice_index = i // per_slice
    self.process_index = i // per_slice

  def __repr__(self):
    return f"chip{self.id}"


def test_multi_slice_layout_puts_dcn_on_the_slowest_axis():
  chips = [FakeChip(i, 8) for i in range(16)]
  arr = mesh_lib.hybrid_device_array({"data": 1, "fsdp": -1, "tensor": 2},
                                     {"data": 2}, chips)
  assert arr.shape == (2, 4, 2)
  assert {c.slice_index for c in arr[0].ravel()} == {0}
  assert {c.slice_index for c in arr[1].ravel()} == {1}
  by_process = mesh_lib.hybrid_device_array({"data": -1}, {"fsdp": 2}, chips,
                                            granule="process")
  assert by_process.shape == (8, 2, 1)
  assert {c.process_index for c in by_process[:, 0].ravel()} == {0}


def test_multi_slice_errors():
  chips = [FakeChip(i, 8) for i in range(16)]
  with pytest.raises(LmError, match="equal slices"):
    mesh_lib.hybrid_device_array({"data": -1}, {"data": 3}, chips)
  with pytest.raises(LmError, match="multi-slice"):
    mesh_lib.hybrid_device_array({"data": -1}, {"data": 4}, chips)   # only 2 slices


def test_single_slice_dcn_is_the_plain_mesh():
  m = mesh_lib.make_mesh({"data": -1, "fsdp": 2, "tensor": 1},
                         dcn={"data": 1, "fsdp": 1, "tensor": 1})
  assert dict(m.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
