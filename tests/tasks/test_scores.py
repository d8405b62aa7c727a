"""Task metrics (classification, entities, SQuAD) on hand-computed cases."""

import math

import numpy as np
import pytest

from lm.errors import LmError
from lm.tasks.scores import (classification_scores, confusion_matrix,
                             entity_scores, entity_spans, exact_match,
                             normalize_answer, squad_scores, token_f1)

# --- classification ---------------------------------------------------------

# 3 classes, 8 examples.
GOLD = [0, 0, 0, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 1, 2, 2, 2, 0]
# rows = gold, columns = predicted:
#          p0 p1 p2      true t = [3, 2, 3]
#   g0  [[ 2, 1, 0],     pred p = [3, 2, 3]
#   g1   [ 0, 1, 1],     trace c = 5, total s = 8
#   g2   [ 1, 0, 2]]
CONF = [[2, 1, 0], [0, 1, 1], [1, 0, 2]]


def test_confusion_matrix():
  m = confusion_matrix(GOLD, PRED, 3)
  assert m.dtype == np.int64
  assert m.tolist() == CONF


def test_confusion_weights_skip_zero_rows():
  # Masking out the last example (gold 2, pred 0) removes one count at [2, 0].
  w = [1, 1, 1, 1, 1, 1, 1, 0]
  m = confusion_matrix(GOLD, PRED, 3, weights=w)
  assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_confusion_errors():
  with pytest.raises(LmError, match="3 labels but 2 predictions"):
    confusion_matrix([0, 1, 1], [0, 1], 2)
  with pytest.raises(LmError, match="weights"):
    confusion_matrix([0, 1], [0, 1], 2, weights=[1])
  with pytest.raises(LmError, match="integers in"):
    confusion_matrix([0, 2], [0, 1], 2)
  with pytest.raises(LmError, match="integers in"):
    confusion_matrix([0, 1], [0, -1], 2)


def test_three_class_scores():
  got = classification_scores(CONF)
  # accuracy = 5 / 8
  assert got["accuracy"] == pytest.approx(5 / 8)
  # F1_k = 2 tp_k / (t_k + p_k): class 0: 4/6, class 1: 2/4, class 2: 4/6
  assert got["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
  # R_K numerator   c s - sum p_k t_k = 5*8 - (9 + 4 + 9) = 18
  #     denominator (s^2 - sum p^2) = (s^2 - sum t^2) = 64 - 22 = 42
  #     mcc = 18 / 42 = 3 / 7
  assert got["mcc"] == pytest.approx(3 / 7)
  assert got["examples"] == 8.0
  # Float matrices give the same numbers.
  assert classification_scores(np.asarray(CONF, np.float32)) == pytest.approx(got)


def test_binary_mcc_matches_classic_formula():
  # tn = 5, fp = 2, fn = 1, tp = 3 (class 1 = positive).
  tn, fp, fn, tp = 5, 2, 1, 3
  got = classification_scores([[tn, fp], [fn, tp]])
  classic = (tp * tn - fp * fn) / math.sqrt(
      (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  # = (15 - 2) / sqrt(5 * 4 * 7 * 6) = 13 / sqrt(840)
  assert got["mcc"] == pytest.approx(classic)
  assert got["mcc"] == pytest.approx(13 / math.sqrt(840))
  # accuracy = (tp + tn) / total = 8 / 11
  assert got["accuracy"] == pytest.approx(8 / 11)


def test_absent_class_left_out_of_macro_f1():
  # Class 2 never occurs (no gold, no predictions); class 1 is gold but never
  # predicted, so it counts with F1 0.
  m = confusion_matrix([0, 0, 1], [0, 0, 0], 3)
  assert m.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
  got = classification_scores(m)
  # class 0: tp 2, t 2, p 3 -> 4/5; class 1: 0; class 2 skipped.
  assert got["macro_f1"] == pytest.approx((4 / 5 + 0) / 2)
  # Everything predicted as one class: s^2 - sum p^2 = 9 - 9 = 0 -> mcc 0.
  assert got["mcc"] == 0.0
  assert got["accuracy"] == pytest.approx(2 / 3)


def test_perfect_and_empty():
  got = classification_scores(np.diag([3, 4, 0]))
  assert got == {"accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0, "examples": 7.0}
  empty = classification_scores(np.zeros((2, 2)))
  assert empty == {"accuracy": 0.0, "macro_f1": 0.0, "mcc": 0.0, "examples": 0.0}


def test_classification_scores_rejects_non_square():
  with pytest.raises(LmError, match="square"):
    classification_scores([[1, 2, 3]])


# --- entity spans -----------------------------------------------------------


def test_spans_iob2():
  tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
  assert entity_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)]


def test_spans_iob1_style_i_starts():
  # I- after O starts an entity; the docstring example.
  assert entity_spans(["B-PER", "I-PER", "O", "I-LOC"]) == [
      ("PER", 0, 2), ("LOC", 3, 4)]
  # A leading I- run is one entity that ends at the sentence end.
  assert entity_spans(["I-ORG", "I-ORG", "I-ORG"]) == [("ORG", 0, 3)]


def test_spans_type_change():
  # B-PER I-LOC: the type change ends PER and starts LOC.
  assert entity_spans(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]
  assert entity_spans(["I-PER", "I-LOC", "I-LOC"]) == [
      ("PER", 0, 1), ("LOC", 1, 3)]


def test_spans_iobes():
  tags = ["S-PER", "B-ORG", "I-ORG", "E-ORG", "O", "S-LOC", "S-LOC", "E-MISC"]
  # E-MISC after S-LOC starts (and at the end closes) a MISC entity.
  assert entity_spans(tags) == [("PER", 0, 1), ("ORG", 1, 4), ("LOC", 5, 6),
                                ("LOC", 6, 7), ("MISC", 7, 8)]
  # E then I starts a new chunk.
  assert entity_spans(["B-X", "E-X", "I-X"]) == [("X", 0, 2), ("X", 2, 3)]


def test_spans_bare_tags_and_empty():
  assert entity_spans(["B", "I", "O", "B"]) == [("_", 0, 2), ("_", 3, 4)]
  assert entity_spans([]) == []
  assert entity_spans(["O", "O"]) == []


def test_spans_bad_tag():
  with pytest.raises(LmError, match="position 1"):
    entity_spans(["O", "X-PER"])


# --- entity scores ----------------------------------------------------------


def test_entity_scores_partial_overlap():
  gold = [["B-PER", "I-PER", "O", "B-LOC"],
          ["B-ORG", "I-ORG", "I-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"],   # PER exact; LOC typed as ORG
          ["B-ORG", "I-ORG", "O", "B-PER"]]   # ORG cut short; extra PER
  # gold spans: PER(0,2), LOC(3,4) | ORG(0,3)              -> 3
  # pred spans: PER(0,2), ORG(3,4) | ORG(0,2), PER(3,4)    -> 4
  # exact hits: PER(0,2) only                              -> 1
  got = entity_scores(gold, pred)
  p, r = 1 / 4, 1 / 3
  assert got["precision"] == pytest.approx(p)
  assert got["recall"] == pytest.approx(r)
  assert got["f1"] == pytest.approx(2 * p * r / (p + r))   # = 2/7
  assert got["f1"] == pytest.approx(2 / 7)
  assert got["entities"] == 3.0
  per = got["per_type"]
  assert set(per) == {"PER", "LOC", "ORG"}
  # PER: 1 hit, 2 predicted, 1 gold -> P 1/2, R 1, F1 2/3
  assert per["PER"] == pytest.approx(
      {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1.0})
  # LOC: 0 hits, 0 predicted, 1 gold -> all 0 (0/0 -> 0)
  assert per["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                        "support": 1.0}
  # ORG: 0 hits, 2 predicted, 1 gold
  assert per["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                        "support": 1.0}


def test_entity_scores_perfect_and_empty():
  gold = [["B-PER", "I-PER"], ["O"]]
  got = entity_scores(gold, gold)
  assert (got["precision"], got["recall"], got["f1"]) == (1.0, 1.0, 1.0)
  none = entity_scores([["O"]], [["O"]])
  assert none == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_type": {},
                  "entities": 0.0}


def test_entity_scores_errors():
  with pytest.raises(LmError, match="sentence 1"):
    entity_scores([["O"], ["O", "B-PER"]], [["O"], ["O"]])
  with pytest.raises(LmError, match="2 gold sentences but 1"):
    entity_scores([["O"], ["O"]], [["O"]])


# --- SQuAD ------------------------------------------------------------------


def test_normalize_answer():
  assert normalize_answer("The  Cat!") == "cat"
  # Articles go only as whole words: "theatre" and "anna" stay.
  assert normalize_answer("An apple, a theatre & Anna.") == "apple theatre anna"
  assert normalize_answer("  ") == ""


def test_exact_match_is_max_over_answers():
  assert exact_match("the Cat.", ["a dog", "cat"]) == 1.0
  assert exact_match("cats", ["cat", "dog"]) == 0.0


def test_token_f1_partial():
  # [big, red, dog] vs [red, dog, barks]: common 2, P = R = 2/3 -> F1 = 2/3
  assert token_f1("the big red dog", ["red dog barks"]) == pytest.approx(2 / 3)
  # Max over answers: vs "red dog" -> common 2, P = 2/3, R = 1, F1 = 4/5.
  assert token_f1("the big red dog", ["red dog barks", "red dog"]) == (
      pytest.approx(4 / 5))
  # Repeated tokens count by multiplicity: [dog, dog] vs [dog]:
  # common 1, P 1/2, R 1 -> 2/3.
  assert token_f1("dog dog", ["dog"]) == pytest.approx(2 / 3)
  assert token_f1("cat", ["dog"]) == 0.0


def test_token_f1_empty_after_normalising():
  # "The!" normalises to "" : both empty -> 1, one empty -> 0.
  assert token_f1("The!", ["a"]) == 1.0
  assert exact_match("The!", ["a"]) == 1.0
  assert token_f1("The!", ["cat"]) == 0.0
  assert token_f1("cat", ["an"]) == 0.0


def test_squad_scores_missing_prediction():
  preds = {"q1": "the big red dog", "q2": "Paris", "extra": "ignored"}
  golds = {"q1": ["red dog barks"], "q2": ["paris", "France"], "q3": ["x"]}
  got = squad_scores(preds, golds)
  # EM: q1 0, q2 1, q3 missing 0 -> 1/3
  # F1: q1 2/3, q2 1, q3 0     -> (5/3) / 3 = 5/9
  assert got["exact_match"] == pytest.approx(1 / 3)
  assert got["f1"] == pytest.approx(5 / 9)
  assert got["questions"] == 3.0


def test_squad_errors():
  with pytest.raises(LmError, match="'q2'"):
    squad_scores({"q1": "a"}, {"q1": ["a"], "q2": []})
  with pytest.raises(LmError, match="no gold answers"):
    exact_match("a", [])
  with pytest.raises(LmError, match="wrap it in a list"):
    token_f1("a", "a")
