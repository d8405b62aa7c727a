"""Sentence embeddings: a backbone, a pooling, an optional projection head.

`SentenceEncoder(config, pooling=...)` wraps any architecture of
`lm.models` as `backbone` and pools its hidden states into one vector per
row:

  "cls"   hidden[:, 0], the `[CLS]` token (BERT backbones).
  "mean"  the mean over real tokens (`segment_ids > 0`).
  "last"  the last real token (decoder backbones: the only position that
          has seen the whole text).

`apply(...)` returns `{"embedding": [B, D], "projected": [B, D],
"temperature": []}`, all float32. `embedding` is what retrieval and
`launch.encode` use; `projected` is `tanh(dense(embedding))` when
`projection=True` (SimCSE's MLP, trained with the loss and dropped
afterwards) and `embedding` itself otherwise. `temperature` is the InfoNCE
temperature: the fixed `temperature`, or `exp(log_temperature)` (a trained
scalar, kept at or above `min_temperature`) when `learn_temperature=True`.

Parameter tree: `backbone/...` exactly as the bare model names it (BERT
without its pooler, MLM and NSP heads), so a masked-LM or causal checkpoint's
weights drop in (`lm.training.warm_start`); then `projection/dense/...` and
`log_temperature` when enabled.

Example:
  enc = SentenceEncoder(make_model_config("bert_tiny", vocab_size=512))
  out = enc.apply(params, tokens, segment_ids=(tokens != 0).astype(int))
  out["embedding"].shape   # (B, 128)
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.errors import LmError
from lm.models import build_model
from lm.models.bert import BertModel
from lm.models.config import ModelConfig
from lm.models.heads import Pooler

POOLINGS = ("cls", "mean", "last")


def check_pooling(arch: str, pooling: str) -> None:
  """LmError unless `pooling` is known and makes sense for `arch`."""
  if pooling not in POOLINGS:
    raise LmError(f"config.contrastive.pooling={pooling!r} is not one of "
                  f"{', '.join(repr(p) for p in POOLINGS)}; pick one of those.")
  if pooling == "cls" and arch != "bert":
    raise LmError(f"pooling 'cls' reads the first token, which a {arch} "
                  "model reads before any text; use pooling 'last' or "
                  "'mean' for it, or a BERT size.")


def pool(hidden: jax.Array, segment_ids: jax.Array | None,
         pooling: str) -> jax.Array:
  """`[B, T, D]` hidden states to `[B, D]` float32 by `pooling`.

  `segment_ids` `[B, T]` marks real tokens (> 0); None means every token is
  real. A row without real tokens pools to zeros ("mean") or position 0.

  Example: hidden [[[1], [3], [9]]], segment_ids [[1, 1, 0]] ->
  cls [[1]], mean [[2]], last [[3]].
  """
  hidden = hidden.astype(jnp.float32)
  b, t, _ = hidden.shape
  real = (jnp.ones((b, t), jnp.float32) if segment_ids is None
          else (segment_ids > 0).astype(jnp.float32))          # [B, T]
  if pooling == "cls":
    return hidden[:, 0]
  if pooling == "mean":
    total = jnp.einsum("btd,bt->bd", hidden, real)
    return total / jnp.maximum(jnp.sum(real, axis=1, keepdims=True), 1.0)
  if pooling == "last":
    # The highest real position (rows may be right-padded only).
    last = jnp.max(jnp.where(real > 0, jnp.arange(t)[None], 0), axis=1)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  raise LmError(f"unknown pooling {pooling!r}; use one of {POOLINGS}.")


class SentenceEncoder(nn.Module):
  """Pooled (and optionally projected) embeddings of a backbone model.

  Attributes:
    config: the backbone's model config (any `arch`).
    pooling: "cls", "mean" or "last" (see `pool`).
    projection: add the training-only `tanh(dense(.))` head.
    temperature: the InfoNCE temperature (initial value when learned).
    learn_temperature: make `log_temperature` a trained parameter.
    min_temperature: floor of a learned temperature (CLIP clamps at 0.01).
    pooler: a BERT backbone keeps its pooler (`backbone/pooler/...`, an
      imported checkpoint's, carried to the export; the embedding does not
      read it).
  """

  config: ModelConfig
  pooling: str = "cls"
  projection: bool = False
  temperature: float = 0.05
  learn_temperature: bool = False
  min_temperature: float = 0.01
  pooler: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, *,
               segment_ids: jax.Array | None = None,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """Embeds int `tokens [B, T]`; `segment_ids` 1 at real tokens, 0 at
    padding. Needs a 'dropout' RNG when `deterministic` is False."""
    cfg = self.config
    check_pooling(cfg.arch, self.pooling)
    if cfg.arch == "bert":
      _, aux = BertModel(cfg, heads=False, pooler=self.pooler, name="backbone")(
          tokens, segment_ids=segment_ids, deterministic=deterministic)
    else:
      backbone = build_model(cfg).clone(parent=self, name="backbone")
      _, aux = backbone(tokens, segment_ids=segment_ids,
                        deterministic=deterministic)
    embedding = pool(aux["hidden"], segment_ids, self.pooling)  # [B, D]
    projected = embedding
    if self.projection:
      projected = Pooler(cfg, name="projection")(
          embedding[:, None].astype(cfg.compute_dtype)).astype(jnp.float32)
    if self.learn_temperature:
      log_tau = self.param("log_temperature", nn.initializers.constant(
          math.log(self.temperature)), (), jnp.float32)
      tau = jnp.exp(jnp.maximum(log_tau, math.log(self.min_temperature)))
    else:
      tau = jnp.asarray(self.temperature, jnp.float32)
    return {"embedding": embedding, "projected": projected, "temperature": tau}
