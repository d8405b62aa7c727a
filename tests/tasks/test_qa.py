"""Extractive QA: context windows, answer pieces, span search, rows and
decoding, on hand-checked cases."""

import numpy as np
import pytest

from lm.data.records import Records
from lm.data.tokenizer import train_tokenizer
from lm.errors import LmError
from lm.experiments import make_objective as make_task
from lm.tasks.qa import answer_pieces, best_span, windows
from lm.experiments import base_config

CORPUS = ["John Smith lives in New York", "Mary Jones works in Paris",
          "the new york times", "John and Mary went to New York",
          "Smith visited Paris and York"] * 30

# 17 pieces: John ▁ Smith ▁l iv es ▁in ▁New ▁York ▁and ▁ Mary ▁w ork s ▁in
# ▁Paris; "▁New" is [19, 23) (with its leading space), "▁York" [23, 28).
LONG = "John Smith lives in New York and Mary works in Paris"
# 12 pieces: Mary ▁w ent ▁to ▁York ▁and ▁ John ▁w ent ▁to ▁Paris.
TWO = "Mary went to York and John went to Paris"
SHORT = "John went to Paris"               # 5 pieces
QUESTION = "Where does Mary work"         # 12 pieces, cut to 4

# seq_len 16, 4 question pieces: [CLS] q q q q [SEP] + 9 context + [SEP];
# context pieces start at row position 6; windows start every 4 pieces.
SEQ_LEN, Q_LEN, STRIDE, AT = 16, 4, 4, 6


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("qa") / "tok.model"
  return train_tokenizer(CORPUS, str(path), vocab_size=330,
                         bert_specials=True)


def _task(seq_len=SEQ_LEN, stride=STRIDE, q_len=Q_LEN):
  config = base_config()
  config.objective = "qa"
  config.model.size = "bert_tiny"
  config.seq_len = seq_len
  config.task.doc_stride = stride
  config.task.max_question_len = q_len
  return make_task(config)


def _records(contexts, answers):
  return Records("mem:squad", columns={
      "question": [QUESTION] * len(contexts), "context": list(contexts),
      "answers": [[(a, c.index(a))] for a, c in zip(answers, contexts)],
      "id": [f"q{i}" for i in range(len(contexts))]})


def _pieces(tok, text):
  return [tok.id_to_piece(i) for i in tok.encode(text)]


# --- windows ------------------------------------------------------------------


def test_windows_docstring_example_and_n_zero():
  assert windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
  assert windows(0, 4, 3) == [(0, 0)]


def test_windows_exact_fit_and_short_context():
  assert windows(4, 4, 2) == [(0, 4)]
  assert windows(3, 4, 2) == [(0, 3)]
  assert windows(5, 4, 2) == [(0, 4), (2, 5)]


def test_windows_stride_smaller_than_and_equal_to_room():
  assert windows(10, 4, 1) == [(s, s + 4) for s in range(7)]
  assert windows(10, 4, 4) == [(0, 4), (4, 8), (8, 10)]
  assert windows(17, 9, 4) == [(0, 9), (4, 13), (8, 17)]


@pytest.mark.parametrize("n,room,stride", [(10, 4, 3), (17, 9, 4), (10, 4, 4),
                                           (1, 1, 1), (50, 7, 7)])
def test_windows_cover_every_piece_once_stride_fits(n, room, stride):
  got = windows(n, room, stride)
  covered = set()
  for s, e in got:
    assert 0 <= s < e <= n and e - s <= room
    covered |= set(range(s, e))
  assert covered == set(range(n)) and got[-1][1] == n


def test_windows_stride_larger_than_room_still_covers_every_piece():
  # The stride is capped at the window length: no gaps, no empty window.
  got = windows(10, 3, 5)
  assert got == [(0, 3), (3, 6), (6, 9), (9, 10)]
  covered = set()
  for s, e in got:
    assert s < e, f"empty window {(s, e)} in {got}"
    covered |= set(range(s, e))
  assert covered == set(range(10)), got


# --- answer_pieces ------------------------------------------------------------

# "the red fox": "the" [0,3), "▁red" [3,7), "▁fox" [7,11).
STARTS, ENDS = np.array([0, 3, 7]), np.array([3, 7, 11])


def test_answer_pieces_inside_a_piece_with_a_leading_space():
  assert answer_pieces(STARTS, ENDS, 4, 7) == (1, 1)      # "red"
  assert answer_pieces(STARTS, ENDS, 3, 7) == (1, 1)      # " red"
  assert answer_pieces(STARTS, ENDS, 5, 7) == (1, 1)      # "ed"
  assert answer_pieces(STARTS, ENDS, 4, 11) == (1, 2)     # "red fox"
  assert answer_pieces(STARTS, ENDS, 0, 5) == (0, 1)      # "the r"


def test_answer_pieces_at_context_end_and_start():
  assert answer_pieces(STARTS, ENDS, 8, 11) == (2, 2)     # "fox"
  assert answer_pieces(STARTS, ENDS, 0, 11) == (0, 2)     # everything
  assert answer_pieces(STARTS, ENDS, 0, 3) == (0, 0)      # "the"


def test_answer_pieces_not_covered():
  assert answer_pieces(STARTS, ENDS, 11, 14) is None      # past the end
  assert answer_pieces(STARTS, ENDS, 20, 25) is None
  empty = np.array([], np.int64)
  assert answer_pieces(empty, empty, 0, 3) is None


def test_answer_pieces_skips_leading_empty_byte_pieces():
  # "日x": <0xE6> [0,0) <0x97> [0,0) <0xA5> [0,1) "x" [1,2).
  starts, ends = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 2])
  assert answer_pieces(starts, ends, 0, 1) == (2, 2)
  assert answer_pieces(starts, ends, 0, 2) == (2, 3)


# --- best_span ----------------------------------------------------------------


def test_best_span_docstring_example():
  # k=0: [0, 6, 5]; k=1: [0+1, 5+4] -> (1, 2) scores 9.
  assert best_span(np.array([0., 5, 1]), np.array([0., 1, 4]), 2) == (
      1, 2, 9.0)


def test_best_span_needs_start_before_end():
  # start[2] + end[0] = 12 is the unconstrained maximum but has i > j; the
  # valid pairs score (0,0) 8, (0,1) 1, (0,2) 2, (1,1) 0, (1,2) 1, (2,2) 6.
  assert best_span(np.array([1., 0, 5]), np.array([7., 0, 1]), 3) == (
      0, 0, 8.0)


def test_best_span_respects_max_answer_len():
  start, end = np.array([5., 0, 0, 0]), np.array([0., 0, 0, 6])
  # (0, 3) = 11 is 4 pieces long; within 3 the best is (3, 3) = 6 (ties with
  # (1, 3) and (2, 3) go to the shortest span found first).
  assert best_span(start, end, 3) == (3, 3, 6.0)
  assert best_span(start, end, 4) == (0, 3, 11.0)
  assert best_span(start, end, 100) == (0, 3, 11.0)
  assert best_span(start, end, 1) == (3, 3, 6.0)
  assert best_span(np.array([2.]), np.array([3.]), 5) == (0, 0, 5.0)


def test_best_span_matches_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    m, max_len = int(rng.integers(1, 9)), int(rng.integers(1, 5))
    s, e = rng.normal(size=m), rng.normal(size=m)
    want = max((s[i] + e[j], i, j) for i in range(m) for j in range(m)
               if i <= j < i + max_len)
    i, j, score = best_span(s, e, max_len)
    assert score == pytest.approx(want[0]) and (i, j) == (want[1], want[2])


# --- make_rows ----------------------------------------------------------------


def test_make_rows_windows_and_targets(tok):
  task = _task()
  assert _pieces(tok, LONG) == [
      "John", "▁", "Smith", "▁l", "iv", "es", "▁in", "▁New", "▁York", "▁and",
      "▁", "Mary", "▁w", "ork", "s", "▁in", "▁Paris"]
  assert _pieces(tok, SHORT) == ["John", "▁w", "ent", "▁to", "▁Paris"]
  records = _records([LONG, SHORT, LONG], ["New York", "Paris", "Paris"])
  rows = task.make_rows(records, tok)
  ids = tok.encode(LONG)
  q = tok.encode(QUESTION)[:Q_LEN]
  cls, sep, pad = tok.cls_id, tok.sep_id, tok.pad_id
  # Room 16 - 4 - 3 = 9: LONG gets windows (0, 9), (4, 13), (8, 17) (5
  # pieces of overlap); SHORT fits in one.
  assert rows["example"].tolist() == [0, 0, 0, 1, 2, 2, 2]
  assert rows["window_start"].tolist() == [0, 4, 8, 0, 0, 4, 8]
  assert rows["context_at"].tolist() == [AT] * 7
  for k in ("tokens", "token_types", "mask"):
    assert rows[k].shape == (7, SEQ_LEN) and rows[k].dtype == np.int32
  seen = set()
  for r, s in enumerate([0, 4, 8]):
    assert rows["tokens"][r].tolist() == [cls, *q, sep, *ids[s:s + 9], sep]
    assert rows["mask"][r].tolist() == [1] * SEQ_LEN
    seen |= set(range(s, s + 9))
  assert seen == set(range(len(ids)))          # every piece in some window
  # Consecutive windows share 9 - 4 = 5 pieces.
  np.testing.assert_array_equal(rows["tokens"][0, AT + 4:AT + 9],
                                rows["tokens"][1, AT:AT + 5])
  np.testing.assert_array_equal(rows["tokens"][1, AT + 4:AT + 9],
                                rows["tokens"][2, AT:AT + 5])
  short = tok.encode(SHORT)
  assert rows["tokens"][3].tolist() == (
      [cls, *q, sep, *short, sep] + [pad] * 4)
  assert rows["mask"][3].tolist() == [1] * 12 + [0] * 4
  # Token types: 0 for [CLS] question [SEP], 1 for the context and its
  # [SEP], 0 for padding.
  assert rows["token_types"][0].tolist() == [0] * 6 + [1] * 10
  assert rows["token_types"][3].tolist() == [0] * 6 + [1] * 6 + [0] * 4
  # "New York" is pieces 7-8: in windows 0 and 1 (row positions 6 + 7 - 0
  # and 6 + 7 - 4), not in window 2 (starts at piece 8) -> 0.
  # "Paris" is piece 16 of LONG (window 2 only: 6 + 16 - 8 = 14) and piece 4
  # of SHORT (6 + 4 = 10).
  assert rows["start"].tolist() == [13, 9, 0, 10, 0, 0, 14]
  assert rows["end"].tolist() == [14, 10, 0, 10, 0, 0, 14]
  piece = lambda r, p: tok.id_to_piece(rows["tokens"][r, p])
  assert (piece(0, 13), piece(0, 14)) == ("▁New", "▁York")
  assert (piece(1, 9), piece(1, 10)) == ("▁New", "▁York")
  assert piece(3, 10) == piece(6, 14) == "▁Paris"



def test_make_rows_stride_larger_than_room_covers_every_piece(tok):
  rows = _task(stride=12).make_rows(_records([LONG], ["Mary"]), tok)
  ids = tok.encode(LONG)
  seen = set()
  for s, toks, mask in zip(rows["window_start"], rows["tokens"], rows["mask"]):
    n = int(mask.sum()) - AT - 1                 # context pieces in the row
    assert toks[AT:AT + n].tolist() == ids[s:s + n]
    seen |= set(range(s, s + n))
  assert seen == set(range(len(ids)))
  # "Mary" (piece 11) is in no window, so no row has a target for it.
  assert rows["start"].max() > 0

def test_make_rows_without_labels_or_answers(tok):
  task = _task()
  records = _records([LONG, SHORT], ["New York", "Paris"])
  rows = task.make_rows(records, tok, with_labels=False)
  assert rows["start"].tolist() == rows["end"].tolist() == [0] * 4
  records.columns["answers"] = [[], [("Paris", 13)]]
  rows = task.make_rows(records, tok)
  assert rows["start"].tolist() == [0, 0, 0, 10]


def test_make_rows_rejects_seq_len_without_room(tok):
  with pytest.raises(LmError, match="no room"):
    _task(seq_len=7).make_rows(_records([SHORT], ["Paris"]), tok)


def test_task_rejects_non_positive_settings():
  with pytest.raises(LmError, match="doc_stride"):
    _task(stride=0)


# --- decode -------------------------------------------------------------------


def _peak(rows, row, start, end, value=10.0):
  """Zero logits but `value` at `start` / `end` of row `row`."""
  s = np.zeros((len(rows["tokens"]), SEQ_LEN), np.float32)
  e = np.zeros_like(s)
  s[row, start], e[row, end] = value, value
  return s, e


def test_decode_recovers_answers(tok):
  task = _task()
  assert _pieces(tok, TWO) == ["Mary", "▁w", "ent", "▁to", "▁York", "▁and",
                               "▁", "John", "▁w", "ent", "▁to", "▁Paris"]
  records = _records([LONG, TWO], ["New York", "Paris"])
  rows = task.make_rows(records, tok)
  # TWO has windows (0, 9), (4, 12): "▁Paris" (piece 11) is in the second
  # window only, at row position 6 + 11 - 4 = 13.
  assert rows["example"].tolist() == [0, 0, 0, 1, 1]
  assert rows["window_start"].tolist() == [0, 4, 8, 0, 4]
  assert rows["start"].tolist() == [13, 9, 0, 0, 13]
  start = np.zeros((5, SEQ_LEN), np.float32)
  end = np.zeros_like(start)
  # Example 0: "New York" peaks in window 1 (positions 9, 10).
  start[1, 9], end[1, 10] = 10.0, 10.0
  # Example 1: "Paris" peaks in its second window.
  start[4, 13], end[4, 13] = 8.0, 9.0
  # Distractors decode must ignore: [CLS], the question, the last [SEP] and
  # padding (window 4 holds 8 context pieces: positions 6..13; 14 is [SEP]).
  start[:, 0], end[:, 0] = 50.0, 50.0
  start[:, 2], end[:, 3] = 40.0, 40.0
  start[4, 14:], end[4, 14:] = 60.0, 60.0
  best = task.decode(records, rows, np.arange(5), start, end, tok)
  assert set(best) == {0, 1}
  # "▁New ▁York" covers " New York" [19, 28); the space is stripped.
  assert best[0]["answer"] == "New York"
  assert (best[0]["start"], best[0]["end"]) == (20, 28)
  assert LONG[20:28] == "New York"
  assert best[0]["score"] == pytest.approx(20.0)
  assert best[1]["answer"] == "Paris"
  assert (best[1]["start"], best[1]["end"]) == (TWO.index("Paris"), len(TWO))
  assert best[1]["score"] == pytest.approx(17.0)


def test_decode_picks_the_best_window_and_a_subset_of_rows(tok):
  task = _task()
  records = _records([LONG, TWO], ["New York", "Paris"])
  rows = task.make_rows(records, tok)
  # Only rows 4 and 0 (in that order), with logits aligned to `rows`.
  start = np.zeros((2, SEQ_LEN), np.float32)
  end = np.zeros_like(start)
  start[0, 13], end[0, 13] = 5.0, 5.0       # row 4: "Paris"
  start[1, 6], end[1, 7] = 3.0, 3.0         # row 0: "John" + "▁" (weaker)
  start[1, 12], end[1, 14] = 4.0, 4.0       # row 0: "▁in ▁New ▁York"
  best = task.decode(records, rows, np.array([4, 0]), start, end, tok)
  assert best[1]["answer"] == "Paris"
  assert best[0]["answer"] == "in New York"
  assert best[0]["score"] == pytest.approx(8.0)
  # The same span scored higher in window 1 wins over window 0.
  start3 = np.zeros((2, SEQ_LEN), np.float32)
  end3 = np.zeros_like(start3)
  start3[0, 13], end3[0, 14] = 1.0, 1.0     # row 0: "▁New ▁York"
  start3[1, 6], end3[1, 6] = 3.0, 3.0       # row 1: piece 4 + 0, "iv"
  best = task.decode(records, rows, np.array([0, 1]), start3, end3, tok)
  assert set(best) == {0}
  assert best[0]["answer"] == "iv" and best[0]["score"] == pytest.approx(6.0)
