"""Retrieval metrics, Spearman and the TF-IDF baseline on hand-checked cases."""

import math

import numpy as np
import pytest

from lm.errors import LmError
from lm.tasks.retrieval import (positive_ranks, retrieval_metrics, similarity_spearman,
                                spearman, tfidf_baseline, tfidf_vectors,
                                tokenize)


def test_identity_is_perfect():
  q = np.random.default_rng(0).normal(size=(20, 6))
  assert retrieval_metrics(q, q) == {"recall@1": 1.0, "recall@10": 1.0, "mrr": 1.0}


def test_known_ranks():
  # Candidates are one-hots; query i scores candidate j by s[i, j].
  s = np.array([[0.9, 0.1, 0.0, 0.0],     # positive first  -> rank 1
                [0.8, 0.5, 0.9, 0.0],     # two above       -> rank 3
                [0.0, 0.0, 0.3, 0.1],     # first           -> rank 1
                [0.4, 0.3, 0.2, 0.1]])    # last            -> rank 4
  c = np.eye(4)
  assert positive_ranks(s, c).tolist() == [1, 3, 1, 4]
  got = retrieval_metrics(s, c, ks=(1, 3))
  assert got["recall@1"] == 0.5
  assert got["recall@3"] == 0.75
  assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 + 1 / 4) / 4)


def test_permutation():
  q = np.eye(5)
  c = np.eye(5)[[1, 0, 2, 3, 4]]   # queries 0 and 1 find the swapped candidate
  got = retrieval_metrics(q, c, ks=(1, 2))
  # Queries 0 and 1 score 0 on their positive, tying 3 other zeros: rank 5.
  assert got == {"recall@1": 0.6, "recall@2": 0.6,
                 "mrr": pytest.approx((0.2 + 0.2 + 3) / 5)}


def test_ties_are_pessimistic():
  q = np.ones((3, 4))
  assert positive_ranks(q, q).tolist() == [3, 3, 3]
  got = retrieval_metrics(q, q, ks=(1, 3))
  assert got["recall@1"] == 0.0 and got["recall@3"] == 1.0
  assert got["mrr"] == pytest.approx(1 / 3)
  # One tie with the positive: rank 2, not 1.
  c = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  assert positive_ranks(np.eye(3, 2), c)[0] == 2


def test_spearman_hand_values():
  assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # Ranks x=[1, 2.5, 2.5, 4], y=[1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5) = 3/sqrt(10).
  assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
  # Monotone transform invariance, and NaN for a constant side.
  assert spearman([0.1, 5, 2], [1, 3, 2]) == pytest.approx(1.0)
  assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
  with pytest.raises(LmError):
    spearman([1, 2], [1, 2, 3])


def test_similarity_spearman():
  a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
  b = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])   # cos 1, 0.707, 0
  assert similarity_spearman(a, b, [5.0, 3.0, 1.0]) == pytest.approx(1.0)
  assert similarity_spearman(a, b, [1.0, 3.0, 5.0]) == pytest.approx(-1.0)
  with pytest.raises(LmError):
    similarity_spearman(a, b, [1.0, 2.0])


def test_tfidf_baseline():
  assert tokenize("os.path.Join(a_b)") == ["os", "path", "join", "a_b"]
  docs = ["def read_file(path): return open(path).read()",
          "def sort_numbers(xs): return sorted(xs)",
          "class HttpClient: def get(self, url): pass",
          "def add(a, b): return a + b",
          "the the the the"]
  # Exact-match queries (shuffled word order changes nothing for bag-of-words).
  got = tfidf_baseline(docs, docs, ks=(1, 10))
  assert got == {"recall@1": 1.0, "recall@10": 1.0, "mrr": 1.0}
  # "the" also hits the last doc; "sort_numbers" is one token, "sorted" another.
  queries = ["open the path and read it", "sorted xs", "httpclient get url", "add a b",
             "unrelated words entirely"]
  got = tfidf_baseline(queries, docs, ks=(1, 5))
  assert got["recall@1"] == 0.8 and got["recall@5"] == 1.0   # last query ties all


def test_tfidf_vectors_match_full_vocabulary_cosines():
  queries = ["alpha beta beta gamma", "delta zeta", "omega"]
  docs = ["beta gamma gamma eta", "zeta zeta theta alpha", "eta theta"]
  q, c = tfidf_vectors(queries, docs)
  vocab = sorted({t for d in docs for t in tokenize(d)})
  df = {t: sum(t in tokenize(d) for d in docs) for t in vocab}
  idf = np.array([math.log(4 / (1 + df[t])) + 1 for t in vocab])

  def full(texts):
    m = np.array([[tokenize(x).count(t) for t in vocab] for x in texts], float) * idf
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1)

  np.testing.assert_allclose(q @ c.T, full(queries) @ full(docs).T, atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0)


def test_errors():
  with pytest.raises(LmError):
    retrieval_metrics(np.ones((3, 4)), np.ones((2, 4)))
  with pytest.raises(LmError):
    retrieval_metrics(np.ones((0, 4)), np.ones((0, 4)))
  with pytest.raises(LmError):
    tfidf_baseline(["a"], ["a", "b"])
  with pytest.raises(LmError):
    tfidf_baseline([], [])
