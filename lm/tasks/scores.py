"""Evaluation metrics of the fine-tuning tasks (pure numpy / Python).

Classification (C = classes):
  confusion_matrix       [C, C] counts, row = gold class, column = predicted.
  classification_scores  accuracy, macro-F1 and multiclass MCC of a matrix.
Named entities (tag sequences in IOB1 / IOB2 / IOBES):
  entity_spans           (type, start, end_exclusive) chunks of one sentence.
  entity_scores          micro P / R / F1 over exact spans, plus per type.
Extractive QA (SQuAD v1.1 definitions):
  normalize_answer       lower-case, drop punctuation and articles, squeeze.
  exact_match, token_f1  best score over the gold answers of one question.
  squad_scores           mean EM and F1 over questions.

Scores are fractions in [0, 1] (MCC in [-1, 1]); a ratio 0 / 0 is 0.0.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

import numpy as np

from lm.errors import LmError

_ARTICLE = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_TAG = re.compile(r"O|[BIES](-.*)?", re.DOTALL)


def _ratio(num, den) -> float:
  return float(num) / float(den) if den else 0.0


def _f1(precision: float, recall: float) -> float:
  return _ratio(2 * precision * recall, precision + recall)


# --- classification ---------------------------------------------------------


def confusion_matrix(labels, predictions, num_classes: int, *,
                     weights=None) -> np.ndarray:
  """int64 [C, C] counts: entry [g, p] = #examples with gold g, predicted p.

  `weights` (optional, one per example) is a mask: examples of weight 0 are
  skipped, every other example counts once.

  Example: confusion_matrix([0, 1, 1], [0, 1, 0], 2) -> [[1, 0], [1, 1]]
  """
  labels = np.asarray(labels).reshape(-1)
  predictions = np.asarray(predictions).reshape(-1)
  if labels.shape != predictions.shape:
    raise LmError(f"confusion_matrix got {labels.size} labels but "
                  f"{predictions.size} predictions; pass one prediction per "
                  "label.")
  if int(num_classes) < 1:
    raise LmError(f"confusion_matrix needs num_classes >= 1, got "
                  f"{num_classes}.")
  if weights is not None:
    weights = np.asarray(weights).reshape(-1)
    if weights.shape != labels.shape:
      raise LmError(f"confusion_matrix got {weights.size} weights for "
                    f"{labels.size} labels; pass one weight per label.")
    keep = weights != 0
    labels, predictions = labels[keep], predictions[keep]
  for name, values in (("labels", labels), ("predictions", predictions)):
    if values.size and (not np.all(np.equal(np.mod(values, 1), 0))
                        or values.min() < 0 or values.max() >= num_classes):
      raise LmError(f"confusion_matrix {name} must be integers in "
                    f"[0, {num_classes}), got values from {values.min()} "
                    f"to {values.max()}; fix the labels or num_classes.")
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
  return out


def classification_scores(confusion) -> dict:
  """Accuracy, macro-F1, multiclass MCC and the example count of a matrix.

  macro_f1 averages per-class F1 over the classes that occur in the gold
  labels or the predictions. mcc is Gorodkin's R_K:
    (c * s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))
  with c = trace, s = total, p_k / t_k = predicted / true counts of class k;
  0 when the denominator is 0.

  Example: classification_scores([[1, 0], [1, 1]])
    -> accuracy 2/3, macro_f1 (2/3 + 2/3) / 2 = 2/3, mcc 0.5, examples 3.0
  """
  m = np.asarray(confusion, np.float64)
  if m.ndim != 2 or m.shape[0] != m.shape[1]:
    raise LmError(f"classification_scores needs a square [C, C] confusion "
                  f"matrix, got shape {m.shape}.")
  if np.any(m < 0):
    raise LmError("classification_scores got a negative count; pass the "
                  "matrix from confusion_matrix.")
  tp = np.diag(m)
  true = m.sum(axis=1)
  pred = m.sum(axis=0)
  s = m.sum()
  c = tp.sum()
  present = (true + pred) > 0
  f1 = 2 * tp[present] / (true + pred)[present]  # = 2PR / (P + R)
  cov_pt = c * s - float(np.dot(pred, true))
  cov_pp = s * s - float(np.dot(pred, pred))
  cov_tt = s * s - float(np.dot(true, true))
  den = cov_pp * cov_tt
  mcc = cov_pt / np.sqrt(den) if den > 0 else 0.0
  return {
      "accuracy": _ratio(c, s),
      "macro_f1": float(f1.mean()) if f1.size else 0.0,
      "mcc": float(np.clip(mcc, -1.0, 1.0)),
      "examples": float(s),
  }


# --- named entities ---------------------------------------------------------


def _split_tag(tag, where: str) -> tuple[str, str]:
  if not isinstance(tag, str) or not _TAG.fullmatch(tag):
    raise LmError(f"{where}: tag {tag!r} is not 'O' or B/I/E/S with an "
                  "optional '-TYPE'; fix the tag set.")
  return tag[0], (tag[2:] or "_")  # 'O' and bare 'B' get type '_'


def _ends(prev_tag, tag, prev_type, type_) -> bool:
  return (prev_tag in "ES"
          or (prev_tag in "BI" and tag in "BSO")
          or (prev_tag != "O" and prev_type != type_))


def _starts(prev_tag, tag, prev_type, type_) -> bool:
  return (tag in "BS"
          or (prev_tag in "ESO" and tag in "EI")
          or (tag != "O" and prev_type != type_))


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """Entity chunks (type, start, end_exclusive) of one sentence's tags.

  Lenient chunking (seqeval's default mode): an I- or E- tag after O or
  after another type starts a chunk, and a type change ends one.

  Example: ["B-PER", "I-PER", "O", "I-LOC"] -> [("PER", 0, 2), ("LOC", 3, 4)]
  """
  spans = []
  prev_tag, prev_type, begin = "O", "", 0
  for i, raw in enumerate(list(tags) + ["O"]):  # the sentinel closes the last
    tag, type_ = _split_tag(raw, f"entity_spans position {i}")
    if _ends(prev_tag, tag, prev_type, type_):
      spans.append((prev_type, begin, i))
    if _starts(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return spans


def entity_scores(gold: Sequence[Sequence[str]],
                  predicted: Sequence[Sequence[str]]) -> dict:
  """Micro precision / recall / F1 over exact (type, start, end) spans.

  A predicted span counts only if a gold span of that sentence has the same
  type and both bounds; a partial overlap is one false positive and one
  false negative. per_type maps type -> precision, recall, f1, support
  (gold count); entities is the gold count.

  Example: gold [["B-PER", "I-PER"]], predicted [["B-PER", "O"]]
    -> precision 0.0, recall 0.0, f1 0.0, entities 1.0
  """
  if len(gold) != len(predicted):
    raise LmError(f"entity_scores got {len(gold)} gold sentences but "
                  f"{len(predicted)} predicted; pass one prediction per "
                  "sentence.")
  hits = collections.Counter()
  n_gold = collections.Counter()
  n_pred = collections.Counter()
  for i, (g_tags, p_tags) in enumerate(zip(gold, predicted)):
    if len(g_tags) != len(p_tags):
      raise LmError(f"entity_scores sentence {i} has {len(g_tags)} gold tags "
                    f"but {len(p_tags)} predicted; pass one tag per token.")
    g_spans = set(entity_spans(g_tags))
    p_spans = set(entity_spans(p_tags))
    for span in g_spans:
      n_gold[span[0]] += 1
    for span in p_spans:
      n_pred[span[0]] += 1
    for span in g_spans & p_spans:
      hits[span[0]] += 1
  per_type = {}
  for type_ in sorted(set(n_gold) | set(n_pred)):
    p = _ratio(hits[type_], n_pred[type_])
    r = _ratio(hits[type_], n_gold[type_])
    per_type[type_] = {"precision": p, "recall": r, "f1": _f1(p, r),
                       "support": float(n_gold[type_])}
  tp, g_total, p_total = (sum(c.values()) for c in (hits, n_gold, n_pred))
  p = _ratio(tp, p_total)
  r = _ratio(tp, g_total)
  return {"precision": p, "recall": r, "f1": _f1(p, r),
          "per_type": per_type, "entities": float(g_total)}


# --- extractive QA (SQuAD v1.1) ---------------------------------------------


def normalize_answer(text: str) -> str:
  """Lower-case, drop punctuation, drop articles a/an/the, squeeze spaces.

  Example: "The  Cat!" -> "cat"
  """
  text = str(text).lower().translate(_PUNCT)
  return " ".join(_ARTICLE.sub(" ", text).split())


def _check_answers(answers, where: str) -> list[str]:
  if isinstance(answers, str):
    raise LmError(f"{where} needs a list of gold answers, got the string "
                  f"{answers!r}; wrap it in a list.")
  answers = list(answers)
  if not answers:
    raise LmError(f"{where} got no gold answers; give every question at "
                  "least one.")
  return answers


def _em_one(prediction: str, answer: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(answer))


def _f1_one(prediction: str, answer: str) -> float:
  pred = normalize_answer(prediction).split()
  gold = normalize_answer(answer).split()
  if not pred or not gold:
    return float(pred == gold)  # both empty -> 1, one empty -> 0
  same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
  p = same / len(pred)
  r = same / len(gold)
  return _f1(p, r)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
  """1.0 if the normalised prediction equals some normalised answer, else 0.

  Example: exact_match("the Cat.", ["a dog", "cat"]) -> 1.0
  """
  answers = _check_answers(answers, "exact_match")
  return max(_em_one(prediction, a) for a in answers)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
  """Best bag-of-tokens F1 of the prediction against the answers.

  Example: token_f1("the big red dog", ["red dog barks"])
    -> tokens [big, red, dog] vs [red, dog, barks], common 2,
       P = R = 2/3 -> 2/3
  """
  answers = _check_answers(answers, "token_f1")
  return max(_f1_one(prediction, a) for a in answers)


def squad_scores(predictions: dict[str, str],
                 answers: dict[str, Sequence[str]]) -> dict:
  """Mean exact_match and f1 over the questions in `answers`.

  A question without a prediction scores 0; predictions for questions not
  in `answers` are ignored.

  Example: squad_scores({"q1": "cat"}, {"q1": ["the cat"], "q2": ["dog"]})
    -> exact_match 0.5, f1 0.5, questions 2.0
  """
  em = f1 = 0.0
  for qid, golds in answers.items():
    golds = _check_answers(golds, f"squad_scores question {qid!r}")
    if qid not in predictions:
      continue
    em += exact_match(predictions[qid], golds)
    f1 += token_f1(predictions[qid], golds)
  n = len(answers)
  return {"exact_match": _ratio(em, n), "f1": _ratio(f1, n),
          "questions": float(n)}
