"""BART (`BartForConditionalGeneration`) <-> our `EncoderDecoderLM`, both ways.

BART is our encoder-decoder with learned positions read two rows on
(`position_offset=2`: the table has max_position_embeddings + 2 rows and
position p reads row p + 2), a LayerNorm after the token + position
embeddings of each stack (`embed_norm`), post-LN LayerNorm blocks with
biases (eps 1e-5, PyTorch's default), attention logits scaled by
H^-0.5, an MLP of `activation_function` ("gelu": exact, "gelu_new" /
"gelu_pytorch_tanh": tanh, "relu"), no final stack norm, the LM head tied
to the shared embedding without scaling (`scale_tied_head=False`) plus
`final_logits_bias` (`logits_bias`), token embeddings times sqrt(D) when
`scale_embedding` (`scale_embeddings`), and the decoder started from
`decoder_start_token_id` (2, BART's EOS: `decoder_start_id`). HF
nn.Linear weights are `[out, in]`; ours are `[in, out]` (transposed).
Dimensions: D model width, N heads, H head width (D / N), F MLP width, V
vocabulary, P positions. Names below drop the `model.` prefix of
`BartForConditionalGeneration` checkpoints (a bare `BartModel`, as
facebook/bart-base ships, has none). For STACK in encoder, decoder and
block i (our `STACK/layers/...` with a leading L axis, or
`STACK/layers_i/...` when `scan_layers` is False):

  shared.weight                       [V, D] <-> token_embed/embedding
  STACK.embed_positions.weight    [P + 2, D] <-> STACK/position_embed/embedding
  STACK.layernorm_embedding.{weight,bias}    <-> STACK/embed_norm/{scale,bias}
  STACK.layers.i.self_attn.{q,k,v}_proj.weight [N*H, D], .bias [N*H]
                   <-> attention/{query,key,value}/kernel [D, N, H], bias [N, H]
  STACK.layers.i.self_attn.out_proj.weight [D, N*H], .bias [D]
                   <-> attention/out/kernel [N, H, D], bias [D]
  STACK.layers.i.self_attn_layer_norm.{weight,bias}
                   <-> attention_norm/{scale,bias}
  decoder.layers.i.encoder_attn.*            <-> cross_attention/* (as above)
  decoder.layers.i.encoder_attn_layer_norm.* <-> cross_attention_norm/*
  STACK.layers.i.fc1.weight [F, D], .bias    <-> mlp/wi/kernel [D, F], bias
  STACK.layers.i.fc2.weight [D, F], .bias    <-> mlp/wo/kernel [F, D], bias
  STACK.layers.i.final_layer_norm.*          <-> mlp_norm/{scale,bias}
  final_logits_bias                   [1, V] <-> logits_bias [V]
  lm_head.weight                      [V, D] <-> unembed/kernel [D, V]
                                                 (untied only)

`STACK.embed_tokens.weight` and `lm_head.weight` are tied copies of
`shared.weight`: read from it, not written. With `tie_word_embeddings`
false, transformers 5 unties all four (earlier versions only the head):
the import then reads `lm_head.weight` as our separate head and requires
both stacks' `embed_tokens` to equal `shared.weight` (ours share one
table), and the export writes them as copies of it. A checkpoint without
`final_logits_bias` (a `BartModel`) gets zeros, as transformers gives it.

Not representable, and refused with one sentence: different encoder and
decoder head counts or MLP widths, another activation, and the pre-LN /
final-norm variants older configs switch on (`normalize_before`,
`add_final_layer_norm`: mBART's layout, which is its own model_type). The
training-only `encoder_layerdrop`, `decoder_layerdrop` and
`activation_dropout` have no counterpart and are not imported.

Example:
  hf = json.load(open(f"{path}/config.json"))
  cfg = model_config(hf)
  state = read_state(path)
  params = import_params(Tensors(state, path, kind=KIND,
                                 prefix=prefix(state)), cfg)
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError
from lm.interop.tensors import (Tensors, block_params, check_config,
                               first_difference)
from lm.models.config import CUSTOM, ModelConfig, make_model_config

KIND = "BART"
MODEL_TYPE = "bart"
ARCHITECTURE = "BartForConditionalGeneration"
# Classes whose checkpoints hold the whole encoder-decoder; a BartModel's
# head is its tied embedding (and a zero logits bias).
ARCHITECTURES = (ARCHITECTURE, "BartModel")
HEAD = "seq2seq"
# BART's learned position table starts two rows on.
POSITION_OFFSET = 2
# PyTorch's nn.LayerNorm epsilon, which BART's norms keep.
NORM_EPS = 1e-5
# HF activation_function -> (our mlp, gelu_approximate).
ACTIVATIONS = {"gelu": ("gelu", False), "gelu_new": ("gelu", True),
               "gelu_pytorch_tanh": ("gelu", True), "relu": ("relu", False)}
_ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
_MLP = {"wi": "fc1", "wo": "fc2"}
_REQUIRED = ("vocab_size", "d_model", "encoder_layers", "decoder_layers",
             "encoder_attention_heads", "encoder_ffn_dim",
             "max_position_embeddings")
# Keys of older BART configs whose non-default values change the layout;
# the value is the one our BART has.
_LAYOUT = {"normalize_before": False, "add_final_layer_norm": False,
           "normalize_embedding": True, "static_position_embeddings": False,
           "add_bias_logits": False, "extra_pos_embeddings": POSITION_OFFSET}
# BART's special ids (bos <s>, pad, eos </s>, which also starts the decoder).
_SPECIAL = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}


def prefix(state: dict) -> str:
  """"model." when the tensors carry that prefix (BartForConditionalGeneration),
  else "" (BartModel)."""
  return "model." if "model.shared.weight" in state else ""


def _parts(cross: bool) -> list[tuple[str, str, str]]:
  """`(our sub-layer, HF module, HF norm)` of a block, in block order."""
  parts = [("attention", "self_attn", "self_attn_layer_norm")]
  if cross:
    parts.append(("cross_attention", "encoder_attn",
                  "encoder_attn_layer_norm"))
  return parts + [("mlp", "", "final_layer_norm")]


def model_config(hf: dict, generation: dict | None = None) -> ModelConfig:
  """Our `ModelConfig` for a BART `config.json` (and the directory's
  `generation_config.json`, `generation`, which `transformers` reads the
  forced tokens from when it has them: `forced_bos_id`, `forced_eos_id`;
  BART's defaults are none and its EOS, 2).

  Raises LmError naming the field when the checkpoint uses something our
  encoder-decoder has no equivalent for.
  """
  check_config(hf, (MODEL_TYPE,), "BART", KIND, _REQUIRED)
  for key, ours in _LAYOUT.items():
    if hf.get(key, ours) != ours:
      raise LmError(f"config.json sets {key}={hf[key]!r}, a layout our "
                    f"encoder-decoder does not build (BART has {ours!r}); "
                    "only BART's own layout imports.")
  for mine, theirs in (("encoder_attention_heads", "decoder_attention_heads"),
                       ("encoder_ffn_dim", "decoder_ffn_dim")):
    if hf.get(theirs, hf[mine]) != hf[mine]:
      raise LmError(f"config.json has {mine}={hf[mine]} but {theirs}="
                    f"{hf[theirs]}; our encoder-decoder has one head count "
                    "and one MLP width for both stacks.")
  act = hf.get("activation_function", "gelu")
  if act not in ACTIVATIONS:
    raise LmError(f"config.json has activation_function {act!r}, which our "
                  "encoder-decoder has no MLP for; only "
                  f"{', '.join(repr(a) for a in ACTIVATIONS)} import.")
  mlp, approximate = ACTIVATIONS[act]
  layers, decoder_layers = hf["encoder_layers"], hf["decoder_layers"]
  heads = hf["encoder_attention_heads"]
  if not heads or hf["d_model"] % heads:
    raise LmError(f"config.json has encoder_attention_heads={heads}, which "
                  f"does not divide d_model={hf['d_model']}; the weights "
                  "cannot be split into heads.")
  start = hf.get("decoder_start_token_id")
  forced = {}
  for key, default in (("forced_bos_token_id", None),
                       ("forced_eos_token_id", _SPECIAL["eos_token_id"])):
    source = generation if generation and key in generation else hf
    value = source.get(key, default)
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, int)):
      where = ("generation_config.json" if source is generation
               else "config.json")
      raise LmError(f"{where} has {key}={value!r}; only one forced token id "
                    "(an integer, or null) imports.")
    forced[key] = value
  return make_model_config(
      CUSTOM, arch="encoder_decoder", vocab_size=hf["vocab_size"],
      d_model=hf["d_model"], num_layers=layers,
      num_decoder_layers=None if decoder_layers == layers else decoder_layers,
      num_heads=heads, num_kv_heads=None, head_dim=None,
      d_ff=hf["encoder_ffn_dim"], max_len=hf["max_position_embeddings"],
      position="learned", position_offset=POSITION_OFFSET, embed_norm=True,
      norm="layernorm", norm_eps=NORM_EPS, norm_position="post", mlp=mlp,
      gelu_approximate=approximate, use_bias=True,
      tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
      scale_tied_head=False, logits_bias=True,
      scale_embeddings=bool(hf.get("scale_embedding", False)),
      decoder_start_id=2 if start is None else int(start),
      forced_bos_id=forced["forced_bos_token_id"],
      forced_eos_id=forced["forced_eos_token_id"],
      dropout=float(hf.get("dropout") or 0.0),
      attention_dropout=float(hf.get("attention_dropout") or 0.0),
      init_std=float(hf.get("init_std") or 0.02))


def _block(t: Tensors, cfg: ModelConfig, pre: str, cross: bool) -> dict:
  """Our parameters of the block whose HF names start with `pre`
  (`encoder.layers.i.`), unstacked."""
  d, n, h, f = cfg.d_model, cfg.num_heads, cfg.head_size, cfg.mlp_size

  def linear(name, n_out, n_in):          # [out, in] -> [in, out]
    return (t.get(pre + name + ".weight", (n_out, n_in)).T,
            t.get(pre + name + ".bias", (n_out,)))

  block = {}
  for ours, module, norm in _parts(cross):
    if ours == "mlp":
      (wi, bi), (wo, bo) = linear("fc1", f, d), linear("fc2", d, f)
      block[ours] = {"wi": {"kernel": wi, "bias": bi},
                     "wo": {"kernel": wo, "bias": bo}}
    else:
      block[ours] = {}
      for mine, hers in _ATTENTION.items():
        w, b = linear(f"{module}.{hers}", n * h, d)
        block[ours][mine] = {"kernel": w.reshape(d, n, h),
                             "bias": b.reshape(n, h)}
      w, b = linear(f"{module}.out_proj", d, n * h)
      block[ours]["out"] = {"kernel": w.reshape(n, h, d), "bias": b}
    block[f"{ours}_norm"] = {"scale": t.get(pre + norm + ".weight", (d,)),
                             "bias": t.get(pre + norm + ".bias", (d,))}
  return block


def _stack_trees(trees: list[dict]) -> dict:
  """The dicts `trees` (same structure) with each leaf stacked on a new
  leading axis."""
  return {k: (_stack_trees([x[k] for x in trees])
              if isinstance(trees[0][k], dict)
              else np.stack([x[k] for x in trees])) for k in trees[0]}


def _stack(t: Tensors, cfg: ModelConfig, name: str) -> dict:
  """Our `encoder` or `decoder` subtree (`name`)."""
  d = cfg.d_model
  cross = name == "decoder"
  blocks = [_block(t, cfg, f"{name}.layers.{i}.", cross)
            for i in range(cfg.decoder_layers if cross else cfg.num_layers)]
  out = {"position_embed": {"embedding": t.get(
             f"{name}.embed_positions.weight",
             (cfg.max_len + cfg.position_offset, d))},
         "embed_norm": {
             "scale": t.get(f"{name}.layernorm_embedding.weight", (d,)),
             "bias": t.get(f"{name}.layernorm_embedding.bias", (d,))}}
  if cfg.scan_layers:
    out["layers"] = _stack_trees(blocks)
  else:
    out.update({f"layers_{i}": b for i, b in enumerate(blocks)})
  return out


def import_params(t: Tensors, cfg: ModelConfig) -> dict:
  """Our EncoderDecoderLM parameters from a `BartForConditionalGeneration`
  (or `BartModel`) state dict, `t` with the prefix `prefix` gives, in
  `cfg.scan_layers`' layout."""
  v, d = cfg.vocab_size, cfg.d_model
  embedding = t.get("shared.weight", (v, d))
  params = {"token_embed": {"embedding": embedding},
            "encoder": _stack(t, cfg, "encoder"),
            "decoder": _stack(t, cfg, "decoder"),
            "logits_bias": (t.get("final_logits_bias", (1, v), root=True)[0]
                            if t.has("final_logits_bias", root=True)
                            else np.zeros((v,), np.float32))}
  if not cfg.tie_embeddings:
    params["unembed"] = {
        "kernel": t.get("lm_head.weight", (v, d), root=True).T}
    for name in ("encoder", "decoder"):
      name += ".embed_tokens.weight"
      if t.has(name) and not np.array_equal(t.get(name, (v, d)), embedding):
        raise LmError(f"{t.source} has a {t.prefix}{name} of its own, not "
                      "shared.weight (tie_word_embeddings is false), but our "
                      "encoder-decoder's stacks read one token embedding; "
                      "only BART with a shared input embedding imports.")
  return params


def unsupported(cfg: ModelConfig) -> str | None:
  """Why `cfg` has no BART equivalent ("model.x=..."), or None."""
  need = {"arch": "encoder_decoder", "position": "learned",
          "position_offset": POSITION_OFFSET, "embed_norm": True,
          "norm": "layernorm", "norm_eps": NORM_EPS, "norm_position": "post",
          "use_bias": True, "scale_attention": True, "logits_bias": True}
  reason = first_difference(cfg, need, KIND)
  if reason is None and cfg.mlp not in ("gelu", "relu"):
    reason = f"model.mlp={cfg.mlp!r} ({KIND} has 'gelu' or 'relu')"
  if reason is None and cfg.tie_embeddings and cfg.scale_tied_head:
    reason = (f"model.scale_tied_head=True ({KIND}'s tied head is not "
              "scaled)")
  if reason is None and cfg.num_heads * cfg.head_size != cfg.d_model:
    reason = (f"model.head_dim={cfg.head_dim} ({KIND}'s heads split "
              "d_model)")
  return reason


def hf_config(cfg: ModelConfig) -> dict:
  """The BART `config.json` fields for `cfg`.

  Special ids are BART's (bos 0, pad 1, eos 2, which also starts the
  decoder unless `cfg.decoder_start_id` says otherwise); `write_hf_dir`'s
  `extra` replaces them with the run's tokenizer's. The forced tokens are
  the model's (`forced_bos_id`, `forced_eos_id`), so `generate` forces
  what `lm`'s decoding forces.
  """
  act = ("relu" if cfg.mlp == "relu"
         else "gelu_new" if cfg.gelu_approximate else "gelu")
  return {"model_type": MODEL_TYPE, "architectures": [ARCHITECTURE],
          "is_encoder_decoder": True, "vocab_size": cfg.vocab_size,
          "d_model": cfg.d_model, "encoder_layers": cfg.num_layers,
          "decoder_layers": cfg.decoder_layers,
          "encoder_attention_heads": cfg.num_heads,
          "decoder_attention_heads": cfg.num_heads,
          "encoder_ffn_dim": cfg.mlp_size, "decoder_ffn_dim": cfg.mlp_size,
          "max_position_embeddings": cfg.max_len,
          "activation_function": act, "dropout": cfg.dropout,
          "attention_dropout": cfg.attention_dropout,
          "activation_dropout": 0.0, "encoder_layerdrop": 0.0,
          "decoder_layerdrop": 0.0, "init_std": cfg.init_std,
          "scale_embedding": cfg.scale_embeddings,
          "tie_word_embeddings": cfg.tie_embeddings, **_SPECIAL,
          "decoder_start_token_id": cfg.decoder_start(_SPECIAL["eos_token_id"]),
          # null, not absent: BART's config reads a missing one as 2
          "forced_eos_token_id": cfg.forced_eos_id,
          **({} if cfg.forced_bos_id is None
             else {"forced_bos_token_id": cfg.forced_bos_id})}


def export_state(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The `BartForConditionalGeneration` state dict of our EncoderDecoderLM
  `params` (either layer layout, as `cfg.scan_layers` says).

  With tied embeddings the copies `model.encoder.embed_tokens.weight`,
  `model.decoder.embed_tokens.weight` and `lm_head.weight` are left out
  (transformers ties them to `model.shared.weight`); untied, the head is
  ours and the stacks' embeddings are copies of the shared one.
  """
  d, n, h = cfg.d_model, cfg.num_heads, cfg.head_size

  def host(x):
    return np.asarray(x, np.float32)

  state = {"model.shared.weight": host(params["token_embed"]["embedding"]),
           "final_logits_bias": host(params["logits_bias"])[None]}
  if not cfg.tie_embeddings:
    state["lm_head.weight"] = host(params["unembed"]["kernel"]).T
    for name in ("encoder", "decoder"):
      state[f"model.{name}.embed_tokens.weight"] = state["model.shared.weight"]
  for name in ("encoder", "decoder"):
    cross = name == "decoder"
    stack, pre = params[name], f"model.{name}."
    state[pre + "embed_positions.weight"] = host(
        stack["position_embed"]["embedding"])
    state[pre + "layernorm_embedding.weight"] = host(
        stack["embed_norm"]["scale"])
    state[pre + "layernorm_embedding.bias"] = host(stack["embed_norm"]["bias"])
    for i in range(cfg.decoder_layers if cross else cfg.num_layers):
      block, layer = block_params(stack, cfg.scan_layers, i), f"{pre}layers.{i}."
      for ours, module, norm in _parts(cross):
        p = block[ours]
        if ours == "mlp":
          for mine, hers in _MLP.items():
            state[layer + hers + ".weight"] = host(p[mine]["kernel"]).T
            state[layer + hers + ".bias"] = host(p[mine]["bias"])
        else:
          for mine, hers in _ATTENTION.items():
            proj = f"{layer}{module}.{hers}."
            state[proj + "weight"] = host(p[mine]["kernel"]).reshape(
                d, n * h).T
            state[proj + "bias"] = host(p[mine]["bias"]).reshape(n * h)
          proj = f"{layer}{module}.out_proj."
          state[proj + "weight"] = host(p["out"]["kernel"]).reshape(
              n * h, d).T
          state[proj + "bias"] = host(p["out"]["bias"])
        state[layer + norm + ".weight"] = host(block[f"{ours}_norm"]["scale"])
        state[layer + norm + ".bias"] = host(block[f"{ours}_norm"]["bias"])
  return {k: np.ascontiguousarray(x) for k, x in state.items()}
