"""GPT-2 (`GPT2LMHeadModel`) <-> our scanned `DecoderLM`, both directions.

Mapping, per layer i (HF Conv1D weights are `[in, out]`, like our kernels;
dimensions D model width, N heads, H head width, F MLP width, L layers):

  transformer.wte.weight             <-> token_embed/embedding       [V, D]
  transformer.wpe.weight             <-> position_embed/embedding    [P, D]
  transformer.h.i.ln_1.{weight,bias} <-> decoder/layers/attention_norm/{scale,bias}
  transformer.h.i.attn.c_attn.weight [D, 3D] <-> attention/{query,key,value}/kernel
                                         [L, D, N, H] (columns q | k | v)
  transformer.h.i.attn.c_attn.bias   [3D]    <-> attention/*/bias [L, N, H]
  transformer.h.i.attn.c_proj.*      <-> attention/out kernel [L, N, H, D], bias [L, D]
  transformer.h.i.ln_2.*             <-> decoder/layers/mlp_norm
  transformer.h.i.mlp.c_fc.*         <-> mlp/wi [L, D, F];  mlp.c_proj.* <-> mlp/wo
  transformer.ln_f.*                 <-> decoder/final_norm
  lm_head.weight                      (tied to wte: not stored)

Our decoders export as GPT-2 when they have GPT-2's shape: learned
positions, pre-LayerNorm with biases, a GELU MLP, tied embeddings, one
key/value head per query head and head width D / N (`unsupported`).
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError
from lm.interop.tensors import Tensors, first_difference, stack
from lm.models.config import ModelConfig, make_model_config

KIND = "GPT-2"
ARCHITECTURE = "GPT2LMHeadModel"


def model_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a GPT-2 `config.json`."""
  if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get(
      "scale_attn_weights", True):
    raise LmError("this GPT-2 scales attention other than by 1/sqrt(head "
                  "width) (scale_attn_by_inverse_layer_idx or "
                  "scale_attn_weights in config.json); only standard GPT-2 "
                  "attention imports.")
  return make_model_config(
      "small", vocab_size=hf["vocab_size"], max_len=hf["n_positions"],
      d_model=hf["n_embd"], num_layers=hf["n_layer"], num_heads=hf["n_head"],
      d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
      norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      gelu_approximate=hf.get("activation_function", "gelu_new") != "gelu")


def import_params(t: Tensors, cfg: ModelConfig) -> dict:
  """Our DecoderLM parameters from a GPT-2 state dict."""
  d, n, l, f = cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.mlp_size
  h = d // n

  def qkv(i, which):
    w = t.get(f"h.{i}.attn.c_attn.weight", (d, 3 * d))
    return w[:, which * d:(which + 1) * d].reshape(d, n, h)

  def qkv_bias(i, which):
    b = t.get(f"h.{i}.attn.c_attn.bias", (3 * d,))
    return b[which * d:(which + 1) * d].reshape(n, h)

  def dense(name, shape):
    return {"kernel": stack(lambda i: t.get(f"h.{i}.{name}.weight", shape), l),
            "bias": stack(lambda i: t.get(f"h.{i}.{name}.bias", shape[-1:]), l)}

  def norm(name):
    return {"scale": stack(lambda i: t.get(f"h.{i}.{name}.weight", (d,)), l),
            "bias": stack(lambda i: t.get(f"h.{i}.{name}.bias", (d,)), l)}

  attention = {
      name: {"kernel": stack(lambda i, k=k: qkv(i, k), l),
             "bias": stack(lambda i, k=k: qkv_bias(i, k), l)}
      for k, name in enumerate(("query", "key", "value"))}
  out = dense("attn.c_proj", (d, d))
  attention["out"] = {"kernel": out["kernel"].reshape(l, n, h, d),
                      "bias": out["bias"]}
  layers = {"attention": attention, "attention_norm": norm("ln_1"),
            "mlp_norm": norm("ln_2"),
            "mlp": {"wi": dense("mlp.c_fc", (d, f)),
                    "wo": dense("mlp.c_proj", (f, d))}}
  return {"token_embed": {"embedding": t.get("wte.weight",
                                             (cfg.vocab_size, d))},
          "position_embed": {"embedding": t.get("wpe.weight",
                                                (cfg.max_len, d))},
          "decoder": {"layers": layers,
                      "final_norm": {"scale": t.get("ln_f.weight", (d,)),
                                     "bias": t.get("ln_f.bias", (d,))}}}


def unsupported(cfg: ModelConfig) -> str | None:
  """Why `cfg` has no GPT-2 equivalent ("model.x=..."), or None."""
  need = {"arch": "transformer", "position": "learned", "norm": "layernorm",
          "norm_position": "pre", "mlp": "gelu", "use_bias": True,
          "tie_embeddings": True,
          # One key/value head per query head, of width D / N.
          "kv_heads": cfg.num_heads, "head_size": cfg.d_model // cfg.num_heads}
  return first_difference(cfg, need, KIND)


def hf_config(cfg: ModelConfig) -> dict:
  """The GPT-2 `config.json` fields for `cfg`."""
  return {"model_type": "gpt2", "architectures": [ARCHITECTURE],
          "vocab_size": cfg.vocab_size, "n_positions": cfg.max_len,
          "n_embd": cfg.d_model, "n_layer": cfg.num_layers,
          "n_head": cfg.num_heads, "n_inner": cfg.mlp_size,
          "layer_norm_epsilon": cfg.norm_eps,
          "activation_function": "gelu_new" if cfg.gelu_approximate else "gelu",
          "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
          "attn_pdrop": cfg.attention_dropout,
          "initializer_range": cfg.init_std, "tie_word_embeddings": True}


def export_state(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The `GPT2LMHeadModel` state dict of our DecoderLM `params`."""
  d, l = cfg.d_model, cfg.num_layers
  p = params["decoder"]["layers"]
  a = p["attention"]
  state = {"transformer.wte.weight": params["token_embed"]["embedding"],
           "transformer.wpe.weight": params["position_embed"]["embedding"],
           "transformer.ln_f.weight": params["decoder"]["final_norm"]["scale"],
           "transformer.ln_f.bias": params["decoder"]["final_norm"]["bias"]}
  for i in range(l):
    h = f"transformer.h.{i}."
    state[h + "attn.c_attn.weight"] = np.concatenate(
        [a[w]["kernel"][i].reshape(d, d) for w in ("query", "key", "value")], 1)
    state[h + "attn.c_attn.bias"] = np.concatenate(
        [a[w]["bias"][i].reshape(d) for w in ("query", "key", "value")])
    state[h + "attn.c_proj.weight"] = a["out"]["kernel"][i].reshape(d, d)
    state[h + "attn.c_proj.bias"] = a["out"]["bias"][i]
    for ours, theirs in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
      state[h + theirs + ".weight"] = p[ours]["scale"][i]
      state[h + theirs + ".bias"] = p[ours]["bias"][i]
    for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):
      state[h + f"mlp.{theirs}.weight"] = p["mlp"][ours]["kernel"][i]
      state[h + f"mlp.{theirs}.bias"] = p["mlp"][ours]["bias"][i]
  return {k: np.asarray(v, np.float32) for k, v in state.items()}
