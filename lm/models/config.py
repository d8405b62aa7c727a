"""Model hyper-parameters: one frozen dataclass and a named size table.

One dataclass describes every architecture: `arch="transformer"` (the
decoder-only `DecoderLM`, the default), `arch="bert"` (the bidirectional
encoder `BertModel` in `lm.models.bert`, with MLM and NSP heads; it also reads
`type_vocab_size`) and `arch="lstm"` (the `LstmLM` baseline in
`lm.models.rnn`, which reads only `vocab_size`, `d_model`, `num_layers`,
`dropout`, `tie_embeddings`, `init_std` and the dtypes).
`lm.models.build_model(cfg)` returns the module `cfg.arch` names.

Experiment configs name a size and override a field or two:

  cfg = make_model_config("small", vocab_size=50257, dropout=0.1)

`vocab_size` defaults to 0, meaning "set it from the tokenizer"; every size
except the GPT-2 ones and `bert_base` leaves it unset, so the caller passes the tokenizer's
vocabulary size as an override. Fields left as `None` (`num_kv_heads`,
`head_dim`, `d_ff`) are derived from the others; read the resolved values
through the `kv_heads`, `head_size` and `mlp_size` properties.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax.numpy as jnp

from lm.errors import LmError

POSITIONS = ("learned", "sinusoidal", "rope", "relative", "none")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
MLPS = ("gelu", "relu", "swiglu", "geglu")
REMATS = ("none", "full", "dots")
DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("xla", "cudnn", "einsum")
ARCHS = ("transformer", "lstm", "bert", "encoder_decoder")
INITS = ("normal", "t5")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a language model (a Transformer, or the LSTM baseline).

  For `arch="lstm"`, `d_model` is the embedding and hidden width, `num_layers`
  the stacked LSTM layers, `dropout` applies to the embedding output, between
  layers and before the head, and `tie_embeddings` ties the head to the input
  embedding; the attention, position, norm and MLP fields are ignored.

  Attributes:
    vocab_size: vocabulary size V; 0 means "set from the tokenizer".
    d_model: model width D.
    num_layers: number of Transformer blocks L.
    num_heads: query heads N.
    num_kv_heads: key/value heads K (None: K = N; 1 < K < N: grouped-query
      attention; K = 1: multi-query attention).
    head_dim: per-head width H (None: D // N).
    d_ff: MLP hidden width F (None: 4 * D).
    max_len: rows of the learned position table (longest position + 1).
    position: "learned", "sinusoidal", "rope", "relative" (T5's bucketed
      relative-position bias on the attention logits, one table of
      `relative_buckets` x N per stack; encoder-decoder only) or "none".
    rope_theta: RoPE base wavelength.
    norm: "layernorm" or "rmsnorm".
    norm_eps: epsilon inside the norm's square root.
    norm_position: "pre" (GPT-2) or "post" (original Transformer / BERT).
    mlp: "gelu" or "relu" (D -> F -> D), "swiglu" (silu(gate) * up) or
      "geglu" (gelu(gate) * up, T5 v1.1's gated-GELU).
    dropout: rate for embedding, residual (attention and MLP output) dropout.
    attention_dropout: rate for dropout on the attention probabilities.
    use_bias: biases on projections and LayerNorm.
    tie_embeddings: the LM head reuses the token embedding table.
    scan_unroll: a scanned stack of at most this many blocks runs its scan
      fully unrolled (0: never): the same stacked parameters, straight-line
      code. Measured on a 2-core CPU: the train step 1.2x faster at 6
      layers x 384 (`benchmarks/train_throughput.py --scan_unroll 0`
      against the default); deeper stacks keep the loop, whose compile time
      does not grow with depth.
    scan_layers: stack the blocks with `nn.scan` (params get a leading layer
      axis) instead of a Python loop.
    remat: "none", "full" (recompute every block activation) or "dots" (save
      matmul outputs without batch dimensions).
    dtype: compute dtype, "float32" or "bfloat16".
    param_dtype: parameter storage dtype.
    attention_impl: "xla" (jax.nn.dot_product_attention), "cudnn" (its
      cuDNN kernel; GPU only) or "einsum" (explicit softmax(QK^T/sqrt(H))V).
    init_std: standard deviation of the normal weight initialiser (for the
      LSTM: embedding and untied head only; its gate kernels use fan-in
      scaling).
    init: "normal" (N(0, init_std), the projections into the residual
      stream scaled by 1/sqrt(2L), as GPT-2) or "t5" (Mesh TensorFlow T5's
      fan-in scaling; see `lm.models.layers.param_std`). The T5 sizes use
      "t5".
    arch: "transformer" (`DecoderLM`), "lstm" (`LstmLM`), "bert"
      (`BertModel`) or "encoder_decoder" (`EncoderDecoderLM`, T5 or the
      original Transformer).
    type_vocab_size: rows of the token-type (segment A / B) embedding table;
      read by "bert" only.
    gelu_approximate: the "gelu" MLP (and BERT's MLM head) uses the tanh
      approximation of GELU, as GPT-2; False uses the exact erf GELU, as
      BERT.
    num_decoder_layers: encoder-decoder only: decoder blocks (None: as many
      as the encoder's `num_layers`).
    relative_buckets: buckets of the "relative" position bias (T5: 32).
    relative_max_distance: distance beyond which relative positions share
      the last bucket (T5: 128).
    scale_attention: multiply attention logits by 1/sqrt(H); T5 does not
      (its initialisation absorbs the scale), so its sizes set False.
    position_offset: encoder-decoder with learned positions only: position
      p reads row p + offset of a table of max_len + offset rows (BART's 2).
    embed_norm: encoder-decoder only: a norm (`norm`) after the token and
      position embeddings of each stack, before the blocks (BART's
      `layernorm_embedding`).
    scale_embeddings: encoder-decoder only: token embeddings are multiplied
      by sqrt(D) on the way in (BART's `scale_embedding`).
    scale_tied_head: encoder-decoder with tie_embeddings only: the decoder
      output is multiplied by D^-0.5 before the tied head (T5 v1.0 and
      `transformer_base`); False applies the embedding as it is (BART).
    logits_bias: encoder-decoder only: a learned bias `[V]` added to the
      logits (BART's `final_logits_bias`).
    decoder_start_id: encoder-decoder only: the token the decoder starts
      from, in training's shifted decoder inputs and in decoding; None is
      the tokenizer's pad id (T5's convention; BART starts from its EOS, 2).
    forced_bos_id: encoder-decoder only: decoding's first generated token is
      always this id (BART's `forced_bos_token_id`: 0 for bart-large-cnn,
      whose targets start with BOS); None forces nothing.
    forced_eos_id: encoder-decoder only: a decoding that reaches its last
      allowed token (`max_new_tokens`) emits this id there (BART's
      `forced_eos_token_id`, 2 unless its config says otherwise); None
      forces nothing.
  """

  vocab_size: int = 0
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int | None = None
  head_dim: int | None = None
  d_ff: int | None = None
  max_len: int = 1024
  position: str = "learned"
  rope_theta: float = 10000.0
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  norm_position: str = "pre"
  mlp: str = "gelu"
  dropout: float = 0.0
  attention_dropout: float = 0.0
  use_bias: bool = True
  tie_embeddings: bool = True
  scan_layers: bool = True
  scan_unroll: int = 8
  remat: str = "none"
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "xla"
  init_std: float = 0.02
  init: str = "normal"
  arch: str = "transformer"
  type_vocab_size: int = 2
  gelu_approximate: bool = True
  num_decoder_layers: int | None = None
  relative_buckets: int = 32
  relative_max_distance: int = 128
  scale_attention: bool = True
  position_offset: int = 0
  embed_norm: bool = False
  scale_embeddings: bool = False
  scale_tied_head: bool = True
  logits_bias: bool = False
  decoder_start_id: int | None = None
  forced_bos_id: int | None = None
  forced_eos_id: int | None = None

  # Resolved sizes.

  @property
  def kv_heads(self) -> int:
    """Key/value heads K (num_kv_heads, or num_heads when unset)."""
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def head_size(self) -> int:
    """Per-head width H (head_dim, or d_model // num_heads when unset)."""
    if self.head_dim is not None:
      return self.head_dim
    return self.d_model // self.num_heads

  @property
  def mlp_size(self) -> int:
    """MLP hidden width F (d_ff, or 4 * d_model when unset)."""
    return 4 * self.d_model if self.d_ff is None else self.d_ff

  @property
  def decoder_layers(self) -> int:
    """Decoder blocks of an encoder-decoder (num_decoder_layers, or
    num_layers when unset)."""
    return (self.num_layers if self.num_decoder_layers is None
            else self.num_decoder_layers)

  def decoder_start(self, pad_id: int) -> int:
    """The id an encoder-decoder's decoder starts from: `decoder_start_id`,
    else `pad_id` (the tokenizer's).

    Example: make_model_config("t5_tiny", vocab_size=8).decoder_start(0) -> 0.
    """
    return pad_id if self.decoder_start_id is None else self.decoder_start_id

  @property
  def compute_dtype(self) -> jnp.dtype:
    """`dtype` as a jnp dtype."""
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    """`param_dtype` as a jnp dtype."""
    return jnp.dtype(self.param_dtype)

  def validate(self, *, require_vocab: bool = True) -> ModelConfig:
    """Raises `LmError` naming the first bad field; returns self otherwise.

    Args:
      require_vocab: when False, `vocab_size == 0` ("set from the tokenizer
        later") is accepted; a negative size is still an error.
    """
    if self.vocab_size < 0 or (require_vocab and self.vocab_size == 0):
      raise LmError(
          f"model.vocab_size={self.vocab_size} must be positive; set it to "
          "the tokenizer's vocabulary size.")
    for name in ("d_model", "num_layers", "num_heads", "max_len"):
      _check_positive(name, getattr(self, name))
    for name in ("num_kv_heads", "head_dim", "d_ff", "num_decoder_layers"):
      if getattr(self, name) is not None:
        _check_positive(name, getattr(self, name))
    if self.scan_unroll < 0:
      raise LmError(f"model.scan_unroll={self.scan_unroll} must be 0 (never "
                    "unroll) or a layer count.")
    for name in ("rope_theta", "norm_eps", "init_std"):
      if not getattr(self, name) > 0:
        raise LmError(f"model.{name}={getattr(self, name)} must be positive.")
    for name in ("dropout", "attention_dropout"):
      rate = getattr(self, name)
      if not 0.0 <= rate < 1.0:
        raise LmError(f"model.{name}={rate} must be in [0, 1).")
    for name, allowed in (("position", POSITIONS), ("norm", NORMS),
                          ("norm_position", NORM_POSITIONS), ("mlp", MLPS),
                          ("remat", REMATS), ("dtype", DTYPES),
                          ("param_dtype", DTYPES),
                          ("attention_impl", ATTENTION_IMPLS),
                          ("arch", ARCHS), ("init", INITS)):
      value = getattr(self, name)
      if value not in allowed:
        raise LmError(
            f"model.{name}={value!r} is not one of "
            f"{', '.join(repr(a) for a in allowed)}; pick one of those.")
    if self.arch == "bert":
      _check_positive("type_vocab_size", self.type_vocab_size)
    if self.arch == "encoder_decoder":
      for name in ("relative_buckets", "relative_max_distance"):
        _check_positive(name, getattr(self, name))
      if self.position == "rope":
        raise LmError(
            "model.position='rope' is not built for model.arch="
            "'encoder_decoder'; use 'relative' (T5), 'sinusoidal' or "
            "'learned'.")
      if self.position_offset < 0 or (self.position_offset
                                       and self.position != "learned"):
        raise LmError(
            f"model.position_offset={self.position_offset} must be 0, or "
            "positive with model.position='learned' (the table it shifts).")
      for name, unset in (("decoder_start_id", "the pad id"),
                          ("forced_bos_id", "nothing forced"),
                          ("forced_eos_id", "nothing forced")):
        value = getattr(self, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 0 or 0 < self.vocab_size <= value):
          raise LmError(
              f"model.{name}={value!r} must be a token id below "
              f"model.vocab_size={self.vocab_size}, or None ({unset}).")
    else:
      if self.position == "relative" or not self.scale_attention:
        raise LmError(
            f"model.position='relative' and model.scale_attention=False are "
            f"T5 options that model.arch={self.arch!r} does not build; use "
            "arch='encoder_decoder' or another position / "
            "scale_attention=True.")
      for name in _ENCODER_DECODER_ONLY:
        default = ModelConfig.__dataclass_fields__[name].default
        if getattr(self, name) != default:
          raise LmError(
              f"model.{name}={getattr(self, name)!r} is an encoder-decoder "
              f"option that model.arch={self.arch!r} does not build; leave it "
              f"at {default!r} or use arch='encoder_decoder'.")
    if self.arch == "lstm":
      return self  # the checks below concern attention, which an LSTM lacks
    if self.head_dim is None and self.d_model % self.num_heads:
      raise LmError(
          f"model.num_heads={self.num_heads} does not divide "
          f"model.d_model={self.d_model}; pick a head count that divides the "
          "width or set model.head_dim.")
    if self.num_heads % self.kv_heads:
      raise LmError(
          f"model.num_kv_heads={self.kv_heads} does not divide "
          f"model.num_heads={self.num_heads}; pick a key/value head count "
          "that divides the query head count.")
    if self.position == "rope" and self.head_size % 2:
      raise LmError(
          f"model.position='rope' needs an even head width but the head "
          f"width is {self.head_size}; set model.head_dim (or d_model / "
          "num_heads) to an even number.")
    if self.attention_impl == "cudnn" and self.dtype != "bfloat16":
      raise LmError(
          "model.attention_impl='cudnn' needs model.dtype='bfloat16' (cuDNN "
          "attention has no float32 kernel); set the dtype or use 'xla'.")
    return self


# Fields only `EncoderDecoderLM` reads (BART's options); other archs keep
# their defaults.
_ENCODER_DECODER_ONLY = ("position_offset", "embed_norm", "scale_embeddings",
                         "scale_tied_head", "logits_bias", "decoder_start_id",
                         "forced_bos_id", "forced_eos_id", "init")


def recorded_model(model: dict) -> dict:
  """A run's recorded model fields with the defaults of fields added since
  it was written (which leave its model as it was), so stored and new
  configs compare field by field.

  Example: recorded_model({"d_model": 64})["position_offset"] -> 0.
  """
  return {**{f.name: f.default for f in dataclasses.fields(ModelConfig)},
          **model}


def _check_positive(name: str, value: Any) -> None:
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value <= 0):
    raise LmError(f"model.{name}={value!r} must be a positive integer.")


# GPT-2 shared settings: learned positions, LayerNorm (eps 1e-5), GELU,
# pre-LN, biases, tied embeddings.
_GPT2 = dict(vocab_size=50257, max_len=1024, position="learned",
             norm="layernorm", norm_eps=1e-5, norm_position="pre", mlp="gelu",
             use_bias=True, tie_embeddings=True)

# BERT shared settings (Devlin et al. 2019; Google's naming of the smaller
# sizes from Turc et al. 2019): learned positions, post-LN LayerNorm (eps
# 1e-12), exact erf GELU, biases, tied MLM decoder, two token types, d_ff =
# 4 * d_model.
_BERT = dict(arch="bert", max_len=512, position="learned", norm="layernorm",
             norm_eps=1e-12, norm_position="post", mlp="gelu",
             gelu_approximate=False, use_bias=True, tie_embeddings=True,
             type_vocab_size=2, dropout=0.1, attention_dropout=0.1)

# T5 v1.1 shared settings (Raffel et al. 2020 and the v1.1 release):
# bucketed relative-position bias, RMSNorm (eps 1e-6) without biases,
# pre-LN, gated-GELU MLP, untied LM head, unscaled attention logits.
_T5 = dict(arch="encoder_decoder", init="t5", max_len=512, position="relative",
           norm="rmsnorm", norm_eps=1e-6, norm_position="pre", mlp="geglu",
           gelu_approximate=True, use_bias=False, tie_embeddings=False,
           scale_attention=False, relative_buckets=32,
           relative_max_distance=128)

CUSTOM = "custom"
# Fields that a run sets for itself, not part of a named size's shape.
_RUN_FIELDS = ("vocab_size", "max_len", "dropout", "attention_dropout",
               "init_std", "dtype", "param_dtype", "scan_layers", "scan_unroll",
               "remat", "attention_impl", "decoder_start_id", "forced_bos_id",
               "forced_eos_id")

SIZES: dict[str, dict[str, Any]] = {
    # Unit tests.
    "tiny": dict(d_model=64, num_layers=2, num_heads=4, d_ff=256,
                 max_len=128),
    # A small GPT that trains on a 2-core CPU in a few minutes.
    "quickstart": dict(d_model=256, num_layers=4, num_heads=4, d_ff=1024,
                       max_len=256, position="learned"),
    # nanoGPT's CPU recipe for shakespeare_char (no biases, as nanoGPT's
    # default `bias=False`).
    "shakespeare": dict(d_model=128, num_layers=4, num_heads=4, d_ff=512,
                        max_len=64, position="learned", norm="layernorm",
                        mlp="gelu", norm_position="pre", dropout=0.0,
                        use_bias=False),
    # nanoGPT's shakespeare_char GPU recipe width at a shorter context.
    "d384": dict(d_model=384, num_layers=6, num_heads=6, d_ff=1536,
                 max_len=256),
    # GPT-2 family.
    "small": dict(_GPT2, d_model=768, num_layers=12, num_heads=12, d_ff=3072),
    "medium": dict(_GPT2, d_model=1024, num_layers=24, num_heads=16,
                   d_ff=4096),
    "large": dict(_GPT2, d_model=1280, num_layers=36, num_heads=20,
                  d_ff=5120),
    "xl": dict(_GPT2, d_model=1600, num_layers=48, num_heads=25, d_ff=6400),
    # BERT family (`arch="bert"`). bert_base with the 30,522-piece uncased
    # WordPiece vocabulary has 110,106,428 parameters with its MLM and NSP
    # heads (109,482,240 in the encoder and pooler, as HF `BertModel`).
    # Unit tests.
    "bert_tiny": dict(_BERT, d_model=128, num_layers=2, num_heads=2,
                      d_ff=512, dropout=0.0, attention_dropout=0.0),
    "bert_mini": dict(_BERT, d_model=256, num_layers=4, num_heads=4,
                      d_ff=1024),
    "bert_small": dict(_BERT, d_model=512, num_layers=4, num_heads=8,
                       d_ff=2048),
    "bert_base": dict(_BERT, vocab_size=30522, d_model=768, num_layers=12,
                      num_heads=12, d_ff=3072),
    # Encoder-decoders (`arch="encoder_decoder"`). t5_small and t5_base are
    # T5 v1.1's layouts; with the 32,128-piece vocabulary t5_small has
    # 76,961,152 parameters, as HF `T5ForConditionalGeneration`.
    # Unit tests.
    "t5_tiny": dict(_T5, d_model=64, num_layers=2, num_heads=4, head_dim=16,
                    d_ff=128, relative_buckets=8, relative_max_distance=16),
    # A CPU-sized T5 (4 + 4 blocks of 256, 7,345,920 parameters at a vocabulary
    # of 2,048): configs/t5_quickstart.py and seq2seq from scratch.
    "t5_mini": dict(_T5, d_model=256, num_layers=4, num_heads=4, head_dim=64,
                    d_ff=512),
    "t5_small": dict(_T5, vocab_size=32128, d_model=512, num_layers=8,
                     num_heads=6, head_dim=64, d_ff=1024),
    "t5_base": dict(_T5, vocab_size=32128, d_model=768, num_layers=12,
                    num_heads=12, head_dim=64, d_ff=2048),
    # The original Transformer's base model (Vaswani et al. 2017):
    # sinusoidal positions, post-LN LayerNorm, ReLU MLP, tied embeddings.
    "transformer_base": dict(arch="encoder_decoder", position="sinusoidal",
                             norm="layernorm", norm_position="post",
                             mlp="relu", use_bias=True, tie_embeddings=True,
                             d_model=512, num_layers=6, num_heads=8,
                             d_ff=2048, dropout=0.1, max_len=512),
    # LSTM baselines (`arch="lstm"`; no position table). Parameters per layer
    # are 8 * D^2 + 4 * D (input and recurrent kernels [D, 4, D], bias [4, D]).
    # init_std 0.3 (embedding): the embedding feeds fan-in-scaled gate
    # kernels, and GPT's 0.02 leaves the first layer's gates near-constant
    # for hundreds of steps (Shakespeare recipe at lr 1e-3, 2,000 steps: val
    # loss 2.16 with 0.02, 1.75 with 0.3).
    # Unit tests.
    "lstm_tiny": dict(arch="lstm", d_model=32, num_layers=2, position="none",
                      init_std=0.3),
    # Character-level Shakespeare, comparable to "shakespeare" (795,776
    # non-embedding parameters): 2 x (8 * 224^2 + 4 * 224) = 804,608
    # non-embedding parameters, plus V * 224 for the tied embedding
    # (820,288 in all with the 70-piece character vocabulary).
    "lstm_shakespeare": dict(arch="lstm", d_model=224, num_layers=2,
                             position="none", dropout=0.0, init_std=0.3),
}


def make_model_config(size: str, **overrides: Any) -> ModelConfig:
  """Returns the validated config of a named size with fields overridden.

  Args:
    size: a key of `SIZES`, or `CUSTOM` ("custom"): no named size, every
      field from `overrides` and `ModelConfig`'s defaults (what an imported
      model whose shape matches no named size records).
    **overrides: `ModelConfig` fields to replace, e.g. `vocab_size=8000`.

  Raises:
    LmError: unknown size or field, or an invalid resulting config.
  """
  if size not in SIZES and size != CUSTOM:
    raise LmError(
        f"model size {size!r} is unknown; pick one of {', '.join(SIZES)} "
        f"(or {CUSTOM!r} with every model field set).")
  fields = [f.name for f in dataclasses.fields(ModelConfig)]
  for key in overrides:
    if key not in fields:
      raise LmError(
          f"model.{key} is not a model config field; valid fields are "
          f"{', '.join(fields)}.")
  return ModelConfig(**{**SIZES.get(size, {}), **overrides}).validate()


def size_name(cfg: ModelConfig) -> str:
  """The named size whose fields all equal `cfg`'s (the vocabulary and
  context length aside), else `CUSTOM`.

  Example: an imported 6-layer, 384-wide MiniLM -> "custom"; HF's
  bert-base-uncased -> "bert_base".
  """
  mine = dataclasses.asdict(cfg)
  for name in SIZES:
    theirs = dataclasses.asdict(make_model_config(name, vocab_size=cfg.vocab_size,
                                                  max_len=cfg.max_len))
    if all(mine[k] == theirs[k] for k in mine if k not in _RUN_FIELDS):
      return name
  return CUSTOM


def describe(cfg: ModelConfig) -> str:
  """The shape of `cfg` in words (what a size name does not say for an
  imported model).

  Example: "6 layers x 384 wide, 12 heads, mlp 1536"; grouped-query
  attention adds "(4 kv)" to the heads; an LSTM is "2 layers x 224 wide,
  lstm".
  """
  shape = f"{cfg.num_layers} layers x {cfg.d_model} wide"
  if cfg.arch == "lstm":
    return shape + ", lstm"
  heads = f"{cfg.num_heads} heads"
  if cfg.kv_heads != cfg.num_heads:
    heads += f" ({cfg.kv_heads} kv)"
  return f"{shape}, {heads}, mlp {cfg.mlp_size}"
