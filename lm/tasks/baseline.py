"""A TF-IDF + logistic-regression text classifier (numpy and scipy only).

The bag-of-n-grams baseline that fine-tuned encoders are measured against
(e.g. `benchmarks/sst2.py`). Legend: N = texts, V = vocabulary (n-gram
terms), C = classes.

Features (`TfidfVectorizer`): lower-cased word tokens (`[a-z0-9']+`, so
"isn't" stays one token), every n-gram for n in `ngrams` (joined with a
space), tf = raw counts (or 1 + log(count) with `sublinear_tf`), idf =
log((1 + n) / (1 + df)) + 1 over the n training texts (the smoothed idf of
`lm.tasks.retrieval.tfidf_vectors` and sklearn), terms in fewer than `min_df`
training texts dropped, rows L2-normalised. Rows are a `scipy.sparse` CSR
matrix [N, V]; terms never seen in training are ignored.

Classifier (`SoftmaxRegression`): multinomial logistic regression over C =
max(label) + 1 classes, minimising
  mean_i -log softmax(x_i W + b)[y_i] + l2 / 2 * ||W||^2   (b not decayed)
with L-BFGS (`scipy.optimize.minimize`, float64, exact gradients).

Example:
  >>> tfidf_logreg(["a good film", "a bad film", "good", "bad"], [1, 0, 1, 0],
  ...              ["good fun", "so bad"])
  array([1, 0])
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np
import scipy.optimize
import scipy.sparse

from lm.errors import LmError

# Word tokens; apostrophes are kept inside ("n't", "'s" as SST writes them).
_WORD = re.compile(r"[a-z0-9']+")
DEFAULT_L2 = 1e-6   # chosen on SST-2's dev split (benchmarks/sst2.py)
DEFAULT_MAX_ITER = 300


def tokenize(text: str) -> list[str]:
  """Lower-cased word tokens.

  Example:
    >>> tokenize("It isn't BAD, is it?")   # ['it', "isn't", 'bad', 'is', 'it']
  """
  return _WORD.findall(text.lower())


def ngram_terms(text: str, ngrams: tuple[int, int] = (1, 2)) -> list[str]:
  """The n-grams of `text`'s tokens for n in [ngrams[0], ngrams[1]].

  Example:
    >>> ngram_terms("Not bad at all", (1, 2))
    ['not', 'bad', 'at', 'all', 'not bad', 'bad at', 'at all']
  """
  lo, hi = ngrams
  words = tokenize(text)
  out = []
  for n in range(lo, hi + 1):
    out.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
  return out


def _check_ngrams(ngrams) -> tuple[int, int]:
  try:
    lo, hi = (int(n) for n in ngrams)
  except (TypeError, ValueError):
    raise LmError(f"ngrams={ngrams!r} must be a pair (min_n, max_n) such as "
                  "(1, 2).") from None
  if not 1 <= lo <= hi:
    raise LmError(f"ngrams={ngrams!r} must satisfy 1 <= min_n <= max_n, e.g. "
                  "(1, 2) for unigrams and bigrams.")
  return lo, hi


@dataclasses.dataclass
class TfidfVectorizer:
  """A fitted TF-IDF vocabulary (see the module docstring).

  Attributes:
    vocabulary: term -> column.
    idf: float64 [V], the idf of each column.
    ngrams: (min_n, max_n) of the terms.
    sublinear_tf: whether tf is 1 + log(count).

  Example:
    >>> v = TfidfVectorizer.fit(["a b", "a c"], ngrams=(1, 1))
    >>> v.vocabulary, v.transform(["a b b z"]).toarray().round(3)
    ({'a': 0, 'b': 1, 'c': 2}, array([[0.335, 0.942, 0.   ]]))
  """

  vocabulary: dict[str, int]
  idf: np.ndarray
  ngrams: tuple[int, int] = (1, 2)
  sublinear_tf: bool = False

  @classmethod
  def fit(cls, texts: Sequence[str], *, ngrams=(1, 2), min_df: int = 1,
          sublinear_tf: bool = False) -> TfidfVectorizer:
    """The vocabulary and idf of `texts` (terms in >= `min_df` texts)."""
    ngrams = _check_ngrams(ngrams)
    if not len(texts):
      raise LmError("TfidfVectorizer.fit got no texts; pass at least one "
                    "training text.")
    if int(min_df) < 1:
      raise LmError(f"min_df={min_df} must be >= 1 (the fewest training "
                    "texts a term must occur in).")
    df = collections.Counter()
    for text in texts:
      df.update(set(ngram_terms(text, ngrams)))
    terms = sorted(t for t, d in df.items() if d >= int(min_df))
    if not terms:
      raise LmError(f"the {len(texts)} training texts have no term in at "
                    f"least min_df={min_df} texts; lower min_df or check the "
                    "texts (tokens are [a-z0-9']+ after lower-casing).")
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in terms])
    return cls({t: j for j, t in enumerate(terms)}, idf, ngrams,
               bool(sublinear_tf))

  def transform(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
    """float64 CSR [N, V] of L2-normalised TF-IDF rows (empty rows stay 0)."""
    indptr, indices, values = [0], [], []
    for text in texts:
      counts = collections.Counter(
          self.vocabulary[t] for t in ngram_terms(text, self.ngrams)
          if t in self.vocabulary)
      cols = np.fromiter(counts.keys(), np.int64, len(counts))
      tf = np.fromiter(counts.values(), np.float64, len(counts))
      if self.sublinear_tf:
        tf = 1.0 + np.log(tf)
      w = tf * self.idf[cols]
      norm = math.sqrt(float(w @ w))
      indices.append(cols)
      values.append(w / norm if norm > 0 else w)
      indptr.append(indptr[-1] + len(cols))
    x = scipy.sparse.csr_matrix(
        (np.concatenate(values) if values else np.zeros(0),
         np.concatenate(indices) if indices else np.zeros(0, np.int64),
         np.asarray(indptr)), shape=(len(indptr) - 1, len(self.vocabulary)))
    x.sort_indices()
    return x


def _check_labels(labels, n: int) -> np.ndarray:
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != n:
    raise LmError(f"got {n} training texts but labels of shape {y.shape}; "
                  "pass one integer label per text.")
  if n and not np.issubdtype(y.dtype, np.integer):
    if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
      raise LmError(f"labels must be integer class ids 0..C-1, got dtype "
                    f"{y.dtype}; map class names to ids first.")
  y = y.astype(np.int64)
  if n and y.min() < 0:
    raise LmError(f"labels must be class ids 0..C-1, got {int(y.min())}; "
                  "map class names to non-negative ids.")
  return y


@dataclasses.dataclass
class SoftmaxRegression:
  """Multinomial logistic regression with L2 (see the module docstring).

  Attributes:
    weights: float64 [V, C].
    bias: float64 [C].

  Example:
    >>> x = scipy.sparse.csr_matrix(np.eye(2))
    >>> SoftmaxRegression.fit(x, [0, 1], l2=1e-3).predict(x)
    array([0, 1])
  """

  weights: np.ndarray
  bias: np.ndarray

  @classmethod
  def fit(cls, x, labels, *, l2: float = DEFAULT_L2,
          max_iter: int = DEFAULT_MAX_ITER,
          num_classes: int | None = None) -> SoftmaxRegression:
    """Fits [N, V] features `x` (sparse or dense) to int `labels` [N]."""
    x = scipy.sparse.csr_matrix(x, dtype=np.float64)
    n, v = x.shape
    if n == 0:
      raise LmError("SoftmaxRegression.fit got no examples; pass at least "
                    "one labelled row.")
    y = _check_labels(labels, n)
    if not l2 >= 0:
      raise LmError(f"l2={l2} must be >= 0.")
    c = int(num_classes or y.max() + 1)
    if y.max() >= c:
      raise LmError(f"label {int(y.max())} is outside num_classes={c}; raise "
                    "num_classes or fix the labels.")
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0
    xt = x.T.tocsr()

    def loss_and_grad(theta):
      w = theta[:v * c].reshape(v, c)
      b = theta[v * c:]
      z = x @ w + b                                               # [N, C]
      z -= z.max(axis=1, keepdims=True)
      log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
      loss = -np.sum(onehot * log_p) / n + 0.5 * l2 * float(np.sum(w * w))
      d = (np.exp(log_p) - onehot) / n                            # [N, C]
      grad_w = xt @ d + l2 * w                                    # [V, C]
      return loss, np.concatenate([grad_w.reshape(-1), d.sum(axis=0)])

    result = scipy.optimize.minimize(
        loss_and_grad, np.zeros(v * c + c), jac=True, method="L-BFGS-B",
        options={"maxiter": int(max_iter)})
    theta = result.x
    return cls(theta[:v * c].reshape(v, c), theta[v * c:])

  def logits(self, x) -> np.ndarray:
    """float64 [N, C] scores of [N, V] features."""
    return np.asarray(x @ self.weights) + self.bias

  def predict_proba(self, x) -> np.ndarray:
    z = self.logits(x)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)

  def predict(self, x) -> np.ndarray:
    """int64 [N] most likely class of each row."""
    return np.argmax(self.logits(x), axis=1)


@dataclasses.dataclass
class TfidfClassifier:
  """`TfidfVectorizer` features into a `SoftmaxRegression`.

  Example:
    >>> clf = TfidfClassifier.fit(["great", "awful"], [1, 0])
    >>> clf.predict(["great fun", "awful mess"])
    array([1, 0])
  """

  vectorizer: TfidfVectorizer
  model: SoftmaxRegression

  @classmethod
  def fit(cls, texts: Sequence[str], labels, *, ngrams=(1, 2),
          min_df: int = 1, sublinear_tf: bool = False, l2: float = DEFAULT_L2,
          max_iter: int = DEFAULT_MAX_ITER) -> TfidfClassifier:
    if not len(texts):
      raise LmError("TfidfClassifier.fit got no training texts; pass at least "
                    "one labelled text.")
    y = _check_labels(labels, len(texts))
    vec = TfidfVectorizer.fit(texts, ngrams=ngrams, min_df=min_df,
                              sublinear_tf=sublinear_tf)
    return cls(vec, SoftmaxRegression.fit(vec.transform(texts), y, l2=l2,
                                          max_iter=max_iter))

  def predict(self, texts: Sequence[str]) -> np.ndarray:
    """int64 [N] predicted label ids."""
    if not len(texts):
      return np.zeros(0, np.int64)
    return self.model.predict(self.vectorizer.transform(texts))

  def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
    """float64 [N, C] class probabilities."""
    return self.model.predict_proba(self.vectorizer.transform(texts))


def tfidf_logreg(train_texts: Sequence[str], train_labels,
                 test_texts: Sequence[str], *, ngrams=(1, 2), min_df: int = 1,
                 sublinear_tf: bool = False, l2: float = DEFAULT_L2,
                 max_iter: int = DEFAULT_MAX_ITER) -> np.ndarray:
  """Predicted label ids [len(test_texts)] of a TF-IDF + softmax-regression
  classifier trained on `train_texts` with int labels 0..C-1.

  Example:
    >>> tfidf_logreg(["good", "bad"], [1, 0], ["very good"])
    array([1])
  """
  clf = TfidfClassifier.fit(train_texts, train_labels, ngrams=ngrams,
                            min_df=min_df, sublinear_tf=sublinear_tf, l2=l2,
                            max_iter=max_iter)
  return clf.predict(test_texts)
