"""Int8 weight-only quantization of a trained model, for serving.

Each dense kernel is stored as int8 values `q` and one float32 scale per
output channel (symmetric, no zero point): `scale = max|w| / 127` over the
kernel's contracted (input) dims and `q = round(w / scale)`, so every
weight is off by at most `scale / 2`. The layer computes `(x @ q) * scale`:
the int8 kernel, cast to the compute dtype, goes into the einsum and the
scale multiplies its output. Activations stay in the compute dtype.

What is quantized: every module that declares an `int8_axes` property, a
`{param name: contracted axes}` map (negative, so a scanned stack's leading
layer axis is left alone). In `lm.models` those are `Einsum` (the attention
query/key/value/output projections, the MLP, the untied LM head, the
pooler, BERT's MLM transform and NSP head, the fine-tuning heads) and the
token `Embed` table `[V, D]`, one scale per row: for a tied LM head the
rows are the output channels, and a lookup reads one row with its scale.
Norms, biases, position and token-type tables and T5's relative-position
bias stay float: they are small and added, not multiplied.

Storage convention: the quantized form of param `kernel` is `kernel_q`
(int8, the kernel's shape) beside `kernel_scale` (float32, the kernel's
shape with the contracted dims of size 1); a layer that finds `kernel_q`
among its params computes with it, so training, which never has it, is
untouched and checkpoints stay float. `quantize_trained` turns a restored
float tree (and its shardings) into that form on the devices.

Google's AQT (`aqtp` 0.9) installs and runs on this jax/flax, but it keeps
quantized weights in a separate variable collection filled by a "convert"
pass, needs each layer to swap its einsum for an AQT module and every apply
site (decoding, predict, eval) to pass that collection and a QuantMode,
and reaches into private jax modules (`jax._src`). What is needed here is
weight-only int8 with per-channel scales, a few lines of numerics, so it
is written here.

Legend: L layers (a scanned stack), D input width, C output channels.

Example:
  axes = quantizable_axes(model, seq_len)
  qparams = quantize_params(params, axes)   # kernel -> kernel_q, kernel_scale
  logits, _ = model.apply({"params": qparams}, tokens)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from lm.errors import LmError

MODES = ("none", "int8")
INT8_MAX = 127


def quantized_name(name: str) -> str:
  """The int8 values of param `name`: `kernel` -> `kernel_q`."""
  return f"{name}_q"


def scale_name(name: str) -> str:
  """The per-channel scales of param `name`: `kernel` -> `kernel_scale`."""
  return f"{name}_scale"


def check_mode(quantize: str | None) -> str:
  """`quantize` as one of `MODES` (None is "none"); LmError otherwise."""
  mode = quantize or "none"
  if mode not in MODES:
    raise LmError(f"--quantize={quantize} is not known; use one of "
                  f"{', '.join(MODES)}.")
  return mode


def quantize_array(w: jax.Array, contracted: tuple[int, ...]
                   ) -> tuple[jax.Array, jax.Array]:
  """(int8 `q`, float32 `scale`) of `w`, one scale per output channel.

  `contracted` are the axes summed over in the matmul; `scale` keeps them
  with size 1, so `q * scale` broadcasts back to `w`.

  Example: quantize_array(jnp.array([[1., -4.], [0.5, 2.]]), (0,))
  -> q [[127, -127], [64, 64]], scale [[1/127, 4/127]].
  """
  w = w.astype(jnp.float32)
  amax = jnp.max(jnp.abs(w), axis=contracted, keepdims=True)
  scale = amax / INT8_MAX
  safe = jnp.where(scale > 0, scale, 1.0)      # an all-zero channel -> q = 0
  q = jnp.clip(jnp.round(w / safe), -INT8_MAX, INT8_MAX).astype(jnp.int8)
  return q, scale


def dequantize(q: jax.Array, scale: jax.Array, dtype=jnp.float32) -> jax.Array:
  """`q * scale` in `dtype`: the kernel the int8 form stands for."""
  return q.astype(dtype) * scale.astype(dtype)


def int8_einsum(equation: str, x: jax.Array, q: jax.Array, scale: jax.Array,
                dtype, out_dtype=None) -> jax.Array:
  """`einsum(equation, x, q * scale)` computed as `einsum(x, q) * scale`.

  `x` and `q` are cast to `dtype` (int8 values are exact in float32 and
  bfloat16); the product accumulates in `out_dtype` (None: `dtype`). Every
  kernel dim that is not contracted must appear in the output, where the
  scale is laid out.

  Example: "BTD,DNH->BTNH" with q `[D, N, H]` and scale `[1, N, H]`
  multiplies the `[B, T, N, H]` product by scale `[N, H]`.
  """
  inputs, out = equation.replace(" ", "").split("->")
  kernel = inputs.split(",")[1]
  kept = [c for c in kernel if c in out]
  y = jnp.einsum(equation, x.astype(dtype), q.astype(dtype),
                 preferred_element_type=out_dtype)
  s = scale.reshape([scale.shape[i] for i, c in enumerate(kernel)
                     if c in out])                          # [kept dims]
  s = jnp.transpose(s, [kept.index(c) for c in out if c in kept])
  s = s.reshape([q.shape[kernel.index(c)] if c in kept else 1 for c in out])
  return y * s.astype(y.dtype)


def take_rows(q: jax.Array, scale: jax.Array, ids: jax.Array,
              dtype) -> jax.Array:
  """Rows `ids` of a row-quantized table (`q [V, D]`, `scale [V, 1]`) in
  `dtype`; an id outside [0, V) gives NaN, as a float table's lookup."""
  rows = jnp.take(q, ids, axis=0).astype(dtype)
  return rows * jnp.take(scale, ids, axis=0).astype(dtype)


def quantizable_axes(model: nn.Module, seq_len: int
                     ) -> dict[tuple[str, ...], tuple[int, ...]]:
  """`{param path: contracted axes}` of every param that a module of `model`
  declares quantizable (its `int8_axes`), found by tracing `model.init` on
  `[1, seq_len]` tokens (shapes only, nothing is computed).

  Example: for a scanned `DecoderLM`,
  `("decoder", "layers", "attention", "query", "kernel") -> (-3,)`.
  """
  found: dict[tuple[str, ...], tuple[int, ...]] = {}

  def record(next_fun, args, kwargs, context):
    declared = getattr(type(context.module), "int8_axes", None)
    if isinstance(declared, property):
      for name, contracted in context.module.int8_axes.items():
        path = (*context.module.path, name)
        if found.setdefault(path, contracted) != contracted:
          raise AssertionError(f"param {'/'.join(path)} is contracted over "
                               f"{found[path]} and {contracted}")
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                      jnp.zeros((1, seq_len), jnp.int32)))
  return found


def _flat(tree) -> dict[tuple[str, ...], Any]:
  return flax.traverse_util.flatten_dict(nn.meta.unbox(tree))


def quantize_params(params, axes: dict[tuple[str, ...], tuple[int, ...]]):
  """`params` with each param in `axes` replaced by its `*_q` and `*_scale`
  (`quantize_array`); every other leaf is passed through. Traceable."""
  flat = _flat(params)
  out = {}
  for path, value in flat.items():
    if path in axes:
      contracted = tuple(a % value.ndim for a in axes[path])
      q, scale = quantize_array(value, contracted)
      out[(*path[:-1], quantized_name(path[-1]))] = q
      out[(*path[:-1], scale_name(path[-1]))] = scale
    else:
      out[path] = value
  return flax.traverse_util.unflatten_dict(out)


def quantize_shardings(shardings, axes: dict[tuple[str, ...], tuple[int, ...]]):
  """The shardings of `quantize_params`'s output, from those of the float
  params: `*_q` as the kernel, `*_scale` as the kernel with its contracted
  (size 1) dims replicated."""
  out = {}
  for path, sharding in _flat(shardings).items():
    if path not in axes:
      out[path] = sharding
      continue
    out[(*path[:-1], quantized_name(path[-1]))] = sharding
    spec = tuple(sharding.spec)
    ndim = max(len(spec), max(-a for a in axes[path]))
    spec = spec + (None,) * (ndim - len(spec))
    contracted = {a % ndim for a in axes[path]}
    out[(*path[:-1], scale_name(path[-1]))] = NamedSharding(
        sharding.mesh, PartitionSpec(*[None if i in contracted else s
                                       for i, s in enumerate(spec)]))
  return flax.traverse_util.unflatten_dict(out)


def quantize_trained(model: nn.Module, params, param_shardings, seq_len: int,
                     mode: str = "int8"):
  """(params, shardings) of a restored float model in `mode`'s form:
  unchanged for "none"; for "int8" quantized on the devices, each leaf
  placed as `quantize_shardings` says."""
  if check_mode(mode) == "none":
    return params, param_shardings
  axes = quantizable_axes(model, seq_len)
  flat = _flat(params)
  missing = [p for p in axes if p not in flat]
  if missing:
    raise AssertionError(f"quantizable params {missing[:3]} are not in the "
                         "restored tree")
  shardings = quantize_shardings(param_shardings, axes)
  quantized = jax.jit(lambda p: quantize_params(p, axes),
                      out_shardings=shardings)(params)
  return quantized, shardings


def param_bytes(params) -> int:
  """Bytes held by the leaves of a param tree (arrays or shapes)."""
  return int(sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(nn.meta.unbox(params))))
