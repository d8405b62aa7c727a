"""Language-model architectures; `build_model(cfg)` picks one by `cfg.arch`."""

from __future__ import annotations

import flax.linen as nn

from lm.errors import LmError
from lm.models.bert import BertModel
from lm.models.config import ARCHS, ModelConfig
from lm.models.encoder_decoder import EncoderDecoderLM
from lm.models.rnn import LstmLM
from lm.models.transformer import DecoderLM


def build_model(cfg: ModelConfig) -> nn.Module:
  """The module for `cfg.arch`.

  "transformer": `DecoderLM` and "lstm": `LstmLM`, both taking `(tokens, *,
  positions, segment_ids, deterministic, decode, valid)` and returning
  next-token `(logits, aux)`. "bert": `BertModel`, taking `(tokens, *,
  token_types, positions, segment_ids, masked_positions, deterministic)` and
  returning masked-LM `(logits, aux)` with `aux["pooled"]` and
  `aux["nsp_logits"]`. "encoder_decoder": `EncoderDecoderLM`, taking
  `(inputs, decoder_inputs, *, input_segment_ids, decoder_segment_ids, ...)`
  and returning the decoder's `(logits, aux)`.
  """
  if cfg.arch == "transformer":
    return DecoderLM(cfg)
  if cfg.arch == "lstm":
    return LstmLM(cfg)
  if cfg.arch == "bert":
    return BertModel(cfg)
  if cfg.arch == "encoder_decoder":
    return EncoderDecoderLM(cfg)
  raise LmError(
      f"model.arch={cfg.arch!r} is not one of "
      f"{', '.join(repr(a) for a in ARCHS)}; pick one of those.")
