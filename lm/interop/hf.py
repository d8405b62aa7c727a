"""Hugging Face model directories in and out: GPT-2, BERT, Llama, T5 and BART.

`read_hf_dir(path)` reads a local Hugging Face model directory
(`config.json` + `model.safetensors`, or sharded safetensors with
`model.safetensors.index.json`) into an `HfModel`: our `ModelConfig`, our
parameter tree, and the kind of head that tree has (an objective's
`head`: "lm" for GPT-2 and Llama, "pretraining" for BERT with or without
its pretraining heads, the TaskModel heads "sequence", "token" and "span"
for `BertForSequenceClassification`, `BertForTokenClassification` and
`BertForQuestionAnswering`, with their label names, and "seq2seq" for
T5's `T5ForConditionalGeneration` and BART's `BartForConditionalGeneration`
(or a bare `BartModel`, whose head is its tied embedding), both an
`EncoderDecoderLM`). The interop layer
knows heads, never objective names: `lm.experiments` maps a head to the
objective that trains it.
`write_hf_dir(path, ...)` is the inverse: a directory that `transformers`'
`from_pretrained` loads. Only safetensors are read; a `pytorch_model.bin`
is refused (it would need unpickling).

The tensor-name mappings live in `lm.interop.gpt2`, `lm.interop.bert`,
`lm.interop.llama`, `lm.interop.t5` and `lm.interop.bart`.

Example:
  m = read_hf_dir("hf/bert-base-uncased")
  m.head, sorted(m.params)   # "pretraining", [..., "mlm_head", "nsp_head", ...]
  build_model(m.config).apply({"params": m.params}, tokens)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from lm.errors import LmError
from lm.interop import bart, bert, gpt2, llama, t5
from lm.interop.tensors import Tensors, read_state, write_state
from lm.models.config import ModelConfig
from lm.training.workdir import read_json, write_json_atomic

MODEL_TYPES = ("gpt2", "bert", *llama.MODEL_TYPES, t5.MODEL_TYPE,
               bart.MODEL_TYPE)
# A TaskModel head -> the transformers class it exports as.
TASK_CLASSES = {head: arch for arch, (head, _, _) in bert.TASK_HEADS.items()}
BERT_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining",
                      *bert.TASK_HEADS)


@dataclasses.dataclass
class HfModel:
  """A Hugging Face checkpoint in our terms.

  Attributes:
    model_type: "gpt2", "bert", "llama", "mistral", "t5" or "bart".
    architecture: the transformers class, e.g. "BertForPreTraining".
    config: our model config.
    params: our parameter tree (float32 numpy): the bare model's, or for
      task heads a TaskModel tree `{backbone, head}`.
    head: "lm", "pretraining", "sequence", "token", "span" or "seq2seq"
      (see the module docstring).
    labels: class or tag names in id order (classification, tagging).
    hf_config: the `config.json` it came from.
  """

  model_type: str
  architecture: str
  config: ModelConfig
  params: dict
  head: str
  labels: list[str] | None = None
  hf_config: dict = dataclasses.field(default_factory=dict)


def read_config(path: str) -> dict:
  """The `config.json` of the model directory `path`."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise LmError(f"{path} has no config.json; point --hf_dir at a Hugging "
                  "Face model directory.")
  hf = read_json(config_path, "download or save the model again")
  kind = hf.get("model_type")
  if kind not in MODEL_TYPES:
    raise LmError(f"{path} holds a {kind!r} model; importing supports "
                  f"{', '.join(repr(k) for k in MODEL_TYPES)}.")
  return hf


def _labels(hf: dict, num_labels: int) -> list[str]:
  """Label names in class-id order from `id2label` (or "0", "1", ...)."""
  names = hf.get("id2label") or {}
  return [str(names.get(str(i), names.get(i, i))) for i in range(num_labels)]


def read_hf_dir(path: str) -> HfModel:
  """The Hugging Face model directory `path` as an `HfModel`."""
  hf = read_config(path)
  kind = hf["model_type"]
  arch = (hf.get("architectures") or [None])[0]
  try:
    if kind == "gpt2":
      cfg = gpt2.model_config(hf)
      state = read_state(path)
      pre = "transformer." if "transformer.wte.weight" in state else ""
      params = gpt2.import_params(
          Tensors(state, path, kind=gpt2.KIND, prefix=pre), cfg)
      return HfModel(kind, arch or gpt2.ARCHITECTURE, cfg, params, "lm",
                     hf_config=hf)
    if kind in llama.MODEL_TYPES:
      cfg = llama.model_config(hf)
      params = llama.import_params(
          Tensors(read_state(path), path, kind=llama.KIND,
                  prefix=llama.PREFIX), cfg)
      return HfModel(kind, arch or llama.ARCHITECTURE, cfg, params, "lm",
                     hf_config=hf)
    if kind == t5.MODEL_TYPE:
      if arch is not None and arch not in t5.ARCHITECTURES:
        raise LmError(f"{path} holds a {arch}; T5 imports as "
                      f"{' or '.join(t5.ARCHITECTURES)} (the encoder, "
                      "decoder and LM head).")
      cfg = t5.model_config(hf)
      params = t5.import_params(
          Tensors(read_state(path), path, kind=t5.KIND), cfg)
      return HfModel(kind, arch or t5.ARCHITECTURE, cfg, params, t5.HEAD,
                     hf_config=hf)
    if kind == bart.MODEL_TYPE:
      if arch is not None and arch not in bart.ARCHITECTURES:
        raise LmError(f"{path} holds a {arch}; BART imports as "
                      f"{' or '.join(bart.ARCHITECTURES)} (the encoder, "
                      "decoder and tied LM head).")
      generation = os.path.join(path, "generation_config.json")
      cfg = bart.model_config(hf, read_json(
          generation, "fix it or remove it") if os.path.isfile(generation)
                              else None)
      state = read_state(path)
      params = bart.import_params(
          Tensors(state, path, kind=bart.KIND, prefix=bart.prefix(state)), cfg)
      return HfModel(kind, arch or bart.ARCHITECTURE, cfg, params, bart.HEAD,
                     hf_config=hf)
    cfg = bert.model_config(hf)
    state = read_state(path)
    t = Tensors(state, path, kind=bert.KIND, prefix=bert.prefix(state))
    if arch is None:
      arch = ("BertForSequenceClassification" if "classifier.weight" in state
              else "BertForQuestionAnswering" if "qa_outputs.weight" in state
              else "BertForPreTraining")
    if arch not in BERT_ARCHITECTURES:
      raise LmError(f"{path} holds a {arch}; BERT imports as "
                    f"{', '.join(BERT_ARCHITECTURES)}.")
    if arch in bert.TASK_HEADS:
      head = bert.TASK_HEADS[arch][0]
      n = 2 if head == "span" else int(
          hf.get("num_labels") or len(hf.get("id2label") or {}) or 2)
      if hf.get("problem_type") == "regression" or n < 2:
        raise LmError(f"{path} is a regression head (num_labels={n}); only "
                      "classifiers with two or more labels import.")
      labels = None if head == "span" else _labels(hf, n)
      return HfModel(kind, arch, cfg, bert.import_task(t, cfg, arch, n),
                     head, labels=labels, hf_config=hf)
    return HfModel(kind, arch, cfg, bert.import_params(t, cfg), "pretraining",
                   hf_config=hf)
  except KeyError as e:
    raise LmError(f"{path}/config.json has no {e.args[0]!r}, which a "
                  f"{kind} config needs; download or save the model "
                  "again.") from None


def load_hf_dir(path: str) -> tuple[ModelConfig, dict]:
  """`(model config, params)` of the Hugging Face model directory `path`."""
  m = read_hf_dir(path)
  return m.config, m.params


def export_kind(cfg: ModelConfig) -> str:
  """"gpt2", "bert", "llama", "t5" or "bart": the family our `cfg` exports
  as."""
  if cfg.arch == "bert":
    reason = bert.unsupported(cfg)
    if reason is None:
      return "bert"
  elif cfg.arch == "transformer":
    reason = gpt2.unsupported(cfg)
    if reason is None:
      return "gpt2"
    if llama.unsupported(cfg) is None:
      return "llama"
    reason += f"; as Llama: {llama.unsupported(cfg)}"
  elif cfg.arch == "encoder_decoder":
    reason = t5.unsupported(cfg)
    if reason is None:
      return "t5"
    if bart.unsupported(cfg) is None:
      return "bart"
    reason += f"; as BART: {bart.unsupported(cfg)}"
  else:
    reason = f"model.arch={cfg.arch!r}"
  raise LmError(f"this model has no Hugging Face equivalent ({reason}); "
                "only GPT-2-, Llama-, BERT-, T5- and BART-shaped models "
                "export.")


def write_hf_dir(path: str, cfg: ModelConfig, params, *,
                 head: str, labels=None, extra: dict | None = None
                 ) -> list[str]:
  """Writes `config.json` and `model.safetensors` for our model into
  `path`; returns the written files.

  `head` (the run's objective's) decides the class: "lm" ->
  GPT2LMHeadModel or LlamaForCausalLM; "pretraining" -> BertForPreTraining
  (MLM and NSP heads), BertForMaskedLM (MLM head only; no pooler);
  "encoder" (a BERT backbone) -> BertModel, with its pooler when the run
  carries one; "sequence" (a BERT backbone with its pooler) ->
  BertForSequenceClassification, "token" -> BertForTokenClassification,
  both with `labels`; "span" -> BertForQuestionAnswering; "seq2seq" (a
  T5- or BART-shaped encoder-decoder) -> T5ForConditionalGeneration or
  BartForConditionalGeneration. `extra` adds config.json fields (special
  token ids).
  """
  params = _numpy(params)
  kind = export_kind(cfg)
  if kind in ("gpt2", "llama"):
    if head != "lm":
      raise LmError(f"a run with a {head!r} head over a decoder has no "
                    "Hugging Face class; only next-token decoders export.")
    module = gpt2 if kind == "gpt2" else llama
    config = module.hf_config(cfg)
    state = module.export_state(params, cfg)
  elif kind in ("t5", "bart"):
    module = t5 if kind == "t5" else bart
    if head not in t5.HEADS:
      raise LmError(f"a run with a {head!r} head over an encoder-decoder has "
                    "no Hugging Face class; only sequence-to-sequence runs "
                    f"(heads {', '.join(repr(h) for h in t5.HEADS)}) export, "
                    f"as {module.ARCHITECTURE}.")
    config = module.hf_config(cfg)
    state = module.export_state(params, cfg)
  elif head in TASK_CLASSES:
    arch = TASK_CLASSES[head]
    if head == "sequence" and "pooler" not in params["backbone"]:
      raise LmError("BertForSequenceClassification reads the pooler, but this "
                    "classifier pools otherwise (task.pooling); only runs "
                    "with pooling 'pooler' export.")
    config = bert.hf_config(cfg, arch)
    if labels:
      config["id2label"] = {str(i): l for i, l in enumerate(labels)}
      config["label2id"] = {l: i for i, l in enumerate(labels)}
    state = bert.export_task(params, cfg, arch)
  elif head == "pretraining":
    if "nsp_head" in params:
      arch = "BertForPreTraining"
    else:     # BertForMaskedLM has no pooler: a carried one stays behind
      arch = "BertForMaskedLM"
      params = {k: v for k, v in params.items() if k != "pooler"}
    config = bert.hf_config(cfg, arch)
    state = bert.export_state(params, cfg)
  elif head == "encoder":
    config = bert.hf_config(cfg, "BertModel")
    state = bert.export_state(params["backbone"], cfg, root="")
  else:
    raise LmError(f"a run with a {head!r} head has no Hugging Face class; "
                  "export next-token, masked-LM, sentence-encoder, "
                  "classification, tagging or QA runs.")
  config.update(extra or {})
  config["torch_dtype"] = "float32"
  written = [write_state(path, state), os.path.join(path, "config.json")]
  write_json_atomic(written[1], config)
  return written


def _numpy(tree):
  """`tree` with every leaf a float32 numpy array (host copies)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32),
                      tree)
