"""Token classification (NER): one BIO tag per word, over sentencepiece pieces.

Each example is a list of words and their tags (CoNLL-2003 style). The words
are joined with single spaces and tokenized once, so the pieces are those
pretraining saw; each piece belongs to the word holding its first
non-space character. The first piece of a word carries the word's tag,
every other piece (and [CLS], [SEP], padding) gets -1 and is left out of the
loss. Words cut off by `seq_len` are predicted "O".

Evaluation maps the predicted tag of each word's first piece back to the
words and scores entities as seqeval does (exact spans, micro-averaged
precision, recall and F1; `lm.tasks.scores.entity_scores`), plus per-piece
accuracy. Tag sets that are not BIO/IOBES (POS tags) get accuracy only; set
`config.task.metric = "accuracy"` for them.

Example config (CoNLL-2003 from TFDS):
  c.objective = "tagging"
  c.data.train, c.data.eval = "tfds:conll2003:train", "tfds:conll2003:dev"
  c.task.text_field, c.task.label_field = "tokens", "ner"
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.data import records as records_lib
from lm.tasks import finetune, scores

_BIO = re.compile(r"^(O|[BIES](-.+)?)$")


def word_pieces(words: Sequence[str], starts: np.ndarray, ends: np.ndarray
                ) -> np.ndarray:
  """The word index of each piece of `" ".join(words)` (-1: whitespace or an
  empty byte-piece span), from the pieces' character spans.

  Example: words ["New", "York"], pieces "New" [0,3), "▁Y" [3,5), "ork"
  [5,8) -> [0, 1, 1].
  """
  owner = np.full(sum(len(w) for w in words) + max(len(words) - 1, 0), -1,
                  np.int64)
  at = 0
  for i, w in enumerate(words):
    owner[at:at + len(w)] = i
    at += len(w) + 1
  out = np.full(len(starts), -1, np.int64)
  for p, (s, e) in enumerate(zip(starts, ends)):
    hit = owner[s:e]
    hit = hit[hit >= 0]
    if len(hit):
      out[p] = hit[0]
  return out


def tag_rows(words_list, tag_ids, tokenizer, *, seq_len: int, first: int,
             sep: int, pad: int) -> dict[str, np.ndarray]:
  """Rows `tokens`, `mask`, `tags` (-1 = not scored) and `word_index` (the
  word whose first piece sits at each position, else -1), `[N, seq_len]`.

  `tag_ids` is a list of int arrays (one id per word) or None (prediction).
  Example: words ["New", "York"], tags [B-LOC, I-LOC] as ids [1, 2],
  pieces New | ▁Y | ork -> tokens [first, New, ▁Y, ork, sep, pad ...],
  tags [-1, 1, 2, -1, -1, ...], word_index [-1, 0, 1, -1, -1, ...].
  """
  n = len(words_list)
  tokens = np.full((n, seq_len), pad, np.int32)
  mask = np.zeros((n, seq_len), np.int32)
  tags = np.full((n, seq_len), -1, np.int32)
  word_index = np.full((n, seq_len), -1, np.int32)
  encoded = tokenizer.encode_with_offsets([" ".join(w) for w in words_list])
  for i, (words, (ids, starts, ends)) in enumerate(zip(words_list, encoded)):
    owner = word_pieces(words, starts, ends)
    keep = min(len(ids), seq_len - 2)
    tokens[i, 0], tokens[i, 1:keep + 1], tokens[i, keep + 1] = (
        first, ids[:keep], sep)
    mask[i, :keep + 2] = 1
    seen = set()
    for p in range(keep):
      w = int(owner[p])
      if w >= 0 and w not in seen:
        seen.add(w)
        word_index[i, p + 1] = w
        if tag_ids is not None:
          tags[i, p + 1] = tag_ids[i][w]
  return {"tokens": tokens, "mask": mask, "tags": tags,
          "word_index": word_index}


def word_tags(predictions: np.ndarray, word_index: np.ndarray, n_words: int,
              labels: Sequence[str]) -> list[str]:
  """Each word's predicted tag (its first piece's), "O" for words the row
  cut off.

  Example: predictions [0, 2, 1], word_index [-1, 0, 1], labels [O, B, I],
  2 words -> ["I", "B"].
  """
  out = ["O"] * n_words
  for p in np.nonzero(word_index >= 0)[0]:
    out[int(word_index[p])] = labels[int(predictions[p])]
  return out


class Tagging(finetune.Task):
  """Token classification (see the module docstring)."""

  name = "tagging"
  head = "token"
  main_metric = "f1"
  metrics = ("f1", "precision", "recall", "accuracy")
  train_keys = ("tokens", "mask", "tags")

  def fields(self):
    t = self.config.task
    return {"tokens": (t.text_field, "tokens"), "tags": (t.label_field, "tags")}

  def inputs_from_lines(self, path: str, lines: list[str]):
    """One record per line, its words separated by whitespace."""
    return records_lib.Records(path, {"tokens": [l.split() for l in lines]})

  def inputs_from_texts(self, texts: list[str], seconds: list[str]):
    if seconds:
      super().inputs_from_texts(texts, seconds)    # refuses a second text
    return records_lib.Records("--text",
                               {"tokens": [t.split() for t in texts]})

  def read_labels(self, records) -> list[str]:
    names = records.label_names.get("tags")
    if names:
      return list(names)
    found = finetune.sort_labels({t for tags in records.columns["tags"]
                                  for t in tags})
    return (["O"] if "O" in found else []) + [t for t in found if t != "O"]

  def make_rows(self, records, tokenizer, *, with_labels: bool = True):
    first, sep, pad = finetune.frame_ids(tokenizer, self.arch)
    words = records.columns["tokens"]
    ids = None
    if with_labels:
      ids = [finetune.label_ids(t, self.labels, records.uri)
             for t in records.columns["tags"]]
    return tag_rows(words, ids, tokenizer, seq_len=self.config.seq_len,
                    first=first, sep=sep, pad=pad)

  # --- objective --------------------------------------------------------------

  def loss(self, params, batch, rng, model, *, deterministic: bool = False,
           return_logits: bool = False):
    """Objective contract: (mean cross-entropy over scored pieces, sums);
    with `return_logits` also `((logits [B, T, C], scored [B, T]),)`."""
    logits = model.apply({"params": params}, batch["tokens"],
                         segment_ids=batch["mask"],
                         deterministic=deterministic,
                         rngs=None if deterministic else {"dropout": rng}
                         )["logits"]                              # [B, T, C]
    tags = batch["tags"]
    valid = (tags >= 0) * batch["weights"][:, None]               # [B, T]
    target = jnp.maximum(tags, 0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None],
                               axis=-1)[..., 0]
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    sums = {"loss_sum": jnp.sum(valid * nll), "tokens": jnp.sum(valid),
            "correct": jnp.sum(valid * (pred == tags))}
    if deterministic:
      sums["predictions"] = pred
    if return_logits:
      return (sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0), sums,
              ((logits, valid.astype(jnp.float32)),))
    return sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0), sums

  @staticmethod
  def summarize(sums) -> dict:
    n = jnp.maximum(sums["tokens"], 1.0)
    return {"loss": sums["loss_sum"] / n, "accuracy": sums["correct"] / n}

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict:
    """Entity precision/recall/F1 over words, piece accuracy and loss."""
    totals, kept = self.eval_sums(data, eval_fn, params, mesh,
                                  batch_size=batch_size,
                                  max_batches=max_batches,
                                  keep=("predictions",))
    out = {k: float(v) for k, v in self.summarize(totals).items()}
    out["tokens"] = float(totals["tokens"])
    if all(_BIO.match(l) for l in self.labels):
      gold, pred = [], []
      words = data.records.columns["tokens"]
      for row, i in zip(kept["predictions"], kept["index"]):
        gold.append(list(data.records.columns["tags"][i]))
        pred.append(word_tags(row, data.arrays["word_index"][i],
                              len(words[i]), self.labels))
      ent = scores.entity_scores(gold, pred)
      out.update(precision=ent["precision"], recall=ent["recall"],
                 f1=ent["f1"], entities=ent["entities"])
    return {f"eval_{k}": v for k, v in out.items()}

  # --- prediction -------------------------------------------------------------

  def predictions(self, records, outputs, arrays, tokenizer) -> list[dict]:
    """Per record: the words' tags and the entities, each with its words
    and character span in the space-joined words."""
    del tokenizer
    out = []
    for i, words in enumerate(records.columns["tokens"]):
      tags = word_tags(np.asarray(outputs["logits"][i]).argmax(-1),
                       arrays["word_index"][i], len(words), self.labels)
      starts = np.cumsum([0] + [len(w) + 1 for w in words])
      entities = []
      if all(_BIO.match(l) for l in self.labels):
        for kind, a, b in scores.entity_spans(tags):
          entities.append({"type": kind, "text": " ".join(words[a:b]),
                           "start": int(starts[a]),
                           "end": int(starts[b] - 1), "words": [a, b]})
      out.append({"tags": tags, "entities": entities})
    return out
