"""BERT <-> our `BertModel` (and `TaskModel` classifiers), both directions.

Checkpoints: `BertModel`, `BertForMaskedLM`, `BertForPreTraining` (names
with or without the `bert.` prefix), and the task models
`BertForSequenceClassification`, `BertForTokenClassification` and
`BertForQuestionAnswering` (`TASK_HEADS`).
HF nn.Linear weights are `[out, in]`; ours are `[in, out]` (transposed).
Dimensions: D model width, N heads, H head width, F MLP width, L layers,
V vocabulary, P positions, Y token types, C classes.

  embeddings.word_embeddings        <-> token_embed/embedding     [V, D]
  embeddings.position_embeddings    <-> position_embed/embedding  [P, D]
  embeddings.token_type_embeddings  <-> type_embed/embedding      [Y, D]
  embeddings.LayerNorm              <-> embed_norm
  encoder.layer.i.attention.self.{query,key,value} <-> encoder/layers/attention/*
                                        kernel [L, D, N, H], bias [L, N, H]
  encoder.layer.i.attention.output.dense    <-> attention/out [L, N, H, D]
  encoder.layer.i.attention.output.LayerNorm <-> attention_norm (post-LN)
  encoder.layer.i.intermediate.dense        <-> mlp/wi [L, D, F]
  encoder.layer.i.output.dense              <-> mlp/wo [L, F, D]
  encoder.layer.i.output.LayerNorm          <-> mlp_norm
  pooler.dense                      <-> pooler/dense
  cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias <-> mlm_head
  cls.predictions.decoder.weight     (tied to the word embeddings: not stored)
  cls.seq_relationship              <-> nsp_head/dense            [D, 2]
  classifier / qa_outputs           <-> head/dense [D, C] / [D, 2] (TaskModel;
                                        the encoder then lives under backbone/)
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError
from lm.interop.tensors import Tensors, first_difference, stack
from lm.models.config import ModelConfig, make_model_config

KIND = "BERT"
HEADS = ("pooler", "mlm_head", "nsp_head")
# Task checkpoints: architecture -> (our TaskModel head, HF head name,
# whether the head reads the pooler).
TASK_HEADS = {
    "BertForSequenceClassification": ("sequence", "classifier", True),
    "BertForTokenClassification": ("token", "classifier", False),
    "BertForQuestionAnswering": ("span", "qa_outputs", False),
}
_LAYER = "encoder.layer.{}."
# Our block parameter -> HF name under encoder.layer.i.
_DENSE = {"wi": "intermediate.dense", "wo": "output.dense"}
_NORMS = {"attention_norm": "attention.output.LayerNorm",
          "mlp_norm": "output.LayerNorm"}


def model_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a BERT `config.json`."""
  act = hf.get("hidden_act", "gelu")
  if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
    raise LmError(f"BERT hidden_act {act!r} is not supported; only GELU "
                  "(exact or tanh) models import.")
  position = hf.get("position_embedding_type", "absolute")
  if position != "absolute":
    raise LmError(f"BERT position_embedding_type {position!r} is not "
                  "supported; only 'absolute' position tables import.")
  return make_model_config(
      "bert_base", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      d_ff=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
      type_vocab_size=hf.get("type_vocab_size", 2),
      norm_eps=hf.get("layer_norm_eps", 1e-12),
      dropout=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
      init_std=hf.get("initializer_range", 0.02),
      gelu_approximate=act != "gelu")


def prefix(state: dict) -> str:
  """"bert." when the encoder's tensors carry that prefix, else ""."""
  return "bert." if "bert.embeddings.word_embeddings.weight" in state else ""


def import_params(t: Tensors, cfg: ModelConfig) -> dict:
  """Our BertModel parameters; heads the checkpoint lacks are left out."""
  d, n, l, f = cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.mlp_size
  h = d // n

  def linear(name, n_in, n_out, root=False):      # [out, in] -> [in, out]
    return {"kernel": t.get(name + ".weight", (n_out, n_in), root=root).T,
            "bias": t.get(name + ".bias", (n_out,), root=root)}

  def norm(name, root=False):
    return {"scale": t.get(name + ".weight", (d,), root=root),
            "bias": t.get(name + ".bias", (d,), root=root)}

  def layers(fn):
    trees = [fn(_LAYER.format(i)) for i in range(l)]
    return {k: stack(lambda i, k=k: trees[i][k], l) for k in trees[0]}

  attention = {w: layers(lambda p, w=w: linear(p + "attention.self." + w, d, d))
               for w in ("query", "key", "value")}
  attention["out"] = layers(lambda p: linear(p + "attention.output.dense", d, d))
  for w in ("query", "key", "value"):
    attention[w] = {"kernel": attention[w]["kernel"].reshape(l, d, n, h),
                    "bias": attention[w]["bias"].reshape(l, n, h)}
  attention["out"]["kernel"] = attention["out"]["kernel"].reshape(l, n, h, d)
  block = {"attention": attention,
           "mlp": {"wi": layers(lambda p: linear(p + _DENSE["wi"], d, f)),
                   "wo": layers(lambda p: linear(p + _DENSE["wo"], f, d))}}
  for ours, theirs in _NORMS.items():
    block[ours] = layers(lambda p, theirs=theirs: norm(p + theirs))
  e = "embeddings."
  params = {
      "token_embed": {"embedding": t.get(e + "word_embeddings.weight",
                                         (cfg.vocab_size, d))},
      "position_embed": {"embedding": t.get(e + "position_embeddings.weight",
                                            (cfg.max_len, d))},
      "type_embed": {"embedding": t.get(e + "token_type_embeddings.weight",
                                        (cfg.type_vocab_size, d))},
      "embed_norm": norm(e + "LayerNorm"),
      "encoder": {"layers": block},
  }
  if t.has("pooler.dense.weight"):
    params["pooler"] = {"dense": linear("pooler.dense", d, d)}
  if t.has("cls.predictions.transform.dense.weight", root=True):
    bias_name = ("cls.predictions.bias" if t.has("cls.predictions.bias",
                                                 root=True)
                 else "cls.predictions.decoder.bias")
    params["mlm_head"] = {
        "transform": linear("cls.predictions.transform.dense", d, d, True),
        "transform_norm": norm("cls.predictions.transform.LayerNorm", True),
        "bias": t.get(bias_name, (cfg.vocab_size,), root=True)}
  if t.has("cls.seq_relationship.weight", root=True):
    params["nsp_head"] = {"dense": linear("cls.seq_relationship", d, 2, True)}
  return params


def import_task(t: Tensors, cfg: ModelConfig, architecture: str,
                num_labels: int) -> dict:
  """A `BertFor{Sequence,Token}Classification` or `BertForQuestionAnswering`
  checkpoint as our TaskModel tree `{backbone, head: {dense}}` (the
  backbone keeps the pooler only for sequence classification)."""
  _, name, pooled = TASK_HEADS[architecture]
  backbone = import_params(t, cfg)
  if pooled and "pooler" not in backbone:
    raise LmError(f"{t.source} has no tensor {t.prefix}pooler.dense.weight, "
                  f"which {architecture} reads; the weights are incomplete.")
  for head in HEADS if not pooled else HEADS[1:]:
    backbone.pop(head, None)
  w = t.get(name + ".weight", (num_labels, cfg.d_model), root=True)
  b = t.get(name + ".bias", (num_labels,), root=True)
  return {"backbone": backbone, "head": {"dense": {"kernel": w.T, "bias": b}}}


def unsupported(cfg: ModelConfig) -> str | None:
  """Why `cfg` has no BERT equivalent, or None."""
  need = {"arch": "bert", "position": "learned", "norm": "layernorm",
          "norm_position": "post", "mlp": "gelu", "use_bias": True,
          "tie_embeddings": True,
          # One key/value head per query head, of width D / N.
          "kv_heads": cfg.num_heads, "head_size": cfg.d_model // cfg.num_heads}
  return first_difference(cfg, need, KIND)


def hf_config(cfg: ModelConfig, architecture: str) -> dict:
  """The BERT `config.json` fields for `cfg`."""
  return {"model_type": "bert", "architectures": [architecture],
          "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
          "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads,
          "intermediate_size": cfg.mlp_size,
          "max_position_embeddings": cfg.max_len,
          "type_vocab_size": cfg.type_vocab_size,
          "layer_norm_eps": cfg.norm_eps,
          "hidden_act": "gelu_new" if cfg.gelu_approximate else "gelu",
          "hidden_dropout_prob": cfg.dropout,
          "attention_probs_dropout_prob": cfg.attention_dropout,
          "initializer_range": cfg.init_std,
          "position_embedding_type": "absolute", "tie_word_embeddings": True}


def export_state(params: dict, cfg: ModelConfig, *,
                 root: str = "bert.") -> dict[str, np.ndarray]:
  """The HF state dict of our BertModel `params` (encoder names under
  `root`: "bert." for the heads' models, "" for a bare `BertModel`)."""
  d, l = cfg.d_model, cfg.num_layers
  block = params["encoder"]["layers"]

  def linear(name, tree):
    return {name + ".weight": np.asarray(tree["kernel"]).reshape(-1, tree[
        "bias"].size).T, name + ".bias": np.asarray(tree["bias"]).reshape(-1)}

  def norm(name, tree):
    return {name + ".weight": tree["scale"], name + ".bias": tree["bias"]}

  e = root + "embeddings."
  state = {e + "word_embeddings.weight": params["token_embed"]["embedding"],
           e + "position_embeddings.weight":
               params["position_embed"]["embedding"],
           e + "token_type_embeddings.weight": params["type_embed"]["embedding"],
           **norm(e + "LayerNorm", params["embed_norm"])}
  a = block["attention"]
  for i in range(l):
    p = root + _LAYER.format(i)
    for w in ("query", "key", "value"):
      state.update(linear(p + "attention.self." + w,
                          {"kernel": a[w]["kernel"][i].reshape(d, d),
                           "bias": a[w]["bias"][i].reshape(d)}))
    state.update(linear(p + "attention.output.dense",
                        {"kernel": a["out"]["kernel"][i].reshape(d, d),
                         "bias": a["out"]["bias"][i]}))
    for ours, theirs in _DENSE.items():
      state.update(linear(p + theirs, {k: v[i] for k, v in
                                       block["mlp"][ours].items()}))
    for ours, theirs in _NORMS.items():
      state.update(norm(p + theirs, {k: v[i] for k, v in block[ours].items()}))
  if "pooler" in params:
    state.update(linear(root + "pooler.dense", params["pooler"]["dense"]))
  if "mlm_head" in params:
    m = params["mlm_head"]
    state.update(linear("cls.predictions.transform.dense", m["transform"]))
    state.update(norm("cls.predictions.transform.LayerNorm",
                      m["transform_norm"]))
    state["cls.predictions.bias"] = m["bias"]
  if "nsp_head" in params:
    state.update(linear("cls.seq_relationship", params["nsp_head"]["dense"]))
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def export_task(params: dict, cfg: ModelConfig,
                architecture: str) -> dict[str, np.ndarray]:
  """The state dict of a TaskModel tree as `architecture` (a key of
  `TASK_HEADS`)."""
  _, name, _ = TASK_HEADS[architecture]
  state = export_state(params["backbone"], cfg)
  dense = params["head"]["dense"]
  state[name + ".weight"] = np.asarray(dense["kernel"], np.float32).T
  state[name + ".bias"] = np.asarray(dense["bias"], np.float32)
  return state
