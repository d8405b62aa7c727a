"""TF-IDF + logistic-regression baseline on tiny synthetic data."""

import math

import numpy as np
import pytest

from lm.errors import LmError
from lm.tasks.baseline import (SoftmaxRegression, TfidfClassifier,
                               TfidfVectorizer, ngram_terms, tfidf_logreg,
                               tokenize)

NOISE = [f"w{i}" for i in range(40)]
KEYS = ["alpha", "beta", "gamma"]


def _texts(rng, n, classes=3):
  """Texts of 6 noise words plus one keyword naming the class."""
  labels = rng.integers(0, classes, n)
  texts = []
  for y in labels:
    words = list(rng.choice(NOISE, 6)) + [KEYS[y]]
    rng.shuffle(words)
    texts.append(" ".join(words))
  return texts, labels


def test_tokenize_and_ngrams():
  assert tokenize("It ISN'T bad, 2x!") == ["it", "isn't", "bad", "2x"]
  assert ngram_terms("not bad at all", (1, 2)) == [
      "not", "bad", "at", "all", "not bad", "bad at", "at all"]
  assert ngram_terms("a b c", (2, 3)) == ["a b", "b c", "a b c"]
  assert ngram_terms("", (1, 2)) == []


def test_tfidf_values():
  v = TfidfVectorizer.fit(["a b", "a c"], ngrams=(1, 1))
  assert v.vocabulary == {"a": 0, "b": 1, "c": 2}
  # idf = log(3 / (1 + df)) + 1: a in both texts, b and c in one.
  np.testing.assert_allclose(v.idf, [1.0, math.log(1.5) + 1, math.log(1.5) + 1])
  x = v.transform(["a b b z", "", "z"]).toarray()
  w = np.array([1.0, 2 * (math.log(1.5) + 1), 0.0])
  np.testing.assert_allclose(x[0], w / np.linalg.norm(w))
  assert not x[1].any() and not x[2].any()     # no known term: a zero row
  sub = TfidfVectorizer.fit(["a b", "a c"], ngrams=(1, 1), sublinear_tf=True)
  w = np.array([1.0, (1 + math.log(2)) * (math.log(1.5) + 1), 0.0])
  np.testing.assert_allclose(sub.transform(["a b b"]).toarray()[0],
                             w / np.linalg.norm(w))


def test_min_df_and_bigrams():
  v = TfidfVectorizer.fit(["a b", "a b c", "c d"], ngrams=(1, 2), min_df=2)
  assert sorted(v.vocabulary) == ["a", "a b", "b", "c"]


def test_separable_data_is_learned():
  rng = np.random.default_rng(0)
  train, y_train = _texts(rng, 90)
  test, y_test = _texts(rng, 60)
  pred = tfidf_logreg(train, y_train, test)
  assert pred.dtype == np.int64 and pred.shape == (60,)
  np.testing.assert_array_equal(pred, y_test)
  clf = TfidfClassifier.fit(train, y_train, l2=1e-3)
  np.testing.assert_array_equal(clf.predict(test), y_test)
  p = clf.predict_proba(test)
  np.testing.assert_allclose(p.sum(axis=1), 1.0)
  assert clf.predict([]).shape == (0,)


def test_shuffled_labels_do_not_generalise():
  rng = np.random.default_rng(1)
  train, y_train = _texts(rng, 200, classes=2)
  test, y_test = _texts(rng, 200, classes=2)
  shuffled = rng.permutation(y_train)
  clf = TfidfClassifier.fit(train, shuffled, l2=1e-6)
  # It can memorise the training set, but the test set stays near chance.
  assert np.mean(clf.predict(train) == shuffled) > 0.9
  assert 0.35 < np.mean(clf.predict(test) == y_test) < 0.65


def test_softmax_regression_l2_shrinks_to_the_prior():
  x = np.eye(4)
  y = np.array([0, 0, 0, 1])
  loose = SoftmaxRegression.fit(x, y, l2=1e-6)
  np.testing.assert_array_equal(loose.predict(x), y)
  tight = SoftmaxRegression.fit(x, y, l2=1e3)
  np.testing.assert_array_equal(tight.predict(x), [0, 0, 0, 0])
  np.testing.assert_allclose(tight.predict_proba(x)[:, 1], 0.25, atol=1e-3)


@pytest.mark.parametrize("texts,labels,kwargs,match", [
    ([], [], {}, "no training texts"),
    (["a", "b"], [0], {}, "one integer label per text"),
    (["a", "b"], [0, -1], {}, "non-negative"),
    (["a", "b"], ["x", "y"], {}, "integer class ids"),
    (["a", "b"], [0, 1], {"ngrams": (2, 1)}, "min_n <= max_n"),
    (["a", "b"], [0, 1], {"min_df": 3}, "min_df=3"),
    (["!!", "?"], [0, 1], {}, "no term"),
])
def test_bad_input(texts, labels, kwargs, match):
  with pytest.raises(LmError, match=match):
    tfidf_logreg(texts, labels, ["a"], **kwargs)


def test_softmax_regression_bad_input():
  with pytest.raises(LmError, match="no examples"):
    SoftmaxRegression.fit(np.zeros((0, 3)), [])
  with pytest.raises(LmError, match="num_classes"):
    SoftmaxRegression.fit(np.eye(2), [0, 2], num_classes=2)
