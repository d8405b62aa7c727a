"""Safetensors state dicts in and out, with one-sentence errors.

`read_state(dir)` reads every tensor of a Hugging Face model directory
(`model.safetensors`, or the shards a `model.safetensors.index.json`
names); `write_state(dir, state)` writes `model.safetensors`. Pickled
`pytorch_model.bin` files are never opened.

`Tensors` wraps a state dict for the per-architecture mappings
(`lm.interop.gpt2`, `bert`, `llama`): `get(name, shape)` returns the tensor
as float32 and names the tensor when it is missing or has another shape
than `config.json` implies.

Example:
  t = Tensors(read_state("gpt2"), "gpt2", kind="GPT-2", prefix="transformer.")
  t.get("wte.weight", (50257, 768)).shape   # (50257, 768)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from lm.errors import LmError
from lm.files import atomic_path

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_state(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the safetensors file(s) in the directory `path`."""
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(path, WEIGHTS)
  index = os.path.join(path, INDEX)
  if os.path.isfile(single):
    files = [WEIGHTS]
  elif os.path.isfile(index):
    try:
      with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    except (ValueError, KeyError, AttributeError, TypeError):
      raise LmError(f"{index} is not a safetensors index (no JSON "
                    "'weight_map'); re-save the model with transformers' "
                    "save_pretrained.") from None
  elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
    raise LmError(f"{path} holds pytorch_model.bin, which would have to be "
                  "unpickled; convert it to safetensors first (load it with "
                  "transformers and call save_pretrained(dir, "
                  "safe_serialization=True)).")
  else:
    raise LmError(f"{path} has no {WEIGHTS} (or sharded {INDEX}); point "
                  "--hf_dir at a Hugging Face model directory.")
  for name in files:   # before any shard is opened
    _check_shard_name(name, index, path)
  state = {}
  for name in files:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
      raise LmError(f"{index} names the shard {name}, which is not in {path}; "
                    "copy every shard of the model there.")
    try:
      state.update(load_file(file))
    except (SafetensorError, OSError) as e:
      raise LmError(f"{file} is not a readable safetensors file ({e}); "
                    "download or save it again.") from None
  return state


def _check_shard_name(name, index: str, path: str) -> None:
  """Refuses an index entry that is not a file name inside `path`: shards are
  read from the model directory only, never from `..` or an absolute path."""
  if not isinstance(name, str) or not name:
    raise LmError(f"{index} names the shard {name!r}, which is not a file "
                  "name; re-save the model with transformers' save_pretrained.")
  norm = os.path.normpath(name)
  if os.path.isabs(norm) or norm == os.pardir or norm.startswith(os.pardir + os.sep):
    raise LmError(f"{index} names the shard {name!r}, which lies outside {path}; "
                  "shards must be file names inside the model directory, so fix "
                  "the index's weight_map.")


def write_state(path: str, state: dict[str, np.ndarray]) -> str:
  """Writes `state` to `path/model.safetensors` (atomically, with the mode
  the umask gives new files); returns it."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  target = os.path.join(path, WEIGHTS)
  with atomic_path(target) as tmp:
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp,
              metadata={"format": "pt"})
  return target


class Tensors:
  """A state dict read by name, with shape checks.

  Attributes:
    state: name -> array, as `read_state` returns it.
    source: the directory it came from (for error messages).
    kind: the model family, e.g. "GPT-2" (for error messages).
    prefix: prepended to every name `get` and `has` are given (e.g.
      "bert." for a `BertForPreTraining` checkpoint).
  """

  def __init__(self, state: dict[str, np.ndarray], source: str, *, kind: str,
               prefix: str = ""):
    self.state, self.source, self.kind, self.prefix = state, source, kind, prefix
    # Current name -> the name older checkpoints use for it (BERT's original
    # release calls LayerNorm parameters gamma and beta).
    self._legacy = {}
    for key in state:
      for old, new in (("LayerNorm.gamma", "LayerNorm.weight"),
                       ("LayerNorm.beta", "LayerNorm.bias")):
        if key.endswith(old):
          self._legacy[key[:-len(old)] + new] = key

  def has(self, name: str, *, root: bool = False) -> bool:
    """Whether the tensor exists (`root`: `name` without the prefix)."""
    key = name if root else self.prefix + name
    return key in self.state or key in self._legacy

  def get(self, name: str, shape: Sequence[int], *,
          root: bool = False) -> np.ndarray:
    """The tensor `prefix + name` (`root`: `name` alone) as float32.

    Raises LmError when it is missing or its shape is not `shape`.
    """
    key = name if root else self.prefix + name
    key = self._legacy.get(key, key) if key not in self.state else key
    if key not in self.state:
      raise LmError(f"{self.source} has no tensor {key!r}, which a {self.kind} "
                    "model with this config.json needs; the weights are "
                    "incomplete or belong to another model.")
    value = self.state[key]
    if tuple(value.shape) != tuple(shape):
      raise LmError(f"{self.source}: tensor {key!r} has shape "
                    f"{tuple(value.shape)} but config.json implies "
                    f"{tuple(shape)}; the weights and config.json disagree.")
    return np.asarray(value, np.float32)


def stack(fn, n: int) -> np.ndarray:
  """`[fn(0), ..., fn(n - 1)]` stacked on a new leading (layer) axis."""
  return np.stack([fn(i) for i in range(n)])


def block_params(stack: dict, scanned: bool, i: int) -> dict:
  """Block `i` of one of our layer stacks: `stack["layers"]` sliced at `i`
  (scanned blocks) or `stack["layers_<i>"]`."""
  if not scanned:
    return stack[f"layers_{i}"]

  def index(tree):
    return {k: index(x) if isinstance(x, dict) else x[i]
            for k, x in tree.items()}
  return index(stack["layers"])


def check_config(hf: dict, model_types: Sequence[str], family: str,
                 kind: str, required: Sequence[str]) -> None:
  """LmError when a `config.json` (`hf`) is not of `model_types` (its
  `family`'s mapping: "T5", "BART", ...) or lacks a `required` field.

  Example: check_config({"model_type": "t5"}, ("t5",), "T5",
  "T5ForConditionalGeneration", ("d_model",)) -> LmError naming d_model.
  """
  got = hf.get("model_type", model_types[0])
  if got not in model_types:
    raise LmError(f"config.json has model_type {got!r}, which the {family} "
                  "mapping does not read; it imports "
                  f"{' and '.join(repr(m) for m in model_types)} checkpoints.")
  for key in required:
    if key not in hf:
      raise LmError(f"config.json has no {key!r}, which a {kind} model "
                    "needs; save the model again with transformers.")


def first_difference(cfg, need: dict, family: str) -> str | None:
  """"model.KEY=VALUE (FAMILY has WANT)" for the first field of `need` in
  which the model config `cfg` differs, or None.

  Example: first_difference(cfg, {"norm": "rmsnorm"}, "Llama") ->
  "model.norm='layernorm' (Llama has 'rmsnorm')" for a GPT-2 config.
  """
  for key, value in need.items():
    if getattr(cfg, key) != value:
      return f"model.{key}={getattr(cfg, key)!r} ({family} has {value!r})"
  return None
