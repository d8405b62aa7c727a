"""Layer-level pieces of distillation (`lm.objectives.distill`): a student
started from a subset of its teacher's layers (DistilBERT), and the block
outputs and attention logits that TinyBERT's terms match."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import LmError

_LAYER = re.compile(r"layers_(\d+)$")


def _layer_count(node: dict) -> int:
  if "layers" in node:
    return int(jax.tree.leaves(node["layers"])[0].shape[0])
  return len([k for k in node if _LAYER.match(k)])


def _layer(node: dict, i: int):
  if "layers" in node:
    return jax.tree.map(lambda x: x[i], node["layers"])
  return node[f"layers_{i}"]


def layer_subset(student, teacher, path: str = ""):
  """`student`'s tree filled from `teacher`: leaves outside layer stacks
  copied, and in each stack (a "layers" subtree of stacked blocks, or
  "layers_0", "layers_1", ... subtrees) student layer i from teacher layer
  i * L_teacher // L_student. Either stack layout reads either. LmError
  when a shape differs or the student is deeper.

  >>> t = {"emb": np.ones(2), "layers": {"w": np.arange(4.)[:, None]}}
  >>> s = {"emb": np.zeros(2), "layers_0": {"w": np.zeros(1)},
  ...      "layers_1": {"w": np.zeros(1)}}
  >>> out = layer_subset(s, t)
  >>> out["layers_1"]["w"].tolist(), out["emb"].tolist()
  ([2.0], [1.0, 1.0])
  """
  if not isinstance(student, dict):
    if not isinstance(teacher, (np.ndarray, jax.Array)) or (
        teacher.shape != student.shape):
      got = getattr(teacher, "shape", "nothing")
      raise LmError(f"the student's parameter {path or '/'} is "
                    f"{tuple(student.shape)} but the teacher's is {got}; "
                    "distill.init_from_teacher_layers needs the teacher's "
                    "width (model.d_model, heads, mlp size, vocabulary).")
    return np.asarray(teacher, dtype=student.dtype)
  if not isinstance(teacher, dict):
    raise LmError(f"the teacher has no parameter subtree {path or '/'}; "
                  "distill.init_from_teacher_layers needs a teacher of the "
                  "student's architecture.")
  out = {}
  stacked = "layers" in student or "layers_0" in student
  if stacked:
    if "layers" not in teacher and "layers_0" not in teacher:
      raise LmError(f"the teacher has no layer stack at {path or '/'}; "
                    "distill.init_from_teacher_layers needs a teacher of the "
                    "student's architecture.")
    n_s, n_t = _layer_count(student), _layer_count(teacher)
    if n_s > n_t:
      raise LmError(f"the student has {n_s} layers at {path or '/'} but the "
                    f"teacher {n_t}; distill.init_from_teacher_layers takes a "
                    "subset of the teacher's layers, so the student must not "
                    "be deeper.")
    chosen = [i * n_t // n_s for i in range(n_s)]
    if "layers" in student:
      picked = [jax.device_get(_layer(teacher, j)) for j in chosen]
      stack = jax.tree.map(lambda *xs: np.stack(xs), *picked)
      out["layers"] = layer_subset(student["layers"], stack, f"{path}/layers")
    else:
      for i, j in enumerate(chosen):
        out[f"layers_{i}"] = layer_subset(
            student[f"layers_{i}"], jax.device_get(_layer(teacher, j)),
            f"{path}/layers_{i}")
  for key, value in student.items():
    if stacked and (key == "layers" or _LAYER.match(key)):
      continue
    out[key] = layer_subset(value, teacher.get(key), f"{path}/{key}")
  return out


class Capture:
  """`model` whose `apply` also keeps what the blocks sow into the
  "intermediates" collection (`found`), returning the usual output."""

  def __init__(self, model):
    self.__dict__["model"] = model
    self.__dict__["found"] = None

  def __getattr__(self, name):
    return getattr(self.__dict__["model"], name)

  def apply(self, variables, *args, **kwargs):
    out, state = self.__dict__["model"].apply(
        variables, *args, mutable=["intermediates"], **kwargs)
    self.__dict__["found"] = state.get("intermediates", {})
    return out


def per_layer(tree, name: str) -> list:
  """The values the blocks of the one layer stack in `tree` (an
  "intermediates" collection) sowed as `name`, in layer order: a stacked
  `layers` subtree gives its leading axis, `layers_0`, `layers_1`, ...
  give one each. LmError when there is no stack or more than one.

  >>> import numpy as np
  >>> per_layer({"dec": {"layers": {"hidden": (np.zeros((3, 2)),)}}},
  ...           "hidden")[2].shape
  (2,)
  """
  found = {}

  def walk(node, path):
    for key, value in node.items():
      if key == name and isinstance(value, tuple):
        found[path] = value[0]
      elif isinstance(value, dict):
        walk(value, path + (key,))
  walk(tree, ())
  stacks = {}
  for path, value in found.items():
    at = next((i for i, k in enumerate(path)
               if k == "layers" or _LAYER.match(k)), None)
    if at is None:
      continue
    key = path[at]
    layers = stacks.setdefault(path[:at], {})
    if key == "layers":
      for i in range(value.shape[0]):
        layers[i] = value[i]
    else:
      layers[int(_LAYER.match(key).group(1))] = value
  if len(stacks) != 1:
    raise LmError(f"distillation matches the {name} of one layer stack but "
                  f"the model has {len(stacks)}; set distill.hidden_weight "
                  "and distill.attention_weight to 0 for this model.")
  layers = next(iter(stacks.values()))
  return [layers[i] for i in sorted(layers)]


def layer_pairs(student_layers: int, teacher_layers: int,
                layer_map: str = "") -> list[tuple[int, int]]:
  """(student layer, teacher layer) pairs: TinyBERT's uniform map, student
  layer i to teacher layer (i + 1) * L_t // L_s - 1, or `layer_map`'s list.

  >>> layer_pairs(2, 6)
  [(0, 2), (1, 5)]
  >>> layer_pairs(2, 6, "1,4")
  [(0, 1), (1, 4)]
  """
  if not layer_map:
    return [(i, (i + 1) * teacher_layers // student_layers - 1)
            for i in range(student_layers)]
  try:
    chosen = [int(x) for x in str(layer_map).split(",")]
  except ValueError:
    chosen = []
  if len(chosen) != student_layers or not all(
      0 <= j < teacher_layers for j in chosen):
    raise LmError(f"config.distill.layer_map={layer_map!r} must list "
                  f"{student_layers} teacher layers (one per student layer), "
                  f"each 0 to {teacher_layers - 1}, comma separated.")
  return list(enumerate(chosen))


def mean_squared(a, b):
  """Mean over every entry of (a - b)^2 in float32."""
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))
