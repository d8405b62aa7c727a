"""Fine-tuning models: a pretrained backbone under a new task head.

`TaskModel(config, head=..., num_labels=...)` wraps any architecture of
`lm.models` as `backbone` (BERT without its MLM and NSP heads) and adds one
`TaskHead` named `head`:

  "sequence"  one row of C logits per text (or text pair), from the pooled
              backbone output (`pooling`, below): classification.
  "token"     C logits per token: tagging (NER over sentencepiece pieces).
  "span"      start and end logits per token: extractive QA.

Pooling for sequence heads: "pooler" is BERT's pretrained pooler,
`tanh(dense(hidden[:, 0]))` (trained by next-sentence prediction), as BERT
fine-tunes; "cls", "mean" and "last" are `lm.models.embedder.pool` of the
hidden states ("last" for decoders, whose last real token has read the whole
text).

`apply(...)` returns `{"logits": [B, C] or [B, T, C]}` (sequence, token)
or `{"start_logits": [B, T], "end_logits": [B, T]}` (span), float32.
With `freeze_backbone=True` no gradient reaches the backbone (a linear
probe: only the head trains).

Parameter tree: `backbone/...` exactly as the bare model names it (plus
`pooler/...` for pooling "pooler"), so a pretraining run's weights drop in
(`lm.training.warm_start`); `head/dense/{kernel [D, C], bias [C]}`.

Example:
  m = TaskModel(make_model_config("bert_tiny", vocab_size=512),
                head="sequence", num_labels=2)
  m.apply(params, tokens, segment_ids=mask)["logits"].shape   # (B, 2)
"""

from __future__ import annotations

import flax.linen as nn
import jax

from lm.errors import LmError
from lm.models import build_model
from lm.models.bert import BertModel
from lm.models.config import ModelConfig
from lm.models.embedder import pool
from lm.models.heads import TaskHead

HEADS = ("sequence", "token", "span")
POOLINGS = ("pooler", "cls", "mean", "last")


def check_pooling(arch: str, pooling: str) -> None:
  """LmError unless classification `pooling` suits `arch`."""
  if pooling not in POOLINGS:
    raise LmError(f"config.task.pooling={pooling!r} is not one of "
                  f"{', '.join(repr(p) for p in POOLINGS)}; pick one of those.")
  if pooling in ("pooler", "cls") and arch != "bert":
    raise LmError(f"config.task.pooling={pooling!r} reads the first token, "
                  f"which a {arch} model reads before any text; use 'last' "
                  "or 'mean' for it.")


class TaskModel(nn.Module):
  """A backbone and a classification, tagging or span head.

  Attributes:
    config: the backbone's model config (any `arch`).
    head: "sequence", "token" or "span" (see `HEADS`).
    num_labels: classes (sequence) or tags (token); 2 for span.
    pooling: sequence heads only: "pooler", "cls", "mean" or "last".
    freeze_backbone: stop gradients at the backbone's outputs.
  """

  config: ModelConfig
  head: str = "sequence"
  num_labels: int = 2
  pooling: str = "pooler"
  freeze_backbone: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, *,
               token_types: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """Logits for int `tokens [B, T]`; `segment_ids` 1 at real tokens, 0 at
    padding; `token_types` 0/1 for the two texts of a pair (BERT only,
    ignored otherwise). Needs a 'dropout' RNG when `deterministic` is
    False."""
    cfg = self.config
    if self.head not in HEADS:
      raise LmError(f"head {self.head!r} is not one of {HEADS}.")
    with_pooler = self.head == "sequence" and self.pooling == "pooler"
    if cfg.arch == "bert":
      _, aux = BertModel(cfg, heads=False, pooler=with_pooler,
                         name="backbone")(
                             tokens, token_types=token_types,
                             segment_ids=segment_ids,
                             deterministic=deterministic)
    else:
      backbone = build_model(cfg).clone(parent=self, name="backbone")
      _, aux = backbone(tokens, segment_ids=segment_ids,
                        deterministic=deterministic)
    if self.freeze_backbone:
      aux = jax.lax.stop_gradient(aux)
    if self.head == "sequence":
      check_pooling(cfg.arch, self.pooling)
      x = (aux["pooled"] if with_pooler
           else pool(aux["hidden"], segment_ids, self.pooling))  # [B, D]
      x = x.astype(cfg.compute_dtype)
      return {"logits": TaskHead(cfg, self.num_labels, name="head")(
          x, deterministic=deterministic)}                       # [B, C]
    width = 2 if self.head == "span" else self.num_labels
    logits = TaskHead(cfg, width, name="head")(
        aux["hidden"], deterministic=deterministic)              # [B, T, C]
    if self.head == "token":
      return {"logits": logits}
    return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
