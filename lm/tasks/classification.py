"""Sequence classification: one label per text or text pair.

Rows are `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` for BERT (token types
0 for the first text and its frame, 1 for the second), `bos a eos (b eos)`
for decoders; a pair too long for `seq_len` loses tokens from the end of its
longer text first. The head reads the pooled output (`config.task.pooling`:
"auto" is BERT's pretrained pooler (the [CLS] token when the init_from run
has none, as one imported from a `BertForMaskedLM`), or the last real token
of a decoder; the choice is stored with the run).

The loss is cross-entropy, optionally class-weighted
(`config.task.class_weights`: "balanced" or "label=weight,..."; the weighted
mean, as PyTorch's `CrossEntropyLoss(weight=...)`). Evaluation reports
accuracy, macro-F1 and Matthews correlation (`lm.tasks.scores`) over the
whole eval split; `config.task.metric` picks the one that selects the best
checkpoint (accuracy by default; "mcc" for CoLA-style sets). Logged counts
are `examples` (train and eval), not tokens.

Example config (SST-2 from TFDS):
  c.objective = "classification"
  c.data.train, c.data.eval = "tfds:glue/sst2:train", "tfds:glue/sst2:validation"
  c.task.text_field, c.task.label_field = "sentence", "label"
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import LmError
from lm.models.task_model import check_pooling
from lm.tasks import finetune, scores


def truncate_pair(a: int, b: int, budget: int) -> tuple[int, int]:
  """Lengths kept of two texts of `a` and `b` tokens within `budget`,
  trimming the longer one first (BERT's longest-first rule).

  Example: (10, 3, 8) -> (5, 3); (6, 6, 8) -> (4, 4).
  """
  while a + b > budget:
    if a >= b:
      a -= 1
    else:
      b -= 1
  return a, b


def pair_rows(ids_a, ids_b, *, seq_len: int, first: int, sep: int, pad: int):
  """`(tokens, token_types, mask)` int32 `[N, seq_len]` rows of texts
  `ids_a` (and `ids_b`, a list of the same length, or None).

  Example: a = [7, 8], no b, seq_len 5 -> tokens [first, 7, 8, sep, pad],
  types [0, 0, 0, 0, 0], mask [1, 1, 1, 1, 0].
  """
  n = len(ids_a)
  tokens = np.full((n, seq_len), pad, np.int32)
  types = np.zeros((n, seq_len), np.int32)
  mask = np.zeros((n, seq_len), np.int32)
  specials = 2 if ids_b is None else 3
  if seq_len < specials + 1:
    raise LmError(f"config.seq_len={seq_len} leaves no room for text; use "
                  f"seq_len >= {specials + 1}.")
  for i in range(n):
    a = ids_a[i]
    b = [] if ids_b is None else ids_b[i]
    ka, kb = truncate_pair(len(a), len(b), seq_len - specials)
    row = [first, *a[:ka], sep]
    if ids_b is not None:
      row += [*b[:kb], sep]
    tokens[i, :len(row)] = row
    mask[i, :len(row)] = 1
    if ids_b is not None:
      types[i, ka + 2:len(row)] = 1
  return tokens, types, mask


class Classification(finetune.Task):
  """Sequence classification (see the module docstring)."""

  name = "classification"
  main_metric = "accuracy"
  metrics = ("accuracy", "macro_f1", "mcc")
  train_keys = ("tokens", "token_types", "mask", "label")
  count_key = "examples"     # what the logged counts count (one per row)

  def __init__(self, config, stored=None):
    super().__init__(config, stored)
    self.class_weights = None
    self.label_counts = None
    # "auto" pooling as the run resolved it when it started (the init_from
    # source may have moved since)
    self._pooling = (stored or {}).get("pooling")
    # whether the init_from run has a trained pooler (None: not known)
    self._source_pooler = None
    if stored and stored.get("label_counts") is not None:
      self._set_weights(np.asarray(stored["label_counts"], np.int64))

  def _set_weights(self, counts: np.ndarray) -> None:
    """Class weights from the training split's label `counts`."""
    self.label_counts = counts
    self.class_weights = finetune.parse_class_weights(
        self.config.task.class_weights, self.labels, counts)

  @classmethod
  def configure_import(cls, config, params, *, pooling=None, normalize=False,
                       tokenizer=None):
    """An imported BertForSequenceClassification reads its pooler."""
    del params, pooling, normalize, tokenizer
    config.task.pooling = "pooler"

  def set_source(self, source) -> None:
    self._source_pooler = source.has_pretrained_pooler()

  def has_pretrained_pooler(self) -> bool:
    """When its head reads BERT's pooler (the pooling the run resolved)."""
    return self.pooling() == "pooler"

  def pooling(self) -> str:
    """The pooling of the head. "auto": BERT's pooler when the backbone has
    a trained one (no init_from, or an init_from run whose objective says
    it has one, or one that cannot be read: a resumed run whose source
    moved keeps the pooler it has), else "cls"; "last" for decoders."""
    pooling = self.config.task.pooling
    if pooling == "auto" and self._pooling:
      pooling = self._pooling
    elif pooling == "auto":
      pooling = ("last" if self.arch != "bert"
                 else "pooler" if not self.config.init_from
                 or self._source_pooler is not False else "cls")
      self._pooling = pooling
    check_pooling(self.arch, pooling)
    return pooling

  def check_model(self, model_cfg) -> None:
    del model_cfg
    self.pooling()

  def fields(self):
    t = self.config.task
    out = {"text": (t.text_field, "text"), "label": (t.label_field, "label")}
    if t.text_b_field:
      out["text_b"] = (t.text_b_field, "text")
    return out

  def read_labels(self, records) -> list[str]:
    names = records.label_names.get("label")
    return list(names) if names else finetune.sort_labels(
        records.columns["label"])

  def make_rows(self, records, tokenizer, *, with_labels: bool = True):
    first, sep, pad = finetune.frame_ids(tokenizer, self.arch)
    ids_a = tokenizer.encode_batch(records.columns["text"])
    ids_b = (tokenizer.encode_batch(records.columns["text_b"])
             if "text_b" in records.columns else None)
    tokens, types, mask = pair_rows(ids_a, ids_b, seq_len=self.config.seq_len,
                                    first=first, sep=sep, pad=pad)
    label = (finetune.label_ids(records.columns["label"], self.labels,
                                records.uri) if with_labels
             else np.zeros(len(tokens), np.int32))
    return {"tokens": tokens, "token_types": types, "mask": mask,
            "label": label}

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    data = super().open_data(source, tokenizer, cache_dir, max_chars)
    if self.label_counts is None:   # the training split (opened first)
      self._set_weights(np.bincount(np.asarray(data.arrays["label"]),
                                    minlength=len(self.labels)))
    return data

  def data_settings(self) -> dict:
    counts = None if self.label_counts is None else [
        int(n) for n in self.label_counts]
    return {**super().data_settings(), "label_counts": counts,
            "pooling": self.pooling()}

  # --- objective --------------------------------------------------------------

  def loss(self, params, batch, rng, model, *, deterministic: bool = False,
           return_logits: bool = False):
    """Objective contract: (mean weighted cross-entropy, sums); with
    `return_logits` also `((logits [B, C], class-weighted weights [B]),)`."""
    out = model.apply({"params": params}, batch["tokens"],
                      token_types=batch["token_types"],
                      segment_ids=batch["mask"], deterministic=deterministic,
                      rngs=None if deterministic else {"dropout": rng})
    logits = out["logits"]                                        # [B, C]
    label = batch["label"]
    w = batch["weights"]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), label[:, None],
                               axis=1)[:, 0]                      # [B]
    cw = w if self.class_weights is None else w * jnp.asarray(
        self.class_weights)[label]
    pred = jnp.argmax(logits, axis=-1)
    sums = {"loss_sum": jnp.sum(cw * nll), "tokens": jnp.sum(cw),
            "correct": jnp.sum(w * (pred == label)), "examples": jnp.sum(w)}
    if deterministic:
      c = logits.shape[-1]
      sums["confusion"] = jnp.einsum(
          "bi,bj->ij", jax.nn.one_hot(label, c) * w[:, None],
          jax.nn.one_hot(pred, c))                                # [C, C]
    if return_logits:
      return (sums["loss_sum"] / jnp.maximum(sums["tokens"], 1e-9), sums,
              ((logits, cw.astype(jnp.float32)),))
    return sums["loss_sum"] / jnp.maximum(sums["tokens"], 1e-9), sums

  @staticmethod
  def summarize(sums) -> dict:
    return {"loss": sums["loss_sum"] / jnp.maximum(sums["tokens"], 1e-9),
            "accuracy": sums["correct"] / jnp.maximum(sums["examples"], 1.0)}

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict:
    """Loss, accuracy, macro-F1 and MCC over the eval rows, as `eval_*`."""
    totals, _ = self.eval_sums(data, eval_fn, params, mesh,
                               batch_size=batch_size, max_batches=max_batches)
    out = scores.classification_scores(totals["confusion"])
    out["loss"] = float(totals["loss_sum"] / max(totals["tokens"], 1e-9))
    return {f"eval_{k}": float(v) for k, v in out.items()}

  # --- prediction -------------------------------------------------------------

  def predictions(self, records, outputs, arrays, tokenizer) -> list[dict]:
    """One `{"label", "probability", "probabilities"}` per record."""
    del records, arrays, tokenizer
    probs = np.asarray(jax.nn.softmax(jnp.asarray(outputs["logits"]), -1))
    out = []
    for p in probs:
      k = int(np.argmax(p))
      out.append({"label": self.labels[k], "probability": float(p[k]),
                  "probabilities": {l: float(v) for l, v in
                                    zip(self.labels, p)}})
    return out
