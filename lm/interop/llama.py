"""Llama (`LlamaForCausalLM`) <-> our scanned `DecoderLM`, both directions.

Llama is our decoder with `position="rope"` (rotate-half, base
`rope_theta`), `norm="rmsnorm"` (pre-LN, float32), `mlp="swiglu"`, no biases,
grouped-query attention and an explicit head width. HF nn.Linear weights are
`[out, in]`; ours are `[in, out]` (transposed). Dimensions: D model width,
N query heads, K key/value heads, H head width, F MLP width, L layers,
V vocabulary. Per layer i, under `model.`:

  embed_tokens.weight                   <-> token_embed/embedding     [V, D]
  layers.i.input_layernorm.weight       <-> decoder/layers/attention_norm/scale
  layers.i.self_attn.q_proj.weight [N*H, D] <-> attention/query/kernel
                                            [L, D, N, H]
  layers.i.self_attn.{k,v}_proj.weight [K*H, D] <-> attention/{key,value}/kernel
                                            [L, D, K, H]
  layers.i.self_attn.o_proj.weight [D, N*H] <-> attention/out/kernel
                                            [L, N, H, D]
  layers.i.post_attention_layernorm.weight <-> decoder/layers/mlp_norm/scale
  layers.i.mlp.gate_proj.weight [F, D]  <-> mlp/wi_gate/kernel        [L, D, F]
  layers.i.mlp.up_proj.weight   [F, D]  <-> mlp/wi_up/kernel          [L, D, F]
  layers.i.mlp.down_proj.weight [D, F]  <-> mlp/wo/kernel             [L, F, D]
  norm.weight                           <-> decoder/final_norm/scale  [D]
  lm_head.weight (no prefix)   [V, D]   <-> unembed/kernel [D, V]; with
                                            tie_word_embeddings it is the
                                            embedding and is not stored

Mistral checkpoints without a sliding window (`sliding_window: null`) have
the same tensors and math and import too; everything exports as Llama.
Refused on import, with one sentence: RoPE scaling (any `rope_type` but
"default"), an activation other than SiLU, attention or MLP biases (so
Qwen2, whose query/key/value projections have biases, is not read here).

Example:
  hf = json.load(open(f"{path}/config.json"))
  cfg = model_config(hf)
  params = import_params(Tensors(read_state(path), path, kind=KIND,
                                 prefix=PREFIX), cfg)
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError
from lm.interop.tensors import Tensors, check_config, first_difference, stack
from lm.models.config import ModelConfig, make_model_config

KIND = "Llama"
ARCHITECTURE = "LlamaForCausalLM"
MODEL_TYPES = ("llama", "mistral")
PREFIX = "model."
_LAYER = "layers.{}."
# Our attention projection -> HF name under layers.i.self_attn.
_ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
# Our MLP projection -> HF name under layers.i.mlp.
_MLP = {"wi_gate": "gate_proj", "wi_up": "up_proj", "wo": "down_proj"}
_NORMS = {"attention_norm": "input_layernorm",
          "mlp_norm": "post_attention_layernorm"}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size",
             "num_hidden_layers", "num_attention_heads")


def rope_settings(hf: dict) -> tuple[str, float]:
  """`(rope_type, rope_theta)` of a config.json, old or new layout.

  transformers 5 writes `rope_parameters: {"rope_type": ..., "rope_theta":
  ...}`; earlier versions write a top-level `rope_theta` and an optional
  `rope_scaling: {"rope_type" (or "type"): ...}`.

  >>> rope_settings({"rope_parameters": {"rope_type": "default",
  ...                                     "rope_theta": 5e5}})
  ('default', 500000.0)
  >>> rope_settings({"rope_theta": 1e4, "rope_scaling": None})
  ('default', 10000.0)
  """
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  kind = (params.get("rope_type") or params.get("type")
          or scaling.get("rope_type") or scaling.get("type") or "default")
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  return kind, float(theta)


def model_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a Llama (or window-less Mistral) `config.json`.

  Raises LmError naming the field when the checkpoint uses something our
  decoder has no equivalent for.
  """
  check_config(hf, MODEL_TYPES, "Llama", KIND, _REQUIRED)
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise LmError(f"config.json has hidden_act {act!r} but our SwiGLU MLP "
                  "uses SiLU; only checkpoints with hidden_act 'silu' "
                  "import.")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key, False):
      raise LmError(f"config.json sets {key}=true but our Llama decoder has "
                    f"no biases; only checkpoints with {key}=false import.")
  rope_type, theta = rope_settings(hf)
  if rope_type != "default":
    raise LmError(f"config.json asks for RoPE scaling rope_type "
                  f"{rope_type!r}, which our RoPE does not implement; only "
                  "rope_type 'default' (unscaled) checkpoints import.")
  if hf.get("sliding_window") is not None:
    raise LmError(f"config.json sets sliding_window={hf['sliding_window']} "
                  "but our attention sees the whole context; only Mistral "
                  "checkpoints with sliding_window null import.")
  d, n = hf["hidden_size"], hf["num_attention_heads"]
  return make_model_config(
      "tiny", arch="transformer", vocab_size=hf["vocab_size"], d_model=d,
      num_layers=hf["num_hidden_layers"], num_heads=n,
      num_kv_heads=hf.get("num_key_value_heads") or n,
      head_dim=hf.get("head_dim") or d // n, d_ff=hf["intermediate_size"],
      max_len=hf.get("max_position_embeddings", 2048), position="rope",
      rope_theta=theta, norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
      norm_position="pre", mlp="swiglu", use_bias=False,
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), dropout=0.0,
      attention_dropout=float(hf.get("attention_dropout", 0.0)),
      init_std=hf.get("initializer_range", 0.02))


def import_params(t: Tensors, cfg: ModelConfig) -> dict:
  """Our DecoderLM parameters from a `LlamaForCausalLM` state dict.

  `t` addresses names under `model.` (`prefix=PREFIX`); `lm_head.weight` is
  read from the root when the embeddings are untied.
  """
  d, l, f, v = cfg.d_model, cfg.num_layers, cfg.mlp_size, cfg.vocab_size
  n, k, h = cfg.num_heads, cfg.kv_heads, cfg.head_size

  def weight(i, name, n_out, n_in):          # [out, in] -> [in, out]
    return t.get(_LAYER.format(i) + name + ".weight", (n_out, n_in)).T

  heads = {"query": n, "key": k, "value": k}
  attention = {
      ours: {"kernel": stack(lambda i, w=theirs, m=heads[ours]: weight(
          i, f"self_attn.{w}", m * h, d).reshape(d, m, h), l)}
      for ours, theirs in _ATTENTION.items()}
  attention["out"] = {"kernel": stack(lambda i: weight(
      i, "self_attn.o_proj", d, n * h).reshape(n, h, d), l)}
  shapes = {"wi_gate": (f, d), "wi_up": (f, d), "wo": (d, f)}
  mlp = {ours: {"kernel": stack(lambda i, w=theirs, s=shapes[ours]: weight(
      i, f"mlp.{w}", *s), l)} for ours, theirs in _MLP.items()}
  layers = {"attention": attention, "mlp": mlp}
  for ours, theirs in _NORMS.items():
    layers[ours] = {"scale": stack(
        lambda i, w=theirs: t.get(_LAYER.format(i) + w + ".weight", (d,)), l)}
  params = {"token_embed": {"embedding": t.get("embed_tokens.weight", (v, d))},
            "decoder": {"layers": layers,
                        "final_norm": {"scale": t.get("norm.weight", (d,))}}}
  if not cfg.tie_embeddings:
    params["unembed"] = {"kernel": t.get("lm_head.weight", (v, d),
                                         root=True).T}
  return params


def unsupported(cfg: ModelConfig) -> str | None:
  """Why `cfg` has no Llama equivalent ("model.x=..."), or None."""
  need = {"arch": "transformer", "position": "rope", "norm": "rmsnorm",
          "norm_position": "pre", "mlp": "swiglu", "use_bias": False}
  return first_difference(cfg, need, KIND)


def hf_config(cfg: ModelConfig) -> dict:
  """The Llama `config.json` fields for `cfg`.

  The RoPE base is written both as transformers 5's `rope_parameters` and
  as the older top-level `rope_theta`, so either version reads it.
  """
  return {"model_type": "llama", "architectures": [ARCHITECTURE],
          "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
          "intermediate_size": cfg.mlp_size,
          "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads,
          "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size,
          "hidden_act": "silu", "max_position_embeddings": cfg.max_len,
          "rms_norm_eps": cfg.norm_eps,
          "rope_parameters": {"rope_type": "default",
                              "rope_theta": cfg.rope_theta},
          "rope_theta": cfg.rope_theta, "attention_bias": False,
          "mlp_bias": False, "attention_dropout": cfg.attention_dropout,
          "initializer_range": cfg.init_std,
          "tie_word_embeddings": cfg.tie_embeddings}


def export_state(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The `LlamaForCausalLM` state dict of our DecoderLM `params`.

  With tied embeddings `lm_head.weight` is left out (transformers ties it).
  """
  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
  p = params["decoder"]["layers"]
  a = p["attention"]

  def host(x):
    return np.asarray(x, np.float32)

  state = {PREFIX + "embed_tokens.weight": params["token_embed"]["embedding"],
           PREFIX + "norm.weight": params["decoder"]["final_norm"]["scale"]}
  if not cfg.tie_embeddings:
    state["lm_head.weight"] = host(params["unembed"]["kernel"]).T
  heads = {"query": n, "key": k, "value": k}
  for i in range(cfg.num_layers):
    layer = PREFIX + _LAYER.format(i)
    for ours, theirs in _ATTENTION.items():
      kernel = host(a[ours]["kernel"][i]).reshape(d, heads[ours] * h)
      state[layer + f"self_attn.{theirs}.weight"] = kernel.T
    state[layer + "self_attn.o_proj.weight"] = host(
        a["out"]["kernel"][i]).reshape(n * h, d).T
    for ours, theirs in _MLP.items():
      state[layer + f"mlp.{theirs}.weight"] = host(
          p["mlp"][ours]["kernel"][i]).T
    for ours, theirs in _NORMS.items():
      state[layer + theirs + ".weight"] = p[ours]["scale"][i]
  return {name: np.ascontiguousarray(host(x)) for name, x in state.items()}
