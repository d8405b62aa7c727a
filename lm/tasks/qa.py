"""Extractive question answering (SQuAD v1.1 style).

Each example is a question, a context and its answers (text and character
offset). Rows are `[CLS] question [SEP] context window [SEP]` (token types 0
then 1; `bos ... eos ... eos` for decoders). The question keeps its first
`max_question_len` pieces; a context longer than the room left is cut into
windows that start every `doc_stride` pieces (or every window length, when
that is shorter), until one reaches its end, so every piece is in at least
one window. A window's targets are the pieces
holding the first answer's first and last characters, or position 0 when
the answer is not wholly inside it (as BERT trains on SQuAD).

Decoding: in every window of an example, the best span maximises
`start_logit[i] + end_logit[j]` over context pieces `i <= j < i +
max_answer_len`; the example's answer is the best over its windows, cut from
the context by the pieces' character offsets. Evaluation reports SQuAD
exact match and F1 (`lm.tasks.scores.squad_scores`, max over the gold
answers) and the window loss.

Example config (SQuAD from TFDS):
  c.objective = "qa"
  c.data.train, c.data.eval = "tfds:squad:train", "tfds:squad:validation"
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.data import records as records_lib
from lm.errors import LmError
from lm.tasks import finetune, scores

_NEG = -1e9


def windows(n: int, room: int, stride: int) -> list[tuple[int, int]]:
  """`[start, end)` piece ranges of a context of `n` pieces: `room` pieces
  each, starting every `stride` (at most `room`, so no piece is skipped),
  the last one reaching the end.

  Example: n 10, room 4, stride 3 -> [(0, 4), (3, 7), (6, 10)];
  stride 5 -> [(0, 4), (4, 8), (8, 10)]; n 0 -> [(0, 0)].
  """
  out, s = [], 0
  while True:
    e = min(s + room, n)
    out.append((s, e))
    if e >= n:
      return out
    s += min(stride, room)


def answer_pieces(starts: np.ndarray, ends: np.ndarray, char_start: int,
                  char_end: int) -> tuple[int, int] | None:
  """The first and last context pieces covering characters
  `[char_start, char_end)`, or None when no piece does.

  Example: pieces "the" [0,3), "▁red" [3,7), "▁fox" [7,11); answer "red"
  [4, 7) -> (1, 1).
  """
  first = np.nonzero(ends > char_start)[0]
  last = np.nonzero(starts < char_end)[0]
  if not len(first) or not len(last) or first[0] > last[-1]:
    return None
  return int(first[0]), int(last[-1])


def best_span(start_logits: np.ndarray, end_logits: np.ndarray,
              max_answer_len: int) -> tuple[int, int, float]:
  """`(i, j, score)` maximising `start[i] + end[j]` with
  `i <= j < i + max_answer_len` over one window's context pieces.

  Example: start [0, 5, 1], end [0, 1, 4], max_answer_len 2 -> (1, 2, 9.0).
  """
  m = len(start_logits)
  best = (0, 0, -np.inf)
  for k in range(min(max_answer_len, m)):
    total = start_logits[:m - k] + end_logits[k:]
    i = int(np.argmax(total))
    if total[i] > best[2]:
      best = (i, i + k, float(total[i]))
  return best


class QuestionAnswering(finetune.Task):
  """Extractive QA (see the module docstring)."""

  name = "qa"
  head = "span"
  main_metric = "f1"
  metrics = ("f1", "exact_match")
  train_keys = ("tokens", "token_types", "mask", "start", "end")
  count_key = "windows"      # what the logged counts count (model rows)

  def __init__(self, config, stored=None):
    super().__init__(config, {**(stored or {}), "labels": ["start", "end"]})
    t = config.task
    for key in ("doc_stride", "max_question_len", "max_answer_len"):
      if int(t[key]) < 1:
        raise LmError(f"config.task.{key}={t[key]} must be a positive "
                      "integer.")

  def fields(self):
    t = self.config.task
    out = {"question": (t.question_field, "text"),
           "context": (t.context_field, "text"),
           "answers": (t.answers_field, "answers")}
    if t.id_field:
      out["id"] = (t.id_field, "text")
    return out

  second_text_flag = "--context"

  def inputs_from_lines(self, path: str, lines: list[str]):
    del lines
    del path
    raise LmError("a qa run reads two texts per input, so --input must be a "
                  ".jsonl file with the run's field names "
                  f"({self._input_field_names()}).")

  def inputs_from_texts(self, texts: list[str], seconds: list[str]):
    if not seconds:
      raise LmError("a qa run needs the question as --text and the passage "
                    "as --context.")
    return records_lib.Records("--text", {"question": texts,
                                          "context": seconds})

  def read_labels(self, records) -> list[str]:
    del records
    return ["start", "end"]

  def settings(self) -> dict:
    t = self.config.task
    return {**super().settings(), "doc_stride": int(t.doc_stride),
            "max_question_len": int(t.max_question_len)}

  def make_rows(self, records, tokenizer, *, with_labels: bool = True):
    """One row per window, with `example` (its record), `window_start` (its
    first context piece) and `context_at` (that piece's row position)."""
    t, seq_len = self.config.task, self.config.seq_len
    first, sep, pad = finetune.frame_ids(tokenizer, self.arch)
    questions = tokenizer.encode_batch(records.columns["question"])
    contexts = tokenizer.encode_with_offsets(records.columns["context"])
    answers = records.columns.get("answers") if with_labels else None
    rows = {k: [] for k in ("tokens", "token_types", "mask", "start", "end",
                            "example", "window_start", "context_at")}
    for i, (q, (ids, cs, ce)) in enumerate(zip(questions, contexts)):
      q = q[:int(t.max_question_len)]
      room = seq_len - len(q) - 3
      if room < 1:
        raise LmError(f"config.seq_len={seq_len} leaves no room for context "
                      f"after a {len(q)}-piece question; raise seq_len or "
                      "lower config.task.max_question_len.")
      span = None
      if answers is not None and answers[i]:
        text, at = answers[i][0]
        span = answer_pieces(cs, ce, at, at + len(text))
      for s, e in windows(len(ids), room, int(t.doc_stride)):
        row = np.full(seq_len, pad, np.int32)
        body = [first, *q, sep, *ids[s:e], sep]
        row[:len(body)] = body
        types = np.zeros(seq_len, np.int32)
        types[len(q) + 2:len(body)] = 1
        at0 = len(q) + 2
        start = end = 0
        if span is not None and s <= span[0] and span[1] < e:
          start, end = span[0] - s + at0, span[1] - s + at0
        rows["tokens"].append(row)
        rows["token_types"].append(types)
        rows["mask"].append((np.arange(seq_len) < len(body)).astype(np.int32))
        rows["start"].append(start)
        rows["end"].append(end)
        rows["example"].append(i)
        rows["window_start"].append(s)
        rows["context_at"].append(at0)
    return {k: np.asarray(v, np.int32) for k, v in rows.items()}

  # --- objective --------------------------------------------------------------

  def loss(self, params, batch, rng, model, *, deterministic: bool = False,
           return_logits: bool = False):
    """Objective contract: (mean of the start and end cross-entropies over
    windows, sums); with `return_logits` also the start and end logits
    `[B, T]`, each weighted by half the window's weight (as the loss)."""
    out = model.apply({"params": params}, batch["tokens"],
                      token_types=batch["token_types"],
                      segment_ids=batch["mask"], deterministic=deterministic,
                      rngs=None if deterministic else {"dropout": rng})
    real = batch["mask"] > 0
    w = batch["weights"]
    total, right = 0.0, 1.0
    logits = {}
    for name in ("start", "end"):
      lg = jnp.where(real, out[f"{name}_logits"], _NEG)            # [B, T]
      logits[name] = lg
      nll = -jnp.take_along_axis(jax.nn.log_softmax(lg),
                                 batch[name][:, None], axis=1)[:, 0]
      total = total + 0.5 * nll
      right = right * (jnp.argmax(lg, axis=-1) == batch[name])
    sums = {"loss_sum": jnp.sum(w * total), "tokens": jnp.sum(w),
            "windows": jnp.sum(w), "correct": jnp.sum(w * right)}
    if deterministic:
      sums["start_logits"] = logits["start"]
      sums["end_logits"] = logits["end"]
    if return_logits:
      half = 0.5 * w.astype(jnp.float32)
      return (sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0), sums,
              ((logits["start"], half), (logits["end"], half)))
    return sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0), sums

  @staticmethod
  def summarize(sums) -> dict:
    n = jnp.maximum(sums["tokens"], 1.0)
    return {"loss": sums["loss_sum"] / n, "accuracy": sums["correct"] / n}

  def decode(self, records, arrays, rows: np.ndarray, start_logits,
             end_logits, tokenizer) -> dict[int, dict]:
    """Best answer per example over its windows `rows` (row indices, with
    their logits): example index -> {"answer", "score", "start", "end"}."""
    examples = np.asarray(arrays["example"])[rows]
    wanted = sorted(set(int(e) for e in examples))
    offsets = dict(zip(wanted, tokenizer.encode_with_offsets(
        [records.columns["context"][e] for e in wanted])))
    best: dict[int, dict] = {}
    max_len = int(self.config.task.max_answer_len)
    for r, row in enumerate(rows):
      e = int(examples[r])
      _, cs, ce = offsets[e]
      s0 = int(arrays["window_start"][row])
      at = int(arrays["context_at"][row])
      n = min(len(cs) - s0, self.config.seq_len - at - 1)
      if n <= 0:
        continue
      i, j, score = best_span(np.asarray(start_logits[r][at:at + n]),
                              np.asarray(end_logits[r][at:at + n]), max_len)
      if e not in best or score > best[e]["score"]:
        context = records.columns["context"][e]
        a, b = int(cs[s0 + i]), int(ce[s0 + j])
        text = context[a:b]
        lead = len(text) - len(text.lstrip())
        best[e] = {"answer": text.strip(), "score": score, "start": a + lead,
                   "end": a + lead + len(text.strip())}
    for e in wanted:
      best.setdefault(e, {"answer": "", "score": float("-inf"), "start": 0,
                          "end": 0})
    return best

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict:
    """SQuAD exact match and F1 of the decoded answers, window loss."""
    totals, kept = self.eval_sums(data, eval_fn, params, mesh,
                                  batch_size=batch_size,
                                  max_batches=max_batches,
                                  keep=("start_logits", "end_logits"))
    best = self.decode(data.records, data.arrays, kept["index"],
                       kept["start_logits"], kept["end_logits"],
                       self.tokenizer)
    ids = _ids(data.records)
    answers = data.records.columns["answers"]
    preds = {ids[e]: v["answer"] for e, v in best.items()}
    golds = {ids[e]: [a for a, _ in answers[e]] for e in best}
    out = {k: float(v) for k, v in self.summarize(totals).items()}
    sq = scores.squad_scores(preds, golds)
    out.update(exact_match=sq["exact_match"], f1=sq["f1"],
               questions=sq["questions"], windows=float(totals["windows"]))
    return {f"eval_{k}": v for k, v in out.items()}

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    self.tokenizer = tokenizer      # evaluation re-reads context offsets
    return super().open_data(source, tokenizer, cache_dir, max_chars)

  # --- prediction -------------------------------------------------------------

  def predictions(self, records, outputs, arrays, tokenizer) -> list[dict]:
    """One `{"answer", "score", "start", "end"}` per record (character
    offsets into its context)."""
    rows = np.arange(len(arrays["example"]))
    best = self.decode(records, arrays, rows, outputs["start_logits"],
                       outputs["end_logits"], tokenizer)
    return [best[e] for e in range(len(records))]


def _ids(records) -> Sequence[str]:
  """The records' ids, or their row numbers when they have none."""
  ids = records.columns.get("id")
  return ids if ids is not None else [str(i) for i in range(len(records))]
