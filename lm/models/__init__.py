"""Language-model architectures; `build_model(cfg)` picks one by `cfg.arch`."""

from __future__ import annotations

import flax.linen as nn

from lm.errors import LmError
from lm.models.config import ARCHS, ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
  """The module for `cfg.arch`: `DecoderLM` ("transformer") or `LstmLM` ("lstm").

  Both take `(tokens, *, positions, segment_ids, deterministic, decode, valid)`
  and return `(logits, aux)`. The model modules are imported here, not at the
  top, so importing `lm.models.config` stays light and cycle-free.
  """
  if cfg.arch == "transformer":
    from lm.models.transformer import DecoderLM  # pylint: disable=g-import-not-at-top
    return DecoderLM(cfg)
  if cfg.arch == "lstm":
    from lm.models.rnn import LstmLM  # pylint: disable=g-import-not-at-top
    return LstmLM(cfg)
  raise LmError(
      f"model.arch={cfg.arch!r} is not one of "
      f"{', '.join(repr(a) for a in ARCHS)}; pick one of those.")
