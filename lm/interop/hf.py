"""Hugging Face checkpoints in and out (so far: GPT-2 and BERT import).

`load_hf_dir(path)` reads a local Hugging Face model directory
(`config.json` + `model.safetensors`, or sharded safetensors with
`model.safetensors.index.json`) and returns `(ModelConfig, params)` for
`lm.models.build_model`. Only safetensors are read; a `pytorch_model.bin`
is refused (it would need unpickling).

GPT-2 (`GPT2LMHeadModel`) mapping, per layer i (HF Conv1D weights are
`[in, out]`, like our kernels):

  transformer.wte.weight            -> token_embed/embedding      [V, D]
  transformer.wpe.weight            -> position_embed/embedding   [P, D]
  transformer.h.i.ln_1.{weight,bias}-> decoder/layers/attention_norm/{scale,bias}
  transformer.h.i.attn.c_attn.*     -> query/key/value kernels [D, N, H], biases [N, H]
  transformer.h.i.attn.c_proj.*     -> attention/out kernel [N, H, D], bias [D]
  transformer.h.i.ln_2.*            -> decoder/layers/mlp_norm
  transformer.h.i.mlp.c_fc.*        -> mlp/wi [D, F];  mlp.c_proj.* -> mlp/wo [F, D]
  transformer.ln_f.*                -> decoder/final_norm

BERT (`BertModel`, `BertForMaskedLM`, `BertForPreTraining`, with or without
the `bert.` prefix; nn.Linear weights are `[out, in]` and are transposed):

  embeddings.{word,position,token_type}_embeddings -> token/position/type_embed
  embeddings.LayerNorm              -> embed_norm
  encoder.layer.i.attention.self.{query,key,value} -> attention q/k/v
  encoder.layer.i.attention.output.dense / LayerNorm -> attention/out, attention_norm
  encoder.layer.i.intermediate.dense / output.dense  -> mlp/wi, mlp/wo
  encoder.layer.i.output.LayerNorm  -> mlp_norm (post-LN)
  pooler.dense                      -> pooler/dense
  cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias -> mlm_head
  cls.seq_relationship              -> nsp_head/dense
Heads the checkpoint lacks (a bare `BertModel` has no MLM or NSP head) are
missing from the returned tree; `missing_heads` lists them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from lm.errors import LmError
from lm.models.config import ModelConfig, make_model_config


def read_state(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the safetensors file(s) in the directory `path`."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single):
    return load_file(single)
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for name in files:
      state.update(load_file(os.path.join(path, name)))
    return state
  if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
    raise LmError(f"{path} holds pytorch_model.bin, which would have to be "
                  "unpickled; convert it to safetensors first (load it with "
                  "transformers and call save_pretrained(dir, "
                  "safe_serialization=True)).")
  raise LmError(f"{path} has no model.safetensors (or sharded index); point "
                "--hf_dir at a Hugging Face model directory.")


def gpt2_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a GPT-2 `config.json`."""
  return make_model_config(
      "small", vocab_size=hf["vocab_size"], max_len=hf["n_positions"],
      d_model=hf["n_embd"], num_layers=hf["n_layer"], num_heads=hf["n_head"],
      d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
      norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      gelu_approximate=hf.get("activation_function", "gelu_new") != "gelu")


def gpt2_params(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
  """Our (scanned) DecoderLM parameters from a GPT-2 state dict."""
  d, n, l = cfg.d_model, cfg.num_heads, cfg.num_layers
  h = d // n
  prefix = "transformer." if "transformer.wte.weight" in state else ""

  def get(name):
    key = prefix + name
    if key not in state:
      raise LmError(f"the checkpoint has no tensor {key!r}; is it a GPT-2 "
                    "model?")
    return np.asarray(state[key], np.float32)

  def stack(fn):
    return np.stack([fn(i) for i in range(l)])

  def qkv(i, which):
    w = get(f"h.{i}.attn.c_attn.weight")[:, which * d:(which + 1) * d]
    return w.reshape(d, n, h)

  def qkv_bias(i, which):
    return get(f"h.{i}.attn.c_attn.bias")[which * d:(which + 1) * d].reshape(n, h)

  attention = {
      name: {"kernel": stack(lambda i, k=k: qkv(i, k)),
             "bias": stack(lambda i, k=k: qkv_bias(i, k))}
      for k, name in enumerate(("query", "key", "value"))}
  attention["out"] = {
      "kernel": stack(lambda i: get(f"h.{i}.attn.c_proj.weight").reshape(n, h, d)),
      "bias": stack(lambda i: get(f"h.{i}.attn.c_proj.bias"))}
  layers = {
      "attention": attention,
      "attention_norm": {"scale": stack(lambda i: get(f"h.{i}.ln_1.weight")),
                         "bias": stack(lambda i: get(f"h.{i}.ln_1.bias"))},
      "mlp_norm": {"scale": stack(lambda i: get(f"h.{i}.ln_2.weight")),
                   "bias": stack(lambda i: get(f"h.{i}.ln_2.bias"))},
      "mlp": {"wi": {"kernel": stack(lambda i: get(f"h.{i}.mlp.c_fc.weight")),
                     "bias": stack(lambda i: get(f"h.{i}.mlp.c_fc.bias"))},
              "wo": {"kernel": stack(lambda i: get(f"h.{i}.mlp.c_proj.weight")),
                     "bias": stack(lambda i: get(f"h.{i}.mlp.c_proj.bias"))}},
  }
  return {"token_embed": {"embedding": get("wte.weight")},
          "position_embed": {"embedding": get("wpe.weight")},
          "decoder": {"layers": layers,
                      "final_norm": {"scale": get("ln_f.weight"),
                                     "bias": get("ln_f.bias")}}}


def bert_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a BERT `config.json`."""
  act = hf.get("hidden_act", "gelu")
  if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
    raise LmError(f"BERT hidden_act {act!r} is not supported; only GELU "
                  "(exact or tanh) models import.")
  return make_model_config(
      "bert_base", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      d_ff=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
      type_vocab_size=hf.get("type_vocab_size", 2),
      norm_eps=hf.get("layer_norm_eps", 1e-12),
      gelu_approximate=act != "gelu")


def bert_params(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
  """Our (scanned) BertModel parameters from a BERT state dict."""
  d, n, l = cfg.d_model, cfg.num_heads, cfg.num_layers
  h = d // n
  prefix = "bert." if "bert.embeddings.word_embeddings.weight" in state else ""

  def get(name, root=None):
    key = (prefix if root is None else root) + name
    if key not in state:
      raise LmError(f"the checkpoint has no tensor {key!r}; is it a BERT "
                    "model?")
    return np.asarray(state[key], np.float32)

  def linear(name, root=None):          # nn.Linear [out, in] -> [in, out]
    return get(name + ".weight", root).T, get(name + ".bias", root)

  def stack(fn):
    return np.stack([fn(i) for i in range(l)])

  def layer(i, name):
    return f"encoder.layer.{i}.{name}"

  attention = {}
  for which in ("query", "key", "value"):
    attention[which] = {
        "kernel": stack(lambda i, w=which: linear(
            layer(i, f"attention.self.{w}"))[0].reshape(d, n, h)),
        "bias": stack(lambda i, w=which: linear(
            layer(i, f"attention.self.{w}"))[1].reshape(n, h))}
  attention["out"] = {
      "kernel": stack(lambda i: linear(
          layer(i, "attention.output.dense"))[0].reshape(n, h, d)),
      "bias": stack(lambda i: linear(layer(i, "attention.output.dense"))[1])}

  def norm(name):
    return {"scale": get(name + ".weight"), "bias": get(name + ".bias")}

  def stacked_norm(name):
    return {"scale": stack(lambda i: get(layer(i, name) + ".weight")),
            "bias": stack(lambda i: get(layer(i, name) + ".bias"))}

  layers = {
      "attention": attention,
      "attention_norm": stacked_norm("attention.output.LayerNorm"),
      "mlp_norm": stacked_norm("output.LayerNorm"),
      "mlp": {"wi": {"kernel": stack(lambda i: linear(layer(i, "intermediate.dense"))[0]),
                     "bias": stack(lambda i: linear(layer(i, "intermediate.dense"))[1])},
              "wo": {"kernel": stack(lambda i: linear(layer(i, "output.dense"))[0]),
                     "bias": stack(lambda i: linear(layer(i, "output.dense"))[1])}},
  }
  params = {
      "token_embed": {"embedding": get("embeddings.word_embeddings.weight")},
      "position_embed": {
          "embedding": get("embeddings.position_embeddings.weight")},
      "type_embed": {
          "embedding": get("embeddings.token_type_embeddings.weight")},
      "embed_norm": norm("embeddings.LayerNorm"),
      "encoder": {"layers": layers},
  }
  if prefix + "pooler.dense.weight" in state:
    k, b = linear("pooler.dense")
    params["pooler"] = {"dense": {"kernel": k, "bias": b}}
  if "cls.predictions.transform.dense.weight" in state:
    k, b = linear("cls.predictions.transform.dense", "")
    bias = state.get("cls.predictions.bias",
                     state.get("cls.predictions.decoder.bias"))
    params["mlm_head"] = {
        "transform": {"kernel": k, "bias": b},
        "transform_norm": {
            "scale": get("cls.predictions.transform.LayerNorm.weight", ""),
            "bias": get("cls.predictions.transform.LayerNorm.bias", "")},
        "bias": np.asarray(bias, np.float32)}
  if "cls.seq_relationship.weight" in state:
    k, b = linear("cls.seq_relationship", "")
    params["nsp_head"] = {"dense": {"kernel": k, "bias": b}}
  return params


def load_hf_dir(path: str) -> tuple[ModelConfig, dict]:
  """`(model config, params)` of the Hugging Face model directory `path`."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise LmError(f"{path} has no config.json; point --hf_dir at a Hugging "
                  "Face model directory.")
  with open(config_path) as f:
    hf = json.load(f)
  kind = hf.get("model_type")
  if kind == "gpt2":
    cfg = gpt2_config(hf)
    return cfg, gpt2_params(read_state(path), cfg)
  if kind == "bert":
    cfg = bert_config(hf)
    return cfg, bert_params(read_state(path), cfg)
  raise LmError(f"{path} holds a {kind!r} model; importing supports "
                "'gpt2' and 'bert' so far.")
