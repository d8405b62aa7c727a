"""T5 (`T5ForConditionalGeneration`) <-> our `EncoderDecoderLM`, both ways.

T5 is our encoder-decoder with `position="relative"` (one bucketed bias
table per stack, stored in block 0), `norm="rmsnorm"` (pre-LN, no biases),
unscaled attention logits and either the gated-GELU MLP of T5 v1.1 and
Flan-T5 (`feed_forward_proj="gated-gelu"`, tanh GELU: mlp "geglu") or the
ReLU MLP of T5 v1.0 (`"relu"`: mlp "relu"). HF nn.Linear weights are
`[out, in]`; ours are `[in, out]` (transposed). Dimensions: D model width,
N heads, H head width (`d_kv`), F MLP width, V vocabulary, R buckets, L
blocks of the stack. For STACK in encoder, decoder and block i (our
`STACK/layers/...` with a leading L axis, or `STACK/layers_i/...` when
`scan_layers` is False):

  shared.weight                   [V, D] <-> token_embed/embedding
  STACK.block.0.layer.0.SelfAttention.relative_attention_bias.weight [R, N]
                                         <-> STACK/relative_bias
  STACK.block.i.layer.0.SelfAttention.{q,k,v}.weight [N*H, D]
                                         <-> attention/{query,key,value}/kernel
                                             [D, N, H]
  STACK.block.i.layer.0.SelfAttention.o.weight [D, N*H]
                                         <-> attention/out/kernel [N, H, D]
  STACK.block.i.layer.0.layer_norm.weight <-> attention_norm/scale
  decoder.block.i.layer.1.EncDecAttention.* <-> cross_attention/* (as above)
  decoder.block.i.layer.1.layer_norm.weight <-> cross_attention_norm/scale
  STACK.block.i.layer.M.DenseReluDense.{wi_0,wi_1}.weight [F, D]
                                         <-> mlp/{wi_gate,wi_up}/kernel [D, F]
      (M = 1 in the encoder, 2 in the decoder; "relu": wi <-> mlp/wi)
  STACK.block.i.layer.M.DenseReluDense.wo.weight [D, F] <-> mlp/wo [F, D]
  STACK.block.i.layer.M.layer_norm.weight <-> mlp_norm/scale
  STACK.final_layer_norm.weight          <-> STACK/final_norm/scale
  lm_head.weight                  [V, D] <-> unembed/kernel [D, V]

`encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` are tied
copies of `shared.weight`: read from it, and not written.

The head. Our `tie_embeddings` means both "the head is the embedding" and
"the decoder output is scaled by D^-0.5 first" (T5 v1.0); untied means
neither (v1.1, Flan-T5). transformers 5 records the scaling as
`scale_decoder_outputs` (and always writes `tie_word_embeddings: true`,
tying `lm_head.weight` to `shared.weight` unless the checkpoint stores a
different one); older versions use `tie_word_embeddings` for both. So
`tie_embeddings` is `scale_decoder_outputs` when present, else
`tie_word_embeddings` (default true); an untied model without its own
`lm_head.weight` reads the embedding as its head, as transformers does. A
scaled decoder output with a separate `lm_head.weight` has no equivalent
and is refused, as is any `feed_forward_proj` but the two above.

The tokenizer. T5's SentencePiece model has no sentinels: its tokenizer
adds `extra_ids` of them (`<extra_id_0>` ... , 100 in T5) after the
pieces, `<extra_id_0>` at the last id; `extra_ids` reads the count from
the tokenizer's settings (`lm.interop.workdir` writes the tokenizer.json).

Example:
  hf = json.load(open(f"{path}/config.json"))
  cfg = model_config(hf)
  params = import_params(Tensors(read_state(path), path, kind=KIND), cfg)
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError
from lm.interop.tensors import (Tensors, block_params, check_config,
                               first_difference)
from lm.models.config import ModelConfig, make_model_config

KIND = "T5"
MODEL_TYPE = "t5"
ARCHITECTURE = "T5ForConditionalGeneration"
# Classes whose checkpoints hold the whole model with its LM head
# (T5WithLMHeadModel is the class's name in early transformers versions).
ARCHITECTURES = (ARCHITECTURE, "T5WithLMHeadModel")
HEAD = "seq2seq"
# Heads that export as T5: fine-tuned ("seq2seq") and span-corruption
# pretrained ("denoising") runs hold the same model.
HEADS = (HEAD, "denoising")
# HF feed_forward_proj -> our mlp. "gated-gelu_new" is what transformers
# turns "gated-gelu" into (the tanh GELU), spelt out.
FEED_FORWARD = {"gated-gelu": "geglu", "gated-gelu_new": "geglu",
                "relu": "relu"}
_EXPORT_FEED_FORWARD = {"geglu": "gated-gelu", "relu": "relu"}
# Our MLP projection -> HF name under DenseReluDense.
_MLP = {"geglu": {"wi_gate": "wi_0", "wi_up": "wi_1", "wo": "wo"},
        "relu": {"wi": "wi", "wo": "wo"}}
_ATTENTION = {"query": "q", "key": "k", "value": "v"}
_REQUIRED = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
             "num_heads")
_BIAS = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
# T5's sentinel count when the tokenizer's settings do not give one.
DEFAULT_EXTRA_IDS = 100
# The keys of the tokenizer's settings that list extra special tokens
# (transformers 5 writes the second).
_SPECIAL_LISTS = ("additional_special_tokens", "extra_special_tokens")


def extra_ids(settings: dict, source: str) -> int:
  """How many sentinels `<extra_id_i>` T5's tokenizer adds after its
  SentencePiece pieces: `extra_ids` of `settings` (a `tokenizer_config.json`
  and `special_tokens_map.json` merged) when it is positive, else the
  sentinels its additional special tokens list, else 100. `source` names the
  files in the one sentence for a value that is not a count.

  Example: extra_ids({"extra_ids": 0, "additional_special_tokens":
  ["<extra_id_0>", "<extra_id_1>"]}, "tokenizer_config.json") -> 2.
  """
  count = settings.get("extra_ids")
  if count is not None and (isinstance(count, bool)
                            or not isinstance(count, int) or count < 0):
    raise LmError(f"{source} gives extra_ids={count!r}; it must be a count "
                  "of sentinel tokens (T5 has 100).")
  if count:
    return count
  listed = set()
  for key in _SPECIAL_LISTS:
    for token in settings.get(key) or ():
      token = token.get("content") if isinstance(token, dict) else token
      if isinstance(token, str) and token.startswith("<extra_id_"):
        listed.add(token)
  return len(listed) or (DEFAULT_EXTRA_IDS if count is None else 0)


def _parts(cross: bool) -> list[tuple[str, str]]:
  """`(our sub-layer, HF module under block.i.layer.M)` in block order."""
  parts = [("attention", "SelfAttention")]
  if cross:
    parts.append(("cross_attention", "EncDecAttention"))
  return parts + [("mlp", "DenseReluDense")]


def model_config(hf: dict) -> ModelConfig:
  """Our `ModelConfig` for a T5 `config.json`.

  Raises LmError naming the field when the checkpoint uses something our
  encoder-decoder has no equivalent for.
  """
  check_config(hf, (MODEL_TYPE,), "T5", KIND, _REQUIRED)
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in FEED_FORWARD:
    raise LmError(f"config.json has feed_forward_proj {proj!r}, which our "
                  "encoder-decoder has no MLP for; only 'gated-gelu' (T5 "
                  "v1.1, Flan-T5) and 'relu' (T5 v1.0) checkpoints import.")
  layers = hf["num_layers"]
  decoder_layers = hf.get("num_decoder_layers") or layers
  scaled = hf.get("scale_decoder_outputs")
  if scaled is None:
    scaled = hf.get("tie_word_embeddings", True)
  rate = float(hf.get("dropout_rate", 0.1))
  return make_model_config(
      "t5_tiny", arch="encoder_decoder", vocab_size=hf["vocab_size"],
      d_model=hf["d_model"], num_layers=layers,
      num_decoder_layers=None if decoder_layers == layers else decoder_layers,
      num_heads=hf["num_heads"], num_kv_heads=None, head_dim=hf["d_kv"],
      d_ff=hf["d_ff"], max_len=hf.get("n_positions") or 512,
      position="relative",
      relative_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_max_distance=hf.get("relative_attention_max_distance", 128),
      norm="rmsnorm", norm_eps=hf.get("layer_norm_epsilon", 1e-6),
      norm_position="pre", mlp=FEED_FORWARD[proj], gelu_approximate=True,
      use_bias=False, scale_attention=False, tie_embeddings=bool(scaled),
      dropout=rate, attention_dropout=rate)


def _block(t: Tensors, cfg: ModelConfig, prefix: str, cross: bool) -> dict:
  """Our parameters of the block whose HF names start with `prefix`
  (`encoder.block.i.`), unstacked."""
  d, n, h, f = cfg.d_model, cfg.num_heads, cfg.head_size, cfg.mlp_size

  def weight(name, n_out, n_in):          # [out, in] -> [in, out]
    return t.get(prefix + name + ".weight", (n_out, n_in)).T

  block = {}
  for m, (ours, theirs) in enumerate(_parts(cross)):
    module = f"layer.{m}.{theirs}."
    if ours == "mlp":
      block[ours] = {
          mine: {"kernel": weight(module + hers, *((d, f) if mine == "wo"
                                                   else (f, d)))}
          for mine, hers in _MLP[cfg.mlp].items()}
    else:
      block[ours] = {
          mine: {"kernel": weight(module + hers, n * h, d).reshape(d, n, h)}
          for mine, hers in _ATTENTION.items()}
      block[ours]["out"] = {
          "kernel": weight(module + "o", d, n * h).reshape(n, h, d)}
    block[f"{ours}_norm"] = {
        "scale": t.get(prefix + f"layer.{m}.layer_norm.weight", (d,))}
  return block


def _stack_trees(trees: list[dict]) -> dict:
  """The dicts `trees` (same structure) with each leaf stacked on a new
  leading axis."""
  return {k: (_stack_trees([x[k] for x in trees])
              if isinstance(trees[0][k], dict)
              else np.stack([x[k] for x in trees])) for k in trees[0]}


def _stack(t: Tensors, cfg: ModelConfig, name: str) -> dict:
  """Our `encoder` or `decoder` subtree (`name`)."""
  cross = name == "decoder"
  blocks = [_block(t, cfg, f"{name}.block.{i}.", cross)
            for i in range(cfg.decoder_layers if cross else cfg.num_layers)]
  out = {"relative_bias": t.get(f"{name}.{_BIAS}",
                                (cfg.relative_buckets, cfg.num_heads)),
         "final_norm": {"scale": t.get(f"{name}.final_layer_norm.weight",
                                       (cfg.d_model,))}}
  if cfg.scan_layers:
    out["layers"] = _stack_trees(blocks)
  else:
    out.update({f"layers_{i}": b for i, b in enumerate(blocks)})
  return out


def import_params(t: Tensors, cfg: ModelConfig) -> dict:
  """Our EncoderDecoderLM parameters from a `T5ForConditionalGeneration`
  state dict (`t` without a prefix), in `cfg.scan_layers`' layout.

  Raises LmError when `lm_head.weight` differs from the embedding although
  `cfg` ties them (see the module notes).
  """
  v, d = cfg.vocab_size, cfg.d_model
  embedding = t.get("shared.weight", (v, d))
  params = {"token_embed": {"embedding": embedding},
            "encoder": _stack(t, cfg, "encoder"),
            "decoder": _stack(t, cfg, "decoder")}
  head = t.get("lm_head.weight", (v, d)) if t.has("lm_head.weight") else None
  if cfg.tie_embeddings:
    if head is not None and not np.array_equal(head, embedding):
      raise LmError(f"{t.source} stores an lm_head.weight that differs from "
                    "shared.weight, but its config.json scales the decoder "
                    "output by d_model**-0.5 (scale_decoder_outputs, or "
                    "tie_word_embeddings, true), which our T5 does only for "
                    "a head tied to the embedding; set "
                    "scale_decoder_outputs to false if the model was trained "
                    "without the scaling, or drop lm_head.weight to tie it.")
  else:
    params["unembed"] = {"kernel": (embedding if head is None else head).T}
  return params


def unsupported(cfg: ModelConfig) -> str | None:
  """Why `cfg` has no T5 equivalent ("model.x=..."), or None."""
  need = {"arch": "encoder_decoder", "position": "relative", "norm": "rmsnorm",
          "norm_position": "pre", "use_bias": False, "scale_attention": False}
  reason = first_difference(cfg, need, KIND)
  if reason is None and cfg.mlp not in _EXPORT_FEED_FORWARD:
    reason = f"model.mlp={cfg.mlp!r} ({KIND} has 'geglu' or 'relu')"
  if reason is None and cfg.mlp == "geglu" and not cfg.gelu_approximate:
    reason = ("model.gelu_approximate=False (T5's gated-GELU is the tanh "
              "approximation)")
  return reason


def hf_config(cfg: ModelConfig) -> dict:
  """The T5 `config.json` fields for `cfg`.

  The head is written both ways (see the module notes): the scaling as
  `scale_decoder_outputs` and, for earlier transformers versions, as
  `tie_word_embeddings`. Special ids are T5's (pad 0, which also starts
  the decoder, and eos 1); `write_hf_dir`'s `extra` replaces them (the
  export writes the run's tokenizer's: `decoder_start_token_id` is its pad
  id, the id `lm` starts the decoder with).
  """
  return {"model_type": MODEL_TYPE, "architectures": [ARCHITECTURE],
          "is_encoder_decoder": True, "vocab_size": cfg.vocab_size,
          "d_model": cfg.d_model, "d_kv": cfg.head_size, "d_ff": cfg.mlp_size,
          "num_layers": cfg.num_layers,
          "num_decoder_layers": cfg.decoder_layers,
          "num_heads": cfg.num_heads,
          "relative_attention_num_buckets": cfg.relative_buckets,
          "relative_attention_max_distance": cfg.relative_max_distance,
          "layer_norm_epsilon": cfg.norm_eps,
          "feed_forward_proj": _EXPORT_FEED_FORWARD[cfg.mlp],
          "dropout_rate": cfg.dropout, "n_positions": cfg.max_len,
          "tie_word_embeddings": cfg.tie_embeddings,
          "scale_decoder_outputs": cfg.tie_embeddings,
          "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


def export_state(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The `T5ForConditionalGeneration` state dict of our EncoderDecoderLM
  `params` (either layer layout, as `cfg.scan_layers` says).

  The tied copies `encoder.embed_tokens.weight` and
  `decoder.embed_tokens.weight` are left out, and so is `lm_head.weight`
  with tied embeddings (transformers ties them to `shared.weight`).
  """
  d, n, h = cfg.d_model, cfg.num_heads, cfg.head_size

  def host(x):
    return np.asarray(x, np.float32)

  state = {"shared.weight": host(params["token_embed"]["embedding"])}
  if not cfg.tie_embeddings:
    state["lm_head.weight"] = host(params["unembed"]["kernel"]).T
  for name in ("encoder", "decoder"):
    cross = name == "decoder"
    stack = params[name]
    state[f"{name}.{_BIAS}"] = host(stack["relative_bias"])
    state[f"{name}.final_layer_norm.weight"] = host(
        stack["final_norm"]["scale"])
    for i in range(cfg.decoder_layers if cross else cfg.num_layers):
      block = block_params(stack, cfg.scan_layers, i)
      for m, (ours, theirs) in enumerate(_parts(cross)):
        module = f"{name}.block.{i}.layer.{m}.{theirs}."
        p = block[ours]
        if ours == "mlp":
          for mine, hers in _MLP[cfg.mlp].items():
            state[module + hers + ".weight"] = host(p[mine]["kernel"]).T
        else:
          for mine, hers in _ATTENTION.items():
            state[module + hers + ".weight"] = host(
                p[mine]["kernel"]).reshape(d, n * h).T
          state[module + "o.weight"] = host(
              p["out"]["kernel"]).reshape(n * h, d).T
        state[f"{name}.block.{i}.layer.{m}.layer_norm.weight"] = host(
            block[f"{ours}_norm"]["scale"])
  return {k: np.ascontiguousarray(x) for k, x in state.items()}
