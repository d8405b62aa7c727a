"""Retrieval and semantic-similarity metrics, and a TF-IDF baseline (numpy).

Legend: N = queries (= candidates; query i's positive is candidate i),
D = embedding width, V = vocabulary.

Ranks are pessimistic: a candidate whose similarity *ties* the positive's is
counted as ranked above it, so a model that maps everything to one vector
scores recall@1 = 0 (when N > 1), not 1. The rank of query i's positive is
  rank_i = 1 + #{j != i : sim[i, j] >= sim[i, i]}.

Example:
  >>> q = np.eye(3); retrieval_metrics(q, q, ks=(1,))
  {'recall@1': 1.0, 'mrr': 1.0}
"""

from __future__ import annotations

import collections
import math
import re
from typing import Sequence

import numpy as np

from lm.errors import LmError

_WORD = re.compile(r"\w+")
_BLOCK = 1024  # query rows scored at a time, to bound the [block, N] matrix


def _unit_rows(x):
  x = np.asarray(x, np.float64)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def _check_pairs(name, a, b):
  a = np.asarray(a)
  b = np.asarray(b)
  if a.ndim != 2 or a.shape != b.shape:
    raise LmError(f"{name} needs two [N, D] arrays of one shape, got "
                  f"{a.shape} and {b.shape}.")
  if a.shape[0] == 0:
    raise LmError(f"{name} got no rows (N = 0); pass at least one pair.")
  return a, b


def positive_ranks(queries, candidates) -> np.ndarray:
  """1-based rank of candidate i among all candidates for query i (cosine).

  Ties with the positive count against it (pessimistic).

  Example:
    >>> positive_ranks(np.eye(2), np.ones((2, 2)))   # all tie -> [2, 2]
  """
  queries, candidates = _check_pairs("positive_ranks", queries, candidates)
  q = _unit_rows(queries)
  c = _unit_rows(candidates)
  n = q.shape[0]
  ranks = np.empty(n, np.int64)
  for s in range(0, n, _BLOCK):
    sim = q[s:s + _BLOCK] @ c.T                                 # [b, N]
    rows = np.arange(sim.shape[0])
    pos = sim[rows, s + rows]                                   # [b]
    # >= counts the positive itself once, which is the "1 +".
    ranks[s:s + _BLOCK] = np.sum(sim >= pos[:, None], axis=1)
  return ranks


def retrieval_metrics(queries, candidates, ks: Sequence[int] = (1, 10)) -> dict:
  """Recall@k for each k and mean reciprocal rank; positive of query i is i.

  queries [N, D], candidates [N, D]; cosine similarity, pessimistic ties.

  Example:
    >>> retrieval_metrics(np.eye(2), np.eye(2)[::-1], ks=(1, 2))
    {'recall@1': 0.0, 'recall@2': 1.0, 'mrr': 0.5}
  """
  for k in ks:
    if int(k) < 1:
      raise LmError(f"retrieval_metrics ks must be >= 1, got {k}.")
  ranks = positive_ranks(queries, candidates)
  out = {f"recall@{int(k)}": float(np.mean(ranks <= int(k))) for k in ks}
  out["mrr"] = float(np.mean(1.0 / ranks))
  return out


def _average_ranks(x):
  """1-based ranks; tied values share the mean of their positions."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  xs = x[order]
  ranks = np.empty(len(x), np.float64)
  start = 0
  for end in range(1, len(x) + 1):
    if end == len(x) or xs[end] != xs[start]:
      ranks[order[start:end]] = (start + end + 1) / 2.0   # mean of start+1..end
      start = end
  return ranks


def spearman(x, y) -> float:
  """Spearman's rank correlation, average ranks for ties.

  NaN when either side is constant (the correlation is undefined).

  Example:
    >>> spearman([1, 2, 2, 3], [1, 3, 2, 4])   # 3 / sqrt(10) = 0.9487
  """
  x = np.asarray(x, np.float64).reshape(-1)
  y = np.asarray(y, np.float64).reshape(-1)
  if x.shape != y.shape or x.size < 2:
    raise LmError(f"spearman needs two sequences of one length >= 2, got "
                  f"lengths {x.size} and {y.size}.")
  rx = _average_ranks(x)
  ry = _average_ranks(y)
  rx -= rx.mean()
  ry -= ry.mean()
  denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
  return float(rx @ ry / denom) if denom > 0 else float("nan")


def similarity_spearman(a, b, gold) -> float:
  """Spearman between per-pair cosine(a[i], b[i]) and gold scores (STS-B).

  Example:
    >>> similarity_spearman(np.eye(3), np.eye(3)[[0, 2, 1]] + np.eye(3), [3, 1, 2])
  """
  a, b = _check_pairs("similarity_spearman", a, b)
  gold = np.asarray(gold, np.float64).reshape(-1)
  if gold.shape[0] != a.shape[0]:
    raise LmError(f"similarity_spearman got {a.shape[0]} pairs but "
                  f"{gold.shape[0]} gold scores; pass one score per pair.")
  cos = np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)          # [N]
  return spearman(cos, gold)


def tokenize(text: str) -> list[str]:
  """Lower-cased word tokens; identifiers split on non-word characters.

  Example:
    >>> tokenize("os.path.Join(a_b)")   # ['os', 'path', 'join', 'a_b']
  """
  return _WORD.findall(text.lower())


def tfidf_vectors(query_texts: Sequence[str], candidate_texts: Sequence[str]):
  """TF-IDF rows for queries and candidates, idf fitted on the candidates.

  tf = raw counts; idf = log((1 + n) / (1 + df)) + 1 over the n candidates.
  Only terms found on both sides can contribute a dot product, so the dense
  columns are that shared vocabulary plus two residual columns (one per side)
  that carry the rest of each row's norm: cosines equal those of the full
  vectors. Rows are L2-normalised (all-zero rows stay zero).

  Returns (queries [N, V'], candidates [N, V']) as float64 arrays.
  """
  q_counts = [collections.Counter(tokenize(t)) for t in query_texts]
  c_counts = [collections.Counter(tokenize(t)) for t in candidate_texts]
  n = len(c_counts)
  df = collections.Counter(term for c in c_counts for term in c)
  idf = {t: math.log((1 + n) / (1 + d)) + 1.0 for t, d in df.items()}
  shared = sorted({t for q in q_counts for t in q if t in idf})
  col = {t: j for j, t in enumerate(shared)}
  v = len(shared)

  def rows(counts, residual_col):
    out = np.zeros((len(counts), v + 2), np.float64)
    for i, c in enumerate(counts):
      full_sq = 0.0
      for term, tf in c.items():
        w = tf * idf.get(term, 0.0)
        full_sq += w * w
        if term in col:
          out[i, col[term]] = w
      out[i, residual_col] = math.sqrt(max(full_sq - float(out[i] @ out[i]), 0.0))
    return _unit_rows(out)

  # Query terms outside the candidates' vocabulary have idf 0: they cannot
  # match any candidate, so they are dropped as in sklearn's TfidfVectorizer.
  return rows(q_counts, v), rows(c_counts, v + 1)


def tfidf_baseline(query_texts: Sequence[str], candidate_texts: Sequence[str],
                   ks: Sequence[int] = (1, 10)) -> dict:
  """Bag-of-words TF-IDF cosine retrieval, scored with `retrieval_metrics`.

  Example:
    >>> tfidf_baseline(["sort a list", "open a file"],
    ...                ["def sort_list(a): return sorted(a)  # sort list",
    ...                 "def open_file(p): return open(p)  # open file"])
    {'recall@1': 1.0, 'recall@10': 1.0, 'mrr': 1.0}
  """
  if len(query_texts) != len(candidate_texts):
    raise LmError(f"tfidf_baseline got {len(query_texts)} queries but "
                  f"{len(candidate_texts)} candidates; pass one per query.")
  if not query_texts:
    raise LmError("tfidf_baseline got no texts; pass at least one query.")
  q, c = tfidf_vectors(query_texts, candidate_texts)
  return retrieval_metrics(q, c, ks)
