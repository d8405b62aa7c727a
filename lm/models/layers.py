"""Building blocks: einsum projections, norms, MLP and token embedding.

Every parameter is created full-shape with `nn.with_logical_partitioning`, so
a rule table (not the model) decides how it is sharded. Computation runs in
the config's compute dtype; norms are computed in float32 and logits are
returned in float32.

The norms are functions with their own backward pass (`layer_norm`,
`rms_norm`): the closed-form gradient of a normalised row. Differentiating
the forward formula instead gives XLA a chain of elementwise ops per norm,
and on the CPU backend its fusion recomputes those chains inside each
consumer, down the whole residual stream (seen in `benchmarks/step_profile.py`
as fusions of 70+ operands): the train step at 4 layers x 128 went from 74
to 62 ms with these backward passes.

On the CPU backend a projection is one 2-D matmul (`projection`): the
leading dims of the input and the kernel's output dims are flattened around
it. As an N-d `dot_general`, XLA:CPU sent the MLP's weight gradient to a
plain dot that needed the GELU's backward recomputed inside a transposed
copy of `[B*T, F]`: 2.4 ms a layer at 4 layers x 128 (the layer's whole
MLP forward and backward took 7.2 ms as einsums, 3.8 ms as 2-D matmuls).

Legend: B batch, T length, D model width, F MLP width, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models.quantize import (int8_einsum, quantized_name, scale_name,
                                take_rows)
from lm.models.config import ModelConfig
from lm.parallel import axes

Dtype = Any


def param_std(config: ModelConfig, role: str) -> float:
  """Init std of a weight by its role under `config.init`.

  Roles: "embed" (token embedding), "query", "key", "value", "out" (the
  attention output projection), "mlp_in", "mlp_out", "relative" (the
  relative-position bias table), "head" (an untied output layer).
  "normal": `init_std`, with "out" and "mlp_out" scaled by 1/sqrt(2L)
  (`out_proj_std`). "t5": fan-in scaling as Mesh TensorFlow's T5, so that
  every projection of a unit-variance input starts near unit variance
  (RMSNorm carries no scale of its own): embedding 1, query (D * H)^-1/2
  (T5's attention has no 1/sqrt(H): it is folded in here), "out"
  (N * H)^-1/2, "mlp_out" F^-1/2, the rest D^-1/2 (including the untied
  head, so that the first logits are near unit scale).

  >>> from lm.models.config import make_model_config
  >>> param_std(make_model_config("t5_tiny", vocab_size=64), "query")
  0.03125
  """
  if config.init == "t5":
    d = config.d_model
    return {"embed": 1.0, "query": (d * config.head_size) ** -0.5,
            "out": (config.num_heads * config.head_size) ** -0.5,
            "mlp_out": config.mlp_size ** -0.5}.get(role, d ** -0.5)
  if role in ("out", "mlp_out"):
    return out_proj_std(config)
  return config.init_std


def out_proj_std(config: ModelConfig) -> float:
  """Init std of projections that write into the residual stream.

  GPT-2 scales these by 1/sqrt(2L) (two residual writes per block) so the
  residual stream's variance does not grow with depth.
  """
  return config.init_std / math.sqrt(2 * config.num_layers)


def _matmul_split(equation: str) -> tuple[int, int] | None:
  """(leading dims of x, contracted dims) when `equation` contracts the last
  dims of x with the first dims of the kernel and writes x's leading dims
  then the kernel's other dims, in order ("BTD,DNH->BTNH": (2, 1));
  otherwise None."""
  inputs, out = equation.replace(" ", "").split("->")
  xs, ks = inputs.split(",")
  for c in range(1, min(len(xs), len(ks)) + 1):
    if (xs[len(xs) - c:] == ks[:c] and out == xs[:len(xs) - c] + ks[c:]
        and len(set(xs + ks)) == len(xs) + len(ks) - c):
      return len(xs) - c, c
  return None


def projection(equation: str, x: jax.Array, kernel: jax.Array,
               preferred_element_type=None) -> jax.Array:
  """`jnp.einsum(equation, x, kernel)`; on the CPU backend, when the equation
  is a matmul over x's last dims (see `_matmul_split`), computed as one 2-D
  matmul of reshaped operands (the module docstring says why).

  Example: projection("BTD,DF->BTF", x [2, 3, 4], w [4, 5]) -> [2, 3, 5].
  """
  split = _matmul_split(equation) if jax.default_backend() == "cpu" else None
  if split is None:
    return jnp.einsum(equation, x, kernel,
                      preferred_element_type=preferred_element_type)
  lead, contracted = split
  rows = x.shape[:lead]
  cols = kernel.shape[contracted:]
  y = jnp.matmul(x.reshape(math.prod(rows), -1),
                 kernel.reshape(math.prod(kernel.shape[:contracted]), -1),
                 preferred_element_type=preferred_element_type)
  return y.reshape(rows + cols)


class Einsum(nn.Module):
  """`y = einsum(equation, x, kernel) (+ bias)` with a full-shape kernel.

  Example: a query projection is
  `Einsum("BTD,DNH->BTNH", (D, N, H), (EMBED, HEADS, HEAD_DIM), bias_dims=2)`,
  whose bias has the kernel's last two dims `[N, H]`.

  Attributes:
    equation: einsum string `"<x>,<kernel>-><y>"`.
    shape: kernel shape.
    kernel_axes: one logical axis name per kernel dim.
    bias_dims: how many trailing kernel dims the bias has (0: no bias). The
      output must end with those dims.
    init_std: std of the normal kernel initialiser (biases start at 0).
    dtype: compute dtype; input and kernel are cast to it.
    param_dtype: storage dtype of the parameters.
    out_dtype: accumulate and return in this dtype (e.g. float32 logits from
      bfloat16 inputs); None returns the compute dtype.

  Params quantized for serving (`lm.models.quantize`: `kernel_q` int8 and
  `kernel_scale` in place of `kernel`) are used as they are found:
  `(x @ kernel_q) * kernel_scale`.
  """

  equation: str
  shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  bias_dims: int = 0
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  out_dtype: Dtype | None = None

  @property
  def int8_axes(self) -> dict[str, tuple[int, ...]]:
    """`{"kernel": contracted axes}`, counted from the kernel's end."""
    inputs, out = self.equation.replace(" ", "").split("->")
    kernel = inputs.split(",")[1]
    return {"kernel": tuple(i - len(kernel) for i, c in enumerate(kernel)
                            if c not in out)}

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if len(self.shape) != len(self.kernel_axes):
      raise ValueError(
          f"kernel shape {self.shape} and axes {self.kernel_axes} differ in "
          "rank.")
    if self.has_variable("params", quantized_name("kernel")):
      q = self.get_variable("params", quantized_name("kernel"))
      if q.shape != self.shape:
        raise ValueError(f"kernel_q has shape {q.shape}, expected "
                         f"{self.shape}.")
      y = int8_einsum(
          self.equation, x, q,
          self.get_variable("params", scale_name("kernel")),
          self.dtype, self.out_dtype)
    else:
      kernel = self.param(
          "kernel",
          nn.with_logical_partitioning(nn.initializers.normal(self.init_std),
                                       self.kernel_axes),
          self.shape, self.param_dtype)
      y = projection(self.equation, x.astype(self.dtype),
                     kernel.astype(self.dtype), self.out_dtype)
    if self.bias_dims:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                       self.kernel_axes[-self.bias_dims:]),
          self.shape[-self.bias_dims:], self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array | None,
               eps: float) -> jax.Array:
  """`(x - mean) / sqrt(var + eps) * scale (+ bias)` over the last axis of
  float32 `x`, with the closed-form backward pass.

  Example: layer_norm(jnp.array([[1., 3.]]), jnp.ones(2), None, 0.0)
  -> [[-1., 1.]].
  """
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
                       + eps)
  xhat = centred * rstd
  y = xhat * scale
  if bias is not None:
    y = y + bias
  return y, (xhat, rstd, scale, bias is not None)


def _layer_norm_bwd(eps, res, g):
  """dx = rstd (g' - mean(g') - xhat mean(g' xhat)), g' = g * scale."""
  del eps
  xhat, rstd, scale, has_bias = res
  rows = tuple(range(g.ndim - 1))
  gs = g * scale
  dx = rstd * (gs - jnp.mean(gs, axis=-1, keepdims=True)
               - xhat * jnp.mean(gs * xhat, axis=-1, keepdims=True))
  return (dx, jnp.sum(g * xhat, axis=rows),
          jnp.sum(g, axis=rows) if has_bias else None)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """`x / sqrt(mean(x^2) + eps) * scale` over the last axis of float32 `x`,
  with the closed-form backward pass."""
  return _rms_norm_fwd(x, scale, eps)[0]


def _rms_norm_fwd(x, scale, eps):
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
  xhat = x * rstd
  return xhat * scale, (xhat, rstd, scale)


def _rms_norm_bwd(eps, res, g):
  """dx = rstd (g' - xhat mean(g' xhat)), g' = g * scale."""
  del eps
  xhat, rstd, scale = res
  gs = g * scale
  dx = rstd * (gs - xhat * jnp.mean(gs * xhat, axis=-1, keepdims=True))
  return dx, jnp.sum(g * xhat, axis=tuple(range(g.ndim - 1)))


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, computed in float32.

  Attributes:
    eps: added to the variance.
    use_bias: learn a shift `bias` besides the gain `scale`.
    dtype: output dtype.
    param_dtype: storage dtype of `scale` and `bias`.
  """

  eps: float = 1e-5
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones_init(),
                                     (axes.NORM,)),
        (dim,), self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                       (axes.NORM,)),
          (dim,), self.param_dtype).astype(jnp.float32)
    y = layer_norm(x.astype(jnp.float32), scale.astype(jnp.float32), bias,
                   self.eps)
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm (no centring, no bias), computed in float32.

  Attributes:
    eps: added to the mean square.
    dtype: output dtype.
    param_dtype: storage dtype of `scale`.
  """

  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones_init(),
                                     (axes.NORM,)),
        (x.shape[-1],), self.param_dtype)
    y = rms_norm(x.astype(jnp.float32), scale.astype(jnp.float32), self.eps)
    return y.astype(self.dtype)


def make_norm(config: ModelConfig, name: str | None = None) -> nn.Module:
  """The norm chosen by `config.norm`, named `name`."""
  if config.norm == "rmsnorm":
    return RMSNorm(eps=config.norm_eps, dtype=config.compute_dtype,
                   param_dtype=config.weight_dtype, name=name)
  return LayerNorm(eps=config.norm_eps, use_bias=config.use_bias,
                   dtype=config.compute_dtype, param_dtype=config.weight_dtype,
                   name=name)


class Mlp(nn.Module):
  """Position-wise feed-forward network.

  "gelu": `wo(gelu(wi(x)))` (tanh-approximate GELU, as GPT-2, or the exact
  erf GELU, as BERT, when `config.gelu_approximate` is False).
  "relu": `wo(relu(wi(x)))` (the original Transformer, T5 v1.0).
  "swiglu": `wo(silu(wi_gate(x)) * wi_up(x))`; "geglu" the same with GELU
  (T5 v1.1's gated-GELU, approximate as `config.gelu_approximate`).
  Biases follow `config.use_bias`. Dropout on the output is the residual
  dropout applied by the block.

  Attributes:
    config: model config.
  """

  config: ModelConfig

  def _proj(self, equation: str, shape: tuple[int, int],
            kernel_axes: tuple[str, str], std: float, name: str) -> Einsum:
    cfg = self.config
    return Einsum(equation, shape, kernel_axes, bias_dims=int(cfg.use_bias),
                  init_std=std, dtype=cfg.compute_dtype,
                  param_dtype=cfg.weight_dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `[B, T, D]` to `[B, T, D]`."""
    cfg = self.config
    d, f = cfg.d_model, cfg.mlp_size
    up_axes = (axes.EMBED, axes.MLP)
    hidden_axes = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP)
    std_in = param_std(cfg, "mlp_in")
    if cfg.mlp in ("swiglu", "geglu"):
      gate = self._proj("BTD,DF->BTF", (d, f), up_axes, std_in, "wi_gate")(x)
      up = self._proj("BTD,DF->BTF", (d, f), up_axes, std_in, "wi_up")(x)
      act = (nn.silu(gate) if cfg.mlp == "swiglu"
             else nn.gelu(gate, approximate=cfg.gelu_approximate))
      h = act * up  # [B, T, F]
    elif cfg.mlp == "relu":
      h = nn.relu(self._proj("BTD,DF->BTF", (d, f), up_axes, std_in,
                             "wi")(x))  # [B, T, F]
    else:
      h = nn.gelu(self._proj("BTD,DF->BTF", (d, f), up_axes, std_in,
                             "wi")(x),
                  approximate=cfg.gelu_approximate)  # [B, T, F]
    h = nn.with_logical_constraint(h, hidden_axes)
    return self._proj("BTF,FD->BTD", (f, d), (axes.MLP, axes.EMBED),
                      param_std(cfg, "mlp_out"), "wo")(h)


class Embed(nn.Module):
  """Token embedding `[V, D]`; `attend` is the tied LM head.

  A table quantized for serving (`embedding_q` int8 `[V, D]` and
  `embedding_scale` `[V, 1]`, one scale per row; `lm.models.quantize`) is
  used as it is found, for lookups and for `attend`.

  Attributes:
    config: model config (vocab_size, d_model, init_std, dtypes).
  """

  config: ModelConfig

  @property
  def int8_axes(self) -> dict[str, tuple[int, ...]]:
    """`{"embedding": (-1,)}`: one scale per row (per token)."""
    return {"embedding": (-1,)}

  def setup(self):
    cfg = self.config
    name = quantized_name("embedding")
    if self.has_variable("params", name):
      self.embedding = None
      self.embedding_q = self.get_variable("params", name)
      self.embedding_scale = self.get_variable(
          "params", scale_name("embedding"))
      return
    self.embedding_q = None
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(param_std(cfg, "embed")),
            (axes.VOCAB, axes.EMBED)),
        (cfg.vocab_size, cfg.d_model), cfg.weight_dtype)  # [V, D]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Looks up int `tokens [B, T]`; returns `[B, T, D]` (compute dtype).

    An id outside [0, V) gives NaN (`jnp.take`'s fill mode), so a tokenizer
    and model that disagree fail loudly instead of silently clamping.
    """
    if self.embedding_q is not None:
      return take_rows(self.embedding_q, self.embedding_scale,
                                tokens, self.config.compute_dtype)
    return jnp.take(self.embedding, tokens, axis=0).astype(
        self.config.compute_dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits `x @ embedding^T`: `[B, T, D]` -> float32 `[B, T, V]`."""
    dtype = self.config.compute_dtype
    if self.embedding_q is not None:
      return int8_einsum("BTD,VD->BTV", x, self.embedding_q,
                                  self.embedding_scale, dtype, jnp.float32)
    return jnp.einsum("BTD,VD->BTV", x.astype(dtype),
                      self.embedding.astype(dtype),
                      preferred_element_type=jnp.float32)
