"""Token classification rows: word ownership of pieces, first-piece tags,
truncation, byte-fallback pieces, mapping predictions back to words; and
`Tokenizer.encode_with_offsets`, which the rows are built from."""

import numpy as np
import pytest

from lm.data.records import Records
from lm.data.tokenizer import train_tokenizer
from lm.experiments import make_objective as make_task
from lm.tasks.token_classification import tag_rows, word_pieces, word_tags
from lm.experiments import base_config

# A tiny corpus whose BPE merges are easy to predict: the frequent words
# become one piece (with or without their leading space); characters it never
# uses ("ü", "日", "🎉", ...) fall back to UTF-8 byte pieces.
CORPUS = ["John Smith lives in New York", "Mary Jones works in Paris",
          "the new york times", "John and Mary went to New York",
          "Smith visited Paris and York"] * 30

WORDS = ["John", "Smith", "lives", "in", "New", "York"]
TAGS = [1, 2, 0, 0, 3, 4]        # B-PER I-PER O O B-LOC I-LOC
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("tagging") / "tok.model"
  return train_tokenizer(CORPUS, str(path), vocab_size=330,
                         bert_specials=True)


def _pieces(tok, text):
  ids, _, _ = tok.encode_with_offsets([text])[0]
  return [tok.id_to_piece(i) for i in ids]


def _rows(tok, words_list, tag_ids, seq_len):
  return tag_rows(words_list, tag_ids, tok, seq_len=seq_len, first=tok.cls_id,
                  sep=tok.sep_id, pad=tok.pad_id)


# --- encode_with_offsets ------------------------------------------------------

OFFSET_TEXTS = ["", "John Smith lives in New York", "Newyorkers",
                "Mary visited Zürich", "Smith saw 日本 today 🎉",
                "  two  spaces\tand\nnewline\r\n", "ünïcödé — Ωμέγα"]


def test_encode_with_offsets_ids_match_encode_and_spans_rebuild_text(tok):
  out = tok.encode_with_offsets(OFFSET_TEXTS)
  assert len(out) == len(OFFSET_TEXTS)
  for text, (ids, starts, ends) in zip(OFFSET_TEXTS, out):
    assert ids.dtype == np.int32
    assert ids.tolist() == tok.encode(text)
    assert len(starts) == len(ends) == len(ids)
    # Spans tile the text: contiguous, in order, from 0 to len(text).
    if len(ids):
      assert starts[0] == 0 and ends[-1] == len(text)
      np.testing.assert_array_equal(starts[1:], ends[:-1])
    assert np.all(ends >= starts)
    assert "".join(text[s:e] for s, e in zip(starts, ends)) == text
    # Only byte pieces (the leading bytes of a multi-byte character) are empty.
    for i, s, e in zip(ids, starts, ends):
      if s == e:
        assert tok.id_to_piece(i).startswith("<0x"), tok.id_to_piece(i)
  assert tok.encode_with_offsets([]) == []


def test_encode_with_offsets_byte_pieces_of_one_character(tok):
  # "日" is three UTF-8 bytes: two empty spans, then the character itself.
  ids, starts, ends = tok.encode_with_offsets(["日"])[0]
  assert [tok.id_to_piece(i) for i in ids] == ["<0xE6>", "<0x97>", "<0xA5>"]
  assert starts.tolist() == [0, 0, 0] and ends.tolist() == [0, 0, 1]
  # "🎉" is four bytes.
  ids, starts, ends = tok.encode_with_offsets(["a🎉"])[0]
  assert len(ids) == 5
  assert starts.tolist() == [0, 1, 1, 1, 1] and ends.tolist() == [1, 1, 1, 1, 2]


# --- word_pieces --------------------------------------------------------------


def test_word_pieces_docstring_example():
  # "New York": "New" [0,3), "▁Y" [3,5), "ork" [5,8).
  got = word_pieces(["New", "York"], np.array([0, 3, 5]), np.array([3, 5, 8]))
  assert got.tolist() == [0, 1, 1]


def test_word_pieces_whitespace_and_empty_spans_are_unowned():
  # "a bc": "a" [0,1), "▁" [1,2) (space only), an empty byte span [2,2),
  # "b" [2,3), "c" [3,4).
  starts, ends = np.array([0, 1, 2, 2, 3]), np.array([1, 2, 2, 3, 4])
  assert word_pieces(["a", "bc"], starts, ends).tolist() == [0, -1, -1, 1, 1]
  assert word_pieces([], np.array([], np.int64),
                     np.array([], np.int64)).tolist() == []


# --- tag_rows -----------------------------------------------------------------


def test_tag_rows_first_piece_of_each_word_gets_its_tag(tok):
  assert _pieces(tok, " ".join(WORDS)) == [
      "John", "▁", "Smith", "▁l", "iv", "es", "▁in", "▁New", "▁York"]
  rows = _rows(tok, [WORDS], [np.array(TAGS)], seq_len=14)
  ids = tok.encode(" ".join(WORDS))
  c, s, p = tok.cls_id, tok.sep_id, tok.pad_id
  assert rows["tokens"][0].tolist() == [c, *ids, s, p, p, p]
  assert rows["mask"][0].tolist() == [1] * 11 + [0] * 3
  # Positions: [CLS] John ▁ Smith ▁l iv es ▁in ▁New ▁York [SEP] pad pad pad.
  # "▁" (the space before Smith) belongs to no word; "iv", "es" are later
  # pieces of "lives".
  assert rows["tags"][0].tolist() == [-1, 1, -1, 2, 0, -1, -1, 0, 3, 4,
                                      -1, -1, -1, -1]
  assert rows["word_index"][0].tolist() == [-1, 0, -1, 1, 2, -1, -1, 3, 4, 5,
                                            -1, -1, -1, -1]
  for k in ("tokens", "mask", "tags", "word_index"):
    assert rows[k].shape == (1, 14) and rows[k].dtype == np.int32


def test_tag_rows_truncation_drops_cut_words(tok):
  # seq_len 7 keeps 5 pieces: John ▁ Smith ▁l iv. "lives" keeps its first
  # piece (so its tag), "in", "New", "York" are cut off entirely.
  rows = _rows(tok, [WORDS], [np.array(TAGS)], seq_len=7)
  ids = tok.encode(" ".join(WORDS))
  assert rows["tokens"][0].tolist() == [tok.cls_id, *ids[:5], tok.sep_id]
  assert rows["mask"][0].tolist() == [1] * 7
  assert rows["tags"][0].tolist() == [-1, 1, -1, 2, 0, -1, -1]
  assert rows["word_index"][0].tolist() == [-1, 0, -1, 1, 2, -1, -1]
  assert not {3, 4, 5} & set(rows["word_index"][0].tolist())
  # Predicted tags map back with "O" for the cut words (true tags: B-LOC...).
  pred = np.array([0, 1, 0, 2, 4, 4, 0])   # word 2 predicted I-LOC
  assert word_tags(pred, rows["word_index"][0], len(WORDS), LABELS) == [
      "B-PER", "I-PER", "I-LOC", "O", "O", "O"]


def test_tag_rows_several_rows_and_no_labels(tok):
  words_list = [["Smith", "York"], WORDS, ["Paris"]]
  assert _pieces(tok, "Smith York") == ["Smith", "▁York"]
  assert _pieces(tok, "Paris") == ["P", "aris"]
  rows = _rows(tok, words_list, None, seq_len=6)
  assert rows["tokens"].shape == (3, 6)
  assert (rows["tags"] == -1).all()           # prediction: nothing scored
  assert rows["mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6,
                                   [1, 1, 1, 1, 0, 0]]
  assert rows["word_index"].tolist() == [
      [-1, 0, 1, -1, -1, -1],
      [-1, 0, -1, 1, 2, -1],                    # John ▁ Smith ▁l, cut
      [-1, 0, -1, -1, -1, -1]]                  # P aris: "aris" not first
  assert rows["tokens"][2, 3] == tok.sep_id and rows["tokens"][2, 4] == 0


def test_tag_rows_multi_byte_characters(tok):
  # "Zürich": "Z" and "ü" are not in the corpus, so byte pieces. "ü" is
  # <0xC3> (empty span) <0xBC> (the character). The word's tag goes on its
  # first piece with a non-empty span, "Z".
  words = ["Mary", "visited", "Zürich"]
  assert _pieces(tok, " ".join(words)) == [
      "Mary", "▁v", "is", "it", "ed", "▁", "<0x5A>", "<0xC3>", "<0xBC>", "r",
      "i", "<0x63>", "h"]
  rows = _rows(tok, [words], [np.array([1, 0, 3])], seq_len=16)
  assert rows["tags"][0].tolist() == (
      [-1, 1, 0, -1, -1, -1, -1, 3] + [-1] * 8)
  assert rows["word_index"][0].tolist() == (
      [-1, 0, 1, -1, -1, -1, -1, 2] + [-1] * 8)
  # "日本" starts with a three-byte character: its two leading byte pieces
  # have empty spans (no word), the third piece carries the tag.
  words = ["Smith", "saw", "日本", "today"]
  assert _pieces(tok, " ".join(words)) == [
      "Smith", "▁", "s", "a", "w", "▁", "<0xE6>", "<0x97>", "<0xA5>",
      "<0xE6>", "<0x9C>", "<0xAC>", "▁to", "d", "a", "y"]
  rows = _rows(tok, [words], [np.array([1, 0, 3, 0])], seq_len=20)
  #       [CLS] Smith ▁  s  a   w   ▁  E6  97  A5 E6  9C  AC  ▁to d   a   y
  want = [-1, 1, -1, 0, -1, -1, -1, -1, -1, 3, -1, -1, -1, 0, -1, -1, -1]
  assert rows["tags"][0].tolist() == want + [-1] * 3
  assert rows["word_index"][0].tolist() == [
      -1, 0, -1, 1, -1, -1, -1, -1, -1, 2, -1, -1, -1, 3, -1, -1, -1,
      -1, -1, -1]
  # Cut between the byte pieces of "日": the word has no piece left.
  rows = _rows(tok, [words], [np.array([1, 0, 3, 0])], seq_len=10)
  assert rows["word_index"][0].tolist() == [-1, 0, -1, 1, -1, -1, -1, -1,
                                            -1, -1]
  assert word_tags(np.full(10, 3), rows["word_index"][0], 4, LABELS) == [
      "B-LOC", "B-LOC", "O", "O"]


# --- word_tags ----------------------------------------------------------------


def test_word_tags_docstring_example():
  assert word_tags(np.array([0, 2, 1]), np.array([-1, 0, 1]), 2,
                   ["O", "B", "I"]) == ["I", "B"]


def test_word_tags_round_trips_gold_tags(tok):
  rows = _rows(tok, [WORDS], [np.array(TAGS)], seq_len=14)
  # A perfect model predicts the gold tag at each scored piece (anything at
  # the others).
  pred = np.where(rows["tags"][0] >= 0, rows["tags"][0], 4)
  assert word_tags(pred, rows["word_index"][0], len(WORDS), LABELS) == [
      LABELS[t] for t in TAGS]


# --- the task -----------------------------------------------------------------


def test_tagging_task_reads_labels_and_makes_rows(tok):
  config = base_config()
  config.objective = "tagging"
  config.model.size = "bert_tiny"
  config.seq_len = 14
  task = make_task(config)
  records = Records("mem:ner", columns={
      "tokens": [WORDS, ["Smith", "York"]],
      "tags": [[LABELS[t] for t in TAGS], ["B-LOC", "I-LOC"]]})
  # "O" first, then the others sorted.
  assert task.read_labels(records) == ["O", "B-LOC", "B-PER", "I-LOC",
                                       "I-PER"]
  task.labels = LABELS
  rows = task.make_rows(records, tok)
  want = _rows(tok, records.columns["tokens"],
               [np.array(TAGS), np.array([3, 4])], seq_len=14)
  for k in want:
    np.testing.assert_array_equal(rows[k], want[k])
  assert _pieces(tok, "Smith York") == ["Smith", "▁York"]
  assert rows["tags"][1].tolist()[:4] == [-1, 3, 4, -1]
