"""Language-model architectures; `build_model(cfg)` picks one by `cfg.arch`."""

from __future__ import annotations

import flax.linen as nn

from lm.errors import LmError
from lm.models.config import ARCHS, ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
  """The module for `cfg.arch`.

  "transformer": `DecoderLM` and "lstm": `LstmLM`, both taking `(tokens, *,
  positions, segment_ids, deterministic, decode, valid)` and returning
  next-token `(logits, aux)`. "bert": `BertModel`, taking `(tokens, *,
  token_types, positions, segment_ids, masked_positions, deterministic)` and
  returning masked-LM `(logits, aux)` with `aux["pooled"]` and
  `aux["nsp_logits"]`. The model modules are imported here, not at the top,
  so importing `lm.models.config` stays light and cycle-free.
  """
  if cfg.arch == "transformer":
    from lm.models.transformer import DecoderLM  # pylint: disable=g-import-not-at-top
    return DecoderLM(cfg)
  if cfg.arch == "lstm":
    from lm.models.rnn import LstmLM  # pylint: disable=g-import-not-at-top
    return LstmLM(cfg)
  if cfg.arch == "bert":
    from lm.models.bert import BertModel  # pylint: disable=g-import-not-at-top
    return BertModel(cfg)
  raise LmError(
      f"model.arch={cfg.arch!r} is not one of "
      f"{', '.join(repr(a) for a in ARCHS)}; pick one of those.")
